"""hubvoice assistant: the hub runtime (audio in, ONNX Runtime, MQTT out). Never imports torch."""

__version__ = "0.1.0"

"""The service in-process, on the session's tiny bundle (test_bundle.py) and a real mosquitto: WAV files to
intents, satellite audio with the listen gate, early stop from the streaming model, a failing source."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from assistant.app import MqttListener, Service, StreamConfidence, parse_listen, resolve_bundle
from assistant.audio import AudioSource
from assistant.bundle import Bundle, load_bundle
from assistant.config import HubConfig, MqttConfig
from assistant.endpoint import find_utterances
from assistant.errors import BundleError, ConfigError
from assistant.messages import MessageError
from assistant.recognizer import Recognizer
from assistant.wav import encode_wav, write_wav

pytest.importorskip("torch")  # the tiny bundle is built with distill
from tests.assistant.test_bundle import COMMANDS, tiny_bundle, tone_clip  # noqa: E402  (builds once per session)

if TYPE_CHECKING:
    from tests.assistant.conftest import Broker, Subscriber

UNDERSTOOD = [(intent, slots) for intent, slots in COMMANDS if intent is not None]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return load_bundle(tiny_bundle(tmp_path_factory))


def commands_audio(ks: list[int], *, gap_s: float = 1.0, seed: int = 0) -> np.ndarray:
    """Tone "commands" (test_bundle.COMMANDS) separated by quiet noise."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(0.5 * 16000), np.float32)]
    for k in ks:
        parts += [tone_clip(k, 16000, 40 + k), np.zeros(int(gap_s * 16000), np.float32)]
    x = np.concatenate(parts)
    return x + (0.001 * rng.standard_normal(len(x))).astype(np.float32)


def hub_config(tmp_path: Path, broker: Broker, audio: dict[str, object], **extra: object) -> HubConfig:
    data = {"site": "den", "mqtt": {"host": "127.0.0.1", "port": broker.port},
            "outbox": {"path": str(tmp_path / "outbox.sqlite3")}, "audio": audio, **extra}
    return HubConfig.from_dict(yaml.safe_load(json.dumps(data)), base=tmp_path, env={})


def decisions(messages: list[paho.MQTTMessage]) -> list[tuple[str | None, dict[str, str]]]:
    return [(p["intent"], p["slots"]) for p in (json.loads(m.payload) for m in messages)]


def test_parse_listen() -> None:
    assert parse_listen(b"", 8.0) == 8.0
    assert parse_listen(b'{"timeout_s": 3}', 8.0) == 3.0
    assert parse_listen(b"{}", 5.0) == 5.0
    for bad, message in ((b"soon", "expected empty or a JSON object"), (b"[1]", "expected a JSON object"),
                         (b'{"timeout_s": -1}', "timeout_s: expected a number of seconds"),
                         (b'{"timeout_s": true}', "timeout_s: expected a number of seconds")):
        with pytest.raises(MessageError, match=message):
            parse_listen(bad, 8.0)


def test_resolve_bundle(tmp_path: Path, bundle: Bundle) -> None:
    (tmp_path / "conf").mkdir()
    link = tmp_path / "conf" / "mybundle"
    link.symlink_to(bundle.path, target_is_directory=True)
    hub = HubConfig.from_dict({"bundle": "mybundle"}, env={})
    assert resolve_bundle(hub, tmp_path / "conf") == bundle.path.resolve()  # relative to hub.yaml's folder
    with pytest.raises(ConfigError, match="bundle: no folder 'nothere' and no bundle 'nothere'"):
        resolve_bundle(HubConfig.from_dict({"bundle": "nothere"}, env={}), tmp_path)


def test_wav_files_to_intents_then_offline(tmp_path: Path, bundle: Bundle, broker: Broker,
                                          make_subscriber: Callable[..., Subscriber]) -> None:
    write_wav(tmp_path / "a.wav", commands_audio([0, 1]))
    write_wav(tmp_path / "b.wav", commands_audio([2, 4, 3], seed=1))
    hub = hub_config(tmp_path, broker, {"source": "wav", "paths": ["a.wav", "b.wav"]})
    subscriber = make_subscriber(broker.port, ("hubvoice/den/#",))
    service = Service(hub, bundle)
    assert service.run() == 0  # returns by itself when the files end
    subscriber.wait_for("hubvoice/den/status", 2)  # online ... offline
    events = [m for m in subscriber.received if m.topic.endswith(("/intent", "/not_understood"))]
    assert decisions(events) == [UNDERSTOOD[0], UNDERSTOOD[1], UNDERSTOOD[2], (None, {}), UNDERSTOOD[3]]
    assert [m.topic for m in events].count("hubvoice/den/not_understood") == 1
    assert json.loads(events[0].payload)["input"] == "wav" and json.loads(events[0].payload)["site"] == "den"
    assert subscriber.received[-1].payload == b"offline" and service.published == 5


def satellite_chunks(audio: np.ndarray, rate: int = 16000, size: int = 512) -> list[bytes]:
    return [encode_wav(audio[i : i + size], rate) for i in range(0, len(audio), size)]


def publisher_client(port: int) -> Iterator[paho.Client]:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-satellite")
    client.connect("127.0.0.1", port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def satellite(broker: Broker) -> Iterator[paho.Client]:
    yield from publisher_client(broker.port)


def send(client: paho.Client, topic: str, payloads: list[bytes]) -> None:
    for payload in payloads:
        client.publish(topic, payload, qos=1).wait_for_publish(5)


def test_satellite_audio_with_the_listen_gate(tmp_path: Path, bundle: Bundle, broker: Broker,
                                              satellite: paho.Client, make_subscriber: Callable[..., Subscriber]
                                              ) -> None:
    hub = hub_config(tmp_path, broker, {"source": "satellite", "satellites": ["porch"], "listen": True})
    subscriber = make_subscriber(broker.port, ("hubvoice/den/#",))
    service = Service(hub, bundle)
    service.start()
    try:
        assert service.listener is not None and service.listener.subscribed.wait(5)
        topic = "hermes/audioServer/porch/audioFrame"
        send(satellite, topic, satellite_chunks(commands_audio([0])))  # nobody asked the hub to listen
        time.sleep(1.0)
        send(satellite, "hubvoice/den/listen", [b"not json"])  # logged and ignored
        send(satellite, "hubvoice/den/listen", [b'{"timeout_s": 5}'])
        send(satellite, topic, satellite_chunks(commands_audio([2], seed=2)))
        (intent,) = subscriber.wait_for("hubvoice/den/intent", 1)
        assert decisions([intent]) == [UNDERSTOOD[2]] and json.loads(intent.payload)["input"] == "satellite:porch"
        send(satellite, topic, satellite_chunks(commands_audio([1], seed=3)))  # one command per listen
        time.sleep(1.0)
    finally:
        service.stop()
        assert service.shutdown()
    assert [m.topic for m in subscriber.received].count("hubvoice/den/intent") == 1
    assert subscriber.received[-1].topic == "hubvoice/den/status" and subscriber.received[-1].payload == b"offline"


def test_early_stop_from_the_streaming_model(bundle: Bundle) -> None:
    recognizer = Recognizer(bundle)
    for k in range(len(UNDERSTOOD)):
        audio = np.concatenate([np.zeros(8000, np.float32), tone_clip(k, 48000, k), np.zeros(16000, np.float32)])
        audio += (0.001 * np.random.default_rng(k).standard_normal(len(audio))).astype(np.float32)
        (utterance,) = find_utterances(audio, early_stop=StreamConfidence(recognizer, 0.3))
        assert utterance.reason == "confident" and utterance.end_s < 1.5  # the tone lasts until 3.5 s
        result = recognizer.recognize(utterance.audio)
        assert (result.intent, result.slots) == UNDERSTOOD[k]


def test_early_stop_needs_a_streaming_model(tmp_path: Path, bundle: Bundle, broker: Broker) -> None:
    import dataclasses

    hub = hub_config(tmp_path, broker, {"source": "stdin"}, recognizer={"early_stop": 0.5})
    streamless = dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, streaming=None))
    with pytest.raises(BundleError, match="early_stop needs a bundle with a streaming model"):
        Service(hub, streamless, sources=[])


class FlakySource(AudioSource):
    """A live source whose first run fails half-way (as a driver can), then delivers tone commands."""

    def __init__(self, audio: np.ndarray) -> None:
        super().__init__("flaky", 320)
        self.audio, self.runs = audio, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        self.runs += 1
        for i in range(0, len(self.audio) - 319, 320):
            if self.runs == 1 and i > 4000:  # in the leading silence
                raise OSError("device error")
            yield self.audio[i : i + 320]
        while not self.closed:  # a live source keeps going until closed
            time.sleep(0.02)
            yield np.zeros(320, np.float32)


def test_a_failing_source_is_restarted(tmp_path: Path, bundle: Bundle, broker: Broker,
                                       make_subscriber: Callable[..., Subscriber],
                                       caplog: pytest.LogCaptureFixture) -> None:
    hub = hub_config(tmp_path, broker, {"source": "mic"})
    subscriber = make_subscriber(broker.port, ("hubvoice/den/intent",))
    source = FlakySource(commands_audio([3]))
    service = Service(hub, bundle, sources=[source])
    service.start()
    try:
        (intent,) = subscriber.wait_for("hubvoice/den/intent", 1, timeout=10)
    finally:
        service.stop()
        service.shutdown()
    assert decisions([intent]) == [UNDERSTOOD[3]] and source.runs == 2
    assert "flaky: the audio source failed" in caplog.text


def test_listener_ignores_handler_errors(broker: Broker, satellite: paho.Client) -> None:
    got: list[bytes] = []
    done = threading.Event()

    def handler(payload: bytes) -> None:
        if payload == b"bad":
            raise ValueError("bad payload")
        got.append(payload)
        done.set()

    listener = MqttListener(MqttConfig(host="127.0.0.1", port=broker.port), client_id="test-listener")
    listener.subscribe("x/+/y", handler)
    listener.start()
    try:
        assert listener.subscribed.wait(5)
        send(satellite, "x/1/y", [b"bad", b"good"])
        assert done.wait(5) and got == [b"good"]
    finally:
        listener.stop()

"""hubvoice distill: the offline pipeline (context -> synthetic corpus -> teacher -> student -> bundle)."""

from assistant import __version__

__all__ = ["__version__"]

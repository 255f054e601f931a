"""One exception hierarchy for hubvoice (both the hub runtime and the distill pipeline).

Every message says what was expected and, where it can, how to fix it.
"""

from __future__ import annotations


class HubvoiceError(Exception):
    """Base class of every error hubvoice raises on purpose."""


class ContextError(HubvoiceError):
    """A context file (Rhino YAML or Home Assistant templates) is malformed.

    The message names the file, the intent, the expression index (1-based) and the
    column (1-based) where they are known, e.g.
    ``lights.yaml: intent 'lights', expression 2, column 14: unknown slot type 'colour'``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        intent: str | None = None,
        expression: int | None = None,
        column: int | None = None,
    ) -> None:
        self.file = file
        self.intent = intent
        self.expression = expression
        self.column = column
        self.reason = message
        where = []
        if intent is not None:
            where.append(f"intent '{intent}'")
        if expression is not None:
            where.append(f"expression {expression}")
        if column is not None:
            where.append(f"column {column}")
        prefix = f"{file}: " if file else ""
        location = ", ".join(where)
        super().__init__(f"{prefix}{location + ': ' if location else ''}{message}")


class AudioError(HubvoiceError):
    """Audio that cannot be read or used (corrupt WAV, unsupported encoding, NaN, ...)."""


class BundleError(HubvoiceError):
    """A model bundle that is missing, tampered with or inconsistent."""


class ConfigError(HubvoiceError):
    """A configuration value that is missing or not one of the allowed values."""


class CorpusError(HubvoiceError):
    """A corpus folder or manifest that cannot be read or written."""

"""Typed messages the hub publishes (and the few it reads) over MQTT.

Every message is a frozen dataclass with ``to_dict``/``from_dict``. ``from_dict`` raises
:class:`MessageError` naming the field and what was expected; :func:`decode` turns a raw
MQTT payload into a message or logs why it was rejected and returns None.

Topics (``prefix`` defaults to ``hubvoice``)::

    <prefix>/<site>/intent            every understood command (IntentEvent)
    <prefix>/<site>/not_understood    every rejected command (IntentEvent, intent null)
    <prefix>/<site>/status            retained "online" / "offline" (last will)
    <prefix>/<site>/expired           ExpiredReport: commands that were too old to send
    hermes/intent/<intentName>        HermesIntent (Rhasspy/Snips)
    hermes/nlu/intentNotRecognized    HermesNotRecognized
    <ha>/sensor/hubvoice_<site>/last_intent/config   Home Assistant discovery
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from assistant import __version__
from assistant.errors import HubvoiceError

_LOGGER = logging.getLogger(__name__)

MAX_LEVEL_LENGTH = 128
"""Longest value (in characters) allowed to become one MQTT topic level."""

_FORBIDDEN_IN_LEVEL = {"/": "'/' (a topic level separator)", "+": "'+' (a wildcard)", "#": "'#' (a wildcard)"}


class MessageError(HubvoiceError, ValueError):
    """A message that does not have the expected shape (field, type or value)."""


def check_topic_level(value: object, what: str) -> str:
    """Return ``value`` if it is safe as exactly one MQTT topic level, else raise MessageError.

    Safe means: a non-empty str of at most MAX_LEVEL_LENGTH characters with no ``/``, no
    ``+``/``#`` wildcards, no NUL and no other control characters, so it can never add topic
    levels or widen a subscription.
    """
    if not isinstance(value, str):
        raise MessageError(f"{what}: expected a string, got {type(value).__name__}")
    if not value:
        raise MessageError(f"{what}: empty value would make an empty topic level")
    if len(value) > MAX_LEVEL_LENGTH:
        raise MessageError(f"{what}: {len(value)} characters, at most {MAX_LEVEL_LENGTH} allowed")
    for char, name in _FORBIDDEN_IN_LEVEL.items():
        if char in value:
            raise MessageError(f"{what}: {value!r} contains {name}")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise MessageError(f"{what}: {value!r} contains a control character (NUL, newline, ...)")
    return value


def utc_timestamp(now: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z`` suffix, e.g. ``2025-01-31T12:00:00.123Z``."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- field readers: each names the field and the expected type ------------------------------------


def _get(data: Mapping[str, Any], key: str, kind: str, *, optional: bool = False) -> Any:
    if not isinstance(data, Mapping):
        raise MessageError(f"expected a JSON object, got {type(data).__name__}")
    if key not in data or (optional and data[key] is None):
        if optional:
            return None
        raise MessageError(f"missing field '{key}' ({kind})")
    value = data[key]
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "object": isinstance(value, Mapping),
        "list": isinstance(value, list),
    }[kind]
    if not ok:
        raise MessageError(f"field '{key}': expected {kind}, got {type(value).__name__} {value!r}")
    if kind == "number" and not math.isfinite(value):
        raise MessageError(f"field '{key}': expected a finite number, got {value!r}")
    return value


def _str_map(value: Mapping[str, Any], what: str) -> dict[str, str]:
    out = {}
    for name, slot_value in value.items():
        if not isinstance(name, str) or not name or not isinstance(slot_value, str):
            raise MessageError(f"{what}: expected {{name: string value}}, got {name!r}: {slot_value!r}")
        out[name] = slot_value
    return out


# --- the recognizer's decision and the event published for it -------------------------------------


@dataclass(frozen=True)
class InferenceResult:
    """What the recognizer decided for one input (``hubvoice infer --json`` prints one per input)."""

    input: str | None
    """Where the audio came from (a file name, ``mic``, a satellite id); None when unknown."""
    understood: bool
    """True when the command is inside the context; False means rejected (intent is None)."""
    intent: str | None
    """The intent name when understood, else None."""
    slots: dict[str, str] = field(default_factory=dict)
    """Slot name -> slot value (as written in the context); empty when not understood."""
    confidence: float = 0.0
    """The decision's confidence in [0, 1]."""
    latency_ms: float = 0.0
    """Inference time for this input in milliseconds (>= 0)."""

    def __post_init__(self) -> None:
        if self.input is not None and not isinstance(self.input, str):
            raise MessageError(f"input: expected a string or null, got {self.input!r}")
        if not isinstance(self.understood, bool):
            raise MessageError(f"understood: expected true or false, got {self.understood!r}")
        if self.understood and (not isinstance(self.intent, str) or not self.intent):
            raise MessageError(f"intent: an understood result needs an intent name, got {self.intent!r}")
        if not self.understood and self.intent is not None:
            raise MessageError(f"intent: must be null when understood is false, got {self.intent!r}")
        object.__setattr__(self, "slots", _str_map(self.slots, "slots"))
        if not self.understood and self.slots:
            raise MessageError(f"slots: must be empty when understood is false, got {self.slots!r}")
        for name, low, high in (("confidence", 0.0, 1.0), ("latency_ms", 0.0, math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise MessageError(f"{name}: expected a number in [{low}, {high}], got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "understood": self.understood,
            "intent": self.intent,
            "slots": dict(self.slots),
            "confidence": self.confidence,
            "latency_ms": self.latency_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InferenceResult:
        return cls(
            input=_get(data, "input", "str", optional=True),
            understood=_get(data, "understood", "bool"),
            intent=_get(data, "intent", "str", optional=True),
            slots=_str_map(_get(data, "slots", "object"), "slots"),
            confidence=float(_get(data, "confidence", "number")),
            latency_ms=float(_get(data, "latency_ms", "number")),
        )


@dataclass(frozen=True)
class IntentEvent:
    """The published form of a result: the result's fields plus ``site``, ``id`` and ``timestamp``."""

    result: InferenceResult
    """The recognizer's decision."""
    site: str
    """The hub's site id."""
    id: str
    """A unique id for this event (uuid4), also used as the Hermes sessionId."""
    timestamp: str
    """When the command was recognized, ISO 8601 UTC."""

    def __post_init__(self) -> None:
        check_topic_level(self.site, "site")
        if not isinstance(self.id, str) or not self.id:
            raise MessageError(f"id: expected a non-empty string, got {self.id!r}")
        try:
            moment = datetime.fromisoformat(self.timestamp)
        except (TypeError, ValueError):
            raise MessageError(f"timestamp: expected ISO 8601 UTC, got {self.timestamp!r}") from None
        if moment.utcoffset() is None:
            raise MessageError(f"timestamp: expected a UTC offset (…Z), got {self.timestamp!r}")

    @classmethod
    def create(cls, result: InferenceResult, site: str, *, now: datetime | None = None) -> IntentEvent:
        return cls(result=result, site=site, id=str(uuid.uuid4()), timestamp=utc_timestamp(now))

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "site": self.site, "id": self.id, "timestamp": self.timestamp}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntentEvent:
        return cls(
            result=InferenceResult.from_dict(data),
            site=_get(data, "site", "str"),
            id=_get(data, "id", "str"),
            timestamp=_get(data, "timestamp", "str"),
        )


# --- Rhasspy / Snips Hermes ------------------------------------------------------------------------


def canonical_text(result: InferenceResult) -> str:
    """A readable stand-in for a transcript: hubvoice maps audio to intents without text.

    ``changeLightState state=off location=kitchen``; empty when the command was not understood.
    """
    if not result.understood or result.intent is None:
        return ""
    return " ".join([result.intent, *(f"{name}={value}" for name, value in result.slots.items())])


@dataclass(frozen=True)
class HermesSlot:
    """One slot of a Hermes intent message."""

    slot_name: str
    """The slot's name in the context (``location``)."""
    value: str
    """The slot's value (``kitchen``), sent as ``{"kind": "Custom", "value": ...}``."""
    entity: str
    """The slot's type; hubvoice uses the slot name when the type is not known."""
    raw_value: str
    """The value as spoken; the same as ``value`` for hubvoice."""
    confidence: float
    """The confidence of the slot (the decision's confidence)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "slotName": self.slot_name,
            "rawValue": self.raw_value,
            "value": {"kind": "Custom", "value": self.value},
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HermesSlot:
        value = _get(data, "value", "object")
        return cls(
            slot_name=_get(data, "slotName", "str"),
            value=_get(value, "value", "str"),
            entity=_get(data, "entity", "str"),
            raw_value=_get(data, "rawValue", "str"),
            confidence=float(_get(data, "confidence", "number")),
        )


@dataclass(frozen=True)
class HermesIntent:
    """``hermes/intent/<intentName>``: what Rhasspy and Snips apps subscribe to."""

    input: str
    """The text of the command (hubvoice: :func:`canonical_text`)."""
    intent_name: str
    """The intent name."""
    confidence_score: float
    """The intent's confidence in [0, 1]."""
    slots: tuple[HermesSlot, ...]
    """The slots, in the order the recognizer gave them."""
    site_id: str
    """The hub's site id."""
    session_id: str
    """The IntentEvent id (each command is its own session)."""

    @classmethod
    def from_event(cls, event: IntentEvent) -> HermesIntent:
        result = event.result
        if not result.understood or result.intent is None:
            raise MessageError("a Hermes intent needs an understood result")
        slots = tuple(
            HermesSlot(name, value, entity=name, raw_value=value, confidence=result.confidence)
            for name, value in result.slots.items()
        )
        return cls(canonical_text(result), result.intent, result.confidence, slots, event.site, event.id)

    @property
    def topic(self) -> str:
        return f"hermes/intent/{check_topic_level(self.intent_name, 'intent name')}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "intent": {"intentName": self.intent_name, "confidenceScore": self.confidence_score},
            "slots": [slot.to_dict() for slot in self.slots],
            "siteId": self.site_id,
            "sessionId": self.session_id,
            "customData": None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HermesIntent:
        intent = _get(data, "intent", "object")
        slots = _get(data, "slots", "list")
        return cls(
            input=_get(data, "input", "str"),
            intent_name=_get(intent, "intentName", "str"),
            confidence_score=float(_get(intent, "confidenceScore", "number")),
            slots=tuple(HermesSlot.from_dict(slot) for slot in slots),
            site_id=_get(data, "siteId", "str"),
            session_id=_get(data, "sessionId", "str"),
        )


HERMES_NOT_RECOGNIZED_TOPIC = "hermes/nlu/intentNotRecognized"


@dataclass(frozen=True)
class HermesNotRecognized:
    """``hermes/nlu/intentNotRecognized``: the command was outside the context."""

    input: str
    """The text of the command; empty for hubvoice (no transcript)."""
    site_id: str
    """The hub's site id."""
    session_id: str
    """The IntentEvent id."""

    @classmethod
    def from_event(cls, event: IntentEvent) -> HermesNotRecognized:
        return cls(canonical_text(event.result), event.site, event.id)

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "siteId": self.site_id, "sessionId": self.session_id, "customData": None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HermesNotRecognized:
        return cls(_get(data, "input", "str"), _get(data, "siteId", "str"), _get(data, "sessionId", "str"))


# --- reports about the outbox ----------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiredItem:
    """One message that was too old to send."""

    id: str
    """The IntentEvent id the message belonged to."""
    topic: str
    """Where it would have gone."""
    intent: str | None
    """The intent it carried (None for messages without one)."""
    age_s: float
    """How old it was when it was given up, in seconds."""
    max_age_s: float
    """The limit it exceeded."""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "topic": self.topic, "intent": self.intent,
                "age_s": round(self.age_s, 3), "max_age_s": self.max_age_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpiredItem:
        return cls(_get(data, "id", "str"), _get(data, "topic", "str"), _get(data, "intent", "str", optional=True),
                   float(_get(data, "age_s", "number")), float(_get(data, "max_age_s", "number")))


@dataclass(frozen=True)
class ExpiredReport:
    """``<prefix>/<site>/expired``: commands given up because the broker was unreachable too long."""

    site: str
    """The hub's site id."""
    timestamp: str
    """When the report was made, ISO 8601 UTC."""
    expired: tuple[ExpiredItem, ...]
    """The messages given up, oldest first."""

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "timestamp": self.timestamp, "expired": [i.to_dict() for i in self.expired]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpiredReport:
        items = _get(data, "expired", "list")
        return cls(_get(data, "site", "str"), _get(data, "timestamp", "str"),
                   tuple(ExpiredItem.from_dict(item) for item in items))


# --- Home Assistant MQTT discovery -----------------------------------------------------------------


@dataclass(frozen=True)
class HaDiscovery:
    """Home Assistant discovery for the assistant: a sensor showing the last intent.

    Its state is the last intent name, its attributes the whole IntentEvent JSON, and it is
    available while ``<prefix>/<site>/status`` is ``online``.
    """

    site: str
    """The hub's site id."""
    state_topic: str
    """The intent topic (``<prefix>/<site>/intent``)."""
    availability_topic: str
    """The status topic (``<prefix>/<site>/status``)."""
    model: str
    """The bundle (model) name the hub runs."""
    sw_version: str = __version__
    """The hubvoice version."""

    @property
    def unique_id(self) -> str:
        return f"hubvoice_{self.site}_last_intent"

    def topic(self, discovery_prefix: str = "homeassistant") -> str:
        return f"{discovery_prefix}/sensor/hubvoice_{check_topic_level(self.site, 'site')}/last_intent/config"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": "Last intent",
            "unique_id": self.unique_id,
            "icon": "mdi:account-voice",
            "state_topic": self.state_topic,
            "value_template": "{{ value_json.intent }}",
            "json_attributes_topic": self.state_topic,
            "availability_topic": self.availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {
                "identifiers": [f"hubvoice_{self.site}"],
                "name": f"hubvoice {self.site}",
                "manufacturer": "hubvoice",
                "model": self.model,
                "sw_version": self.sw_version,
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HaDiscovery:
        device = _get(data, "device", "object")
        identifiers = _get(device, "identifiers", "list")
        if not identifiers or not isinstance(identifiers[0], str) or not identifiers[0].startswith("hubvoice_"):
            raise MessageError(f"device.identifiers: expected ['hubvoice_<site>'], got {identifiers!r}")
        return cls(
            site=identifiers[0].removeprefix("hubvoice_"),
            state_topic=_get(data, "state_topic", "str"),
            availability_topic=_get(data, "availability_topic", "str"),
            model=_get(device, "model", "str"),
            sw_version=_get(device, "sw_version", "str"),
        )


@dataclass(frozen=True)
class Topics:
    """The hub's own topics for one site."""

    site: str
    """The hub's site id (one topic level)."""
    prefix: str = "hubvoice"
    """The first topic level(s) of every hubvoice topic."""

    def __post_init__(self) -> None:
        check_topic_level(self.site, "site")
        for level in self.prefix.split("/"):
            check_topic_level(level, "prefix")

    def _topic(self, leaf: str) -> str:
        return f"{self.prefix}/{self.site}/{leaf}"

    @property
    def intent(self) -> str:
        return self._topic("intent")

    @property
    def not_understood(self) -> str:
        return self._topic("not_understood")

    @property
    def status(self) -> str:
        return self._topic("status")

    @property
    def expired(self) -> str:
        return self._topic("expired")


# --- decoding received payloads --------------------------------------------------------------------

_M = TypeVar("_M")


def decode(kind: type[_M], payload: bytes | str, *, topic: str = "?") -> _M | None:
    """Parse a JSON payload into ``kind`` (a message class with ``from_dict``).

    Malformed payloads are logged with the reason and give None.
    """
    try:
        data = json.loads(payload)
        return kind.from_dict(data)  # type: ignore[attr-defined]
    except (ValueError, UnicodeDecodeError) as err:
        _LOGGER.warning("Ignoring malformed %s on %s: %s", kind.__name__, topic, err)
        return None


def encode(message: Any) -> bytes:
    """The compact UTF-8 JSON form of a message (anything with ``to_dict``) or a dict."""
    data = message if isinstance(message, Mapping) else message.to_dict()
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

"""Actions: map a recognized intent (and slot values) to device commands over MQTT.

Each action in ``hub.yaml`` names an intent, optional slot conditions, a topic template and a
payload template::

    actions:
      - intent: changeLightState
        when: {location: [kitchen, bedroom]}        # optional: slot -> value or list of values
        topic: "zigbee2mqtt/{location|slug}_light/set"
        payload: {"state": "{state|upper}", "brightness": "{level|int}"}
        qos: 1                                        # optional, default mqtt.qos
        retain: false                                 # optional

Templates put values in ``{name}`` or ``{name|filter|filter...}``; ``name`` is a slot of the
intent or a built-in (``site``, ``intent``); ``{{`` and ``}}`` are literal braces. Filters:
``upper``, ``lower``, ``title``, ``slug`` (lower case, runs of other characters become ``_``),
``int``, ``float``, ``map:on=ON,off=OFF`` (a value missing from the map is an error) and
``default:VALUE`` (first in the chain: the value to use when the command has no such slot,
as in ``{area|default:all|slug}``; without it, an action whose slot is absent is skipped). A
payload may be a string (sent as is) or a JSON object/list: inside it a string that is exactly
one placeholder keeps the placeholder's type, so ``"{level|int}"`` becomes a JSON number.

Topic safety: every value put into a topic must be one safe topic level (no ``/``, ``+``,
``#``, NUL or other control characters, not empty, at most 128 characters). An unsafe value is
**rejected**: that action is not published and the reason is logged; other actions still are.
To accept any spoken value, put it through ``slug`` (``{location|slug}``), whose output is
always safe.

Templates are checked when the assistant starts: a template naming a slot the intent cannot
have, an unknown intent, filter or a malformed template is a ConfigError then, not at the first
command.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from assistant.errors import ConfigError
from assistant.messages import MessageError, check_topic_level

_LOGGER = logging.getLogger(__name__)

BUILTINS = ("intent", "site")
FILTERS = ("upper", "lower", "title", "slug", "int", "float", "map", "default")
MAX_TOPIC_BYTES = 65535

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

JsonTemplate: TypeAlias = "str | int | float | bool | None | list[JsonTemplate] | dict[str, JsonTemplate]"


@dataclass(frozen=True)
class Placeholder:
    """``{name|filter|...}`` inside a template."""

    name: str
    """A slot name or a built-in."""
    filters: tuple[tuple[str, str], ...]
    """(filter, argument) pairs applied left to right; the argument is '' when there is none."""


Part: TypeAlias = "str | Placeholder"


def parse_template(text: str, where: str) -> tuple[Part, ...]:
    """Split a template into literal text and placeholders; ConfigError names ``where`` and the column."""
    parts: list[Part] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in "{}" and text[i : i + 2] in ("{{", "}}"):
            literal.append(char)
            i += 2
            continue
        if char == "}":
            raise ConfigError(f"{where}: unmatched '}}' at column {i + 1} in {text!r} (write '}}}}' for a literal brace)")
        if char != "{":
            literal.append(char)
            i += 1
            continue
        end = text.find("}", i + 1)
        if end < 0 or "{" in text[i + 1 : end]:
            raise ConfigError(f"{where}: unclosed '{{' at column {i + 1} in {text!r} (write '{{{{' for a literal brace)")
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_parse_placeholder(text[i + 1 : end], f"{where}: column {i + 1}"))
        i = end + 1
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def _parse_placeholder(body: str, where: str) -> Placeholder:
    name, *filter_texts = (piece.strip() for piece in body.split("|"))
    if not _NAME.match(name):
        raise ConfigError(f"{where}: expected {{slot}} or {{slot|filter}}, got {{{body}}}")
    filters: list[tuple[str, str]] = []
    for filter_text in filter_texts:
        filter_name, _, arg = filter_text.partition(":")
        if filter_name not in FILTERS:
            raise ConfigError(f"{where}: unknown filter '{filter_name}' (allowed: {', '.join(FILTERS)})")
        if filter_name == "map":
            _parse_map(arg, where)
        elif filter_name == "default":
            if filters:
                raise ConfigError(f"{where}: filter 'default' must come first, as in {{{name}|default:{arg}|...}}")
        elif arg:
            raise ConfigError(f"{where}: filter '{filter_name}' takes no argument, got '{arg}'")
        filters.append((filter_name, arg))
    return Placeholder(name, tuple(filters))


def _parse_map(arg: str, where: str) -> dict[str, str]:
    table = {}
    for pair in arg.split(","):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where}: filter 'map' expects map:from=to,from=to, got 'map:{arg}'")
        table[key.strip()] = value.strip()
    return table


def slug(value: str) -> str:
    """``Living Room/+`` -> ``living_room``: lower case ASCII letters, digits and ``_`` only."""
    return re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")


def apply_filters(value: str, placeholder: Placeholder) -> str | int | float:
    """Run a value through a placeholder's filters; MessageError says why a value does not fit."""
    out: str | int | float = value
    for name, arg in placeholder.filters:
        text = str(out)
        if name == "upper":
            out = text.upper()
        elif name == "lower":
            out = text.lower()
        elif name == "title":
            out = text.title()
        elif name == "slug":
            out = slug(text)
        elif name in ("int", "float"):
            try:
                out = int(text) if name == "int" else float(text)
            except ValueError:
                out = math.nan
            if not math.isfinite(out):
                raise MessageError(f"{{{placeholder.name}|{name}}}: {text!r} is not a finite number")
        elif name == "default":
            pass  # used by _render_value when the slot is absent
        elif name == "map":
            table = _parse_map(arg, "map")
            if text not in table:
                raise MessageError(f"{{{placeholder.name}|map}}: {text!r} is not mapped (mapped: {', '.join(table)})")
            out = table[text]
    return out


def _names(template: JsonTemplate) -> list[Placeholder]:
    if isinstance(template, str):
        return [part for part in parse_template(template, "?") if isinstance(part, Placeholder)]
    if isinstance(template, list):
        return [p for item in template for p in _names(item)]
    if isinstance(template, dict):
        return [p for item in template.values() for p in _names(item)]
    return []


@dataclass(frozen=True)
class ActionSpec:
    """One entry of ``actions`` in hub.yaml (checked for syntax; slots are checked by :class:`Actions`)."""

    intent: str
    """The intent that triggers the action."""
    topic: str
    """The topic template, e.g. ``zigbee2mqtt/{location|slug}_light/set``."""
    payload: JsonTemplate
    """The payload template: a string, or a JSON object/list whose strings are templates."""
    when: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Slot conditions: the action runs only if each named slot has one of the listed values."""
    qos: int | None = None
    """MQTT QoS 0, 1 or 2; None: the mqtt section's qos."""
    retain: bool = False
    """Publish with the retain flag."""

    _KEYS = ("intent", "topic", "payload", "when", "qos", "retain")

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "actions[0]") -> ActionSpec:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with keys {', '.join(cls._KEYS)}, got {data!r}")
        unknown = sorted(set(data) - set(cls._KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(cls._KEYS)})")
        for key in ("intent", "topic", "payload"):
            if key not in data:
                raise ConfigError(f"{where}: missing key '{key}'")
        intent, topic, payload = data["intent"], data["topic"], data["payload"]
        if not isinstance(intent, str) or not _NAME.match(intent):
            raise ConfigError(f"{where}.intent: expected an intent name, got {intent!r}")
        if not isinstance(topic, str) or not topic:
            raise ConfigError(f"{where}.topic: expected a topic template string, got {topic!r}")
        _check_topic_template(topic, f"{where}.topic")
        _check_payload(payload, f"{where}.payload")
        when_data = data.get("when") or {}
        if not isinstance(when_data, Mapping):
            raise ConfigError(f"{where}.when: expected {{slot: value or [values]}}, got {when_data!r}")
        when: dict[str, tuple[str, ...]] = {}
        for slot_name, values in when_data.items():
            values = values if isinstance(values, list) else [values]
            if not isinstance(slot_name, str) or not values or not all(isinstance(v, str) for v in values):
                raise ConfigError(f"{where}.when.{slot_name}: expected a slot value or a list of them, got {values!r}")
            when[slot_name] = tuple(values)
        qos = data.get("qos")
        if qos is not None and (isinstance(qos, bool) or qos not in (0, 1, 2)):
            raise ConfigError(f"{where}.qos: expected 0, 1 or 2, got {qos!r}")
        retain = data.get("retain", False)
        if not isinstance(retain, bool):
            raise ConfigError(f"{where}.retain: expected true or false, got {retain!r}")
        return cls(intent=intent, topic=topic, payload=payload, when=when, qos=qos, retain=retain)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"intent": self.intent, "topic": self.topic, "payload": self.payload}
        if self.when:
            data["when"] = {name: list(values) for name, values in self.when.items()}
        if self.qos is not None:
            data["qos"] = self.qos
        data["retain"] = self.retain
        return data


def _check_topic_template(topic: str, where: str) -> None:
    parts = parse_template(topic, where)
    literal = "".join(part if isinstance(part, str) else "x" for part in parts)
    if any(c in literal for c in "+#\0") or any(ord(c) < 0x20 for c in literal):
        raise ConfigError(f"{where}: {topic!r} contains a wildcard (+, #) or a control character")
    if "" in literal.split("/"):
        raise ConfigError(f"{where}: {topic!r} has an empty topic level (leading, trailing or double '/')")
    if literal.startswith("$"):
        raise ConfigError(f"{where}: {topic!r} starts with '$' (reserved for the broker)")


def _check_payload(payload: Any, where: str) -> None:
    if isinstance(payload, str):
        parse_template(payload, where)
    elif isinstance(payload, list):
        for i, item in enumerate(payload):
            _check_payload(item, f"{where}[{i}]")
    elif isinstance(payload, Mapping):
        for key, item in payload.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: keys must be strings, got {key!r}")
            _check_payload(item, f"{where}.{key}")
    elif not (payload is None or isinstance(payload, (bool, int, float))):
        raise ConfigError(f"{where}: expected a string or JSON value, got {type(payload).__name__}")


@dataclass(frozen=True)
class RenderedAction:
    """A device command ready to publish."""

    topic: str
    """The topic with the values put in."""
    payload: bytes
    """The payload bytes."""
    qos: int
    """MQTT QoS."""
    retain: bool
    """The retain flag."""
    intent: str
    """The intent that triggered it."""


class Actions:
    """The actions of a hub, checked against the intents and slots the model can produce."""

    def __init__(
        self,
        specs: Sequence[ActionSpec],
        slots_by_intent: Mapping[str, Collection[str]] | None = None,
        *,
        default_qos: int = 1,
        source: str = "hub.yaml",
    ) -> None:
        """``slots_by_intent`` is ``{intent: slot names}`` from the context; None skips the slot checks."""
        self.specs = tuple(specs)
        self.default_qos = default_qos
        for i, spec in enumerate(self.specs):
            where = f"{source}: actions[{i}]"
            if slots_by_intent is None:
                continue
            if spec.intent not in slots_by_intent:
                known = ", ".join(sorted(slots_by_intent)) or "none"
                raise ConfigError(f"{where}.intent: unknown intent '{spec.intent}' (the context has: {known})")
            allowed = set(slots_by_intent[spec.intent])
            used = [("topic", p.name) for p in _names(spec.topic)]
            used += [("payload", p.name) for p in _names(spec.payload)]
            used += [("when", name) for name in spec.when]
            for key, name in used:
                if name not in allowed and not (key != "when" and name in BUILTINS):
                    raise ConfigError(
                        f"{where}.{key}: unknown slot '{name}' (intent '{spec.intent}' has slots: "
                        f"{', '.join(sorted(allowed)) or 'none'}; built-ins: {', '.join(BUILTINS)})"
                    )

    def __len__(self) -> int:
        return len(self.specs)

    def render(self, intent: str, slots: Mapping[str, str], site: str) -> list[RenderedAction]:
        """The commands for one recognized intent; an action whose values do not fit is logged and skipped."""
        out = []
        for i, spec in enumerate(self.specs):
            if spec.intent != intent:
                continue
            if any(slots.get(name) not in values for name, values in spec.when.items()):
                continue
            try:
                out.append(render_action(spec, slots, site, default_qos=self.default_qos))
            except MessageError as err:
                _LOGGER.warning("Not publishing action %d (%s): %s", i, spec.intent, err)
        return out


def render_action(spec: ActionSpec, slots: Mapping[str, str], site: str, *, default_qos: int = 1) -> RenderedAction:
    """Render one action; MessageError if a value is missing, does not convert, or is unsafe in the topic."""
    values = {**slots, "site": site, "intent": spec.intent}
    topic_parts = []
    for part in parse_template(spec.topic, "topic"):
        if isinstance(part, str):
            topic_parts.append(part)
            continue
        value = str(_render_value(part, values))
        topic_parts.append(check_topic_level(value, f"topic value {{{part.name}}}"))
    topic = "".join(topic_parts)
    if topic.startswith("$") or len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise MessageError(f"topic {topic[:80]!r}: starts with '$' or is longer than {MAX_TOPIC_BYTES} bytes")
    if isinstance(spec.payload, str):
        payload = _render_string(spec.payload, values).encode("utf-8")
    else:
        payload = json.dumps(_render_json(spec.payload, values), ensure_ascii=False).encode("utf-8")
    qos = default_qos if spec.qos is None else spec.qos
    return RenderedAction(topic, payload, qos, spec.retain, spec.intent)


def _render_value(placeholder: Placeholder, values: Mapping[str, str]) -> str | int | float:
    if placeholder.name not in values and placeholder.filters[:1] and placeholder.filters[0][0] == "default":
        return apply_filters(placeholder.filters[0][1], placeholder)
    if placeholder.name not in values:
        raise MessageError(f"slot '{placeholder.name}' is not in this command (has: {', '.join(values)})")
    return apply_filters(values[placeholder.name], placeholder)


def _render_string(template: str, values: Mapping[str, str]) -> str:
    return "".join(p if isinstance(p, str) else str(_render_value(p, values)) for p in parse_template(template, "?"))


def _render_json(template: JsonTemplate, values: Mapping[str, str]) -> Any:
    if isinstance(template, str):
        parts = parse_template(template, "?")
        if len(parts) == 1 and isinstance(parts[0], Placeholder):
            return _render_value(parts[0], values)
        return _render_string(template, values)
    if isinstance(template, list):
        return [_render_json(item, values) for item in template]
    if isinstance(template, dict):
        return {key: _render_json(item, values) for key, item in template.items()}
    return template

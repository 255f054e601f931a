"""Loading and validating a context: Rhino YAML (+ hubvoice extensions) -> :class:`Context`.

The file format (a superset of Picovoice Rhino's)::

    context:
      expressions:                 # intent -> list of expressions
        changeLightState:
          - "(please) [turn, switch] $state:state (the) $location:location [light, lights]"
          - expression: "[turn, switch] on the fan"   # extension: fixed slots, not spoken
            slots: {device: fan}
      slots:                       # slot type -> values
        state: ["on", "off"]
        location: ["kitchen", {"living room": "lounge"}]   # extension: {spoken: output value}
        brightness: {range: [0, 100], step: 10}            # extension: numbers, said as words
      macros:                      # optional: name -> alternatives, used as @name
        polite: ["please", "could you"]

Every scalar is read as a string (``on``/``off``/``yes`` stay words; YAML 1.1 would make
them booleans), duplicate keys are errors, and every problem raises ContextError naming
the file, the intent, the expression (1-based) and the column (1-based) where known.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from assistant.context.expression import ExpressionSyntaxError, parse_expression
from assistant.context.model import (
    NAME_PATTERN,
    Context,
    Expression,
    Macro,
    Node,
    NumberRange,
    SlotType,
    SlotValue,
    make_choice,
    slot_names,
)
from assistant.context.normalize import normalize_text
from assistant.errors import ContextError

MAX_RANGE_VALUES = 100_000
"""The most numbers a range slot type may have."""
_NULL_TAG = "tag:yaml.org,2002:null"


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers each key's line and every duplicated key."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}
        self.duplicates: list[tuple[Any, int, int]] = []


class _Loader(yaml.SafeLoader):
    """Safe YAML, every scalar a string (nulls excepted), duplicate keys recorded."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag == _NULL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Any:
    mapping = _Map()
    yield mapping
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool | type(None)):
            raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain word",
                                                    key_node.start_mark)
        value = loader.construct_object(value_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in mapping:
            mapping.duplicates.append((key, mapping.lines[key], line))
            continue
        mapping.lines[key] = line
        mapping[key] = value


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def load_yaml(text: str, file: str = "<string>") -> Any:
    """Read YAML the way contexts are read (see module doc); syntax errors name the line and column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(p for p in (error.context, error.problem) if p)
        raise ContextError(f"{where}YAML syntax error: {problem}", file=file) from None
    except yaml.YAMLError as error:
        raise ContextError(f"YAML syntax error: {error}", file=file) from None


def _check_duplicates(data: Any, file: str, path: tuple[str, ...] = ()) -> None:
    if isinstance(data, _Map) and data.duplicates:
        key, first, again = data.duplicates[0]
        kinds: dict[tuple[str, ...], str] = {("context", "expressions"): "intent", ("context", "slots"): "slot type",
                 ("context", "macros"): "macro"}
        kind = kinds.get(path)
        if kind is not None:
            raise ContextError(f"{kind} {key!r} is defined twice (lines {first} and {again})", file=file,
                               intent=str(key) if kind == "intent" else None)
        where = ".".join(path) or "the top level"
        raise ContextError(f"duplicate key {key!r} in {where} (lines {first} and {again})", file=file)
    if isinstance(data, Mapping):
        for key, value in data.items():
            _check_duplicates(value, file, (*path, str(key)))
    elif isinstance(data, list):
        for value in data:
            _check_duplicates(value, file, path)


def _text(value: Any, what: str, file: str, intent: str | None = None, expression: int | None = None) -> str:
    if isinstance(value, bool):
        raise ContextError(f"{what} is the boolean {value}: YAML reads unquoted on/off/yes/no/true/false as "
                           "booleans, quote it", file=file, intent=intent, expression=expression)
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise ContextError(f"{what} must be a string, got {type(value).__name__} {value!r}", file=file,
                           intent=intent, expression=expression)
    return value


def _mapping(value: Any, what: str, file: str, allowed: tuple[str, ...] | None = None) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ContextError(f"{what} must be a mapping, got {type(value).__name__}", file=file)
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise ContextError(f"unknown key {key!r} in {what} (allowed: {', '.join(allowed)})", file=file)
    return value


def _name(value: Any, what: str, file: str) -> str:
    name = _text(value, what, file)
    if not NAME_PATTERN.match(name):
        raise ContextError(f"{what} {name!r} is not a valid name (letters, digits, '_' or '-', "
                           "not starting with a digit or '-')", file=file)
    return name


def _number(value: Any, what: str, file: str) -> Decimal:
    if isinstance(value, bool):
        raise ContextError(f"{what} must be a number, got {value!r}", file=file)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ContextError(f"{what} must be a number, got {value!r}", file=file) from None
    if not number.is_finite():
        raise ContextError(f"{what} must be a finite number, got {value!r}", file=file)
    return number


def _slot_type(name: str, spec: Any, file: str) -> SlotType:
    what = f"slot type {name!r}"
    if isinstance(spec, Mapping):
        _mapping(spec, what, file, ("range", "step"))
        bounds = spec.get("range")
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise ContextError(f"{what}: 'range' must be [first, last], got {bounds!r}", file=file)
        start, stop = (_number(b, f"{what}: range bound", file) for b in bounds)
        step = _number(spec.get("step", 1), f"{what}: step", file)
        if step <= 0 or stop < start:
            raise ContextError(f"{what}: a range needs first <= last and step > 0, got {bounds} step {step}",
                               file=file)
        number_range = NumberRange(start, stop, step)
        if (stop - start) / step + 1 > MAX_RANGE_VALUES:
            raise ContextError(f"{what}: the range has more than {MAX_RANGE_VALUES} numbers", file=file)
        numbers = number_range.numbers()
        return SlotType(name, tuple(SlotValue(n, n) for n in numbers), number_range)
    if not isinstance(spec, list) or not spec:
        raise ContextError(f"{what} must be a non-empty list of values or a {{range: [first, last]}} mapping",
                           file=file)
    values: list[SlotValue] = []
    said: dict[str, int] = {}
    for index, item in enumerate(spec, 1):
        where = f"{what}, value {index}"
        if isinstance(item, Mapping):
            if len(item) != 1:
                raise ContextError(f"{where}: a synonym is one {{spoken phrase: output value}} pair, got {item!r}",
                                   file=file)
            ((spoken, output),) = item.items()
            value = SlotValue(_text(spoken, where, file), _text(output, f"{where} (output)", file))
        else:
            text = _text(item, where, file)
            value = SlotValue(text, text)
        spoken_form = normalize_text(value.spoken)
        if not spoken_form or not value.value.strip():
            raise ContextError(f"{where}: {item!r} has nothing to say or no output value", file=file)
        if spoken_form in said:
            raise ContextError(f"{where}: {value.spoken!r} is said the same way as value {said[spoken_form]}",
                               file=file)
        said[spoken_form] = index
        values.append(value)
    return SlotType(name, tuple(values))


class _MacroTable:
    """Parses macros on first use, so that macros may use macros (cycles are errors)."""

    def __init__(self, specs: Mapping[Any, Any], slots: Mapping[str, SlotType], file: str) -> None:
        self.specs = {_name(k, "macro", file): v for k, v in specs.items()}
        self.slots = slots
        self.file = file
        self.parsed: dict[str, Macro] = {}
        self.stack: list[str] = []

    def get(self, name: str) -> Macro:
        if name in self.parsed:
            return self.parsed[name]
        if name in self.stack:
            cycle = " -> ".join([*self.stack[self.stack.index(name):], name])
            raise ContextError(f"macro {name!r} refers to itself ({cycle})", file=self.file)
        spec = self.specs[name]
        if not isinstance(spec, list) or not spec:
            raise ContextError(f"macro {name!r} must be a non-empty list of alternatives", file=self.file)
        self.stack.append(name)
        alternatives, nodes = [], []
        for index, item in enumerate(spec, 1):
            text = _text(item, f"macro {name!r}, alternative {index}", self.file)
            try:
                nodes.append(parse_expression(text, self.slots, self.parsed, macro_names=self.specs,
                                              get_macro=self.get, fragment=True))
            except ExpressionSyntaxError as error:
                raise ContextError(f"in macro {name!r}, alternative {index}: {error.message}", file=self.file,
                                   column=error.column) from None
            alternatives.append(text)
        self.stack.pop()
        node: Node = make_choice(nodes)
        self.parsed[name] = Macro(name, tuple(alternatives), node)
        return self.parsed[name]


def _expression(item: Any, intent: str, index: int, slots: Mapping[str, SlotType], macros: _MacroTable,
                file: str) -> Expression:
    fixed: tuple[tuple[str, str], ...] = ()
    if isinstance(item, Mapping):
        for key in item:
            if key not in ("expression", "slots"):
                raise ContextError(f"unknown key {key!r} (allowed: expression, slots)", file=file, intent=intent,
                                   expression=index)
        fixed_spec = _mapping(item.get("slots"), "the fixed 'slots' of an expression", file)
        fixed = tuple((_name(k, "fixed slot", file), _text(v, f"fixed slot {k!r}", file, intent, index))
                      for k, v in fixed_spec.items())
        item = item.get("expression")
    text = _text(item, "an expression", file, intent, index)
    try:
        node = parse_expression(text, slots, macros.parsed, macro_names=macros.specs, get_macro=macros.get)
    except ExpressionSyntaxError as error:
        raise ContextError(error.message, file=file, intent=intent, expression=index, column=error.column) from None
    said = slot_names(node, macros.parsed)
    for name, _ in fixed:
        if name in said:
            raise ContextError(f"fixed slot {name!r} is also a spoken slot of the expression", file=file,
                               intent=intent, expression=index)
    return Expression(text, node, fixed)


def build_context(data: Any, file: str = "<string>", sha256: str = "") -> Context:
    """Validate loaded YAML data (a dict with a ``context`` key) and build the Context."""
    _check_duplicates(data, file)
    if not isinstance(data, Mapping):
        raise ContextError(f"expected a mapping with a 'context:' key at the top, got {type(data).__name__}",
                           file=file)
    if "context" not in data:
        hint = " (this looks like Home Assistant templates: use import_hassil)" if "intents" in data else ""
        raise ContextError(f"missing 'context:' key at the top of the file{hint}", file=file)
    _mapping(data, "the top level", file, ("context",))
    body = _mapping(data["context"], "context", file, ("expressions", "slots", "macros"))
    if "expressions" not in body:
        raise ContextError("missing 'expressions:' under 'context:'", file=file)
    slots: dict[str, SlotType] = {}
    for key, spec in _mapping(body.get("slots"), "context.slots", file).items():
        name = _name(key, "slot type", file)
        slots[name] = _slot_type(name, spec, file)
    macros = _MacroTable(_mapping(body.get("macros"), "context.macros", file), slots, file)
    for name in macros.specs:
        macros.get(name)
    expressions: dict[str, tuple[Expression, ...]] = {}
    for key, items in _mapping(body["expressions"], "context.expressions", file).items():
        intent = _name(key, "intent", file)
        if not isinstance(items, list) or not items:
            raise ContextError("expected a non-empty list of expressions", file=file, intent=intent)
        expressions[intent] = tuple(_expression(item, intent, index, slots, macros, file)
                                    for index, item in enumerate(items, 1))
    if not expressions:
        raise ContextError("no intents under context.expressions", file=file)
    return Context(expressions, slots, dict(macros.parsed), file=file, sha256=sha256)


def parse_context(source: str | bytes | Mapping[str, Any], file: str = "<string>") -> Context:
    """Parse a context from YAML text (or bytes) or from already-loaded data.

    ``sha256`` is that of the text (UTF-8); for data, of its canonical JSON.
    """
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ContextError(f"not UTF-8 text: {error}", file=file) from None
    if isinstance(source, str):
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
        return build_context(load_yaml(source, file), file, digest)
    digest = hashlib.sha256(json.dumps(source, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return build_context(source, file, digest)


def load_context(path: str | os.PathLike[str]) -> Context:
    """Load a Rhino YAML context file; ``sha256`` is that of the file's bytes.

    Home Assistant template files and folders go through :func:`import_hassil` instead.
    """
    file = Path(path)
    if file.is_dir():
        raise ContextError("is a folder; a context is one YAML file (for a folder of Home Assistant "
                           "templates use import_hassil)", file=str(file))
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise ContextError(f"cannot read the file: {error.strerror or error}", file=str(file)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ContextError(f"not UTF-8 text: {error}", file=str(file)) from None
    return build_context(load_yaml(text, str(file)), str(file), hashlib.sha256(raw).hexdigest())

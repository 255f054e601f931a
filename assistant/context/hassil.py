"""Home Assistant intent templates (hassil format) -> :class:`Context`.

Reads the compiled per-language JSON of the ``home-assistant-intents`` package
(``data/en.json``), a YAML/JSON file of the intents repository, a folder of them
(merged), or the loaded data. Template syntax: ``(a|b)`` alternatives, ``[a]`` /
``[a|b]`` optional, ``(a;b)`` permutation, ``{list}`` / ``{list:slot}`` slots,
``<rule>`` expansion rules. hassil joins text character by character (``fan[s]``,
``{brightness}[%]``); words glued that way are expanded into whole-word alternatives
(``[fan, fans]``) and a slot is always a word of its own. Text is normalized
(``normalize_text``: English number words), so the result is a plain Rhino context.

Lists: ``values`` (``in`` templates, ``out`` output values; each spoken form of ``in`` is
a synonym), ``range`` (``from``/``to``/``step``, ``fractions`` halves/tenths,
``multiplier``) -> number slots. Lists with no values here — ``wildcard: true`` ones
(free text) and the ones Home Assistant fills at runtime (``area``, ``name``,
``floor``) — come from the ``lists`` argument, else the alternatives that need them are
dropped and sentences that cannot do without them are skipped with a logged reason.
A block's ``slots:`` become fixed slots of its expressions. ``requires_context``,
``excludes_context``, ``metadata``, ``response`` and ``skip_words`` are ignored.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from assistant.context.model import (
    NAME_PATTERN,
    Context,
    Expression,
    NumberRange,
    SlotType,
    SlotValue,
    can_be_empty,
    format_node,
    format_number,
    iter_slots,
    repeated_slot,
)
from assistant.context.normalize import normalize_text
from assistant.context.parser import MAX_RANGE_VALUES, parse_context
from assistant.context.template import (
    Converter,
    Rules,
    TemplateParser,
    TemplateSyntaxError,
    no_rules,
    template_strings,
)
from assistant.errors import ContextError

_LOGGER = logging.getLogger(__name__)

_FRACTIONS = {"halves": Decimal("0.5"), "tenths": Decimal("0.1")}


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise ContextError(f"cannot read Home Assistant templates: {error}", file=str(path)) from None


def _load(source: str | os.PathLike[str] | Mapping[str, Any] | None, language: str) -> tuple[dict[str, Any], str]:
    if source is None:
        spec = importlib.util.find_spec("home_assistant_intents")
        if spec is None or not spec.submodule_search_locations:
            raise ContextError("the home-assistant-intents package is not installed "
                               "(pip install home-assistant-intents), or pass a template file or folder")
        source = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{language}.json"
        if not source.exists():
            known = sorted(p.stem for p in source.parent.glob("*.json"))
            raise ContextError(f"no templates for language {language!r} (available: {', '.join(known)})",
                               file=str(source))
    if isinstance(source, Mapping):
        datas, file = [source], "<hassil>"
    else:
        path, file = Path(source), str(source)
        if path.is_dir():
            paths = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
        elif path.exists():
            paths = [path]
        else:
            raise ContextError("no such file or folder", file=file)
        datas = [_read(p) for p in paths]
    merged: dict[str, Any] = {"intents": {}, "lists": {}, "expansion_rules": {}}
    for data in datas:
        if not isinstance(data, Mapping) or data.get("language", language) != language:
            continue
        for name, intent in (data.get("intents") or {}).items():
            blocks = intent.get("data", []) if isinstance(intent, Mapping) else None
            if not isinstance(blocks, list) or not all(
                    isinstance(b, Mapping) and isinstance(b.get("sentences", []), list) for b in blocks):
                raise ContextError("expected {data: [{sentences: [...]}, ...]}", file=file, intent=str(name))
            merged["intents"].setdefault(str(name), []).extend(intent.get("data", []))
        for key in ("lists", "expansion_rules"):
            merged[key].update(data.get(key) or {})
    return merged, file


def _decimal(value: Any, what: str, file: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ContextError(f"{what} must be a number, got {value!r}", file=file) from None


def _range_type(name: str, spec: Mapping[str, Any], file: str) -> SlotType:
    start = _decimal(spec.get("from", 0), f"list {name!r}: from", file)
    stop = _decimal(spec.get("to"), f"list {name!r}: to", file)
    step = _decimal(spec.get("step", 1), f"list {name!r}: step", file)
    multiplier = _decimal(spec.get("multiplier", 1), f"list {name!r}: multiplier", file)
    fraction = _FRACTIONS.get(str(spec.get("fractions")))
    if step <= 0 or stop < start or (stop - start) / min(step, fraction or step) >= MAX_RANGE_VALUES:
        raise ContextError(f"list {name!r}: unusable range {dict(spec)}", file=file)
    if fraction is not None and step == 1:
        step, fraction = fraction, None
    numbers = [Decimal(n) for n in NumberRange(start, stop, step).numbers()]
    if fraction is not None:
        count = int(1 / fraction)
        numbers = sorted({n + k * fraction for n in numbers for k in range(count) if n + k * fraction <= stop})
    values = tuple(SlotValue(format_number(n), format_number(n * multiplier)) for n in numbers)
    exact = multiplier == 1 and fraction is None
    return SlotType(name, values, NumberRange(start, stop, step) if exact else None)


def _values_type(name: str, values: Iterable[Any], file: str) -> SlotType:
    result: dict[str, SlotValue] = {}
    for value in values:
        if isinstance(value, Mapping) and "in" in value:
            template, output = str(value["in"]), value.get("out", value["in"])
        elif isinstance(value, Mapping) and len(value) == 1:
            ((template, output),) = value.items()
        else:
            template, output = str(value), value
        output = json.dumps(output) if isinstance(output, bool) else str(output)
        try:
            strings = template_strings(TemplateParser(str(template), no_rules).parse())
        except TemplateSyntaxError as error:
            raise ContextError(f"list {name!r}, value {template!r}: {error.message}", file=file) from None
        if strings is None:
            _LOGGER.warning("list %r: value %r cannot be expanded; skipped", name, template)
            continue
        for string in strings:
            spoken = normalize_text(string)
            if spoken and spoken not in result:
                result[spoken] = SlotValue(spoken, output)
            elif spoken and result[spoken].value != output:
                _LOGGER.warning("list %r: %r is said for both %r and %r; keeping the first", name, spoken,
                                result[spoken].value, output)
    return SlotType(name, tuple(result.values()))


def _fixed_slots(spec: Any, intent: str) -> tuple[tuple[str, str], ...]:
    fixed = []
    for name, value in (spec.items() if isinstance(spec, Mapping) else ()):
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        if isinstance(value, str | int | float) and NAME_PATTERN.match(str(name)) and text.strip():
            fixed.append((str(name), text))
        else:
            _LOGGER.warning("%s: fixed slot %r = %r is not a name and a plain value; ignored", intent, name, value)
    return tuple(fixed)


def _user_list(spec: Any) -> Any:
    if isinstance(spec, Mapping) and not {"values", "range", "wildcard"} & set(spec):
        return {"values": [{"in": k, "out": v} for k, v in spec.items()]}
    if isinstance(spec, list | tuple):
        return {"values": list(spec)}
    return spec


def import_hassil(source: str | os.PathLike[str] | Mapping[str, Any] | None = None, *, language: str = "en",
                  intents: Iterable[str] | None = None, lists: Mapping[str, Any] | None = None) -> Context:
    """Build a Context from Home Assistant templates (see module doc).

    ``source``: the compiled JSON, a YAML/JSON file or folder, loaded data, or None for
    the installed ``home-assistant-intents`` data of ``language``. ``intents``: the
    intent names to keep (all by default). ``lists``: values for lists the templates
    leave open, each a list of phrases / ``{spoken: output}`` pairs, a mapping
    ``{spoken: output}``, or a hassil list (``{values: [...]}``, ``{range: {...}}``).
    """
    data, file = _load(source, language)
    available = data["intents"]
    wanted = list(available) if intents is None else list(intents)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ContextError(f"unknown intent(s) {', '.join(unknown)} (available: {', '.join(available)})", file=file)
    specs = {**data["lists"], **{k: _user_list(v) for k, v in (lists or {}).items()}}
    types: dict[str, SlotType | None] = {}

    def slot_type(name: str) -> SlotType | None:
        if name not in types:
            spec = specs.get(name)
            if not isinstance(spec, Mapping) or not (spec.get("values") or spec.get("range")):
                types[name] = None
            elif not isinstance(spec.get("range") or {}, Mapping) or not isinstance(spec.get("values") or [], list):
                raise ContextError(f"list {name!r}: expected {{values: [...]}} or {{range: {{from: .., to: ..}}}}, "
                                   f"got {spec!r}", file=file)
            elif spec.get("range"):
                types[name] = _range_type(name, spec["range"], file)
            else:
                found = _values_type(name, spec["values"], file)
                types[name] = found if found.values else None
        return types[name]

    expressions: dict[str, tuple[Expression, ...]] = {}
    skipped: Counter[str] = Counter()
    for intent in wanted:
        kept: list[Expression] = []
        index = 0
        for block in available[intent]:
            rules = Rules({**data["expansion_rules"], **(block.get("expansion_rules") or {})})
            fixed = _fixed_slots(block.get("slots"), intent)
            for sentence in block.get("sentences", []):
                index += 1
                try:
                    items = TemplateParser(str(sentence), rules.get).parse()
                except TemplateSyntaxError as error:
                    raise ContextError(error.message, file=file, intent=intent, expression=index,
                                       column=error.column) from None
                converter = Converter(slot_type)
                node = converter.seq(items)
                if node is None:
                    skipped[f"list {converter.missing[-1]!r} has no values"] += 1
                    _LOGGER.debug("%s, sentence %d skipped: list %r has no values", intent, index,
                                 converter.missing[-1])
                    continue
                if can_be_empty(node, {}) or repeated_slot(node, {}) is not None:
                    skipped["it can say nothing or repeats a slot"] += 1
                    _LOGGER.debug("%s, sentence %d skipped: it can say nothing or repeats a slot", intent, index)
                    continue
                said = {s.name for s in iter_slots(node, {})}
                expression = Expression(format_node(node), node, tuple(f for f in fixed if f[0] not in said))
                if expression not in kept:
                    kept.append(expression)
        if kept:
            expressions[intent] = tuple(kept)
        else:
            _LOGGER.warning("%s: no sentence could be used; intent left out", intent)
    if skipped:
        _LOGGER.warning("skipped %d Home Assistant sentences (%s); pass lists={name: [values]} to keep them",
                        sum(skipped.values()), "; ".join(f"{n}: {r}" for r, n in skipped.most_common()))
    if not expressions:
        raise ContextError("no Home Assistant sentence could be used (see the logged reasons)", file=file)
    used = {s.type for items in expressions.values() for e in items for s in iter_slots(e.node, {})}
    slots = {name: t for name, t in types.items() if t is not None and name in used}
    draft = Context(expressions, slots, {}, file=file)
    return parse_context(draft.to_yaml(), file=file)

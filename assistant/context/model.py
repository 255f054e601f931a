"""The internal representation of a context: intents, expression trees, slot types, macros.

An expression is a tree of five node kinds, the same for Rhino YAML and imported Home
Assistant templates:

- ``Words("turn on")``: a phrase, as written (normalized only when spoken);
- ``Seq((a, b, ...))``: items said one after the other;
- ``Choice((a, b), optional=False)``: one of the options (Rhino ``[a, b]``); with
  ``optional=True`` also nothing (Rhino ``(a, b)``);
- ``Slot("location", "room")``: one value of slot type ``location``, labelled ``room``
  (Rhino ``$location:room``);
- ``MacroRef("polite")``: the alternatives of a macro (Rhino ``@polite``).

Counting is exact and combinatorial over the tree: a phrase is 1 sentence, a sequence
the product of its items, a choice the sum of its options (+1 when optional), a slot
the number of spoken values of its type. It counts derivations, so a grammar that can
say the same words two ways (``[the, the]`` is folded at parse time, ``(the) the`` is
not) counts them twice; sentences differing only by slot values are distinct.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml

from assistant.context.normalize import normalize_text
from assistant.errors import ContextError

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
"""What intent, slot type, slot and macro names look like."""


@dataclass(frozen=True)
class Words:
    """A phrase of one or more words."""

    text: str
    """The words as written in the source, separated by single spaces."""


@dataclass(frozen=True)
class Seq:
    """Items said one after the other (an empty Seq says nothing)."""

    items: tuple[Node, ...]
    """The items, in order."""


@dataclass(frozen=True)
class Choice:
    """Exactly one of the options, or (when optional) possibly none of them."""

    options: tuple[Node, ...]
    """The alternatives, in source order, without duplicates."""
    optional: bool = False
    """True for Rhino ``(a, b)`` (zero or one of), False for ``[a, b]`` (one of)."""


@dataclass(frozen=True)
class Slot:
    """A slot: one value of a slot type, reported under the slot's name."""

    type: str
    """The slot type (a key of ``slots:``)."""
    name: str
    """The name the value is reported under."""


@dataclass(frozen=True)
class MacroRef:
    """A reference to a macro's alternatives."""

    name: str
    """The macro (a key of ``macros:``)."""


Node = Words | Seq | Choice | Slot | MacroRef
EMPTY = Seq(())
"""The node that says nothing."""


def make_seq(items: list[Node] | tuple[Node, ...]) -> Node:
    """The canonical sequence of ``items``: nested sequences flattened, adjacent phrases merged."""
    flat: list[Node] = []
    for item in items:
        for part in item.items if isinstance(item, Seq) else (item,):
            if isinstance(part, Words) and flat and isinstance(flat[-1], Words):
                flat[-1] = Words(f"{flat[-1].text} {part.text}")
            else:
                flat.append(part)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def make_choice(options: list[Node] | tuple[Node, ...], optional: bool = False) -> Node:
    """The canonical choice: empty options make it optional, duplicates dropped, a sole option unwrapped."""
    kept: list[Node] = []
    for option in options:
        if option == EMPTY:
            optional = True
        elif option not in kept:
            kept.append(option)
    if not kept:
        return EMPTY
    if len(kept) == 1 and not optional:
        return kept[0]
    return Choice(tuple(kept), optional)


@dataclass(frozen=True)
class SlotValue:
    """One value of a slot type."""

    spoken: str
    """The phrase said in a sentence (as written; normalized when spoken)."""
    value: str
    """The output value reported for the slot (equal to ``spoken`` unless it is a synonym)."""


@dataclass(frozen=True)
class NumberRange:
    """A number slot type (hubvoice extension ``{range: [start, stop], step: step}``)."""

    start: Decimal
    """The first number."""
    stop: Decimal
    """The last number (included when reached by the steps)."""
    step: Decimal = Decimal(1)
    """The distance between numbers (> 0)."""

    def numbers(self) -> list[str]:
        """The numbers as strings without trailing zeros: '0', '10', '21.5'."""
        count = int((self.stop - self.start) / self.step) + 1
        return [format_number(self.start + k * self.step) for k in range(count)]


def format_number(number: Decimal) -> str:
    """A decimal as a plain string without exponent or trailing zeros: 50, 21.5, -3."""
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class SlotType:
    """A slot type: the values a slot of this type can take."""

    name: str
    """The type's name (a key of ``slots:``)."""
    values: tuple[SlotValue, ...]
    """The spoken values in source order (a synonym adds a value with its own spoken phrase)."""
    range: NumberRange | None = None
    """Set when the values come from a number range (written back as a range by ``to_yaml``)."""


@dataclass(frozen=True)
class Expression:
    """One expression of an intent."""

    text: str
    """The expression in Rhino syntax, as written."""
    node: Node
    """Its parse tree."""
    fixed_slots: tuple[tuple[str, str], ...] = ()
    """(name, value) slots every sentence of this expression carries without saying them
    (hubvoice extension, from Home Assistant's ``slots:``; e.g. ``domain: light``)."""


@dataclass(frozen=True)
class Macro:
    """A macro: named alternatives usable as ``@name``."""

    name: str
    """The macro's name."""
    alternatives: tuple[str, ...]
    """The alternatives as written."""
    node: Node
    """Their parse tree (a choice of the alternatives)."""


@dataclass(frozen=True)
class Context:
    """A parsed, validated context. Equality compares the grammar, not the file or checksum."""

    expressions: Mapping[str, tuple[Expression, ...]]
    """Intent name -> its expressions, in source order."""
    slots: Mapping[str, SlotType]
    """Slot type name -> type, in source order."""
    macros: Mapping[str, Macro] = field(default_factory=dict)
    """Macro name -> macro, in source order."""
    file: str = field(default="<string>", compare=False)
    """Where the context came from (used in messages)."""
    sha256: str = field(default="", compare=False)
    """SHA-256 (hex) of the source text (of the file's bytes for ``load_context``)."""
    _counts: dict[int, tuple[Node, int]] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def intents(self) -> tuple[str, ...]:
        """The intent names, in source order."""
        return tuple(self.expressions)

    def _check_intent(self, intent: str) -> None:
        if intent not in self.expressions:
            known = ", ".join(self.expressions) or "none"
            raise ContextError(f"unknown intent {intent!r} (defined: {known})", file=self.file)

    def resolve(self, node: Node) -> Node:
        """The macro's tree for a MacroRef, the node itself otherwise."""
        return self.macros[node.name].node if isinstance(node, MacroRef) else node

    def count_node(self, node: Node) -> int:
        """How many sentences ``node`` can say (memoized per node object)."""
        cached = self._counts.get(id(node))
        if cached is not None:
            return cached[1]
        if isinstance(node, Words):
            result = 1
        elif isinstance(node, Seq):
            result = 1
            for item in node.items:
                result *= self.count_node(item)
        elif isinstance(node, Choice):
            result = sum(self.count_node(o) for o in node.options) + int(node.optional)
        elif isinstance(node, Slot):
            result = len(self.slots[node.type].values)
        else:
            result = self.count_node(self.resolve(node))
        self._counts[id(node)] = (node, result)  # keeping the node alive keeps its id unique
        return result

    def count(self, intent: str | None = None) -> int:
        """The exact number of sentences of one intent, or of the whole context."""
        if intent is not None:
            self._check_intent(intent)
        names = self.intents if intent is None else (intent,)
        return sum(self.count_node(e.node) for name in names for e in self.expressions[name])

    def iter_slots(self, node: Node) -> Iterator[Slot]:
        """Every slot reference reachable from ``node`` (through macros), in order."""
        return iter_slots(node, self.macros)

    def slot_values(self, intent: str) -> dict[str, list[tuple[str, SlotValue]]]:
        """Slot name -> every (type, value) it can take in ``intent``, fixed slots included."""
        self._check_intent(intent)
        result: dict[str, list[tuple[str, SlotValue]]] = {}
        seen: set[tuple[str, str]] = set()
        for expression in self.expressions[intent]:
            for slot in self.iter_slots(expression.node):
                values = result.setdefault(slot.name, [])
                if (slot.name, slot.type) not in seen:
                    seen.add((slot.name, slot.type))
                    values.extend((slot.type, value) for value in self.slots[slot.type].values)
            for name, fixed in expression.fixed_slots:
                values = result.setdefault(name, [])
                if ("", SlotValue("", fixed)) not in values:
                    values.append(("", SlotValue("", fixed)))
        return result

    def intent_slots(self, intent: str) -> frozenset[str]:
        """The slot names ``intent`` can report."""
        return frozenset(self.slot_values(intent))

    def slot_heads(self) -> dict[str, list[str]]:
        """Every slot name -> its possible output values (union over intents, first-seen order)."""
        heads: dict[str, list[str]] = {}
        for intent in self.intents:
            for name, values in self.slot_values(intent).items():
                head = heads.setdefault(name, [])
                known = set(head)
                for _, value in values:
                    if value.value not in known:
                        known.add(value.value)
                        head.append(value.value)
        return heads

    def vocabulary(self) -> set[str]:
        """Every (normalized) word some sentence of the context can contain."""
        words: set[str] = set()
        seen: set[int] = set()

        def visit(node: Node) -> None:
            if id(node) in seen:
                return
            seen.add(id(node))
            if isinstance(node, Words):
                words.update(normalize_text(node.text).split())
            elif isinstance(node, Seq | Choice):
                for child in node.items if isinstance(node, Seq) else node.options:
                    visit(child)
            elif isinstance(node, Slot):
                for value in self.slots[node.type].values:
                    words.update(normalize_text(value.spoken).split())
            else:
                visit(self.resolve(node))

        for expressions in self.expressions.values():
            for expression in expressions:
                visit(expression.node)
        return words

    def to_data(self) -> dict[str, Any]:
        """The context as Rhino YAML data (plain dicts, lists and strings)."""
        expressions: dict[str, list[Any]] = {}
        for intent, items in self.expressions.items():
            expressions[intent] = [
                {"expression": e.text, "slots": dict(e.fixed_slots)} if e.fixed_slots else e.text
                for e in items
            ]
        slots: dict[str, Any] = {}
        for name, slot_type in self.slots.items():
            if slot_type.range is not None:
                r = slot_type.range
                spec: dict[str, Any] = {"range": [_yaml_number(r.start), _yaml_number(r.stop)]}
                if r.step != 1:
                    spec["step"] = _yaml_number(r.step)
                slots[name] = spec
            else:
                slots[name] = [v.spoken if v.spoken == v.value else {v.spoken: v.value} for v in slot_type.values]
        body: dict[str, Any] = {"expressions": expressions, "slots": slots}
        if self.macros:
            body["macros"] = {name: list(m.alternatives) for name, m in self.macros.items()}
        return {"context": body}

    def to_yaml(self) -> str:
        """The context as Rhino YAML text; parsing it gives an equal Context."""
        return yaml.safe_dump(self.to_data(), sort_keys=False, allow_unicode=True, width=1_000_000)


def _yaml_number(number: Decimal) -> int | float:
    return int(number) if number == number.to_integral_value() else float(format_number(number))


def format_node(node: Node, top: bool = True) -> str:
    """``node`` in Rhino expression syntax (the inverse of the expression parser)."""
    if isinstance(node, Words):
        return node.text
    if isinstance(node, Seq):
        return " ".join(format_node(item, False) for item in node.items)
    if isinstance(node, Choice):
        inner = ", ".join(format_node(option, False) for option in node.options)
        return f"({inner})" if node.optional else f"[{inner}]"
    if isinstance(node, Slot):
        return f"${node.type}:{node.name}"
    return f"@{node.name}"


def iter_slots(node: Node, macros: Mapping[str, Macro]) -> Iterator[Slot]:
    """Every slot reference reachable from ``node`` (through macros), in order."""
    if isinstance(node, Slot):
        yield node
    elif isinstance(node, Seq | Choice):
        for child in node.items if isinstance(node, Seq) else node.options:
            yield from iter_slots(child, macros)
    elif isinstance(node, MacroRef):
        yield from iter_slots(macros[node.name].node, macros)


def can_be_empty(node: Node, macros: Mapping[str, Macro]) -> bool:
    """Whether ``node`` can say nothing at all."""
    if isinstance(node, Words | Slot):
        return False
    if isinstance(node, Seq):
        return all(can_be_empty(item, macros) for item in node.items)
    if isinstance(node, Choice):
        return node.optional or any(can_be_empty(option, macros) for option in node.options)
    return can_be_empty(macros[node.name].node, macros)


def slot_names(node: Node, macros: Mapping[str, Macro]) -> frozenset[str]:
    """The slot names some derivation of ``node`` can contain."""
    if isinstance(node, Slot):
        return frozenset((node.name,))
    if isinstance(node, Seq | Choice):
        children = node.items if isinstance(node, Seq) else node.options
        return frozenset().union(*(slot_names(child, macros) for child in children))
    if isinstance(node, MacroRef):
        return slot_names(macros[node.name].node, macros)
    return frozenset()


def repeated_slot(node: Node, macros: Mapping[str, Macro]) -> str | None:
    """A slot name that one derivation of ``node`` can contain twice, or None."""
    if isinstance(node, Seq):
        seen: set[str] = set()
        for item in node.items:
            inner = repeated_slot(item, macros)
            if inner is not None:
                return inner
            names = slot_names(item, macros)
            if seen & names:
                return sorted(seen & names)[0]
            seen |= names
    elif isinstance(node, Choice):
        for option in node.options:
            inner = repeated_slot(option, macros)
            if inner is not None:
                return inner
    elif isinstance(node, MacroRef):
        return repeated_slot(macros[node.name].node, macros)
    return None

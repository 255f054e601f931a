"""The Rhino expression syntax: one expression string -> a tree of model nodes.

``[a, b]`` one of; ``(a, b)`` optional (zero or one of); ``$type:name`` a slot;
``@macro`` a macro; everything else is words. Choices and optionals contain phrases,
slots, macros and other choices. Errors carry the 1-based column of the offending
character or token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from assistant.context.model import (
    NAME_PATTERN,
    Macro,
    MacroRef,
    Node,
    Slot,
    SlotType,
    Words,
    can_be_empty,
    make_choice,
    make_seq,
    slot_names,
)
from assistant.context.normalize import normalize_text

_TOKENS = re.compile(r"\s+|[\[\](),]|[^\s\[\](),]+")
_CLOSERS = {"[": "]", "(": ")"}
_HINTS = {
    "{": " (Home Assistant template syntax? here a slot is written $type:name; use import_hassil for HA files)",
    "|": " (alternatives are written [a, b] or (a, b))",
    "<": " (Home Assistant rule syntax? here a macro is written @name)",
}


class ExpressionSyntaxError(Exception):
    """A problem in one expression string, at a 1-based column."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "slot", "macro", or one of "[", "]", "(", ")", ","
    text: str
    column: int


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    for match in _TOKENS.finditer(text):
        value, column = match.group(0), match.start() + 1
        if value.isspace():
            continue
        if value in "[](),":
            tokens.append(_Token(value, value, column))
        elif value.startswith("$"):
            tokens.append(_Token("slot", value, column))
        elif value.startswith("@"):
            tokens.append(_Token("macro", value, column))
        else:
            for offset, char in enumerate(value):
                if char in "{}|<>;$@":
                    raise ExpressionSyntaxError(
                        f"unexpected {char!r} in word {value!r}{_HINTS.get(char, '')}", column + offset)
            if not normalize_text(value):
                raise ExpressionSyntaxError(f"{value!r} is not a word (no letters or digits to say)", column)
            tokens.append(_Token("word", value, column))
    return tokens


class _Parser:
    def __init__(self, text: str, slots: Mapping[str, SlotType], macros: Mapping[str, Macro],
                 macro_names: Collection[str], get_macro: Callable[[str], Macro]) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.slots = slots
        self.macros = macros
        self.macro_names = macro_names
        self.get_macro = get_macro

    def _peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def parse(self) -> Node:
        items = self._sequence()
        token = self._peek()
        if token is not None:
            if token.kind == ",":
                raise ExpressionSyntaxError("',' separates alternatives and is only allowed inside [...] or (...)",
                                            token.column)
            opener = "[" if token.kind == "]" else "("
            raise ExpressionSyntaxError(f"unbalanced brackets: {token.kind!r} has no matching {opener!r}",
                                        token.column)
        return make_seq(items)

    def _sequence(self) -> list[Node]:
        items: list[Node] = []
        first_seen: dict[str, int] = {}
        while (token := self._peek()) is not None and token.kind not in ("]", ")", ","):
            self.pos += 1
            if token.kind == "word":
                node: Node = Words(token.text)
            elif token.kind == "slot":
                node = self._slot(token)
            elif token.kind == "macro":
                node = self._macro(token)
            else:
                node = self._group(token)
            for name in sorted(slot_names(node, self.macros)):
                if name in first_seen:
                    raise ExpressionSyntaxError(
                        f"slot name {name!r} is used twice (also at column {first_seen[name]}); "
                        "a slot name can appear once per sentence", token.column)
                first_seen[name] = token.column
            items.append(node)
        return items

    def _group(self, opener: _Token) -> Node:
        closer = _CLOSERS[opener.kind]
        options: list[Node] = []
        separator = opener
        while True:
            items = self._sequence()
            token = self._peek()
            if token is None:
                raise ExpressionSyntaxError(
                    f"unbalanced brackets: {opener.kind!r} is never closed (expected {closer!r})", opener.column)
            if not items:
                if not options and token.kind == closer:
                    what = "choice '[]'" if closer == "]" else "optional '()'"
                    raise ExpressionSyntaxError(f"empty {what}: put at least one phrase inside", opener.column)
                raise ExpressionSyntaxError(f"empty alternative after {separator.kind!r}", separator.column)
            options.append(make_seq(items))
            self.pos += 1
            if token.kind == closer:
                return make_choice(options, optional=closer == ")")
            if token.kind != ",":
                raise ExpressionSyntaxError(
                    f"unbalanced brackets: {token.kind!r} cannot close {opener.kind!r} "
                    f"from column {opener.column} (expected {closer!r})", token.column)
            separator = token

    def _slot(self, token: _Token) -> Node:
        slot_type, colon, name = token.text[1:].partition(":")
        if not colon and NAME_PATTERN.match(slot_type):
            raise ExpressionSyntaxError(
                f"slot {token.text!r} has no name: write ${slot_type}:name (e.g. ${slot_type}:{slot_type})",
                token.column)
        if not (NAME_PATTERN.match(slot_type) and NAME_PATTERN.match(name)):
            raise ExpressionSyntaxError(
                f"malformed slot {token.text!r}: expected $type:name, names made of letters, digits, '_' or '-'",
                token.column)
        if slot_type not in self.slots:
            raise ExpressionSyntaxError(
                f"unknown slot type {slot_type!r} (defined: {', '.join(self.slots) or 'none'})", token.column)
        return Slot(slot_type, name)

    def _macro(self, token: _Token) -> Node:
        name = token.text[1:]
        if not NAME_PATTERN.match(name):
            raise ExpressionSyntaxError(
                f"malformed macro {token.text!r}: expected @name, a name made of letters, digits, '_' or '-'",
                token.column)
        if name not in self.macro_names:
            raise ExpressionSyntaxError(
                f"unknown macro {name!r} (defined: {', '.join(self.macro_names) or 'none'})", token.column)
        self.get_macro(name)  # parses it on first use, so that its slot names are known here
        return MacroRef(name)


def parse_expression(text: str, slots: Mapping[str, SlotType], macros: Mapping[str, Macro], *,
                     macro_names: Collection[str] | None = None, get_macro: Callable[[str], Macro] | None = None,
                     fragment: bool = False) -> Node:
    """Parse one expression (or, with ``fragment=True``, one macro alternative) into a tree.

    ``macro_names`` are the defined macros (default: the keys of ``macros``);
    ``get_macro(name)`` returns one, parsing it on first use and adding it to ``macros``
    (default: ``macros[name]``). Raises ExpressionSyntaxError with the column of the problem.
    """
    if not text.strip():
        raise ExpressionSyntaxError("empty expression", 1)
    names = macros.keys() if macro_names is None else macro_names
    node = _Parser(text, slots, macros, names, get_macro or macros.__getitem__).parse()
    if not fragment and can_be_empty(node, macros):
        raise ExpressionSyntaxError(
            "the expression can say nothing: it needs at least one word or slot outside optional parts", 1)
    return node

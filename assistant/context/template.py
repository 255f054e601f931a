"""The hassil template syntax (Home Assistant intent sentences) -> word-level model nodes.

``(a|b)`` alternatives, ``[a]`` / ``[a|b]`` optional, ``(a;b)`` permutation, ``{list}`` /
``{list:slot}`` slots, ``<rule>`` expansion rules, ``\\x`` an escaped character. hassil
joins text character by character (``fan[s]``, ``day[ ]light``); :class:`Converter`
expands words glued that way into whole-word alternatives (``[fan, fans]``), reads a
slot as a word of its own, and normalizes every phrase with ``normalize_text``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from assistant.context.model import EMPTY, NAME_PATTERN, Node, Slot, SlotType, Words, make_choice, make_seq
from assistant.context.normalize import normalize_text

_GLUE_LIMIT = 512
"""The most strings a group of glued words may expand to before the glue is read as a space."""


@dataclass
class Alt:
    """``(a|b)``, or ``[a|b]`` when optional; also an inlined ``<rule>`` (one option)."""

    options: list[list[Item]]
    optional: bool


@dataclass
class Perm:
    """``(a;b;c)``: every order of the items, separated by spaces."""

    items: list[list[Item]]


@dataclass
class ListRef:
    """``{list}`` or ``{list:slot}``."""

    list: str
    slot: str


Item = str | Alt | Perm | ListRef


class TemplateSyntaxError(Exception):
    """A malformed hassil template, at a 1-based column."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


class TemplateParser:
    """Parses one template; ``rule(name)`` returns the parsed items of ``<name>``."""

    def __init__(self, text: str, rule: Callable[[str], list[Item]]) -> None:
        self.text = text
        self.pos = 0
        self.rule = rule

    def parse(self) -> list[Item]:
        items = self._seq()
        if self.pos < len(self.text):
            raise TemplateSyntaxError(f"unbalanced brackets: unexpected {self.text[self.pos]!r}", self.pos + 1)
        return items

    def _close(self, closer: str, what: str) -> str:
        end = self.text.find(closer, self.pos)
        if end < 0:
            raise TemplateSyntaxError(f"{what} is never closed (expected {closer!r})", self.pos + 1)
        inner = self.text[self.pos + 1:end].strip()
        self.pos = end + 1
        return inner

    def _seq(self) -> list[Item]:
        items: list[Item] = []
        text: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in ")]|;":
                break
            if char in "([{<" and text:
                items.append("".join(text))
                text = []
            if char in "([":
                items.append(self._group())
            elif char == "{":
                column = self.pos + 1
                inner = self._close("}", "'{'")
                name, _, slot = (part.strip() for part in inner.partition(":"))
                if not NAME_PATTERN.match(name) or not NAME_PATTERN.match(slot or name):
                    raise TemplateSyntaxError(f"{{{inner}}}: list and slot names are letters, digits, '_' or '-'",
                                              column)
                items.append(ListRef(name, slot or name))
            elif char == "<":
                column = self.pos + 1
                name = self._close(">", "'<'")
                try:
                    items.append(Alt([self.rule(name)], False))
                except TemplateSyntaxError as error:
                    message = error.message if error.message.endswith(f"<{name}>") else (
                        f"in expansion rule <{name}>: {error.message}")
                    raise TemplateSyntaxError(message, column) from None
            elif char in "}>":
                raise TemplateSyntaxError(f"unbalanced brackets: unexpected {char!r}", self.pos + 1)
            else:
                if char == "\\" and self.pos + 1 < len(self.text):
                    self.pos += 1
                text.append(self.text[self.pos])
                self.pos += 1
        if text:
            items.append("".join(text))
        return items

    def _group(self) -> Item:
        opener, start = self.text[self.pos], self.pos + 1
        closer = ")" if opener == "(" else "]"
        self.pos += 1
        options: list[list[Item]] = []
        separators: set[str] = set()
        while True:
            options.append(self._seq())
            if self.pos >= len(self.text):
                raise TemplateSyntaxError(f"unbalanced brackets: {opener!r} is never closed", start)
            char = self.text[self.pos]
            self.pos += 1
            if char == closer:
                break
            if char not in "|;":
                raise TemplateSyntaxError(f"unbalanced brackets: {char!r} cannot close {opener!r} from column "
                                          f"{start}", self.pos)
            separators.add(char)
        if len(separators) == 2:
            raise TemplateSyntaxError("a group mixes '|' (alternatives) and ';' (permutation)", start)
        if ";" in separators:
            return Alt([[Perm(options)]], opener == "[")
        return Alt(options, opener == "[")


def _permutations(perm: Perm) -> list[list[Item]]:
    result = []
    for order in itertools.permutations(perm.items):
        joined: list[Item] = []
        for k, part in enumerate(order):
            joined += ([" "] if k else []) + part
        result.append(joined)
    return result


class Converter:
    """Turns parsed templates into word-level model nodes; None means "needs a list without values"."""

    def __init__(self, slot_type: Callable[[str], SlotType | None]) -> None:
        self.slot_type = slot_type
        self.missing: list[str] = []

    def seq(self, items: list[Item]) -> Node | None:
        runs: list[list[Item]] = [[]]
        for item in items:
            if not isinstance(item, str):
                runs[-1].append(item)
                continue
            for piece in re.split(r"(\s+)", item):
                if piece.isspace():
                    runs.append([])
                elif piece:
                    runs[-1].append(piece)
        nodes: list[Node] = []
        for run in runs:
            groups: list[list[Item]] = [[]]
            for item in run:  # a slot is a word of its own
                if isinstance(item, ListRef):
                    groups += [[item], []]
                else:
                    groups[-1].append(item)
            for group in groups:
                node = self.group(group) if group else EMPTY
                if node is None:
                    return None
                nodes.append(node)
        return make_seq(nodes)

    def group(self, group: list[Item]) -> Node | None:
        if len(group) == 1:
            return self.item(group[0])
        strings = template_strings(group)
        if strings is None:  # too many, or a slot inside: read the glue as a space
            nodes = [self.item(item) for item in group]
            return None if any(n is None for n in nodes) else make_seq([n for n in nodes if n is not None])
        return make_choice([_phrase(s) for s in strings])

    def item(self, item: Item) -> Node | None:
        if isinstance(item, str):
            return _phrase(item)
        if isinstance(item, ListRef):
            if self.slot_type(item.list) is None:
                self.missing.append(item.list)
                return None
            return Slot(item.list, item.slot)
        if isinstance(item, Perm):
            return self.item(Alt(_permutations(item), False))
        options = [self.seq(option) for option in item.options]
        kept = [o for o in options if o is not None]
        if not kept and not item.optional:
            return None
        return make_choice(kept, item.optional)


def _phrase(text: str) -> Node:
    spoken = normalize_text(text)
    return Words(spoken) if spoken else EMPTY


def template_strings(items: list[Item]) -> list[str] | None:
    """Every string ``items`` can say, or None when a slot is inside or there are too many."""
    results = [""]
    for item in items:
        if isinstance(item, str):
            options: list[str] | None = [item]
        elif isinstance(item, ListRef):
            return None
        elif isinstance(item, Perm):
            options = template_strings([Alt(_permutations(item), False)])
        else:
            options = [""] if item.optional else []
            for option in item.options:
                found = template_strings(option)
                if found is None:
                    return None
                options += found
        if options is None:
            return None
        results = [a + b for a in results for b in dict.fromkeys(options)]
        if len(results) > _GLUE_LIMIT:
            return None
    return results


def no_rules(name: str) -> list[Item]:
    raise TemplateSyntaxError(f"rule <{name}> is not allowed in a list value", 1)


class Rules:
    """Expansion rules, parsed on first use (a rule may use rules; cycles are errors)."""

    def __init__(self, templates: Mapping[str, Any]) -> None:
        self.templates = templates
        self.parsed: dict[str, list[Item]] = {}
        self.stack: list[str] = []

    def get(self, name: str) -> list[Item]:
        if name not in self.templates:
            raise TemplateSyntaxError(f"unknown expansion rule <{name}>", 1)
        if name in self.stack:
            raise TemplateSyntaxError(f"expansion rule <{name}> refers to itself", 1)
        if name not in self.parsed:
            self.stack.append(name)
            self.parsed[name] = TemplateParser(str(self.templates[name]), self.get).parse()
            self.stack.pop()
        return self.parsed[name]

"""Decoding per-step token scores (CTC) through a context's grammar: only sentences the context can say.

A student with a CTC head scores, every 20 ms, each unit of a :class:`Lexicon` (phones) plus
CTC's blank. :class:`GrammarGraph` compiles the context into a network of words, each spelled
in those units, with every slot value's first word tagged by its (slot, value) and every
expression ending in its intent; :meth:`GrammarGraph.decode` finds the best-scoring paths
(Viterbi, beam-pruned) and returns them as (intent, slots, score). Unlike one classifier per
slot, a word learnt in one command helps every command that says it.

Pure Python over the scores (numpy only to read them); no torch.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assistant.context.model import Choice, Context, MacroRef, Node, Seq, Slot, Words
from assistant.context.normalize import normalize_text
from assistant.errors import BundleError

BLANK = 0
"""CTC's blank is class 0; unit ``i`` of a lexicon is class ``i + 1``."""


@dataclass(frozen=True)
class Lexicon:
    """How each word is spelled in the units the CTC head scores (e.g. espeak-ng phones)."""

    units: tuple[str, ...]
    """The units, in class order (class ``i + 1``; 0 is blank)."""
    words: Mapping[str, tuple[str, ...]]
    """Normalized word -> its units."""
    _class: dict[str, int] = field(init=False, repr=False, compare=False)
    """Unit -> its class."""

    def __post_init__(self) -> None:
        if not self.units or len(set(self.units)) != len(self.units):
            raise BundleError("lexicon: 'units' must be a non-empty list without duplicates")
        known = set(self.units)
        for word, spelled in self.words.items():
            unknown = [u for u in spelled if u not in known]
            if not spelled or unknown:
                raise BundleError(f"lexicon: word {word!r} is spelled {list(spelled)}: expected one or more of "
                                  f"the lexicon's units" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        object.__setattr__(self, "_class", {u: i + 1 for i, u in enumerate(self.units)})

    def spell(self, word: str) -> list[int]:
        """``word``'s classes (unit index + 1); BundleError for a word the lexicon lacks."""
        spelled = self.words.get(word)
        if spelled is None:
            raise BundleError(f"lexicon: no spelling for the word {word!r}")
        return [self._class[u] for u in spelled]

    def encode(self, text: str) -> list[int]:
        """A transcript's classes, word by word (words the lexicon lacks are skipped)."""
        return [self._class[u] for w in normalize_text(text).split() for u in self.words.get(w, ())]

    def to_dict(self) -> dict[str, Any]:
        return {"units": list(self.units), "words": {w: list(s) for w, s in sorted(self.words.items())}}

    @classmethod
    def from_dict(cls, data: Any) -> Lexicon:
        if not isinstance(data, Mapping) or not isinstance(data.get("units"), list) \
                or not isinstance(data.get("words"), Mapping):
            raise BundleError("lexicon: expected an object with 'units' (a list) and 'words' (word -> units)")
        words: dict[str, tuple[str, ...]] = {}
        for word, spelled in data["words"].items():
            if not isinstance(word, str) or not isinstance(spelled, list) or \
                    not all(isinstance(u, str) for u in spelled):
                raise BundleError(f"lexicon: word {word!r}: expected a list of unit names")
            words[word] = tuple(spelled)
        return cls(tuple(str(u) for u in data["units"]), words)


@dataclass(frozen=True)
class Hypothesis:
    """One sentence of the context that the scores could be: its intent and slots, and its score."""

    intent: str
    slots: dict[str, str]
    score: float
    """Log score of its best path (CTC Viterbi), blank penalty included."""


class GrammarGraph:
    """The context's sentences as a network of spelled words (one sub-network per expression)."""

    def __init__(self, ctx: Context, spell: Callable[[str], Sequence[int]]) -> None:
        """``spell(word)``: a normalized word's classes (1-based; 0 is blank)."""
        self.ctx = ctx
        self._spell = spell
        self._nodes = 1  # node 0 is the start
        self.arc_src: list[int] = []
        self.arc_dst: list[int] = []
        self.arc_units: list[tuple[int, ...]] = []
        self.arc_tag: list[tuple[str, str] | None] = []
        self._eps: dict[int, list[int]] = {}
        self.expressions: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        self._final: dict[int, int] = {}
        for intent, items in ctx.expressions.items():
            for expression in items:
                index = len(self.expressions)
                self.expressions.append((intent, expression.fixed_slots))
                start = self._node()
                self._eps.setdefault(0, []).append(start)
                self._final[self._compile(expression.node, start)] = index
        self._closures: dict[int, list[int]] = {}
        self._successors: dict[int, list[int]] = {}
        self._out: dict[int, list[int]] = {}
        for arc, src in enumerate(self.arc_src):
            self._out.setdefault(src, []).append(arc)
        self.arc_ends: list[int] = [self._ends(dst) for dst in self.arc_dst]
        """Per arc: the expression a sentence may end with after it, or -1."""

    @classmethod
    def from_lexicon(cls, ctx: Context, lexicon: Lexicon) -> GrammarGraph:
        return cls(ctx, lexicon.spell)

    @property
    def size(self) -> tuple[int, int]:
        """(nodes, word arcs)."""
        return self._nodes, len(self.arc_src)

    def _node(self) -> int:
        self._nodes += 1
        return self._nodes - 1

    def _words(self, text: str, src: int, tag: tuple[str, str] | None = None) -> int:
        for i, word in enumerate(normalize_text(text).split()):
            dst = self._node()
            self.arc_src.append(src)
            self.arc_dst.append(dst)
            self.arc_units.append(tuple(self._spell(word)))
            self.arc_tag.append(tag if i == 0 else None)
            src = dst
        return src

    def _compile(self, node: Node, src: int) -> int:
        """Adds ``node``'s paths from ``src``; returns the node where they all end."""
        if isinstance(node, Words):
            return self._words(node.text, src)
        if isinstance(node, Seq):
            for item in node.items:
                src = self._compile(item, src)
            return src
        if isinstance(node, MacroRef):
            return self._compile(self.ctx.resolve(node), src)
        dst = self._node()
        if isinstance(node, Choice):
            for option in node.options:
                self._eps.setdefault(self._compile(option, src), []).append(dst)
            if node.optional:
                self._eps.setdefault(src, []).append(dst)
        else:  # Slot
            assert isinstance(node, Slot)
            for value in self.ctx.slots[node.type].values:
                self._eps.setdefault(self._words(value.spoken, src, (node.name, value.value)), []).append(dst)
        return dst

    def _closure(self, node: int) -> list[int]:
        found = self._closures.get(node)
        if found is None:
            seen, stack = {node}, [node]
            while stack:
                for nxt in self._eps.get(stack.pop(), ()):
                    if nxt not in seen:
                        seen.add(nxt)
                        stack.append(nxt)
            found = self._closures[node] = sorted(seen)
        return found

    def _ends(self, node: int) -> int:
        return next((self._final[n] for n in self._closure(node) if n in self._final), -1)

    def successors(self, node: int) -> list[int]:
        """The word arcs that can follow ``node``."""
        found = self._successors.get(node)
        if found is None:
            found = self._successors[node] = [a for n in self._closure(node) for a in self._out.get(n, ())]
        return found

    def decode(self, log_probs: np.ndarray | Sequence[Sequence[float]], *, beam: int = 1000, prune: float = 25.0,
               blank_penalty: float = 0.0, nbest: int = 20) -> list[Hypothesis]:
        """The best sentences for per-step log-probabilities ``[steps, 1 + units]`` (blank first), best first.

        Viterbi over (word arc, unit, after-blank) states with CTC's rules: a unit repeats by
        staying, the same unit twice needs a blank between. After each step only the ``beam``
        best states within ``prune`` of the best survive. ``blank_penalty`` is subtracted from
        the blank's score (a tiny model says "blank" too often; tuned on validation data).
        Paths must end at the end of a sentence; an empty list when none survives.
        """
        rows = np.asarray(log_probs, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] < 2:
            raise ValueError(f"log_probs: expected [steps, 1 + units], got shape {rows.shape}")
        units, dst, tags = self.arc_units, self.arc_dst, self.arc_tag
        Tags = tuple[tuple[str, str], Any] | None  # a linked list of the slot tags passed, newest first
        hyps: dict[tuple[int, int, int], tuple[float, Tags]] = {(-1, 0, 1): (0.0, None)}
        for row in rows.tolist():
            blank = row[BLANK] - blank_penalty
            new: dict[tuple[int, int, int], tuple[float, Tags]] = {}
            relax = functools.partial(_relax, new)
            for (arc, pos, after_blank), (score, path) in hyps.items():
                if arc < 0:  # before the first word: silence, or the first unit of a first word
                    relax((arc, 0, 1), score + blank, path)
                    for nxt in self.successors(0):
                        tag = tags[nxt]
                        relax((nxt, 0, 0), score + row[units[nxt][0]], (tag, path) if tag else path)
                    continue
                unit = units[arc][pos]
                if not after_blank:
                    relax((arc, pos, 0), score + row[unit], path)
                relax((arc, pos, 1), score + blank, path)
                if pos + 1 < len(units[arc]):
                    nxt_unit = units[arc][pos + 1]
                    if after_blank or nxt_unit != unit:
                        relax((arc, pos + 1, 0), score + row[nxt_unit], path)
                    continue
                for nxt in self.successors(dst[arc]):
                    nxt_unit = units[nxt][0]
                    if after_blank or nxt_unit != unit:
                        tag = tags[nxt]
                        relax((nxt, 0, 0), score + row[nxt_unit], (tag, path) if tag else path)
            best = max(v[0] for v in new.values())
            kept = [(k, v) for k, v in new.items() if v[0] > best - prune]
            if len(kept) > beam:
                kept = heapq.nlargest(beam, kept, key=lambda kv: kv[1][0])
            hyps = dict(kept)
        found: dict[tuple[str, tuple[tuple[str, str], ...]], Hypothesis] = {}
        for (arc, pos, _), (score, path) in hyps.items():
            if arc < 0 or pos != len(units[arc]) - 1 or self.arc_ends[arc] < 0:
                continue
            intent, fixed = self.expressions[self.arc_ends[arc]]
            slots: dict[str, str] = {}
            while path is not None:
                (name, value), path = path
                slots.setdefault(name, value)
            slots.update(fixed)
            key = (intent, tuple(sorted(slots.items())))
            if key not in found or score > found[key].score:
                found[key] = Hypothesis(intent, slots, score)
        return sorted(found.values(), key=lambda h: -h.score)[:nbest]


def _relax(new: dict[tuple[int, int, int], tuple[float, Any]], key: tuple[int, int, int], score: float,
           path: Any) -> None:
    """Viterbi: keep the better path into ``key``."""
    old = new.get(key)
    if old is None or score > old[0]:
        new[key] = (score, path)


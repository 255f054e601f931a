"""Decoding per-step token scores (CTC) through a context's grammar: only sentences the context can say.

A student with a CTC head scores, every 20 ms, each unit of a :class:`Lexicon` (phones) plus
CTC's blank. :class:`GrammarGraph` compiles the context into a network of words, each spelled
in those units, with every slot value's first word tagged by its (slot, value) and every
expression ending in its intent; :meth:`GrammarGraph.decode` finds the best-scoring paths
(Viterbi, beam-pruned) and returns them as (intent, slots, score). Unlike one classifier per
slot, a word learnt in one command helps every command that says it.

The search is compiled from ``_search.c`` where the install could build it, with the same loop
in pure Python as the fallback (same sentences, same scores); no torch.
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
from assistant.decode import Decision, HeadLayout
from assistant.errors import BundleError

_search: Any
try:  # the search compiled from _search.c (setup.py builds it when a C compiler is there)
    from assistant import _search
except ImportError:  # pragma: no cover - exercised only on an install without the extension
    _search = None

SEARCH_ENGINE = "python" if _search is None else "c"
"""Which search :meth:`GrammarGraph.decode` runs by default: the compiled one when it is built."""

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
    """The context's sentences as a network of spelled words.

    Compiled from one sub-network per expression, then made deterministic over (spelling, slot tag)
    word labels and minimized (equal futures merged), so that sentences sharing a beginning or an
    end share those words: the smart-home context's 2,341 first words of expressions become 122,
    and a decoding beam no longer fills with copies of the same word.
    """

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
        self._out: dict[int, list[int]] = {}
        for arc, src in enumerate(self.arc_src):
            self._out.setdefault(src, []).append(arc)
        self.start = 0
        self._succ: list[list[int]] = []
        self.arc_ends: list[tuple[int, ...]] = []
        """Per arc: the expressions a sentence may end with after it (empty: none)."""
        self._minimize()
        # the per-expression network is only the minimized graph's source: not kept on a hub
        self._eps, self._final, self._closures, self._out = {}, {}, {}, {}

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

    def _minimize(self) -> None:
        """Replace the word arcs by those of the minimal deterministic graph (subset construction over
        (spelling, tag) labels, then merging states with equal ends and equal labelled successors; the
        graph is acyclic). Arcs are numbered in a fixed order, so ties break the same way in every process."""
        Label = tuple[tuple[int, ...], tuple[str, ...]]
        start = frozenset(self._closure(0))
        ids, order = {start: 0}, [start]
        moves: list[list[tuple[Label, int]]] = []
        for subset in order:  # grows while it is walked: breadth-first over the subsets reached
            groups: dict[Label, set[int]] = {}
            for node in sorted(subset):
                for arc in self._out.get(node, ()):
                    key = (self.arc_units[arc], self.arc_tag[arc] or ())
                    groups.setdefault(key, set()).update(self._closure(self.arc_dst[arc]))
            out = []
            for label in sorted(groups):
                reached = frozenset(groups[label])
                if reached not in ids:
                    ids[reached] = len(order)
                    order.append(reached)
                out.append((label, ids[reached]))
            moves.append(out)
        ends = [tuple(sorted({self._final[n] for n in subset if n in self._final})) for subset in order]
        # merge equal futures, children first (iteratively: deep graphs would exhaust Python's recursion)
        canon: dict[int, int] = {}
        signatures: dict[tuple[Any, ...], int] = {}
        kept: list[tuple[tuple[int, ...], list[tuple[Label, int]]]] = []
        stack = [0]
        while stack:
            state = stack[-1]
            if state in canon:
                stack.pop()
                continue
            todo = [t for _, t in moves[state] if t not in canon]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            arcs = [(label, canon[t]) for label, t in moves[state]]
            signature = (ends[state], tuple(arcs))
            if signature not in signatures:
                signatures[signature] = len(kept)
                kept.append((ends[state], arcs))
            canon[state] = signatures[signature]
        self.start, self._nodes = canon[0], len(kept)
        self.arc_src, self.arc_dst, self.arc_units, self.arc_tag = [], [], [], []
        self._succ = [[] for _ in kept]
        for state, (_, arcs) in enumerate(kept):
            for (spelled, slot), target in arcs:
                self._succ[state].append(len(self.arc_src))
                self.arc_src.append(state)
                self.arc_dst.append(target)
                self.arc_units.append(spelled)
                self.arc_tag.append((slot[0], slot[1]) if slot else None)
        self.arc_ends = [kept[target][0] for target in self.arc_dst]

    def successors(self, node: int) -> list[int]:
        """The word arcs that can follow ``node``."""
        return self._succ[node]

    @functools.cached_property
    def _tables(self) -> _Tables:
        """The graph as flat int32 arrays, for the compiled search."""
        lengths = np.array([len(u) for u in self.arc_units], dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
        units = np.array([u for spelled in self.arc_units for u in spelled], dtype=np.int32)
        position_arc = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
        last = np.zeros(len(units), dtype=np.int32)
        last[first + lengths - 1] = 1
        names = sorted({tag for tag in self.arc_tag if tag is not None})
        ids = {tag: i for i, tag in enumerate(names)}
        arc_tag = np.array([-1 if tag is None else ids[tag] for tag in self.arc_tag], dtype=np.int32)
        counts = np.array([len(s) for s in self._succ], dtype=np.int64)
        successor_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        successors = np.array([a for s in self._succ for a in s], dtype=np.int32)
        return _Tables(units, position_arc, last, first, np.asarray(self.arc_dst, dtype=np.int32), arc_tag,
                       successor_start, successors, names, int(units.max(initial=0)))

    @functools.cached_property
    def _compiled(self) -> Any:
        """The tables checked and copied into the compiled search (``_search.SearchGraph``)."""
        assert _search is not None
        t = self._tables
        return _search.SearchGraph(t.units, t.position_arc, t.position_last, t.arc_first, t.arc_dst, t.arc_tag,
                                   t.successor_start, t.successors, self.start)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_compiled", None)  # C memory: rebuilt from the tables where it is needed
        return state

    def decode(self, log_probs: np.ndarray | Sequence[Sequence[float]], *, beam: int = 1000, prune: float = 25.0,
               blank_penalty: float = 0.0, nbest: int = 20, engine: str | None = None) -> list[Hypothesis]:
        """The best sentences for per-step log-probabilities ``[steps, 1 + units]`` (blank first), best first.

        Viterbi over (word arc, unit, after-blank) states with CTC's rules: a unit repeats by
        staying, the same unit twice needs a blank between. After each step only the states within
        ``prune`` of the best survive, and of those the ``beam`` best (ties: the first reached).
        ``blank_penalty`` is subtracted from the blank's score (a tiny model says "blank" too
        often; tuned on validation data). Paths must end at the end of a sentence; an empty list
        when none survives. ``engine``: ``"c"`` (the compiled search), ``"python"``, or None for
        :data:`SEARCH_ENGINE`; both give the same sentences and scores.
        """
        rows = np.ascontiguousarray(log_probs, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] < 2:
            raise ValueError(f"log_probs: expected [steps, 1 + units], got shape {rows.shape}")
        tables = self._tables
        if rows.shape[1] <= tables.max_unit:
            raise ValueError(f"log_probs: {rows.shape[1] - 1} units, but the grammar spells with unit {tables.max_unit}")
        if np.isnan(rows).any():
            raise ValueError("log_probs: NaN scores")
        engine = SEARCH_ENGINE if engine is None else engine
        if engine == "c":
            if _search is None:
                raise RuntimeError("the compiled grammar search (assistant._search) is not built")
            ends = [(arc, score, tuple(tables.tag_names[t] for t in tags)) for arc, score, tags in
                    self._compiled.viterbi(rows, beam, float(prune), float(blank_penalty))]
        elif engine == "python":
            ends = self._search_python(rows, beam, prune, blank_penalty)
        else:
            raise ValueError(f"engine: expected 'c', 'python' or None, got {engine!r}")
        found: dict[tuple[str, tuple[tuple[str, str], ...]], Hypothesis] = {}
        for arc, score, tags in ends:
            if not self.arc_ends[arc]:
                continue
            said: dict[str, str] = {}
            for name, value in tags:  # newest first: the last value said for a slot wins
                said.setdefault(name, value)
            for expression in self.arc_ends[arc]:  # the same words can end several expressions
                intent, fixed = self.expressions[expression]
                slots = {**said, **dict(fixed)}
                meaning = (intent, tuple(sorted(slots.items())))
                if meaning not in found or score > found[meaning].score:
                    found[meaning] = Hypothesis(intent, slots, score)
        return sorted(found.values(), key=lambda h: -h.score)[:nbest]

    def _search_python(self, rows: np.ndarray, beam: int, prune: float,
                       blank_penalty: float) -> list[tuple[int, float, tuple[tuple[str, str], ...]]]:
        """The search in Python (``_search.c`` is the same loop compiled): the surviving states at a
        word's last unit, in the search's order, as (arc, score, slot tags newest first)."""
        units, dst, tags = self.arc_units, self.arc_dst, self.arc_tag
        Tags = tuple[tuple[str, str], Any] | None  # a linked list of the slot tags passed, newest first
        hyps: dict[tuple[int, int, int], tuple[float, Tags]] = {(-1, 0, 1): (0.0, None)}
        starts, succ, get = self._succ[self.start], self._succ, dict.get
        for row in rows.tolist():
            blank = row[BLANK] - blank_penalty
            new: dict[tuple[int, int, int], tuple[float, Tags]] = {}
            # Viterbi "keep the better path into key", written out: this loop is the decoder's time
            for (arc, pos, after_blank), (score, path) in hyps.items():
                if arc < 0:  # before the first word: silence, or the first unit of a first word
                    key, s = (arc, 0, 1), score + blank
                    old = get(new, key)
                    if old is None or s > old[0]:
                        new[key] = (s, path)
                    for nxt in starts:
                        key, s = (nxt, 0, 0), score + row[units[nxt][0]]
                        old = get(new, key)
                        if old is None or s > old[0]:
                            tag = tags[nxt]
                            new[key] = (s, (tag, path) if tag else path)
                    continue
                spelled = units[arc]
                unit = spelled[pos]
                if not after_blank:
                    key, s = (arc, pos, 0), score + row[unit]
                    old = get(new, key)
                    if old is None or s > old[0]:
                        new[key] = (s, path)
                key, s = (arc, pos, 1), score + blank
                old = get(new, key)
                if old is None or s > old[0]:
                    new[key] = (s, path)
                if pos + 1 < len(spelled):
                    nxt_unit = spelled[pos + 1]
                    if after_blank or nxt_unit != unit:
                        key, s = (arc, pos + 1, 0), score + row[nxt_unit]
                        old = get(new, key)
                        if old is None or s > old[0]:
                            new[key] = (s, path)
                    continue
                for nxt in succ[dst[arc]]:
                    nxt_unit = units[nxt][0]
                    if after_blank or nxt_unit != unit:
                        key, s = (nxt, 0, 0), score + row[nxt_unit]
                        old = get(new, key)
                        if old is None or s > old[0]:
                            tag = tags[nxt]
                            new[key] = (s, (tag, path) if tag else path)
            floor = max(v[0] for v in new.values()) - prune
            kept = [(k, v) for k, v in new.items() if v[0] > floor]
            if len(kept) > beam:  # the beam best, in the order reached; ties at the edge: the first reached
                edge = heapq.nlargest(beam, (v[0] for _, v in kept))[-1]
                room = beam - sum(1 for _, v in kept if v[0] > edge)
                chosen = []
                for k, v in kept:
                    if v[0] > edge or (v[0] == edge and room > 0):
                        chosen.append((k, v))
                        if v[0] == edge:
                            room -= 1
                kept = chosen
            if not kept:
                return []
            hyps = dict(kept)
        ends = []
        for (arc, pos, _), (score, path) in hyps.items():
            if arc < 0 or pos != len(units[arc]) - 1:
                continue
            said: list[tuple[str, str]] = []
            while path is not None:
                tag, path = path
                said.append(tag)
            ends.append((arc, score, tuple(said)))
        return ends


@dataclass(frozen=True)
class _Tables:
    """A :class:`GrammarGraph` as the compiled search reads it: positions are the graph's spelled units,
    word arc after word arc."""

    units: np.ndarray
    """Per position: its class."""
    position_arc: np.ndarray
    position_last: np.ndarray
    """Per position: 1 at a word's last unit."""
    arc_first: np.ndarray
    """Per arc: its first position."""
    arc_dst: np.ndarray
    arc_tag: np.ndarray
    """Per arc: the index of its slot tag in ``tag_names``, or -1."""
    successor_start: np.ndarray
    """Per node (and one past the last): where its successor arcs start in ``successors``."""
    successors: np.ndarray
    tag_names: list[tuple[str, str]]
    max_unit: int


@dataclass(frozen=True)
class GrammarSettings:
    """How a bundle's CTC output is decoded through its grammar (the manifest's ``decoder``).

    A clip's result is the best of the decoder's ``nbest`` sentences by path score +
    ``heads_weight`` × the heads' log-probability of that intent and those slots. Its
    confidence is exp(the path's score above the best unconstrained path, per step): 1.0 when
    the grammar cost nothing, towards 0 when the audio sounds like no sentence of the context.
    It is accepted when that confidence reaches the manifest's ``threshold`` and the heads'
    1 − P(not understood) reaches ``gate`` (the grammar always finds some sentence; the heads
    were trained on negatives). With a ``scorer``, the confidence is instead its estimate, from
    that path confidence, the heads and the runner-up sentence, that the sentence is right.
    """

    output: str = "ctc"
    """The graph output with the per-step log-probabilities ``[batch, steps, 1 + units]``."""
    blank_penalty: float = 2.0
    heads_weight: float = 0.5
    gate: float = 0.0
    beam: int = 1000
    prune: float = 25.0
    nbest: int = 20
    scorer: Scorer | None = None

    def __post_init__(self) -> None:
        numbers = {"blank_penalty": self.blank_penalty, "heads_weight": self.heads_weight, "prune": self.prune}
        for key, value in numbers.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value) or value < 0:
                raise BundleError(f"decoder.{key}: expected a finite number >= 0, got {value!r}")
        if not isinstance(self.gate, int | float) or isinstance(self.gate, bool) or not 0.0 <= self.gate <= 1.0:
            raise BundleError(f"decoder.gate: expected a number in [0, 1], got {self.gate!r}")
        for key, count in (("beam", self.beam), ("nbest", self.nbest)):
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise BundleError(f"decoder.{key}: expected a positive integer, got {count!r}")
        if not isinstance(self.output, str) or not self.output:
            raise BundleError(f"decoder.output: expected an output name, got {self.output!r}")

    def to_dict(self) -> dict[str, Any]:
        out = {"output": self.output, "blank_penalty": self.blank_penalty, "heads_weight": self.heads_weight,
               "gate": self.gate, "beam": self.beam, "prune": self.prune, "nbest": self.nbest}
        return out if self.scorer is None else {**out, "scorer": self.scorer.to_dict()}


SCORE_FEATURES = ("log_confidence", "log_not_understood", "log_intent", "intent_agrees", "margin", "log_slots_mean",
                  "log_slots_min")
"""What a :class:`Scorer` weighs, per clip: the log of the path confidence; the heads' log P(not understood),
log P(the sentence's intent), and whether their own best intent is the sentence's (1 or 0); how far the best
sentence's score (path + heads) is ahead of the runner-up's, per step (at most 1; 1 with no runner-up); the mean
and the least of the slot heads' log-probabilities of the sentence's values (or absent), 0 with no slot heads."""


@dataclass(frozen=True)
class Scorer:
    """Logistic regression from :data:`SCORE_FEATURES` to the probability that a clip's best sentence is right
    (a command, its intent and every slot): fitted by the build on validation clips
    (:func:`distill.decoding.fit_scorer`)."""

    weights: tuple[float, ...]
    bias: float

    def __post_init__(self) -> None:
        values = [*self.weights, self.bias]
        if len(self.weights) != len(SCORE_FEATURES) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in values):
            raise BundleError(f"decoder.scorer: expected {len(SCORE_FEATURES)} finite weights and a finite bias, "
                              f"got {list(self.weights)!r} and {self.bias!r}")

    def __call__(self, features: Sequence[float]) -> float:
        z = self.bias + float(np.dot(self.weights, features))
        return float(1.0 / (1.0 + np.exp(-z))) if z >= 0 else float(np.exp(z) / (1.0 + np.exp(z)))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(SCORE_FEATURES), "weights": list(self.weights), "bias": self.bias}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scorer:
        """BundleError unless ``data`` names exactly :data:`SCORE_FEATURES`, in that order, with one weight each."""
        names = data.get("features")
        if names != list(SCORE_FEATURES):
            raise BundleError(f"decoder.scorer.features: this hubvoice computes {list(SCORE_FEATURES)}, "
                              f"got {names!r}")
        weights, bias = data.get("weights"), data.get("bias")
        if not isinstance(weights, list):
            raise BundleError(f"decoder.scorer.weights: expected a list of numbers, got {weights!r}")
        return cls(tuple(weights), bias)  # type: ignore[arg-type]  # checked in __post_init__


@dataclass(frozen=True)
class Candidate:
    """A clip's best sentence, before any threshold: what calibration and the hub both decide from."""

    intent: str
    slots: dict[str, str]
    confidence: float
    """exp(path score above the best unconstrained path, per step), in (0, 1]."""
    gate: float
    """The heads' 1 − P(not understood)."""
    features: tuple[float, ...] = ()
    """:data:`SCORE_FEATURES`: what a :class:`Scorer` weighs (the confidence is the scorer's when there is one)."""


def heads_log_prob(layout: HeadLayout, heads: Sequence[np.ndarray], intent: str, slots: Mapping[str, str]) -> float:
    """log P(intent) + Σ log P(slot value or absent) of one clip's head probabilities (intent first)."""
    i, values = layout.encode(intent, slots)
    return float(np.log(heads[0][i] + 1e-9) + sum(np.log(heads[1 + h][j] + 1e-9) for h, j in enumerate(values)))


def best_candidate(graph: GrammarGraph, layout: HeadLayout, log_probs: np.ndarray, heads: Sequence[np.ndarray],
                   settings: GrammarSettings) -> Candidate | None:
    """The clip's best sentence under ``settings`` (None when no sentence survives the beam).

    ``log_probs``: ``[steps, 1 + units]``; ``heads``: one row of probabilities per head (intent first)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    hyps = graph.decode(lp, beam=settings.beam, prune=settings.prune, blank_penalty=settings.blank_penalty,
                        nbest=settings.nbest)
    return choose(layout, hyps, free_path_score(lp, settings.blank_penalty), len(lp), heads, settings.heads_weight,
                  settings.scorer)


def free_path_score(log_probs: np.ndarray, blank_penalty: float) -> float:
    """Score of the best path through the scores with no grammar (each step's best class)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    return float(np.maximum(lp[:, BLANK] - blank_penalty, lp[:, 1:].max(axis=1)).sum())


def choose(layout: HeadLayout, hyps: Sequence[Hypothesis], free: float, steps: int, heads: Sequence[np.ndarray],
           heads_weight: float, scorer: Scorer | None = None) -> Candidate | None:
    """The best of ``hyps`` by path score + ``heads_weight`` × the heads' log-probability, as a Candidate; its
    confidence is the path confidence, or ``scorer``'s probability that it is right."""
    if not hyps:
        return None
    totals = [h.score + (heads_weight * heads_log_prob(layout, heads, h.intent, h.slots) if heads_weight else 0.0)
              for h in hyps]
    k = int(np.argmax(totals))
    best = hyps[k]
    path_confidence = float(np.exp(min(0.0, (best.score - free) / max(steps, 1))))
    runner_up = max((t for i, t in enumerate(totals) if i != k), default=None)
    margin = 1.0 if runner_up is None else min(1.0, (totals[k] - runner_up) / max(steps, 1))
    intent, values = layout.encode(best.intent, best.slots)
    slot_lps = [float(np.log(heads[1 + h][j] + 1e-9)) for h, j in enumerate(values)]
    features = (float(np.log(max(path_confidence, 1e-9))), float(np.log(heads[0][0] + 1e-9)),
                float(np.log(heads[0][intent] + 1e-9)), float(int(np.argmax(heads[0])) == intent), margin,
                float(np.mean(slot_lps)) if slot_lps else 0.0, min(slot_lps, default=0.0))
    confidence = path_confidence if scorer is None else scorer(features)
    return Candidate(best.intent, dict(best.slots), confidence, float(1.0 - heads[0][0]), features)


def grammar_decision(candidate: Candidate | None, threshold: float, gate: float) -> Decision:
    """Accept ``candidate`` when its confidence reaches ``threshold`` and its heads' gate reaches ``gate``."""
    if candidate is None:
        return Decision(False, None, {}, 0.0)
    if candidate.confidence < threshold or candidate.gate < gate:
        return Decision(False, None, {}, candidate.confidence)
    return Decision(True, candidate.intent, dict(candidate.slots), candidate.confidence)

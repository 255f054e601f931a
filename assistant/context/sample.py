"""Sentences from a context: exhaustive enumeration and balanced, covering sampling.

``sample_sentences(ctx, n, seed)`` draws ``n`` labelled sentences:

1. **Coverage.** For each intent a covering plan is built deterministically: one
   sentence per expression, then more until every spoken value of every slot name the
   intent uses has appeared (each synonym is a value of its own, every number of a
   range too). Each plan sentence takes, at every choice, the option that reaches a
   slot with values still unseen, and at every slot its first unseen value; after the
   one-per-expression pass, each sentence goes to the slot with the most unseen values,
   through the expression reaching the most slots with unseen values. Whatever does not
   affect coverage is random. ``min_samples_for_coverage(ctx)`` is the total
   length of the plans: with ``n`` at least that, every intent, expression and slot
   value appears. It does not depend on the seed.
2. **Balance.** ``n`` is shared equally between intents (never below an intent's plan
   when ``n`` allows the full coverage); within an intent, sentences beyond the plan
   go to the expressions that have had the fewest, skipping expressions whose distinct
   sentences are used up while others still have some. With ``n`` below the coverage
   minimum, each intent takes a part of its plan: as many different expressions as it
   can, then the plan's slot-value sentences in order.
3. **Variety.** Extra sentences pick each choice's options uniformly (so a short
   alternative is heard as often as a long one); a sentence already drawn is redrawn,
   uniformly over the expression's sentences, a few times; when an expression must
   give most of its sentences they are enumerated and dealt out without repetition.
   A text drawn with two different labels (an ambiguous grammar) is logged.

Everything is deterministic given the seed; the result is shuffled.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from assistant.context.model import Choice, Context, MacroRef, Node, Seq, Slot, Words
from assistant.context.normalize import normalize_text
from assistant.errors import ContextError

_LOGGER = logging.getLogger(__name__)

_RETRIES = 12
"""How many times a sentence that was already drawn is redrawn."""
_ENUMERATE_LIMIT = 200_000
"""Expressions with at most this many sentences may be enumerated to avoid repeats."""

_AMBIGUOUS_LOGGED = 10
"""How many ambiguous sentences are logged one by one (the rest are counted)."""

_Key = tuple[str, str]  # (slot name, slot type)


@dataclass(frozen=True)
class Sample:
    """One labelled sentence."""

    text: str
    """The sentence as spoken (normalized: lowercase words, numbers as words)."""
    intent: str
    """The intent it expresses."""
    slots: dict[str, str]
    """Slot name -> output value (synonyms give their output value; fixed slots included)."""
    expression: int
    """Index (0-based) of the expression in ``context.expressions[intent]``."""
    spoken: dict[str, str] = field(default_factory=dict)
    """Slot name -> the normalized words that said the value (a substring of ``text``)."""

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "intent": self.intent, "slots": dict(self.slots),
                "expression": self.expression, "spoken": dict(self.spoken)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        """Build from ``to_dict`` output; raise ContextError saying which key is missing or wrong."""
        if not isinstance(data, Mapping):
            raise ContextError(f"a sample must be a mapping, got {type(data).__name__}")
        for key, kind in (("text", str), ("intent", str), ("expression", int)):
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise ContextError(f"sample key {key!r} must be a {kind.__name__}, got {data.get(key)!r}")
        for key in ("slots", "spoken"):
            value = data.get(key, {})
            if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
                raise ContextError(f"sample key {key!r} must map names to strings, got {value!r}")
        return cls(data["text"], data["intent"], {str(k): v for k, v in data.get("slots", {}).items()},
                   data["expression"], {str(k): v for k, v in data.get("spoken", {}).items()})


@dataclass
class _Draft:
    intent: str
    expression: int
    words: list[str] = field(default_factory=list)
    slots: dict[str, str] = field(default_factory=dict)
    spoken: dict[str, str] = field(default_factory=dict)
    picks: list[tuple[_Key, int]] = field(default_factory=list)

    def sample(self, fixed: tuple[tuple[str, str], ...]) -> Sample:
        return Sample(normalize_text(" ".join(self.words)), self.intent, {**self.slots, **dict(fixed)},
                      self.expression, dict(self.spoken))


class _Sampler:
    def __init__(self, ctx: Context, seed: int) -> None:
        self.ctx = ctx
        self.rng = random.Random(seed)
        self._reach: dict[int, tuple[Node, frozenset[_Key]]] = {}
        self.seen: dict[str, tuple[str, dict[str, str]]] = {}
        self.ambiguous: set[str] = set()

    def reach(self, node: Node) -> frozenset[_Key]:
        cached = self._reach.get(id(node))
        if cached is None:
            cached = (node, frozenset((s.name, s.type) for s in self.ctx.iter_slots(node)))
            self._reach[id(node)] = cached
        return cached[1]

    def _pick(self, node: Choice, weighted: bool, need: dict[_Key, list[int]] | None,
              primary: _Key | None) -> Node | None:
        if need:
            if primary is not None:
                for option in node.options:
                    if primary in self.reach(option):
                        return option
            wanted = {key for key, pending in need.items() if pending}
            best, best_score = None, 0
            for option in node.options:
                score = len(self.reach(option) & wanted)
                if score > best_score:
                    best, best_score = option, score
            if best is not None:
                return best
        if weighted:
            ticket = self.rng.randrange(self.ctx.count_node(node))
            if node.optional:
                if ticket == 0:
                    return None
                ticket -= 1
            for option in node.options:
                size = self.ctx.count_node(option)
                if ticket < size:
                    return option
                ticket -= size
        index = self.rng.randrange(len(node.options) + int(node.optional))
        return node.options[index] if index < len(node.options) else None

    def walk(self, node: Node, draft: _Draft, weighted: bool = False, need: dict[_Key, list[int]] | None = None,
             primary: _Key | None = None) -> None:
        if isinstance(node, Words):
            draft.words.append(node.text)
        elif isinstance(node, Seq):
            for item in node.items:
                self.walk(item, draft, weighted, need, primary)
        elif isinstance(node, MacroRef):
            self.walk(self.ctx.resolve(node), draft, weighted, need, primary)
        elif isinstance(node, Slot):
            values = self.ctx.slots[node.type].values
            pending = need.get((node.name, node.type)) if need else None
            index = pending[0] if pending else self.rng.randrange(len(values))
            draft.words.append(values[index].spoken)
            draft.slots[node.name] = values[index].value
            draft.spoken[node.name] = normalize_text(values[index].spoken)
            draft.picks.append(((node.name, node.type), index))
        else:
            option = self._pick(node, weighted, need, primary)
            if option is not None:
                self.walk(option, draft, weighted, need, primary)

    def _accept(self, draft: _Draft) -> Sample:
        expression = self.ctx.expressions[draft.intent][draft.expression]
        sample = draft.sample(expression.fixed_slots)
        label = (sample.intent, sample.slots)
        previous = self.seen.setdefault(sample.text, label)
        if previous != label and sample.text not in self.ambiguous:
            self.ambiguous.add(sample.text)
            if len(self.ambiguous) <= _AMBIGUOUS_LOGGED:
                _LOGGER.warning("ambiguous context: %r is both %s %s and %s %s", sample.text, previous[0],
                                previous[1], sample.intent, sample.slots)
        return sample

    def draw(self, intent: str, index: int, need: dict[_Key, list[int]] | None = None,
             primary: _Key | None = None) -> _Draft:
        """A sentence of one expression, redrawn a few times if its text was already drawn."""
        node = self.ctx.expressions[intent][index].node
        draft = _Draft(intent, index)
        for attempt in range(_RETRIES + 1):
            draft = _Draft(intent, index)
            self.walk(node, draft, weighted=attempt > 0, need=need, primary=primary)
            if normalize_text(" ".join(draft.words)) not in self.seen:
                break
        return draft

    def plan(self, intent: str) -> list[_Draft]:
        """The covering plan of an intent (see module doc); its length does not depend on the seed."""
        expressions = self.ctx.expressions[intent]
        need: dict[_Key, list[int]] = {}
        for expression in expressions:
            for slot in self.ctx.iter_slots(expression.node):
                key = (slot.name, slot.type)
                if key not in need:
                    need[key] = list(range(len(self.ctx.slots[slot.type].values)))
        uses = [0] * len(expressions)
        unvisited = deque(range(len(expressions)))
        drafts: list[_Draft] = []
        while unvisited or any(need.values()):
            primary: _Key | None = None
            if unvisited:
                index = unvisited.popleft()
            else:
                pending = {key for key in need if need[key]}
                primary = max((key for key in need if need[key]), key=lambda key: len(need[key]))
                index = min((i for i, e in enumerate(expressions) if primary in self.reach(e.node)),
                            key=lambda i: (-len(self.reach(expressions[i].node) & pending), uses[i], i))
            draft = self.draw(intent, index, need, primary)
            for key, value in draft.picks:
                if value in need[key]:
                    need[key].remove(value)
            uses[index] += 1
            drafts.append(draft)
            self._accept(draft)
        return drafts

    def extras(self, intent: str, used: list[int], count: int) -> list[_Draft]:
        """``count`` more sentences of ``intent``, balanced over its expressions (see module doc)."""
        expressions = self.ctx.expressions[intent]
        capacity = [self.ctx.count_node(e.node) for e in expressions]
        used = list(used)
        allocation = [0] * len(expressions)
        for _ in range(count):
            open_ = [i for i in range(len(expressions)) if used[i] < capacity[i]] or list(range(len(expressions)))
            fewest = min(used[i] for i in open_)
            index = self.rng.choice([i for i in open_ if used[i] == fewest])
            used[index] += 1
            allocation[index] += 1
        drafts: list[_Draft] = []
        for index, wanted in enumerate(allocation):
            if not wanted:
                continue
            total = capacity[index]
            if total <= _ENUMERATE_LIMIT and total <= 4 * wanted + 16:
                drafts += self._deal(intent, index, wanted)
            else:
                for _ in range(wanted):
                    draft = self.draw(intent, index)
                    self._accept(draft)
                    drafts.append(draft)
        return drafts

    def _deal(self, intent: str, index: int, wanted: int) -> list[_Draft]:
        fresh: list[_Draft] = []
        repeats: list[_Draft] = []
        for draft in enumerate_drafts(self.ctx, intent, index):
            text = normalize_text(" ".join(draft.words))
            (repeats if text in self.seen else fresh).append(draft)
        self.rng.shuffle(fresh)
        self.rng.shuffle(repeats)
        pool = fresh + repeats
        drafts = [pool[k % len(pool)] for k in range(wanted)]
        for draft in drafts:
            self._accept(draft)
        return drafts


def _enumerate(ctx: Context, node: Node) -> Iterator[tuple[tuple[str, ...], tuple[tuple[str, str, str], ...]]]:
    """Every derivation of ``node``: (words, ((slot name, value, spoken), ...))."""
    if isinstance(node, Words):
        yield (node.text,), ()
    elif isinstance(node, Slot):
        for value in ctx.slots[node.type].values:
            yield (value.spoken,), ((node.name, value.value, value.spoken),)
    elif isinstance(node, MacroRef):
        yield from _enumerate(ctx, ctx.resolve(node))
    elif isinstance(node, Choice):
        if node.optional:
            yield (), ()
        for option in node.options:
            yield from _enumerate(ctx, option)
    else:
        for parts in itertools.product(*(list(_enumerate(ctx, item)) for item in node.items)):
            yield tuple(w for p in parts for w in p[0]), tuple(s for p in parts for s in p[1])


def enumerate_drafts(ctx: Context, intent: str, index: int) -> Iterator[_Draft]:
    for words, slots in _enumerate(ctx, ctx.expressions[intent][index].node):
        yield _Draft(intent, index, list(words), {n: v for n, v, _ in slots},
                     {n: normalize_text(s) for n, _, s in slots})


def iter_sentences(ctx: Context, intent: str | None = None) -> Iterator[Sample]:
    """Every sentence of the context (or of one intent), in grammar order. Mind ``ctx.count()`` first."""
    if intent is not None:
        ctx.intent_slots(intent)  # raises ContextError naming the defined intents
    for name in ctx.intents if intent is None else (intent,):
        for index, expression in enumerate(ctx.expressions[name]):
            for draft in enumerate_drafts(ctx, name, index):
                yield draft.sample(expression.fixed_slots)


def min_samples_for_coverage(ctx: Context) -> int:
    """The smallest ``n`` for which ``sample_sentences`` covers every intent, expression and slot value."""
    sampler = _Sampler(ctx, 0)
    return sum(len(sampler.plan(intent)) for intent in ctx.intents)


def _quotas(n: int, minimums: list[int], rng: random.Random) -> list[int]:
    if n < sum(minimums):
        quotas = [n // len(minimums)] * len(minimums)
        for i in rng.sample(range(len(minimums)), n % len(minimums)):
            quotas[i] += 1
        return quotas
    low, high = 0, n
    while low < high:  # the highest level L with sum(max(m, L)) <= n
        mid = (low + high + 1) // 2
        if sum(max(m, mid) for m in minimums) <= n:
            low = mid
        else:
            high = mid - 1
    quotas = [max(m, low) for m in minimums]
    at_level = [i for i, m in enumerate(minimums) if m <= low]
    for i in rng.sample(at_level, n - sum(quotas)):
        quotas[i] += 1
    return quotas


def sample_sentences(ctx: Context, n: int, seed: int = 0) -> list[Sample]:
    """``n`` labelled sentences, covering and balanced as described in the module doc."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    sampler = _Sampler(ctx, seed)
    plans = {intent: sampler.plan(intent) for intent in ctx.intents}
    quotas = _quotas(n, [len(plans[i]) for i in ctx.intents], sampler.rng)
    samples: list[Sample] = []
    for intent, quota in zip(ctx.intents, quotas, strict=True):
        plan = plans[intent]
        fixed = [e.fixed_slots for e in ctx.expressions[intent]]
        if quota < len(plan):
            visits = len(ctx.expressions[intent])
            chosen = (sorted(sampler.rng.sample(range(visits), quota)) if quota <= visits else range(quota))
            samples += [plan[i].sample(fixed[plan[i].expression]) for i in chosen]
            continue
        used = [0] * len(ctx.expressions[intent])
        for draft in plan:
            used[draft.expression] += 1
        drafts = plan + sampler.extras(intent, used, quota - len(plan))
        samples += [d.sample(fixed[d.expression]) for d in drafts]
    if len(sampler.ambiguous) > _AMBIGUOUS_LOGGED:
        _LOGGER.warning("ambiguous context: %d sentences in all have two different labels",
                        len(sampler.ambiguous))
    sampler.rng.shuffle(samples)
    return samples

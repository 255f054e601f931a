"""The output heads' layout and the decision made from them (numpy only).

Teacher and student share one layout: an intent head over the context's intents plus
"not understood", and one head per slot name over its ordered values plus "absent".
The layout is written into a bundle's manifest; training encodes labels with it and the
hub decodes probabilities with it, so both sides agree on every index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from assistant.errors import BundleError, ContextError

NOT_UNDERSTOOD = "__not_understood__"
"""Intent label of everything outside the context (index 0 of the intent head)."""
ABSENT = "__absent__"
"""Slot label of "this slot is not in the utterance" (index 0 of every slot head)."""


class _ContextLike(Protocol):
    @property
    def intents(self) -> Sequence[str]: ...

    def slot_heads(self) -> Mapping[str, Sequence[str]]: ...

    def intent_slots(self, intent: str) -> frozenset[str]: ...


@dataclass(frozen=True)
class HeadLayout:
    intents: tuple[str, ...]
    """Intent head labels; index 0 is NOT_UNDERSTOOD."""
    slots: tuple[tuple[str, tuple[str, ...]], ...]
    """(slot name, labels) per slot head, in head order; label 0 of each is ABSENT."""
    intent_slots: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Slot names each intent can carry; a decoded slot outside this set is dropped."""

    def __post_init__(self) -> None:
        if not self.intents or self.intents[0] != NOT_UNDERSTOOD:
            raise BundleError(f"intent labels must start with {NOT_UNDERSTOOD!r}, got {list(self.intents[:1])}")
        if len(set(self.intents)) != len(self.intents):
            raise BundleError("intent labels must be unique")
        for name, values in self.slots:
            if not values or values[0] != ABSENT:
                raise BundleError(f"slot head '{name}' must start with {ABSENT!r}")

    @classmethod
    def from_context(cls, ctx: _ContextLike) -> HeadLayout:
        for reserved in (NOT_UNDERSTOOD, ABSENT):
            if reserved in ctx.intents:
                raise ContextError(f"intent name {reserved!r} is reserved by hubvoice", intent=reserved)
        heads = tuple((name, (ABSENT, *values)) for name, values in ctx.slot_heads().items())
        return cls(
            intents=(NOT_UNDERSTOOD, *ctx.intents),
            slots=heads,
            intent_slots={name: frozenset(ctx.intent_slots(name)) for name in ctx.intents},
        )

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.slots)

    def encode(self, intent: str | None, slots: Mapping[str, str]) -> tuple[int, tuple[int, ...]]:
        """Training targets: the intent index and one index per slot head (0 = absent)."""
        if intent is None:
            if slots:
                raise ValueError(f"a not-understood utterance cannot carry slots, got {dict(slots)}")
            return 0, tuple(0 for _ in self.slots)
        try:
            intent_index = self.intents.index(intent)
        except ValueError:
            raise ValueError(f"unknown intent {intent!r} (known: {', '.join(self.intents[1:])})") from None
        unknown = set(slots) - set(self.slot_names)
        if unknown:
            raise ValueError(f"unknown slot(s) {sorted(unknown)} (known: {', '.join(self.slot_names)})")
        targets = []
        for name, values in self.slots:
            value = slots.get(name)
            if value is None:
                targets.append(0)
            elif value in values[1:]:
                targets.append(values.index(value))
            else:
                raise ValueError(f"slot '{name}': unknown value {value!r}")
        return intent_index, tuple(targets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "intents": list(self.intents),
            "slots": [{"name": name, "values": list(values)} for name, values in self.slots],
            "intent_slots": {k: sorted(v) for k, v in self.intent_slots.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadLayout:
        try:
            return cls(
                intents=tuple(data["intents"]),
                slots=tuple((h["name"], tuple(h["values"])) for h in data["slots"]),
                intent_slots={k: frozenset(v) for k, v in data.get("intent_slots", {}).items()},
            )
        except (KeyError, TypeError) as exc:
            raise BundleError(f"malformed head layout: missing or wrong-typed {exc}") from None


@dataclass(frozen=True)
class Decision:
    understood: bool
    intent: str | None
    slots: dict[str, str]
    confidence: float


def decode(layout: HeadLayout, intent_probs: np.ndarray, slot_probs: Sequence[np.ndarray], *,
           threshold: float = 0.0) -> Decision:
    """The decision for one utterance from its head probabilities.

    The intent is the arg-max of the intent head. Each slot the chosen intent can carry
    takes its head's arg-max unless that is ABSENT; slots the intent cannot carry are
    dropped, whatever their heads say. Confidence is the lowest of the intent's and the
    kept slots' probabilities. The command is rejected ("not understood") when the
    arg-max is NOT_UNDERSTOOD or the confidence is below ``threshold`` (a command is
    only as sure as its least sure part).
    """
    if len(intent_probs) != len(layout.intents):
        raise BundleError(f"intent head has {len(intent_probs)} outputs, layout has {len(layout.intents)}")
    if len(slot_probs) != len(layout.slots):
        raise BundleError(f"model has {len(slot_probs)} slot heads, layout has {len(layout.slots)}")
    best = int(np.argmax(intent_probs))
    confidence = float(intent_probs[best])
    if best == 0:
        return Decision(False, None, {}, confidence)
    intent = layout.intents[best]
    allowed = layout.intent_slots.get(intent, frozenset(layout.slot_names))
    slots: dict[str, str] = {}
    for (name, values), probs in zip(layout.slots, slot_probs, strict=True):
        if name not in allowed:
            continue
        if len(probs) != len(values):
            raise BundleError(f"slot head '{name}' has {len(probs)} outputs, layout has {len(values)}")
        k = int(np.argmax(probs))
        if k != 0:
            slots[name] = values[k]
            confidence = min(confidence, float(probs[k]))
    if confidence < threshold:
        return Decision(False, None, {}, confidence)
    return Decision(True, intent, slots, confidence)

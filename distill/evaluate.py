"""Scoring decisions against references: command acceptance and friends (numpy + matplotlib).

**Command acceptance** (Picovoice's metric, DESIGN.md "Measuring") is the fraction of
utterances handled correctly: a command counts only if it is understood with the right
intent and exactly the right slots (no extra, none missing); a negative (intent None:
out_of_domain, near_miss, silence, noise) counts only if it is rejected. Alongside it:
intent accuracy, per-slot accuracy, false-accept and false-reject rates, a confusion
matrix, breakdowns by any manifest key, and the threshold calibration that meets a
false-accept target. Plots import matplotlib lazily (Agg backend, no display).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assistant.decode import NOT_UNDERSTOOD, Decision, HeadLayout, decode
from assistant.errors import BundleError, CorpusError
from distill.corpus import KINDS

_LOGGER = logging.getLogger(__name__)

REJECTED = "not understood"
"""Confusion-matrix label of a rejection (reference intent None, or a decision not understood)."""
GROUP_KEYS = ("voice", "engine", "kind", "split")
"""Manifest keys :meth:`Reference.from_utterance` groups by unless told otherwise."""
CLEAN = math.inf
"""SNR key of the clean (no added noise) condition in :func:`plot_accuracy_vs_snr`; ``"clean"`` works too."""
MAX_ERRORS = 25
"""How many wrong utterances :func:`score` keeps as examples."""
_PERCENT = re.compile(r"acceptance|accuracy|rate|(^|_)(far|frr)($|_)|%")


@dataclass(frozen=True)
class Reference:
    """What one utterance should have produced, and the groups it is reported under."""

    intent: str | None
    """The command's intent; None for every negative kind (the model should reject it)."""
    slots: dict[str, str] = field(default_factory=dict)
    """Slot name -> value; empty for negatives."""
    kind: str = "command"
    """One of distill.corpus.KINDS."""
    groups: dict[str, str] = field(default_factory=dict)
    """Group key -> value (voice, engine, condition ...) for the per-group breakdowns."""
    id: str = ""
    """Utterance id, shown in the error examples."""
    text: str = ""
    """What was said (the manifest's ``text``; empty for noise and silence): CTC targets in training."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"reference {self.id!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if (self.kind == "command") != (self.intent is not None):
            raise ValueError(f"reference {self.id!r}: kind {self.kind!r} with intent {self.intent!r} "
                             "(commands have an intent, negatives have intent None)")
        if self.intent is None and self.slots:
            raise ValueError(f"reference {self.id!r}: a negative cannot carry slots, got {self.slots}")

    @property
    def is_command(self) -> bool:
        return self.intent is not None

    @classmethod
    def from_utterance(cls, utterance: Any, *, group_keys: Sequence[str] = GROUP_KEYS,
                       groups: Mapping[str, Any] | None = None) -> Reference:
        """The reference of a manifest object (a mapping, or anything with ``to_dict()`` like Utterance).

        ``group_keys`` name manifest keys to group by; a dotted key (``augment.noise.snr_db``)
        walks nested objects, and a key the utterance lacks is left out of its groups.
        ``groups`` adds labels of your own (``{"condition": "9 dB"}``), overriding keys.
        """
        data = utterance.to_dict() if hasattr(utterance, "to_dict") else utterance
        if not isinstance(data, Mapping):
            raise CorpusError(f"expected a manifest object, got {type(utterance).__name__}")
        if "intent" not in data:
            raise CorpusError(f"utterance {data.get('id', '?')!r} has no 'intent' key")
        intent, slots = data["intent"], data.get("slots") or {}
        if not isinstance(slots, Mapping):
            raise CorpusError(f"utterance {data.get('id', '?')!r}: 'slots' must be an object, got {slots!r}")
        found: dict[str, str] = {}
        for key in group_keys:
            value: Any = data
            for part in key.split("."):
                value = value.get(part, _MISSING) if isinstance(value, Mapping) else _MISSING
            if value is not _MISSING:
                found[key] = _label(value)
        found.update({k: _label(v) for k, v in (groups or {}).items()})
        kind = data.get("kind", "command" if intent is not None else "out_of_domain")
        try:
            return cls(intent=intent, slots={str(k): str(v) for k, v in slots.items()}, kind=str(kind),
                       groups=found, id=str(data.get("id", "")), text=str(data.get("text") or ""))
        except ValueError as exc:
            raise CorpusError(str(exc)) from None


_MISSING = object()


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class Metrics:
    """Scores of a set of decisions against their references (see :func:`score`)."""

    n: int
    """Utterances scored."""
    n_commands: int
    """Utterances with a reference intent."""
    n_negatives: int
    """Utterances the model should reject."""
    n_correct: int
    """Utterances handled correctly (the numerator of command acceptance)."""
    command_acceptance: float
    """Fraction handled correctly: commands exactly right, negatives rejected."""
    intent_accuracy: float | None
    """Fraction of commands accepted with the right intent (None without commands)."""
    slot_accuracy: dict[str, float]
    """Slot name -> fraction of commands whose intent can carry it with the value (or absence) right."""
    false_accept_rate: float | None
    """Fraction of negatives accepted (None without negatives)."""
    false_reject_rate: float | None
    """Fraction of commands rejected (None without commands)."""
    groups: dict[str, dict[str, dict[str, Any]]]
    """Group key -> value -> {"n", "command_acceptance"}."""
    confusion_labels: tuple[str, ...]
    """Row and column labels of ``confusion``; the first is REJECTED."""
    confusion: tuple[tuple[int, ...], ...]
    """Counts, rows = reference intent, columns = predicted intent."""
    errors: tuple[dict[str, Any], ...] = ()
    """Up to MAX_ERRORS wrong utterances: id, groups, reference and predicted."""

    @property
    def commands_right(self) -> float | None:
        """Fraction of the commands alone that are accepted exactly right (None without commands).

        Command acceptance counts a rejected negative as right, so it rises with the share of
        negatives in the set (11% of a default build's test split: about 11 points at a 2%
        false-accept threshold); this does not.
        """
        if not self.n_commands:
            return None
        accepted = round((self.false_accept_rate or 0.0) * self.n_negatives)
        return (self.n_correct - (self.n_negatives - accepted)) / self.n_commands

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable; undefined rates are None. ``commands_right`` is derived (not read back)."""
        return {
            "n": self.n, "n_commands": self.n_commands, "n_negatives": self.n_negatives,
            "n_correct": self.n_correct, "command_acceptance": self.command_acceptance,
            "commands_right": self.commands_right,
            "intent_accuracy": self.intent_accuracy, "slot_accuracy": dict(self.slot_accuracy),
            "false_accept_rate": self.false_accept_rate, "false_reject_rate": self.false_reject_rate,
            "groups": {k: {v: dict(s) for v, s in g.items()} for k, g in self.groups.items()},
            "confusion_labels": list(self.confusion_labels),
            "confusion": [list(row) for row in self.confusion],
            "errors": [dict(e) for e in self.errors],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metrics:
        try:
            return cls(
                n=int(data["n"]), n_commands=int(data["n_commands"]), n_negatives=int(data["n_negatives"]),
                n_correct=int(data["n_correct"]), command_acceptance=float(data["command_acceptance"]),
                intent_accuracy=data["intent_accuracy"], slot_accuracy=dict(data["slot_accuracy"]),
                false_accept_rate=data["false_accept_rate"], false_reject_rate=data["false_reject_rate"],
                groups={k: {v: dict(s) for v, s in g.items()} for k, g in data["groups"].items()},
                confusion_labels=tuple(data["confusion_labels"]),
                confusion=tuple(tuple(int(c) for c in row) for row in data["confusion"]),
                errors=tuple(dict(e) for e in data.get("errors", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed metrics: missing or wrong-typed {exc}") from None


def is_correct(reference: Reference, decision: Decision) -> bool:
    """Whether one decision handles its utterance correctly (the command-acceptance rule)."""
    if reference.intent is None:
        return not decision.understood
    return decision.understood and decision.intent == reference.intent and decision.slots == reference.slots


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def score(references: Sequence[Reference], decisions: Sequence[Decision], *,
          layout: HeadLayout | None = None, max_errors: int = MAX_ERRORS) -> Metrics:
    """Score ``decisions[i]`` against ``references[i]``.

    Slot accuracy counts, for each slot name, the commands whose intent can carry it:
    per ``layout.intent_slots`` when a layout is given (which also fixes the slot names
    and the confusion label order), else the slots seen with that intent in the references.
    """
    if len(references) != len(decisions):
        raise ValueError(f"{len(references)} references but {len(decisions)} decisions")
    if not references:
        raise ValueError("nothing to score: no references")
    correct = [is_correct(r, d) for r, d in zip(references, decisions, strict=True)]
    commands = [(r, d) for r, d in zip(references, decisions, strict=True) if r.is_command]
    n_neg = len(references) - len(commands)
    accepted_neg = sum(d.understood for r, d in zip(references, decisions, strict=True) if not r.is_command)

    if layout is not None:
        slot_names: Sequence[str] = layout.slot_names
        carries = {i: set(layout.intent_slots.get(i, slot_names)) for i in layout.intents[1:]}
    else:
        slot_names = sorted({s for r in references for s in r.slots})
        carries = defaultdict(set)
        for r in references:
            carries[str(r.intent)].update(r.slots)
    slot_accuracy: dict[str, float] = {}
    for name in slot_names:
        eligible = [(r, d) for r, d in commands if name in carries.get(str(r.intent), slot_names)]
        if eligible:
            slot_accuracy[name] = sum(d.slots.get(name) == r.slots.get(name) for r, d in eligible) / len(eligible)

    tally: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r, ok in zip(references, correct, strict=True):
        for key, value in r.groups.items():
            tally[key][value][0] += 1
            tally[key][value][1] += ok
    groups = {key: {value: {"n": n, "command_acceptance": hits / n}
                    for value, (n, hits) in sorted(by.items(), key=lambda kv: _sort_key(kv[0]))}
              for key, by in sorted(tally.items())}

    if layout is not None:
        intents = [i for i in layout.intents if i != NOT_UNDERSTOOD]
    else:
        intents = sorted({r.intent for r in references if r.intent} | {d.intent for d in decisions if d.intent})
    labels = (REJECTED, *intents)
    index = {label: k for k, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for r, d in zip(references, decisions, strict=True):
        predicted = d.intent if d.understood and d.intent else REJECTED
        if predicted not in index:
            raise ValueError(f"decision intent {predicted!r} is not in the layout ({', '.join(intents)})")
        if (r.intent or REJECTED) not in index:
            raise ValueError(f"reference intent {r.intent!r} is not in the layout ({', '.join(intents)})")
        matrix[index[r.intent or REJECTED], index[predicted]] += 1

    errors = tuple(
        {"id": r.id, "groups": dict(r.groups),
         "reference": {"intent": r.intent, "slots": dict(r.slots), "kind": r.kind},
         "predicted": {"understood": d.understood, "intent": d.intent, "slots": dict(d.slots),
                       "confidence": round(float(d.confidence), 4)}}
        for r, d, ok in zip(references, decisions, correct, strict=True) if not ok
    )[:max_errors]
    return Metrics(
        n=len(references), n_commands=len(commands), n_negatives=n_neg, n_correct=sum(correct),
        command_acceptance=sum(correct) / len(references),
        intent_accuracy=_rate(sum(d.understood and d.intent == r.intent for r, d in commands), len(commands)),
        slot_accuracy=slot_accuracy,
        false_accept_rate=_rate(accepted_neg, n_neg),
        false_reject_rate=_rate(sum(not d.understood for _, d in commands), len(commands)),
        groups=groups, confusion_labels=labels, confusion=tuple(tuple(int(c) for c in row) for row in matrix),
        errors=errors,
    )


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def decide_all(layout: HeadLayout, intent_probs: np.ndarray, slot_probs: Sequence[np.ndarray], *,
               threshold: float = 0.0) -> list[Decision]:
    """:func:`assistant.decode.decode` over a batch: ``intent_probs`` [N, intents], one [N, values] per slot head."""
    probs = np.asarray(intent_probs)
    if probs.ndim != 2 or probs.shape[1] != len(layout.intents):
        raise BundleError(f"intent probabilities must be [N, {len(layout.intents)}], got {list(probs.shape)}")
    if len(slot_probs) != len(layout.slots):
        raise BundleError(f"model has {len(slot_probs)} slot heads, layout has {len(layout.slots)}")
    n = probs.shape[0]
    heads = [np.asarray(h) for h in slot_probs]
    for (name, values), head in zip(layout.slots, heads, strict=True):
        if head.shape != (n, len(values)):
            raise BundleError(f"slot head '{name}' must be [{n}, {len(values)}], got {list(head.shape)}")
    return [decode(layout, probs[i], [h[i] for h in heads], threshold=threshold) for i in range(n)]


@dataclass(frozen=True)
class Calibration:
    """The confidence threshold chosen on validation data, and what it gives there."""

    threshold: float
    """Pass as ``decode(..., threshold=)``; above 1.0 only when no threshold in [0, 1] meets the target."""
    target_far: float
    """The false-accept rate asked for."""
    false_accept_rate: float | None
    """False-accept rate at ``threshold`` (None without negatives)."""
    false_reject_rate: float | None
    """False-reject rate at ``threshold`` (None without commands)."""
    command_acceptance: float
    """Command acceptance at ``threshold``."""
    target_wrong: float | None = None
    """The wrong-action rate asked for (None: not bounded)."""
    wrong_action_rate: float | None = None
    """Share of the commands accepted with a wrong intent or slot at ``threshold``, which a hub would
    carry out wrongly (None without commands)."""
    far_kinds: tuple[str, ...] | None = None
    """The negative kinds ``target_far`` counted (None: all). ``false_accept_rate`` is over all negatives."""

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "target_far": self.target_far,
                "false_accept_rate": self.false_accept_rate, "false_reject_rate": self.false_reject_rate,
                "command_acceptance": self.command_acceptance, "target_wrong": self.target_wrong,
                "wrong_action_rate": self.wrong_action_rate,
                "far_kinds": list(self.far_kinds) if self.far_kinds is not None else None}


NEGATIVE_KINDS = tuple(k for k in KINDS if k != "command")
"""The kinds of negative a reference can be; :func:`calibrate_threshold`'s ``far_kinds`` picks among them."""


def check_far_kinds(far_kinds: Iterable[str] | None) -> tuple[str, ...] | None:
    """``far_kinds`` as a tuple, or a ValueError naming a kind that is not a negative kind (None stays None)."""
    if far_kinds is None:
        return None
    kinds = tuple(far_kinds)
    unknown = [k for k in kinds if k not in NEGATIVE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"far_kinds: expected one or more of {', '.join(NEGATIVE_KINDS)}, got "
                         f"{', '.join(map(repr, unknown or kinds)) or 'none'}")
    return kinds


def wrong_action_rate(references: Sequence[Reference], decisions: Sequence[Decision]) -> float | None:
    """Share of the commands accepted with a wrong intent or slot (None without commands)."""
    pairs = [(r, d) for r, d in zip(references, decisions, strict=True) if r.is_command]
    return _rate(sum(d.understood and not is_correct(r, d) for r, d in pairs), len(pairs))


def calibrate_threshold(layout: HeadLayout, intent_probs: np.ndarray, slot_probs: Sequence[np.ndarray],
                        references: Sequence[Reference], target_far: float = 0.01,
                        target_wrong: float | None = None,
                        far_kinds: Iterable[str] | None = None) -> Calibration:
    """The smallest threshold whose false-accept rate on the negatives is at most ``target_far`` and, with
    ``target_wrong``, whose wrong-action rate (:func:`wrong_action_rate`) on the commands is at most that.

    ``far_kinds`` (e.g. ``("out_of_domain", "noise", "silence")``): only negatives of these kinds count
    towards ``target_far``; the others (near misses, say) are neither bounded nor offenders. None: all.

    Candidates are 0 and, for each offender at threshold 0 (a negative accepted; with ``target_wrong``
    also a command accepted wrongly), the next float above its intent probability and above its
    decision confidence; both rates only fall as the threshold rises (a threshold rejects a whole
    decision and changes nothing else in it), so a bisection over them, checked with
    :func:`decide_all` itself, finds the smallest one. Without negatives (and no ``target_wrong``)
    the threshold is 0.0 (warned). When only a threshold above 1.0 meets the targets (offenders at
    probability 1.0), that threshold is returned, rejecting every negative and every command, with a
    warning.
    """
    if not 0.0 <= target_far <= 1.0:
        raise ValueError(f"target_far must be in [0, 1], got {target_far}")
    if target_wrong is not None and not 0.0 <= target_wrong <= 1.0:
        raise ValueError(f"target_wrong must be in [0, 1], got {target_wrong}")
    kinds = check_far_kinds(far_kinds)
    probs = np.asarray(intent_probs)
    if len(references) != len(probs):
        raise ValueError(f"{len(references)} references but {len(probs)} rows of probabilities")
    if not np.all(np.isfinite(probs)) or not all(np.all(np.isfinite(h)) for h in slot_probs):
        raise ValueError("probabilities must be finite (got NaN or inf)")

    def at(threshold: float) -> Calibration:
        decisions = decide_all(layout, probs, slot_probs, threshold=threshold)
        m = score(references, decisions, layout=layout)
        return Calibration(threshold, target_far, m.false_accept_rate, m.false_reject_rate, m.command_acceptance,
                           target_wrong, wrong_action_rate(references, decisions), kinds)

    negatives = np.array([not r.is_command and (kinds is None or r.kind in kinds) for r in references], dtype=bool)
    if not negatives.any() and target_wrong is None:
        _LOGGER.warning("No negatives to calibrate on: threshold 0.0, false accepts unmeasured")
        return at(0.0)
    base = decide_all(layout, probs, slot_probs)
    offenders = [k for k, (r, d) in enumerate(zip(references, base, strict=True))
                 if d.understood and (negatives[k] or (r.is_command and target_wrong is not None
                                                        and not is_correct(r, d)))]
    values = {float(probs[k].max()) for k in offenders} | {float(base[k].confidence) for k in offenders}
    candidates = [0.0, *sorted(float(np.nextafter(v, math.inf)) for v in values)]
    n_neg, n_cmd = int(negatives.sum()), int((~negatives).sum())

    def meets(threshold: float) -> bool:
        decisions = decide_all(layout, probs, slot_probs, threshold=threshold)
        accepted_neg = sum(d.understood for d, neg in zip(decisions, negatives, strict=True) if neg)
        if n_neg and accepted_neg > target_far * n_neg:
            return False
        if target_wrong is None or not n_cmd:
            return True
        return (wrong_action_rate(references, decisions) or 0.0) <= target_wrong

    lo, hi = 0, len(candidates) - 1  # meets(candidates[hi]): it is above every offender
    while lo < hi:
        mid = (lo + hi) // 2
        if meets(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    result = at(candidates[lo])
    if result.threshold > 1.0:
        _LOGGER.warning("No threshold in [0, 1] meets a false-accept rate of %.3g%s (offenders accepted with "
                        "probability 1.0); using %r, which rejects everything", target_far,
                        "" if target_wrong is None else f" and a wrong-action rate of {target_wrong:.3g}",
                        result.threshold)
    else:
        _LOGGER.info("Threshold %.6g: false accepts %.2f%%, wrong actions %.2f%%, command acceptance %.2f%%",
                     result.threshold, 100 * (result.false_accept_rate or 0.0),
                     100 * (result.wrong_action_rate or 0.0), 100 * result.command_acceptance)
    return result


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
                 percent: Iterable[str] | None = None) -> str:
    """A markdown table of ``rows`` (missing or None values show as "—").

    Columns in ``percent`` (default: names mentioning acceptance, accuracy, rate, far,
    frr or %) show fractions as percentages with one decimal; other floats get three
    significant digits (no decimals from 100 up), ints stay exact.
    """
    pct = set(percent) if percent is not None else {c for c in columns if _PERCENT.search(c.lower())}
    cells = [[_cell(row.get(c), c in pct) for c in columns] for row in rows]
    present = [[row[c] for row in rows if row.get(c) is not None] for c in columns]
    numeric = [bool(values) and all(_is_number(v) for v in values) for values in present]
    widths = [max([len(c), 3, *(len(r[k]) for r in cells)]) for k, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        padded = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if num else "-" * (w + 2)
                          for w, num in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(list(columns)), rule, *(line(r) for r in cells)])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _cell(value: Any, percent: bool) -> str:
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{100 * value:.1f}%" if percent else str(int(value))
    if isinstance(value, float | np.floating):
        x = float(value)
        if percent:
            return f"{100 * x:.1f}%"
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def plot_confusion(metrics: Metrics, path: str | os.PathLike[str]) -> Path:
    """A PNG of the row-normalized confusion matrix (counts written in when there are ≤ 30 labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.array(metrics.confusion, dtype=np.float64).reshape(len(metrics.confusion_labels), -1)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = len(metrics.confusion_labels)
    side = max(4.0, 1.5 + 0.42 * n)
    fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    try:
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(n), metrics.confusion_labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), metrics.confusion_labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(f"command acceptance {100 * metrics.command_acceptance:.1f}% (n={metrics.n})", fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of row")
        if n <= 30:
            for (i, j), c in np.ndenumerate(counts):
                if c:
                    ax.text(j, i, str(int(c)), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.6 else "black")
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_accuracy_vs_snr(series: Mapping[str, Mapping[float | str, float]], path: str | os.PathLike[str]) -> Path:
    """A PNG of command acceptance (fractions in [0, 1], drawn as %) against SNR dB, one line per model.

    The clean condition (key CLEAN or ``"clean"``) is drawn as a point at the right.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parsed: dict[str, dict[float, float]] = {}
    for model, points in series.items():
        parsed[model] = {}
        for key, value in points.items():
            snr = CLEAN if isinstance(key, str) and key.lower() == "clean" else float(key)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"model {model!r}, SNR {key}: acceptance must be a fraction in [0, 1], got {value}")
            parsed[model][snr] = float(value)
    finite = sorted({s for p in parsed.values() for s in p if math.isfinite(s)})
    if not finite and not any(parsed.values()):
        raise ValueError("nothing to plot: no points in any series")
    span = (finite[-1] - finite[0]) if len(finite) > 1 else 10.0
    clean_x = (finite[-1] if finite else 0.0) + max(3.0, 0.2 * span)
    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=100, layout="constrained")
    try:
        for model, curve in parsed.items():
            xs = sorted(s for s in curve if math.isfinite(s))
            (line,) = ax.plot(xs, [100 * curve[s] for s in xs], marker="o", label=model)
            if CLEAN in curve:  # the clean point, joined by a dotted line: it is not at a real SNR
                ax.plot([clean_x], [100 * curve[CLEAN]], marker="o", color=line.get_color())
                if xs:
                    ax.plot([xs[-1], clean_x], [100 * curve[xs[-1]], 100 * curve[CLEAN]], ":",
                            color=line.get_color())
        has_clean = any(math.isinf(s) for p in parsed.values() for s in p)
        ax.set_xticks([*finite, *([clean_x] if has_clean else [])],
                      [_label(s) for s in finite] + (["clean"] if has_clean else []))
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel("command acceptance (%)")
        ax.set_ylim(min(50.0, *(100 * v for p in parsed.values() for v in p.values())) - 2, 101)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        return _save(fig, path)
    finally:
        plt.close(fig)


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_report(metrics: Metrics, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``confusion.png`` into ``out_dir`` (created); returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    fd, tmp = tempfile.mkstemp(prefix=".metrics.json.", dir=out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(metrics.to_dict(), f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _LOGGER.info("Command acceptance %.2f%% on %d utterances; report in %s",
                 100 * metrics.command_acceptance, metrics.n, out)
    return path, plot_confusion(metrics, out / "confusion.png")


def summarize(metrics: Metrics) -> dict[str, Any]:
    """The headline numbers of ``metrics`` as one :func:`format_table` row."""
    return {"n": metrics.n, "command_acceptance": metrics.command_acceptance,
            "commands_right": metrics.commands_right, "intent_accuracy": metrics.intent_accuracy,
            "false_accept_rate": metrics.false_accept_rate, "false_reject_rate": metrics.false_reject_rate}


"""A student's phone CTC head decoded through the context's grammar over a clip set, and its two thresholds.

The hub decides a clip from its CTC log-probabilities and head probabilities with
:func:`assistant.grammar.best_candidate` and :func:`assistant.grammar.grammar_decision`; this
module runs the same code over many clips (in worker processes: the search is pure Python) and
calibrates what the manifest records: the threshold on the decoder's confidence and the gate on
the heads' 1 − P(not understood), for the build's false-accept and wrong-action targets
(:func:`calibrate_gated`), or, with a scorer fitted on the same clips (:func:`fit_scorer`), the
threshold on its probability alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from multiprocessing import get_context

import numpy as np
import torch

from assistant.decode import Decision, HeadLayout
from assistant.grammar import (
    Candidate,
    GrammarGraph,
    GrammarSettings,
    Hypothesis,
    Scorer,
    choose,
    free_path_score,
    grammar_decision,
)
from distill.data import ClipSet
from distill.evaluate import Reference, check_far_kinds
from distill.nets.student import Student

Decoded = tuple[int, float, list[tuple[str, dict[str, str], float]], float]
"""Per clip: steps, the unconstrained best path's score, the decoder's sentences (intent, slots, path score)
best first, and the seconds the search took."""

_GRAPH: GrammarGraph | None = None
_SETTINGS: GrammarSettings | None = None


def _start(graph: GrammarGraph, settings: GrammarSettings) -> None:
    global _GRAPH, _SETTINGS
    _GRAPH, _SETTINGS = graph, settings


def _decode(log_probs: np.ndarray) -> Decoded:
    assert _GRAPH is not None and _SETTINGS is not None
    s = _SETTINGS
    started = time.perf_counter()
    hyps = _GRAPH.decode(log_probs, beam=s.beam, prune=s.prune, blank_penalty=s.blank_penalty, nbest=s.nbest)
    seconds = time.perf_counter() - started
    return (len(log_probs), free_path_score(log_probs, s.blank_penalty), [(h.intent, h.slots, h.score) for h in hyps],
            seconds)


@torch.no_grad()
def ctc_log_probs(student: Student, clips: ClipSet) -> list[np.ndarray]:
    """Per clip (run alone, as the hub does), the student's CTC log-probabilities ``[steps, 1 + units]``."""
    student.eval()
    out = []
    for audio in clips.audio:
        _, feats = student.forward_features(torch.from_numpy(np.asarray(audio, np.float32)).unsqueeze(0))
        out.append(student.ctc_log_probs(feats)[0].numpy().astype(np.float64))
    return out


def decode_all(graph: GrammarGraph, log_probs: Sequence[np.ndarray], settings: GrammarSettings,
               procs: int = 1) -> list[Decoded]:
    """:meth:`GrammarGraph.decode` on every clip, in ``procs`` worker processes (1: in this one)."""
    if procs <= 1:
        _start(graph, settings)
        return [_decode(lp) for lp in log_probs]
    with get_context("fork").Pool(procs, initializer=_start, initargs=(graph, settings)) as pool:
        return pool.map(_decode, log_probs, chunksize=8)


def candidates(layout: HeadLayout, heads: Sequence[np.ndarray], decoded: Sequence[Decoded],
               heads_weight: float, scorer: Scorer | None = None) -> list[Candidate | None]:
    """Each clip's best sentence (:func:`assistant.grammar.choose`); ``heads``: per head ``[clips, labels]``."""
    out = []
    for k, (steps, free, found, _) in enumerate(decoded):
        hyps = [Hypothesis(intent, slots, score) for intent, slots, score in found]
        out.append(choose(layout, hyps, free, steps, [h[k] for h in heads], heads_weight, scorer))
    return out


def fit_scorer(refs: Sequence[Reference], cands: Sequence[Candidate | None], l2: float = 0.01,
               iterations: int = 3000) -> Scorer:
    """Logistic regression from each candidate's :data:`assistant.grammar.SCORE_FEATURES` to "its sentence is
    right" (a command, with its intent and every slot), on the clips that have one: full-batch gradient descent
    on standardized features with an L2 penalty ``l2``, from zero (deterministic), folded back into weights on
    the raw features."""
    rows = [(c.features, r.is_command and (c.intent, c.slots) == (r.intent, r.slots))
            for r, c in zip(refs, cands, strict=True) if c is not None]
    if not rows or len({y for _, y in rows}) < 2:
        raise ValueError("fit_scorer needs clips whose best sentence is right and clips whose is not")
    x = np.array([f for f, _ in rows], dtype=np.float64)
    y = np.array([y for _, y in rows], dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std < 1e-9] = 1.0  # a constant feature keeps weight 0
    z = (x - mean) / std
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(iterations):
        g = 1.0 / (1.0 + np.exp(-(z @ w + b))) - y
        w -= 0.5 * (z.T @ g / len(y) + l2 * w)
        b -= 0.5 * float(g.mean())
    weights = w / std
    return Scorer(tuple(float(v) for v in weights), float(b - weights @ mean))


def rescored(cands: Sequence[Candidate | None], scorer: Scorer) -> list[Candidate | None]:
    """The same candidates with ``scorer``'s confidence (as :func:`candidates` with it would give)."""
    return [None if c is None else replace(c, confidence=scorer(c.features)) for c in cands]


def decisions(cands: Sequence[Candidate | None], threshold: float, gate: float) -> list[Decision]:
    return [grammar_decision(c, threshold, gate) for c in cands]


def rates(refs: Sequence[Reference], cands: Sequence[Candidate | None], threshold: float, gate: float = -math.inf,
          far_kinds: Iterable[str] | None = None) -> dict[str, float]:
    """At (``threshold``, ``gate``): commands right, wrong actions (commands accepted with a wrong intent or slot),
    false accepts of the negatives of ``far_kinds`` (None: every kind) and near misses accepted."""
    kinds = check_far_kinds(far_kinds)

    def taken(c: Candidate | None) -> bool:
        return c is not None and c.confidence >= threshold and c.gate >= gate

    commands = [(r, c) for r, c in zip(refs, cands, strict=True) if r.is_command]
    right = [taken(c) and c is not None and (c.intent, c.slots) == (r.intent, r.slots) for r, c in commands]
    wrong = [taken(c) and not ok for (_, c), ok in zip(commands, right, strict=True)]
    other = [taken(c) for r, c in zip(refs, cands, strict=True)
             if not r.is_command and (kinds is None or r.kind in kinds)]
    near = [taken(c) for r, c in zip(refs, cands, strict=True) if r.kind == "near_miss"]
    return {"right": float(np.mean(right)) if right else 0.0, "wrong": float(np.mean(wrong)) if wrong else 0.0,
            "other FAR": float(np.mean(other)) if other else 0.0, "near": float(np.mean(near)) if near else 0.0}


def calibrate(refs: Sequence[Reference], cands: Sequence[Candidate | None], target_far: float, target_wrong: float,
              gate: float = -math.inf, far_kinds: Iterable[str] | None = None) -> float:
    """The smallest confidence threshold meeting both targets on ``refs`` at ``gate`` (both rates only fall as
    it rises; -inf when every candidate may pass)."""
    confs = sorted({c.confidence for c in cands if c is not None})
    options = [-math.inf, *(float(np.nextafter(c, math.inf)) for c in confs)]
    lo, hi = 0, len(options) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        r = rates(refs, cands, options[mid], gate, far_kinds)
        if r["other FAR"] <= target_far and r["wrong"] <= target_wrong:
            hi = mid
        else:
            lo = mid + 1
    return options[lo]


def calibrate_gated(refs: Sequence[Reference], cands: Sequence[Candidate | None], target_far: float,
                    target_wrong: float, far_kinds: Iterable[str] | None = None) -> tuple[float, float]:
    """(threshold, gate) meeting both targets with the most commands right on ``refs``: for each gate on a grid
    of the heads' acceptance (none, and its 1st..99th percentiles over the clips), the smallest threshold."""
    gates = np.array([c.gate for c in cands if c is not None])
    grid = [-math.inf, *sorted({float(g) for g in np.percentile(gates, np.arange(1, 100))})] if len(gates) else [
        -math.inf]
    best = (-1.0, math.inf, math.inf)
    for gate in grid:
        t = calibrate(refs, cands, target_far, target_wrong, gate, far_kinds)
        r = rates(refs, cands, t, gate, far_kinds)
        if r["other FAR"] <= target_far and r["wrong"] <= target_wrong and r["right"] > best[0]:
            best = (r["right"], t, gate)
    return best[1], best[2]


def manifest_thresholds(threshold: float, gate: float) -> tuple[float, float]:
    """The pair as the manifest holds them: numbers in [0, 1] (-inf, "accept all", is 0)."""
    return float(min(max(threshold, 0.0), 1.0)), float(min(max(gate, 0.0), 1.0))


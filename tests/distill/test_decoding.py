"""The build's scorer for grammar sentences (:func:`distill.decoding.fit_scorer`) and the threshold set on it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assistant.grammar import SCORE_FEATURES, Candidate
from distill import decoding
from distill.evaluate import Reference


def _clips(n: int, seed: int) -> tuple[list[Reference], list[Candidate | None]]:
    """Commands whose decoded sentence is right when feature 0 (the path confidence) is high, plus noise clips
    decoded to some sentence with low scores; feature 4 is noise."""
    rng = np.random.default_rng(seed)
    refs: list[Reference] = []
    cands: list[Candidate | None] = []
    for k in range(n):
        right = k % 3 != 0 and k % 5 != 0  # every fifth clip is noise: never right
        f = rng.normal(0.0, 1.0, len(SCORE_FEATURES))
        f[0] = (-0.2 if right else -1.5) + 0.4 * rng.standard_normal()
        if k % 5 == 0:
            refs.append(Reference(None, kind="noise"))
        else:
            refs.append(Reference("lights", {"state": "on"}))
        said = {"state": "on"} if right else {"state": "off"}
        cands.append(Candidate("lights", said, math.exp(min(0.0, f[0])), 0.9, tuple(float(v) for v in f)))
    cands[1] = None  # a clip with no sentence is skipped
    return refs, cands


def test_the_scorer_learns_which_sentences_are_right_and_is_deterministic() -> None:
    refs, cands = _clips(300, 0)
    scorer = decoding.fit_scorer(refs, cands)
    assert scorer == decoding.fit_scorer(refs, cands)
    assert scorer.weights[0] > 1.0 and abs(scorer.weights[4]) < 0.5 * scorer.weights[0]
    scored = decoding.rescored(cands, scorer)
    good = [c.confidence for r, c in zip(refs, scored, strict=True)
            if c is not None and r.is_command and c.slots == r.slots]
    bad = [c.confidence for r, c in zip(refs, scored, strict=True)
           if c is not None and not (r.is_command and c.slots == r.slots)]
    assert np.mean(good) > 0.7 > 0.3 > np.mean(bad)
    # on held-out clips of the same kind, a threshold on its probability meets targets the path confidence alone
    # meets with fewer commands right
    test_refs, test_cands = _clips(300, 1)
    t_score = decoding.calibrate(refs, scored, 0.02, 0.05)
    t_path = decoding.calibrate(refs, cands, 0.02, 0.05)
    right_score = decoding.rates(test_refs, decoding.rescored(test_cands, scorer), t_score)["right"]
    right_path = decoding.rates(test_refs, test_cands, t_path)["right"]
    assert right_score >= right_path > 0


def test_the_scorer_needs_both_kinds_of_sentence() -> None:
    refs, cands = _clips(30, 2)
    all_right = [None if c is None else Candidate(c.intent, dict(r.slots), c.confidence, c.gate, c.features)
                 for r, c in zip(refs, cands, strict=True) if r.is_command]
    with pytest.raises(ValueError, match="right and clips whose is not"):
        decoding.fit_scorer([r for r in refs if r.is_command], all_right)
    with pytest.raises(ValueError):
        decoding.fit_scorer([], [])

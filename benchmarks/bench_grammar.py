"""A student's phone CTC head decoded through the context's grammar, against its own heads, at the preset's targets.

    .venv/bin/python benchmarks/bench_student.py --build work/build-smart_home-default-s0 \
        --context examples/home_assistant/smart_home.yaml --out work/bench-student --threads 2 --steps 6000 \
        --variant phctc5-6000 '{"train": {"ctc": 5.0, "ctc_units": "phones"}}'
    .venv/bin/python benchmarks/bench_grammar.py --build work/build-smart_home-default-s0 \
        --context examples/home_assistant/smart_home.yaml --checkpoint work/bench-student/phctc5-6000/last.pt \
        --extra-negatives 2000 --blank-penalty 2 3 4

For every clip of validation and of test (clean, 15 dB and 6 dB SNR; with ``--extra-negatives N``
the same extra negatives as ``bench_rejection.py``), the student's CTC log-probabilities go
through :class:`assistant.grammar.GrammarGraph` (beam ``--beam``), with each blank penalty.
A clip's decision is the best sentence (or, with ``+ w x heads``, the best of the decoder's 20 by
path score + w × the heads' log-probability of that intent and those slots), and its confidence
the path's score above the best unconstrained path, per step (``free``: how much the grammar
cost), or its lead over the next different result (``margin``); "+ heads' gate" also asks the
heads' 1 - P(not understood) to reach a second threshold (the pair with the most validation commands
right among those meeting the targets, over a grid of gates). The threshold is calibrated on
validation for the preset's targets (false accepts on out-of-domain speech, noise and silence,
and wrong actions on the commands), the smallest that meets both, as ``build`` does for the
heads; the heads' row is the shipped decoding of the same student, calibrated by
:func:`distill.evaluate.calibrate_threshold`.

``--calibrate-noise 15 6`` sets both thresholds (and the heads' row's) on validation clean and with
noise at those SNRs together, the same noise as the test conditions get (``with_noise``).

Reported per condition: commands right at threshold 0 and at the threshold, wrong actions,
other false accepts, near misses accepted; and the decoder's time per clip (one process).
Decoded candidates are cached next to the checkpoint (``<checkpoint>.grammar-min-*.pkl``; the minimized graph of 2026-12-07 session 12), keyed by
condition, extra negatives, beam and penalty. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import pickle
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assistant.context import load_context
from assistant.decode import HeadLayout
from assistant.grammar import SEARCH_ENGINE, Candidate, GrammarGraph, GrammarSettings, Lexicon, heads_log_prob
from distill.build import OTHER_NEGATIVES, PRESETS, extra_negatives
from distill.data import ClipSet, load_corpus, with_noise
from distill.decoding import Decoded, calibrate, calibrate_gated, candidates, ctc_log_probs, decode_all, rates
from distill.distillation import student_probs
from distill.evaluate import (
    calibrate_threshold,
    decide_all,
    format_table,
    score,
    wrong_action_rate,
)
from distill.export import load_student

Search = tuple[float, int, float]
"""(blank penalty, beam, prune)."""


def pick(layout: HeadLayout, probs: Sequence[np.ndarray], decoded: Sequence[Decoded], weight: float,
         confidence: str) -> list[Candidate | None]:
    """Each clip's best sentence; ``free``: the hub's confidence (:func:`assistant.grammar.choose`), ``margin``:
    its total's lead over the next sentence's."""
    cands = candidates(layout, probs, decoded, weight)
    if confidence == "free":
        return cands
    out: list[Candidate | None] = []
    for k, (c, (_, _, found, _)) in enumerate(zip(cands, decoded, strict=True)):
        if c is None:
            out.append(None)
            continue
        heads = [h[k] for h in probs]
        totals = sorted((score + (weight * heads_log_prob(layout, heads, i, sl) if weight else 0.0)
                         for i, sl, score in found), reverse=True)
        out.append(replace(c, confidence=totals[0] - totals[1] if len(totals) > 1 else math.inf))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--context", required=True)
    ap.add_argument("--checkpoint", required=True, type=Path, help="a student checkpoint with a phone CTC head")
    ap.add_argument("--lexicon", type=Path, help="its lexicon (JSON: units, words), if the checkpoint lacks one")
    ap.add_argument("--blank-penalty", type=float, nargs="+", default=[3.0])
    ap.add_argument("--weights", type=float, nargs="*", default=[0.0, 0.5], help="weights of the heads' score")
    ap.add_argument("--beam", type=int, nargs="+", default=[1000])
    ap.add_argument("--prune", type=float, nargs="+", default=[25.0],
                    help="states further than this below the step's best are dropped (log score)")
    ap.add_argument("--confidences", nargs="+", default=["free", "margin"], choices=["free", "margin"])
    ap.add_argument("--extra-negatives", type=int, default=0, metavar="N")
    ap.add_argument("--calibrate-noise", type=float, nargs="*", default=[], metavar="SNR",
                    help="also set the thresholds on val with noise at these SNRs (dB), with the clean val as one set")
    ap.add_argument("--extra-seed", type=int, default=1)
    ap.add_argument("--procs", type=int, default=2, help="decoding processes")
    ap.add_argument("--preset", default="default", choices=list(PRESETS))
    ap.add_argument("--conditions", nargs="+", default=["val", "test clean", "test 15 dB", "test 6 dB"],
                    help="which of val (always decoded: thresholds are set on it), 'test clean', 'test 15 dB', "
                         "'test 6 dB' (e.g. only val to choose a blank penalty)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    ctx = load_context(args.context)
    layout = HeadLayout.from_context(ctx)
    preset = PRESETS[args.preset]
    if preset.target_wrong is None or preset.far_kinds is None:
        raise SystemExit(f"preset {args.preset}: this benchmark calibrates for far_kinds and target_wrong")
    given = json.loads(args.lexicon.read_text(encoding="utf-8")) if args.lexicon else None
    student, _ = load_student(args.checkpoint, lexicon=given)
    if student.ctc_lexicon is None:
        raise SystemExit(f"{args.checkpoint}: no phone CTC head with a lexicon (train with train.ctc > 0 and "
                         "train.ctc_units 'phones'; give --lexicon for a checkpoint saved without one)")
    lexicon = Lexicon.from_dict(student.ctc_lexicon)
    graph = GrammarGraph.from_lexicon(ctx, lexicon)
    val = load_corpus(args.build / "corpus", layout, splits=("val",))
    test = load_corpus(args.build / "corpus", layout, splits=("test",))
    if args.extra_negatives:
        folder = args.build / f"extra-negatives-n{args.extra_negatives}-s{args.extra_seed}"
        x_val, x_test = extra_negatives(args.context, args.build / "corpus", folder, args.extra_negatives,
                                        args.extra_seed, layout)
        val, test = val.join(x_val), test.join(x_test)
    conditions = {"val": lambda: val, "test clean": lambda: test, "test 15 dB": lambda: with_noise(test, 15),
                  "test 6 dB": lambda: with_noise(test, 6)}
    calibration = ["val", *(f"val {snr:g} dB" for snr in args.calibrate_noise)]
    for snr in args.calibrate_noise:
        conditions[f"val {snr:g} dB"] = functools.partial(with_noise, val, snr)
    searches = [(p, b, r) for p in args.blank_penalty for b in args.beam for r in args.prune]
    results: dict[str, tuple[ClipSet, list[np.ndarray], dict[Search, list[Decoded]]]] = {}
    for name, make in conditions.items():
        if name not in calibration and name not in args.conditions:
            continue
        clips = make()
        probs = student_probs(student, clips)
        decoded: dict[Search, list[Decoded]] = {}
        lps: list[np.ndarray] | None = None
        for search in searches:
            penalty, beam, prune = search
            cache = Path(f"{args.checkpoint}.grammar-min-{name.replace(' ', '_')}-x{args.extra_negatives}"
                         f"-b{beam}-p{penalty:g}" + (f"-r{prune:g}" if prune != 25.0 else "") + ".pkl")
            if cache.is_file():
                decoded[search] = pickle.loads(cache.read_bytes())  # our own file, written below
                continue
            lps = lps if lps is not None else ctc_log_probs(student, clips)
            settings = GrammarSettings(blank_penalty=penalty, beam=beam, prune=prune)
            decoded[search] = decode_all(graph, lps, settings, procs=args.procs)
            cache.write_bytes(pickle.dumps(decoded[search]))
        results[name] = (clips, probs, decoded)
        logging.info("%s: %d clips", name, len(clips))

    # the thresholds are set on val, clean and with each --calibrate-noise SNR, as one set
    refs_val = [r for n in calibration for r in results[n][0].references]
    rows: list[dict[str, Any]] = []
    for search in searches:
        penalty, beam, prune = search
        for weight in args.weights:
            for confidence, gated in [(c, g) for g in (False, True) for c in args.confidences]:
                picks = {n: pick(layout, r[1], r[2][search], weight, confidence) for n, r in results.items()}
                picks_val = [c for n in calibration for c in picks[n]]
                if gated:
                    t, g = calibrate_gated(refs_val, picks_val, preset.target_far, preset.target_wrong,
                                           preset.far_kinds)
                else:
                    t = calibrate(refs_val, picks_val, preset.target_far, preset.target_wrong,
                                  far_kinds=preset.far_kinds)
                    g = -math.inf
                row: dict[str, Any] = {"decoder": f"grammar, blank penalty {penalty:g}"
                                                  + (f", beam {beam}, prune {prune:g}" if len(searches) > 1 else "")
                                                  + f", conf {confidence}"
                                                  + (" + heads' gate" if gated else "")
                                                  + (f", + {weight:g} x heads" if weight else ""),
                                       "threshold": f"{t:.4f}" + (f" / {g:.4f}" if gated else "")}
                for n, r in results.items():
                    row[f"{n} right @0"] = rates(r[0].references, picks[n], -math.inf)["right"]
                    row.update({f"{n} {k}": v for k, v in rates(r[0].references, picks[n], t, g,
                                                                 preset.far_kinds).items()})
                rows.append(row)
    pv = [np.concatenate([results[n][1][h] for n in calibration]) for h in range(len(results["val"][1]))]
    cal = calibrate_threshold(layout, pv[0], pv[1:], refs_val, target_far=preset.target_far,
                              target_wrong=preset.target_wrong, far_kinds=preset.far_kinds)
    row = {"decoder": "heads (the shipped decoding)", "threshold": f"{cal.threshold:.4f}"}
    for n, (clips, probs, _) in results.items():
        refs = clips.references
        row[f"{n} right @0"] = score(refs, decide_all(layout, probs[0], probs[1:]), layout=layout).commands_right
        d = decide_all(layout, probs[0], probs[1:], threshold=cal.threshold)
        other = [x.understood for r, x in zip(refs, d, strict=True) if r.kind in OTHER_NEGATIVES]
        near = [x.understood for r, x in zip(refs, d, strict=True) if r.kind == "near_miss"]
        row.update({f"{n} right": score(refs, d, layout=layout).commands_right,
                    f"{n} wrong": wrong_action_rate(refs, d) or 0.0,
                    f"{n} other FAR": float(np.mean(other)) if other else 0.0,
                    f"{n} near": float(np.mean(near)) if near else 0.0})
    rows.append(row)
    print(f"{args.checkpoint}; thresholds set on val for the {args.preset} preset's targets: other false accepts "
          f"<= {preset.target_far:.0%}, wrong actions <= {preset.target_wrong:.0%}\n")
    print(format_table(rows, list(rows[0]), percent=[k for k in rows[0] if k not in ("decoder", "threshold")]))
    for search in searches:
        seconds = np.array([d[3] for r in results.values() for d in r[2][search]])
        print(f"\ndecoder time per clip, blank penalty {search[0]:g}, beam {search[1]}, prune {search[2]:g}: "
              f"p50 {np.median(seconds) * 1000:.2f} ms, p95 {np.percentile(seconds, 95) * 1000:.2f} ms over "
              f"{len(seconds)} clips ({graph.size[1]} word arcs; {SEARCH_ENGINE} search, {args.procs} processes; "
              f"times of cached decodes are those of the run that wrote them)")


if __name__ == "__main__":
    main()

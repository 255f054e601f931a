"""Teacher-head variants on a finished build: same cached encoder frames, same steps; which teacher rejects best.

    .venv/bin/python benchmarks/bench_teacher_head.py --build work/build-smart_home-default-s0 \
        --context examples/home_assistant/smart_home.yaml --out work/bench-teacher \
        --variant base '{}' --variant layers2 '{"head": {"layers": 2}}'

Each variant trains the teacher's heads (``distill.teach.train_teacher``, the preset's recipe
changed by the variant's JSON: ``head`` = HeadConfig fields, ``train`` = TrainConfig fields) on
the build's training pool, reading the Whisper frames the build cached under ``--cache`` (a
variant that needs other frames, e.g. another window, encodes them first). Reported per variant:
command acceptance on validation and on test clean / 15 dB / 6 dB at threshold 0, and at the
threshold calibrated on validation for the preset's false-accept target (the student's operating
point) with the hub's decision rule; and the validation negatives accepted at threshold 0 by kind.
With ``--extra-negatives N`` validation and test also get the held-out negatives of
:func:`distill.build.extra_negatives` (``<build>/extra-negatives-n<N>-s1``, as ``bench_rejection.py``
makes them), so the threshold is set on several hundred negatives; ``--train-near-misses N`` adds
:func:`distill.build.train_near_misses` to the training clips (their encodings are computed and cached
first; augmented copies of the other clips keep their cached frames). "commands right" columns score
the commands alone. Prints a markdown table and appends to ``--out/results.jsonl``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from assistant.context import load_context
from assistant.decode import HeadLayout
from distill.build import PRESETS, extra_negatives, train_near_misses
from distill.data import ClipSet, load_corpus, with_noise
from distill.evaluate import calibrate_threshold, decide_all, format_table
from distill.nets.profile import count_parameters
from distill.teach import probs_metrics, train_teacher
from distill.teachers.neural import HeadConfig
from distill.train import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, type=Path, help="a build's work folder (corpus/)")
    ap.add_argument("--context", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    ap.add_argument("--preset", default="default", choices=list(PRESETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("work/cache/whisper"), help="the build's cached encodings")
    ap.add_argument("--extra-negatives", type=int, default=0, metavar="N", help="held-out negatives for val and test")
    ap.add_argument("--train-near-misses", type=int, default=0, metavar="N", help="more near misses to train on")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    layout = HeadLayout.from_context(load_context(args.context))
    train = load_corpus(args.build / "corpus", layout, splits=("train",))
    val = load_corpus(args.build / "corpus", layout, splits=("val",))
    test = load_corpus(args.build / "corpus", layout, splits=("test",))
    fit_val = val
    if args.extra_negatives:
        x_val, x_test = extra_negatives(args.context, args.build / "corpus",
                                        args.build / f"extra-negatives-n{args.extra_negatives}-s1",
                                        args.extra_negatives, 1, layout)
        val, test = val.join(x_val), test.join(x_test)
    if args.train_near_misses:
        train = train.join(train_near_misses(args.context, args.build,
                                             args.out / f"train-near-misses-n{args.train_near_misses}",
                                             args.train_near_misses, layout))
    sets: dict[str, ClipSet] = {"test clean": test, "test 15 dB": with_noise(test, 15), "test 6 dB": with_noise(test, 6)}
    preset = PRESETS[args.preset]
    rows = []
    for name, spec_text in args.variant:
        spec = json.loads(spec_text)
        base = preset.teacher
        cfg = replace(base, head=HeadConfig.from_dict({**base.head.to_dict(), **spec.get("head", {})}),
                      train=TrainConfig(**{**base.train.to_dict(), **spec.get("train", {})}),
                      **{k: v for k, v in spec.items() if k not in ("head", "train")})
        started = time.time()
        teacher, _, probs = train_teacher(train, fit_val, layout, cfg, args.out / name, cache_dir=args.cache,
                                          also={"val": val, **sets}, progress=False)
        seconds = time.time() - started
        cal = calibrate_threshold(layout, probs["val"][0], probs["val"][1:], val.references,
                                  target_far=preset.target_far)
        row: dict[str, object] = {"variant": name, "head params": count_parameters(teacher.head),
                                  "threshold": f"{cal.threshold:.6f}"}
        for k, clips in {"val": val, **sets}.items():
            row[f"{k} thr0"] = probs_metrics(layout, probs[k], clips).command_acceptance
            m = probs_metrics(layout, probs[k], clips, cal.threshold)
            row[f"{k} @thr"] = m.command_acceptance
            row[f"{k} FAR @thr"] = m.false_accept_rate or 0.0
            row[f"{k} commands right @thr"] = m.commands_right
        decided = decide_all(layout, probs["val"][0], probs["val"][1:])
        seen: collections.Counter[str] = collections.Counter()
        took: collections.Counter[str] = collections.Counter()
        for r, d in zip(val.references, decided, strict=True):
            if not r.is_command:
                seen[r.kind] += 1
                took[r.kind] += d.understood
        row["val negatives passing thr0"] = ", ".join(f"{k} {took[k]}/{seen[k]}" for k in sorted(seen))
        row["seconds"] = round(seconds)
        rows.append(row)
        with (args.out / "results.jsonl").open("a") as f:
            f.write(json.dumps({**row, "spec": spec}) + "\n")
    print(format_table(rows, list(rows[0]), percent=[k for k in rows[0] if "thr" in k and k != "threshold"
                                                      and "negatives" not in k]))


if __name__ == "__main__":
    main()

"""Would re-estimating a built student's batch-norm statistics on unpadded clean clips help it?

    .venv/bin/python benchmarks/bench_bn_recal.py --build work/build-smart_home-default-s0 \
        --context examples/home_assistant/smart_home.yaml

The student trains on padded, augmented batches (about half of a default-preset batch is
padding, which passes through the batch-norm statistics), while the hub decides each clip alone.
This loads the build's student (``student/last.pt``), scores it, then resets every batch-norm
layer's running statistics and re-estimates them (cumulative average) from the build's clean
training clips in length-sorted batches of 64 (little padding), and scores it again. Scores:
command acceptance at threshold 0 and at the threshold calibrated on validation for the default
preset's false-accept target, on val, test clean and test at 6 dB SNR, each clip decided alone.
Prints a markdown table. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from assistant.context import load_context
from assistant.decode import HeadLayout
from distill.build import PRESETS
from distill.data import ClipSet, load_corpus, pad_batch, with_noise
from distill.distillation import student_probs
from distill.evaluate import calibrate_threshold, format_table
from distill.export import load_student
from distill.nets.student import Student
from distill.teach import probs_metrics


def _row(name: str, student: Student, layout: HeadLayout, sets: dict[str, ClipSet], target_far: float) -> dict[str, object]:
    probs = {k: student_probs(student, clips) for k, clips in sets.items()}
    cal = calibrate_threshold(layout, probs["val"][0], probs["val"][1:], sets["val"].references, target_far=target_far)
    threshold = min(1.0, cal.threshold)
    row: dict[str, object] = {"student": name, "threshold": round(threshold, 4)}
    for k, clips in sets.items():
        row[f"{k} @0"] = probs_metrics(layout, probs[k], clips, 0.0).command_acceptance
        at = probs_metrics(layout, probs[k], clips, threshold)
        row[f"{k} @thr"] = at.command_acceptance
        row[f"{k} FAR @thr"] = at.false_accept_rate
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, type=Path, help="a build's work folder (corpus/, student/last.pt)")
    ap.add_argument("--context", required=True)
    ap.add_argument("--preset", default="default", choices=list(PRESETS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    layout = HeadLayout.from_context(load_context(args.context))
    preset = PRESETS[args.preset]
    train = load_corpus(args.build / "corpus", layout, splits=("train",), max_seconds=preset.student.max_seconds)
    test = load_corpus(args.build / "corpus", layout, splits=("test",))
    sets = {"val": load_corpus(args.build / "corpus", layout, splits=("val",)), "test": test,
            "test 6 dB": with_noise(test, 6)}
    student, _ = load_student(args.build / "student" / "last.pt")
    rows = [_row("as trained", student, layout, sets, preset.target_far)]
    for m in student.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
    student.train()
    order = np.argsort([len(a) for a in train.audio])
    with torch.no_grad():
        for s in range(0, len(order), 64):
            idx = order[s : s + 64]
            student(torch.from_numpy(pad_batch([train.audio[i] for i in idx])),
                    torch.tensor([len(train.audio[i]) for i in idx]))
    rows.append(_row("batch norm re-estimated on clean training clips", student.eval(), layout, sets,
                     preset.target_far))
    columns = [c for c in rows[0] if c != "student"]
    print(format_table(rows, ["student", *columns], percent=[c for c in columns if c != "threshold"]))


if __name__ == "__main__":
    main()

"""Student variants on a finished build: same corpus, same teacher labels, same steps; which student learns most.

    .venv/bin/python benchmarks/bench_student.py --build work/build-smart_home-default-s0 \
        --context examples/home_assistant/smart_home.yaml --out work/bench-student \
        --variant c64 '{"student": {"channels": 64}, "train": {"gamma": 1.0, "time_masks": 0, "freq_masks": 0, "time_stretch": 0, "freq_warp": 0}}' \
        --variant c96 '{"student": {"channels": 96}, "train": {"gamma": 1.0, "time_masks": 0, "freq_masks": 0, "time_stretch": 0, "freq_warp": 0}}'

Each variant trains a student from the build's training pool (the clean clips + one augmented
copy, exactly as ``hubvoice-distill build`` makes it, labelled by the build's teacher from the
cached Whisper encodings) with the default preset's recipe, changed only by the variant's JSON
(``student``: StudentConfig fields, ``train``: TrainConfig fields, e.g. ``teacher_correct``,
``time_masks``; default 1,500 steps; ``{"train": {"ctc": 5, "ctc_units": "phones"}}`` trains a phone
CTC head, spelled by an espeak-ng lexicon of the context's words and the corpus's transcripts, which
``benchmarks/bench_grammar.py`` decodes through the grammar). The
pool's log-mel and teacher labels are cached in ``--out/pool.pt`` after the first variant
(~1.8 GB for the default build), so later variants start at once. Reported, per variant:
command acceptance and intent accuracy at threshold 0 on the validation split and on 800
training clips (clean; fitting vs generalizing), and on the test split at threshold 0 and at the
threshold calibrated on validation for the preset's rejection targets, as ``build`` does (the hub's operating point),
each clip decided alone (as the hub does).
Prints a markdown table and appends to ``--out/results.jsonl``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import distill.distillation as D
from assistant.context import load_context
from assistant.decode import HeadLayout
from assistant.grammar import Lexicon
from distill.bench import load_teacher
from distill.build import PRESETS, Preset, train_near_misses
from distill.corpus import read_manifest
from distill.data import ClipSet, load_corpus
from distill.distillation import StudentRecipe, student_probs, train_student
from distill.evaluate import calibrate_threshold, format_table
from distill.nets.profile import count_parameters
from distill.nets.student import StudentConfig
from distill.phones import make_lexicon
from distill.teach import probs_metrics
from distill.train import TrainConfig


def _cached_pool(cache: Path, corpus: Path) -> None:
    """Make train_student reuse (or, the first time, save) the pool, its teacher labels and its log-mel."""
    if cache.is_file():
        c = torch.load(cache, weights_only=False)  # our own file, written below
        # transcripts (CTC targets) from the corpus: a pool.pt saved before references had text lacks them
        said = {u.id: u.text for u in read_manifest(corpus)}
        refs = [replace(r, text=said.get(r.id, "")) for r in c["refs"]]
        pool = ClipSet("pool", [np.zeros(1, np.float32)] * len(c["keys"]), refs, c["targets"], c["keys"])
        D.augmented_copies = lambda *a, **k: pool
        D.teacher_labels = lambda *a, **k: (c["probs"], c["feats"])
        D.log_mel = lambda *a, **k: c["mels"]
        return
    orig = (D.augmented_copies, D.teacher_labels, D.log_mel)
    saved: dict[str, Any] = {}

    def copies(*a: Any, **k: Any) -> Any:
        p = orig[0](*a, **k)
        saved.update(keys=p.keys, refs=p.references, targets=p.targets)
        return p

    def labels(*a: Any, **k: Any) -> Any:
        r = orig[1](*a, **k)
        saved.update(probs=r[0], feats=r[1])
        return r

    def mels(*a: Any, **k: Any) -> Any:
        r = orig[2](*a, **k)
        saved.update(mels=r)
        torch.save(saved, cache)
        return r

    D.augmented_copies, D.teacher_labels, D.log_mel = copies, labels, mels


def cal_target(preset: Preset) -> str:
    """The preset's rejection targets, in words (what the "@thr" columns were calibrated for)."""
    kinds = "all" if preset.far_kinds is None else "+".join(preset.far_kinds)
    wrong = "" if preset.target_wrong is None else f", wrong actions <= {preset.target_wrong:.0%}"
    return f"false accepts <= {preset.target_far:.0%} of negatives of kinds {kinds}{wrong}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, type=Path, help="a build's work folder (corpus/, teacher/best.pt)")
    ap.add_argument("--context", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    ap.add_argument("--preset", default="default", choices=list(PRESETS))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path("work/cache/whisper"), help="cached teacher encodings")
    ap.add_argument("--train-near-misses", type=int, default=0, metavar="N",
                    help="add about N synthesized near misses (training voices, sentences never in val/test) to "
                         "the training clips; use a fresh --out (its pool.pt is this pool)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = load_context(args.context)
    layout = HeadLayout.from_context(ctx)
    lexicon: Lexicon | None = None
    train = load_corpus(args.build / "corpus", layout, splits=("train",))
    if args.train_near_misses:
        more = train_near_misses(args.context, args.build, args.out / f"train-near-misses-n{args.train_near_misses}",
                                 args.train_near_misses, layout)
        logging.info("%d more near misses for training", len(more))
        train = train.join(more)
    val = load_corpus(args.build / "corpus", layout, splits=("val",))
    test = load_corpus(args.build / "corpus", layout, splits=("test",))
    teacher = load_teacher(args.build / "teacher" / "best.pt", None, threads=1)
    preset = PRESETS[args.preset]
    fit_clips = train.subset(np.random.default_rng(0).choice(len(train), min(800, len(train)), replace=False))
    _cached_pool(args.out / "pool.pt", args.build / "corpus")
    rows = []
    for name, spec_text in args.variant:
        spec = json.loads(spec_text)
        scfg = StudentConfig.from_dict({**preset.student.student.to_dict(), **spec.get("student", {})})
        tcfg = TrainConfig(**{**preset.student.train.to_dict(), "steps": args.steps,
                              "eval_every": max(1, args.steps // 3), **spec.get("train", {})})
        recipe = StudentRecipe(student=scfg, train=tcfg, copies=preset.student.copies,
                               max_seconds=preset.student.max_seconds)
        if tcfg.ctc > 0 and tcfg.ctc_units == "phones" and lexicon is None:  # made once, for every variant
            lexicon = make_lexicon([*ctx.vocabulary(), *(u.text for u in read_manifest(args.build / "corpus"))])
        started = time.time()
        student, _ = train_student(train, val, layout, recipe, args.out / name, teacher=teacher,
                                   teacher_window_s=preset.teacher.window_s, cache_dir=args.cache, progress=False,
                                   lexicon=lexicon)
        seconds = time.time() - started
        p_val, p_test = student_probs(student, val), student_probs(student, test)
        m_val = probs_metrics(layout, p_val, val)
        m_fit = probs_metrics(layout, student_probs(student, fit_clips), fit_clips)
        # the preset's own operating point, calibrated as ``build`` does (until 2026-12-07 session 10 this
        # was 2% of all validation negatives: older rows of results.jsonl used that, and have no "target")
        cal = calibrate_threshold(layout, p_val[0], p_val[1:], val.references, target_far=preset.target_far,
                                  target_wrong=preset.target_wrong, far_kinds=preset.far_kinds)
        m_test = probs_metrics(layout, p_test, test)
        m_cal = probs_metrics(layout, p_test, test, cal.threshold)
        row = {"variant": name, "params": count_parameters(student), "steps": tcfg.steps,
               "val acceptance": m_val.command_acceptance, "val intent": m_val.intent_accuracy or 0.0,
               "train acceptance": m_fit.command_acceptance, "train intent": m_fit.intent_accuracy or 0.0,
               "test acceptance": m_test.command_acceptance, "test FAR": m_test.false_accept_rate or 0.0,
               "threshold": round(cal.threshold, 5), "test acceptance @thr": m_cal.command_acceptance,
               "test FAR @thr": m_cal.false_accept_rate or 0.0,
               "test commands right @thr": m_cal.commands_right or 0.0, "seconds": round(seconds)}
        rows.append(row)
        with (args.out / "results.jsonl").open("a") as f:
            f.write(json.dumps({**row, "spec": spec, "target": cal_target(preset)}) + "\n")
    print(format_table(rows, list(rows[0]), percent=["val acceptance", "val intent", "train acceptance",
                                                     "train intent", "test acceptance", "test FAR",
                                                     "test acceptance @thr", "test FAR @thr",
                                                     "test commands right @thr"]))
    print(f"@thr: the threshold set on validation for the {args.preset} preset's targets: {cal_target(preset)}")


if __name__ == "__main__":
    main()

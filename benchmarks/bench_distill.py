"""Teacher vs student, and the distillation ablation, on held-out synthetic voices and real speech.

    .venv/bin/python benchmarks/bench_distill.py --context examples/digits.yaml \
        --corpus work/digits-6k --real ../shared/data/fsdd-dev --out work/bench-digits

Trains the teacher (``--teacher whisper``: heads on the frozen Whisper encoder;
``--teacher scratch``: the from-scratch transformer baseline, distill/teachers/scratch.py),
then the same student (same steps, data and seeds) with hard labels only, with output KD,
and with output + feature KD (and, with ``--variants kd+phctc``, output KD + a phone CTC head);
evaluates each on the corpus's held-out test voices (clean, 15 dB, 6 dB SNR of
household/babble/colored noise) and, when --real is given, on real recordings (FSDD digits:
never trained on). Metric: command acceptance at threshold 0. The phone CTC student is also
decoded through the context's grammar (:mod:`distill.decoding`, the default preset's decoder
settings): its best sentence, rejected where its own heads reject (their arg-max is "not
understood"), no other threshold. Prints markdown tables and writes results.json. A benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assistant.context import Context, load_context
from assistant.decode import HeadLayout
from assistant.grammar import GrammarGraph, Lexicon, grammar_decision
from distill import decoding
from distill.build import PRESETS
from distill.data import ClipSet, load_corpus, load_fsdd, with_noise
from distill.distillation import StudentRecipe, evaluate_student, student_probs, train_student
from distill.evaluate import decide_all, format_table, score
from distill.nets.profile import count_parameters, macs_per_second, whisper_encoder_cost
from distill.nets.student import Student, StudentConfig
from distill.phones import make_lexicon
from distill.teach import TeacherConfig, train_teacher
from distill.teachers.base import Teacher
from distill.teachers.scratch import (
    ScratchNetConfig,
    ScratchTeacherConfig,
    scratch_macs_per_second,
    train_scratch_teacher,
)
from distill.train import TrainConfig

VARIANTS = {"hard": (1.0, 0.0, 0.0), "kd": (0.5, 1.0, 0.0), "kd+feat": (0.5, 1.0, 1.0), "kd+phctc": (0.5, 1.0, 0.0)}
"""(alpha, beta, gamma) per variant; ``kd+phctc`` also trains a phone CTC head (weight 5, as the default preset)
and is scored twice: by its heads, and decoded through the grammar (see ``grammar_row``)."""


def grammar_row(model: Student, ctx: Context, layout: HeadLayout, conditions: dict[str, ClipSet],
                 heads_row: dict[str, Any], procs: int) -> dict[str, Any]:
    """The phone CTC student decoded through the grammar: its best sentence, rejected where its heads reject."""
    settings = PRESETS["default"].decoder
    assert settings is not None and model.ctc_lexicon is not None
    graph = GrammarGraph.from_lexicon(ctx, Lexicon.from_dict(model.ctc_lexicon))
    row = {**heads_row, "variant": f"{heads_row['variant']} through the grammar"}
    seconds: list[float] = []
    for name, clips in conditions.items():
        probs = student_probs(model, clips)
        decoded = decoding.decode_all(graph, decoding.ctc_log_probs(model, clips), settings, procs=procs)
        seconds += [d[3] for d in decoded]
        cands = decoding.candidates(layout, probs, decoded, settings.heads_weight)
        heads = decide_all(layout, probs[0], probs[1:])
        decisions = [grammar_decision(c, 0.0, 0.0) if h.understood else h for c, h in zip(cands, heads, strict=True)]
        row[name] = score(clips.references, decisions, layout=layout).command_acceptance
    row["decode_ms_p50"] = float(np.median(seconds) * 1000) if seconds else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", required=True)
    ap.add_argument("--corpus", required=True, type=Path)
    ap.add_argument("--real", type=Path, help="FSDD-style folder of real recordings (evaluation only)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--teacher", default="whisper", choices=["whisper", "scratch"],
                    help="whisper: heads on the frozen Whisper encoder; scratch: a transformer trained from scratch")
    ap.add_argument("--scratch-size", type=int, nargs=3, default=[128, 4, 4], metavar=("D_MODEL", "LAYERS", "HEADS"),
                    help="width, layers and attention heads of the scratch teacher")
    ap.add_argument("--teacher-steps", type=int, default=1500)
    ap.add_argument("--teacher-copies", type=int, default=1)
    ap.add_argument("--student-steps", type=int, default=2000)
    ap.add_argument("--student-copies", type=int, default=2)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--f-max", type=float, default=4000.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stem", default="conv1d", choices=["conv1d", "conv2d"], help="student stem")
    ap.add_argument("--window", type=float, default=3.0, help="teacher encoder window in seconds")
    ap.add_argument("--max-seconds", type=float, default=4.0, help="crop student training clips to this")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    ctx = load_context(args.context)
    layout = HeadLayout.from_context(ctx)
    train = load_corpus(args.corpus, layout, splits=("train",))
    val = load_corpus(args.corpus, layout, splits=("val",))
    test = load_corpus(args.corpus, layout, splits=("test",))
    conditions: dict[str, ClipSet] = {"test clean": test, "test 15 dB": with_noise(test, 15), "test 6 dB": with_noise(test, 6)}
    if args.real:
        conditions["real (FSDD)"] = load_fsdd(args.real, layout)
    print(f"train {len(train)}, val {len(val)}, test {len(test)} clips; conditions: {', '.join(conditions)}")

    t0 = time.time()
    cache = Path("work/cache/whisper")
    teacher: Teacher
    if args.teacher == "scratch":
        d_model, layers, heads = args.scratch_size
        scfg = ScratchTeacherConfig(
            net=ScratchNetConfig(d_model=d_model, layers=layers, heads=heads), copies=args.teacher_copies,
            window_s=args.window, train=TrainConfig(steps=args.teacher_steps, batch_size=64, lr=1e-3, min_lr=1e-5,
                                                    warmup=150, eval_every=250))
        scratch, tmetrics = train_scratch_teacher(train, val, layout, scfg, args.out / "teacher", also=conditions,
                                                  progress=False)
        teacher, t_params, t_macs = scratch, count_parameters(scratch.net), scratch_macs_per_second(scratch.net,
                                                                                                   args.window)
        teacher_label = f"teacher (scratch transformer {d_model}x{layers})"
    else:
        tcfg = TeacherConfig(copies=args.teacher_copies, window_s=args.window,
                             train=TrainConfig(steps=args.teacher_steps, batch_size=64, lr=2e-3, warmup=100,
                                               eval_every=250))
        whisper, tmetrics, _ = train_teacher(train, val, layout, tcfg, args.out / "teacher", cache_dir=cache,
                                          also=conditions, progress=False)
        enc_params, t_macs = whisper_encoder_cost(whisper.head.cfg.d_in, tcfg.window_s)
        teacher, t_params = whisper, enc_params + count_parameters(whisper.head)
        teacher_label = "teacher (Whisper base enc. + heads)"
    teacher_s = time.time() - t0
    results: dict[str, Any] = {
        "teacher": {"kind": args.teacher, "params": t_params, "macs_per_s": t_macs, "train_seconds": round(teacher_s),
                    **{k: m.command_acceptance for k, m in tmetrics.items()}},
        "students": {},
    }
    print(json.dumps({"teacher": results["teacher"]}))

    for variant in args.variants:
        alpha, beta, gamma = VARIANTS[variant]
        for seed in args.seeds:
            phones = variant == "kd+phctc"
            recipe = StudentRecipe(
                student=StudentConfig(channels=args.channels, stem=args.stem,
                                      frontend=replace(StudentConfig().frontend, f_max=args.f_max)),
                train=TrainConfig(steps=args.student_steps, batch_size=64, lr=3e-3, warmup=150, eval_every=500,
                                  seed=seed, alpha=alpha, beta=beta, gamma=gamma, temperature=2.0,
                                  ctc=5.0 if phones else 0.0, ctc_units="phones"),
                copies=args.student_copies,
                max_seconds=args.max_seconds,
            )
            lexicon = make_lexicon([*ctx.vocabulary(), *(r.text for r in train.references if r.text)]) if phones else None
            t0 = time.time()
            model, _ = train_student(train, val, layout, recipe, args.out / f"student-{variant}-s{seed}",
                                     teacher=teacher, teacher_window_s=args.window, cache_dir=cache, progress=False,
                                     lexicon=lexicon)
            row: dict[str, Any] = {"variant": variant, "seed": seed, "params": count_parameters(model),
                                   "macs_per_s": macs_per_second(model), "train_seconds": round(time.time() - t0)}
            for name, clips in conditions.items():
                row[name] = evaluate_student(model, layout, clips).command_acceptance
            results["students"][f"{variant}/s{seed}"] = row
            print(json.dumps(row))
            if phones:
                results["students"][f"{variant} through the grammar/s{seed}"] = grammar_row(
                    model, ctx, layout, conditions, row, args.threads)
                print(json.dumps(results["students"][f"{variant} through the grammar/s{seed}"]))
            (args.out / "results.json").write_text(json.dumps(results, indent=2))

    cond = list(conditions)
    teacher_row = {"model": teacher_label, "params": results["teacher"]["params"],
                   "MMACs/s": results["teacher"]["macs_per_s"] / 1e6,
                   **{c: results["teacher"][c] for c in cond if c in results["teacher"]}}
    rows = [teacher_row]
    for key, r in results["students"].items():
        rows.append({"model": f"student {key}", "params": r["params"], "MMACs/s": r["macs_per_s"] / 1e6,
                     **{c: r[c] for c in cond}})
    print(f"\n## Teacher vs student ({args.context}, {args.corpus}), {time.strftime('%Y-%m-%d')}, "
          f"{platform.machine()} {torch.get_num_threads()} threads, {time.time() - started:.0f} s\n")
    print(format_table(rows, ["model", "params", "MMACs/s", *cond], percent=cond))
    if len(args.seeds) > 1:
        print("\n## Mean over seeds\n")
        mean_rows = []
        for variant in args.variants:
            rs = [r for r in results["students"].values() if r["variant"] == variant]
            mean_rows.append({"variant": variant, "seeds": len(rs),
                              **{c: float(np.mean([r[c] for r in rs])) for c in cond},
                              **{f"{c} sd": float(np.std([r[c] for r in rs])) for c in cond[-1:]}})
        print(format_table(mean_rows, ["variant", "seeds", *cond, f"{cond[-1]} sd"], percent=[*cond, f"{cond[-1]} sd"]))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

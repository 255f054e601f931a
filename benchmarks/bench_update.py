"""An update (`hubvoice-distill build NEW.yaml --update-from OLD_BUILD`) against the build it started from.

Both bundles run as the hub runs them (ONNX Runtime through `assistant.recognizer.Recognizer`, each with
its own thresholds and grammar decoder), on

- **carried test**: the earlier build's test split (held-out voices), the same clips for both bundles
  (those the new context still says with the same meaning: all of them when only something was added);
- **new test**: the update's own test clips, sentences of the new context the earlier one cannot say
  (e.g. every command naming the added lamp). The earlier bundle cannot be right on these commands.

clean and with noise at each ``--snr`` (`distill.data.with_noise`, the builds' own conditions), and prints
the stage times of both builds (their build.json). Commands right counts the commands alone; wrong actions
are commands carried out with a wrong intent or slot; other false accepts are out-of-domain speech, noise
and silence accepted; near misses are sentences of the context's words that are not commands.

    .venv/bin/python benchmarks/bench_update.py --old-bundle models/smart_home \\
        --old-build work/build-smart_home-default-s0 --new-bundle work/s17/out/smart_home_lamp \\
        --update-build work/update-smart_home_lamp-default-s0-<sha8> \
        [--scratch-bundle work/s17/out/smart_home_lamp_scratch --scratch-build work/build-...]

``--scratch-bundle``: a from-scratch build of the new context, scored on the same clips beside the update.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from assistant.bundle import load_bundle
from assistant.context import load_context
from assistant.decode import Decision
from assistant.recognizer import Recognizer
from distill.build import OTHER_NEGATIVES
from distill.data import ClipSet, load_corpus, with_noise
from distill.evaluate import format_table, score, wrong_action_rate
from distill.negatives import CommandChecker
from distill.update import UPDATE_FILE, keeper


def decide(recognizer: Recognizer, clips: ClipSet) -> list[Decision]:
    out = []
    for audio in clips.audio:
        r = recognizer.recognize(audio)
        out.append(Decision(r.understood, r.intent, dict(r.slots), r.confidence))
    return out


def row(model: str, test: str, condition: str, clips: ClipSet, decisions: list[Decision], layout: Any) -> dict[str, Any]:
    refs = clips.references
    other = [d.understood for r, d in zip(refs, decisions, strict=True) if r.kind in OTHER_NEGATIVES]
    near = [d.understood for r, d in zip(refs, decisions, strict=True) if r.kind == "near_miss"]
    m = score(refs, decisions, layout=layout)
    return {"model": model, "test": test, "condition": condition, "clips": len(clips),
            "commands": sum(r.intent is not None for r in refs), "commands right": m.commands_right,
            "acceptance": m.command_acceptance, "wrong actions": wrong_action_rate(refs, decisions) or 0.0,
            "other false accepts": float(np.mean(other)) if other else None,
            "near misses accepted": float(np.mean(near)) if near else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old-bundle", type=Path, required=True)
    ap.add_argument("--old-build", type=Path, required=True, help="the earlier build's work folder")
    ap.add_argument("--new-bundle", type=Path, required=True)
    ap.add_argument("--update-build", type=Path, required=True, help="the update's work folder")
    ap.add_argument("--scratch-build", type=Path, default=None, help="--scratch-bundle's work folder (its times)")
    ap.add_argument("--scratch-bundle", type=Path, default=None,
                    help="a from-scratch build of the new context, scored beside the update on the same clips")
    ap.add_argument("--snr", type=float, nargs="*", default=[15.0, 6.0])
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()

    old, new = load_bundle(args.old_bundle), load_bundle(args.new_bundle)
    old_ctx, new_ctx = load_context(args.old_bundle / "context.yaml"), load_context(args.new_bundle / "context.yaml")
    says_new, says_old = CommandChecker(new_ctx), CommandChecker(old_ctx)
    carried_new = load_corpus(args.old_build / "corpus", new.layout, splits=("test",),
                              where=keeper(new.layout, says_new))
    ids = set(carried_new.keys)
    carried_old = load_corpus(args.old_build / "corpus", old.layout, splits=("test",), where=lambda u: u.id in ids)
    deltas = json.loads((args.update_build / UPDATE_FILE).read_text())["delta"]
    fresh = [load_corpus(args.update_build / d, new.layout, splits=("test",),
                         where=keeper(new.layout, says_new, says_old)) for d in deltas]
    new_test = fresh[0]
    for more in fresh[1:]:
        new_test = new_test.join(more)

    conditions = [("clean", None), *((f"{snr:g} dB", snr) for snr in args.snr)]
    rows = []
    runs = [("earlier", old, {"carried test": carried_old}),
            ("update", new, {"carried test": carried_new, "new test": new_test})]
    if args.scratch_bundle is not None:
        scratch = load_bundle(args.scratch_bundle)
        if scratch.layout != new.layout:
            raise SystemExit(f"{args.scratch_bundle}: not a build of {args.new_bundle}'s context (other labels)")
        runs.append(("from scratch", scratch, {"carried test": carried_new, "new test": new_test}))
    for name, bundle, sets in runs:
        recognizer = Recognizer(bundle)
        for test, clips in sets.items():
            for condition, snr in conditions:
                noisy = clips if snr is None else with_noise(clips, snr)
                rows.append(row(name, test, condition, noisy, decide(recognizer, noisy), bundle.layout))
    percent = ["commands right", "acceptance", "wrong actions", "other false accepts", "near misses accepted"]
    print(format_table(rows, ["model", "test", "condition", "clips", "commands", *percent], percent=percent))

    times = []
    builds = [("earlier", args.old_build), ("update", args.update_build)]
    if args.scratch_build is not None:
        builds.append(("from scratch", args.scratch_build))
    for name, folder in builds:
        report = json.loads((folder / "build.json").read_text())
        times.append({"build": name, "from scratch": report.get("from_scratch"),
                      **{stage: report["stages_s"].get(stage) for stage in
                         ("synth", "teacher", "student", "calibrate", "evaluate", "export", "total")}})
    print()
    print(format_table(times, ["build", "from scratch", "synth", "teacher", "student", "calibrate", "evaluate",
                               "export", "total"], percent=[]))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "times": times}, indent=2))


if __name__ == "__main__":
    main()

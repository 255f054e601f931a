"""Command accuracy as a hub hears it: each corpus clip framed by the hub's endpointer, not as synthesized.

    .venv/bin/python benchmarks/bench_endpointed.py --bundle models/smart_home \\
        --corpus work/build-smart_home-default-s0/corpus --split val --pre-roll 0 100 300 --post-roll 0 100

``build`` scores the student on the corpus clips as the TTS engines made them: speech from about the first
sample to the last. A hub hears a stream, and :class:`assistant.endpoint.Endpointer` cuts each utterance out of
it with ``pre_roll_ms`` of audio before the first voiced frame and ``post_roll_ms`` after the last (defaults 300
and 100). Here every clip is put between ``--gap`` seconds of quiet noise (``--noise-dbfs``) on each side,
run through an Endpointer with the hub's default settings but for the given pre- and post-roll, and the
utterance it cuts is decided by the bundle's :class:`assistant.recognizer.Recognizer` at the bundle's
thresholds. A clip the endpointer cuts into no utterance or into several counts as rejected (a command)
or rejected-right (a negative), and is counted. The row ``as synthesized`` decides the clips themselves.

Reported per framing: commands right, wrong actions, other false accepts (out of domain, noise, silence),
near misses accepted, and clips not cut into exactly one utterance. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from assistant.bundle import load_bundle
from assistant.config import EndpointConfig
from assistant.decode import Decision
from assistant.endpoint import Endpointer
from assistant.recognizer import Recognizer
from distill.assess import decide_clips
from distill.build import OTHER_NEGATIVES
from distill.data import load_corpus
from distill.evaluate import format_table, score, wrong_action_rate


def framed(clip: np.ndarray, config: EndpointConfig, gap_s: float, noise_dbfs: float,
           rng: np.random.Generator) -> list[np.ndarray]:
    """The utterances the endpointer cuts from ``clip`` between two gaps of quiet noise."""
    gap = int(gap_s * 16000)
    level = 10 ** (noise_dbfs / 20)
    stream = np.concatenate([rng.standard_normal(gap) * level, clip, rng.standard_normal(gap) * level])
    endpointer = Endpointer(config)
    cut = [u.audio for u in endpointer.process(stream.astype(np.float32))]
    last = endpointer.flush()
    return cut + ([last.audio] if last is not None else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--pre-roll", type=int, nargs="+", default=[300], metavar="MS")
    ap.add_argument("--post-roll", type=int, nargs="+", default=[100], metavar="MS")
    ap.add_argument("--gap", type=float, default=1.0, help="seconds of quiet noise on each side of a clip")
    ap.add_argument("--noise-dbfs", type=float, default=-70.0)
    args = ap.parse_args()
    bundle = load_bundle(args.bundle)
    recognizer = Recognizer(bundle)
    clips = load_corpus(args.corpus, bundle.layout, splits=(args.split,))
    refs = clips.references

    def row(name: str, decisions: list[Decision], uncut: int) -> dict[str, Any]:
        other = [d.understood for r, d in zip(refs, decisions, strict=True) if r.kind in OTHER_NEGATIVES]
        near = [d.understood for r, d in zip(refs, decisions, strict=True) if r.kind == "near_miss"]
        return {"framing": name, "commands right": score(refs, decisions, layout=bundle.layout).commands_right,
                "wrong actions": wrong_action_rate(refs, decisions) or 0.0,
                "other false accepts": float(np.mean(other)) if other else 0.0,
                "near misses accepted": float(np.mean(near)) if near else 0.0,
                "not one utterance": uncut}

    def decide(audio: np.ndarray) -> Decision:
        r = recognizer.recognize(audio)
        return Decision(r.understood, r.intent, dict(r.slots), r.confidence)

    rows = [row("as synthesized", decide_clips(recognizer, clips)[0], 0)]
    for pre in args.pre_roll:
        for post in args.post_roll:
            config = replace(EndpointConfig(), pre_roll_ms=pre, post_roll_ms=post)
            rng = np.random.default_rng(0)
            decisions, uncut = [], 0
            for audio in clips.audio:
                cut = framed(np.asarray(audio, np.float32), config, args.gap, args.noise_dbfs, rng)
                if len(cut) != 1:
                    uncut += 1
                    decisions.append(Decision(False, None, {}, 0.0))
                else:
                    decisions.append(decide(cut[0]))
            rows.append(row(f"endpointer, pre-roll {pre} ms, post-roll {post} ms", decisions, uncut))
    print(f"{args.bundle} on {args.corpus} {args.split} ({len(clips)} clips; thresholds {recognizer.threshold:.4f} / "
          f"gate {recognizer.gate:.4f}; quiet noise {args.noise_dbfs:g} dBFS, {args.gap:g} s each side)\n")
    print(format_table(rows, list(rows[0]), percent=["commands right", "wrong actions", "other false accepts",
                                                      "near misses accepted"]))


if __name__ == "__main__":
    main()

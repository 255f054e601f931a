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

``--pad B:A`` also decides each clip with B seconds of quiet noise before it and A after it, as a recorded
file is (``hubvoice infer``), ``--snr`` the clips as synthesized with noise at those SNRs, and ``--trim`` compares
the recognizer's trim settings (:class:`assistant.audio.Trim`: 'default', 'none', or 'BEFORE:AFTER' seconds):

    .venv/bin/python benchmarks/bench_endpointed.py --bundle models/smart_home \\
        --corpus work/build-smart_home-default-s0/corpus --split test --snr 15 6 --pad 0:0.6 0.5:0.5 1:1 \\
        --trim none default

Reported per trim setting and framing: commands right, wrong actions, other false accepts (out of domain, noise, silence),
near misses accepted, and clips not cut into exactly one utterance. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from assistant.audio import DEFAULT_TRIM, Trim
from assistant.bundle import load_bundle
from assistant.config import EndpointConfig
from assistant.decode import Decision
from assistant.endpoint import Endpointer
from assistant.recognizer import Recognizer
from distill.build import OTHER_NEGATIVES
from distill.data import load_corpus, with_noise
from distill.evaluate import format_table, score, wrong_action_rate


def framed(clip: np.ndarray, config: EndpointConfig, gap_s: float, noise_dbfs: float,
           rng: np.random.Generator) -> list[np.ndarray]:
    """The utterances the endpointer cuts from ``clip`` between two gaps of quiet noise."""
    endpointer = Endpointer(config)
    cut = [u.audio for u in endpointer.process(padded(clip, gap_s, gap_s, noise_dbfs, rng))]
    last = endpointer.flush()
    return cut + ([last.audio] if last is not None else [])


def padded(clip: np.ndarray, before_s: float, after_s: float, noise_dbfs: float,
           rng: np.random.Generator) -> np.ndarray:
    """``clip`` with ``before_s`` and ``after_s`` seconds of quiet noise around it (a recorded file)."""
    level = 10 ** (noise_dbfs / 20)
    before, after = (rng.standard_normal(int(s * 16000)) * level for s in (before_s, after_s))
    return np.concatenate([before, clip, after]).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--pre-roll", type=int, nargs="*", default=[300], metavar="MS")
    ap.add_argument("--post-roll", type=int, nargs="*", default=[100], metavar="MS")
    ap.add_argument("--pad", nargs="*", default=[], metavar="BEFORE:AFTER",
                    help="also decide each clip with this many seconds of quiet noise before and after it, "
                         "as a recorded file is (no endpointer)")
    ap.add_argument("--snr", type=float, nargs="*", default=[], metavar="DB",
                    help="also decide the clips as synthesized with noise at these SNRs (no framing)")
    ap.add_argument("--trim", nargs="+", default=["default"], metavar="BEFORE:AFTER|default|none",
                    help="the recognizer's trim settings to compare (assistant.audio.Trim; 'none': decide clips "
                         "whole)")
    ap.add_argument("--gap", type=float, default=1.0, help="seconds of quiet noise on each side of a clip")
    ap.add_argument("--noise-dbfs", type=float, default=-70.0)
    args = ap.parse_args()
    bundle = load_bundle(args.bundle)
    clips = load_corpus(args.corpus, bundle.layout, splits=(args.split,))
    refs = clips.references

    def row(trim: str, name: str, decisions: list[Decision], uncut: int) -> dict[str, Any]:
        other = [d.understood for r, d in zip(refs, decisions, strict=True) if r.kind in OTHER_NEGATIVES]
        near = [d.understood for r, d in zip(refs, decisions, strict=True) if r.kind == "near_miss"]
        return {"trim": trim, "framing": name,
                "commands right": score(refs, decisions, layout=bundle.layout).commands_right,
                "wrong actions": wrong_action_rate(refs, decisions) or 0.0,
                "other false accepts": float(np.mean(other)) if other else 0.0,
                "near misses accepted": float(np.mean(near)) if near else 0.0,
                "not one utterance": uncut}

    def trim_setting(text: str) -> Trim | None:
        if text in ("none", "default"):
            return None if text == "none" else DEFAULT_TRIM
        before, _, after = text.partition(":")
        return Trim(float(before), float(after))

    def framings() -> Iterator[tuple[str, list[list[np.ndarray]]]]:
        yield "as synthesized", [[np.asarray(a, np.float32)] for a in clips.audio]
        for snr in args.snr:
            yield f"as synthesized, {snr:g} dB", [[np.asarray(a, np.float32)] for a in with_noise(clips, snr).audio]
        for pad in args.pad:
            before, _, after = pad.partition(":")
            rng = np.random.default_rng(0)
            yield (f"padded {before} s + {after} s",
                   [[padded(np.asarray(a, np.float32), float(before), float(after), args.noise_dbfs, rng)]
                    for a in clips.audio])
        for pre in args.pre_roll:
            for post in args.post_roll:
                config = replace(EndpointConfig(), pre_roll_ms=pre, post_roll_ms=post)
                rng = np.random.default_rng(0)
                yield (f"endpointer, pre-roll {pre} ms, post-roll {post} ms",
                       [framed(np.asarray(a, np.float32), config, args.gap, args.noise_dbfs, rng) for a in clips.audio])

    recognizers = {text: Recognizer(bundle, trim=trim_setting(text)) for text in args.trim}
    rows = []
    for name, cuts in framings():
        for text, recognizer in recognizers.items():
            decisions = []
            for cut in cuts:
                r = recognizer.recognize(cut[0]) if len(cut) == 1 else None
                decisions.append(Decision(r.understood, r.intent, dict(r.slots), r.confidence) if r is not None
                                 else Decision(False, None, {}, 0.0))
            rows.append(row(text, name, decisions, sum(len(c) != 1 for c in cuts)))
    recognizer = next(iter(recognizers.values()))
    print(f"{args.bundle} on {args.corpus} {args.split} ({len(clips)} clips; thresholds {recognizer.threshold:.4f} / "
          f"gate {recognizer.gate:.4f}; quiet noise {args.noise_dbfs:g} dBFS, {args.gap:g} s each side)\n")
    print(format_table(rows, list(rows[0]), percent=["commands right", "wrong actions", "other false accepts",
                                                      "near misses accepted"]))


if __name__ == "__main__":
    main()

"""`hubvoice-distill eval`: measure a shipped bundle exactly as the hub runs it (ONNX Runtime).

The bundle's ``model.onnx`` (int8 by default) decides every clip of a corpus split —
clean and with noise at fixed SNRs — and, optionally, real recordings (FSDD layout);
the result is a markdown table, ``metrics.json`` per condition and a confusion matrix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assistant.bundle import load_bundle
from assistant.decode import Decision
from assistant.errors import ConfigError
from assistant.recognizer import Recognizer
from distill.data import ClipSet, load_corpus, load_fsdd, with_noise
from distill.evaluate import format_table, score, write_report

_LOGGER = logging.getLogger(__name__)


def decide_clips(recognizer: Recognizer, clips: ClipSet) -> tuple[list[Decision], float]:
    """The bundle's decision for every clip, and the mean model latency in ms."""
    decisions, latency = [], 0.0
    for audio, key in zip(clips.audio, clips.keys, strict=True):
        r = recognizer.recognize(audio, key)
        decisions.append(Decision(r.understood, r.intent, dict(r.slots), r.confidence))
        latency += r.latency_ms
    return decisions, latency / max(1, len(clips))


def assess_bundle(bundle_dir: str | Path, corpus: str | Path | None, out_dir: str | Path, *,
                  splits: Sequence[str] = ("test",), snrs: Sequence[float] = (15.0, 6.0),
                  real: str | Path | None = None, threads: int = 1, fp32: bool = False) -> dict[str, Any]:
    """Evaluate a bundle on the conditions; writes ``out_dir/<condition>/metrics.json`` + confusion.png."""
    bundle = load_bundle(bundle_dir)
    layout = bundle.manifest.layout
    recognizer = Recognizer(bundle, threads=threads, reference=fp32)
    conditions: dict[str, ClipSet] = {}
    if corpus is not None:
        clean = load_corpus(corpus, layout, splits=tuple(splits))
        conditions[f"{'+'.join(splits)} clean"] = clean
        for snr in snrs:
            conditions[f"{'+'.join(splits)} {snr:g} dB"] = with_noise(clean, snr)
    if real is not None:
        conditions["real"] = load_fsdd(real, layout)
    if not conditions:
        raise ConfigError("nothing to evaluate: give --corpus, --real, or both")
    out = Path(out_dir)
    rows, results = [], {}
    for name, clips in conditions.items():
        decisions, latency = decide_clips(recognizer, clips)
        m = score(clips.references, decisions, layout=layout)
        write_report(m, out / name.replace(" ", "_").replace("+", "-"))
        results[name] = {**m.to_dict(), "mean_latency_ms": latency}
        rows.append({"condition": name, "clips": m.n, "command acceptance": m.command_acceptance,
                     "intent accuracy": m.intent_accuracy, "false accept rate": m.false_accept_rate,
                     "false reject rate": m.false_reject_rate, "ms/clip": latency})
    table = format_table(rows, ["condition", "clips", "command acceptance", "intent accuracy", "false accept rate",
                                "false reject rate", "ms/clip"])
    (out / "summary.json").write_text(json.dumps({"bundle": str(bundle_dir), "model": "fp32" if fp32 else "model.onnx",
                                                  "conditions": results}, indent=2, default=str))
    (out / "summary.md").write_text(table + "\n")
    return {"table": table, "conditions": results}

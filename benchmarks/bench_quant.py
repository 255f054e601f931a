"""int8 calibration variants of a built student, each scored through ONNX Runtime like the hub decides.

    .venv/bin/python benchmarks/bench_quant.py --bundle models/smart_home \
        --build work/build-smart_home-default-s0 --out work/bench-quant --calibration 64 256

Exports the build's student (``student/last.pt``) to fp32 ONNX, quantizes it with
``distill.export.quantize_model`` (static QDQ, per-channel int8 weights, uint8 activations,
frontend in float) calibrated on N training clips drawn as the build draws them (seed 0),
and decides every test clip alone, clean and at 6 dB SNR, with the bundle's threshold.
Prints a markdown table (acceptance and the change against fp32). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from assistant.bundle import load_bundle
from assistant.recognizer import Recognizer, open_session
from distill.assess import decide_clips
from distill.data import load_corpus, with_noise
from distill.evaluate import format_table, score
from distill.export import export_model, load_student, quantize_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--calibration", type=int, nargs="+", default=[64, 256], help="numbers of calibration clips")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(args.bundle)
    layout = bundle.manifest.layout
    student, _ = load_student(args.build / "student" / "last.pt")
    fp32 = export_model(student, args.out / "fp32.onnx", layout)
    train = load_corpus(args.build / "corpus", layout, splits=("train",))
    test = load_corpus(args.build / "corpus", layout, splits=("test",))
    conditions = {"test clean": test, "test 6 dB": with_noise(test, 6)}
    recognizer = Recognizer(bundle, threads=1)

    def accept(path: Path) -> dict[str, float]:
        recognizer.session = open_session(path, 1)
        return {name: score(clips.references, decide_clips(recognizer, clips)[0], layout=layout).command_acceptance
                for name, clips in conditions.items()}

    reference = accept(fp32)
    rows = [{"model": "fp32", "kB": fp32.stat().st_size / 1000, **reference, "Δ clean (points)": 0.0,
             "Δ 6 dB (points)": 0.0, "seconds": 0}]
    for n in args.calibration:
        picked = np.random.default_rng(0).choice(len(train), min(n, len(train)), False)
        started = time.time()
        path = quantize_model(fp32, args.out / f"int8-{n}.onnx", mode="static",
                              calibration_clips=[train.audio[i] for i in picked])
        got = accept(path)
        rows.append({"model": f"int8, {n} calibration clips", "kB": path.stat().st_size / 1000, **got,
                     "Δ clean (points)": 100 * (got["test clean"] - reference["test clean"]),
                     "Δ 6 dB (points)": 100 * (got["test 6 dB"] - reference["test 6 dB"]),
                     "seconds": round(time.time() - started)})
    print(format_table(rows, list(rows[0]), percent=list(conditions)))


if __name__ == "__main__":
    main()

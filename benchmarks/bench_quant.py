"""int8 variants of a built student, each scored through ONNX Runtime like the hub decides.

    .venv/bin/python benchmarks/bench_quant.py --bundle models/smart_home \
        --build work/build-smart_home-default-s0 --out work/bench-quant --modes static weights --calibration 256 \
        --bundle-model

Exports the build's student (``student/last.pt``) to fp32 ONNX and quantizes it with
``distill.export.quantize_model`` in each ``--modes``: ``static`` (QDQ, per-channel 7-bit int8 weights, uint8
activations, frontend in float; calibrated on N training clips drawn as the build draws them, seed 0, for each
``--calibration`` N), ``weights`` (int8 weights, float activations) and ``dynamic``. Each model decides every
test clip alone, clean and at 15 and 6 dB SNR, with the bundle's decoder and threshold. Prints a markdown table:
command acceptance, its change against fp32, and the share of clips decided exactly as fp32 decides them; and
whether this CPU has VNNI (static int8 on x86 differs with and without it). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from assistant.bundle import cpu_flags, load_bundle
from assistant.decode import Decision
from assistant.recognizer import Recognizer, open_session
from distill.assess import decide_clips
from distill.build import calibration_clips
from distill.data import load_corpus, with_noise
from distill.evaluate import format_table, score
from distill.export import QUANTIZE_MODES, export_model, load_student, quantize_model


def int8_extensions() -> str:
    """The int8 dot-product extensions this CPU has (from /proc/cpuinfo), or what it has instead."""
    flags = cpu_flags()
    if not flags:
        return "unknown"
    found = [f for f in ("avx512_vnni", "avx_vnni", "avx512bw", "avx2", "asimddp") if f in flags]
    return ", ".join(found) or "none of avx2 / avx512_vnni / avx_vnni / asimddp"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--modes", nargs="+", default=["static", "weights"],
                    choices=[m for m in QUANTIZE_MODES if m != "none"])
    ap.add_argument("--calibration", type=int, nargs="+", default=[256], help="numbers of calibration clips (static)")
    ap.add_argument("--snr", type=float, nargs="*", default=[15.0, 6.0], help="noisy test conditions (dB)")
    ap.add_argument("--bundle-model", action="store_true",
                    help="also score the bundle's own model.onnx (as it was quantized when the bundle was built)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(args.bundle)
    layout = bundle.manifest.layout
    student, _ = load_student(args.build / "student" / "last.pt")
    fp32 = export_model(student, args.out / "fp32.onnx", layout)
    train = load_corpus(args.build / "corpus", layout, splits=("train",))
    test = load_corpus(args.build / "corpus", layout, splits=("test",))
    conditions = {"test clean": test, **{f"test {snr:g} dB": with_noise(test, snr) for snr in args.snr}}
    recognizer = Recognizer(bundle, threads=1)

    def decide(path: Path) -> dict[str, list[Decision]]:
        recognizer.session = open_session(path, 1)
        return {name: decide_clips(recognizer, clips)[0] for name, clips in conditions.items()}

    def acceptance(decisions: dict[str, list[Decision]]) -> dict[str, float]:
        return {name: score(clips.references, decisions[name], layout=layout).command_acceptance
                for name, clips in conditions.items()}

    def row(model: str, path: Path, decisions: dict[str, list[Decision]], seconds: float) -> dict[str, object]:
        out: dict[str, object] = {"model": model, "kB": path.stat().st_size / 1000}
        for name, got in acceptance(decisions).items():
            out[name] = got
            out[f"Δ {name.removeprefix('test ')} (points)"] = 100 * (got - reference_acceptance[name])
        same = [(a.understood, a.intent, a.slots) == (b.understood, b.intent, b.slots)
                for name in conditions for a, b in zip(decisions[name], reference[name], strict=True)]
        out["same as fp32"] = float(np.mean(same))
        out["seconds"] = round(seconds)
        return out

    reference = decide(fp32)
    reference_acceptance = acceptance(reference)
    rows = [row("fp32", fp32, reference, 0)]
    for mode in args.modes:
        for n in (args.calibration if mode == "static" else [0]):
            started = time.time()
            calib = calibration_clips(train, n, seed=0) if mode == "static" else []
            path = quantize_model(fp32, args.out / f"{mode}{f'-{n}' if n else ''}.onnx", mode=mode,
                                  calibration_clips=calib)
            seconds = time.time() - started
            label = f"int8 {mode}" + (f", {n} calibration clips" if n else "")
            rows.append(row(label, path, decide(path), seconds))
    if args.bundle_model:
        rows.append(row(f"the bundle's model.onnx ({bundle.manifest.precision})", bundle.model_path,
                        decide(bundle.model_path), 0))
    print(format_table(rows, list(rows[0]), percent=[*conditions, "same as fp32"]))
    print(f"\nCPU int8 extensions: {int8_extensions()}; {len(test)} test clips per condition, the bundle's decision rule "
          f"({args.bundle}); seconds: quantization only")


if __name__ == "__main__":
    main()

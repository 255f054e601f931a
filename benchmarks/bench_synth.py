"""Synthesis throughput per TTS engine, and the statistics of a large corpus (a script, not a test).

    .venv/bin/python benchmarks/bench_synth.py --out work/bench-synth            # both parts
    .venv/bin/python benchmarks/bench_synth.py --out work/bench-synth --skip-corpus

Part 1 synthesizes ``--per-engine`` utterances of ``examples/smart_home.yaml`` with each
installed engine, once in one process and once on all cores, through the same
``synthesize_corpus`` the CLI uses (fresh folders, so nothing is cached), and prints
utterances per second and the real-time factor (synthesis seconds per audio second).
Part 2 builds a ``--utterances`` (default 20,000) corpus with the default settings and
prints how long it took and its statistics. Output is markdown.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.corpus import corpus_stats, format_stats, read_manifest  # noqa: E402
from distill.synth import SynthConfig, synthesize_corpus  # noqa: E402
from distill.tts import ENGINE_NAMES, load_engines  # noqa: E402


def _throughput(context: Path, out: Path, engine: str, utterances: int, workers: int) -> list[str]:
    folder = out / f"throughput-{engine}-{workers}w"
    shutil.rmtree(folder, ignore_errors=True)
    config = SynthConfig(utterances=utterances, negatives=0.0, engines=(engine,), seed=11)
    result = synthesize_corpus(context, folder, config, workers=workers, progress=False)
    audio_s = sum(u.duration_s for u in read_manifest(folder))
    made = result.planned - result.failed
    return [engine, str(workers), str(made), f"{result.seconds:.1f}", f"{made / result.seconds:.1f}",
            f"{result.seconds * workers / audio_s:.3f}" if audio_s else "-",
            f"{result.seconds / audio_s:.3f}" if audio_s else "-", str(result.failed)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=Path, default=ROOT / "examples" / "smart_home.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "work" / "bench-synth")
    parser.add_argument("--per-engine", type=int, default=48, help="utterances per engine and setting")
    parser.add_argument("--utterances", type=int, default=20000, help="size of the corpus of part 2")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-corpus", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"# Synthesis benchmark ({os.cpu_count()} CPUs, context {args.context.name})\n")

    if not args.skip_throughput:
        print("## Throughput per engine\n")
        print("RTF = CPU-seconds of synthesis per second of audio (wall x workers / audio); wall RTF = wall / audio.\n")
        rows = []
        logging.getLogger("distill.synth").setLevel(logging.ERROR)  # one engine leaves splits empty: expected
        for engine in load_engines(ENGINE_NAMES):
            for workers in sorted({1, args.workers}):
                n = args.per_engine * (1 if workers == 1 else max(1, min(workers, 4)))
                rows.append(_throughput(args.context, args.out, engine, n, workers))
        header = ["engine", "workers", "utterances", "wall s", "utt/s", "RTF", "wall RTF", "failed"]
        print("| " + " | ".join(header) + " |\n|" + "|".join(" --- " for _ in header) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print()

    logging.getLogger("distill.synth").setLevel(logging.WARNING)
    if not args.skip_corpus:
        folder = args.out / f"smart_home-{args.utterances}"
        print(f"## Corpus of {args.utterances} utterances ({folder})\n")
        start = time.monotonic()
        result = synthesize_corpus(args.context, folder, SynthConfig(utterances=args.utterances),
                                   workers=args.workers)
        wall = time.monotonic() - start
        print(f"{result.synthesized} synthesized, {result.cached} cached, {result.failed} failed "
              f"in {wall / 60:.1f} min with {args.workers} workers\n")
        print(format_stats(corpus_stats(read_manifest(folder))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

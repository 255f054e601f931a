"""``hubvoice-distill``: the offline pipeline's command line, thin over the library.

Subcommands: ``synth`` (context -> corpus), ``merge`` (join shard manifests),
``augment`` (corpus -> augmented corpus), ``voices`` (installed voices and their
split), ``corpus-stats`` (tables of a corpus), ``build``, ``eval``, ``bench`` (teacher vs
student, :mod:`distill.bench`). Every subcommand takes ``--debug``.
Errors the user can fix print ``error: <message>`` on stderr and exit with 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from assistant.errors import HubvoiceError

_LOGGER = logging.getLogger(__name__)


def _common() -> argparse.ArgumentParser:
    # SUPPRESS: a subcommand that is not given --debug keeps the value of the top-level --debug
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
    return common


def _names(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse ``type``: a comma list of some of ``allowed`` (order kept, repeats dropped)."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(allowed)}; got {text!r}"
                                             + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        return names

    return parse


def _far_kinds(text: str | None) -> list[str] | None:
    """``--far-kinds``: None (the preset's), every negative kind for "all", else the comma list as given
    (``build`` checks the names and says which kinds there are)."""
    if text is None:
        return None
    if text.strip() == "all":
        from distill.evaluate import NEGATIVE_KINDS

        return list(NEGATIVE_KINDS)
    return [k.strip() for k in text.split(",") if k.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from distill.bench import TEACHER_ENGINES
    from distill.tts import ENGINE_NAMES

    common = _common()
    parser = argparse.ArgumentParser(prog="hubvoice-distill",
                                     description="hubvoice offline pipeline: synthesize, augment, distill.")
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    synth = sub.add_parser("synth", parents=[common], help="synthesize a speech corpus for a context",
                           description="Synthesize a voice-disjoint speech corpus (manifest.jsonl, corpus.json, "
                                       "audio/) for a context; re-runs reuse existing audio.")
    synth.add_argument("context", type=Path, help="context YAML file")
    synth.add_argument("-o", "--out", type=Path, required=True, help="corpus folder to write")
    synth.add_argument("--utterances", type=int, default=1000, help="number of utterances (default: 1000)")
    synth.add_argument("--voices", nargs="+", default=[], metavar="SPEC",
                       help="glob patterns on voice ids, e.g. 'espeak-ng:en-us+*' 'flite:*' (default: all)")
    synth.add_argument("--engines", nargs="+", default=list(ENGINE_NAMES), choices=ENGINE_NAMES,
                       help="engines to use (default: all installed)")
    synth.add_argument("--negatives", type=float, default=0.12,
                       help="fraction of not-understood utterances (default: 0.12)")
    synth.add_argument("--seed", type=int, default=0, help="plan seed (default: 0)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--shard", default=None, metavar="I/N", help="synthesize only shard I of N (1-based)")
    synth.add_argument("--timeout", type=float, default=30.0, help="seconds per engine call (default: 30)")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(func=_synth)

    merge = sub.add_parser("merge", parents=[common], help="join the shard manifests of a corpus folder")
    merge.add_argument("corpus", type=Path, help="corpus folder holding manifest.shard-i-of-N.jsonl")
    merge.set_defaults(func=_merge)

    augment = sub.add_parser("augment", parents=[common], help="write an augmented copy of a corpus")
    augment.add_argument("corpus", type=Path, help="corpus folder to read")
    augment.add_argument("-o", "--out", type=Path, required=True, help="new corpus folder to write")
    augment.add_argument("--copies", type=int, default=1, help="augmented copies per clip (default: 1)")
    augment.add_argument("--snr", type=float, default=None, metavar="DB",
                         help="fixed SNR in dB with noise on every clip (test conditions)")
    augment.add_argument("--seed", type=int, default=0, help="augmentation seed (default: 0)")
    augment.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    augment.set_defaults(func=_augment)

    voices = sub.add_parser("voices", parents=[common], help="list the installed voices and their split")
    voices.add_argument("--engines", nargs="+", default=list(ENGINE_NAMES), choices=ENGINE_NAMES,
                        help="engines to list (default: all)")
    voices.add_argument("--voices", nargs="+", default=[], metavar="SPEC", help="glob patterns on voice ids")
    voices.set_defaults(func=_voices)

    stats = sub.add_parser("corpus-stats", parents=[common], help="print statistics of a corpus")
    stats.add_argument("corpus", type=Path, help="corpus folder (or manifest file)")
    stats.add_argument("--per-voice", action="store_true", help="also print one row per voice")
    stats.set_defaults(func=_corpus_stats)

    build = sub.add_parser("build", parents=[common], help="the whole pipeline: context -> verified bundle",
                           description="Synthesize, train the teacher, distill the student, calibrate, evaluate and "
                                       "export a bundle; resumable (work under --work).")
    build.add_argument("context", help="context YAML file")
    build.add_argument("-o", "--out", required=True, type=Path, help="bundle folder to write (models/<name>)")
    build.add_argument("--preset", default="default", choices=["tiny", "default", "large"],
                       help="size/time preset (default: default)")
    build.add_argument("--utterances", type=int, default=None,
                       help="override the preset's corpus size (with --update-from: the size of the update's own corpus)")
    build.add_argument("--seed", type=int, default=0, help="seed of the corpus plan and training (default: 0)")
    build.add_argument("--work", type=Path, default=Path("work"), help="work folder (default: work)")
    build.add_argument("--real", type=Path, default=None, help="FSDD-style folder to evaluate on (never trained on)")
    build.add_argument("--whisper", default=None, help="CTranslate2 Whisper model directory for the teacher")
    build.add_argument("--target-wrong-actions", type=float, default=None, metavar="RATE",
                       help="also calibrate the threshold for at most RATE (0-1) of the validation commands "
                            "accepted with a wrong intent or slot (default: the preset's, 0.05)")
    build.add_argument("--far-kinds", default=None, metavar="KIND[,KIND...]",
                       help="the negative kinds the false-accept target counts, or 'all' (default: the preset's, "
                            "out_of_domain,noise,silence: the near misses, sentences of the context's own words "
                            "that are not commands, are bounded through the wrong-action target instead)")
    build.add_argument("--calibration-negatives", type=int, default=0, metavar="N",
                       help="synthesize about N more negatives on held-out voices for val (the threshold) and "
                            "test (default: 0; a build has ~135 validation negatives, 2000 adds ~600)")
    build.add_argument("--update-from", type=Path, default=None, metavar="BUILD_DIR",
                       help="the work folder of an earlier build of this context before it changed (e.g. "
                            "work/build-smart_home-default-s0): synthesize and train only for what changed "
                            "(new values, expressions, intents), starting from that build's corpus, teacher "
                            "and student; same preset")
    build.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    build.set_defaults(func=_build)

    ev = sub.add_parser("eval", parents=[common], help="measure a bundle as the hub runs it (ONNX Runtime)",
                        description="Command acceptance, intent accuracy, false accepts/rejects per condition; "
                                    "prints a table and writes summary.json, metrics.json and confusion.png.")
    ev.add_argument("bundle", type=Path, help="bundle folder (models/<name>)")
    ev.add_argument("--corpus", type=Path, default=None, help="corpus folder to evaluate on")
    ev.add_argument("--splits", nargs="+", default=["test"], help="corpus splits (default: test)")
    ev.add_argument("--snr", nargs="*", type=float, default=[15.0, 6.0], help="noise conditions in dB (default: 15 6)")
    ev.add_argument("--real", type=Path, default=None, help="FSDD-style folder of real recordings")
    ev.add_argument("--fp32", action="store_true", help="evaluate the float reference model instead of model.onnx")
    ev.add_argument("-o", "--out", type=Path, required=True, help="report folder")
    ev.set_defaults(func=_eval)

    be = sub.add_parser("bench", parents=[common], help="teacher vs student fp32 vs int8: size, cost, latency, memory",
                        description="Parameters, bytes, MACs/s, one-thread latency (p50/p95), RTF, peak RSS and "
                                    "command acceptance per model, each timed in its own process; prints a table.")
    be.add_argument("bundle", type=Path, help="bundle folder (models/<name>)")
    be.add_argument("--build", type=Path, default=None,
                    help="the bundle's build folder (work/build-<name>-<preset>-s<seed>): teacher, student, corpus")
    be.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint or folder (default: BUILD/teacher)")
    be.add_argument("--whisper", type=Path, default=None, help="CTranslate2 Whisper model directory for the teacher")
    be.add_argument("--corpus", type=Path, default=None, help="corpus for acceptance (default: BUILD/corpus)")
    be.add_argument("--split", default="test", help="corpus split (default: test)")
    be.add_argument("--runs", type=int, default=200, help="timed runs per model (default: 200)")
    be.add_argument("--warmup", type=int, default=20, help="untimed runs first (default: 20)")
    be.add_argument("--seconds", type=float, default=3.0, help="utterance length in seconds (default: 3)")
    be.add_argument("--teacher-engines", type=_names(TEACHER_ENGINES), default=TEACHER_ENGINES, metavar="LIST",
                    help=f"teacher rows to measure, a comma list of {','.join(TEACHER_ENGINES)} "
                         f"(default: {','.join(TEACHER_ENGINES)})")
    be.add_argument("-o", "--out", type=Path, default=None, help="JSON file to write")
    be.set_defaults(func=_bench)
    return parser


def _bench(args: argparse.Namespace) -> int:
    import json

    from distill.bench import bench

    report = bench(args.bundle, build=args.build, teacher=args.teacher, whisper_dir=args.whisper, corpus=args.corpus,
                   split=args.split, runs=args.runs, warmup=args.warmup, seconds=args.seconds,
                   teacher_engines=args.teacher_engines)
    print(report["table"])
    for note in report["notes"]:
        print(f"- {note}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from distill.assess import assess_bundle

    report = assess_bundle(args.bundle, args.corpus, args.out, splits=args.splits, snrs=args.snr, real=args.real,
                           fp32=args.fp32)
    print(report["table"])
    return 0


def _build(args: argparse.Namespace) -> int:
    from distill.build import build

    bundle = build(args.context, args.out, preset=args.preset, work=args.work, seed=args.seed, real=args.real,
                   whisper_dir=args.whisper, utterances=args.utterances, overwrite=args.overwrite,
                   progress=not args.no_progress, target_wrong=args.target_wrong_actions,
                   calibration_negatives=args.calibration_negatives,
                   far_kinds=_far_kinds(args.far_kinds), update_from=args.update_from)
    print(f"{bundle}: bundle written")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from distill.synth import SynthConfig, parse_shard, synthesize_corpus

    config = SynthConfig(utterances=args.utterances, negatives=args.negatives, seed=args.seed,
                         engines=tuple(dict.fromkeys(args.engines)), voices=tuple(args.voices),
                         timeout_s=args.timeout)
    shard = parse_shard(args.shard) if args.shard else None
    result = synthesize_corpus(args.context, args.out, config, workers=args.workers, shard=shard,
                               progress=not args.no_progress)
    print(f"{result.manifest}: {result.planned - result.failed} utterances "
          f"({result.synthesized} synthesized, {result.cached} cached, {result.failed} failed) "
          f"in {result.seconds:.1f} s")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from distill.corpus import read_manifest
    from distill.synth import merge_shards

    manifest = merge_shards(args.corpus)
    print(f"{manifest}: {len(read_manifest(manifest))} utterances")
    return 0


def _augment(args: argparse.Namespace) -> int:
    from distill.augment import augment_corpus

    out = augment_corpus(args.corpus, args.out, None, copies=args.copies, seed=args.seed, snr_db=args.snr,
                         workers=args.workers)
    print(f"{out}: augmented corpus written")
    return 0


def _voices(args: argparse.Namespace) -> int:
    from distill.synth import assign_splits
    from distill.tts import installed_voices, list_voices, load_engines

    voices = list_voices(load_engines(args.engines), args.voices)
    splits = assign_splits(installed_voices())
    print("| voice | engine | speaker | split |\n| --- | --- | --- | --- |")
    for v in voices:
        print(f"| {v.id} | {v.engine} | {v.speaker_id} | {splits[v.id]} |")
    counts = {s: sum(1 for v in voices if splits[v.id] == s) for s in ("train", "val", "test")}
    print(f"\n{len(voices)} voices: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


def _corpus_stats(args: argparse.Namespace) -> int:
    from distill.corpus import corpus_stats, format_stats, read_manifest

    utterances = read_manifest(args.corpus)
    stats = corpus_stats(utterances)
    print(format_stats(stats, per_voice=args.per_voice), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hubvoice-distill``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except HubvoiceError as exc:
        if args.debug:
            _LOGGER.exception("failed")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

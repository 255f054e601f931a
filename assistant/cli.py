"""`hubvoice`: the hub's command line. Thin over the library; `--debug` everywhere."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from assistant import __version__
from assistant.errors import HubvoiceError

_LOGGER = logging.getLogger(__name__)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="log debug messages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubvoice", description="Offline speech-to-intent for smart-home hubs.")
    parser.add_argument("--version", action="version", version=f"hubvoice {__version__}")
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    ctx = sub.add_parser("context", help="work with context files (Rhino YAML, Home Assistant templates)")
    _add_common(ctx)
    ctx_sub = ctx.add_subparsers(dest="context_command", required=True)
    check = ctx_sub.add_parser("check", help="validate a context and count the sentences it allows")
    _add_common(check)
    check.add_argument("context", help="context YAML (Rhino format), or HA templates with --hassil")
    check.add_argument("--hassil", action="store_true", help="read Home Assistant (hassil) intent templates")
    check.add_argument("--intents", default=None, metavar="A,B,...",
                       help="with --hassil: only these intents (comma-separated)")
    check.add_argument("--json", action="store_true", help="print a JSON summary")
    check.add_argument("--sample", type=int, default=0, metavar="N", help="also print N balanced sample sentences")
    return parser


def context_check(path: str, *, hassil: bool = False, intents: Sequence[str] | None = None,
                  sample: int = 0) -> dict[str, Any]:
    """Load and validate a context; return its summary (intents, sentence counts, slots)."""
    from assistant.context import import_hassil, load_context, sample_sentences

    ctx = import_hassil(path, intents=intents) if hassil else load_context(path)
    summary: dict[str, Any] = {
        "context": path,
        "sha256": ctx.sha256,
        "intents": {name: {"sentences": ctx.count(name), "slots": sorted(ctx.intent_slots(name))}
                    for name in ctx.intents},
        "sentences": ctx.count(),
        "slots": {name: len(values) for name, values in ctx.slot_heads().items()},
    }
    if sample:
        summary["samples"] = [s.to_dict() for s in sample_sentences(ctx, sample, seed=0)]
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    intents: dict[str, Any] = summary["intents"]
    print(f"{summary['context']}: {len(intents)} intents, {summary['sentences']:,} sentences")
    width = max((len(n) for n in intents), default=6)
    for name, info in intents.items():
        names = ", ".join(info["slots"]) or "-"
        print(f"  {name:<{width}}  {info['sentences']:>14,}  slots: {names}")
    slots: dict[str, int] = summary["slots"]
    if slots:
        print("slots: " + ", ".join(f"{n} ({k} values)" for n, k in slots.items()))
    for s in summary.get("samples", []):
        print(f"  \"{s['text']}\" -> {s['intent']} {json.dumps(s['slots'])}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "context" and args.context_command == "check":
            intents = [n.strip() for n in args.intents.split(",") if n.strip()] if args.intents else None
            summary = context_check(args.context, hassil=args.hassil, intents=intents, sample=args.sample)
            if args.json:
                print(json.dumps(summary, indent=2))
            else:
                _print_summary(summary)
            return 0
    except HubvoiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())

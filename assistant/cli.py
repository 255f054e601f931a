"""`hubvoice`: the hub's command line. Thin over the library; `--debug` everywhere."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant import __version__
from assistant.errors import ConfigError, ContextError, HubvoiceError

if TYPE_CHECKING:
    from assistant.bundle import Bundle
    from assistant.messages import InferenceResult
    from assistant.mqtt import Publisher

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
    check.add_argument("context", help="context YAML (Rhino format), or HA templates with --hassil "
                                       "(a file, a folder, or 'installed' for the home-assistant-intents package)")
    check.add_argument("--hassil", action="store_true", help="read Home Assistant (hassil) intent templates")
    check.add_argument("--intents", default=None, metavar="A,B,...",
                       help="with --hassil: only these intents (comma-separated)")
    check.add_argument("--lists", default=None, metavar="LISTS.yaml",
                       help="with --hassil: values for the lists the templates leave open (area, name, ...) "
                            "or replace (a YAML mapping list name -> values or {range: ...})")
    check.add_argument("-o", "--out", default=None, metavar="CONTEXT.yaml",
                       help="also write the validated context as Rhino YAML (e.g. an imported HA context)")
    check.add_argument("--json", action="store_true", help="print a JSON summary")
    check.add_argument("--sample", type=int, default=0, metavar="N", help="also print N balanced sample sentences")

    infer = sub.add_parser("infer", help="run a model bundle on WAV files and print each decision")
    _add_common(infer)
    infer.add_argument("files", nargs="+", metavar="FILE.wav", help="WAV files (any rate, channels, sample width)")
    infer.add_argument("--bundle", default=None, metavar="DIR", help="bundle folder (default: models/smart_home)")
    infer.add_argument("--json", action="store_true", help="print one JSON object per file")
    infer.add_argument("--threshold", type=float, default=None, metavar="T",
                       help="decision threshold in [0, 1] (default: the bundle's)")
    infer.add_argument("--gate", type=float, default=None, metavar="G",
                       help="the heads' gate in [0, 1] of a bundle that decodes through its grammar (default: the "
                            "bundle's)")
    infer.add_argument("--no-trim", action="store_true",
                       help="decide each file whole; by default quiet beyond 0.3 s before and after the speech is "
                            "cut off, as the model was trained on clips with little of it (hub.yaml: recognizer.trim)")
    infer.add_argument("--threads", type=int, default=None, metavar="N",
                       help="ONNX Runtime threads (default: hub.yaml's, else 1)")
    infer.add_argument("--fp32", action="store_true",
                       help="run the bundle's float reference model (model.fp32.onnx, if kept) instead of model.onnx")
    infer.add_argument("--publish", action="store_true", help="also publish each result over MQTT")
    infer.add_argument("--broker", default=None, metavar="mqtt[s]://[user@]host:port", help="broker for --publish")
    infer.add_argument("--site", default=None, metavar="NAME", help="site id for --publish (default: hub.yaml's)")
    infer.add_argument("-c", "--config", default=None, metavar="hub.yaml",
                       help="hub config: broker, site, actions, threads for --publish")
    infer.add_argument("--publish-timeout", type=float, default=10.0, metavar="S",
                       help="seconds to wait for the broker to acknowledge everything (default 10)")

    run = sub.add_parser("run", help="run the assistant: audio in, intents out over MQTT (until Ctrl-C or SIGTERM)")
    _add_common(run)
    run.add_argument("-c", "--config", required=True, metavar="hub.yaml",
                     help="hub config: audio source, bundle, thresholds, broker, actions")
    run.add_argument("--broker", default=None, metavar="mqtt[s]://[user@]host:port", help="override the config's broker")
    run.add_argument("--site", default=None, metavar="NAME", help="override the config's site id")

    demo = sub.add_parser("demo", help="hear the default model work: sample commands (or --mic) -> intents -> MQTT")
    _add_common(demo)
    demo.add_argument("--bundle", default=None, metavar="DIR", help="bundle folder (default: models/smart_home)")
    demo.add_argument("--broker", default=None, metavar="mqtt[s]://[user@]host:port",
                      help="publish to this broker (default: an in-process broker on 127.0.0.1)")
    demo.add_argument("--site", default="demo", metavar="NAME", help="site id (default: demo)")
    demo.add_argument("--mic", action="store_true", help="listen to the default microphone instead (Ctrl-C stops)")

    devices = sub.add_parser("devices", help="list the audio input devices (microphones) PortAudio sees")
    _add_common(devices)
    devices.add_argument("--json", action="store_true", help="print a JSON list")
    return parser


def context_check(path: str, *, hassil: bool = False, intents: Sequence[str] | None = None,
                  sample: int = 0, lists: str | None = None, out: str | None = None) -> dict[str, Any]:
    """Load and validate a context; return its summary (intents, sentence counts, slots).

    ``lists`` (with ``hassil``): a YAML file of list values for the importer. ``out``: write
    the context as Rhino YAML there (what ``hubvoice-distill build`` takes).
    """
    from assistant.context import import_hassil, load_context, sample_sentences

    if lists is not None and not hassil:
        raise ConfigError("--lists only applies to Home Assistant templates (add --hassil)")
    if hassil:
        ctx = import_hassil(None if path == "installed" else path, intents=intents,
                            lists=_read_lists(lists) if lists else None)
    else:
        ctx = load_context(path)
    if out is not None:
        header = ""
        if hassil:
            source = _intents_package() if path == "installed" else Path(path).name
            header = (f"# Generated by `hubvoice context check --hassil` from {source}"
                      f"{' with ' + Path(lists).name if lists else ''}: regenerate it, do not edit it.\n")
        try:
            Path(out).write_text(header + ctx.to_yaml(), encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{out}: cannot write the context ({err.strerror})") from None
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


def _intents_package() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"home-assistant-intents {version('home-assistant-intents')}"
    except PackageNotFoundError:
        return "home-assistant-intents"


def _read_lists(path: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read lists ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ContextError(f"not valid YAML ({err})", file=path) from None
    if not isinstance(data, dict):
        raise ContextError(f"expected a mapping of list name -> values, got {type(data).__name__}", file=path)
    return data


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


def default_bundle() -> Path:
    """``models/smart_home`` if it is installed; ConfigError saying what to pass otherwise."""
    import models

    try:
        return models.path("smart_home")
    except FileNotFoundError as err:
        raise ConfigError(f"no --bundle given and {err}; pass --bundle DIR") from None


def format_result(result: InferenceResult) -> str:
    """One readable line: ``a.wav: changeLightState state=off location=kitchen (confidence 0.97, 1.8 ms)``."""
    what = " ".join([result.intent or "", *(f"{k}={v}" for k, v in result.slots.items())]) \
        if result.understood else "not understood"
    return f"{result.input}: {what} (confidence {result.confidence:.2f}, {result.latency_ms:.1f} ms)"


def _publisher(args: argparse.Namespace, bundle: Bundle, workdir: str) -> Publisher:
    """The MQTT publisher for --publish: from -c hub.yaml (and --broker/--site), or from --broker alone."""
    from assistant.config import MqttConfig, load_config
    from assistant.messages import check_topic_level
    from assistant.mqtt import Publisher

    if args.config:
        hub = load_config(args.config, broker=args.broker)
        if args.site:
            hub = replace(hub, site=check_topic_level(args.site, "--site"))
        # Its own client id (a hub running with this config stays connected), its own outbox
        # (neither sends the other's messages), and no presence: the site's retained status,
        # last will and discovery stay the running hub's (client id hubvoice-<site>-infer-<pid>).
        hub = replace(hub, mqtt=replace(hub.mqtt, client_id=f"hubvoice-{hub.site}-infer"),
                      outbox=replace(hub.outbox, path=str(Path(workdir) / "outbox.sqlite3")))
        return Publisher.from_config(hub, bundle.slots_by_intent(), model=bundle.name, presence=False)
    if not args.broker:
        raise ConfigError("--publish needs --broker mqtt[s]://[user@]host:port or -c hub.yaml")
    site = check_topic_level(args.site or "default", "--site")
    mqtt = replace(MqttConfig().with_env(os.environ).with_broker(args.broker), client_id=f"hubvoice-{site}-infer")
    return Publisher(mqtt, site=site, outbox=Path(workdir) / "outbox.sqlite3", model=bundle.name, presence=False)


def infer_command(args: argparse.Namespace) -> int:
    """``hubvoice infer``: 0 when every file was decided (and published), 1 when any failed."""
    from assistant.bundle import load_bundle
    from assistant.config import RecognizerConfig, load_config
    from assistant.recognizer import Recognizer, recognize_file

    bundle = load_bundle(args.bundle or default_bundle())
    config = load_config(args.config, broker=args.broker).recognizer if args.config else RecognizerConfig()
    threads = config.threads if args.threads is None else args.threads
    recognizer = Recognizer(bundle, threads=threads, threshold=args.threshold, gate=args.gate, reference=args.fp32,
                            trim=None if args.no_trim else config.trim)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="hubvoice-infer-") as workdir:
        publisher = _publisher(args, bundle, workdir) if args.publish else None
        if publisher is not None:
            publisher.start()
        try:
            for path in args.files:
                try:
                    result = recognize_file(recognizer, path)
                except HubvoiceError as err:
                    failed += 1
                    print(f"error: {err}", file=sys.stderr)
                    if args.json:
                        print(json.dumps({"input": path, "error": str(err)}), flush=True)
                    continue
                print(json.dumps(result.to_dict()) if args.json else format_result(result), flush=True)
                if publisher is not None:
                    publisher.publish_result(result)
        finally:
            if publisher is not None:
                if not publisher.wait_delivered(args.publish_timeout):
                    failed += 1
                    print(f"error: not every result reached the broker {publisher.config.url} within "
                          f"{args.publish_timeout:g} s ({publisher.last_error or 'no acknowledgement'})",
                          file=sys.stderr)
                publisher.stop(timeout=1.0)
    return 1 if failed else 0


def run_command(args: argparse.Namespace) -> int:
    """``hubvoice run``: 0 after a clean shutdown (SIGINT/SIGTERM, or the audio ended)."""
    from assistant.app import load_service
    from assistant.config import load_config
    from assistant.messages import check_topic_level

    hub = load_config(args.config, broker=args.broker)
    if args.site:
        site = check_topic_level(args.site, "--site")
        mqtt, outbox = hub.mqtt, hub.outbox
        if mqtt.client_id == f"hubvoice-{hub.site}":  # the defaults follow the site
            mqtt = replace(mqtt, client_id=f"hubvoice-{site}")
        if Path(outbox.path).name == f"outbox-{hub.site}.sqlite3":
            outbox = replace(outbox, path=str(Path(outbox.path).with_name(f"outbox-{site}.sqlite3")))
        hub = replace(hub, site=site, mqtt=mqtt, outbox=outbox)
    service = load_service(hub, base=Path(args.config).resolve().parent)

    def on_signal(signum: int, frame: object) -> None:
        if service.stopping:
            _LOGGER.warning("%s again: exiting without waiting", signal.Signals(signum).name)
            os._exit(128 + signum)
        _LOGGER.info("%s: stopping", signal.Signals(signum).name)
        service.stop()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return service.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def devices_command(args: argparse.Namespace) -> int:
    """``hubvoice devices``: the input devices, the default marked with ``*``; AudioError without PortAudio."""
    from assistant.audio import list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps(devices, indent=2))
    elif not devices:
        print("no audio input devices found (PortAudio sees no microphone)")
    else:
        for d in devices:
            print(f"{'*' if d['default'] else ' '} {d['index']:>3}  {d['name']}  "
                  f"({d['hostapi'] or 'unknown API'}, {d['channels']} channel(s), {d['sample_rate']:g} Hz)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "context" and args.context_command == "check":
            intents = [n.strip() for n in args.intents.split(",") if n.strip()] if args.intents else None
            summary = context_check(args.context, hassil=args.hassil, intents=intents, sample=args.sample,
                                    lists=args.lists, out=args.out)
            if args.json:
                print(json.dumps(summary, indent=2))
            else:
                _print_summary(summary)
            return 0
        if args.command == "infer":
            return infer_command(args)
        if args.command == "run":
            return run_command(args)
        if args.command == "devices":
            return devices_command(args)
        if args.command == "demo":
            from assistant.demo import run_demo
            from assistant.messages import check_topic_level

            if not args.debug:  # the live view is the output; the service's own log lines would interleave
                logging.getLogger().setLevel(logging.WARNING)
            return run_demo(args.bundle or default_bundle(), broker=args.broker,
                            site=check_topic_level(args.site, "--site"), mic=args.mic, out=sys.stdout)
    except HubvoiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())

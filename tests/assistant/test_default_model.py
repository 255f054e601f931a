"""The shipped default bundle models/smart_home: manifest, checksums, size budget, its samples through
`hubvoice infer` (without torch), the demo's published messages, and deploy/examples/hub.yaml against it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import models
from assistant.actions import Actions
from assistant.bundle import load_bundle
from assistant.config import load_config
from assistant.context import load_context
from assistant.demo import DEMO_ACTIONS
from tests.no_torch import BLOCK_TORCH

if TYPE_CHECKING:
    from tests.assistant.conftest import Broker, Subscriber

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "models" / "smart_home"
MAX_MODEL_BYTES = 250_000
"""Issue budget for the int8 student (Rhino's contexts are ~100 KB)."""
MAX_BUNDLE_BYTES = 2_000_000
"""Everything in git for the bundle: model, manifest, card, context, sample WAVs."""
HA_INTENTS = set((ROOT / "examples" / "home_assistant" / "intents.txt").read_text().strip().split(","))


def test_the_default_bundle_is_installed_verified_and_small() -> None:
    assert models.path("smart_home") == BUNDLE
    bundle = load_bundle(BUNDLE)  # schema, sha256 of every file, graph I/O vs labels, samples self-test
    manifest = json.loads((BUNDLE / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["name"] == "smart_home"
    assert manifest["model"]["precision"].startswith("int8")
    assert (BUNDLE / "model.onnx").stat().st_size <= MAX_MODEL_BYTES
    files = [p for p in BUNDLE.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".onnx", ".json", ".yaml", ".md", ".wav"}  # nothing executable or pickled
    assert sum(p.stat().st_size for p in files) <= MAX_BUNDLE_BYTES
    # Home Assistant's intents, from the committed context it was built from
    assert set(bundle.layout.intents[1:]) == HA_INTENTS
    assert load_context(BUNDLE / "context.yaml").sha256 == load_context(
        ROOT / "examples" / "home_assistant" / "smart_home.yaml").sha256
    card = (BUNDLE / "MODEL_CARD.md").read_text()
    assert "hubvoice-distill build examples/home_assistant/smart_home.yaml" in card and "seed 0" in card
    samples = bundle.manifest.samples
    assert len(samples) >= 5 and sum(not s.expected["understood"] for s in samples) >= 1


def test_the_samples_replayed_through_hubvoice_infer_without_torch() -> None:
    """Every bundled sample through the CLI as a user runs it, in a process where torch cannot load."""
    bundle = load_bundle(BUNDLE)
    files = [str(BUNDLE / s.audio.file) for s in bundle.manifest.samples]
    probe = BLOCK_TORCH + "import sys\nfrom assistant.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    done = subprocess.run([sys.executable, "-c", probe, "infer", "--json", *files], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(files)
    for sample, result in zip(bundle.manifest.samples, results, strict=True):
        assert (result["understood"], result["intent"], result["slots"]) == (
            sample.expected["understood"], sample.expected["intent"], sample.expected["slots"]), sample.audio.file


def test_quiet_around_a_recorded_command_is_trimmed(tmp_path: Path) -> None:
    """A recording with a second of quiet before and after the command (an ``arecord -d 4`` of it), through
    `hubvoice infer`: the student was trained on clips with at most ~0.4 s of it, and without the trim many
    of the sample commands are rejected (docs/BENCHMARKS.md, "Quiet around a command")."""
    import numpy as np

    from assistant.wav import read_wav, write_wav

    commands = [s for s in load_bundle(BUNDLE).manifest.samples if s.expected["understood"]]
    rng = np.random.default_rng(0)
    files = []
    for i, sample in enumerate(commands):
        quiet = [(rng.standard_normal(16000) * 1e-3).astype(np.float32) for _ in range(2)]  # -60 dBFS
        files.append(str(tmp_path / f"{i:02d}.wav"))
        write_wav(files[-1], np.concatenate([quiet[0], read_wav(BUNDLE / sample.audio.file), quiet[1]]))

    def decided(*flags: str) -> list[tuple[str | None, dict[str, str]]]:
        done = subprocess.run([sys.executable, "-m", "assistant.cli", "infer", "--json", *flags, *files], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return [(r["intent"], r["slots"]) for r in map(json.loads, done.stdout.splitlines())]

    expected = [(s.expected["intent"], s.expected["slots"]) for s in commands]
    trimmed, whole = decided(), decided("--no-trim")
    assert sum(d == e for d, e in zip(trimmed, expected, strict=True)) >= 3 * len(commands) // 4
    # at most one wrong action (on the test split this model takes 4% of the commands padded so for another
    # command, as many as unpadded; here the fan sample came out as a light: "set ... to 40")
    assert sum(d not in (e, (None, {})) for d, e in zip(trimmed, expected, strict=True)) <= 1
    # without the trim, a quarter of the commands or more are lost (measured: 14 against 7 right of 16)
    assert sum(d == e for d, e in zip(whole, expected, strict=True)) <= (
        sum(d == e for d, e in zip(trimmed, expected, strict=True)) - len(commands) // 4)


def test_the_demo_publishes_events_hermes_and_device_commands(broker: Broker,
                                                              make_subscriber: Callable[..., Subscriber]) -> None:
    bundle = load_bundle(BUNDLE)
    subscriber = make_subscriber(broker.port, ("#",))
    done = subprocess.run([sys.executable, "-m", "assistant.cli", "demo", "--broker",
                           f"mqtt://127.0.0.1:{broker.port}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    samples = bundle.manifest.samples
    understood = [s.expected for s in samples if s.expected["understood"]]
    events = [json.loads(m.payload) for m in subscriber.wait_for("hubvoice/demo/intent", len(understood))]
    assert [(e["intent"], e["slots"]) for e in events] == [(x["intent"], x["slots"]) for x in understood]
    received = {(m.topic, m.payload) for m in subscriber.received}
    hermes = [m for m in subscriber.received if m.topic.startswith("hermes/intent/")]
    assert sorted(m.topic for m in hermes) == sorted(f"hermes/intent/{x['intent']}" for x in understood)
    # the device commands the demo's actions map these intents to (the same renderer as the hub's)
    actions = Actions([a for a in load_demo_specs() if a.intent in bundle.slots_by_intent()], bundle.slots_by_intent())
    expected = {(c.topic, c.payload) for x in understood for c in actions.render(x["intent"], x["slots"], "demo")}
    assert expected, "no sample triggers a device command: the demo would show none"
    assert expected <= received
    assert "ms  zigbee2mqtt/" in done.stdout or "ms  home/" in done.stdout


def load_demo_specs() -> list:  # type: ignore[type-arg]
    from assistant.actions import ActionSpec

    return [ActionSpec.from_dict(a) for a in DEMO_ACTIONS]


def test_the_heads_gate_can_be_overridden_from_the_hub_config(tmp_path: Path, broker: Broker,
                                                             make_subscriber: Callable[..., Subscriber]) -> None:
    """recognizer.thresholds.gate: the heads' 1 - P(not understood) that the grammar decision also needs. The
    sample commands through the hub (wav files -> Service -> mosquitto), with the bundle's gate and with 1.0."""
    import numpy as np

    from assistant.app import Service
    from assistant.wav import read_wav, write_wav

    bundle = load_bundle(BUNDLE)
    assert bundle.manifest.decoder is not None
    commands = [s for s in bundle.manifest.samples if s.expected["understood"]]
    padded = []  # each command with a second of silence around it: one utterance per file for the endpointer
    for i, sample in enumerate(commands):
        audio = read_wav(BUNDLE / sample.audio.file)
        padded.append(tmp_path / f"{i:02d}.wav")
        write_wav(padded[-1], np.concatenate([np.zeros(16000, np.float32), audio, np.zeros(16000, np.float32)]))

    def intents(gate: float | None, site: str) -> list[str]:
        thresholds = "{}" if gate is None else f"{{gate: {gate}}}"
        paths = ", ".join(str(p) for p in padded)
        config = tmp_path / f"{site}.yaml"
        config.write_text(f"site: {site}\nmqtt: {{host: 127.0.0.1, port: {broker.port}}}\n"
                          f"outbox: {{path: {tmp_path / site}.sqlite3}}\naudio: {{source: wav, paths: [{paths}]}}\n"
                          f"recognizer: {{thresholds: {thresholds}}}\n")
        subscriber = make_subscriber(broker.port, (f"hubvoice/{site}/#",))
        service = Service(load_config(config), bundle)
        assert service.recognizer.gate == (bundle.manifest.decoder.settings.gate if gate is None else gate)
        assert service.run() == 0
        subscriber.wait_for(f"hubvoice/{site}/status", 2)  # online ... offline
        return [json.loads(m.payload)["intent"] for m in subscriber.received if m.topic.endswith("/intent")]

    # the bundle's gate: most sample commands come through the endpointer's framing (pre-roll 300 ms, post-roll
    # 100 ms) as in `hubvoice demo`, which decides the clips as they are (docs/BENCHMARKS.md, "As a hub hears it")
    own = intents(None, "own")
    assert len(own) >= len(commands) // 2 and set(own) <= {s.expected["intent"] for s in commands}
    assert intents(1.0, "strict") == []  # no clip's heads are that sure: every command is rejected


def test_the_example_hub_config_fits_the_default_model(tmp_path: Path) -> None:
    text = (ROOT / "deploy" / "examples" / "hub.yaml").read_text()
    (tmp_path / "ca.crt").write_text("not read at load time\n")
    config = tmp_path / "hub.yaml"
    config.write_text(text.replace("/etc/hubvoice/ca.crt", str(tmp_path / "ca.crt")))
    hub = load_config(config, env={"HUBVOICE_MQTT_PASSWORD": "s3cret"})
    assert hub.mqtt.tls is not None and hub.mqtt.password == "s3cret" and hub.site == "living_room"
    bundle = load_bundle(BUNDLE)
    actions = Actions(hub.actions, bundle.slots_by_intent())  # every template's slots exist in the model
    (light,) = actions.render("HassTurnOn", {"area": "kitchen", "domain": "light"}, hub.site)
    assert (light.topic, json.loads(light.payload)) == ("zigbee2mqtt/kitchen_light/set", {"state": "ON"})
    (blinds,) = actions.render("HassSetPosition", {"area": "bedroom", "position": "40"}, hub.site)
    assert (blinds.topic, json.loads(blinds.payload)) == ("zigbee2mqtt/bedroom_blinds/set", {"position": 40})
    (heat,) = actions.render("HassClimateSetTemperature", {"temperature": "21"}, hub.site)
    assert (heat.topic, heat.payload) == ("hubvoice/thermostat/living_room/set", b"21.0")

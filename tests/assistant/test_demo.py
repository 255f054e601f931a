"""`hubvoice demo`, run non-interactively as a user would: in-process broker, or a real mosquitto.

The shipped default bundle's demo (with device commands) is in test_default_model.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from assistant.bundle import load_bundle
from assistant.demo import DEMO_ACTIONS, InProcessBroker, demo_config

pytest.importorskip("torch")  # the tiny bundle is built with distill
from tests.assistant.test_bundle import tiny_bundle  # noqa: E402  (builds once per session)

if TYPE_CHECKING:
    from tests.assistant.conftest import Broker, Subscriber

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle(tmp_path_factory)


def run_demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assistant.cli", "demo", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_demo_with_its_in_process_broker_shows_every_sample_published(bundle_dir: Path) -> None:
    done = run_demo("--bundle", str(bundle_dir), "--site", "kitchen")
    assert done.returncode == 0, done.stdout + done.stderr
    samples = load_bundle(bundle_dir).manifest.samples
    out = done.stdout
    assert "(in-process)" in out
    assert f"{len(samples)}/{len(samples)} sample commands recognized as expected" in out
    understood = [s for s in samples if s.expected["understood"]]
    # what the live view printed is what the broker delivered: one event per sample, and Hermes
    assert out.count("hubvoice/kitchen/intent  {") == len(understood)
    assert out.count("hubvoice/kitchen/not_understood  {") == len(samples) - len(understood)
    for s in understood:
        assert f"hermes/intent/{s.expected['intent']}  {{" in out
    assert "hubvoice/kitchen/status  online" in out and "hubvoice/kitchen/status  offline" in out
    assert "ms  hubvoice/kitchen/intent" in out  # latency per command


def test_demo_against_a_real_mosquitto(bundle_dir: Path, broker: Broker,
                                       make_subscriber: Callable[..., Subscriber]) -> None:
    subscriber = make_subscriber(broker.port, ("hubvoice/#", "hermes/#"))
    done = run_demo("--bundle", str(bundle_dir), "--broker", f"mqtt://127.0.0.1:{broker.port}", "--site", "den")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(in-process)" not in done.stdout
    samples = load_bundle(bundle_dir).manifest.samples
    understood = [s.expected for s in samples if s.expected["understood"]]
    events = [json.loads(m.payload) for m in subscriber.wait_for("hubvoice/den/intent", len(understood))]
    assert [(e["intent"], e["slots"], e["site"]) for e in events] == [
        (x["intent"], x["slots"], "den") for x in understood]
    hermes = [json.loads(m.payload) for m in subscriber.received if m.topic.startswith("hermes/intent/")]
    assert [h["intent"]["intentName"] for h in hermes] == [x["intent"] for x in understood]


def test_demo_reports_a_broker_it_cannot_reach(bundle_dir: Path, unused_port: int) -> None:
    done = run_demo("--bundle", str(bundle_dir), "--broker", f"mqtt://127.0.0.1:{unused_port}", timeout=60)
    assert done.returncode == 2
    assert f"127.0.0.1:{unused_port}" in done.stderr and "Traceback" not in done.stderr


def test_demo_actions_are_a_valid_hub_config_for_the_home_assistant_intents(tmp_path: Path) -> None:
    from assistant.actions import Actions

    ha_slots = {"HassTurnOn": {"area", "domain", "name"}, "HassTurnOff": {"area", "domain", "name"},
                "HassLightSet": {"area", "brightness", "color", "domain"},
                "HassClimateSetTemperature": {"area", "temperature"}, "HassSetPosition": {"area", "position"}}
    hub = demo_config("demo", "mqtt://127.0.0.1:1883", tmp_path / "o.sqlite3", ha_slots)
    actions = Actions(hub.actions, ha_slots)
    assert len(actions) == len(DEMO_ACTIONS)
    (light,) = actions.render("HassTurnOn", {"area": "living room", "domain": "light"}, "demo")
    assert (light.topic, json.loads(light.payload)) == ("zigbee2mqtt/living_room_light/set", {"state": "ON"})
    (everywhere,) = actions.render("HassTurnOff", {"domain": "light"}, "demo")
    assert everywhere.topic == "zigbee2mqtt/all_light/set"
    assert actions.render("HassTurnOn", {"domain": "fan", "area": "office"}, "demo") == []
    (cover,) = actions.render("HassSetPosition", {"area": "garage", "position": "40"}, "demo")
    assert (cover.topic, cover.payload) == ("home/garage/cover/set_position", b"40")


def test_in_process_broker_starts_and_stops_cleanly() -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    broker = InProcessBroker().start()
    try:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="t")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        assert client.publish("a/b", "x", qos=1).wait_for_publish(5) is None
        client.disconnect()
        client.loop_stop()
    finally:
        broker.stop()

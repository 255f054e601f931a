"""The Publisher against a real mosquitto (see conftest.py): payloads, status, discovery, outages, TLS, auth."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from assistant.actions import Actions, ActionSpec
from assistant.config import HubConfig, MqttConfig, TlsConfig
from assistant.messages import (
    ExpiredReport,
    HaDiscovery,
    HermesIntent,
    InferenceResult,
    IntentEvent,
    MessageError,
)
from assistant.mqtt import ConnectionState, Publisher

if TYPE_CHECKING:
    from tests.assistant.conftest import Broker, Subscriber, TlsFiles

REPO = Path(__file__).resolve().parents[2]
LIGHTS = InferenceResult("kitchen.wav", True, "changeLightState", {"state": "off", "location": "kitchen"}, 0.97, 1.8)
LIGHT_ACTION = ActionSpec.from_dict({
    "intent": "changeLightState",
    "topic": "zigbee2mqtt/{location}_light/set",
    "payload": {"state": "{state|upper}"},
})


def numbered(n: int) -> InferenceResult:
    return InferenceResult(f"utterance-{n}", True, "count", {"n": str(n)}, 0.9, 1.0)


def mqtt_config(port: int, **kwargs: object) -> MqttConfig:
    settings: dict[str, object] = {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.05,
                                   "reconnect_max_s": 0.3, "keepalive": 10}
    settings.update(kwargs)
    return MqttConfig(**settings)  # type: ignore[arg-type]


MakePublisher = Callable[..., Publisher]


@pytest.fixture
def make_publisher(tmp_path: Path) -> Iterator[MakePublisher]:
    publishers: list[Publisher] = []

    def make(port: int, *, outbox: Path | None = None, actions: Actions | None = None, max_age_s: float = 30.0,
             site: str = "test", presence: bool = True, **config: object) -> Publisher:
        publisher = Publisher(mqtt_config(port, **config), site=site, outbox=outbox or tmp_path / "outbox.sqlite3",
                              actions=actions, max_age_s=max_age_s, model="smart_home", tick_s=0.05,
                              presence=presence)
        publishers.append(publisher)
        return publisher

    yield make
    for publisher in publishers:
        publisher.stop(timeout=1.0)


def intents_in_order(subscriber: Subscriber, wanted: set[int], seen: list[int] | None = None,
                     timeout: float = 10.0) -> list[int]:
    """The n of each intent event in arrival order, first occurrences only, until every wanted n arrived.

    QoS 1 is at-least-once on each hop (a restarted broker may deliver again what it had not
    saved as acknowledged), so repeats are skipped; pass ``seen`` to carry on from an earlier call.
    """
    seen = [] if seen is None else seen
    deadline = time.monotonic() + timeout
    while not wanted <= set(seen):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {seen} arrived of {sorted(wanted)}"
        (message,) = subscriber.wait_for("hubvoice/test/intent", 1, timeout=remaining)
        n = int(json.loads(message.payload)["slots"]["n"])
        if n not in seen:
            seen.append(n)
    return seen


# --- payloads --------------------------------------------------------------------------------------


def test_intent_event_hermes_and_action_reach_a_subscriber(broker: Broker, make_subscriber: Callable[..., Subscriber],
                                                           make_publisher: MakePublisher) -> None:
    subscriber = make_subscriber(broker.port, ("hubvoice/#", "hermes/#", "zigbee2mqtt/#"))
    publisher = make_publisher(broker.port, actions=Actions([LIGHT_ACTION]))
    publisher.start()
    event = publisher.publish_result(LIGHTS)
    (message,) = subscriber.wait_for("hubvoice/test/intent")
    data = json.loads(message.payload)
    assert data == {**LIGHTS.to_dict(), "site": "test", "id": event.id, "timestamp": event.timestamp}
    assert IntentEvent.from_dict(data) == event
    assert message.qos == 1

    (hermes,) = subscriber.wait_for("hermes/intent/changeLightState")
    assert json.loads(hermes.payload) == {
        "input": "changeLightState state=off location=kitchen",
        "intent": {"intentName": "changeLightState", "confidenceScore": 0.97},
        "slots": [
            {"entity": "state", "slotName": "state", "rawValue": "off",
             "value": {"kind": "Custom", "value": "off"}, "confidence": 0.97},
            {"entity": "location", "slotName": "location", "rawValue": "kitchen",
             "value": {"kind": "Custom", "value": "kitchen"}, "confidence": 0.97},
        ],
        "siteId": "test",
        "sessionId": event.id,
        "customData": None,
    }
    assert HermesIntent.from_dict(json.loads(hermes.payload)).slots[1].value == "kitchen"
    (device,) = [m for m in subscriber.received if m.topic == "zigbee2mqtt/kitchen_light/set"]
    assert json.loads(device.payload) == {"state": "OFF"}
    assert publisher.wait_delivered(5)
    assert publisher.outbox.counts() == {"pending": 0, "expired": 0, "rejected": 0}


def test_not_understood_goes_to_its_own_topics(broker: Broker, make_subscriber: Callable[..., Subscriber],
                                               make_publisher: MakePublisher) -> None:
    subscriber = make_subscriber(broker.port, ("hubvoice/test/+", "hermes/#"))
    publisher = make_publisher(broker.port)
    publisher.start()
    event = publisher.publish_result(InferenceResult(None, False, None, {}, 0.2, 1.1), input_name="noise.wav")
    (message,) = subscriber.wait_for("hubvoice/test/not_understood")
    data = json.loads(message.payload)
    assert data["understood"] is False and data["intent"] is None and data["input"] == "noise.wav"
    (hermes,) = subscriber.wait_for("hermes/nlu/intentNotRecognized")
    assert json.loads(hermes.payload) == {"input": "", "siteId": "test", "sessionId": event.id, "customData": None}
    assert publisher.wait_delivered(5)
    assert not [m for m in subscriber.received if m.topic in ("hubvoice/test/intent",) or "hermes/intent" in m.topic]


def test_slot_values_cannot_inject_topic_levels(broker: Broker, make_subscriber: Callable[..., Subscriber],
                                                make_publisher: MakePublisher, caplog: pytest.LogCaptureFixture
                                                ) -> None:
    subscriber = make_subscriber(broker.port, ("#",))
    safe = ActionSpec.from_dict({"intent": "changeLightState", "topic": "lights/{location|slug}/set", "payload": "x"})
    publisher = make_publisher(broker.port, actions=Actions([LIGHT_ACTION, safe]))
    publisher.start()
    for evil in ("kitchen/+/#", "a/b", "#", "kit\x00chen"):
        publisher.publish_result(InferenceResult("x", True, "changeLightState", {"state": "on", "location": evil}, 0.9, 1))
    subscriber.wait_for("hubvoice/test/intent", 4)
    assert publisher.wait_delivered(5)
    subscriber.drain(0.2)
    topics = [m.topic for m in subscriber.received]
    assert not [t for t in topics if t.startswith("zigbee2mqtt")], topics
    assert sorted(t for t in topics if t.startswith("lights/")) == sorted(
        ["lights/kitchen/set", "lights/a_b/set", "lights/kit_chen/set"])  # '#' slugs to '' and is rejected too
    assert caplog.text.count("Not publishing action 0") == 4
    with pytest.raises(MessageError, match="site"):
        make_publisher(broker.port, site="kitchen/+/#")


# --- status, last will, Home Assistant ---------------------------------------------------------------

CHILD = r"""
import sys, time
from assistant.config import MqttConfig
from assistant.messages import InferenceResult
from assistant.mqtt import Publisher
port, db, count, connect = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
presence = sys.argv[5] == "1"
config = MqttConfig(host="127.0.0.1", port=port, reconnect_min_s=0.05, reconnect_max_s=0.2, keepalive=30)
publisher = Publisher(config, site="test", outbox=db, presence=presence)
publisher.start()
print(publisher.config.client_id, flush=True)
if connect and not publisher.wait_connected(5):
    sys.exit("child could not connect")
for n in range(count):
    print(publisher.publish_result(InferenceResult("child", True, "count", {"n": str(n)}, 0.9, 1.0)).id, flush=True)
print("ready", flush=True)
time.sleep(60)
"""


def run_child(port: int, db: Path, count: int, connect: bool, presence: bool = True
              ) -> tuple[subprocess.Popen[str], list[str]]:
    """A Publisher in another process; returns once it printed 'ready' (with its client id, then the event ids)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(port), str(db), str(count), "1" if connect else "0",
                              "1" if presence else "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None and child.stderr is not None
    watchdog = threading.Timer(15, child.kill)  # every wait has a timeout
    watchdog.start()
    lines: list[str] = []
    try:
        while "ready" not in lines:
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"child exited ({child.wait(5)}) after {lines}: {child.stderr.read()}")
            lines.append(line.strip())
    finally:
        watchdog.cancel()
    return child, lines[:-1]


def test_retained_online_and_last_will_offline_when_the_process_dies(
        broker: Broker, make_subscriber: Callable[..., Subscriber], tmp_path: Path) -> None:
    child, _ = run_child(broker.port, tmp_path / "child.sqlite3", 0, connect=True)
    try:
        watcher = make_subscriber(broker.port, ("hubvoice/test/status",))
        assert watcher.wait_for("hubvoice/test/status")[0].payload == b"online"
        (online,) = make_subscriber(broker.port, ("hubvoice/test/status",)).wait_for("hubvoice/test/status")
        assert (online.payload, online.retain) == (b"online", True)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(5)
    (offline,) = watcher.wait_for("hubvoice/test/status")
    assert offline.payload == b"offline"
    (retained,) = make_subscriber(broker.port, ("hubvoice/test/status",)).wait_for("hubvoice/test/status")
    assert (retained.payload, retained.retain) == (b"offline", True)


def test_clean_stop_publishes_offline(broker: Broker, make_subscriber: Callable[..., Subscriber],
                                      make_publisher: MakePublisher) -> None:
    watcher = make_subscriber(broker.port, ("hubvoice/test/status",))
    publisher = make_publisher(broker.port)
    publisher.start()
    assert watcher.wait_for("hubvoice/test/status")[0].payload == b"online"
    publisher.publish_result(LIGHTS)
    assert publisher.stop(timeout=3) is True
    assert watcher.wait_for("hubvoice/test/status")[0].payload == b"offline"
    assert publisher.state is ConnectionState.STOPPED
    assert "Client hubvoice-test disconnected." in broker.log()  # a clean DISCONNECT, not a dropped socket


def test_home_assistant_discovery_and_reannounce(broker: Broker, make_subscriber: Callable[..., Subscriber],
                                                 make_publisher: MakePublisher, caplog: pytest.LogCaptureFixture
                                                 ) -> None:
    topic = "homeassistant/sensor/hubvoice_test/last_intent/config"
    ha = make_subscriber(broker.port, (topic,))
    publisher = make_publisher(broker.port)
    publisher.start()
    (first,) = ha.wait_for(topic)
    config = json.loads(first.payload)
    (late,) = make_subscriber(broker.port, (topic,)).wait_for(topic)
    assert late.retain and late.payload == first.payload
    assert config["state_topic"] == config["json_attributes_topic"] == "hubvoice/test/intent"
    assert config["value_template"] == "{{ value_json.intent }}"
    assert (config["availability_topic"], config["payload_available"], config["payload_not_available"]) == (
        "hubvoice/test/status", "online", "offline")
    assert config["unique_id"] == "hubvoice_test_last_intent"
    assert config["device"]["identifiers"] == ["hubvoice_test"]
    assert {"name", "manufacturer", "model", "sw_version"} <= set(config["device"])
    assert HaDiscovery.from_dict(config).model == "smart_home"

    ha.client.publish("homeassistant/status", "rebooting?", qos=1).wait_for_publish(5)
    ha.client.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
    (again,) = ha.wait_for(topic)
    assert json.loads(again.payload) == config
    assert "Ignoring 'rebooting?' on homeassistant/status" in caplog.text


def connect_log(broker: Broker, client_id: str) -> list[str]:
    """The broker's log lines from ``client_id``'s CONNECT up to its CONNACK (flags and will)."""
    lines = broker.log().splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(f" as {client_id}") or f" as {client_id} (" in line)
    end = next(i for i in range(start, len(lines)) if f"Sending CONNACK to {client_id} " in lines[i])
    return lines[start:end]


def wait_for_log(broker: Broker, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in broker.log():
        assert time.monotonic() < deadline, f"{text!r} not in the broker log within {timeout} s"
        time.sleep(0.02)


@pytest.mark.parametrize(("protocol", "flags"), [("3.1.1", "(p2, c1, k10)"), ("5", "(p5, c1, k10)")])
def test_a_publisher_without_presence_leaves_the_site_to_the_running_service(
        protocol: str, flags: str, broker: Broker, make_subscriber: Callable[..., Subscriber],
        make_publisher: MakePublisher, tmp_path: Path) -> None:
    watcher = make_subscriber(broker.port, ("hubvoice/test/status", "homeassistant/#"))
    service = make_publisher(broker.port, protocol=protocol)
    service.start()
    assert [m.payload for m in watcher.wait_for("hubvoice/test/status")] == [b"online"]
    watcher.wait_for("homeassistant/sensor/hubvoice_test/last_intent/config")

    tool = make_publisher(broker.port, protocol=protocol, presence=False, outbox=tmp_path / "tool.sqlite3")
    other = make_publisher(broker.port, protocol=protocol, presence=False, outbox=tmp_path / "other.sqlite3")
    assert tool.config.client_id.startswith(f"hubvoice-test-{os.getpid()}")
    assert len({service.config.client_id, tool.config.client_id, other.config.client_id}) == 3
    subscriber = make_subscriber(broker.port, ("hubvoice/test/intent",))
    tool.start()
    event = tool.publish_result(LIGHTS)
    (message,) = subscriber.wait_for("hubvoice/test/intent")
    assert json.loads(message.payload)["id"] == event.id and message.qos == 1
    assert tool.stop(timeout=3) is True
    wait_for_log(broker, f"Client {tool.config.client_id} disconnected.")

    connect = connect_log(broker, tool.config.client_id)
    assert flags in connect[0]  # a clean session: nothing of it stays on the broker
    assert not [line for line in connect if "Will message" in line], connect
    published = [line.split("'")[1] for line in broker.log().splitlines()
                 if f"PUBLISH from {tool.config.client_id} " in line]
    assert published == ["hubvoice/test/intent", "hermes/intent/changeLightState"]  # nothing retained, no status
    assert [(m.topic, m.payload) for m in watcher.drain(0.5)] == []  # no online, offline or discovery from the tool
    (retained,) = make_subscriber(broker.port, ("hubvoice/test/status",)).wait_for("hubvoice/test/status")
    assert (retained.payload, retained.retain) == (b"online", True)
    assert service.state is ConnectionState.CONNECTED and service.connect_attempts == 1  # never kicked off


def test_a_publisher_without_presence_that_dies_leaves_no_offline(
        broker: Broker, make_subscriber: Callable[..., Subscriber], make_publisher: MakePublisher,
        tmp_path: Path) -> None:
    watcher = make_subscriber(broker.port, ("hubvoice/test/status",))
    service = make_publisher(broker.port)
    service.start()
    assert watcher.wait_for("hubvoice/test/status")[0].payload == b"online"
    child, (client_id,) = run_child(broker.port, tmp_path / "child.sqlite3", 0, connect=True, presence=False)
    assert client_id == f"hubvoice-test-{child.pid}"
    child.send_signal(signal.SIGKILL)
    child.wait(5)
    wait_for_log(broker, f"Client {client_id} closed its connection.")
    assert [(m.topic, m.payload) for m in watcher.drain(0.5)] == []
    (retained,) = make_subscriber(broker.port, ("hubvoice/test/status",)).wait_for("hubvoice/test/status")
    assert retained.payload == b"online"
    assert service.state is ConnectionState.CONNECTED


# --- outages ---------------------------------------------------------------------------------------


def test_broker_killed_mid_stream_loses_nothing_and_keeps_order(
        make_broker: Callable[..., Broker], make_subscriber: Callable[..., Subscriber],
        make_publisher: MakePublisher) -> None:
    broker = make_broker(persistence=True)
    subscriber = make_subscriber(broker.port, ("hubvoice/test/intent",), client_id="ha", persistent=True)
    publisher = make_publisher(broker.port)
    publisher.start()
    for n in range(3):
        publisher.publish_result(numbered(n))
    seen = intents_in_order(subscriber, {0, 1, 2})
    assert seen == [0, 1, 2]
    assert publisher.wait_delivered(5)
    broker.pause()  # hung broker: messages leave the hub but no PUBACK comes back
    for n in range(3, 6):
        publisher.publish_result(numbered(n))
    time.sleep(0.3)
    assert publisher.outbox.pending_count() == 6  # 3 results x (intent + hermes), none acknowledged
    broker.kill()
    for n in range(6, 8):  # recognized while the broker is down
        publisher.publish_result(numbered(n))
    assert publisher.state is not ConnectionState.CONNECTED or publisher.wait_connected(0) is False
    broker.start()
    assert intents_in_order(subscriber, set(range(8)), seen) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert publisher.wait_delivered(10)
    assert publisher.outbox.counts()["expired"] == 0


def test_commands_older_than_max_age_are_expired_and_reported_not_sent(
        make_broker: Callable[..., Broker], make_subscriber: Callable[..., Subscriber],
        make_publisher: MakePublisher, caplog: pytest.LogCaptureFixture) -> None:
    broker = make_broker(persistence=True)
    subscriber = make_subscriber(broker.port, ("hubvoice/test/#", "zigbee2mqtt/#"), client_id="ha", persistent=True)
    broker.stop()
    publisher = make_publisher(broker.port, actions=Actions([LIGHT_ACTION]), max_age_s=0.4)
    publisher.start()
    stale = publisher.publish_result(LIGHTS)
    time.sleep(0.6)
    broker.start()
    assert publisher.wait_connected(5)
    (report_message,) = subscriber.wait_for("hubvoice/test/expired")
    report = ExpiredReport.from_dict(json.loads(report_message.payload))
    assert [(i.id, i.intent) for i in report.expired] == [(stale.id, "changeLightState")] * 3
    assert {i.topic for i in report.expired} == {"zigbee2mqtt/kitchen_light/set", "hubvoice/test/intent",
                                                 "hermes/intent/changeLightState"}
    assert all(i.age_s > 0.4 and i.max_age_s == 0.4 for i in report.expired)
    assert "were NOT sent" in caplog.text and "changeLightState" in caplog.text
    fresh = publisher.publish_result(LIGHTS)
    (delivered,) = subscriber.wait_for("hubvoice/test/intent")
    assert json.loads(delivered.payload)["id"] == fresh.id  # the stale one never arrives, the fresh one does
    assert publisher.wait_delivered(5)
    kept = publisher.outbox.messages("expired")
    assert [m.ref for m in kept] == [stale.id] * 3  # marked, not deleted
    subscriber.drain(0.2)
    topics = [m.topic for m in subscriber.received]
    assert topics.count("zigbee2mqtt/kitchen_light/set") == topics.count("hubvoice/test/intent") == 1


def test_a_command_in_flight_when_the_link_dies_is_not_resent_after_its_max_age(
        make_broker: Callable[..., Broker], make_subscriber: Callable[..., Subscriber],
        make_publisher: MakePublisher) -> None:
    broker = make_broker(persistence=True)
    subscriber = make_subscriber(broker.port, ("hubvoice/test/#",), client_id="ha", persistent=True)
    publisher = make_publisher(broker.port, max_age_s=0.5, hermes=False)
    publisher.start()
    assert publisher.wait_connected(5)
    broker.pause()
    stale = publisher.publish_result(numbered(1))  # handed to paho, never acknowledged
    time.sleep(0.8)
    broker.kill()
    broker.start()
    (report,) = subscriber.wait_for("hubvoice/test/expired", timeout=8)
    assert [i.id for i in ExpiredReport.from_dict(json.loads(report.payload)).expired] == [stale.id]
    assert publisher.wait_delivered(5)
    assert not [m for m in subscriber.received if m.topic == "hubvoice/test/intent"]


def test_a_new_process_delivers_what_a_killed_one_queued(broker: Broker, make_subscriber: Callable[..., Subscriber],
                                                         make_publisher: MakePublisher, tmp_path: Path,
                                                         unused_port: int) -> None:
    db = tmp_path / "shared.sqlite3"
    child, (_, *ids) = run_child(unused_port, db, 3, connect=False)  # nobody listens there
    child.send_signal(signal.SIGKILL)
    child.wait(5)
    assert len(ids) == 3
    subscriber = make_subscriber(broker.port, ("hubvoice/test/intent",))
    publisher = make_publisher(broker.port, outbox=db)
    assert publisher.outbox.pending_count() == 6
    publisher.start()
    messages = subscriber.wait_for("hubvoice/test/intent", 3)
    assert [json.loads(m.payload)["id"] for m in messages] == ids
    assert publisher.wait_delivered(5)


# --- protocol, TLS, authentication --------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "logged"), [("3.1.1", "(p2, c0, k10"), ("5", "(p5, c0, k10")])
def test_persistent_session_for_both_protocols(protocol: str, logged: str, broker: Broker,
                                               make_subscriber: Callable[..., Subscriber],
                                               make_publisher: MakePublisher) -> None:
    subscriber = make_subscriber(broker.port, ("hubvoice/test/intent",))
    publisher = make_publisher(broker.port, protocol=protocol)
    publisher.start()
    publisher.publish_result(LIGHTS)
    subscriber.wait_for("hubvoice/test/intent")
    assert f"as hubvoice-test {logged}" in broker.log()  # client id per site, clean session/start off


def test_websockets_transport(make_broker: Callable[..., Broker], make_subscriber: Callable[..., Subscriber],
                              make_publisher: MakePublisher) -> None:
    broker = make_broker(websockets=True)
    subscriber = make_subscriber(broker.port, ("hubvoice/test/intent",))
    assert broker.ws_port is not None
    publisher = make_publisher(broker.ws_port, transport="websockets")
    publisher.start()
    publisher.publish_result(LIGHTS)
    subscriber.wait_for("hubvoice/test/intent")


def test_tls_with_a_test_ca(make_broker: Callable[..., Broker], tls_files: TlsFiles,
                            make_subscriber: Callable[..., Subscriber], make_publisher: MakePublisher) -> None:
    broker = make_broker(tls=tls_files)
    assert broker.tls_port is not None
    subscriber = make_subscriber(broker.port, ("hubvoice/test/intent",))
    publisher = make_publisher(broker.tls_port, host="localhost", tls=TlsConfig(ca=str(tls_files.ca)))
    publisher.start()
    publisher.publish_result(LIGHTS)
    subscriber.wait_for("hubvoice/test/intent")
    assert publisher.config.url.startswith("mqtts://localhost:")


def test_tls_checks_the_host_name_unless_insecure(make_broker: Callable[..., Broker], tls_files: TlsFiles,
                                                  make_publisher: MakePublisher, tmp_path: Path) -> None:
    broker = make_broker(tls=tls_files)
    strict = make_publisher(broker.tls_port, tls=TlsConfig(ca=str(tls_files.ca)), outbox=tmp_path / "a.sqlite3")
    strict.start()
    assert not strict.wait_connected(1.0)  # the certificate names localhost, not 127.0.0.1
    assert strict.last_error is not None and "certificate" in strict.last_error
    relaxed = make_publisher(broker.tls_port, tls=TlsConfig(ca=str(tls_files.ca), insecure=True),
                             outbox=tmp_path / "b.sqlite3", client_id="relaxed")
    relaxed.start()
    assert relaxed.wait_connected(5)


def test_tls_client_certificate(make_broker: Callable[..., Broker], tls_files: TlsFiles,
                                make_publisher: MakePublisher, tmp_path: Path) -> None:
    broker = make_broker(tls=tls_files, require_certificate=True)
    without = make_publisher(broker.tls_port, host="localhost", tls=TlsConfig(ca=str(tls_files.ca)),
                             outbox=tmp_path / "a.sqlite3")
    without.start()
    assert not without.wait_connected(1.0)
    with_cert = make_publisher(broker.tls_port, host="localhost", client_id="with-cert", outbox=tmp_path / "b.sqlite3",
                               tls=TlsConfig(ca=str(tls_files.ca), cert=str(tls_files.client_cert),
                                             key=str(tls_files.client_key)))
    with_cert.start()
    assert with_cert.wait_connected(5)


def test_wrong_password_is_a_clear_error_and_a_retry_not_a_crash(
        make_broker: Callable[..., Broker], make_publisher: MakePublisher, caplog: pytest.LogCaptureFixture) -> None:
    broker = make_broker(users={"hub": "right"})
    publisher = make_publisher(broker.port, username="hub", password="wrong")
    caplog.set_level(logging.DEBUG, logger="assistant.mqtt")
    publisher.start()
    deadline = time.monotonic() + 5
    while publisher.connect_attempts < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert publisher.connect_attempts >= 3  # it keeps retrying
    assert publisher.state is ConnectionState.REFUSED
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # said once, clearly
    assert f"127.0.0.1:{broker.port}" in errors[0] and "'hub'" not in errors[0] and "user hub" in errors[0]
    assert "mqtt.password" in errors[0] and "wrong" not in errors[0]
    publisher.publish_result(LIGHTS)
    assert publisher.outbox.pending_count() == 2  # kept for when the password is fixed
    start = time.monotonic()
    assert publisher.stop(timeout=2) is False
    assert time.monotonic() - start < 3


def test_password_from_the_environment(make_broker: Callable[..., Broker], make_subscriber: Callable[..., Subscriber],
                                       tmp_path: Path) -> None:
    broker = make_broker(users={"hub": "s3cret", "reader": "r"})
    hub = HubConfig.from_dict(
        {"site": "test", "mqtt": {"host": "127.0.0.1", "port": broker.port, "username": "hub", "password": "stale",
                                  "reconnect_min_s": 0.05, "reconnect_max_s": 0.2},
         "outbox": {"path": str(tmp_path / "o.sqlite3")}},
        env={"HUBVOICE_MQTT_PASSWORD": "s3cret"})
    publisher = Publisher.from_config(hub, {"changeLightState": {"state", "location"}})
    try:
        publisher.start()
        assert publisher.wait_connected(5), publisher.last_error
    finally:
        assert publisher.stop(timeout=2)

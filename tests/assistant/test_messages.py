"""Typed MQTT messages: shapes, round trips, and malformed input rejected with a reason."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

import pytest

from assistant.messages import (
    ExpiredItem,
    ExpiredReport,
    HaDiscovery,
    HermesIntent,
    HermesNotRecognized,
    InferenceResult,
    IntentEvent,
    MessageError,
    Topics,
    check_topic_level,
    decode,
    encode,
    utc_timestamp,
)

EXAMPLE = {"input": "a.wav", "understood": True, "intent": "changeLightState",
           "slots": {"state": "off", "location": "kitchen"}, "confidence": 0.97, "latency_ms": 1.8}


def test_inference_result_round_trip() -> None:
    result = InferenceResult.from_dict(EXAMPLE)
    assert result.slots == {"state": "off", "location": "kitchen"}
    assert result.to_dict() == EXAMPLE
    assert json.loads(encode(result)) == EXAMPLE
    rejected = InferenceResult.from_dict({**EXAMPLE, "understood": False, "intent": None, "slots": {}})
    assert rejected.to_dict()["intent"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"understood": "yes"}, "understood"),
        ({"understood": False}, "intent"),  # not understood but an intent given
        ({"intent": None}, "intent"),  # understood without an intent
        ({"intent": ""}, "intent"),
        ({"slots": {"state": 1}}, "slots"),
        ({"slots": ["off"]}, "slots"),
        ({"confidence": 1.5}, "confidence"),
        ({"confidence": True}, "confidence"),
        ({"confidence": float("nan")}, "confidence"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"input": 3}, "input"),
    ],
)
def test_malformed_results_are_rejected_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(MessageError, match=field):
        InferenceResult.from_dict({**EXAMPLE, **change})


def test_missing_fields_are_named() -> None:
    data = dict(EXAMPLE)
    del data["confidence"]
    with pytest.raises(MessageError, match="missing field 'confidence'"):
        InferenceResult.from_dict(data)
    with pytest.raises(MessageError, match="JSON object"):
        InferenceResult.from_dict(["not", "an", "object"])  # type: ignore[arg-type]


def test_intent_event_adds_site_id_and_utc_timestamp() -> None:
    result = InferenceResult.from_dict(EXAMPLE)
    event = IntentEvent.create(result, "kitchen", now=datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=timezone.utc))
    data = event.to_dict()
    assert data == {**EXAMPLE, "site": "kitchen", "id": event.id, "timestamp": "2025-01-31T12:00:00.123Z"}
    assert len(event.id) == 36 and event.id != IntentEvent.create(result, "kitchen").id
    assert IntentEvent.from_dict(data) == event
    assert utc_timestamp().endswith("Z")
    with pytest.raises(MessageError, match="timestamp"):
        IntentEvent.from_dict({**data, "timestamp": "yesterday"})
    with pytest.raises(MessageError, match="timestamp"):
        IntentEvent.from_dict({**data, "timestamp": "2025-01-31T12:00:00"})  # no offset
    with pytest.raises(MessageError, match="site"):
        IntentEvent.from_dict({**data, "site": "a/b"})


def test_hermes_intent_payload() -> None:
    event = IntentEvent.create(InferenceResult.from_dict(EXAMPLE), "kitchen")
    hermes = HermesIntent.from_event(event)
    assert hermes.topic == "hermes/intent/changeLightState"
    data = hermes.to_dict()
    assert data["intent"] == {"intentName": "changeLightState", "confidenceScore": 0.97}
    assert data["slots"][0] == {"entity": "state", "slotName": "state", "rawValue": "off",
                                "value": {"kind": "Custom", "value": "off"}, "confidence": 0.97}
    assert (data["siteId"], data["sessionId"]) == ("kitchen", event.id)
    assert HermesIntent.from_dict(data) == hermes
    not_understood = IntentEvent.create(InferenceResult(None, False, None), "kitchen")
    with pytest.raises(MessageError):
        HermesIntent.from_event(not_understood)
    nr = HermesNotRecognized.from_event(not_understood)
    assert nr.to_dict() == {"input": "", "siteId": "kitchen", "sessionId": not_understood.id, "customData": None}
    assert HermesNotRecognized.from_dict(nr.to_dict()) == nr


def test_hermes_topic_refuses_an_unsafe_intent_name() -> None:
    event = IntentEvent.create(InferenceResult("x", True, "lights/#", {}, 0.5, 1.0), "kitchen")
    with pytest.raises(MessageError, match="intent name: 'lights/#' contains '/'"):
        _ = HermesIntent.from_event(event).topic


def test_expired_report_round_trip() -> None:
    report = ExpiredReport("kitchen", utc_timestamp(), (ExpiredItem("id1", "t/x", "unlockDoor", 41.23456, 30.0),))
    data = report.to_dict()
    assert data["expired"][0] == {"id": "id1", "topic": "t/x", "intent": "unlockDoor", "age_s": 41.235,
                                  "max_age_s": 30.0}
    assert ExpiredReport.from_dict(json.loads(encode(report))).expired[0].intent == "unlockDoor"


def test_home_assistant_discovery() -> None:
    discovery = HaDiscovery("kitchen", "hubvoice/kitchen/intent", "hubvoice/kitchen/status", "smart_home")
    assert discovery.topic() == "homeassistant/sensor/hubvoice_kitchen/last_intent/config"
    assert discovery.topic("ha") == "ha/sensor/hubvoice_kitchen/last_intent/config"
    data = discovery.to_dict()
    assert data["unique_id"] == "hubvoice_kitchen_last_intent"
    assert data["device"]["identifiers"] == ["hubvoice_kitchen"]
    assert HaDiscovery.from_dict(data) == discovery


def test_topics() -> None:
    topics = Topics("kitchen")
    assert (topics.intent, topics.not_understood, topics.status, topics.expired) == (
        "hubvoice/kitchen/intent", "hubvoice/kitchen/not_understood", "hubvoice/kitchen/status",
        "hubvoice/kitchen/expired")
    assert Topics("kitchen", "home/voice").intent == "home/voice/kitchen/intent"
    for site in ("kitchen/+/#", "a/b", "#", "+", "kit\x00chen", ""):
        with pytest.raises(MessageError):
            Topics(site)
    with pytest.raises(MessageError):
        Topics("kitchen", "home//voice")


@pytest.mark.parametrize(
    ("value", "reason"),
    [("a/b", "'/'"), ("kitchen/+/#", "'/'"), ("+", "wildcard"), ("#", "wildcard"), ("a\x00b", "control"),
     ("line\nbreak", "control"), ("", "empty"), ("x" * 129, "at most 128"), (5, "expected a string")],
)
def test_check_topic_level_rejects_injection(value: object, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        check_topic_level(value, "location")


def test_check_topic_level_accepts_ordinary_values() -> None:
    for value in ("kitchen", "living room", "Küche", "x" * 128, "bed-room_2"):
        assert check_topic_level(value, "location") == value


def test_decode_logs_the_reason_and_gives_none(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    assert decode(IntentEvent, b"{not json", topic="hubvoice/x/intent") is None
    assert decode(IntentEvent, json.dumps({**EXAMPLE, "site": "x"}), topic="hubvoice/x/intent") is None
    assert decode(InferenceResult, b"\xff\xfe", topic="t") is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "hubvoice/x/intent" in messages[0] and "missing field 'id'" in messages[1]
    event = IntentEvent.create(InferenceResult.from_dict(EXAMPLE), "x")
    assert decode(IntentEvent, encode(event)) == event

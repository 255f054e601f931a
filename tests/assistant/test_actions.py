"""Actions: templates, filters, typed JSON payloads, start-up checks and topic-injection defence."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from assistant.actions import Actions, ActionSpec, parse_template, render_action, slug
from assistant.errors import ConfigError
from assistant.messages import MessageError

SLOTS = {"changeLightState": {"state", "location"}, "setBrightness": {"location", "level"}, "stop": set()}


def spec(**kwargs: Any) -> ActionSpec:
    return ActionSpec.from_dict({"intent": "changeLightState", "topic": "zigbee2mqtt/{location}_light/set",
                                 "payload": {"state": "{state|upper}"}, **kwargs})


def test_the_zigbee2mqtt_example() -> None:
    (action,) = Actions([spec()], SLOTS).render("changeLightState", {"state": "off", "location": "kitchen"}, "hub1")
    assert action.topic == "zigbee2mqtt/kitchen_light/set"
    assert json.loads(action.payload) == {"state": "OFF"}
    assert (action.qos, action.retain, action.intent) == (1, False, "changeLightState")


def test_json_payload_keeps_types_and_string_payloads_are_sent_as_is() -> None:
    typed = ActionSpec.from_dict({
        "intent": "setBrightness", "topic": "{site}/{intent}/{location|slug}",
        "payload": {"brightness": "{level|int}", "ratio": "{level|float}", "label": "level {level}",
                    "list": ["{location|title}", 3, None, True], "nested": {"room": "{location|upper}"}},
        "qos": 0, "retain": True})
    text = ActionSpec.from_dict({"intent": "setBrightness", "topic": "t/{location|slug}",
                                 "payload": "{{\"raw\": {level}}} in {location}"})
    actions = Actions([typed, text], SLOTS)
    first, second = actions.render("setBrightness", {"location": "Living Room", "level": "42"}, "hub1")
    assert first.topic == "hub1/setBrightness/living_room"
    assert json.loads(first.payload) == {"brightness": 42, "ratio": 42.0, "label": "level 42",
                                         "list": ["Living Room", 3, None, True], "nested": {"room": "LIVING ROOM"}}
    assert (first.qos, first.retain) == (0, True)
    assert second.payload == b'{"raw": 42} in Living Room'


def test_filters() -> None:
    def run(template: str, value: str) -> str:
        action = ActionSpec.from_dict({"intent": "x", "topic": "t", "payload": template})
        return render_action(action, {"v": value}, "hub").payload.decode()

    assert run("{v|lower}", "ON") == "on"
    assert run("{v|title}", "living room") == "Living Room"
    assert run("{v|slug}", "  Living Room/+#! ") == "living_room"
    assert run("{v|map:on=ON,off=OFF}", "off") == "OFF"
    assert run("{v|map:on=1,off=0|int}", "on") == "1"
    assert run("{ v | upper }", "a") == "A"
    with pytest.raises(MessageError, match="not mapped"):
        run("{v|map:on=ON}", "dim")
    with pytest.raises(MessageError, match="not a finite number"):
        run("{v|int}", "twenty")
    with pytest.raises(MessageError, match="not a finite number"):
        run("{v|float}", "nan")
    assert slug("Küche 2") == "k_che_2"


def test_default_fills_an_absent_slot_and_must_come_first() -> None:
    action = ActionSpec.from_dict({"intent": "setBrightness", "topic": "z2m/{location|default:All Lights|slug}/set",
                                   "payload": {"brightness": "{level|default:100|int}"}})
    actions = Actions([action], SLOTS)
    (absent,) = actions.render("setBrightness", {}, "hub")
    assert (absent.topic, json.loads(absent.payload)) == ("z2m/all_lights/set", {"brightness": 100})
    (present,) = actions.render("setBrightness", {"location": "Office", "level": "30"}, "hub")
    assert (present.topic, json.loads(present.payload)) == ("z2m/office/set", {"brightness": 30})
    with pytest.raises(ConfigError, match="'default' must come first"):
        ActionSpec.from_dict({"intent": "x", "topic": "t/{v|slug|default:a}", "payload": ""})
    # a default that would break out of its topic level is refused like any spoken value
    escape = ActionSpec.from_dict({"intent": "setBrightness", "topic": "t/{location|default:a/+}", "payload": ""})
    assert Actions([escape], SLOTS).render("setBrightness", {}, "hub") == []


def test_when_conditions_choose_actions() -> None:
    kitchen = spec(when={"location": "kitchen"}, topic="kitchen/set")
    upstairs = spec(when={"location": ["bedroom", "attic"], "state": "on"}, topic="upstairs/set")
    actions = Actions([kitchen, upstairs, spec()], SLOTS)
    render = actions.render
    assert [a.topic for a in render("changeLightState", {"state": "on", "location": "kitchen"}, "h")] == [
        "kitchen/set", "zigbee2mqtt/kitchen_light/set"]
    assert [a.topic for a in render("changeLightState", {"state": "on", "location": "attic"}, "h")] == [
        "upstairs/set", "zigbee2mqtt/attic_light/set"]
    assert [a.topic for a in render("changeLightState", {"state": "off", "location": "attic"}, "h")] == [
        "zigbee2mqtt/attic_light/set"]
    assert render("stop", {}, "h") == []


@pytest.mark.parametrize("evil", ["kitchen/+/#", "a/b", "#", "+", "kit\x00chen", "new\nline", "", "x" * 200])
def test_values_that_would_change_the_topic_are_rejected(evil: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    safe = spec(topic="lights/{location|slug}/set", payload="{state}")
    payload_only = spec(topic="lights/all/set", payload={"room": "{location}"})
    actions = Actions([spec(), safe, payload_only], SLOTS)
    rendered = actions.render("changeLightState", {"state": "on", "location": evil}, "h")
    assert "zigbee2mqtt" not in " ".join(a.topic for a in rendered)
    assert "Not publishing action 0 (changeLightState)" in caplog.text
    assert rendered[-1].topic == "lights/all/set"  # the others still go out
    assert json.loads(rendered[-1].payload) == {"room": evil}  # JSON-escaped in a payload: harmless
    for action in rendered:
        assert "+" not in action.topic and "#" not in action.topic and "\x00" not in action.topic
        assert action.topic.count("/") == 2


def test_a_missing_optional_slot_skips_only_that_action(caplog: pytest.LogCaptureFixture) -> None:
    actions = Actions([spec(), spec(topic="all/set", payload="x")], SLOTS)
    assert [a.topic for a in actions.render("changeLightState", {"state": "on"}, "h")] == ["all/set"]
    assert "slot 'location' is not in this command" in caplog.text


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ({"topic": "t/{colour}"}, "actions[0].topic: unknown slot 'colour' (intent 'changeLightState' has slots: "
                                  "location, state; built-ins: intent, site)"),
        ({"payload": {"a": ["{brightness|int}"]}}, "actions[0].payload: unknown slot 'brightness'"),
        ({"when": {"colour": "red"}}, "actions[0].when: unknown slot 'colour'"),
        ({"when": {"site": "x"}}, "actions[0].when: unknown slot 'site'"),
        ({"intent": "dance"}, "actions[0].intent: unknown intent 'dance' (the context has: changeLightState, "
                              "setBrightness, stop)"),
    ],
)
def test_unknown_slots_and_intents_fail_at_start_up(action: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Actions([spec(**action)], SLOTS, source="hub.yaml")
    assert str(info.value).startswith(f"hub.yaml: {message}")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"topic": "a/+/b"}, "topic: 'a/+/b' contains a wildcard"),
        ({"topic": "a/#"}, "wildcard"),
        ({"topic": "/a"}, "empty topic level"),
        ({"topic": "a//b"}, "empty topic level"),
        ({"topic": "$SYS/x"}, "starts with '$'"),
        ({"topic": "a/{location"}, "unclosed '{' at column 3"),
        ({"topic": "a/location}"}, "unmatched '}' at column 11"),
        ({"payload": {"s": "{state|shout}"}}, "payload.s: column 1: unknown filter 'shout' (allowed: upper, lower"),
        ({"payload": "{state|upper:x}"}, "filter 'upper' takes no argument"),
        ({"payload": "{state|map:on}"}, "map:from=to"),
        ({"payload": "{1st}"}, "expected {slot}"),
        ({"qos": 3}, "qos: expected 0, 1 or 2, got 3"),
        ({"retain": "yes"}, "retain: expected true or false"),
        ({"colour": "red"}, "unknown key 'colour' (allowed: intent, topic, payload, when, qos, retain)"),
        ({"when": {"state": 1}}, "when.state: expected a slot value"),
        ({"payload": {"x": {1, 2}}}, "expected a string or JSON value"),
    ],
)
def test_malformed_actions_are_config_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        spec(**data)
    assert message in str(info.value)


def test_missing_keys_and_non_mappings() -> None:
    with pytest.raises(ConfigError, match="actions\\[3\\]: missing key 'payload'"):
        ActionSpec.from_dict({"intent": "x", "topic": "t"}, where="actions[3]")
    with pytest.raises(ConfigError, match="expected a mapping"):
        ActionSpec.from_dict(["intent"])


def test_templates_parse_with_escapes() -> None:
    assert parse_template("a{{b}}c", "w") == ("a{b}c",)
    parts = parse_template("x{v|map:a=1,b=2|int}y", "w")
    assert parts[0] == "x" and parts[2] == "y"


def test_spec_round_trip() -> None:
    original = spec(when={"location": ["kitchen"]}, qos=2, retain=True)
    assert ActionSpec.from_dict(original.to_dict()) == original

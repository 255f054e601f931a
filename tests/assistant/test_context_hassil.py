"""Importing Home Assistant intent templates (hassil format) into a Context."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from assistant.context import (
    Choice,
    Seq,
    Slot,
    Words,
    import_hassil,
    iter_sentences,
    normalize_text,
    parse_context,
    sample_sentences,
)
from assistant.errors import ContextError

HA: dict[str, Any] = {
    "language": "en",
    "intents": {
        "HassTurnOn": {"data": [
            {"sentences": ["<turn> on [the] {area} light[s]",
                           "<turn> on the fan[s] [(in|on) {area}]",
                           "(on;<here>) lights"],
             "slots": {"domain": "light"},
             "requires_context": {"area": {"slot": True}},
             "excludes_context": {"domain": ["fan"]}},
        ]},
        "HassLightSet": {"data": [{"sentences": [
            "set [the] brightness to {brightness}[%| percent]",
            "[set] {name} to {color}",
            "set the color to {color}",
        ]}]},
        "HassTimer": {"data": [{"sentences": ["set a timer for {minutes:duration} minute[s]",
                                              "lower by {step_down:step}"]}]},
        "HassBroadcast": {"data": [{"sentences": ["broadcast {message}"]}]},
    },
    "lists": {
        "brightness": {"range": {"type": "percentage", "from": 0, "to": 100, "step": 50}},
        "minutes": {"range": {"from": 1, "to": 2, "fractions": "halves"}},
        "step_down": {"range": {"from": 1, "to": 2, "multiplier": -1}},
        "color": {"values": [{"in": "red", "out": "red"}, {"in": "(blue|azure)", "out": "blue"}, "green"]},
        "message": {"wildcard": True},
    },
    "expansion_rules": {"turn": "(turn|switch)", "here": "[in] here"},
    "skip_words": ["please"],
}


def test_import_without_runtime_lists(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        ctx = import_hassil(HA)
    assert ctx.intents == ("HassTurnOn", "HassLightSet", "HassTimer")  # HassBroadcast needs free text
    turn_on = ctx.expressions["HassTurnOn"]
    # sentence 1 needs {area}: skipped; sentence 2 loses only its optional area part
    assert [e.text for e in turn_on] == ["[turn, switch] on the [fan, fans]",
                                         "[on (in) here, (in) here on] lights"]
    assert all(e.fixed_slots == (("domain", "light"),) for e in turn_on)
    assert "HassTurnOn, sentence 1 skipped: list 'area' has no values" in caplog.text
    assert "HassBroadcast: no sentence could be used" in caplog.text
    assert "list 'name' has no values" in caplog.text
    assert [e.text for e in ctx.expressions["HassLightSet"]] == [
        "set (the) brightness to $brightness:brightness (percent)", "set the color to $color:color"]


def test_lists_glue_ranges_and_synonyms() -> None:
    ctx = import_hassil(HA)
    assert [(v.spoken, v.value) for v in ctx.slots["color"].values] == [
        ("red", "red"), ("blue", "blue"), ("azure", "blue"), ("green", "green")]
    assert [v.value for v in ctx.slots["brightness"].values] == ["0", "50", "100"]
    assert [(v.spoken, v.value) for v in ctx.slots["minutes"].values] == [("1", "1"), ("1.5", "1.5"), ("2", "2")]
    assert [(v.spoken, v.value) for v in ctx.slots["step_down"].values] == [("1", "-1"), ("2", "-2")]
    timer = ctx.expressions["HassTimer"][0].node
    assert timer == Seq((Words("set a timer for"), Slot("minutes", "duration"),
                         Choice((Words("minute"), Words("minutes")))))
    texts = {s.text for s in iter_sentences(ctx, "HassTimer")}
    assert "set a timer for one point five minutes" in texts
    assert "lower by two" in texts
    assert ctx.count("HassLightSet") == 2 * 3 * 2 + 4


def test_runtime_lists_fill_the_gaps() -> None:
    lists = {"area": ["Kitchen", "living room"], "name": {"ceiling light": "light.ceiling"},
             "message": ["dinner is ready"]}
    ctx = import_hassil(HA, lists=lists)
    assert ctx.intents == ("HassTurnOn", "HassLightSet", "HassTimer", "HassBroadcast")
    assert [v.value for v in ctx.slots["area"].values] == ["Kitchen", "living room"]
    texts = {(s.text, tuple(sorted(s.slots.items()))) for s in iter_sentences(ctx)}
    assert ("switch on kitchen lights", (("area", "Kitchen"), ("domain", "light"))) in texts
    assert ("turn on the fans on living room", (("area", "living room"), ("domain", "light"))) in texts
    assert ("ceiling light to azure", (("color", "blue"), ("name", "light.ceiling"))) in texts
    assert ("broadcast dinner is ready", (("message", "dinner is ready"),)) in texts


def test_filter_by_intent_and_unknown_intent() -> None:
    ctx = import_hassil(HA, intents=["HassTimer"])
    assert ctx.intents == ("HassTimer",)
    assert set(ctx.slots) == {"minutes", "step_down"}
    with pytest.raises(ContextError, match="unknown intent.*HassNope.*available: HassTurnOn"):
        import_hassil(HA, intents=["HassNope"])


@pytest.mark.parametrize(("sentence", "column", "message"), [
    ("set [the brightness", 5, "'[' is never closed"),
    ("set the) brightness", 8, "unbalanced brackets: unexpected ')'"),
    ("set (a|b;c) x", 5, "mixes '|' (alternatives) and ';'"),
    ("set <nope> x", 5, "unknown expansion rule <nope>"),
    ("set {color x", 5, "'{' is never closed"),
    ("set {my color} x", 5, "list and slot names are"),
])
def test_template_errors_name_intent_sentence_and_column(sentence: str, column: int, message: str) -> None:
    data = {"intents": {"HassX": {"data": [{"sentences": ["fine", sentence]}]}}, "lists": HA["lists"]}
    with pytest.raises(ContextError) as info:
        import_hassil(data)
    error = info.value
    assert (error.intent, error.expression, error.column) == ("HassX", 2, column)
    assert message in str(error)


def test_nothing_usable_and_malformed_data_are_errors() -> None:
    with pytest.raises(ContextError, match="no Home Assistant sentence could be used"):
        import_hassil({"intents": {"HassX": {"data": [{"sentences": ["hi {area}"]}]}}})
    with pytest.raises(ContextError, match="expected {data: ") as info:
        import_hassil({"intents": {"HassX": {"data": ["hi"]}}})
    assert info.value.intent == "HassX"
    with pytest.raises(ContextError, match="list 'area': expected {values"):
        import_hassil({"intents": {"HassX": {"data": [{"sentences": ["hi {area}"]}]}}},
                      lists={"area": {"range": [0, 5]}})


def test_round_trip_and_sampling() -> None:
    ctx = import_hassil(HA, lists={"area": ["kitchen"]})
    assert parse_context(ctx.to_yaml()) == ctx
    samples = sample_sentences(ctx, 60, seed=0)
    valid = {(s.text, s.intent, tuple(sorted(s.slots.items()))) for s in iter_sentences(ctx)}
    assert all((s.text, s.intent, tuple(sorted(s.slots.items()))) in valid for s in samples)


def test_folder_of_yaml_templates(tmp_path: Path) -> None:
    (tmp_path / "_common.yaml").write_text(
        "language: en\nlists:\n  color:\n    values: [red, {in: '(navy|dark blue)', out: navy}]\n"
        "expansion_rules:\n  set: (set|make)\n", encoding="utf-8")
    (tmp_path / "light_HassLightSet.yaml").write_text(
        "language: en\nintents:\n  HassLightSet:\n    data:\n      - sentences:\n"
        "          - <set> the lights {color}\n", encoding="utf-8")
    (tmp_path / "light_more.json").write_text(json.dumps(
        {"language": "en", "intents": {"HassLightSet": {"data": [{"sentences": ["{color} lights"]}]}}}),
        encoding="utf-8")
    (tmp_path / "fr.yaml").write_text("language: fr\nintents:\n  HassFr:\n    data: [{sentences: [salut]}]\n",
                                      encoding="utf-8")
    ctx = import_hassil(tmp_path)
    assert ctx.intents == ("HassLightSet",)
    assert ctx.count() == 2 * 3 + 3
    assert ctx.file == str(tmp_path)
    with pytest.raises(ContextError, match="no such file or folder"):
        import_hassil(tmp_path / "missing")


# --- the real Home Assistant data installed with home-assistant-intents -----------------


def test_real_english_templates_smoke() -> None:
    pytest.importorskip("home_assistant_intents")
    ctx = import_hassil(language="en", intents=["HassTurnOn", "HassLightSet"])
    assert ctx.intents == ("HassTurnOn", "HassLightSet")
    assert ctx.count("HassTurnOn") > 1000 and ctx.count("HassLightSet") > 1000
    assert {"brightness", "color", "domain"} <= set(ctx.slot_heads())
    assert "100" in ctx.slot_heads()["brightness"]
    samples = sample_sentences(ctx, 80, seed=0)
    vocabulary = ctx.vocabulary()
    for sample in samples:
        assert sample.text and sample.text == normalize_text(sample.text)
        assert set(sample.text.split()) <= vocabulary
        for spoken in sample.spoken.values():
            assert f" {spoken} " in f" {sample.text} "
        if sample.intent == "HassLightSet":
            assert sample.slots["domain"] == "light"
    brightness = [s for s in samples if "brightness" in s.slots and s.slots["brightness"] not in ("1", "100")]
    assert brightness, "some sample sets a numeric brightness"
    for sample in brightness:
        assert normalize_text(sample.slots["brightness"]) in sample.text
    assert parse_context(ctx.to_yaml()) == ctx

"""Balanced, covering, deterministic sampling of labelled sentences."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from assistant.context import (
    Context,
    Sample,
    iter_sentences,
    load_context,
    min_samples_for_coverage,
    normalize_text,
    parse_context,
    sample_sentences,
)
from assistant.errors import ContextError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

COFFEE = {"context": {
    "expressions": {
        "orderBeverage": [
            "[give, get, bring] (me) (a, an) $size:size $coffeeDrink:coffeeDrink",
            "(can I, may I) (have) (a) $size:size $numberOfShots:numberOfShots $coffeeDrink:coffeeDrink (please)",
            "$size:size $roast:roast $numberOfShots:numberOfShots $coffeeDrink:coffeeDrink with "
            "$milkAmount:milkAmount and $sugarAmount:sugarAmount",
            "(I'd like) (a) [$size:size, $roast:roast] $coffeeDrink:coffeeDrink ([with, and] $milkAmount:milkAmount)",
        ],
        "cancelOrder": ["[cancel, forget] (my, the) order", "never mind"],
        "rateDrink": ["it was $stars:stars stars"],
    },
    "slots": {
        "coffeeDrink": ["americano", "cappuccino", "espresso", "latte", "mocha", "flat white", "macchiato"],
        "size": ["small", "medium", "large", {"big": "large"}],
        "numberOfShots": ["single shot", "double shot", {"3 shots": "triple shot"}],
        "roast": ["light roast", "dark roast"],
        "milkAmount": ["a little bit of soy milk", "some milk", "no milk", "lots of oat milk"],
        "sugarAmount": ["no sugar", "one sugar", "two sugars"],
        "stars": {"range": [1, 5]},
    },
}}


def _key(sample: Sample) -> tuple[str, str, tuple[tuple[str, str], ...], int]:
    return sample.text, sample.intent, tuple(sorted(sample.slots.items())), sample.expression


def _check_labels(ctx: Context, samples: list[Sample]) -> None:
    """Every sample is a real sentence of its expression with exactly its labels."""
    valid = {_key(s) for s in iter_sentences(ctx)}
    for sample in samples:
        assert _key(sample) in valid, sample
        for name, spoken in sample.spoken.items():
            assert f" {spoken} " in f" {sample.text} "
            heads = [v.value for t in ctx.slots.values() for v in t.values if normalize_text(v.spoken) == spoken]
            assert sample.slots[name] in heads


def _check_coverage(ctx: Context, samples: list[Sample]) -> None:
    seen_expressions = {(s.intent, s.expression) for s in samples}
    assert seen_expressions == {(i, k) for i in ctx.intents for k in range(len(ctx.expressions[i]))}
    for intent in ctx.intents:
        said = {(name, spoken) for s in samples if s.intent == intent for name, spoken in s.spoken.items()}
        for name, values in ctx.slot_values(intent).items():
            for _, value in values:
                if value.spoken:  # fixed slots are not said
                    assert (name, normalize_text(value.spoken)) in said, (intent, name, value)


def test_minimum_sample_covers_everything() -> None:
    ctx = parse_context(COFFEE)
    n = min_samples_for_coverage(ctx)
    # orderBeverage: 4 expressions, then the 7 drinks need 3 more sentences; 2 + 5 for the others
    assert n == 7 + 2 + 5
    samples = sample_sentences(ctx, n, seed=0)
    assert len(samples) == n
    _check_coverage(ctx, samples)
    _check_labels(ctx, samples)
    assert len({s.text for s in samples}) == n


def test_minimum_by_hand_and_independent_of_seed() -> None:
    ctx = parse_context({"context": {"expressions": {"a": ["turn on $loc:room", "lights on"], "b": ["stop"]},
                                     "slots": {"loc": ["kitchen", "hall", "attic"]}}})
    assert min_samples_for_coverage(ctx) == 4 + 1  # e1 (kitchen), e2, e1 (hall), e1 (attic); stop
    for seed in range(5):
        _check_coverage(ctx, sample_sentences(ctx, 5, seed=seed))


def test_coverage_with_more_samples_and_labels_correct() -> None:
    ctx = parse_context(COFFEE)
    samples = sample_sentences(ctx, 300, seed=7)
    assert len(samples) == 300
    _check_coverage(ctx, samples)
    _check_labels(ctx, samples)
    counts = Counter(s.intent for s in samples)
    # rateDrink has 5 sentences and cancelOrder 7: balanced means 100 each, repeats unavoidable
    assert counts == {"orderBeverage": 100, "cancelOrder": 100, "rateDrink": 100}
    assert len({s.text for s in samples if s.intent == "orderBeverage"}) == 100


def test_repeats_are_dealt_evenly_when_an_intent_runs_out() -> None:
    ctx = parse_context(COFFEE)
    rates = Counter(s.text for s in sample_sentences(ctx, 300, seed=1) if s.intent == "rateDrink")
    assert len(rates) == 5 and set(rates.values()) == {20}


def test_no_duplicates_when_the_grammar_allows() -> None:
    ctx = load_context(EXAMPLES / "lights.yaml")
    samples = sample_sentences(ctx, 1500, seed=3)
    assert len({s.text for s in samples}) == 1500
    assert Counter(s.intent for s in samples) == {i: 500 for i in ctx.intents}


def test_extras_are_balanced_across_expressions() -> None:
    ctx = parse_context({"context": {"expressions": {"a": ["$n:n apples", "give me $n:n pears (please)"]},
                                     "slots": {"n": {"range": [0, 999]}}}})
    counts = Counter(s.expression for s in sample_sentences(ctx, 1200, seed=0))
    assert abs(counts[0] - counts[1]) <= 1
    # an expression with too few sentences gives what it has, the rest goes to the other
    ctx = parse_context({"context": {"expressions": {"a": ["hello", "[hi, hey] $n:n"]},
                                     "slots": {"n": {"range": [0, 99]}}}})
    counts = Counter(s.expression for s in sample_sentences(ctx, 60, seed=0))
    assert counts == {0: 1, 1: 59}


def test_below_the_minimum_balanced_across_intents_then_expressions() -> None:
    ctx = parse_context(COFFEE)
    samples = sample_sentences(ctx, 7, seed=2)
    counts = Counter(s.intent for s in samples)
    assert sorted(counts.values()) == [2, 2, 3]
    for intent in ctx.intents:
        expressions = [s.expression for s in samples if s.intent == intent]
        assert len(set(expressions)) == min(len(expressions), len(ctx.expressions[intent]))
    assert sample_sentences(ctx, 0) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        sample_sentences(ctx, -1)


def test_deterministic_given_the_seed() -> None:
    ctx = load_context(EXAMPLES / "smart_home.yaml")
    first = sample_sentences(ctx, 400, seed=11)
    assert first == sample_sentences(ctx, 400, seed=11)
    assert first != sample_sentences(ctx, 400, seed=12)
    assert min_samples_for_coverage(ctx) <= 400
    _check_coverage(ctx, first)


def test_astronomical_grammar_samples_quickly() -> None:
    expression = "(please) " + " ".join(f"$digit:d{i}" for i in range(40))
    ctx = parse_context({"context": {"expressions": {"code": [expression]},
                                     "slots": {"digit": [str(d) for d in range(10)]}}})
    samples = sample_sentences(ctx, 50, seed=0)
    assert len({s.text for s in samples}) == 50
    assert all(len(s.slots) == 40 for s in samples)


def test_fixed_slots_are_labels() -> None:
    ctx = parse_context({"context": {"expressions": {"on": [
        {"expression": "turn on the fan", "slots": {"domain": "fan"}},
        {"expression": "turn on the $room:area light", "slots": {"domain": "light"}}]},
        "slots": {"room": ["kitchen"]}}})
    samples = sorted(sample_sentences(ctx, 2), key=lambda s: s.expression)
    assert [s.slots for s in samples] == [{"domain": "fan"}, {"area": "kitchen", "domain": "light"}]
    assert samples[1].spoken == {"area": "kitchen"}


def test_ambiguous_sentences_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    ctx = parse_context({"context": {"expressions": {"a": ["stop"], "b": ["stop"]}}})
    with caplog.at_level(logging.WARNING):
        assert [s.text for s in sample_sentences(ctx, 2)] == ["stop", "stop"]
    assert caplog.text.count("ambiguous context: 'stop' is both a {} and b {}") == 1
    caplog.clear()
    many = parse_context({"context": {"expressions": {"a": ["$n:n"], "b": ["$n:n"]},
                                      "slots": {"n": {"range": [1, 30]}}}})
    with caplog.at_level(logging.WARNING):
        sample_sentences(many, 60)
    assert caplog.text.count("is both") == 10
    assert "30 sentences in all have two different labels" in caplog.text


def test_sample_dict_round_trip_and_errors() -> None:
    sample = Sample("turn on the kitchen light", "lights", {"location": "kitchen"}, 2, {"location": "kitchen"})
    assert Sample.from_dict(sample.to_dict()) == sample
    bad: list[Any] = [
        [], {"text": "x", "intent": "a"}, {"text": "x", "intent": "a", "expression": True},
        {"text": "x", "intent": "a", "expression": 0, "slots": {"a": 1}},
    ]
    for data in bad:
        with pytest.raises(ContextError):
            Sample.from_dict(data)

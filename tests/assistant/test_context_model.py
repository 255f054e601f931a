"""Counting, slot heads, vocabulary and canonical trees of a Context."""

from __future__ import annotations

import time
from typing import Any

import pytest

from assistant.context import (
    Choice,
    Seq,
    Words,
    format_node,
    iter_sentences,
    normalize_text,
    parse_context,
)
from assistant.context.model import EMPTY, make_choice, make_seq
from assistant.errors import ContextError


def _ctx(expressions: dict[str, list[Any]], slots: dict[str, Any] | None = None,
         macros: dict[str, Any] | None = None) -> Any:
    body: dict[str, Any] = {"expressions": expressions, "slots": slots or {}}
    if macros:
        body["macros"] = macros
    return parse_context({"context": body})


def test_counts_by_hand() -> None:
    ctx = _ctx({
        "a": ["(please) [turn, switch] $state:state (the) $location:location [light, lights]"],
        "b": ["(@polite) stop", "[go (now), (really) leave] $state:state"],
    }, slots={"state": ["on", "off"], "location": ["kitchen", "living room", "bedroom"]},
        macros={"polite": ["please", "could you", "kindly"]})
    assert ctx.count("a") == 2 * 2 * 2 * 2 * 3 * 2 == 96
    assert ctx.count("b") == (3 + 1) + (2 + 2) * 2 == 12
    assert ctx.count() == 108
    with pytest.raises(ContextError, match="unknown intent 'c' \\(defined: a, b\\)"):
        ctx.count("c")
    with pytest.raises(ContextError, match="unknown intent"):
        list(iter_sentences(ctx, "c"))


def test_count_equals_enumeration() -> None:
    ctx = _ctx({"a": ["(x, y) [p (q), r s] $n:n (t)", "@m $n:n"], "b": ["z"]},
               slots={"n": [{"one": "1"}, "two", {"uno": "1"}]}, macros={"m": ["u", "(v) w"]})
    sentences = list(iter_sentences(ctx))
    assert len(sentences) == ctx.count() == 3 * 3 * 3 * 2 + 3 * 3 + 1
    assert len(list(iter_sentences(ctx, "a"))) == ctx.count("a")


def test_astronomical_count_is_exact_and_fast() -> None:
    expression = "(please) " + " ".join(f"$digit:d{i}" for i in range(40)) + " [now, later, soon]"
    ctx = _ctx({"code": [expression, "cancel"]}, slots={"digit": [str(d) for d in range(10)]})
    start = time.perf_counter()
    total = ctx.count()
    assert total == 2 * 10**40 * 3 + 1
    assert total > 10**30
    assert time.perf_counter() - start < 0.5


def test_slot_heads_union_over_types_and_intents_in_first_seen_order() -> None:
    ctx = _ctx({
        "media": ["$media:action the music", "$step:action song"],
        "cover": ["$cover:action the blinds", {"expression": "stop the blinds", "slots": {"action": "stop"}}],
    }, slots={"media": ["pause", {"resume": "play"}, "stop"], "step": ["next", {"skip": "next"}],
              "cover": ["open", {"shut": "close"}, "close"]})
    assert ctx.slot_heads() == {"action": ["pause", "play", "stop", "next", "open", "close"]}
    assert ctx.intent_slots("media") == {"action"}


def test_vocabulary_is_every_word_of_every_sentence() -> None:
    ctx = _ctx({"a": ["Turn (the) $n:n [lights, lamp]", "@m it's 21"]},
               slots={"n": ["Kitchen", {"3rd floor": "3"}]}, macros={"m": ["well", "OK then"]})
    words = {w for s in iter_sentences(ctx) for w in s.text.split()}
    assert ctx.vocabulary() == words
    assert {"third", "twenty", "one", "it's", "kitchen"} <= words


def test_canonical_trees() -> None:
    assert make_seq([Words("a"), Seq((Words("b"), Choice((Words("c"), Words("d"))))), EMPTY]) == Seq(
        (Words("a b"), Choice((Words("c"), Words("d")))))
    assert make_choice([Words("a"), EMPTY, Words("a")]) == Choice((Words("a"),), optional=True)
    assert make_choice([Words("a")]) == Words("a")
    assert make_choice([EMPTY]) == EMPTY
    tree = make_seq([Words("turn"), make_choice([Words("on"), make_seq([Words("off"), Words("now")])], True)])
    assert format_node(tree) == "turn (on, off now)"


def test_texts_are_normalized_but_sources_are_kept() -> None:
    ctx = _ctx({"a": ["Set it to $t:t °"]}, slots={"t": ["21.5"]})
    (sentence,) = iter_sentences(ctx)
    assert sentence.text == "set it to twenty one point five degrees"
    assert sentence.slots == {"t": "21.5"} and sentence.spoken == {"t": normalize_text("21.5")}
    assert ctx.expressions["a"][0].text == "Set it to $t:t °"


def test_small_examples_are_unambiguous() -> None:
    """Their counts are of distinct sentences: no text can be said two ways."""
    from pathlib import Path

    from assistant.context import load_context

    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("lights", "digits"):
        ctx = load_context(root / f"{name}.yaml")
        texts = [s.text for s in iter_sentences(ctx)]
        assert len(set(texts)) == len(texts) == ctx.count()

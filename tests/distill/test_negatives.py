"""Negatives: the grammar check is exact, near misses and out-of-domain sentences are never commands."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from assistant.context import Context, parse_context
from assistant.context.sample import iter_sentences
from assistant.errors import ConfigError
from distill.negatives import (
    NEGATIVE_KINDS,
    OUT_OF_DOMAIN,
    CommandChecker,
    NegativeConfig,
    near_misses,
    out_of_domain,
    plan_negatives,
    render_nonspeech,
)

LIGHTS = """
context:
  expressions:
    changeLightState:
      - "[turn, switch] $state:state (the) $location:location [light, lights]"
      - "@polite [turn, switch] (the) $location:location [light, lights] $state:state"
    setColor:
      - "make (the) $location:location [light, lights] $color:color"
  slots:
    state: ["on", "off"]
    location: ["kitchen", "living room", {"bed room": "bedroom"}]
    color: ["red", "blue"]
  macros:
    polite: ["please", "could you"]
"""


@pytest.fixture(scope="module")
def ctx() -> Context:
    return parse_context(LIGHTS)


def _all(ctx: Context) -> set[str]:
    return {s.text for s in iter_sentences(ctx)}


def test_checker_agrees_with_enumeration(ctx: Context) -> None:
    sentences = _all(ctx)
    check = CommandChecker(ctx)
    assert all(check(s) for s in sentences)
    assert check("Please switch the Living Room lights OFF!")  # normalized like speech
    rng = random.Random(3)
    words = sorted(ctx.vocabulary()) + ["the", "paint"]
    candidates = [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(3000)]
    for s in rng.sample(sorted(sentences), 100):  # one-word edits of real sentences
        w = s.split()
        i = rng.randrange(len(w))
        candidates += [" ".join(w[:i] + w[i + 1:]), " ".join(w[:i] + [rng.choice(words)] + w[i:])]
    for text in candidates:
        assert check(text) == (text in sentences), text
    assert not check("turn on the kitchen") and not check("please turn on the kitchen light")


def test_near_misses_are_not_commands(ctx: Context) -> None:
    sentences = _all(ctx)
    misses = near_misses(ctx, 80, random.Random(7))
    assert len(misses) == 80
    assert not [t for t, _ in misses if t in sentences]
    assert all(t.strip() for t, _ in misses)
    hows = Counter(how for _, how in misses)
    assert len(hows) >= 5, hows
    vocabulary = ctx.vocabulary()
    # made of the context's words (a swapped verb excepted)
    assert all(w in vocabulary for t, how in misses if how != "verb_swap" for w in t.split())
    assert near_misses(ctx, 80, random.Random(7)) == misses


def test_out_of_domain_sentences_skip_commands() -> None:
    assert len(OUT_OF_DOMAIN) >= 200 and len(set(OUT_OF_DOMAIN)) == len(OUT_OF_DOMAIN)
    taken = OUT_OF_DOMAIN[5]
    tricky = parse_context(f"""
context:
  expressions:
    ask:
      - "{taken}"
      - "how many $thing:thing does a spider have"
  slots:
    thing: ["legs", "eyes"]
""")
    picked = out_of_domain(tricky, 2 * len(OUT_OF_DOMAIN), random.Random(0))
    assert len(picked) == 2 * len(OUT_OF_DOMAIN)
    assert taken not in picked and "how many legs does a spider have" not in picked
    assert "why is the sky blue during the day" in picked


def test_plan_negatives_labels_and_mix(ctx: Context) -> None:
    plan = plan_negatives(ctx, 200, random.Random(1))
    assert len(plan) == 200
    kinds = Counter(n.kind for n in plan)
    assert set(kinds) == set(NEGATIVE_KINDS)
    assert 40 <= kinds["near_miss"] <= 100 and 40 <= kinds["out_of_domain"] <= 100
    sentences = _all(ctx)
    for neg in plan:
        if neg.kind in ("silence", "noise"):
            assert neg.text == "" and neg.params["duration_s"] > 0
        else:
            assert neg.text and neg.text not in sentences
    assert plan_negatives(ctx, 200, random.Random(1)) == plan
    only_noise = plan_negatives(ctx, 10, random.Random(1), NegativeConfig(weights=(("noise", 1.0),)))
    assert {n.kind for n in only_noise} == {"noise"}


def test_render_nonspeech_level_and_determinism(ctx: Context) -> None:
    plan = plan_negatives(ctx, 60, random.Random(2), NegativeConfig(weights=(("silence", 1.0), ("noise", 2.0))))
    for neg in plan[:12]:
        audio = render_nonspeech(neg.params)
        assert audio.dtype == np.float32
        assert audio.size == round(neg.params["duration_s"] * 16000)
        level = 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        assert level == pytest.approx(neg.params["level_db"], abs=0.5)
        if neg.kind == "silence":
            assert level <= -50
        np.testing.assert_array_equal(audio, render_nonspeech(neg.params))
    sources = {n.params["source"] for n in plan if n.kind == "noise"}
    assert sources == {"colored", "household"}


def test_negative_config_validation() -> None:
    with pytest.raises(ConfigError, match="not one of out_of_domain, near_miss, silence, noise"):
        NegativeConfig(weights=(("music", 1.0),))
    with pytest.raises(ConfigError, match="at least one kind"):
        NegativeConfig(weights=(("noise", 0.0),))
    config = NegativeConfig(weights=(("noise", 2.0), ("silence", 1.0)), noise_db=(-30.0, -20.0))
    assert NegativeConfig.from_dict(config.to_dict()) == config

"""Grammar-constrained CTC decoding: the context's sentences, spelled by a lexicon, found in per-step scores."""

from __future__ import annotations

import numpy as np
import pytest

from assistant import grammar
from assistant.context import parse_context
from assistant.decode import HeadLayout
from assistant.errors import BundleError
from assistant.grammar import (
    BLANK,
    SCORE_FEATURES,
    GrammarGraph,
    GrammarSettings,
    Lexicon,
    Scorer,
    choose,
    free_path_score,
    heads_log_prob,
)


@pytest.fixture(autouse=True, params=["c", "python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on both searches: the compiled one (as a hub runs) and the Python loop."""
    monkeypatch.setattr(grammar, "SEARCH_ENGINE", request.param)
    return str(request.param)

CONTEXT = parse_context("""
context:
  expressions:
    lights:
      - "(please) turn $state:state [the, all] $room:room lights"
      - "$room:room lights $state:state"
    timer:
      - "set a timer for $minutes:minutes minutes"
  slots:
    state: [on, off]
    room: [kitchen, {living room: living_room}]
    minutes: {range: [1, 3]}
""")


def _letters(ctx_words: list[str]) -> Lexicon:
    """Words spelled letter by letter: a lexicon whose units are the letters (enough to test the search)."""
    units = tuple(sorted({c for w in ctx_words for c in w}))
    return Lexicon(units, {w: tuple(w) for w in ctx_words})


LEXICON = _letters(sorted(CONTEXT.vocabulary()))


def _scores(text: str, lexicon: Lexicon = LEXICON, frames_per_unit: int = 2, p: float = 0.9) -> np.ndarray:
    """Per-step log-probs that say ``text``: each unit for a few steps then a blank; silence around it."""
    classes = [BLANK, BLANK]
    for word in text.split():
        for c in lexicon.spell(word):
            classes += [c] * frames_per_unit + [BLANK]
    classes += [BLANK, BLANK]
    n = len(lexicon.units) + 1
    lp = np.full((len(classes), n), np.log((1 - p) / (n - 1)))
    lp[np.arange(len(classes)), classes] = np.log(p)
    return lp


def test_a_said_sentence_is_decoded_to_its_intent_and_slots() -> None:
    graph = GrammarGraph.from_lexicon(CONTEXT, LEXICON)
    best = graph.decode(_scores("please turn off all living room lights"))[0]
    assert (best.intent, best.slots) == ("lights", {"state": "off", "room": "living_room"})
    best = graph.decode(_scores("kitchen lights on"))[0]
    assert (best.intent, best.slots) == ("lights", {"state": "on", "room": "kitchen"})
    # numbers are said as words; the range's value is reported as the number
    best = graph.decode(_scores("set a timer for three minutes"))[0]
    assert (best.intent, best.slots) == ("timer", {"minutes": "3"})


def test_repeated_units_need_a_blank_between_them() -> None:
    """'all' spells a, l, l: CTC says the second l only after a blank, so one unbroken run of l is not 'all'."""
    graph = GrammarGraph.from_lexicon(CONTEXT, LEXICON)
    a, el = LEXICON.spell("all")[:2]

    def saying_all(gap: int) -> np.ndarray:
        lp = _scores("turn on the kitchen lights")
        t = [i for i in range(len(lp)) if lp[i].argmax() == LEXICON.spell("the")[0]][0]  # "the" -> "all"
        run = [a, a, BLANK, el, el, gap, el, el, BLANK]
        out = np.concatenate([lp[:t], np.full((len(run), lp.shape[1]), np.log(0.1 / (lp.shape[1] - 1))),
                              lp[t + 7:]])
        out[np.arange(t, t + len(run)), run] = np.log(0.9)
        return out

    with_blank, without = graph.decode(saying_all(BLANK))[0], graph.decode(saying_all(el))[0]
    assert (with_blank.intent, with_blank.slots) == ("lights", {"state": "on", "room": "kitchen"})
    assert with_blank.score - without.score > 5  # without the blank, 'all' costs a badly scored step


def test_only_whole_sentences_are_returned_best_first() -> None:
    graph = GrammarGraph.from_lexicon(CONTEXT, LEXICON)
    # "kitchen lights" stops before its state: no sentence ends there, so no result lacks the state
    lights = [h for h in graph.decode(_scores("kitchen lights"), prune=1e9) if h.intent == "lights"]
    assert lights and all("state" in h.slots for h in lights)
    hyps = graph.decode(_scores("turn on the kitchen lights", p=0.6), nbest=5, prune=1e9)
    assert len(hyps) >= 3 and [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    assert (hyps[0].intent, hyps[0].slots) == ("lights", {"state": "on", "room": "kitchen"})
    assert len({(h.intent, tuple(sorted(h.slots.items()))) for h in hyps}) == len(hyps)  # distinct results


def test_the_blank_penalty_is_taken_off_every_blank_step() -> None:
    graph = GrammarGraph.from_lexicon(CONTEXT, LEXICON)
    lp = _scores("turn on the kitchen lights", p=0.6)
    lowered = lp.copy()
    lowered[:, BLANK] -= 2.0
    penalized, by_hand = graph.decode(lp, blank_penalty=2.0), graph.decode(lowered)
    assert [(h.intent, h.slots) for h in penalized] == [(h.intent, h.slots) for h in by_hand]
    assert [h.score for h in penalized] == pytest.approx([h.score for h in by_hand])
    assert penalized[0].score < graph.decode(lp)[0].score - 2.0  # the path has blank steps


def test_bad_input_is_refused() -> None:
    graph = GrammarGraph.from_lexicon(CONTEXT, LEXICON)
    with pytest.raises(ValueError, match=r"expected \[steps, 1 \+ units\]"):
        graph.decode(np.zeros(5))
    with pytest.raises(BundleError, match="no spelling for the word 'please'"):
        GrammarGraph.from_lexicon(CONTEXT, Lexicon(("a",), {"on": ("a",)}))
    with pytest.raises(BundleError, match="unknown: x"):
        Lexicon(("a",), {"on": ("x",)})
    with pytest.raises(BundleError, match="without duplicates"):
        Lexicon(("a", "a"), {})
    with pytest.raises(BundleError, match="expected an object"):
        Lexicon.from_dict({"units": "abc"})
    with pytest.raises(BundleError, match="word 'on'"):
        Lexicon.from_dict({"units": ["a"], "words": {"on": "a"}})


def test_lexicon_round_trips_and_encodes_transcripts() -> None:
    again = Lexicon.from_dict(LEXICON.to_dict())
    assert again == LEXICON
    # normalized like the corpus's transcripts (numbers as words); a word it lacks is skipped
    assert again.encode("Turn ON  the 2 lamps") == [*LEXICON.spell("turn"), *LEXICON.spell("on"),
                                                    *LEXICON.spell("the"), *LEXICON.spell("two")]


def test_the_graph_shares_beginnings_and_ends_and_keeps_every_meaning() -> None:
    ctx = parse_context("""
context:
  expressions:
    on:
      - "turn on the light"
      - "turn on the fan"
      - "switch on the light"
    off:
      - "turn off the light"
    again:
      - "turn on the fan"
""")
    graph = GrammarGraph.from_lexicon(ctx, _letters(sorted(ctx.vocabulary())))
    first = {graph.arc_units[a] for a in graph.successors(graph.start)}
    assert len(graph.successors(graph.start)) == len(first) == 2  # "turn" and "switch", once each
    # one "the light" / "the fan" ending shared by every expression that says it: 4 + 2 + 6 letters of arcs,
    # not 5 expressions' worth
    assert graph.size[1] == len({(graph.arc_src[a], graph.arc_units[a]) for a in range(graph.size[1])})
    assert graph.size[1] < sum(len(s.split()) for s in ("turn on the light", "turn on the fan", "switch on the light",
                                                         "turn off the light", "turn on the fan"))
    found = graph.decode(_scores("turn on the fan", _letters(sorted(ctx.vocabulary()))))
    assert {(h.intent, tuple(h.slots.items())) for h in found} >= {("on", ()), ("again", ())}  # the same words
    assert found[0].score == found[1].score


_NUMBERING = """
import hashlib, sys
sys.path.insert(0, ".")
from tests.assistant.test_grammar import CONTEXT, LEXICON, _scores
from assistant.grammar import GrammarGraph
g = GrammarGraph.from_lexicon(CONTEXT, LEXICON)
hyps = g.decode(_scores("kitchen lights on"), nbest=50)
print(hashlib.sha256(repr((g.arc_src, g.arc_dst, g.arc_units, g.arc_tag, g.arc_ends, hyps)).encode()).hexdigest())
"""


def test_the_graph_is_numbered_the_same_in_every_process() -> None:
    """Equal scores break ties by arc order: the build that calibrates and the hub that decides must agree,
    whatever Python's string hashing seed (slot tags are strings)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    digests = {subprocess.run([sys.executable, "-c", _NUMBERING], cwd=root, capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(digests) == 1 and len(next(iter(digests)).strip()) == 64


def _heads(layout: HeadLayout, intent: str, slots: dict[str, str], p: float = 0.7) -> list[np.ndarray]:
    """Head probabilities with ``p`` on the given intent and each slot's value (or absent), the rest spread."""
    i, values = layout.encode(intent, slots)
    rows = []
    for size, j in ((len(layout.intents), i), *((len(v) + 1, k) for (_, v), k in zip(layout.slots, values,
                                                                                   strict=True))):
        row = np.full(size, (1 - p) / (size - 1))
        row[j] = p
        rows.append(row)
    return rows


def test_choose_reports_the_features_a_scorer_weighs() -> None:
    layout = HeadLayout.from_context(CONTEXT)
    graph = GrammarGraph.from_lexicon(CONTEXT, LEXICON)
    lp = _scores("kitchen lights on")
    hyps = graph.decode(lp, nbest=5)
    heads = _heads(layout, "lights", {"state": "on", "room": "kitchen"})
    free, steps = free_path_score(lp, 0.0), len(lp)
    cand = choose(layout, hyps, free, steps, heads, 0.5)
    assert cand is not None and (cand.intent, cand.slots) == ("lights", {"state": "on", "room": "kitchen"})
    totals = sorted((h.score + 0.5 * heads_log_prob(layout, heads, h.intent, h.slots) for h in hyps), reverse=True)
    path = np.exp(min(0.0, (hyps[0].score - free) / steps))
    slot_lps = [np.log(0.7 + 1e-9)] * 2 + [np.log(0.7 + 1e-9)]  # state, room, and minutes absent
    want = [np.log(path), np.log(heads[0][0] + 1e-9), np.log(0.7 + 1e-9), 1.0, min(1.0, (totals[0] - totals[1]) / steps),
            np.mean(slot_lps), min(slot_lps)]
    assert len(cand.features) == len(SCORE_FEATURES)
    np.testing.assert_allclose(cand.features, want, rtol=1e-9)
    assert cand.confidence == pytest.approx(path) and cand.gate == pytest.approx(1 - heads[0][0])
    # a scorer's probability replaces the path confidence; the sentence stays the same
    scorer = Scorer((2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0), -0.5)
    scored = choose(layout, hyps, free, steps, heads, 0.5, scorer)
    assert scored is not None and (scored.intent, scored.slots) == (cand.intent, cand.slots)
    assert scored.confidence == pytest.approx(1 / (1 + np.exp(-(2.0 * want[0] + 1.0 - 0.5))))
    # the heads disagreeing with the sentence's intent shows in the features
    other = choose(layout, hyps, free, steps, _heads(layout, "timer", {"minutes": "2"}), 0.5)
    assert other is not None and other.features[3] == 0.0 and other.features[2] < want[2]


def test_a_scorer_is_checked_and_round_trips() -> None:
    scorer = Scorer((0.5,) * len(SCORE_FEATURES), 1.0)
    assert Scorer.from_dict(scorer.to_dict()) == scorer
    assert GrammarSettings(scorer=scorer).to_dict()["scorer"] == scorer.to_dict()
    assert "scorer" not in GrammarSettings().to_dict()  # bundles without one keep their manifest
    assert scorer([-1e6] * len(SCORE_FEATURES)) == 0.0 and scorer([1e6] * len(SCORE_FEATURES)) == 1.0
    with pytest.raises(BundleError, match="decoder.scorer"):
        Scorer((1.0, 2.0), 0.0)
    with pytest.raises(BundleError, match="decoder.scorer"):
        Scorer((float("nan"),) * len(SCORE_FEATURES), 0.0)
    with pytest.raises(BundleError, match="decoder.scorer.features"):
        Scorer.from_dict({**scorer.to_dict(), "features": list(reversed(SCORE_FEATURES))})
    with pytest.raises(BundleError, match="decoder.scorer.weights"):
        Scorer.from_dict({**scorer.to_dict(), "weights": "heavy"})

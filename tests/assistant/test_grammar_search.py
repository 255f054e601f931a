"""The compiled grammar search (``assistant/_search.c``) against the Python loop it replaces on a hub.

Both must return the same sentences with the same scores, ties included: the build calibrates
thresholds with one, a hub may run the other (an install without a C compiler falls back)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from assistant import grammar
from assistant.bundle import load_bundle
from assistant.grammar import GrammarGraph, Hypothesis
from assistant.recognizer import Recognizer
from assistant.wav import read_wav

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "models" / "smart_home"


@pytest.fixture(scope="module")
def shipped() -> tuple[GrammarGraph, list[np.ndarray], list[str]]:
    """The default model's grammar, its CTC log-probs for the bundled sample commands (real ONNX Runtime), and
    each sample's intent (from its file name)."""
    bundle = load_bundle(BUNDLE)
    assert bundle.grammar is not None and bundle.manifest.decoder is not None
    recognizer = Recognizer(bundle)
    out, intents = [], []
    for wav in sorted((BUNDLE / "samples").glob("*.wav")):
        intents.append(wav.stem.split("_", 1)[1])
        outputs = recognizer.session.run(None, {bundle.manifest.input: recognizer.prepare(read_wav(wav))[None]})
        ctc = recognizer._split(outputs, 0)[1]  # the hub's own split of heads and CTC output
        assert ctc is not None
        out.append(np.asarray(ctc, dtype=np.float64))
    return bundle.grammar, out, intents


def _both(graph: GrammarGraph, lp: np.ndarray, **kw: object) -> tuple[list[Hypothesis], list[Hypothesis]]:
    return graph.decode(lp, engine="c", **kw), graph.decode(lp, engine="python", **kw)  # type: ignore[arg-type]


def test_the_compiled_search_is_built() -> None:
    """`make setup` (pip install -e .) compiles it; without it a hub decodes ~20x slower."""
    assert grammar.SEARCH_ENGINE == "c", "assistant._search is not built: run `make setup` with a C compiler"


def test_both_searches_find_the_same_sentences_on_the_shipped_model(
        shipped: tuple[GrammarGraph, list[np.ndarray], list[str]]) -> None:
    graph, clips, intents = shipped
    rng = np.random.default_rng(0)
    blurred = []  # the same clips made less certain: more hypotheses alive, more beam decisions to agree on
    for lp in clips[:6]:
        noisy = lp + rng.normal(0, 2.0, lp.shape)
        blurred.append(noisy - np.logaddexp.reduce(noisy, axis=1, keepdims=True))
    settings = [dict(beam=300, prune=25.0, blank_penalty=2.0), dict(beam=7, prune=25.0, blank_penalty=0.0),
                dict(beam=1000, prune=4.0, blank_penalty=3.5)]
    found = 0
    for lp in [*clips, *blurred]:
        for kw in settings:
            compiled, python = _both(graph, lp, nbest=50, **kw)
            assert compiled == python  # intents, slots and float scores, exactly
            found += len(compiled)
    assert found > 50  # the comparison was over real hypotheses, not empty lists
    # the search is right, not only equal: the best sentence says most samples' intent (the bundle's decision
    # also weighs the heads and may reject; on a clip that is no command the pruned search may find no sentence)
    found_best = [graph.decode(lp, beam=200, prune=10.0, blank_penalty=2.0) for lp in clips]
    best = [h[0].intent if h else None for h in found_best]
    assert sum(b == i for b, i in zip(best, intents, strict=True)) >= 12, list(zip(best, intents, strict=True))


def test_ties_break_the_same_way_in_both() -> None:
    """Whole-number scores make many paths tie exactly: the beam keeps the first reached in both searches."""
    from tests.assistant.test_grammar import _scores

    graph = GrammarGraph.from_lexicon(*_toy())
    rng = np.random.default_rng(2)
    found = 0
    for text in ("kitchen lights on", "please turn off all living room lights", "set a timer for two minutes"):
        lp = np.round(_scores(text, p=0.6)) - rng.integers(0, 2, _scores(text).shape)
        for beam in (3, 10, 40, 5000):
            compiled, python = _both(graph, lp, beam=beam, prune=6.0, nbest=100)
            assert compiled == python
            found += len(compiled)
    assert found >= 10
    # (checked: keeping one state fewer at a tied beam edge in _search.c fails this test)


def test_edge_cases_agree_and_bad_scores_are_refused() -> None:
    graph = GrammarGraph.from_lexicon(*_toy())
    width = 1 + len(_toy()[1].units)
    assert _both(graph, np.zeros((0, width))) == ([], [])  # no steps: no sentence
    lp = np.log(np.full((20, width), 1.0 / width))
    assert _both(graph, lp, prune=0.0) == ([], [])  # nothing is strictly within 0 of the best
    minus_inf = lp.copy()
    minus_inf[:, 3] = -np.inf  # a unit that can never be said
    assert _both(graph, minus_inf, nbest=100)[0] == _both(graph, minus_inf, nbest=100)[1]
    for engine in ("c", "python"):
        with pytest.raises(ValueError, match="NaN"):
            graph.decode(np.full((4, width), np.nan), engine=engine)
        with pytest.raises(ValueError, match="spells with unit"):
            graph.decode(np.zeros((4, 3)), engine=engine)
    with pytest.raises(ValueError, match="engine"):
        graph.decode(lp, engine="fortran")


def test_the_compiled_graph_refuses_inconsistent_tables() -> None:
    from assistant import _search

    t = GrammarGraph.from_lexicon(*_toy())._tables
    good = [t.units, t.position_arc, t.position_last, t.arc_first, t.arc_dst, t.arc_tag, t.successor_start,
            t.successors]
    _search.SearchGraph(*good, 0)
    bad_successor = t.successors.copy()
    bad_successor[0] = len(t.arc_dst)
    with pytest.raises(ValueError, match="successor out of range"):
        _search.SearchGraph(*good[:7], bad_successor, 0)
    with pytest.raises(ValueError, match="int32"):
        _search.SearchGraph(t.units.astype(np.int64), *good[1:], 0)
    with pytest.raises(ValueError, match="inconsistent sizes"):
        _search.SearchGraph(t.units[:-1], *good[1:], 0)
    compiled = _search.SearchGraph(*good, 0)
    with pytest.raises(ValueError, match="float64"):
        compiled.viterbi(np.zeros((3, 40), dtype=np.float32), 10, 5.0, 0.0)
    with pytest.raises(ValueError, match="beam"):
        compiled.viterbi(np.zeros((3, 40)), 0, 5.0, 0.0)


def test_a_graph_pickles_after_a_compiled_search() -> None:
    graph = GrammarGraph.from_lexicon(*_toy())
    lp = np.log(np.random.default_rng(1).dirichlet(np.ones(1 + len(_toy()[1].units)), size=25))
    before = graph.decode(lp, engine="c")
    again = pickle.loads(pickle.dumps(graph))
    assert again.decode(lp, engine="c") == before == again.decode(lp, engine="python")


def _toy() -> tuple[object, grammar.Lexicon]:
    from tests.assistant.test_grammar import CONTEXT, LEXICON

    return CONTEXT, LEXICON

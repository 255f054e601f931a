"""`build --update-from`: a changed context trained from an earlier build (distill/update.py)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from assistant.bundle import load_bundle  # noqa: E402
from assistant.context import load_context, parse_context  # noqa: E402
from assistant.context.sample import iter_sentences  # noqa: E402
from assistant.decode import HeadLayout  # noqa: E402
from assistant.errors import ConfigError  # noqa: E402
from distill.build import PRESETS, build  # noqa: E402
from distill.corpus import Utterance, read_manifest  # noqa: E402
from distill.negatives import CommandChecker  # noqa: E402
from distill.nets.student import Student, StudentConfig  # noqa: E402
from distill.update import (  # noqa: E402
    UPDATE_FILE,
    UpdateRecipe,
    corpus_parts,
    delta_contexts,
    grow_ctc,
    grow_state,
    keeper,
)
from tests.distill.test_build import HAVE_WHISPER, MICRO_GRAMMAR  # noqa: E402

OLD = """
context:
  expressions:
    lights:
      - "turn $state:state the $room:room lights"
      - "$room:room lights $state:state"
    music:
      - "play some music"
  slots:
    state: ["on", "off"]
    room: ["kitchen", "bedroom"]
"""
# a room added (a new value of a slot type two expressions reach), and a new intent
NEW = OLD.replace('room: ["kitchen", "bedroom"]', 'room: ["kitchen", "bedroom", "garage"]').replace(
    '      - "play some music"\n', '      - "play some music"\n    pause:\n      - "pause the music"\n')


def test_delta_contexts_say_only_what_the_old_context_cannot() -> None:
    old, new = parse_context(OLD), parse_context(NEW)
    added, values = delta_contexts(old, new)
    assert added.intents == ("pause",) and [s.text for s in iter_sentences(added)] == ["pause the music"]
    said = CommandChecker(old)
    sentences = list(iter_sentences(values))
    assert values.intents == ("lights",) and len(sentences) == 4  # 2 expressions x 2 states, the garage only
    assert all("garage" in s.text and s.slots["room"] == "garage" and not said(s.text) for s in sentences)
    assert delta_contexts(old, old) == []
    # a value taken away adds nothing to say; a reworded expression is said with every value
    reworded = parse_context(OLD.replace('"$room:room lights $state:state"', '"lights $state:state in the $room:room"'))
    (only,) = delta_contexts(old, reworded)
    assert {s.text for s in iter_sentences(only)} == {f"lights {s} in the {r}" for s in ("on", "off")
                                                       for r in ("kitchen", "bedroom")}
    assert delta_contexts(new, old) == []


def _utt(text: str, intent: str | None, slots: dict[str, str], kind: str = "command") -> Utterance:
    return Utterance(id="x", audio="audio/x.wav", text=text, intent=intent, slots=slots, voice="v", engine="espeak-ng",
                     split="train", kind=kind)


def test_keeper_drops_what_the_new_context_no_longer_means() -> None:
    old, new = parse_context(OLD), parse_context(NEW)
    smaller = parse_context(OLD.replace('room: ["kitchen", "bedroom"]', 'room: ["kitchen"]'))
    keep = keeper(HeadLayout.from_context(smaller), CommandChecker(smaller))
    assert keep(_utt("turn on the kitchen lights", "lights", {"state": "on", "room": "kitchen"}))
    assert not keep(_utt("turn on the bedroom lights", "lights", {"state": "on", "room": "bedroom"}))  # value gone
    assert keep(_utt("", None, {}, kind="silence"))
    # a negative that the new context now says is dropped; one it does not say is kept
    keep_new = keeper(HeadLayout.from_context(new), CommandChecker(new))
    assert not keep_new(_utt("pause the music", None, {}, kind="near_miss"))
    assert keep_new(_utt("pause the lights", None, {}, kind="near_miss"))
    # a delta part keeps only sentences the old context could not say
    delta = keeper(HeadLayout.from_context(new), CommandChecker(new), CommandChecker(old))
    assert not delta(_utt("turn on the kitchen lights", "lights", {"state": "on", "room": "kitchen"}))
    assert delta(_utt("turn on the garage lights", "lights", {"state": "on", "room": "garage"}))


def test_grow_state_copies_every_row_the_old_heads_have() -> None:
    old_layout, new_layout = HeadLayout.from_context(parse_context(OLD)), HeadLayout.from_context(parse_context(NEW))
    cfg = StudentConfig(channels=16, dilations=(1, 2))
    torch.manual_seed(0)
    old = Student([len(old_layout.intents), *(len(v) for _, v in old_layout.slots)], cfg)
    new = Student([len(new_layout.intents), *(len(v) for _, v in new_layout.slots)], cfg)
    fresh = new.state_dict()
    grown = grow_state(old.state_dict(), fresh, old_layout, new_layout)
    new.load_state_dict(grown)
    intents_old, intents_new = old_layout.intents, new_layout.intents
    for i, label in enumerate(intents_new):
        row = grown["heads.0.weight"][i]
        if label in intents_old:
            assert torch.equal(row, old.state_dict()["heads.0.weight"][intents_old.index(label)])
        else:  # 'pause': the new network's own initial row
            assert torch.equal(row, fresh["heads.0.weight"][i])
    room = new_layout.slot_names.index("room") + 1
    old_room = old_layout.slot_names.index("room") + 1
    assert torch.equal(grown[f"heads.{room}.bias"][:3], old.state_dict()[f"heads.{old_room}.bias"])
    assert torch.equal(grown[f"heads.{room}.bias"][3], fresh[f"heads.{room}.bias"][3])  # the garage
    for key, value in old.state_dict().items():  # everything but the heads is the old network's
        if not key.startswith(("heads.", "attention.")):
            assert torch.equal(grown[key], value)
    wider = Student([len(new_layout.intents), *(len(v) for _, v in new_layout.slots)], replace(cfg, channels=24))
    with pytest.raises(ConfigError, match="not the same network"):
        grow_state(old.state_dict(), wider.state_dict(), old_layout, new_layout)
    ctc_old, ctc_new = torch.nn.Linear(16, 3), torch.nn.Linear(16, 4)
    head = grow_ctc(ctc_old.state_dict(), ctc_new.state_dict(), ["a", "b"], ["a", "c", "b"])
    assert torch.equal(head["weight"][[0, 1, 3]], ctc_old.weight.detach())
    assert torch.equal(head["bias"][2], ctc_new.bias.detach()[2])


def test_an_update_from_a_folder_without_a_build_fails_before_any_work(tmp_path: Path) -> None:
    ctx = tmp_path / "new.yaml"
    ctx.write_text(NEW)
    with pytest.raises(ConfigError, match="not available with update_from"):
        build(ctx, tmp_path / "out", preset="tiny", work=tmp_path / "work", update_from=tmp_path / "nowhere",
              calibration_negatives=100)
    with pytest.raises(ConfigError, match="no such build work folder"):
        build(ctx, tmp_path / "out", preset="tiny", work=tmp_path / "work", update_from=tmp_path / "nowhere")
    (tmp_path / "old").mkdir()
    with pytest.raises(ConfigError, match="context.yaml not found .*its bundle's context.yaml"):
        build(ctx, tmp_path / "out", preset="tiny", work=tmp_path / "work", update_from=tmp_path / "old")
    (tmp_path / "old" / "context.yaml").write_text(OLD)
    with pytest.raises(ConfigError, match="teacher/best.pt not found"):
        build(ctx, tmp_path / "out", preset="tiny", work=tmp_path / "work", update_from=tmp_path / "old")
    # a build of another preset: refused before anything is synthesized
    for stage in ("teacher/best.pt", "student/last.pt"):
        (tmp_path / "old" / stage).parent.mkdir()
        torch.save({"model_config": {"student": PRESETS["default"].student.student.to_dict()}}, tmp_path / "old" / stage)
    with pytest.raises(ConfigError, match="not the tiny preset's network: update with the preset the earlier build used"):
        build(ctx, tmp_path / "out", preset="tiny", work=tmp_path / "work", update_from=tmp_path / "old")
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not HAVE_WHISPER or shutil.which("espeak-ng") is None, reason="needs the whisper extra and espeak-ng")
def test_an_update_learns_the_new_room_from_the_earlier_build(tmp_path: Path) -> None:
    preset = replace(MICRO_GRAMMAR, utterances=160,
                     teacher=replace(MICRO_GRAMMAR.teacher, train=replace(MICRO_GRAMMAR.teacher.train, steps=80)),
                     student=replace(MICRO_GRAMMAR.student, train=replace(MICRO_GRAMMAR.student.train, steps=80)),
                     update=UpdateRecipe(utterances=60, teacher_steps=20, student_steps=20, warmup=2))
    work = tmp_path / "work"
    old_ctx, new_ctx = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old_ctx.write_text(OLD)
    new_ctx.write_text(NEW)
    build(old_ctx, tmp_path / "home", preset=preset, work=work, progress=False)
    first = work / "build-home-custom-s0"
    assert load_context(first / "context.yaml") == parse_context(OLD)  # kept for a later update

    bundle_dir = build(new_ctx, tmp_path / "home2", preset=preset, work=work, progress=False, update_from=first)
    bundle = load_bundle(bundle_dir)  # verified: checksums, the grown heads match the new context, self-test
    manifest = bundle.manifest.to_dict()
    assert "pause" in manifest["layout"]["intents"]
    assert {h["name"]: h["values"] for h in manifest["layout"]["slots"]}["room"][1:] == ["kitchen", "bedroom", "garage"]
    assert manifest["recipe"]["update_from"] == str(first)
    (root,) = work.glob("update-home2-custom-s0-*")
    assert json.loads((root / UPDATE_FILE).read_text())["from"] == str(first.resolve())
    assert corpus_parts(root) == [first / "corpus", root / "delta-0", root / "delta-1"]
    said = CommandChecker(parse_context(OLD))
    for delta in ("delta-0", "delta-1"):
        commands = [u for u in read_manifest(root / delta) if u.kind == "command"]
        assert commands and all(u.intent == "pause" or u.slots.get("room") == "garage" for u in commands)
        assert not any(said(u.text) for u in commands)
    report = json.loads((root / "build.json").read_text())
    assert report["from_scratch"] is False
    assert "carried from" in report["from_the_work_folder"]["synth"]
    assert report["from_the_work_folder"]["student"] == f"student from {first}'s, fine-tuned 20 steps"
    # the carried clips' encodings come from the cache: found at least one per carried training clip
    found, total = (int(x.replace(",", "")) for x in
                    report["from_the_work_folder"]["teacher"].split(" encodings")[0].split(" of "))
    carried = sum(1 for u in read_manifest(first / "corpus") if u.split != "train")  # val + test, clean
    assert found >= carried and total > found
    assert {"new test clean", "new test 15 dB", "new test 6 dB"} <= set(report["metrics"])
    card = (bundle_dir / "MODEL_CARD.md").read_text()
    assert f"Made as an update of the build in {first}" in card and f"--update-from {first}" in card
    assert "These are the times of an update" in card and "from-scratch times" not in card
    # the student started from the earlier one: its body is closer to it than a fresh network's
    old_student = torch.load(first / "student" / "last.pt", weights_only=True)["model"]
    new_student = torch.load(root / "student" / "last.pt", weights_only=True)["model"]
    key = next(k for k in old_student if "heads" not in k and "attention" not in k and old_student[k].dim() > 1)
    assert (new_student[key] - old_student[key]).abs().max() < old_student[key].abs().max()

    # an update of the update: its parts are the first build's corpus and both updates' delta corpora
    newer = tmp_path / "newer.yaml"
    newer.write_text(NEW.replace('"garage"]', '"garage", "attic"]'))
    third = build(newer, tmp_path / "home3", preset=preset, work=work, progress=False, update_from=root)
    assert {h["name"]: h["values"] for h in load_bundle(third).manifest.to_dict()["layout"]["slots"]}["room"][-1] == "attic"
    (root3,) = work.glob("update-home3-custom-s0-*")
    assert corpus_parts(root3) == [first / "corpus", root / "delta-0", root / "delta-1", root3 / "delta-0"]

"""The auxiliary CTC loss: characters, the loss against hand-computed paths, and a student trained with it."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from assistant.decode import ABSENT, NOT_UNDERSTOOD, HeadLayout  # noqa: E402
from assistant.errors import ConfigError  # noqa: E402
from assistant.grammar import Lexicon  # noqa: E402
from distill.augment import AugmentConfig  # noqa: E402
from distill.data import ClipSet  # noqa: E402
from distill.distillation import StudentRecipe, train_student  # noqa: E402
from distill.evaluate import Reference  # noqa: E402
from distill.losses import CTC_ALPHABET, ctc_encode, ctc_loss, total_loss  # noqa: E402
from distill.nets.student import StudentConfig  # noqa: E402
from distill.phones import PhonemizeError, make_lexicon, phonemize  # noqa: E402
from distill.train import TrainConfig, load_checkpoint  # noqa: E402


def test_transcripts_are_spelled_in_the_alphabet() -> None:
    assert ctc_encode("Turn  OFF, the lamp's 45!") == [CTC_ALPHABET.index(c) + 1 for c in "turn off the lamp's"]
    assert ctc_encode("") == [] and ctc_encode("42 %") == []
    assert min(ctc_encode(CTC_ALPHABET)) == 2  # index 0 is the blank; the space (1) folds away at the ends


def test_ctc_loss_against_hand_counted_paths() -> None:
    # 3 classes, uniform: every frame's probability is 1/3 whatever it emits.
    one = torch.zeros(1, 1, 3)  # 1 step, target "1": the one path "1" -> p = 1/3
    assert float(ctc_loss(one, torch.tensor([1]), torch.tensor([1]), torch.tensor([1]))) == pytest.approx(math.log(3))
    two = torch.zeros(1, 2, 3)  # 2 steps, target "1": "11", "01", "10" -> p = 3/9
    assert float(ctc_loss(two, torch.tensor([1]), torch.tensor([2]), torch.tensor([1]))) == pytest.approx(math.log(3))
    # 2 steps, target "12": the one path "12" -> p = 1/9, divided by the 2 characters
    assert float(ctc_loss(two, torch.tensor([1, 2]), torch.tensor([2]), torch.tensor([2]))) == pytest.approx(math.log(3))
    # no transcript (noise, silence): the all-blank path, p = 1/9, divided by 1 rather than 0 characters
    empty = torch.tensor([], dtype=torch.long)
    assert float(ctc_loss(two, empty, torch.tensor([2]), torch.tensor([0]))) == pytest.approx(2 * math.log(3))
    # a transcript longer than the steps is impossible: it adds 0 instead of infinity
    assert float(ctc_loss(one, torch.tensor([1, 2]), torch.tensor([1]), torch.tensor([2]))) == 0.0
    logits = [torch.zeros(1, 2)]
    loss, parts = total_loss(logits, [torch.tensor([0])], ctc=0.5, ctc_logits=two, ctc_targets=torch.tensor([1]),
                             ctc_input_lengths=torch.tensor([2]), ctc_target_lengths=torch.tensor([1]))
    assert parts["ctc"] == pytest.approx(math.log(3)) and float(loss) == pytest.approx(math.log(2) + 0.5 * math.log(3))
    with pytest.raises(ValueError, match="ctc > 0 needs"):
        total_loss(logits, [torch.tensor([0])], ctc=0.5)


LAYOUT = HeadLayout(intents=(NOT_UNDERSTOOD, "lights"), slots=(("state", (ABSENT, "on", "off")),),
                    intent_slots={"lights": frozenset({"state"})})


def _clips(n: int = 24) -> ClipSet:
    rng = np.random.default_rng(0)
    audio, refs, rows = [], [], []
    for i in range(n):
        state = ("on", "off")[i % 2]
        tone = np.sin(2 * np.pi * (300 if state == "on" else 900) * np.arange(12000) / 16000)
        audio.append((0.3 * tone + 0.01 * rng.standard_normal(12000)).astype(np.float32))
        refs.append(Reference("lights", {"state": state}, id=f"u{i}", text=f"turn {state} the lights"))
        rows.append((1, 1 if state == "on" else 2))
    return ClipSet("toy", audio, refs, np.asarray(rows, np.int64), [f"u{i}" for i in range(n)])


def _recipe(ctc: float, steps: int = 100, units: str = "chars") -> StudentRecipe:
    return StudentRecipe(student=StudentConfig(channels=16, dilations=(1, 2)),
                         train=TrainConfig(steps=steps, batch_size=8, lr=1e-2, warmup=2, eval_every=20, ctc=ctc,
                                           ctc_units=units),
                         copies=0, augment=AugmentConfig.noise_only())


def test_a_student_learns_to_spell_with_the_ctc_head_and_resumes(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clips = _clips()
    train_student(clips, clips, LAYOUT, _recipe(1.0), tmp_path / "straight", progress=False)
    rows = list(csv.DictReader((tmp_path / "straight" / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [20, 40, 60, 80, 100]
    assert float(rows[-1]["ctc"]) < 0.6 * float(rows[0]["ctc"])  # it learns to spell the two transcripts
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert straight["ctc_head"]["weight"].shape == (len(CTC_ALPHABET) + 1, 16)
    assert not any("ctc" in k for k in straight["model"])  # the head is not part of the (exported) student

    # The machine goes away at step 50 (last.pt is from step 40); a new run resumes, CTC head included.
    real_step, calls = torch.optim.AdamW.step, [0]

    def crashing(self: torch.optim.AdamW, *a: object, **k: object) -> object:
        calls[0] += 1
        if calls[0] > 50:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_student(clips, clips, LAYOUT, _recipe(1.0), tmp_path / "resumed", progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 40
    train_student(clips, clips, LAYOUT, _recipe(1.0), tmp_path / "resumed", progress=False)
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for part in ("ctc_head", "model"):
        for k in straight[part]:
            torch.testing.assert_close(resumed[part][k], straight[part][k], msg=f"{part}.{k}")


def test_ctc_without_transcripts_is_refused(tmp_path: Path) -> None:
    clips = _clips()
    bare = ClipSet("bare", clips.audio, [Reference("lights", r.slots, id=r.id) for r in clips.references],
                   clips.targets, clips.keys)
    with pytest.raises(ValueError, match="needs transcripts"):
        train_student(bare, bare, LAYOUT, _recipe(1.0), tmp_path / "run", progress=False)


def test_words_are_spelled_in_espeak_phones() -> None:
    assert phonemize("kitchen") == ("k", "ɪ", "tʃ", "ə", "n")  # stress marks dropped
    lexicon = make_lexicon(["Turn ON the", "lights"])
    assert set(lexicon.words) == {"turn", "on", "the", "lights"}
    assert list(lexicon.units) == sorted(lexicon.units) and "l" in lexicon.units
    assert lexicon.encode("turn on") == lexicon.spell("turn") + lexicon.spell("on")
    with pytest.raises(PhonemizeError, match="no-such-espeak not found"):
        phonemize("on", binary="no-such-espeak")
    with pytest.raises(ConfigError, match="ctc_units: expected 'chars' or 'phones'"):
        TrainConfig(ctc=1.0, ctc_units="words")


def test_a_student_learns_to_spell_in_phones(tmp_path: Path) -> None:
    """With ctc_units 'phones' the CTC head scores a lexicon's phones; the checkpoint carries the lexicon."""
    clips = _clips()
    train_student(clips, clips, LAYOUT, _recipe(1.0, units="phones"), tmp_path / "run", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert float(rows[-1]["ctc"]) < 0.6 * float(rows[0]["ctc"])
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    lexicon = Lexicon.from_dict(ckpt["model_config"]["ctc_lexicon"])
    assert set(lexicon.words) == {"turn", "on", "off", "the", "lights"}  # made from the transcripts
    assert ckpt["ctc_head"]["weight"].shape == (len(lexicon.units) + 1, 16)
    # a lexicon given by the caller (e.g. one that also spells the context's words) is the one used
    given = make_lexicon(["turn on off the lights kitchen"])
    train_student(clips, clips, LAYOUT, _recipe(1.0, steps=20, units="phones"), tmp_path / "given", progress=False,
                  lexicon=given)
    assert Lexicon.from_dict(load_checkpoint(tmp_path / "given" / "last.pt")["model_config"]["ctc_lexicon"]) == given

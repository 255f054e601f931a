"""A few hundred steps on a 3-intent toy context, real espeak-ng speech, reach high accuracy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from assistant.context import parse_context  # noqa: E402
from assistant.decode import HeadLayout  # noqa: E402
from distill.augment import AugmentConfig  # noqa: E402
from distill.data import load_corpus  # noqa: E402
from distill.distillation import StudentRecipe, evaluate_student, train_student  # noqa: E402
from distill.nets.student import StudentConfig  # noqa: E402
from distill.synth import SynthConfig, synthesize_corpus  # noqa: E402
from distill.train import TrainConfig  # noqa: E402

TOY = """
context:
  expressions:
    lights:
      - "turn $state:state the lights"
    music:
      - "play some music"
    weather:
      - "what is the weather"
  slots:
    state: ["on", "off"]
"""


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~2 min on an idle 2-core machine; much more beside other jobs
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_student_learns_a_toy_context(tmp_path: Path) -> None:
    ctx = parse_context(TOY)
    layout = HeadLayout.from_context(ctx)
    corpus = tmp_path / "corpus"
    synthesize_corpus(ctx, corpus, SynthConfig(utterances=160, negatives=0.0, seed=3, engines=("espeak-ng",)),
                      workers=2, progress=False)
    clips = load_corpus(corpus, layout, splits=("train", "val", "test"))
    recipe = StudentRecipe(
        student=StudentConfig(channels=32, dilations=(1, 2, 4, 1, 2, 4)),
        train=TrainConfig(steps=300, batch_size=32, lr=3e-3, warmup=30, eval_every=300),
        copies=0,
        augment=AugmentConfig.noise_only(),
    )
    model, _ = train_student(clips, clips, layout, recipe, tmp_path / "run", progress=False)
    metrics = evaluate_student(model, layout, clips)
    # Chance is 1/4 for the intent and 1/8 for a whole command; the toy is easy once learned.
    assert metrics.intent_accuracy is not None and metrics.intent_accuracy >= 0.9
    assert metrics.command_acceptance >= 0.85

"""The from-scratch transformer teacher: learns a separable toy set, is a Teacher, masks padding, reloads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from assistant.decode import ABSENT, NOT_UNDERSTOOD, HeadLayout  # noqa: E402
from assistant.errors import ConfigError  # noqa: E402
from distill.data import ClipSet  # noqa: E402
from distill.evaluate import Reference  # noqa: E402
from distill.nets.frontend import FrontendConfig  # noqa: E402
from distill.teachers.base import Teacher  # noqa: E402
from distill.teachers.scratch import (  # noqa: E402
    ScratchNetConfig,
    ScratchTeacherConfig,
    load_scratch_teacher,
    train_scratch_teacher,
)
from distill.train import TrainConfig  # noqa: E402

LAYOUT = HeadLayout(intents=(NOT_UNDERSTOOD, "digit"), slots=(("digit", (ABSENT, "3", "7")),),
                    intent_slots={"digit": frozenset({"digit"})})
CLASSES: list[tuple[str | None, dict[str, str], float | None]] = [
    ("digit", {"digit": "3"}, 180.0), ("digit", {"digit": "7"}, 600.0), (None, {}, None)]
"""(intent, slots, tone F0): a harmonic tone per digit, noise for 'not understood'."""


def _clip(f0: float | None, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(5000, 14000))
    t = np.arange(n) / 16000.0
    if f0 is None:
        return (0.05 * rng.standard_normal(n)).astype(np.float32)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 4 * t))) / 16000.0
    env = np.minimum(1.0, t / 0.05) * np.minimum(1.0, (t[-1] - t) / 0.1)
    x = sum(np.sin(h * phase) / h for h in (1, 2, 3)) * 0.3 * env + 0.01 * rng.standard_normal(n)
    return np.asarray(x, np.float32)


def _toy(name: str, per_class: int, seed: int) -> ClipSet:
    rng = np.random.default_rng(seed)
    audio, refs, rows = [], [], []
    for _ in range(per_class):
        for intent, slots, f0 in CLASSES:
            audio.append(_clip(f0, rng))
            refs.append(Reference(intent, dict(slots), kind="command" if intent else "noise"))
            i, s = LAYOUT.encode(intent, slots)
            rows.append((i, *s))
    return ClipSet(name, audio, refs, np.asarray(rows, np.int64), [f"{name}-{k}" for k in range(len(audio))])


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_scratch_teacher_learns_a_toy_set_and_is_a_teacher(tmp_path: Path, one_thread: None) -> None:
    train, held_out = _toy("train", 16, seed=0), _toy("test", 8, seed=1)
    net = ScratchNetConfig(d_model=32, layers=1, heads=2, conv_channels=8, dropout=0.0,
                           frontend=FrontendConfig(n_mels=32, normalize="none"))
    cfg = ScratchTeacherConfig(net=net, window_s=1.0, copies=0,
                               train=TrainConfig(steps=60, batch_size=16, lr=3e-3, min_lr=1e-4, warmup=10,
                                                 eval_every=30))
    teacher, metrics = train_scratch_teacher(train, train, LAYOUT, cfg, tmp_path / "run", also={"held out": held_out},
                                             progress=False)
    # Chance is 1/3 per command; held-out clips are new draws (lengths, noise) of the same three sounds.
    assert metrics["held out"].command_acceptance >= 0.9, metrics["held out"]

    assert isinstance(teacher, Teacher)
    out = teacher.predict(held_out.audio[:5])
    frames = -(-((16000 + 512) // 160 + 1) // 4)  # a 1-s window, 4x subsampled
    assert [p.shape for p in out.probs] == [(5, 2), (5, 3)]
    np.testing.assert_allclose(out.probs[1].sum(axis=1), 1.0, rtol=1e-5)
    assert out.features is not None and out.features.shape == (5, frames, 32)
    assert np.all(out.features[:, -1] == 0)  # past every clip's end (< 1 s): padding, masked to zero

    # Padding is masked: a clip alone gets the answer it gets beside a longer clip.
    short, long = held_out.audio[0][:6000], held_out.audio[1]
    alone, together = teacher.predict([short]), teacher.predict([short, long])
    for a, b in zip(alone.probs, together.probs, strict=True):
        np.testing.assert_allclose(a[0], b[0], atol=1e-5)

    ckpt = torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["model_config"]["kind"] == "scratch_teacher" and ckpt["step"] in (30, 60)
    again = load_scratch_teacher(tmp_path / "run" / "best.pt").predict(held_out.audio[:5])
    for a, b in zip(out.probs, again.probs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_scratch_config_names_the_problem() -> None:
    with pytest.raises(ConfigError, match="must divide d_model"):
        ScratchNetConfig(d_model=30, heads=4)
    with pytest.raises(ConfigError, match="normalize"):
        ScratchNetConfig(frontend=FrontendConfig(normalize="utterance"))
    cfg = ScratchNetConfig(d_model=48, layers=2, heads=3)
    assert ScratchNetConfig.from_dict(cfg.to_dict()) == cfg

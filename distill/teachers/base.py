"""The one interface every teacher implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from assistant.decode import HeadLayout


@dataclass(frozen=True)
class TeacherOutput:
    probs: list[np.ndarray]
    """Per head (intent first, then slots in layout order): ``[batch, labels]`` probabilities."""
    features: np.ndarray | None = None
    """Intermediate features ``[batch, frames, dim]`` where the teacher has them, else None."""

    def __post_init__(self) -> None:
        batch = {p.shape[0] for p in self.probs}
        if len(batch) > 1:
            raise ValueError(f"heads disagree on the batch size: {sorted(batch)}")


@runtime_checkable
class Teacher(Protocol):
    """Labels a batch of 16 kHz mono float32 clips."""

    name: str
    layout: HeadLayout

    def predict(self, audio: Sequence[np.ndarray]) -> TeacherOutput: ...


class EnsembleTeacher:
    """Averages the probabilities of several teachers that share one head layout (a black box)."""

    def __init__(self, teachers: Sequence[Teacher], weights: Sequence[float] | None = None) -> None:
        if not teachers:
            raise ValueError("an ensemble needs at least one teacher")
        layouts = {t.layout.to_dict().__repr__() for t in teachers}
        if len(layouts) != 1:
            raise ValueError("ensemble members must share one head layout")
        self.teachers = list(teachers)
        w = np.asarray(weights if weights is not None else [1.0] * len(teachers), dtype=np.float64)
        if w.shape != (len(teachers),) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("ensemble weights: one non-negative weight per teacher, not all zero")
        self.weights = w / w.sum()
        self.layout = teachers[0].layout
        self.name = "ensemble(" + ",".join(t.name for t in teachers) + ")"

    def predict(self, audio: Sequence[np.ndarray]) -> TeacherOutput:
        outs = [t.predict(audio) for t in self.teachers]
        probs = [sum(w * o.probs[h] for w, o in zip(self.weights, outs, strict=True)) for h in range(len(outs[0].probs))]
        return TeacherOutput(probs=[np.asarray(p, dtype=np.float32) for p in probs])

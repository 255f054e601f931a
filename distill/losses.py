"""Distillation losses, as pure functions (Hinton et al. 2015; distil-whisper).

Every model has the same heads (see :mod:`assistant.decode`): an intent head and one
head per slot. Losses are summed over heads, each head's loss averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) · T², averaged over the batch."""
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * t * t


def heads_ce(student: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Hard-label cross-entropy summed over heads."""
    return sum((F.cross_entropy(s, y) for s, y in zip(student, targets, strict=True)), torch.zeros(()))


def heads_kd(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """Output-layer distillation summed over heads."""
    return sum((kd_loss(s, t, temperature) for s, t in zip(student, teacher, strict=True)), torch.zeros(()))


def feature_loss(student_feats: torch.Tensor, teacher_feats: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Intermediate-layer loss between time-aligned ``[batch, time, dim]`` features.

    The student's features must already be projected to the teacher's width (the
    projection is a learned layer of the student wrapper). ``kind``: 'mse' or 'cosine'
    (1 − cosine similarity per frame, averaged).
    """
    if student_feats.shape != teacher_feats.shape:
        raise ValueError(f"feature shapes differ: student {tuple(student_feats.shape)}, "
                         f"teacher {tuple(teacher_feats.shape)}")
    if kind == "mse":
        return F.mse_loss(student_feats, teacher_feats)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student_feats, teacher_feats, dim=-1)).mean()
    raise ValueError(f"feature loss kind: expected 'mse' or 'cosine', got {kind!r}")


def align_time(feats: torch.Tensor, frames: int) -> torch.Tensor:
    """Resample ``[batch, time, dim]`` features to ``frames`` steps (linear), to align two models' rates."""
    if feats.shape[1] == frames:
        return feats
    return F.interpolate(feats.transpose(1, 2), size=frames, mode="linear", align_corners=False).transpose(1, 2)


def total_loss(
    student: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor] | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 0.0,
    temperature: float = 2.0,
    gamma: float = 0.0,
    student_feats: torch.Tensor | None = None,
    teacher_feats: torch.Tensor | None = None,
    feature_kind: str = "mse",
) -> tuple[torch.Tensor, dict[str, float]]:
    """α·CE + β·KD (+ γ·feature loss); returns the loss and its parts for logging."""
    ce = heads_ce(student, targets)
    parts = {"ce": float(ce.detach())}
    loss = alpha * ce
    if beta > 0:
        if teacher is None:
            raise ValueError("beta > 0 needs teacher logits")
        kd = heads_kd(student, teacher, temperature)
        parts["kd"] = float(kd.detach())
        loss = loss + beta * kd
    if gamma > 0:
        if student_feats is None or teacher_feats is None:
            raise ValueError("gamma > 0 needs student and teacher features")
        fl = feature_loss(student_feats, align_time(teacher_feats, student_feats.shape[1]), feature_kind)
        parts["feat"] = float(fl.detach())
        loss = loss + gamma * fl
    parts["total"] = float(loss.detach())
    return loss, parts

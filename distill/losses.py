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


CTC_ALPHABET = " abcdefghijklmnopqrstuvwxyz'"
"""The characters the auxiliary CTC loss spells transcripts with; index 0 is CTC's blank, so a
character's class is its position here + 1. Other characters (digits, punctuation) are dropped:
the corpus writes numbers as words ("forty five"), as they are spoken."""


def ctc_encode(text: str) -> list[int]:
    """``text`` as CTC classes: lower-cased, runs of spaces folded, other characters dropped."""
    kept = "".join(ch for ch in text.lower() if ch in CTC_ALPHABET)
    return [CTC_ALPHABET.index(ch) + 1 for ch in " ".join(kept.split())]


def ctc_loss(logits: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
    """CTC (blank 0) of per-step ``logits`` ``[B, T, classes]`` against concatenated ``targets``.

    Averaged over the batch, each clip's loss divided by its transcript length (``reduction='mean'``);
    a clip whose transcript cannot fit its steps adds 0 (``zero_infinity``). A clip with no transcript
    (noise, silence) is scored on its one all-blank path, divided by 1.
    """
    log_probs = F.log_softmax(logits, dim=-1).transpose(0, 1)  # [T, B, C]
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0,
                      reduction="mean", zero_infinity=True)


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
    ctc: float = 0.0,
    ctc_logits: torch.Tensor | None = None,
    ctc_targets: torch.Tensor | None = None,
    ctc_target_lengths: torch.Tensor | None = None,
    ctc_input_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """α·CE + β·KD (+ γ·feature loss) (+ ctc·CTC); returns the loss and its parts for logging."""
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
    if ctc > 0:
        if ctc_logits is None or ctc_targets is None or ctc_target_lengths is None or ctc_input_lengths is None:
            raise ValueError("ctc > 0 needs CTC logits, targets, target lengths and input lengths")
        cl = ctc_loss(ctc_logits, ctc_targets, ctc_input_lengths, ctc_target_lengths)
        parts["ctc"] = float(cl.detach())
        loss = loss + ctc * cl
    parts["total"] = float(loss.detach())
    return loss, parts

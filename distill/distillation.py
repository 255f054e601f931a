"""Student stage: train the tiny student from hard labels and, optionally, a teacher.

Consistent teaching (Beyer et al. 2022): the teacher labels exactly the clip the
student sees. On a 2-core CPU the Whisper teacher (~0.03 s a clip) cannot label every
freshly augmented batch, so the student trains on a fixed pool — the clean clips plus
``copies`` deterministic augmented versions of each — and the teacher labels every clip
of that pool once (probabilities and hidden features, cached). With a GPU, raise
``copies``; the labels stay exactly those of the audio the student hears.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from assistant.decode import HeadLayout
from assistant.grammar import Lexicon
from distill.augment import AugmentConfig
from distill.data import ClipSet, pad_batch
from distill.evaluate import Metrics
from distill.losses import CTC_ALPHABET, ctc_encode
from distill.nets.student import Student, StudentConfig, step_mask
from distill.phones import make_lexicon
from distill.teach import augmented_copies, probs_metrics
from distill.teachers.base import Teacher
from distill.teachers.neural import EncoderTeacher, encode_cached
from distill.train import Batch, TrainConfig, fit, load_checkpoint

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentRecipe:
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=3000, batch_size=64, lr=3e-3, warmup=150,
                                                                   eval_every=250))
    copies: int = 2
    """Augmented copies of each training clip in the pool (besides the clean one)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_seconds: float = 4.0
    """Crop training clips to this many seconds."""
    checkpoint: str = "last"
    """Which weights to keep: 'last' (no selection) or 'best' (highest synthetic-validation acceptance).
    Synthetic validation sits near 100% for every candidate and picks poorly on real voices (DESIGN.md)."""


@torch.no_grad()
def student_probs(model: nn.Module, clips: ClipSet, batch: int = 64) -> list[np.ndarray]:
    model.eval()
    order = np.argsort([len(a) for a in clips.audio])  # similar lengths together: less padding
    outs: list[list[np.ndarray]] = []
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        audio = torch.from_numpy(pad_batch([clips.audio[i] for i in idx]))
        if isinstance(model, Student):  # padding kept out of the pooling: each clip decided as if alone
            logits = model(audio, torch.tensor([len(clips.audio[i]) for i in idx]))
        else:
            logits = model(audio)
        outs.append([torch.softmax(z, dim=-1).numpy() for z in logits])
    probs = [np.concatenate([o[h] for o in outs]) for h in range(len(outs[0]))]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return [p[inverse] for p in probs]


class MelStudent(nn.Module):
    """Trains a :class:`Student` from cached log-mel (its frontend has no weights to learn).

    Its input is :func:`pad_mel_valid`'s ``[B, n_mels + 1, T]``: the log-mel and, as the last
    row, 1 on a clip's real frames and 0 on the padding, which the pooling then ignores.
    """

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.student.forward_mel(x[:, :-1], x[:, -1] > 0.5)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)[0]


@torch.no_grad()
def log_mel(student: Student, audio: list[np.ndarray], batch: int = 64) -> list[torch.Tensor]:
    """The student's (fixed) frontend output for each clip, ``[n_mels, frames]`` float16."""
    out: list[torch.Tensor] = []
    for s in range(0, len(audio), batch):
        clips = audio[s : s + batch]
        mel = student.frontend(torch.from_numpy(pad_batch(clips)))
        hop = student.cfg.frontend.hop_length
        out.extend(mel[i, :, : max(1, len(c) // hop)].to(torch.float16) for i, c in enumerate(clips))
    return out


def pad_mel(mels: list[torch.Tensor], floor: float, multiple: int) -> torch.Tensor:
    """Batch ``[B, n_mels, T]`` padded with the log of silence, T a multiple of the stem stride."""
    t = max(m.shape[1] for m in mels)
    t += (-t) % multiple
    out = torch.full((len(mels), mels[0].shape[0], t), floor)
    for i, m in enumerate(mels):
        out[i, :, : m.shape[1]] = m.float()
    return out


def pad_mel_valid(mels: list[torch.Tensor], floor: float, multiple: int) -> torch.Tensor:
    """:class:`MelStudent`'s batch: log-mel ``[B, n_mels, T]`` + a last row marking the real frames.

    Each clip is padded with its own quietest level per band (its 10th percentile) rather
    than digital silence: padding is masked out of the pooling, but it still passes through
    the batch-norm statistics, where the log of zero (an outlier far below any room's noise)
    would squeeze the real frames' range.
    """
    t = max(m.shape[1] for m in mels)
    t += (-t) % multiple
    out = torch.zeros(len(mels), mels[0].shape[0] + 1, t)
    for i, m in enumerate(mels):
        m = m.float()
        out[i, :-1, : m.shape[1]] = m
        if m.shape[1] < t:
            quiet = torch.quantile(m, 0.1, dim=1) if m.shape[1] > 1 else m[:, 0]
            out[i, :-1, m.shape[1] :] = torch.maximum(quiet, torch.tensor(floor)).unsqueeze(1)
        out[i, -1, : m.shape[1]] = 1.0
    return out


def corrected(probs: list[np.ndarray], targets: np.ndarray) -> list[np.ndarray]:
    """The teacher's probabilities, with every head whose top class is not the true label replaced
    by the true label (one-hot): distillation keeps the teacher's doubts, not its mistakes."""
    out = []
    for h, p in enumerate(probs):
        wrong = p.argmax(axis=1) != targets[:, h]
        fixed = p.copy()
        fixed[wrong] = np.eye(p.shape[1], dtype=p.dtype)[targets[wrong, h]]
        out.append(fixed)
        _LOGGER.info("head %d: teacher corrected on %d of %d clips", h, int(wrong.sum()), len(p))
    return out


def mel_warp(mel: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """One ``[n_mels, T]`` log-mel clip stretched in time by a factor in ``1 ± cfg.time_stretch``
    and warped along the mel axis by one in ``1 ± cfg.freq_warp`` (band k takes the value at
    k × factor, linearly interpolated, the top band held), both uniform."""
    m = mel.float()
    if cfg.time_stretch:
        f = 1.0 + cfg.time_stretch * (2.0 * float(torch.rand((), generator=gen)) - 1.0)
        frames = max(1, round(m.shape[1] * f))
        m = torch.nn.functional.interpolate(m[None], size=frames, mode="linear", align_corners=False)[0]
    if cfg.freq_warp:
        f = 1.0 + cfg.freq_warp * (2.0 * float(torch.rand((), generator=gen)) - 1.0)
        pos = (torch.arange(m.shape[0], dtype=torch.float32) * f).clamp(max=m.shape[0] - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=m.shape[0] - 1)
        w = (pos - lo).unsqueeze(1)
        m = m[lo] * (1 - w) + m[hi] * w
    return m


def spec_augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) on a :func:`pad_mel_valid` batch: each clip gets
    ``cfg.time_masks`` time spans (within its real frames) and ``cfg.freq_masks`` mel bands set
    to 0, its per-utterance mean; widths are uniform up to ``time_mask_frames``/``freq_mask_bins``.
    The validity row is left alone."""
    x = x.clone()
    n_mels = x.shape[1] - 1
    for i in range(x.shape[0]):
        frames = int(x[i, -1].sum())
        for _ in range(cfg.time_masks):
            w = int(torch.randint(0, cfg.time_mask_frames + 1, (), generator=gen))
            w = min(w, frames)
            s = int(torch.randint(0, frames - w + 1, (), generator=gen))
            x[i, :-1, s : s + w] = 0.0
        for _ in range(cfg.freq_masks):
            w = min(int(torch.randint(0, cfg.freq_mask_bins + 1, (), generator=gen)), n_mels)
            s = int(torch.randint(0, n_mels - w + 1, (), generator=gen))
            x[i, s : s + w, :frames] = 0.0
    return x


def teacher_labels(teacher: Teacher, clips: ClipSet, batch: int = 32, cache_dir: Path | None = None,
                   features: bool = True) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The teacher's probabilities (and features, if it has them and ``features``) for every clip.

    An :class:`EncoderTeacher` with a ``cache_dir`` reuses cached encoder frames (keyed by
    the clips' keys), so only its small head runs again. ``features=False`` (no feature
    distillation) saves holding ``[N, T, hidden]`` float16 features: 1 GB for the default pool.
    """
    if isinstance(teacher, EncoderTeacher) and cache_dir is not None:
        frames = encode_cached(teacher.encoder, clips.audio, clips.keys, cache_dir,
                               stride=teacher.head.cfg.pool_stride)
        logits: list[list[np.ndarray]] = []
        hidden: list[np.ndarray] = []
        with torch.no_grad():
            for s in range(0, len(frames), 256):
                z, h = teacher.head.forward_features(torch.from_numpy(frames[s : s + 256]).float())
                logits.append([torch.softmax(zh, dim=-1).numpy() for zh in z])
                if features:
                    hidden.append(h.numpy().astype(np.float16))
        heads = [np.concatenate([o[h] for o in logits]) for h in range(len(logits[0]))]
        return heads, (np.concatenate(hidden) if hidden else None)
    probs: list[list[np.ndarray]] = []
    feats: list[np.ndarray] = []
    for s in range(0, len(clips), batch):
        out = teacher.predict(clips.audio[s : s + batch])
        probs.append(out.probs)
        if out.features is not None and features:
            feats.append(out.features.astype(np.float16))
    heads = [np.concatenate([p[h] for p in probs]) for h in range(len(probs[0]))]
    return heads, (np.concatenate(feats) if feats else None)


def train_student(train: ClipSet, val: ClipSet, layout: HeadLayout, recipe: StudentRecipe, out_dir: Path, *,
                  teacher: Teacher | None = None, teacher_window_s: float = 3.0,
                  cache_dir: Path | None = None, progress: bool = True,
                  lexicon: Lexicon | None = None, pool: ClipSet | None = None,
                  init: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> tuple[Student, dict[str, Any]]:
    """Train a student on the augmented pool of ``train``; returns the best-on-val student and its metrics.

    With ``train.ctc_units == "phones"`` the CTC targets are spelled by ``lexicon`` (None: one is made
    by espeak-ng from the pool's transcripts; pass one that also covers the context's words to decode
    the head through the grammar).

    ``pool``: the training pool (default: ``train`` and ``recipe.copies`` augmented copies of it). ``init``
    maps the initial ``{"model": ..., "ctc_head": ..., "units": ...}`` (the trainable's and the CTC head's
    state dicts, the head's phones) to the one to start from (an update's earlier student,
    :func:`distill.update.grow_state`); a run that resumes from ``last.pt`` starts there instead."""
    cfg = recipe.train
    if (cfg.beta > 0 or cfg.gamma > 0) and teacher is None:
        raise ValueError("beta/gamma > 0 (distillation) needs a teacher")
    pool = pool if pool is not None else augmented_copies(train, recipe.copies, recipe.augment, seed=cfg.seed)
    limit = int(recipe.max_seconds * 16000)
    audio = [a[:limit] for a in pool.audio]
    t_logits: list[torch.Tensor] | None = None
    t_feats: torch.Tensor | None = None
    if teacher is not None and (cfg.beta > 0 or cfg.gamma > 0):
        _LOGGER.info("teacher %s labels %d clips", teacher.name, len(pool))
        probs, feats = teacher_labels(teacher, pool, cache_dir=cache_dir, features=cfg.gamma > 0)
        if cfg.teacher_correct:
            probs = corrected(probs, pool.targets)
        t_logits = [torch.from_numpy(np.log(np.clip(p, 1e-8, 1.0))) for p in probs]
        if feats is not None:
            t_feats = torch.from_numpy(feats)
    head_sizes = [len(layout.intents), *(len(v) for _, v in layout.slots)]
    torch.manual_seed(cfg.seed)
    model = Student(head_sizes, recipe.student)
    mels = log_mel(model, audio)
    floor = math.log(recipe.student.frontend.log_floor)
    project = None
    if cfg.gamma > 0:
        if t_feats is None:
            raise ValueError(f"gamma > 0 needs teacher features; {teacher.name if teacher else None} has none")
        project = nn.Linear(recipe.student.channels, int(t_feats.shape[-1]))
    targets = torch.from_numpy(pool.targets)
    teacher_rate = (t_feats.shape[1] / teacher_window_s) if t_feats is not None else 0.0
    spell: Callable[[str], list[int]] = ctc_encode
    classes = len(CTC_ALPHABET) + 1
    ctc_lexicon = None  # what the head spells in, for the checkpoint (None: characters)
    if cfg.ctc > 0 and cfg.ctc_units == "phones":
        lexicon = lexicon or make_lexicon(r.text for r in pool.references)
        spell, classes, ctc_lexicon = lexicon.encode, len(lexicon.units) + 1, lexicon.to_dict()
    ctc_head = nn.Linear(recipe.student.channels, classes) if cfg.ctc > 0 else None
    spelled = [torch.tensor(spell(r.text), dtype=torch.long) for r in pool.references] if cfg.ctc > 0 else []
    if cfg.ctc > 0 and not any(len(t) for t in spelled):
        raise ValueError("train.ctc > 0 needs transcripts: the pool's references have no text")

    def make_batch(idx: np.ndarray, step: int) -> Batch:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        batch = [mels[i] for i in idx]
        if cfg.time_stretch or cfg.freq_warp:
            batch = [mel_warp(m, cfg, gen) for m in batch]
        x = pad_mel_valid(batch, floor, model.stride)
        if cfg.time_masks or cfg.freq_masks:
            x = spec_augment(x, cfg, gen)
        t = torch.from_numpy(idx)
        feats = None
        if t_feats is not None and cfg.gamma > 0:
            seconds = x.shape[2] * recipe.student.frontend.hop_length / 16000
            frames = max(1, min(t_feats.shape[1], int(round(seconds * teacher_rate))))
            feats = t_feats[t, :frames].float()
        out = Batch(inputs=x, targets=[targets[t, h] for h in range(targets.shape[1])],
                    teacher_logits=[z[t] for z in t_logits] if t_logits is not None else None, teacher_feats=feats)
        if ctc_head is not None:
            steps = x.shape[2] // model.stride
            out.ctc_input_lengths = step_mask(x[:, -1] > 0.5, model.stride, steps).sum(dim=1)
            out.ctc_targets = torch.cat([spelled[i] for i in idx])
            out.ctc_target_lengths = torch.tensor([len(spelled[i]) for i in idx], dtype=torch.long)
        return out

    def evaluate(m: nn.Module) -> dict[str, float]:
        metrics = probs_metrics(layout, student_probs(model, val), val)
        return {"command_acceptance": metrics.command_acceptance, "intent_accuracy": metrics.intent_accuracy or 0.0}

    model_config: dict[str, Any] = {"kind": "student", "head_sizes": head_sizes, "student": recipe.student.to_dict(),
                    "layout": layout.to_dict()}
    if ctc_head is not None:
        model_config["ctc_lexicon"] = ctc_lexicon
    trainable = MelStudent(model)
    if init is not None:
        start = init({"model": trainable.state_dict(), "ctc_head": ctc_head.state_dict() if ctc_head else None,
                      "units": list(lexicon.units) if lexicon is not None and ctc_lexicon is not None else None})
        trainable.load_state_dict(start["model"])
        if ctc_head is not None:
            ctc_head.load_state_dict(start["ctc_head"])
    lengths = np.array([m.shape[-1] for m in mels])
    best = fit(trainable, make_batch, len(pool), evaluate, cfg, out_dir, model_config=model_config, project=project,
               ctc_head=ctc_head, lengths=lengths, progress=progress)
    ckpt = load_checkpoint(out_dir / f"{recipe.checkpoint}.pt")
    trainable.load_state_dict(ckpt["model"])
    if ctc_head is not None and ctc_lexicon is not None:  # a phone head: exported for the grammar decoder
        ctc_head.load_state_dict(ckpt["ctc_head"])
        model.attach_ctc(ctc_head.eval(), ctc_lexicon)
    return model.eval(), best


def evaluate_student(model: nn.Module, layout: HeadLayout, clips: ClipSet, threshold: float = 0.0) -> Metrics:
    return probs_metrics(layout, student_probs(model, clips), clips, threshold)

"""Teacher stage: train context heads on a frozen pretrained speech encoder.

Encoder frames are computed once per clip (and per augmented copy) and cached on disk,
so head training runs at the speed of a small MLP. Augmented copies are deterministic
(seeded by clip key and copy), so the same copy is cached once and reused by every run;
their keys also carry a digest of their audio, so a copy that comes out different (another
augmentation config, a babble pool of other clips, changed augmentation code) is encoded
again instead of being given the frames of the old one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assistant.decode import HeadLayout
from distill.augment import AugmentConfig, Augmenter
from distill.data import ClipSet
from distill.evaluate import Metrics, decide_all, score
from distill.teachers.neural import EncoderHead, EncoderTeacher, HeadConfig, encode_cached
from distill.train import Batch, TrainConfig, fit, load_checkpoint

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherConfig:
    whisper_dir: str | None = None
    """CTranslate2 Whisper directory (None: $HUBVOICE_WHISPER_DIR or the development package)."""
    window_s: float = 3.0
    """Encoder window: clips are cropped/padded to this (3 s ≈ 0.03 s per clip on 2 cores)."""
    compute_type: str = "int8"
    """CTranslate2 compute type for the frozen encoder."""
    copies: int = 1
    """Augmented copies of each training clip (besides the clean one)."""
    head: HeadConfig = field(default_factory=lambda: HeadConfig(pool_stride=2))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1500, batch_size=64, lr=2e-3, warmup=100,
                                                                   eval_every=250))
    augment: AugmentConfig = field(default_factory=AugmentConfig)


_LAST_AUGMENTED: list[tuple[tuple[Any, ...], ClipSet]] = []
"""The last results of :func:`augmented_copies` (the teacher and the student stages of a build ask for the
same copies; augmenting 8k clips takes minutes), newest first: one per part of an update's pool."""
_KEPT_AUGMENTED = 4


def augmented_copies(clips: ClipSet, copies: int, cfg: AugmentConfig, seed: int = 0) -> ClipSet:
    """``clips`` followed by ``copies`` deterministic augmented versions of each (babble from the same set).

    The result is deterministic given (clip keys, copies, cfg, seed), so the last one is kept and reused.
    """
    if copies <= 0:
        return clips
    key = (id(clips), len(clips.keys), hashlib.sha1("\n".join(clips.keys).encode()).hexdigest(), copies, repr(cfg), seed)
    for kept, result in _LAST_AUGMENTED:
        if kept == key:
            return result
    result = _augment(clips, copies, cfg, seed)
    _LAST_AUGMENTED[:] = [(key, result), *_LAST_AUGMENTED[: _KEPT_AUGMENTED - 1]]
    return result


def augmented_parts(parts: Sequence[ClipSet], copies: int, cfg: AugmentConfig, seed: int = 0) -> ClipSet:
    """:func:`augmented_copies` of each part (babble from its own part), joined: a part that an earlier
    build augmented on its own gets the same copies, so their cached encoder frames are reused."""
    pools = [augmented_copies(part, copies, cfg, seed) for part in parts]
    out = pools[0]
    for pool in pools[1:]:
        out = out.join(pool)
    return out


def audio_digest(audio: np.ndarray) -> str:
    """A short content digest of a clip's samples (float32 bytes): part of an augmented copy's key."""
    return hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()[:16]


def _augment(clips: ClipSet, copies: int, cfg: AugmentConfig, seed: int) -> ClipSet:
    aug = Augmenter(cfg, babble_pool=clips.audio)
    audio, refs, keys, rows = list(clips.audio), list(clips.references), list(clips.keys), [clips.targets]
    for k in range(copies):
        for i, (clip, key) in enumerate(zip(clips.audio, clips.keys, strict=True)):
            s = int.from_bytes(hashlib.sha1(f"{seed}|{key}|{k}".encode()).digest()[:4], "little")
            y, _ = aug(clip, np.random.default_rng(s), exclude=(i,))
            audio.append(y)
            keys.append(f"{key}|aug{k}|seed{seed}|{audio_digest(y)}")
        refs.extend(clips.references)
        rows.append(clips.targets)
    return ClipSet(clips.name + f"+{copies}aug", audio, refs, np.concatenate(rows), keys)


def probs_metrics(layout: HeadLayout, probs: list[np.ndarray], clips: ClipSet, threshold: float = 0.0) -> Metrics:
    return score(clips.references, decide_all(layout, probs[0], probs[1:], threshold=threshold), layout=layout)


@torch.no_grad()
def head_probs(head: EncoderHead, frames: np.ndarray, batch: int = 256) -> list[np.ndarray]:
    head.eval()
    outs: list[list[np.ndarray]] = []
    for s in range(0, len(frames), batch):
        logits = head(torch.from_numpy(frames[s : s + batch]).float())
        outs.append([torch.softmax(z, dim=-1).numpy() for z in logits])
    return [np.concatenate([o[h] for o in outs]) for h in range(len(outs[0]))]


def teacher_probs(teacher: EncoderTeacher, clips: ClipSet, cache_dir: Path) -> list[np.ndarray]:
    """The teacher's per-head probabilities on ``clips``, from its cached encoder frames (encoded once, then read)."""
    frames = encode_cached(teacher.encoder, clips.audio, clips.keys, cache_dir, stride=teacher.head.cfg.pool_stride)
    return head_probs(teacher.head, frames)


def train_teacher(train: ClipSet, val: ClipSet, layout: HeadLayout, cfg: TeacherConfig, out_dir: Path, *,
                  cache_dir: Path, also: Mapping[str, ClipSet] | None = None, encoder: Any = None,
                  progress: bool = True, pool: ClipSet | None = None,
                  init: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
                  ) -> tuple[EncoderTeacher, dict[str, Metrics], dict[str, list[np.ndarray]]]:
    """Train the heads; return the teacher (best validation checkpoint), and its metrics (threshold 0) and
    per-head probabilities on val and each of ``also``, so callers can rescore them at other thresholds.
    An entry of ``also`` named ``"val"`` replaces the scores on ``val`` (which still selects the checkpoint).

    ``pool``: the training pool (default: ``train`` and ``cfg.copies`` augmented copies of it). ``init``
    maps the new head's initial state dict to the one to start from (an update's earlier heads,
    :func:`distill.update.grow_state`); a run that resumes from ``last.pt`` starts there instead."""
    from distill.teachers.whisper import WhisperEncoder

    encoder = encoder or WhisperEncoder(cfg.whisper_dir, window_s=cfg.window_s, compute_type=cfg.compute_type)
    stride = cfg.head.pool_stride
    pool = pool if pool is not None else augmented_copies(train, cfg.copies, cfg.augment, seed=cfg.train.seed)
    _LOGGER.info("encoding %d training clips (%d clean + %d augmented)", len(pool), len(train), len(pool) - len(train))
    x_train = encode_cached(encoder, pool.audio, pool.keys, cache_dir, stride=stride)
    x_val = encode_cached(encoder, val.audio, val.keys, cache_dir, stride=stride)
    head_sizes = [len(layout.intents), *(len(v) for _, v in layout.slots)]
    cfg_head = HeadConfig(**{**cfg.head.to_dict(), "d_in": int(x_train.shape[-1])})
    torch.manual_seed(cfg.train.seed)
    head = EncoderHead(head_sizes, cfg_head)
    if init is not None:
        head.load_state_dict(init(head.state_dict()))
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(pool.targets)

    def make_batch(idx: np.ndarray, step: int) -> Batch:
        t = torch.from_numpy(idx)
        return Batch(inputs=xt[t].float(), targets=[yt[t, h] for h in range(yt.shape[1])])

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        m = probs_metrics(layout, head_probs(model, x_val), val)  # type: ignore[arg-type]
        return {"command_acceptance": m.command_acceptance, "intent_accuracy": m.intent_accuracy or 0.0}

    model_config = {"kind": "encoder_head", "head_sizes": head_sizes, "head": cfg_head.to_dict(),
                    "layout": layout.to_dict(), "window_s": cfg.window_s}
    fit(head, make_batch, len(pool), evaluate, cfg.train, out_dir, model_config=model_config, progress=progress)
    head.load_state_dict(load_checkpoint(out_dir / "best.pt")["model"])
    teacher = EncoderTeacher(encoder, head, layout)
    probs = {"val": head_probs(head, x_val), **{name: teacher_probs(teacher, clips, cache_dir)
                                                 for name, clips in (also or {}).items()}}
    clip_sets = {"val": val, **(also or {})}
    metrics = {name: probs_metrics(layout, p, clip_sets[name]) for name, p in probs.items()}
    return teacher, metrics, probs

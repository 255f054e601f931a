"""The neural teacher: a pretrained speech encoder (frozen) with trainable context heads.

The encoder is what knows real speech (Whisper base, trained on 680k hours); the heads
learn the context from synthetic clips. Because the encoder is frozen, its outputs for
a clip can be computed once and cached (:func:`encode_cached`), and training the heads
is fast. The head's hidden layer is the "intermediate feature" the student can match.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from assistant.decode import HeadLayout
from distill.teachers.base import TeacherOutput

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadConfig:
    d_in: int = 512
    """Width of the encoder features (Whisper base: 512, small: 768)."""
    hidden: int = 256
    """Width of the head's hidden layer (the features the student distils)."""
    pool_stride: int = 1
    """Average-pool encoder frames by this factor before the head (cache size / speed)."""
    dropout: float = 0.2
    """Dropout on the encoder features and before the heads (training only)."""
    layers: int = 0
    """Pre-norm transformer layers over the hidden frames before pooling (0: none, the heads pool what
    a 5-frame mixing conv has seen). They let the head weigh each word against the whole utterance."""
    attention_heads: int = 4
    """Attention heads of those layers."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        return cls(**data)


class EncoderHead(nn.Module):
    """Encoder frames ``[B, T, d_in]`` → logits per head, with per-head attention pooling."""

    def __init__(self, head_sizes: Sequence[int], cfg: HeadConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or HeadConfig()
        self.head_sizes = tuple(int(n) for n in head_sizes)
        self.norm = nn.LayerNorm(self.cfg.d_in)
        self.proj = nn.Linear(self.cfg.d_in, self.cfg.hidden)
        self.mix = nn.Conv1d(self.cfg.hidden, self.cfg.hidden, 5, padding=2, groups=self.cfg.hidden // 8)
        self.context = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(self.cfg.hidden, self.cfg.attention_heads, 2 * self.cfg.hidden,
                                       dropout=self.cfg.dropout, batch_first=True, norm_first=True),
            self.cfg.layers, enable_nested_tensor=False) if self.cfg.layers > 0 else None
        self.attention = nn.Linear(self.cfg.hidden, len(self.head_sizes))
        self.dropout = nn.Dropout(self.cfg.dropout)
        self.heads = nn.ModuleList(nn.Linear(2 * self.cfg.hidden, n) for n in self.head_sizes)

    def forward_features(self, frames: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.dropout(self.norm(frames))
        h = F.gelu(self.proj(x))
        h = h + F.gelu(self.mix(h.transpose(1, 2))).transpose(1, 2)  # [B, T, hidden]
        if self.context is not None:
            h = self.context(h)
        weights = torch.softmax(self.attention(h), dim=1)  # [B, T, H]
        pooled = torch.einsum("bth,btc->bhc", weights, h)
        mean = h.mean(dim=1)
        logits = [head(self.dropout(torch.cat([pooled[:, i], mean], dim=1))) for i, head in enumerate(self.heads)]
        return logits, h

    def forward(self, frames: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(frames)[0]


def pool_frames(frames: np.ndarray, stride: int) -> np.ndarray:
    """Average-pool ``[B, T, D]`` frames over time by ``stride`` (drops a ragged tail)."""
    if stride <= 1:
        return frames
    b, t, d = frames.shape
    t2 = t // stride
    return frames[:, : t2 * stride].reshape(b, t2, stride, d).mean(axis=2)


DEFAULT_CACHE_TAG = "ct2-int8"
"""The engine of the first cache files (CTranslate2, int8): its keys carry no tag, so they keep hitting."""


def cache_paths(encoder: Any, keys: Sequence[str], cache_dir: Path, *, stride: int = 1) -> list[Path]:
    """The cache file of each key's frames: a hash of (model dir, window, stride[, engine], key).

    The engine is the encoder's ``cache_tag`` (e.g. ``"ct2-int8"``, ``"torch-fp32"``), so
    features of different engines never share a file. It is left out of the key when the
    encoder has none or it is :data:`DEFAULT_CACHE_TAG`, the key the cache was first written with.
    """
    tag = f"{encoder.model_dir.resolve()}|{encoder.window_s}|{stride}"
    engine = getattr(encoder, "cache_tag", None)
    if engine is not None and engine != DEFAULT_CACHE_TAG:
        tag = f"{tag}|{engine}"
    return [cache_dir / (hashlib.sha1(f"{tag}|{k}".encode()).hexdigest() + ".npy") for k in keys]


@dataclass
class CacheUse:
    """The cache files :func:`encode_cached` wrote (``encoded``) and found already there (``found``) while
    this was active: a file it wrote itself and then read again is not counted as found."""

    encoded: set[str] = field(default_factory=set)
    found: set[str] = field(default_factory=set)


_CACHE_USES: list[CacheUse] = []


@contextmanager
def cache_use() -> Iterator[CacheUse]:
    """Record what :func:`encode_cached` encodes and what it finds cached, in this process, inside the block.

    A build reports from it what of its teacher encodings it took from the work folder.
    """
    use = CacheUse()
    _CACHE_USES.append(use)
    try:
        yield use
    finally:
        _CACHE_USES.remove(use)


def encode_cached(encoder: Any, clips: Sequence[np.ndarray], keys: Sequence[str], cache_dir: Path,
                  *, stride: int = 1, batch_size: int = 16) -> np.ndarray:
    """Encoder frames ``[N, T, D]`` for each clip, computed once per (encoder, window, stride, key) and cached.

    Returned as float16, the cache's own precision: callers cast a batch at a time. The files are
    named by :func:`cache_paths`. Frames are read into one preallocated array: stacking them and then
    casting to float32 (as this did until 2026-12-06) held the list, the stack and the float32 copy
    at once: 4x the float16 size, about 8 GB for the default preset's 15,888 pool clips of
    125 x 512 frames (by arithmetic; the build's peak RSS was 15.1 GB).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = cache_paths(encoder, keys, cache_dir, stride=stride)
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    for use in _CACHE_USES:
        use.encoded.update(paths[i].name for i in todo)
        use.found.update(p.name for p in paths if p.name not in use.encoded)
    if paths:
        _LOGGER.info("%d clips to encode, %d from the cache", len(todo), len(paths) - len(todo))
    for start in range(0, len(todo), batch_size):
        idx = todo[start : start + batch_size]
        feats = pool_frames(encoder.encode([clips[i] for i in idx]), stride).astype(np.float16)
        for i, f in zip(idx, feats, strict=True):
            tmp = paths[i].with_suffix(".tmp.npy")
            np.save(tmp, f)
            tmp.replace(paths[i])
    first = np.load(paths[0]) if paths else np.zeros((0, 0), np.float16)
    out = np.empty((len(paths), *first.shape), np.float16)
    for i, path in enumerate(paths):
        frames = first if i == 0 else np.load(path)
        if frames.shape != first.shape:
            raise ValueError(f"{path}: cached frames {frames.shape}, expected {first.shape} (a stale cache file?)")
        out[i] = frames
    return out


class EncoderTeacher:
    """Frozen encoder + trained :class:`EncoderHead`, behind the :class:`Teacher` interface."""

    def __init__(self, encoder: Any, head: EncoderHead, layout: HeadLayout, name: str = "whisper-base+head") -> None:
        self.encoder = encoder
        self.head = head.eval()
        self.layout = layout
        self.name = name

    @torch.no_grad()
    def predict(self, audio: Sequence[np.ndarray]) -> TeacherOutput:
        frames = pool_frames(self.encoder.encode(audio), self.head.cfg.pool_stride)
        logits, hidden = self.head.forward_features(torch.from_numpy(frames))
        return TeacherOutput(
            probs=[torch.softmax(z, dim=-1).numpy() for z in logits], features=hidden.numpy()
        )

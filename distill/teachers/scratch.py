"""The baseline teacher: a transformer trained from scratch on log-mel, no pretrained weights.

It is what the pretrained Whisper teacher is compared against: the same synthetic data,
the same heads (per-head attention pooling + mean, intent first, then one head per
slot), the same training loop (:func:`distill.train.fit`), the same :class:`Teacher`
interface, so a student distils from either. The model: the frontend of every exported
model (:class:`~distill.nets.frontend.LogMel`), per-utterance mean/variance
normalization, a 2-D conv subsampling ×4 (ESPnet's ``Conv2dSubsampling``), sinusoidal
positions and a pre-norm transformer encoder; its output frames are the features a
student can match. Width, depth and heads come from :class:`ScratchNetConfig`, so a GPU
run can go larger.

Padding is masked everywhere: frames whose every band sits at the log floor (zero
padding, digital silence) are left out of the normalization, zeroed after each conv,
hidden from attention and from pooling. So a clip gets the same answer alone, in a
batch with longer clips, or padded to the teacher's window (tested). Training runs on
log-mel cached once per clip of a fixed pool (the clean clips + ``copies`` augmented
copies), with SpecAugment drawn per step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from assistant.decode import HeadLayout
from assistant.errors import ConfigError
from distill.augment import AugmentConfig
from distill.data import ClipSet, pad_batch
from distill.distillation import pad_mel
from distill.evaluate import Metrics
from distill.nets.frontend import FrontendConfig, LogMel
from distill.teach import augmented_copies, probs_metrics
from distill.teachers.base import TeacherOutput
from distill.train import Batch, TrainConfig, fit, load_checkpoint

SILENCE_MARGIN = 0.1
"""A frame is padding/silence when every band is within this many nats of log(log_floor)."""


@dataclass(frozen=True)
class ScratchNetConfig:
    d_model: int = 128
    """Transformer width."""
    layers: int = 4
    """Transformer encoder layers."""
    heads: int = 4
    """Attention heads (must divide d_model)."""
    ff_mult: int = 4
    """Feed-forward width = ff_mult × d_model."""
    conv_channels: int = 32
    """Channels of the two stride-2 convs of the subsampling."""
    dropout: float = 0.1
    """Dropout in the encoder and before the heads (training only)."""
    frontend: FrontendConfig = field(default_factory=lambda: FrontendConfig(n_mels=64, normalize="none"))
    """Log-mel frontend; the model normalizes per utterance itself (masking padding)."""

    def __post_init__(self) -> None:
        if min(self.d_model, self.layers, self.heads, self.ff_mult, self.conv_channels) < 1:
            raise ConfigError("scratch: d_model, layers, heads, ff_mult and conv_channels must be positive")
        if self.d_model % self.heads:
            raise ConfigError(f"scratch.heads: must divide d_model ({self.d_model}), got {self.heads}")
        if self.frontend.normalize != "none":
            raise ConfigError("scratch.frontend.normalize: expected 'none' (the model normalizes, masking padding)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScratchNetConfig:
        data = dict(data)
        if isinstance(data.get("frontend"), Mapping):
            data["frontend"] = FrontendConfig.from_dict(dict(data["frontend"]))
        return cls(**data)


@dataclass(frozen=True)
class ScratchTeacherConfig:
    net: ScratchNetConfig = field(default_factory=ScratchNetConfig)
    window_s: float = 3.0
    """Clips are cropped to this; features are padded to its frame count (as the Whisper teacher's window)."""
    copies: int = 1
    """Augmented copies of each training clip (besides the clean one)."""
    freq_masks: tuple[int, int] = (2, 8)
    """SpecAugment: (count, max width in bands) of frequency masks per training clip."""
    time_masks: tuple[int, int] = (2, 10)
    """SpecAugment: (count, max width in 10-ms frames) of time masks per training clip."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1500, batch_size=64, lr=1e-3, min_lr=1e-5,
                                                                   warmup=150, eval_every=250))
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def _halve(valid: torch.Tensor) -> torch.Tensor:
    """The validity of a stride-2, kernel-3, padding-1 conv's outputs: ``[B, T]`` → ``[B, ceil(T / 2)]``."""
    return F.pad(valid, (0, valid.shape[1] % 2)).reshape(valid.shape[0], -1, 2).any(dim=2)


def _positions(t: int, d: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(t, d, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return pe


class ScratchNet(nn.Module):
    """Log-mel ``[B, n_mels, T]`` → logits per head, and encoder frames ``[B, ceil(T / 4), d_model]``."""

    def __init__(self, head_sizes: Sequence[int], cfg: ScratchNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ScratchNetConfig()
        self.head_sizes = tuple(int(n) for n in head_sizes)
        c, d, n_mels = self.cfg.conv_channels, self.cfg.d_model, self.cfg.frontend.n_mels
        self.frontend = LogMel(self.cfg.frontend)
        self.floor = math.log(self.cfg.frontend.log_floor)
        self.conv1 = nn.Conv2d(1, c, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.proj = nn.Linear(c * ((n_mels + 3) // 4), d)
        layer = nn.TransformerEncoderLayer(d, self.cfg.heads, self.cfg.ff_mult * d, self.cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, self.cfg.layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.attention = nn.Linear(d, len(self.head_sizes))
        self.dropout = nn.Dropout(self.cfg.dropout)
        self.heads = nn.ModuleList(nn.Linear(2 * d, n) for n in self.head_sizes)

    def forward_features(self, mel: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        valid = (mel > self.floor + SILENCE_MARGIN).any(dim=1)  # [B, T]
        valid = valid | ~valid.any(dim=1, keepdim=True)  # an all-silent clip: keep every frame
        m = valid[:, None, :].to(mel.dtype)
        n = m.sum(dim=2, keepdim=True)
        x = (mel - (mel * m).sum(dim=2, keepdim=True) / n) * m
        x = x / torch.sqrt((x * x).sum(dim=(1, 2), keepdim=True) / (n * mel.shape[1]) + 1e-5)
        v1 = _halve(valid)
        x = F.relu(self.conv1(x.unsqueeze(1))) * v1[:, None, None, :]
        v2 = _halve(v1)
        x = F.relu(self.conv2(x)) * v2[:, None, None, :]  # [B, C, F/4, T/4]
        x = self.proj(x.flatten(1, 2).transpose(1, 2))
        x = self.dropout(x + _positions(x.shape[1], x.shape[2], x.device).to(x.dtype))
        h = self.encoder(x, src_key_padding_mask=~v2) * v2[:, :, None]  # [B, T/4, d]
        scores = self.attention(h).masked_fill(~v2[:, :, None], float("-inf"))
        pooled = torch.einsum("bth,btc->bhc", torch.softmax(scores, dim=1), h)
        mean = h.sum(dim=1) / v2.sum(dim=1, keepdim=True)
        logits = [head(self.dropout(torch.cat([pooled[:, i], mean], dim=1))) for i, head in enumerate(self.heads)]
        return logits, h

    def forward(self, mel: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(mel)[0]


@torch.no_grad()
def log_mels(frontend: LogMel, audio: Sequence[np.ndarray], batch: int = 64) -> list[torch.Tensor]:
    """Each clip's log-mel ``[n_mels, frames]`` (float16), up to the last frame that hears it."""
    hop, tail = frontend.cfg.hop_length, frontend.cfg.n_fft
    out: list[torch.Tensor] = []
    for s in range(0, len(audio), batch):
        clips = audio[s : s + batch]
        mel = frontend(F.pad(torch.from_numpy(pad_batch(clips)), (0, tail)))
        out.extend(mel[i, :, : (len(c) + tail) // hop + 1].to(torch.float16) for i, c in enumerate(clips))
    return out


@torch.no_grad()
def mel_probs(net: ScratchNet, mels: Sequence[torch.Tensor], batch: int = 128) -> list[np.ndarray]:
    """Per-head probabilities for cached log-mel (lengths sorted into batches, answers in input order)."""
    net.eval()
    device = next(net.parameters()).device
    order = np.argsort([m.shape[1] for m in mels])
    outs: list[list[np.ndarray]] = []
    for s in range(0, len(order), batch):
        x = pad_mel([mels[i] for i in order[s : s + batch]], net.floor, 4).to(device)
        outs.append([torch.softmax(z.float(), dim=-1).cpu().numpy() for z in net(x)])
    inverse = np.argsort(order)
    return [np.concatenate([o[h] for o in outs])[inverse] for h in range(len(net.head_sizes))]


class ScratchTeacher:
    """A trained :class:`ScratchNet` behind the :class:`Teacher` interface."""

    def __init__(self, net: ScratchNet, layout: HeadLayout, window_s: float = 3.0,
                 name: str = "scratch-transformer") -> None:
        self.net = net.eval()
        self.layout = layout
        self.window_s = window_s
        self.name = name
        fe = net.cfg.frontend
        self.limit = int(window_s * fe.sample_rate)
        self.frames = -(-((self.limit + fe.n_fft) // fe.hop_length + 1) // 4)  # feature frames per window

    @torch.no_grad()
    def predict(self, audio: Sequence[np.ndarray]) -> TeacherOutput:
        mels = log_mels(self.net.frontend, [np.asarray(a, np.float32)[: self.limit] for a in audio])
        x = pad_mel(mels, self.net.floor, 4).to(next(self.net.parameters()).device)
        logits, h = self.net.forward_features(x)
        feats = F.pad(h.float(), (0, 0, 0, self.frames - h.shape[1]))  # the window's frame count, zeros after
        return TeacherOutput(probs=[torch.softmax(z.float(), dim=-1).cpu().numpy() for z in logits],
                             features=feats.cpu().numpy())


def load_scratch_teacher(path: Path) -> ScratchTeacher:
    """Rebuild a :class:`ScratchTeacher` from a checkpoint written by :func:`train_scratch_teacher`."""
    ckpt = load_checkpoint(path)
    mc = ckpt["model_config"]
    if mc.get("kind") != "scratch_teacher":
        raise ConfigError(f"{path}: not a scratch-teacher checkpoint (kind {mc.get('kind')!r})")
    net = ScratchNet(mc["head_sizes"], ScratchNetConfig.from_dict(mc["net"]))
    net.load_state_dict(ckpt["model"])
    return ScratchTeacher(net, HeadLayout.from_dict(mc["layout"]), float(mc["window_s"]))


def spec_augment(x: torch.Tensor, cfg: ScratchTeacherConfig, rng: np.random.Generator, floor: float) -> torch.Tensor:
    """Frequency and time masks, in place, set to the log floor (a masked frame drops out of the sequence)."""
    for i in range(x.shape[0]):
        for axis, (count, width) in ((1, cfg.freq_masks), (2, cfg.time_masks)):
            for _ in range(count):
                w = int(rng.integers(0, width + 1))
                start = int(rng.integers(0, max(1, x.shape[axis] - w)))
                x[i].narrow(axis - 1, start, min(w, x.shape[axis] - start)).fill_(floor)
    return x


def scratch_macs_per_second(net: ScratchNet, window_s: float = 3.0) -> float:
    """Analytic MACs per second of audio on a ``window_s`` window: frontend, convs, projection, encoder, heads."""
    c, d, n_mels = net.cfg.conv_channels, net.cfg.d_model, net.cfg.frontend.n_mels
    t = int(window_s * 100)
    t1, t2, f1, f2 = (t + 1) // 2, (t + 3) // 4, (n_mels + 1) // 2, (n_mels + 3) // 4
    fe = net.frontend
    macs = t * (fe.kernels.shape[0] * fe.kernels.shape[2] + fe.fbank.numel())
    macs += t1 * f1 * c * 9 + t2 * f2 * c * c * 9 + t2 * c * f2 * d
    macs += net.cfg.layers * t2 * (4 * d * d + 2 * d * net.cfg.ff_mult * d + 2 * t2 * d)
    macs += t2 * d * len(net.head_sizes) + 2 * d * sum(net.head_sizes)
    return macs / window_s


def train_scratch_teacher(train: ClipSet, val: ClipSet, layout: HeadLayout, cfg: ScratchTeacherConfig, out_dir: Path,
                          *, also: Mapping[str, ClipSet] | None = None,
                          progress: bool = True) -> tuple[ScratchTeacher, dict[str, Metrics]]:
    """Train from scratch; return the teacher (best validation checkpoint) and metrics on val and ``also``."""
    head_sizes = [len(layout.intents), *(len(v) for _, v in layout.slots)]
    pool = augmented_copies(train, cfg.copies, cfg.augment, seed=cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    net = ScratchNet(head_sizes, cfg.net)
    limit = int(cfg.window_s * cfg.net.frontend.sample_rate)
    mels = log_mels(net.frontend, [a[:limit] for a in pool.audio])
    val_mels = log_mels(net.frontend, [a[:limit] for a in val.audio])
    targets = torch.from_numpy(pool.targets)

    def make_batch(idx: np.ndarray, step: int) -> Batch:
        x = pad_mel([mels[i] for i in idx], net.floor, 4)
        x = spec_augment(x, cfg, np.random.default_rng([cfg.train.seed, step, 7]), net.floor)
        t = torch.from_numpy(idx)
        return Batch(inputs=x, targets=[targets[t, h] for h in range(targets.shape[1])])

    def evaluate(model: nn.Module) -> dict[str, float]:
        m = probs_metrics(layout, mel_probs(net, val_mels), val)
        return {"command_acceptance": m.command_acceptance, "intent_accuracy": m.intent_accuracy or 0.0}

    model_config = {"kind": "scratch_teacher", "head_sizes": head_sizes, "net": cfg.net.to_dict(),
                    "layout": layout.to_dict(), "window_s": cfg.window_s}
    fit(net, make_batch, len(pool), evaluate, cfg.train, out_dir, model_config=model_config, progress=progress)
    net.load_state_dict(load_checkpoint(out_dir / "best.pt")["model"])
    metrics = {"val": probs_metrics(layout, mel_probs(net, val_mels), val)}
    for name, clips in (also or {}).items():
        metrics[name] = probs_metrics(layout, mel_probs(net, log_mels(net.frontend, [a[:limit] for a in clips.audio])),
                                      clips)
    return ScratchTeacher(net, layout, cfg.window_s), metrics

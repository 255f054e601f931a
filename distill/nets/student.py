"""The tiny student: a causal, dilated, depthwise-separable temporal CNN (TC-ResNet/DS-CNN spirit).

Log-mel bands are the channels of 1-D convolutions over time. Every convolution is
causal, so the network can run on a stream of audio chunks and, with the running
attention/max pooling below, give the same answer as on the whole utterance
(:class:`StreamingStudent`). Heads: one intent head and one head per slot, each with
its own attention pooling over time (a slot's value is said at one moment; the intent
is spread over the command).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from assistant.errors import ConfigError
from distill.nets.frontend import FrontendConfig, LogMel


@dataclass(frozen=True)
class StudentConfig:
    channels: int = 64
    """Width of every block."""
    kernel_size: int = 5
    """Depthwise kernel length in frames."""
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2, 4, 8)
    """One residual block per entry; the receptive field grows with the dilations."""
    dropout: float = 0.1
    """Dropout before the heads (training only)."""
    stem_stride: int = 2
    """The stem merges this many 10-ms frames into one step (cost falls by this factor)."""
    stem: str = "conv1d"
    """'conv1d': mel bands are the channels of one strided conv; 'conv2d': two causal 2-D convs over
    (mel, time) first, whose weights are shared along the mel axis (speaker-robust, DS-CNN style)."""
    stem_width: int = 16
    """Channels of the 2-D stem."""
    frontend: FrontendConfig = field(default_factory=lambda: FrontendConfig(normalize="none", padding="causal"))
    """Feature frontend inside the model; 'causal' padding and no utterance normalization stream exactly."""
    causal: bool = True
    """False: the blocks' depthwise convs see as many frames ahead as behind (centred kernels). Such a
    student cannot stream (it needs the frames after each step), and in a padded batch a clip's last steps
    see the padding: for measuring what causality costs (docs/BENCHMARKS.md)."""

    def __post_init__(self) -> None:
        if self.channels < 4 or self.kernel_size < 1 or not self.dilations:
            raise ConfigError("student: channels >= 4, kernel_size >= 1 and at least one dilation are required")
        if self.stem not in ("conv1d", "conv2d"):
            raise ConfigError(f"student.stem: expected 'conv1d' or 'conv2d', got {self.stem!r}")
        if self.stem == "conv2d" and self.stem_stride not in (1, 2):
            raise ConfigError(f"student.stem_stride: the conv2d stem takes 1 or 2, got {self.stem_stride}")
        if self.stem_stride < 1:
            raise ConfigError(f"student.stem_stride: expected a positive integer, got {self.stem_stride}")
        if any(d < 1 for d in self.dilations):
            raise ConfigError(f"student.dilations: expected positive integers, got {self.dilations}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dilations"] = list(self.dilations)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        data = dict(data)
        if "frontend" in data and isinstance(data["frontend"], dict):
            data["frontend"] = FrontendConfig.from_dict(data["frontend"])
        if "dilations" in data:
            data["dilations"] = tuple(data["dilations"])
        return cls(**data)


_NEG = -1e30  # "minus infinity" that stays finite through exp(a - b)


def step_mask(valid: torch.Tensor, stride: int, steps: int) -> torch.Tensor:
    """``[B, steps]`` bool: the network steps made only of real frames, from the frame mask ``valid`` ``[B, T]``.

    A step covers ``stride`` frames; it is real when its last frame is. The first step always
    counts, so a clip shorter than one step still has something to pool.
    """
    mask = valid[:, stride - 1 :: stride][:, :steps].bool()
    if mask.shape[1] < steps:
        mask = F.pad(mask, (0, steps - mask.shape[1]))
    mask[:, 0] = True
    return mask


class CausalBlock(nn.Module):
    """Depthwise dilated causal conv → BN → ReLU → pointwise conv → BN, plus the residual."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, causal: bool = True) -> None:
        super().__init__()
        self.context = (kernel_size - 1) * dilation  # past frames this block needs
        # frames of zero padding before and after (a centred kernel looks half its span ahead)
        self.pad = (self.context, 0) if causal else (self.context // 2, self.context - self.context // 2)
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, dilation=dilation, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.pointwise = nn.Conv1d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, C, T]; ``past`` the block's last ``context`` input frames (zeros at the start)."""
        padded = F.pad(x, self.pad) if past is None else torch.cat([past, x], dim=2)
        y = F.relu(self.bn1(self.depthwise(padded)))
        return F.relu(self.bn2(self.pointwise(y)) + x)


class Stem2d(nn.Module):
    """Two causal 2-D convs over (mel, time), halving the mel axis twice, then a 1×1 projection.

    ``forward(mel, past)`` returns the features and the new streaming state (the last input
    frames each conv needs); with ``past=None`` the convs see zeros before the start.
    """

    def __init__(self, n_mels: int, channels: int, width: int, stride: int) -> None:
        super().__init__()
        self.ctx = (3 - stride, 2)
        self.conv1 = nn.Conv2d(1, width, (3, 3), stride=(2, stride), padding=(1, 0), bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, (3, 3), stride=(2, 1), padding=(1, 0), bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        f1 = (n_mels - 1) // 2 + 1
        self.f1 = f1
        f2 = (f1 - 1) // 2 + 1
        self.proj = nn.Conv1d(width * f2, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm1d(channels)

    def forward(self, mel: torch.Tensor,
                past: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = mel.unsqueeze(1)
        p1 = F.pad(x, (self.ctx[0], 0)) if past is None else torch.cat([past[0], x], dim=3)
        y = F.relu(self.bn1(self.conv1(p1)))
        p2 = F.pad(y, (self.ctx[1], 0)) if past is None else torch.cat([past[1], y], dim=3)
        z = F.relu(self.bn2(self.conv2(p2))).flatten(1, 2)
        out = F.relu(self.bn3(self.proj(z)))
        return out, [p1[..., p1.shape[3] - self.ctx[0] :], p2[..., p2.shape[3] - self.ctx[1] :]]


class Student(nn.Module):
    """Raw 16 kHz PCM ``[batch, samples]`` → logits per head (intent first, then slots)."""

    def __init__(self, head_sizes: Sequence[int], cfg: StudentConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or StudentConfig()
        self.head_sizes = tuple(int(n) for n in head_sizes)
        c = self.cfg.channels
        self.frontend = LogMel(self.cfg.frontend)
        self.input_norm = nn.BatchNorm1d(self.cfg.frontend.n_mels)
        self.stride = self.cfg.stem_stride
        n_mels = self.cfg.frontend.n_mels
        two_d = self.cfg.stem == "conv2d"
        self.stem2d = Stem2d(n_mels, c, self.cfg.stem_width, self.stride) if two_d else None
        self.stem = None if two_d else nn.Conv1d(n_mels, c, self.stride, stride=self.stride, bias=False)
        self.stem_bn = None if two_d else nn.BatchNorm1d(c)
        self.blocks = nn.ModuleList(CausalBlock(c, self.cfg.kernel_size, d, self.cfg.causal)
                                    for d in self.cfg.dilations)
        self.block_contexts = [(self.cfg.kernel_size - 1) * d for d in self.cfg.dilations]
        self.attention = nn.Conv1d(c, len(self.head_sizes), 1)
        self.dropout = nn.Dropout(self.cfg.dropout)
        self.heads = nn.ModuleList(nn.Linear(2 * c, n) for n in self.head_sizes)
        self.ctc_head: nn.Linear | None = None
        """Per-step CTC logits over a lexicon's units (+ blank), once trained: :meth:`attach_ctc`."""
        self.ctc_lexicon: dict[str, Any] | None = None
        """The lexicon the CTC head spells in (:class:`assistant.grammar.Lexicon` as a dict)."""

    def attach_ctc(self, head: nn.Linear, lexicon: Mapping[str, Any]) -> None:
        """Give the student a trained phone CTC head (training keeps it apart: ``fit``'s ``ctc_head``), so that
        export writes its per-step log-probabilities as an output the hub decodes through the grammar."""
        if head.in_features != self.cfg.channels or head.out_features != len(lexicon["units"]) + 1:
            raise ConfigError(f"CTC head {head.in_features} -> {head.out_features}: expected {self.cfg.channels} -> "
                              f"{len(lexicon['units']) + 1} (the lexicon's units + blank)")
        self.ctc_head = head
        self.ctc_lexicon = dict(lexicon)

    def ctc_log_probs(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, T, 1 + units]`` log-probabilities from per-step features ``[B, T, C]``."""
        if self.ctc_head is None:
            raise ConfigError("this student has no CTC head (train with train.ctc > 0 and ctc_units 'phones')")
        return torch.log_softmax(self.ctc_head(feats), dim=-1)

    def frames(self, mel: torch.Tensor) -> torch.Tensor:
        """Per-step hidden features ``[B, C, T // stem_stride]`` from log-mel ``[B, n_mels, T]``."""
        x = self.stem_out(self.input_norm(mel))[0]
        for block in self.blocks:
            x = block(x)
        return x

    def stem_out(self, mel: torch.Tensor,
                 past: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The stem's output and, for the 2-D stem, its new streaming state (else an empty list)."""
        if self.stem2d is not None:
            return self.stem2d(mel, past)
        assert self.stem is not None and self.stem_bn is not None  # built together in __init__
        return F.relu(self.stem_bn(self.stem(mel))), []

    def stem_state(self, batch: int) -> list[torch.Tensor]:
        """The 2-D stem's initial streaming state (zeros), or an empty list."""
        if self.stem2d is None:
            return []
        w, ctx = self.cfg.stem_width, self.stem2d.ctx
        return [torch.zeros(batch, 1, self.cfg.frontend.n_mels, ctx[0]), torch.zeros(batch, w, self.stem2d.f1, ctx[1])]

    def pool_and_classify(self, weight_sum: torch.Tensor, weighted: torch.Tensor,
                          running_max: torch.Tensor) -> list[torch.Tensor]:
        """Heads from the pooled statistics (shared by whole-utterance and streaming paths)."""
        pooled = weighted / weight_sum.unsqueeze(-1)  # [B, H, C]
        outs = []
        for h, head in enumerate(self.heads):
            z = torch.cat([pooled[:, h], running_max], dim=1)
            outs.append(head(self.dropout(z)))
        return outs

    def forward_features(self, audio: torch.Tensor,
                         lengths: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Logits per head and the per-step hidden features ``[B, T, C]`` (for feature distillation).

        ``lengths`` (samples per clip of a zero-padded batch) keeps the padding out of the pooling,
        so each clip gets exactly the result it gets alone (the convolutions are causal).
        """
        mel = self.frontend(audio)
        valid = None
        if lengths is not None:
            frames = torch.div(lengths, self.cfg.frontend.hop_length, rounding_mode="floor")
            valid = torch.arange(mel.shape[2]).unsqueeze(0) < frames.unsqueeze(1)
        return self.forward_mel(mel, valid)

    def forward_mel(self, mel: torch.Tensor,
                    valid: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """As :meth:`forward_features`, from precomputed log-mel (training caches the frontend's output);
        ``valid`` ``[B, T]`` marks the real frames of a padded batch (None: all are real)."""
        x = self.frames(mel)
        scores = self.attention(x)  # [B, H, T]
        pooled_max = x
        if valid is not None:
            keep = step_mask(valid, self.stride, x.shape[2]).unsqueeze(1)  # [B, 1, T]
            scores = scores.masked_fill(~keep, _NEG)
            pooled_max = x.masked_fill(~keep, _NEG)
        m = scores.amax(dim=2, keepdim=True)
        w = torch.exp(scores - m)
        weighted = torch.einsum("bht,bct->bhc", w, x)
        logits = self.pool_and_classify(w.sum(dim=2), weighted, pooled_max.amax(dim=2))
        return logits, x.transpose(1, 2)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> list[torch.Tensor]:
        return self.forward_features(audio, lengths)[0]


class StreamingStudent(nn.Module):
    """Runs a :class:`Student` on consecutive chunks, carrying its state explicitly.

    ``step(chunk, state)`` takes a chunk whose length is a multiple of the hop and
    returns the logits for everything heard so far plus the new state; after the last
    chunk they equal the whole-utterance logits. The state is a flat list of tensors so
    the step exports to ONNX as (chunk, *state) → (*logits, *state).
    """

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.chunk_multiple = student.cfg.frontend.hop_length * student.stride
        if student.cfg.frontend.padding != "causal" or student.cfg.frontend.normalize != "none":
            raise ConfigError("streaming needs frontend padding='causal' and normalize='none'")
        if not student.cfg.causal:
            raise ConfigError("streaming needs a causal student (student.causal: true)")
        self.student = student

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        s = self.student
        c, h = s.cfg.channels, len(s.head_sizes)
        state = [torch.zeros(batch, s.frontend.left_context), *s.stem_state(batch)]
        state += [torch.zeros(batch, c, k) for k in s.block_contexts]
        state += [
            torch.full((batch, h, 1), _NEG),  # running max of attention scores
            torch.zeros(batch, h),  # sum of exp(score - max)
            torch.zeros(batch, h, c),  # sum of exp(score - max) * frame
            torch.full((batch, c), _NEG),  # running max-pool
        ]
        return state

    def step(self, chunk: torch.Tensor, state: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, new_state, _ = self.step_frames(chunk, state)
        return logits, new_state

    def step_frames(self, chunk: torch.Tensor, state: Sequence[torch.Tensor]
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """As :meth:`step`, plus the chunk's per-step features ``[B, C, steps]`` (for the CTC head)."""
        s = self.student
        n_blocks, n_stem = len(s.blocks), len(s.stem_state(1))
        audio_past, stem_past = state[0], list(state[1 : 1 + n_stem])
        block_past = list(state[1 + n_stem : 1 + n_stem + n_blocks])
        m, wsum, weighted, running_max = state[1 + n_stem + n_blocks :]
        step_samples = s.cfg.frontend.hop_length * s.stride
        if chunk.shape[1] % step_samples:
            raise ValueError(f"chunk of {chunk.shape[1]} samples: expected a multiple of {step_samples}")
        feats = s.frontend(chunk, past=audio_past)
        new_audio_past = torch.cat([audio_past, chunk], dim=1)[:, -s.frontend.left_context :]
        x, new_stem_past = s.stem_out(s.input_norm(feats), stem_past or None)
        new_block_past = []
        for block, past in zip(s.blocks, block_past, strict=True):
            joined = torch.cat([past, x], dim=2)
            new_block_past.append(joined[:, :, joined.shape[2] - past.shape[2] :])
            x = block(x, past=past)
        scores = s.attention(x)
        m_new = torch.maximum(m, scores.amax(dim=2, keepdim=True))
        w = torch.exp(scores - m_new)
        scale = torch.exp(m - m_new)
        wsum = wsum * scale.squeeze(-1) + w.sum(dim=2)
        weighted = weighted * scale + torch.einsum("bht,bct->bhc", w, x)
        running_max = torch.maximum(running_max, x.amax(dim=2))
        logits = s.pool_and_classify(wsum, weighted, running_max)
        return logits, [new_audio_past, *new_stem_past, *new_block_past, m_new, wsum, weighted, running_max], x

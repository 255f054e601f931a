"""The log-mel feature frontend that sits inside every exported model.

Computed as a strided ``Conv1d`` with fixed windowed-DFT kernels and a matmul with
``torchaudio.functional.melscale_fbanks`` instead of ``torch.stft``: it matches
``torchaudio.transforms.MelSpectrogram`` (tested) and exports to plain ONNX Conv/MatMul
ops, which ONNX Runtime runs ~19x faster than its STFT op (DESIGN.md). Only the DFT
bins that the mel filterbank uses are computed, so a 4 kHz mel range halves the cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from assistant.errors import ConfigError

_NORMALIZE = ("none", "utterance")
_PADDING = ("center", "causal")


@dataclass(frozen=True)
class FrontendConfig:
    sample_rate: int = 16000
    """Input rate in Hz; bundles take raw PCM at this rate."""
    n_fft: int = 512
    """DFT size in samples (32 ms at 16 kHz)."""
    win_length: int = 400
    """Hann window length in samples (25 ms), centred in the n_fft frame."""
    hop_length: int = 160
    """Frame step in samples (10 ms)."""
    n_mels: int = 40
    """Mel bands."""
    f_min: float = 20.0
    """Lowest mel edge in Hz."""
    f_max: float = 4000.0
    """Highest mel edge in Hz: 4 kHz keeps telephone-band (8 kHz) microphones in range."""
    log_floor: float = 1e-6
    """Added to mel power before the log."""
    normalize: str = "utterance"
    """'utterance': subtract each band's mean over the utterance; 'none': raw log-mel."""
    padding: str = "center"
    """'center': reflect-pad n_fft/2 on both sides (torchaudio's framing, samples // hop + 1
    frames); 'causal': zero-pad n_fft - hop on the left only (samples // hop frames), so
    a stream of hop-multiple chunks gives exactly the frames of the whole utterance."""

    def __post_init__(self) -> None:
        if self.normalize not in _NORMALIZE:
            raise ConfigError(f"frontend.normalize: expected one of {', '.join(_NORMALIZE)}, got {self.normalize!r}")
        if self.padding not in _PADDING:
            raise ConfigError(f"frontend.padding: expected one of {', '.join(_PADDING)}, got {self.padding!r}")
        if not 0 < self.win_length <= self.n_fft:
            raise ConfigError(f"frontend.win_length: expected 1..n_fft ({self.n_fft}), got {self.win_length}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ConfigError(
                f"frontend.f_min/f_max: expected 0 <= f_min < f_max <= {self.sample_rate / 2}, "
                f"got {self.f_min}, {self.f_max}"
            )
        if self.hop_length < 1 or self.n_mels < 1:
            raise ConfigError("frontend.hop_length and frontend.n_mels must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendConfig:
        return cls(**data)


def mel_filterbank(cfg: FrontendConfig) -> torch.Tensor:
    """``[n_freqs, n_mels]`` HTK mel filterbank, as torchaudio's MelSpectrogram builds it."""
    return torchaudio.functional.melscale_fbanks(
        cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max, cfg.n_mels, cfg.sample_rate, norm=None, mel_scale="htk"
    )


def dft_kernels(cfg: FrontendConfig, n_bins: int) -> torch.Tensor:
    """``[2 * n_bins, 1, n_fft]`` conv kernels: windowed cos rows, then windowed -sin rows."""
    window = torch.hann_window(cfg.win_length, periodic=True, dtype=torch.float64)
    left = (cfg.n_fft - cfg.win_length) // 2
    window = F.pad(window, (left, cfg.n_fft - cfg.win_length - left))
    n = torch.arange(cfg.n_fft, dtype=torch.float64)
    k = torch.arange(n_bins, dtype=torch.float64)
    angle = 2 * torch.pi * k[:, None] * n[None, :] / cfg.n_fft
    kernels = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window], dim=0)
    return kernels.to(torch.float32).unsqueeze(1)


class LogMel(nn.Module):
    """Raw PCM ``[batch, samples]`` → log-mel ``[batch, n_mels, frames]``."""

    kernels: torch.Tensor
    fbank: torch.Tensor

    def __init__(self, cfg: FrontendConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FrontendConfig()
        fb = mel_filterbank(self.cfg)
        used = torch.nonzero(fb.sum(dim=1) > 0).flatten()
        self.n_bins = int(used.max()) + 1 if used.numel() else 1
        self.register_buffer("kernels", dft_kernels(self.cfg, self.n_bins), persistent=False)
        self.register_buffer("fbank", fb[: self.n_bins].T.contiguous(), persistent=False)  # [n_mels, n_bins]

    @property
    def left_context(self) -> int:
        """Samples of past audio a 'causal' frontend needs before each new chunk."""
        return self.cfg.n_fft - self.cfg.hop_length

    def power(self, audio: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        """Power spectrogram ``[batch, n_bins, frames]``.

        ``past`` (causal padding only): the previous ``left_context`` samples of a stream,
        used instead of the zero padding.
        """
        if self.cfg.padding == "center":
            pad = self.cfg.n_fft // 2
            x = F.pad(audio.unsqueeze(1), (pad, pad), mode="reflect")
        elif past is None:
            x = F.pad(audio.unsqueeze(1), (self.left_context, 0))
        else:
            x = torch.cat([past, audio], dim=1).unsqueeze(1)
        spec = F.conv1d(x, self.kernels, stride=self.cfg.hop_length)
        real, imag = spec[:, : self.n_bins], spec[:, self.n_bins :]
        return real * real + imag * imag

    def forward(self, audio: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        mel = torch.matmul(self.fbank, self.power(audio, past))
        logmel = torch.log(mel + self.cfg.log_floor)
        if self.cfg.normalize == "utterance":
            logmel = logmel - logmel.mean(dim=2, keepdim=True)
        return logmel

"""The log-mel feature frontend that sits inside every exported model.

Computed as a strided ``Conv1d`` with fixed windowed-DFT kernels and a matmul with
torchaudio's HTK mel filterbank instead of ``torch.stft``: it matches
``torchaudio.transforms.MelSpectrogram`` (tested) and exports to plain ONNX Conv/MatMul
ops, which ONNX Runtime runs ~19x faster than its STFT op (DESIGN.md). Only the DFT
bins that the mel filterbank uses are computed, so a 4 kHz mel range halves the cost.

The kernels (2 x 129 x 512 floats, ~0.5 MB) and the filterbank are not stored in the
exported graph: while exporting they are built in the graph from a few scalars and the
``n_mels + 2`` mel points (Range/Mod/Cos/Sin/Min nodes), which ONNX Runtime folds into
constants when a session loads. Eager mode uses the same tensors, cached as buffers.
"""

from __future__ import annotations

import math
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


def mel_points(cfg: FrontendConfig) -> torch.Tensor:
    """``[n_mels + 2]`` float32 edge and centre frequencies (Hz) of the mel triangles, as torchaudio's."""
    m_min, m_max = (2595.0 * math.log10(1.0 + f / 700.0) for f in (cfg.f_min, cfg.f_max))
    mels = torch.linspace(m_min, m_max, cfg.n_mels + 2)
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def triangular_filterbank(points: torch.Tensor, n_bins: int, cfg: FrontendConfig) -> torch.Tensor:
    """``[n_mels, n_bins]`` triangles on ``points`` (:func:`mel_points`) over the first ``n_bins`` DFT bins.

    torchaudio's construction (``_create_triangular_filterbank``) from traceable ops: under
    ONNX export it becomes a few nodes that ONNX Runtime folds at load, not a stored matrix.
    """
    bin_hz = (cfg.sample_rate // 2) / (cfg.n_fft // 2)
    hz = torch.arange(n_bins, dtype=torch.int64, device=points.device).to(torch.float32) * bin_hz
    width = points[1:] - points[:-1]  # [n_mels + 1]
    slopes = points[None, :] - hz[:, None]  # [n_bins, n_mels + 2]
    down = -slopes[:, :-2] / width[:-1]
    up = slopes[:, 2:] / width[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0).transpose(0, 1)


def dft_kernels(cfg: FrontendConfig, n_bins: int, device: torch.device | None = None) -> torch.Tensor:
    """``[2 * n_bins, 1, n_fft]`` conv kernels: windowed cos rows, then windowed -sin rows.

    Built from traceable float32 ops (under ONNX export they become ~20 small nodes instead
    of a 2 x n_bins x n_fft constant). ``k * n`` is reduced modulo ``n_fft`` in integers
    first, so every angle lies in [0, 2 pi) and float32 keeps ~1e-7 accuracy.
    """
    n = torch.arange(cfg.n_fft, dtype=torch.int64, device=device)
    k = torch.arange(n_bins, dtype=torch.int64, device=device)
    angle = torch.remainder(k[:, None] * n[None, :], cfg.n_fft).to(torch.float32) * (2 * math.pi / cfg.n_fft)
    # periodic Hann window of win_length samples, centred in the n_fft frame
    i = n - (cfg.n_fft - cfg.win_length) // 2
    inside = (i >= 0) & (i < cfg.win_length)
    hann = 0.5 - 0.5 * torch.cos(i.to(torch.float32) * (2 * math.pi / cfg.win_length))
    window = torch.where(inside, hann, torch.zeros_like(hann))
    kernels = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window], dim=0)
    return kernels.unsqueeze(1)


def _exporting() -> bool:
    return bool(torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export())


class LogMel(nn.Module):
    """Raw PCM ``[batch, samples]`` → log-mel ``[batch, n_mels, frames]``.

    The DFT kernels and the mel filterbank are cached buffers in eager mode; while exporting
    (``torch.export`` / ONNX) they are rebuilt inside the graph from :func:`mel_points` (a
    ``n_mels + 2`` vector) and a few scalars, so the exported model does not store them.
    """

    kernels: torch.Tensor
    fbank: torch.Tensor
    points: torch.Tensor

    def __init__(self, cfg: FrontendConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FrontendConfig()
        used = torch.nonzero(mel_filterbank(self.cfg).sum(dim=1) > 0).flatten()
        self.n_bins = int(used.max()) + 1 if used.numel() else 1
        points = mel_points(self.cfg)
        self.register_buffer("points", points, persistent=False)
        self.register_buffer("kernels", dft_kernels(self.cfg, self.n_bins), persistent=False)
        self.register_buffer("fbank", triangular_filterbank(points, self.n_bins, self.cfg), persistent=False)

    def dft(self) -> torch.Tensor:
        """The DFT conv kernels: the cached buffer, or (while exporting) their in-graph construction."""
        return dft_kernels(self.cfg, self.n_bins, self.points.device) if _exporting() else self.kernels

    def filterbank(self) -> torch.Tensor:
        """``[n_mels, n_bins]`` mel matrix: the cached buffer, or (while exporting) built in the graph."""
        return triangular_filterbank(self.points, self.n_bins, self.cfg) if _exporting() else self.fbank

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
        spec = F.conv1d(x, self.dft(), stride=self.cfg.hop_length)
        real, imag = spec[:, : self.n_bins], spec[:, self.n_bins :]
        return real * real + imag * imag

    def forward(self, audio: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        mel = torch.matmul(self.filterbank(), self.power(audio, past))
        logmel = torch.log(mel + self.cfg.log_floor)
        if self.cfg.normalize == "utterance":
            logmel = logmel - logmel.mean(dim=2, keepdim=True)
        return logmel

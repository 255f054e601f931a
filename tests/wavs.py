"""Writing odd WAV files for tests (other rates, channels, 8-bit)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def write_pcm_wav(path: Path, frames: np.ndarray, rate: int, width: int) -> Path:
    """``frames`` [samples] or [samples, channels] as integer PCM of ``width`` bytes (1: unsigned 8-bit)."""
    if frames.ndim == 1:
        frames = frames[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 1:
            data = np.clip(np.round(frames * 127 + 128), 0, 255).astype(np.uint8)
        else:
            data = np.clip(np.round(frames * 32767), -32768, 32767).astype("<i2")
        w.writeframes(data.tobytes())
    return path

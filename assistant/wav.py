"""WAV reading and writing, and resampling, in numpy + stdlib only.

Every audio path in hubvoice goes through here: the hub reads any common WAV (rate,
channels and sample width are converted to 16 kHz mono float32), the distill pipeline
writes its corpus as 16 kHz mono 16-bit PCM. Broken input raises :class:`AudioError`
naming the file and what was wrong with it.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import struct
import tempfile
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

from assistant.errors import AudioError

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The rate every model and corpus in hubvoice uses."""

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_IEEE_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of ``[samples, channels]`` audio; 1-D input is returned as is."""
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise AudioError(f"expected audio shaped [samples] or [samples, channels], got {audio.shape}")
    return audio.mean(axis=1, dtype=np.float64).astype(np.float32)


def _kernel(dist: np.ndarray, cutoff: float, half: float, beta: float = 8.6) -> np.ndarray:
    arg = np.clip(dist / half, -1.0, 1.0)
    window = np.i0(beta * np.sqrt(1.0 - arg**2)) / np.i0(beta)
    return (cutoff * np.sinc(cutoff * dist) * window).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _phase_table(up: int, down: int, taps: int, half: float, cutoff: float) -> np.ndarray:
    """Kernel rows for each of the ``up`` fractional phases of a rational-ratio resampler."""
    frac = np.arange(up) / up
    offsets = np.arange(-taps + 1, taps + 1)
    return _kernel(offsets[None, :] - frac[:, None], cutoff, half)


def resample(audio: np.ndarray, sr_in: int, sr_out: int, *, zero_crossings: int = 16) -> np.ndarray:
    """Band-limited resampling of 1-D audio with a Kaiser-windowed sinc kernel.

    When downsampling, the kernel's cut-off is lowered to the new Nyquist rate so no
    aliasing folds back. Output length is ``round(len * sr_out / sr_in)``. Common rate
    pairs (any ratio whose reduced numerator is at most 1000) use a cached polyphase
    kernel table, so streaming microphone audio costs little.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise AudioError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    x = np.asarray(audio, dtype=np.float32)
    if sr_in == sr_out or x.size == 0:
        return x.copy()
    g = math.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    ratio = sr_out / sr_in
    n_out = int(round(x.size * ratio))
    cutoff = min(1.0, ratio)  # in units of the input Nyquist rate
    half = zero_crossings / cutoff
    taps = int(np.ceil(half))
    offsets = np.arange(-taps + 1, taps + 1)
    table = _phase_table(up, down, taps, half, cutoff) if up <= 1000 else None
    out = np.empty(n_out, dtype=np.float32)
    padded = np.concatenate([np.zeros(taps, np.float32), x, np.zeros(taps + 1, np.float32)])
    chunk = 4096
    for start in range(0, n_out, chunk):
        k = np.arange(start, min(n_out, start + chunk), dtype=np.int64)
        base = (k * down) // up  # integer part of the position in input samples
        idx = base[:, None] + offsets[None, :] + taps
        if table is not None:
            kernel = table[(k * down) % up]
        else:
            frac = (k * down % up) / up
            kernel = _kernel(offsets[None, :] - frac[:, None], cutoff, half)
        out[start : start + len(k)] = np.einsum("ij,ij->i", padded[idx], kernel)
    return out


def _decode_pcm(raw: bytes, width: int, fmt: int, channels: int, name: str) -> np.ndarray:
    if fmt == _WAVE_FORMAT_IEEE_FLOAT:
        if width == 4:
            data = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif width == 8:
            data = np.frombuffer(raw, dtype="<f8").astype(np.float32)
        else:
            raise AudioError(f"{name}: float WAV with {8 * width}-bit samples is not supported (32 or 64)")
    elif width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        data = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise AudioError(f"{name}: {8 * width}-bit PCM is not supported (8, 16, 24 or 32)")
    return data.reshape(-1, channels)


def _parse_riff(blob: bytes, name: str) -> tuple[int, int, int, int, bytes]:
    """Return (format tag, channels, sample rate, sample width, data bytes) of a RIFF/WAVE blob."""
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise AudioError(f"{name}: not a WAV file (no RIFF/WAVE header)")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    data: bytes | None = None
    while pos + 8 <= len(blob):
        chunk_id = blob[pos : pos + 4]
        (size,) = struct.unpack("<I", blob[pos + 4 : pos + 8])
        body = blob[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise AudioError(f"{name}: truncated 'fmt ' chunk")
            tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                (tag,) = struct.unpack("<H", body[24:26])
            # Samples sit in containers of block_align / channels bytes (12-bit audio in 16, 20 in 24).
            width = block_align // channels if channels and block_align else (bits + 7) // 8
            fmt = (tag, channels, rate, width)
        elif chunk_id == b"data":
            data = body
            if len(body) < size:
                _LOGGER.warning("%s: data chunk truncated (%d of %d bytes); reading what is there", name, len(body), size)
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise AudioError(f"{name}: WAV has no 'fmt ' chunk")
    if data is None:
        raise AudioError(f"{name}: WAV has no 'data' chunk")
    tag, channels, rate, width = fmt
    if tag not in (_WAVE_FORMAT_PCM, _WAVE_FORMAT_IEEE_FLOAT):
        raise AudioError(f"{name}: WAV encoding {tag:#x} is not supported (PCM or IEEE float; convert with sox)")
    if channels < 1 or rate < 1 or width < 1:
        raise AudioError(f"{name}: invalid WAV header (channels={channels}, rate={rate}, width={width})")
    usable = len(data) - len(data) % (width * channels)
    return tag, channels, rate, width, data[:usable]


def decode_wav(blob: bytes, *, name: str = "<bytes>", sample_rate: int = SAMPLE_RATE,
               allow_nonfinite: bool = False) -> np.ndarray:
    """Decode WAV bytes to float32 mono at ``sample_rate``; see :func:`read_wav`."""
    tag, channels, rate, width, data = _parse_riff(blob, name)
    if not data:
        raise AudioError(f"{name}: WAV holds no audio samples")
    frames = _decode_pcm(data, width, tag, channels, name)
    if not np.all(np.isfinite(frames)):
        if not allow_nonfinite:
            raise AudioError(f"{name}: WAV holds NaN or infinite samples")
        frames = np.nan_to_num(frames, nan=0.0, posinf=1.0, neginf=-1.0)
    mono = to_mono(frames).reshape(-1)
    if tag == _WAVE_FORMAT_IEEE_FLOAT:
        peak = float(np.max(np.abs(mono))) if mono.size else 0.0
        if peak > 1.0:
            _LOGGER.warning("%s: float samples exceed [-1, 1] (peak %.2f); clipping", name, peak)
            mono = np.clip(mono, -1.0, 1.0)
    return resample(mono, rate, sample_rate).astype(np.float32, copy=False)


def read_wav(path: str | os.PathLike[str] | BinaryIO, *, sample_rate: int = SAMPLE_RATE,
             allow_nonfinite: bool = False) -> np.ndarray:
    """Read any common WAV as float32 mono in [-1, 1] at ``sample_rate``.

    Accepts 8/16/24/32-bit PCM and 32/64-bit float, any channel count and rate
    (channels are averaged, the rate is resampled). Raises :class:`AudioError` naming
    the file for a missing, empty, non-WAV, truncated or unsupported file, and for
    NaN/Inf samples unless ``allow_nonfinite`` (then they become 0 / ±1).
    """
    if hasattr(path, "read"):
        name = getattr(path, "name", "<stream>")
        blob = path.read()
    else:
        name = os.fspath(path)
        try:
            blob = Path(name).read_bytes()
        except FileNotFoundError:
            raise AudioError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise AudioError(f"{name}: is a directory, expected a WAV file") from None
        except OSError as exc:
            raise AudioError(f"{name}: cannot read ({exc.strerror})") from None
    if not blob:
        raise AudioError(f"{name}: file is empty")
    return decode_wav(bytes(blob), name=name, sample_rate=sample_rate, allow_nonfinite=allow_nonfinite)


def encode_wav(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM mono WAV bytes of float audio in [-1, 1] (values outside are clipped)."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise AudioError("cannot write audio holding NaN or infinite samples")
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM mono atomically (temp file + rename): a crash never leaves half a file."""
    blob = encode_wav(audio, sample_rate)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".wav", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

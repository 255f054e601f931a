"""The acoustic channel from talker to hub ADC: room reverberation, microphone band, gain, clipping, codec.

Room impulse responses are a hybrid, the usual compromise of fast simulators:

- **early reflections** from an image-source model of a shoebox room (Allen & Berkley
  1979) up to ``max_order`` reflections, with one frequency-independent reflection
  coefficient derived from the requested RT60 by Sabine's formula;
- a **late tail** of exponentially decaying Gaussian noise in two bands (the high band
  decays ``hf_ratio`` times faster, as walls and air absorb highs more), starting with
  the first reflection and carrying the diffuse energy Sabine's critical distance
  predicts for the talker's distance.

The direct path sits at sample 0 with amplitude 1, so reverberated speech stays time
aligned with the dry clip. numpy + scipy only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import signal

from assistant.errors import AudioError
from distill.noises import as_audio

_LOGGER = logging.getLogger(__name__)

SPEED_OF_SOUND = 343.0
"""Metres per second."""

DEFAULT_ROOM_SIZE = ((3.0, 8.0), (2.5, 6.0), (2.4, 3.2))
"""Ranges of a room's length, width and height in metres (living rooms, kitchens, bedrooms)."""


@dataclass(frozen=True)
class Room:
    """One simulated shoebox room (all lengths in metres)."""

    size: tuple[float, float, float]
    """Length, width and height."""
    source: tuple[float, float, float]
    """The talker's mouth."""
    mic: tuple[float, float, float]
    """The hub's microphone."""
    rt60: float
    """Time in seconds for the late reverberation (below ~1.5 kHz) to decay by 60 dB."""
    hf_ratio: float
    """RT60 of the high band (above ~1.5 kHz) as a fraction of ``rt60``."""

    @property
    def distance(self) -> float:
        """Talker-to-microphone distance in metres."""
        return math.dist(self.source, self.mic)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready description (rounded to millimetres and milliseconds)."""
        out = {k: [round(v, 3) for v in val] if isinstance(val, tuple) else round(val, 3)
               for k, val in asdict(self).items()}
        out["distance"] = round(self.distance, 3)
        return out


def _range(value: float | tuple[float, float], name: str) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else value
    if not 0 < lo <= hi:
        raise AudioError(f"{name}: expected a positive value or (low, high) with 0 < low <= high, "
                         f"got {value!r}")
    return float(lo), float(hi)


def random_room(
    rng: np.random.Generator,
    rt60: float | tuple[float, float] = (0.2, 0.8),
    *,
    room_size: tuple[tuple[float, float], ...] = DEFAULT_ROOM_SIZE,
    distance: float | tuple[float, float] = (0.5, 3.0),
    hf_ratio: float | tuple[float, float] = (0.5, 0.9),
) -> Room:
    """Draw a room, a talker and a microphone (at least 0.3 m from every wall) uniformly from the ranges."""
    rt_lo, rt_hi = _range(rt60, "rt60")
    d_lo, d_hi = _range(distance, "distance")
    hf_lo, hf_hi = _range(hf_ratio, "hf_ratio")
    if len(room_size) != 3:
        raise AudioError(f"room_size: expected three (low, high) ranges in metres, got {room_size!r}")
    size = np.array([rng.uniform(*_range(r, "room_size")) for r in room_size])
    margin = np.minimum(0.3, size / 4)
    mic = rng.uniform(margin, size - margin)
    mic[2] = min(max(rng.uniform(0.7, 1.5), margin[2]), size[2] - margin[2])  # on a shelf or table
    want = rng.uniform(d_lo, d_hi)
    source = mic
    for _ in range(50):  # a random direction at the wanted distance, inside the room
        direction = rng.standard_normal(3)
        direction[2] *= 0.3
        candidate = mic + want * direction / np.linalg.norm(direction)
        if np.all(candidate >= margin) and np.all(candidate <= size - margin):
            source = candidate
            break
    else:  # the room is too small for that distance: take the farthest reachable point towards the centre
        source = np.clip(mic + (size / 2 - mic) * want / max(1e-6, float(np.linalg.norm(size / 2 - mic))),
                         margin, size - margin)
    return Room(
        size=tuple(float(v) for v in size),  # type: ignore[arg-type]
        source=tuple(float(v) for v in source),  # type: ignore[arg-type]
        mic=tuple(float(v) for v in mic),  # type: ignore[arg-type]
        rt60=float(rng.uniform(rt_lo, rt_hi)),
        hf_ratio=float(rng.uniform(hf_lo, hf_hi)),
    )


def room_rir(
    room: Room, rng: np.random.Generator, sample_rate: int = 16000, *, max_order: int = 3
) -> np.ndarray:
    """The impulse response of ``room`` (direct path at sample 0 with amplitude 1), ``1.1 * rt60`` long."""
    size, src, mic = (np.asarray(v, dtype=np.float64) for v in (room.size, room.source, room.mic))
    volume = float(np.prod(size))
    surface = 2 * float(size[0] * size[1] + size[0] * size[2] + size[1] * size[2])
    absorption = min(0.99, 0.161 * volume / (surface * room.rt60))  # Sabine
    beta = math.sqrt(1 - absorption)
    n = max(2, int(math.ceil(1.1 * room.rt60 * sample_rate)))
    rir = np.zeros(n)

    # early reflections: images (1 - 2p) * s + 2 n L per axis, |n - p| + |n| reflections each
    idx = np.arange(-max_order, max_order + 1)
    grids = []
    for axis in range(3):
        nn, pp = np.meshgrid(idx, (0, 1), indexing="ij")
        grids.append(((1 - 2 * pp) * src[axis] + 2 * nn * size[axis]).ravel())
        grids.append((np.abs(nn - pp) + np.abs(nn)).ravel())
    xs, ox, ys, oy, zs, oz = grids
    px, py, pz = np.meshgrid(np.arange(xs.size), np.arange(ys.size), np.arange(zs.size), indexing="ij")
    order = (ox[px] + oy[py] + oz[pz]).ravel()
    keep = order <= max_order
    pos = np.stack([xs[px].ravel(), ys[py].ravel(), zs[pz].ravel()], axis=1)[keep]
    dist = np.maximum(np.linalg.norm(pos - mic, axis=1), 0.05)
    direct = float(dist.min())
    amp = beta ** order[keep] * direct / dist
    delay = (dist - direct) / SPEED_OF_SOUND * sample_rate
    lo = np.floor(delay).astype(int)
    frac = delay - lo
    inside = lo + 1 < n
    np.add.at(rir, lo[inside], amp[inside] * (1 - frac[inside]))
    np.add.at(rir, lo[inside] + 1, amp[inside] * frac[inside])
    rir[0] = 1.0  # the direct path, exactly

    # late tail: two-band exponentially decaying noise with the diffuse energy Sabine predicts
    t = np.arange(n) / sample_rate
    reflections = delay[delay > 0.5]
    onset = float(reflections.min()) / sample_rate if reflections.size else 0.002
    ramp = np.clip((t - onset) / 0.01, 0.0, 1.0)
    crossover = min(1500.0, 0.4 * sample_rate)
    low_sos = signal.butter(2, crossover, "lowpass", fs=sample_rate, output="sos")
    high_sos = signal.butter(2, crossover, "highpass", fs=sample_rate, output="sos")
    low = signal.sosfilt(low_sos, rng.standard_normal(n))
    high = signal.sosfilt(high_sos, rng.standard_normal(n))
    tail = low * np.exp(-6.908 * t / room.rt60) + high * np.exp(-6.908 * t / (room.rt60 * room.hf_ratio))
    tail *= ramp
    critical = 0.057 * math.sqrt(volume / room.rt60)
    target = (direct / critical) ** 2  # diffuse energy relative to the direct path's
    early = float(np.sum(rir[1:] ** 2))
    tail_energy = float(np.sum(tail**2))
    if tail_energy > 0:
        rir += tail * math.sqrt(max(target - early, 0.25 * target) / tail_energy)
    return rir.astype(np.float32)


def synth_rir(
    rng: np.random.Generator,
    sample_rate: int = 16000,
    rt60: float | tuple[float, float] = (0.2, 0.8),
    *,
    room_size: tuple[tuple[float, float], ...] = DEFAULT_ROOM_SIZE,
    distance: float | tuple[float, float] = (0.5, 3.0),
    max_order: int = 3,
) -> np.ndarray:
    """A random room impulse response: :func:`random_room`, then :func:`room_rir` (see the module doc)."""
    room = random_room(rng, rt60, room_size=room_size, distance=distance)
    return room_rir(room, rng, sample_rate, max_order=max_order)


def reverberate(x: np.ndarray, rir: np.ndarray, *, keep_level: bool = True) -> np.ndarray:
    """Convolve ``x`` with ``rir`` (FFT), keeping the first ``len(x)`` samples so timing is unchanged.

    With ``keep_level`` the result is scaled back to the RMS of ``x``. The tail that
    rings past the end of ``x`` is cut; pad ``x`` first to keep it.
    """
    audio = as_audio(x)
    h = as_audio(rir, "rir")
    if h.size == 0:
        raise AudioError("rir: empty impulse response")
    if audio.size == 0:
        return audio.copy()
    wet = signal.oaconvolve(audio.astype(np.float64), h.astype(np.float64))[: audio.size]
    if keep_level:
        p_wet = float(np.mean(wet**2))
        if p_wet > 0:
            wet *= math.sqrt(float(np.mean(audio.astype(np.float64) ** 2)) / p_wet)
    return wet.astype(np.float32)


def apply_gain(x: np.ndarray, db: float) -> np.ndarray:
    """``x`` scaled by ``db`` decibels (no clipping: the peak may exceed 1)."""
    if not math.isfinite(db):
        raise AudioError(f"gain: expected a finite number of dB, got {db!r}")
    return (as_audio(x) * np.float32(10 ** (db / 20))).astype(np.float32)


def bandlimit(
    x: np.ndarray, low_hz: float | None, high_hz: float | None, sample_rate: int = 16000, *, order: int = 8
) -> np.ndarray:
    """Zero-phase Butterworth band-pass: a microphone or a phone line (300-3400 Hz), 8 kHz audio (0-4000 Hz).

    ``low_hz`` of ``None`` or 0 means no high-pass; ``high_hz`` of ``None`` or at least
    Nyquist means no low-pass. Filtered forwards and backwards, so nothing shifts in time.
    """
    audio = as_audio(x)
    nyq = sample_rate / 2
    lo = None if not low_hz else float(low_hz)
    hi = None if high_hz is None or high_hz >= nyq else float(high_hz)
    if (lo is not None and not 0 < lo < nyq) or (hi is not None and hi <= 0) or (lo and hi and lo >= hi):
        raise AudioError(f"bandlimit: expected 0 <= low_hz < high_hz <= {nyq:g} Hz, got low_hz={low_hz!r}, "
                         f"high_hz={high_hz!r}")
    if lo is None and hi is None or audio.size == 0:
        return audio.copy()
    if lo is not None and hi is not None:
        sos = signal.butter(order // 2, [lo, hi], btype="bandpass", fs=sample_rate, output="sos")
    elif hi is not None:
        sos = signal.butter(order, hi, btype="lowpass", fs=sample_rate, output="sos")
    else:
        sos = signal.butter(order, lo, btype="highpass", fs=sample_rate, output="sos")
    padlen = min(3 * (2 * len(sos) + 1), audio.size - 1)
    return signal.sosfiltfilt(sos, audio.astype(np.float64), padlen=padlen).astype(np.float32)


def clip(x: np.ndarray, level: float) -> np.ndarray:
    """Hard-clip ``x`` to ``[-level, level]`` (an overdriven preamp or ADC)."""
    if not level > 0:
        raise AudioError(f"clip level: expected a positive amplitude, got {level!r}")
    return np.clip(as_audio(x), -level, level).astype(np.float32)


def mu_law(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """A G.711-style codec round trip: mu-law compand, quantize to log2(mu+1) bits, expand (clips to ±1)."""
    if not 1 <= mu <= 65535:
        raise AudioError(f"mu: expected an integer in [1, 65535], got {mu!r}")
    audio = np.clip(as_audio(x).astype(np.float64), -1.0, 1.0)
    compressed = np.sign(audio) * np.log1p(mu * np.abs(audio)) / math.log1p(mu)
    steps = (mu + 1) / 2
    quantized = np.round(compressed * steps) / steps
    expanded = np.sign(quantized) * np.expm1(np.abs(quantized) * math.log1p(mu)) / mu
    return expanded.clip(-1, 1).astype(np.float32)

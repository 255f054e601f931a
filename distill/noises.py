"""Noise for augmentation: colored noise, procedurally generated household sounds, babble, SNR mixing.

Every generator returns float32 mono audio with unit RMS (so ``add_noise`` alone sets
the level) and is deterministic given its ``np.random.Generator``. numpy + scipy
only, so it runs in DataLoader workers and on a machine without torch.

**SNR definition** (used by :func:`add_noise` and :func:`measure_snr` alike): the mean
power of the whole clean signal over the mean power of the noise over the same
samples, ``10 * log10(mean(clean**2) / mean(noise**2))``. Leading and trailing silence
in the clean clip count, so the SNR inside the speech itself is somewhat higher than
the nominal value. A silent (all-zero) or empty clean signal has no SNR: both functions
raise :class:`AudioError` instead of returning NaN.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import signal

from assistant.errors import AudioError

_LOGGER = logging.getLogger(__name__)

COLORS = ("white", "pink", "brown", "blue")
"""Noise colors: power spectral density slope 0, -1, -2 and +1 (per decade of frequency)."""

_COLOR_EXPONENT = {"white": 0.0, "pink": -0.5, "brown": -1.0, "blue": 0.5}  # amplitude ∝ f**exponent


def as_audio(x: np.ndarray, name: str = "audio") -> np.ndarray:
    """``x`` as a 1-D float32 array; :class:`AudioError` for other shapes or non-finite samples."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise AudioError(f"{name}: expected 1-D mono samples, got an array of shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise AudioError(f"{name}: expected float samples, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise AudioError(f"{name}: contains NaN or infinite samples (first at sample {int(np.argmax(bad))})")
    return arr


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = math.sqrt(_power(x))
    return (x / rms if rms > 0 else x).astype(np.float32)


def _check_length(n_samples: int) -> int:
    if int(n_samples) != n_samples or n_samples < 0:
        raise AudioError(f"n_samples: expected a non-negative integer, got {n_samples!r}")
    return int(n_samples)


def colored_noise(n_samples: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise, spectrum flat (white), falling as 1/f (pink) or 1/f**2 (brown), rising as f (blue).

    Shaped in the frequency domain (no DC), unit RMS, float32.
    """
    n = _check_length(n_samples)
    if color not in _COLOR_EXPONENT:
        raise AudioError(f"color: expected one of {', '.join(COLORS)}, got {color!r}")
    if n == 0:
        return np.zeros(0, np.float32)
    white = rng.standard_normal(n)
    if color == "white" or n < 3:
        return _unit_rms(white)
    spectrum = np.fft.rfft(white)
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    spectrum *= freqs ** _COLOR_EXPONENT[color]
    spectrum[0] = 0.0
    return _unit_rms(np.fft.irfft(spectrum, n))


# --- household sounds --------------------------------------------------------------------------------------


def _band(x: np.ndarray, sr: int, low: float | None, high: float | None, order: int = 4) -> np.ndarray:
    """Causal Butterworth band/low/high-pass (cut-offs outside (0, nyquist) are dropped)."""
    nyq = sr / 2
    lo = low if low is not None and 0 < low < nyq * 0.98 else None
    hi = high if high is not None and 0 < high < nyq * 0.98 else None
    if lo is not None and hi is not None and lo < hi:
        sos = signal.butter(order, [lo, hi], btype="bandpass", fs=sr, output="sos")
    elif hi is not None:
        sos = signal.butter(order, hi, btype="lowpass", fs=sr, output="sos")
    elif lo is not None:
        sos = signal.butter(order, lo, btype="highpass", fs=sr, output="sos")
    else:
        return x
    return signal.sosfilt(sos, x)


def _slow_envelope(n: int, sr: int, rng: np.random.Generator, rate_hz: float, depth: float) -> np.ndarray:
    """A smooth random gain around 1 (``1 ± depth``) with about ``rate_hz`` changes per second."""
    points = max(2, int(math.ceil(n / sr * rate_hz)) + 2)
    knots = 1.0 + depth * rng.uniform(-1.0, 1.0, points)
    return np.interp(np.linspace(0, points - 1, n), np.arange(points), knots)


def _harmonics(
    t: np.ndarray, sr: int, rng: np.random.Generator, f0: float, count: int, tilt: float, wobble: float = 0.0
) -> np.ndarray:
    """Sum of ``count`` harmonics of ``f0`` with amplitude 1/k**tilt and a slow random frequency wobble."""
    drift = 1.0 + wobble * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0 * drift) / sr
    out = np.zeros_like(t)
    for k in range(1, count + 1):
        if k * f0 >= 0.45 * sr:
            break
        out += rng.uniform(0.5, 1.0) / k**tilt * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def _decays(n: int, sr: int, rng: np.random.Generator, times: np.ndarray, freqs: tuple[float, float],
            tau: tuple[float, float], modes: int) -> np.ndarray:
    """Impacts at sample positions ``times``: each a few exponentially decaying sinusoids plus a click."""
    out = np.zeros(n)
    for start in times.astype(int):
        length = int(sr * tau[1] * 5)
        t = np.arange(length) / sr
        hit = np.zeros(length)
        for _ in range(modes):
            f = min(rng.uniform(*freqs), 0.45 * sr)
            hit += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t) * np.exp(-t / rng.uniform(*tau))
        click = min(length, int(0.002 * sr) + 1)
        hit[:click] += rng.standard_normal(click) * 0.5
        hit *= rng.lognormal(0.0, 0.5)
        end = min(n, start + length)
        if end > start >= 0:
            out[start:end] += hit[: end - start]
    return out


def _poisson_times(
    n: int, sr: int, rng: np.random.Generator, rate_hz: float, at_least: int = 0
) -> np.ndarray:
    count = max(at_least, int(rng.poisson(rate_hz * n / sr)))
    return np.sort(rng.integers(0, max(1, n), count))


def _fan(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    hum = _harmonics(t, sr, rng, rng.uniform(20, 90), 10, 1.2, wobble=0.005)
    air = _band(colored_noise(n, "pink", rng), sr, 40, rng.uniform(800, 3000))
    return _unit_rms(hum) * rng.uniform(0.2, 0.6) + _unit_rms(air)


def _hvac(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    rumble = _band(colored_noise(n, "brown", rng), sr, 20, 400)
    air = _band(colored_noise(n, "pink", rng), sr, 60, rng.uniform(700, 1500))
    mains = _harmonics(t, sr, rng, 2 * float(rng.choice([50.0, 60.0])), 3, 1.0)
    mix = _unit_rms(rumble) + _unit_rms(air) + rng.uniform(0.05, 0.3) * _unit_rms(mains)
    return mix * _slow_envelope(n, sr, rng, 0.5, 0.2)


def _dishwasher(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    period = rng.uniform(0.6, 2.0)
    arm = 0.35 + 0.65 * np.abs(np.sin(np.pi * t / period + rng.uniform(0, np.pi))) ** 2
    spray = _band(rng.standard_normal(n), sr, 400, rng.uniform(4000, 7000)) * arm
    splash = _decays(n, sr, rng, _poisson_times(n, sr, rng, 3.0), (300, 2000), (0.01, 0.05), 2)
    motor = _harmonics(t, sr, rng, float(rng.choice([100.0, 120.0])), 4, 1.0)
    return _unit_rms(spray) + 0.3 * _unit_rms(splash + 1e-9) + rng.uniform(0.1, 0.4) * _unit_rms(motor)


def _washing_machine(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    if rng.random() < 0.5:  # washing: slow drum, thumps and slosh
        period = rng.uniform(0.8, 2.0)
        thumps = np.arange(rng.uniform(0, period), n / sr, period) * sr
        drum = _band(_decays(n, sr, rng, thumps, (50, 200), (0.04, 0.12), 3), sr, 30, 400)
        slosh = _band(rng.standard_normal(n), sr, 200, 1200)
        slosh *= 0.5 + 0.5 * np.sin(2 * np.pi * t / period) ** 2
        whine = _harmonics(t, sr, rng, rng.uniform(150, 400), 5, 1.0, wobble=0.01)
        return _unit_rms(drum + 1e-9) + _unit_rms(slosh) + 0.3 * _unit_rms(whine)
    whine = _harmonics(t, sr, rng, rng.uniform(500, 1200), 4, 1.0, wobble=0.003)  # spinning
    rumble = _band(colored_noise(n, "brown", rng), sr, 30, 600)
    return _unit_rms(rumble) + rng.uniform(0.3, 0.8) * _unit_rms(whine)


def _kettle(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    progress = np.clip(rng.uniform(0.0, 0.8) + np.arange(n) / sr / rng.uniform(20, 60), 0.0, 1.0)
    low = _band(rng.standard_normal(n), sr, 300, 1500)
    high = _band(rng.standard_normal(n), sr, 2000, 7000)
    hiss = (_unit_rms(low) * (1 - progress) + _unit_rms(high) * progress) * (0.3 + 0.7 * progress)
    bubbles = _decays(n, sr, rng, _poisson_times(n, sr, rng, 5 + 60 * float(progress.mean())),
                      (300, 1500), (0.003, 0.02), 1)
    return hiss + 0.3 * _unit_rms(bubbles + 1e-9) * (0.2 + progress)


def _speech_like(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic talker: voiced syllables (pulse train through random formants) with pauses."""
    out = np.zeros(n)
    pos = int(rng.uniform(0, 0.2) * sr)
    f0 = rng.uniform(90, 240)
    while pos < n:
        length = int(rng.uniform(0.08, 0.35) * sr)
        seg_f0 = f0 * rng.uniform(0.85, 1.15)
        phase = np.cumsum(np.full(length, seg_f0 / sr)) + rng.random()
        pulses = np.diff(np.floor(phase), prepend=np.floor(phase[0])) + 0.05 * rng.standard_normal(length)
        voiced = np.zeros(length)
        for f_lo, f_hi, bw in ((300, 900, 120), (900, 2500, 180), (2300, 3400, 250)):
            formant = rng.uniform(f_lo, f_hi)
            voiced += _band(pulses, sr, formant - bw, formant + bw, order=2)
        env = np.sin(np.linspace(0, np.pi, length)) ** 0.7
        end = min(n, pos + length)
        out[pos:end] += (_unit_rms(voiced) * env)[: end - pos]
        pos = end + int(rng.uniform(0.02, 0.3) * sr)
    return out


def _tv(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    voices = sum(_speech_like(n, sr, rng) * rng.uniform(0.5, 1.0) for _ in range(int(rng.integers(1, 3))))
    mix = _unit_rms(np.asarray(voices) + 1e-9 * rng.standard_normal(n))
    if rng.random() < 0.4:
        mix = mix + rng.uniform(0.2, 0.6) * _music(n, sr, rng)
    return _band(mix + 0.05 * _unit_rms(rng.standard_normal(n)), sr, 100, 7000)


def _clatter(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    times = _poisson_times(n, sr, rng, rng.uniform(1.0, 5.0), at_least=1)
    hits = _decays(n, sr, rng, times, (800, 7000), (0.01, 0.15), int(rng.integers(2, 6)))
    room = 0.02 * _unit_rms(colored_noise(n, "pink", rng))
    return _unit_rms(hits) + room


def _traffic(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    rumble = _unit_rms(_band(colored_noise(n, "brown", rng), sr, 20, 400))
    cars = np.zeros(n)
    for _ in range(1 + int(rng.poisson(rng.uniform(0.2, 0.6) * (n / sr + 4)))):
        centre, width = rng.uniform(-2, n / sr + 2), rng.uniform(1.0, 4.0)
        cars += rng.uniform(0.5, 2.0) * np.exp(-0.5 * ((t - centre) / (width / 2.355)) ** 2)
    tyres = _unit_rms(_band(rng.standard_normal(n), sr, 50, rng.uniform(1000, 2500))) * cars
    return _band(0.5 * rumble + tyres, sr, None, rng.uniform(2000, 4000))  # heard through a window


def _rain(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    hiss = _band(colored_noise(n, "pink", rng), sr, 500, 7000)
    drops = np.zeros(n)
    for _ in range(3):
        train = np.zeros(n)
        idx = _poisson_times(n, sr, rng, rng.uniform(30, 500), at_least=1)
        np.add.at(train, idx, rng.lognormal(0.0, 0.7, idx.size))
        tk = np.arange(int(0.01 * sr)) / sr
        kernel = np.sin(2 * np.pi * rng.uniform(2000, 6000) * tk) * np.exp(-tk / rng.uniform(0.002, 0.008))
        drops += signal.fftconvolve(train, kernel)[:n]
    return rng.uniform(0.3, 1.0) * _unit_rms(hiss) + _unit_rms(drops + 1e-9)


def _music(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    beat = 60.0 / rng.uniform(70, 140)
    root = int(rng.integers(48, 61))
    degrees = {0: (0, 4, 7), 2: (2, 5, 9), 5: (5, 9, 12), 7: (7, 11, 14), 9: (9, 12, 16)}  # I ii IV V vi
    out = np.zeros(n)
    start = -rng.uniform(0, 4 * beat)
    while start * sr < n:
        length = beat * float(rng.choice([2, 4]))
        s0 = int(start * sr)
        a, b = max(0, s0), max(0, min(n, s0 + int(length * sr)))
        tt = (np.arange(a, b) - s0) / sr
        env = np.minimum(1.0, tt / 0.02) * np.exp(-tt / (length * rng.uniform(0.4, 1.0)))
        chord = degrees[int(rng.choice(list(degrees)))]
        for semis in (*chord, chord[0] - 12):
            f = 440.0 * 2 ** ((root + semis - 69) / 12)
            for k in range(1, 5):
                if k * f < 0.45 * sr:
                    out[a:b] += env * np.sin(2 * np.pi * k * f * tt) / k**1.5
        if rng.random() < 0.5:  # kick drum on the first beat
            out[a:b] += 2.0 * np.sin(2 * np.pi * 55 * tt * (1 + np.exp(-tt / 0.03))) * np.exp(-tt / 0.12)
        start += length
    return _unit_rms(out + 1e-9 * rng.standard_normal(n))


def _vacuum(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    whine = _harmonics(t, sr, rng, rng.uniform(150, 400), 12, 0.8, wobble=0.03)
    air = _band(rng.standard_normal(n), sr, 100, 6000)
    return rng.uniform(0.3, 0.8) * _unit_rms(whine) + _unit_rms(air)


_HOUSEHOLD: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "fan": _fan,
    "hvac": _hvac,
    "dishwasher": _dishwasher,
    "washing_machine": _washing_machine,
    "kettle": _kettle,
    "tv": _tv,
    "clatter": _clatter,
    "traffic": _traffic,
    "rain": _rain,
    "music": _music,
    "vacuum": _vacuum,
}
HOUSEHOLD_KINDS: tuple[str, ...] = tuple(_HOUSEHOLD)
"""The procedurally generated household noises :func:`household_noise` knows."""


def household_noise(
    n_samples: int, kind: str, rng: np.random.Generator, sample_rate: int = 16000
) -> np.ndarray:
    """A procedurally generated household sound of ``n_samples`` samples, unit RMS, float32.

    ``kind`` is one of :data:`HOUSEHOLD_KINDS`: ``fan`` (blade-pass hum with harmonics
    over filtered air noise), ``hvac`` (rumble, air and mains hum), ``dishwasher``
    (spray noise modulated by the rotating arm, splashes, motor), ``washing_machine``
    (drum thumps and slosh, or a spin whine), ``kettle`` (hiss rising in level and pitch,
    bubbling), ``tv`` (one or two synthetic talkers, sometimes music), ``clatter``
    (dish impacts: decaying resonances), ``traffic`` (rumble and passing cars through a
    window), ``rain`` (hiss and drops), ``music`` (chords with envelopes, a kick),
    ``vacuum`` (motor whine and air).
    """
    n = _check_length(n_samples)
    if kind not in _HOUSEHOLD:
        raise AudioError(f"household noise kind: expected one of {', '.join(HOUSEHOLD_KINDS)}, got {kind!r}")
    if n == 0:
        return np.zeros(0, np.float32)
    return _unit_rms(_HOUSEHOLD[kind](n, sample_rate, rng))


# --- babble ------------------------------------------------------------------------------------------------


def audible_indices(utterances: Sequence[np.ndarray]) -> list[int]:
    """Indices of the utterances that can voice babble: not empty, not all zeros (in order)."""
    return [i for i, u in enumerate(utterances) if len(u) > 0 and np.any(u)]


def babble_from(
    utterances: Sequence[np.ndarray], n_samples: int, rng: np.random.Generator,
    talkers: tuple[int, int] = (3, 6), exclude: Sequence[int] = (), audible: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """:func:`babble`, also returning the pool indices used (never one in ``exclude``).

    ``audible``: :func:`audible_indices` of ``utterances``, computed once by a caller that draws
    babble from the same pool many times. Without it every call scans all the pool's samples,
    which made augmenting a pool from itself quadratic (hours for the 16,000 clips of a
    20,000-utterance corpus). The result is the same either way.
    """
    n = _check_length(n_samples)
    lo, hi = talkers
    if not 1 <= lo <= hi:
        raise AudioError(f"talkers: expected (low, high) with 1 <= low <= high, got {talkers!r}")
    banned = set(exclude)
    candidates = audible_indices(utterances) if audible is None else audible
    usable = [i for i in candidates if i not in banned]
    if not usable:
        raise AudioError(f"babble: no usable utterance in a pool of {len(utterances)} "
                         f"({len(banned)} excluded; empty or silent ones are skipped)")
    count = int(rng.integers(lo, hi + 1))
    chosen = [int(i) for i in rng.choice(usable, size=count, replace=count > len(usable))]
    out = np.zeros(n)
    for i in chosen:
        voice = _unit_rms(as_audio(utterances[i], f"babble utterance {i}")).astype(np.float64)
        idx = (int(rng.integers(0, voice.size)) + np.arange(n)) % voice.size  # random offset, looped
        out += voice[idx] * 10 ** (rng.uniform(-3, 3) / 20)
    if n and not np.any(out):
        out = rng.standard_normal(n) * 1e-6  # all talkers silent over this stretch: keep unit RMS defined
    return _unit_rms(out), chosen


def babble(
    utterances: Sequence[np.ndarray],
    n_samples: int,
    rng: np.random.Generator,
    talkers: tuple[int, int] = (3, 6),
) -> np.ndarray:
    """Several random utterances from ``utterances`` summed (random offsets, looped to length), unit RMS.

    The number of talkers is drawn uniformly from ``talkers`` (inclusive); each talker
    is brought to unit RMS and given a random ±3 dB gain. Empty or silent utterances are
    skipped; a pool with none left raises :class:`AudioError`.
    """
    return babble_from(utterances, n_samples, rng, talkers)[0]


# --- mixing ------------------------------------------------------------------------------------------------


def fit_length(noise: np.ndarray, n_samples: int) -> np.ndarray:
    """Loop (tile) or crop ``noise`` to exactly ``n_samples`` samples."""
    if noise.size == 0:
        raise AudioError("noise: empty, cannot be looped to the length of the clean signal")
    reps = -(-n_samples // noise.size)
    return np.tile(noise, reps)[:n_samples] if reps > 1 else noise[:n_samples]


def add_noise(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` plus ``noise`` scaled so that :func:`measure_snr` gives exactly ``snr_db``.

    The noise is looped or cropped to the clean length first. See the module docstring
    for the SNR definition. Raises :class:`AudioError` if either signal is empty, silent
    or not finite.
    """
    c = as_audio(clean, "clean")
    nz = as_audio(noise, "noise")
    if not math.isfinite(snr_db):
        raise AudioError(f"snr_db: expected a finite number of dB, got {snr_db!r}")
    p_clean = _power(c)
    if p_clean == 0.0:
        raise AudioError("clean signal is empty or silent: SNR is undefined "
                         "(expected speech with non-zero power)")
    fitted = fit_length(nz, c.size).astype(np.float64)
    p_noise = _power(fitted)
    if p_noise == 0.0:
        raise AudioError("noise is silent: cannot reach a finite SNR")
    scale = math.sqrt(p_clean / (p_noise * 10 ** (snr_db / 10)))
    return (c + fitted * scale).astype(np.float32)


def measure_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR in dB of ``noisy`` against its ``clean`` reference (noise = noisy - clean); ``inf`` if equal."""
    c = as_audio(clean, "clean").astype(np.float64)
    y = as_audio(noisy, "noisy").astype(np.float64)
    if c.shape != y.shape:
        raise AudioError(f"measure_snr: clean has {c.size} samples but noisy has {y.size}; "
                         "expected equal lengths")
    p_clean = _power(c)
    if p_clean == 0.0:
        raise AudioError("clean signal is empty or silent: SNR is undefined")
    p_noise = _power(y - c)
    return math.inf if p_noise == 0.0 else 10 * math.log10(p_clean / p_noise)

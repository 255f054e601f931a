"""Augmentation: what a hub's room does to speech, deterministic given a seed, numpy + scipy only.

An :class:`Augmenter` applies, each with its own probability (:class:`AugmentConfig`),
in the order sound meets them: speed and pitch perturbation (the talker), room
reverberation (:mod:`distill.rooms`), additive noise at a chosen SNR (colored,
household or babble, :mod:`distill.noises`), microphone band-limiting, gain, clipping
and a mu-law codec. It returns the audio and a JSON-ready record of exactly what was
applied, which :func:`augment_corpus` stores in the manifest. The SNR is that of
:func:`measure_snr` (whole-clip power) against the perturbed, reverberated speech at
the point the noise is added; band-limiting, clipping and the codec come later and
change the final SNR, so a pure "N dB" test set uses :meth:`AugmentConfig.noise_only`.

Silent input (all zeros, e.g. a ``silence`` clip) has no SNR: it gets the noise at an
absolute level drawn from ``silence_noise_dbfs`` instead, recorded as ``level_dbfs``.
Empty or non-finite input raises :class:`AudioError`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal
from tqdm import tqdm

from assistant.errors import AudioError, ConfigError, CorpusError
from assistant.wav import read_wav, write_wav
from distill.corpus import (
    AUDIO_DIR,
    MANIFEST,
    SUMMARY,
    Utterance,
    read_manifest,
    read_summary,
    write_manifest,
    write_summary,
)
from distill.noises import (
    COLORS,
    HOUSEHOLD_KINDS,
    add_noise,
    as_audio,
    audible_indices,
    babble,
    babble_from,
    colored_noise,
    household_noise,
    measure_snr,
)
from distill.rooms import apply_gain, bandlimit, clip, mu_law, random_room, reverberate, room_rir, synth_rir

__all__ = [
    "COLORS", "HOUSEHOLD_KINDS", "AugmentConfig", "Augmenter", "add_noise", "apply_gain", "augment_corpus",
    "babble", "bandlimit", "clip", "colored_noise", "household_noise", "measure_snr", "mu_law", "pitch_shift",
    "reverberate", "speed_perturb", "synth_rir", "item_seed",
]

_LOGGER = logging.getLogger(__name__)


# --- talker perturbations ----------------------------------------------------------------------------------


def _ratio(value: float, name: str, max_denominator: int = 200) -> Fraction:
    if not (math.isfinite(value) and 0.25 <= value <= 4.0):
        raise AudioError(f"{name}: expected a ratio between 0.25 and 4, got {value!r}")
    return Fraction(value).limit_denominator(max_denominator)


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster by resampling: length / factor, every frequency * factor.

    The factor is rounded to the nearest fraction with a denominator up to 200
    (1.1 is exact; the error is below 3e-5 in the usual 0.8-1.25 range).
    """
    audio = as_audio(x)
    r = _ratio(factor, "speed factor")
    if r == 1 or audio.size == 0:
        return audio.copy()
    return signal.resample_poly(audio.astype(np.float64), r.denominator, r.numerator).astype(np.float32)


def _wsola(x: np.ndarray, stretch: float, frame: int) -> np.ndarray:
    """Time-stretch ``x`` to ``round(len(x) * stretch)`` samples, pitch unchanged.

    WSOLA (Verhelst & Roelands 1993): Hann-windowed frames at half-frame hops in the
    output; each is taken from within ±frame/4 of its ideal input position, where it
    best continues the previous one.
    """
    hop, tol = frame // 2, frame // 4
    n_out = int(round(x.size * stretch))
    pad = frame + tol + int(math.ceil(frame / stretch))
    xp = np.concatenate([np.zeros(pad), x, np.zeros(pad + 2 * frame)])
    window = signal.windows.hann(frame, sym=False)
    frames = (n_out + frame) // hop + 2
    out = np.zeros(frames * hop + frame)
    norm = np.zeros_like(out)
    prev = -1
    for k in range(frames):
        ideal = pad + int(round((k * hop - frame) / stretch))
        if prev < 0:
            best = ideal
        else:
            target = xp[prev + hop: prev + hop + frame]
            region = xp[ideal - tol: ideal + tol + frame]
            best = ideal - tol + int(np.argmax(np.correlate(region, target, mode="valid")))
        out[k * hop: k * hop + frame] += window * xp[best: best + frame]
        norm[k * hop: k * hop + frame] += window
        prev = best
    out = out[frame: frame + n_out]
    return out / np.maximum(norm[frame: frame + n_out], 1e-3)


def pitch_shift(x: np.ndarray, semitones: float, sample_rate: int = 16000) -> np.ndarray:
    """Shift every frequency by ``2 ** (semitones / 12)``, keeping the length (WSOLA stretch, then resample).

    Uses 32 ms frames; the exact length is kept (the last few samples are trimmed or zero-padded).
    """
    audio = as_audio(x)
    if not (math.isfinite(semitones) and -24 <= semitones <= 24):
        raise AudioError(f"pitch shift: expected semitones in [-24, 24], got {semitones!r}")
    if semitones == 0 or audio.size == 0:
        return audio.copy()
    r = _ratio(2 ** (semitones / 12), "pitch ratio")
    frame = max(16, 2 * int(0.016 * sample_rate))
    stretched = _wsola(audio.astype(np.float64), float(r), frame)
    shifted = signal.resample_poly(stretched, r.denominator, r.numerator)[: audio.size]
    return np.pad(shifted, (0, audio.size - shifted.size)).astype(np.float32)


# --- configuration -----------------------------------------------------------------------------------------

_NOISE_TYPES = ("colored", "household", "babble")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of every effect; ranges are ``(low, high)``, drawn uniformly, inclusive."""

    noise_prob: float = 0.8
    """Probability of adding noise."""
    snr_db: tuple[float, float] = (0.0, 25.0)
    """SNR range in dB (see :func:`measure_snr`); test conditions are 24/15/9/6 dB."""
    colored_weight: float = 1.0
    """Relative chance that the noise is colored noise."""
    household_weight: float = 2.0
    """Relative chance that the noise is a household sound."""
    babble_weight: float = 1.0
    """Relative chance that the noise is babble (ignored while the Augmenter has no babble pool)."""
    colors: tuple[str, ...] = COLORS
    """Colors to draw from (white, pink, brown, blue)."""
    household_kinds: tuple[str, ...] = HOUSEHOLD_KINDS
    """Household sounds to draw from (see :data:`HOUSEHOLD_KINDS`)."""
    babble_talkers: tuple[int, int] = (3, 6)
    """How many other utterances make up the babble."""
    silence_noise_dbfs: tuple[float, float] = (-50.0, -25.0)
    """Noise RMS in dB full scale for silent input, where an SNR is undefined."""
    reverb_prob: float = 0.5
    """Probability of simulated room reverberation."""
    rt60: tuple[float, float] = (0.2, 0.8)
    """Reverberation time range in seconds."""
    mic_distance: tuple[float, float] = (0.5, 3.0)
    """Talker-to-hub distance range in metres (farther: more reverberant)."""
    speed_prob: float = 0.3
    """Probability of speed perturbation (tempo and pitch together)."""
    speed: tuple[float, float] = (0.9, 1.1)
    """Speed factor range (1.1 = 10 % faster and shorter)."""
    pitch_prob: float = 0.3
    """Probability of a pitch shift that keeps the duration."""
    pitch_semitones: tuple[float, float] = (-2.0, 2.0)
    """Pitch shift range in semitones."""
    bandlimit_prob: float = 0.3
    """Probability of a microphone / phone-line band-pass."""
    bandlimit_low_hz: tuple[float, float] = (50.0, 300.0)
    """High-pass cut-off range in Hz (0 = none)."""
    bandlimit_high_hz: tuple[float, float] = (3400.0, 7600.0)
    """Low-pass cut-off range in Hz (4000 simulates 8 kHz audio)."""
    gain_prob: float = 0.8
    """Probability of a level change."""
    gain_db: tuple[float, float] = (-18.0, 3.0)
    """Gain range in dB (a result above full scale is normalized, not clipped, unless clipping is drawn)."""
    clip_prob: float = 0.05
    """Probability of hard clipping."""
    clip_fraction: tuple[float, float] = (0.3, 0.9)
    """Clipping level as a fraction of the clip's peak."""
    codec_prob: float = 0.05
    """Probability of an 8-bit mu-law codec round trip."""
    sample_rate: int = 16000
    """Sample rate of the audio in Hz."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name.endswith("_prob"):
                _check_number(f.name, getattr(self, f.name), 0.0, 1.0)
            elif f.name.endswith("_weight"):
                _check_number(f.name, getattr(self, f.name), 0.0, math.inf)
        bounds = {"snr_db": (-20, 60), "silence_noise_dbfs": (-120, 0), "rt60": (0.05, 3),
                  "mic_distance": (0.1, 10), "speed": (0.5, 2), "pitch_semitones": (-12, 12),
                  "bandlimit_low_hz": (0, 4000),
                  "bandlimit_high_hz": (300, self.sample_rate / 2 - 1), "gain_db": (-60, 20),
                  "clip_fraction": (0.01, 1), "babble_talkers": (1, 32)}
        for name, (lo, hi) in bounds.items():
            _check_range(name, getattr(self, name), lo, hi, integer=name == "babble_talkers")
        if self.bandlimit_low_hz[1] >= self.bandlimit_high_hz[0]:
            raise ConfigError(f"AugmentConfig.bandlimit_low_hz: expected every value below bandlimit_high_hz "
                              f"{list(self.bandlimit_high_hz)}, got {list(self.bandlimit_low_hz)}")
        for name, allowed in (("colors", COLORS), ("household_kinds", HOUSEHOLD_KINDS)):
            values = getattr(self, name)
            if not isinstance(values, tuple) or not all(v in allowed for v in values):
                raise ConfigError(f"AugmentConfig.{name}: expected a list of {', '.join(allowed)}, "
                                  f"got {values!r}")
        if (not self.colors and self.colored_weight > 0) or (
            not self.household_kinds and self.household_weight > 0
        ):
            raise ConfigError("AugmentConfig.colors / household_kinds: empty while its weight is positive; "
                              "set colored_weight / household_weight to 0 instead")
        if self.noise_prob > 0 and self.colored_weight + self.household_weight + self.babble_weight == 0:
            raise ConfigError("AugmentConfig: noise_prob > 0 but colored_weight, household_weight and "
                              "babble_weight are all 0")
        if not isinstance(self.sample_rate, int) or self.sample_rate < 8000:
            raise ConfigError(f"AugmentConfig.sample_rate: expected an integer >= 8000 Hz, "
                              f"got {self.sample_rate!r}")

    @classmethod
    def noise_only(cls, snr_db: float | None = None, **overrides: Any) -> AugmentConfig:
        """Noise on every clip and nothing else (test conditions); ``snr_db`` fixes the SNR."""
        off: dict[str, Any] = {f.name: 0.0 for f in dataclasses.fields(cls) if f.name.endswith("_prob")}
        off["noise_prob"] = 1.0
        if snr_db is not None:
            off["snr_db"] = (float(snr_db), float(snr_db))
        return cls(**{**off, **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AugmentConfig:
        """Build from a mapping (lists become tuples); unknown keys raise ConfigError listing known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"AugmentConfig: unknown key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); ``from_dict(to_dict())`` round-trips."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _check_number(name: str, value: object, lo: float, hi: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi
    if not ok:
        raise ConfigError(f"AugmentConfig.{name}: expected a number in [{lo:g}, {hi:g}], got {value!r}")


def _check_range(name: str, value: object, lo: float, hi: float, *, integer: bool = False) -> None:
    kind = "integers" if integer else "numbers"
    ok = (isinstance(value, tuple) and len(value) == 2
          and all(isinstance(v, int if integer else (int, float)) and not isinstance(v, bool) for v in value)
          and lo <= value[0] <= value[1] <= hi)
    if not ok:
        raise ConfigError(f"AugmentConfig.{name}: expected ({kind} low, high) with "
                          f"{lo:g} <= low <= high <= {hi:g}, got {value!r}")


# --- the augmenter -----------------------------------------------------------------------------------------


class Augmenter:
    """Applies an :class:`AugmentConfig` to clips.

    ``babble_pool`` holds other utterances of the same split to build babble from;
    ``babble_ids`` (optional, same length) names them in the records.
    """

    def __init__(
        self,
        config: AugmentConfig | None = None,
        babble_pool: Sequence[np.ndarray] = (),
        *,
        babble_ids: Sequence[str] | None = None,
    ) -> None:
        self.config = config if config is not None else AugmentConfig()
        self.babble_pool = [as_audio(u, f"babble pool item {i}") for i, u in enumerate(babble_pool)]
        if babble_ids is not None and len(babble_ids) != len(self.babble_pool):
            raise ConfigError(f"babble_ids: expected one id per pool utterance ({len(self.babble_pool)}), "
                              f"got {len(babble_ids)}")
        self.babble_ids = list(babble_ids) if babble_ids is not None else None
        self._audible = audible_indices(self.babble_pool)  # once, not per clip: see babble_from
        c = self.config
        if c.noise_prob > 0 and c.colored_weight + c.household_weight == 0 and not self.babble_pool:
            raise ConfigError("AugmentConfig: babble_weight is the only positive noise weight, "
                              "but the babble pool is empty (give the Augmenter other utterances, "
                              "or set another weight)")

    def augment(self, audio: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`__call__` with a generator seeded by ``seed``; the record starts with ``"seed"``."""
        out, record = self(audio, np.random.default_rng(seed))
        return out, {"seed": seed, **record}

    def __call__(
        self, audio: np.ndarray, rng: np.random.Generator, *, exclude: Sequence[int] = ()
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Augment one clip; returns float32 audio with peak <= 1 and the record of what was applied.

        Only applied effects appear in the record: ``speed``, ``pitch_semitones``,
        ``reverb`` (the room), ``noise`` (type, color/kind/sources, ``snr_db`` or
        ``level_dbfs``), ``bandlimit``, ``gain_db``, ``clip``, ``normalize_db`` (the
        safety scaling when the peak would exceed full scale) and ``codec``.
        ``exclude`` lists babble pool indices not to use (the clip itself).
        """
        c, sr = self.config, self.config.sample_rate
        x = as_audio(audio)
        if x.size == 0:
            raise AudioError("audio: empty clip, nothing to augment")
        record: dict[str, Any] = {}
        if rng.random() < c.speed_prob:
            factor = float(_ratio(round(float(rng.uniform(*c.speed)), 3), "speed factor"))
            x = speed_perturb(x, factor)
            record["speed"] = round(factor, 6)
        if rng.random() < c.pitch_prob:
            semitones = round(float(rng.uniform(*c.pitch_semitones)), 2)
            x = pitch_shift(x, semitones, sr)
            record["pitch_semitones"] = semitones
        if rng.random() < c.reverb_prob:
            room = random_room(rng, c.rt60, distance=c.mic_distance)
            x = reverberate(x, room_rir(room, rng, sr))
            record["reverb"] = room.to_dict()
        if rng.random() < c.noise_prob:
            x, record["noise"] = self._noise(x, rng, exclude)
        if rng.random() < c.bandlimit_prob:
            low = round(float(rng.uniform(*c.bandlimit_low_hz)))
            high = round(float(rng.uniform(*c.bandlimit_high_hz)))
            x = bandlimit(x, low or None, high, sr)
            record["bandlimit"] = {"low_hz": low, "high_hz": high}
        if rng.random() < c.gain_prob:
            record["gain_db"] = round(float(rng.uniform(*c.gain_db)), 2)
            x = apply_gain(x, record["gain_db"])
        if rng.random() < c.clip_prob and np.any(x):
            level = float(np.float32(rng.uniform(*c.clip_fraction) * float(np.max(np.abs(x)))))
            x = clip(x, level)
            record["clip"] = {"level": level}
        peak = float(np.max(np.abs(x)))
        if peak > 1.0:
            x = (x * np.float32(0.999 / peak)).astype(np.float32)
            record["normalize_db"] = round(20 * math.log10(0.999 / peak), 3)
        if rng.random() < c.codec_prob:
            x = mu_law(x)
            record["codec"] = "mu-law-8bit"
        return x.astype(np.float32, copy=False), record

    def _noise(
        self, x: np.ndarray, rng: np.random.Generator, exclude: Sequence[int]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        c = self.config
        n_pool = len(self.babble_pool)
        babble_ok = len({i for i in exclude if 0 <= i < n_pool}) < n_pool
        weights = np.array([c.colored_weight, c.household_weight, c.babble_weight if babble_ok else 0.0])
        if weights.sum() == 0:
            raise AudioError("babble: every pool utterance is excluded and no other noise type has a weight")
        family = _NOISE_TYPES[int(rng.choice(3, p=weights / weights.sum()))]
        info: dict[str, Any] = {"type": family}
        if family == "colored":
            info["color"] = str(rng.choice(c.colors))
            noise = colored_noise(x.size, info["color"], rng)
        elif family == "household":
            info["kind"] = str(rng.choice(c.household_kinds))
            noise = household_noise(x.size, info["kind"], rng, c.sample_rate)
        else:
            noise, used = babble_from(self.babble_pool, x.size, rng, c.babble_talkers, exclude, self._audible)
            info["talkers"] = len(used)
            info["sources"] = [self.babble_ids[i] for i in used] if self.babble_ids is not None else used
        if not np.any(x):
            info["level_dbfs"] = round(float(rng.uniform(*c.silence_noise_dbfs)), 2)
            return (x + noise * np.float32(10 ** (info["level_dbfs"] / 20))).astype(np.float32), info
        info["snr_db"] = round(float(rng.uniform(*c.snr_db)), 3)
        return add_noise(x, noise, info["snr_db"]), info


# --- a whole corpus ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    corpus_dir: Path
    out_dir: Path
    config: AugmentConfig
    pools: dict[str, tuple[tuple[str, str], ...]]  # split -> ((id, relative audio path), ...)


_WORKER: dict[str, Any] = {}


def _init_worker(job: _Job) -> None:
    _WORKER.clear()
    _WORKER["job"] = job
    _WORKER["augmenters"] = {}


def _augmenter_for(split: str) -> Augmenter:
    job: _Job = _WORKER["job"]
    augmenters: dict[str, Augmenter] = _WORKER["augmenters"]
    if split not in augmenters:
        pool = job.pools.get(split, ())
        audio = []
        for _, rel in pool:
            try:
                audio.append(read_wav(job.corpus_dir / rel, sample_rate=job.config.sample_rate))
            except AudioError as exc:
                raise CorpusError(f"babble pool of split {split!r}: {exc}") from None
        augmenters[split] = Augmenter(job.config, audio, babble_ids=[uid for uid, _ in pool])
    return augmenters[split]


def _augment_one(task: tuple[Utterance, int, int]) -> Utterance:
    utterance, copy, seed = task
    job: _Job = _WORKER["job"]
    source = job.corpus_dir / utterance.audio
    try:
        audio = read_wav(source, sample_rate=job.config.sample_rate)
        exclude = [i for i, (uid, _) in enumerate(job.pools.get(utterance.split, ())) if uid == utterance.id]
        augmenter = _augmenter_for(utterance.split)
        out, record = augmenter(audio, np.random.default_rng(seed), exclude=exclude)
    except AudioError as exc:
        raise CorpusError(f"utterance {utterance.id!r} ({source}): {exc}") from None
    new_id = f"{utterance.id}-aug{copy}"
    rel = f"{AUDIO_DIR}/{new_id.replace('/', '_').replace(os.sep, '_')}.wav"
    write_wav(job.out_dir / rel, out, job.config.sample_rate)
    record = {"seed": seed, "copy": copy, **record}
    if "augment" in utterance.extra:
        record["previous"] = utterance.extra["augment"]
    extra = {**utterance.extra, "augment": record, "source_id": utterance.id}
    return dataclasses.replace(utterance, id=new_id, audio=rel, duration_s=out.size / job.config.sample_rate,
                               extra=extra)


def item_seed(seed: int, utterance_id: str, copy: int) -> int:
    """The seed of copy ``copy`` of one utterance: independent of order and worker count."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(utterance_id.encode("utf-8")), copy])
    return int(sequence.generate_state(1)[0])


def augment_corpus(
    corpus_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: AugmentConfig | None = None,
    *,
    copies: int = 1,
    seed: int = 0,
    snr_db: float | None = None,
    workers: int | None = None,
    babble_pool_size: int = 200,
) -> Path:
    """Write a new corpus in ``out_dir`` with ``copies`` augmented copies of every clip of ``corpus_dir``.

    A copy gets the id ``<id>-aug<k>``, the key ``source_id``, and the key ``augment``
    (the :class:`Augmenter` record plus its ``seed`` and ``copy``); every other manifest
    key is kept (``duration_s`` is updated). Babble is built from up to
    ``babble_pool_size`` speech clips of the *same split* only, never the clip itself.
    ``snr_db`` fixes the SNR and puts noise on every clip; without a ``config`` it then
    applies noise only (:meth:`AugmentConfig.noise_only`: a "6 dB" test condition). The output
    is the same for any ``workers`` (default: all CPUs; 0 or 1 runs in this process).
    ``corpus.json`` is copied with an ``augment`` section. Returns ``out_dir``.
    """
    if config is None:
        config = AugmentConfig() if snr_db is None else AugmentConfig.noise_only()
    if snr_db is not None:
        config = dataclasses.replace(config, noise_prob=1.0, snr_db=(float(snr_db), float(snr_db)))
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ConfigError(f"copies: expected an integer >= 1, got {copies!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: expected an integer >= 0, got {seed!r}")
    source, target = Path(corpus_dir), Path(out_dir)
    if target.resolve() == source.resolve():
        raise CorpusError(f"{target}: the output folder must differ from the corpus folder")
    if (target / MANIFEST).exists():
        raise CorpusError(f"{target / MANIFEST}: already exists; choose another output folder or delete it")
    utterances = read_manifest(source)
    if not utterances:
        raise CorpusError(f"{source / MANIFEST}: no utterances to augment")

    pools: dict[str, tuple[tuple[str, str], ...]] = {}
    for split in sorted({u.split for u in utterances}):
        speech = [u for u in utterances if u.split == split and u.kind not in ("silence", "noise")]
        if len(speech) > babble_pool_size:
            rng = np.random.default_rng([seed, zlib.crc32(split.encode("utf-8"))])
            picked = sorted(rng.choice(len(speech), size=babble_pool_size, replace=False).tolist())
            speech = [speech[i] for i in picked]
        pools[split] = tuple((u.id, u.audio) for u in speech)
    job = _Job(source, target, config, pools)
    tasks = [(u, k, item_seed(seed, u.id, k)) for u in utterances for k in range(copies)]
    workers = (os.cpu_count() or 1) if workers is None else workers
    workers = max(1, min(workers, len(tasks)))
    _LOGGER.info("augmenting %d clips x %d copies from %s into %s (%d workers)",
                 len(utterances), copies, source, target, workers)
    progress = {"total": len(tasks), "desc": "augment", "unit": "clip", "disable": None}
    if workers == 1:
        _init_worker(job)
        try:
            results = [_augment_one(t) for t in tqdm(tasks, **progress)]
        finally:
            _WORKER.clear()
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
            chunks = max(1, len(tasks) // (workers * 8))
            results = list(tqdm(pool.imap(_augment_one, tasks, chunksize=chunks), **progress))

    write_manifest(target / MANIFEST, results)
    summary = read_summary(source) if (source / SUMMARY).exists() else {}
    previous = summary.get("augment")
    summary["augment"] = {"source": str(source), "config": config.to_dict(), "copies": copies, "seed": seed,
                          "snr_db": snr_db, "babble_pool": {s: len(p) for s, p in pools.items()}}
    if previous is not None:
        summary["augment"]["previous"] = previous
    write_summary(target / SUMMARY, summary)
    _LOGGER.info("wrote %d augmented clips to %s", len(results), target)
    return target

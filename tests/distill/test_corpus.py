"""Manifest read/write, validation with file and line in errors, and corpus statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.errors import CorpusError
from distill.corpus import (
    Utterance,
    corpus_stats,
    format_stats,
    read_manifest,
    read_summary,
    write_manifest,
    write_summary,
)


def _utt(uid: str, split: str = "train", **kw: object) -> Utterance:
    base: dict[str, object] = dict(id=uid, audio=f"audio/{uid}.wav", text="turn on the kitchen lights",
                                   intent="lights", slots={"state": "on"}, voice="espeak-ng:en-us+f3",
                                   engine="espeak-ng", split=split, kind="command", duration_s=1.5,
                                   params={"rate": 170, "pitch": 40})
    base.update(kw)
    return Utterance(**base)  # type: ignore[arg-type]


def test_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    negative = _utt("b", split="test", intent=None, slots={}, kind="near_miss", text="kitchen",
                    extra={"augment": {"snr_db": 6.0}, "near_miss": "slot_values"})
    written = write_manifest(tmp_path, [_utt("a"), negative])
    assert written == tmp_path / "manifest.jsonl"
    lines = written.read_text().splitlines()
    assert json.loads(lines[1])["intent"] is None and json.loads(lines[1])["augment"] == {"snr_db": 6.0}
    assert read_manifest(tmp_path) == [_utt("a"), negative]
    assert read_manifest(written)[1].extra["near_miss"] == "slot_values"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('{"id": "x"}', "missing key(s) audio"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({**_utt("x").to_dict(), "split": "dev"}), "split 'dev' is not one of train, val, test"),
        (json.dumps({**_utt("x").to_dict(), "kind": "near_miss"}), "negatives have intent null"),
        (json.dumps({**_utt("x").to_dict(), "slots": {"state": 3}}), "'slots' must be an object of strings"),
        (json.dumps({**_utt("x").to_dict(), "duration_s": "long"}), "'duration_s' must be a number"),
        (json.dumps(_utt("a").to_dict()), "duplicate id 'a'"),
    ],
)
def test_corrupt_line_names_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps(_utt("a").to_dict()) + "\n\n" + line + "\n")
    with pytest.raises(CorpusError) as info:
        read_manifest(path)
    assert f"{path}, line 3: " in str(info.value)
    assert expected in str(info.value)


def test_missing_manifest_and_summary(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such manifest"):
        read_manifest(tmp_path)
    with pytest.raises(CorpusError, match="no such corpus summary"):
        read_summary(tmp_path)
    (tmp_path / "corpus.json").write_text("{oops")
    with pytest.raises(CorpusError, match="corpus.json: not valid JSON"):
        read_summary(tmp_path)
    write_summary(tmp_path, {"a": 1})
    assert read_summary(tmp_path) == {"a": 1}


def test_stats_counts_durations_and_balance() -> None:
    utts = [
        _utt("a", duration_s=1.0),
        _utt("b", duration_s=2.0, intent="color", voice="flite:awb", engine="flite"),
        _utt("c", split="test", duration_s=3.0, voice="festival:kal_diphone", engine="festival"),
        _utt("d", split="val", intent=None, slots={}, kind="noise", text="", voice="noise:pink", engine="noise",
             duration_s=6.0),
        _utt("f", intent=None, slots={}, kind="silence", text="", voice="noise:pink", engine="noise",
             duration_s=2.0),
    ]
    stats = corpus_stats(utts)
    assert stats["utterances"] == 5 and stats["voices"] == 4
    assert stats["duration_s"]["min"] == 1.0 and stats["duration_s"]["max"] == 6.0
    assert stats["duration_s"]["mean"] == pytest.approx(2.8)
    assert stats["duration_s"]["total_hours"] == pytest.approx(14.0 / 3600)
    assert stats["per_label"] == {"color": 1, "lights": 2, "noise": 1, "silence": 1}
    assert stats["per_label_split"]["train"] == {"color": 1, "lights": 1, "silence": 1}
    assert stats["per_engine_split"]["festival/test"] == 1
    assert stats["voices_per_split"] == {"train": 3, "val": 1, "test": 1}
    assert stats["voices_in_several_splits"] == []  # generated noise is not a voice
    text = format_stats(stats, per_voice=True)
    assert "| lights | 2 | 1 | 0 | 1 |" in text
    assert "| festival | 1 | 1 | 0 | 0 | 1 |" in text
    assert stats["voices_per_engine"] == {"espeak-ng": 1, "festival": 1, "flite": 1, "noise": 1}
    assert "| flite:awb | 1 | train | 2.00 |" in text
    leaky = corpus_stats([*utts, _utt("e", split="test")])
    assert leaky["voices_in_several_splits"] == ["espeak-ng:en-us+f3"]
    assert "WARNING" in format_stats(leaky)

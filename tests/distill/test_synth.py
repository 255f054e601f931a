"""Corpus synthesis: voice-disjoint splits, a deterministic plan, shards, the audio cache, skipped failures."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.context import parse_context
from assistant.errors import ConfigError, ContextError, CorpusError
from assistant.wav import read_wav
from distill.corpus import read_manifest, read_summary
from distill.negatives import NegativeConfig
from distill.synth import (
    SplitConfig,
    SynthConfig,
    assign_splits,
    merge_shards,
    parse_shard,
    plan_corpus,
    shard_of,
    synthesize_corpus,
)
from distill.tts import Voice, installed_voices, list_voices, load_engines, make_engine
from tests.contexts import TWO_INTENTS

CONTEXT = TWO_INTENTS


def _need(*engines: str) -> None:
    for name in engines:
        if not make_engine(name).is_available():
            pytest.skip(f"{name} is not installed here")


@pytest.fixture(scope="module")
def voices() -> list[Voice]:
    _need("espeak-ng", "flite")
    return installed_voices()


def test_splits_are_disjoint_by_speaker_and_hold_out_engines(voices: list[Voice]) -> None:
    splits = assign_splits(voices)
    assert assign_splits(voices) == splits
    by_speaker: dict[str, set[str]] = {}
    for v in voices:
        by_speaker.setdefault(v.speaker_id, set()).add(splits[v.id])
    assert all(len(s) == 1 for s in by_speaker.values())
    assert all(splits[v.id] == "test" for v in voices if v.engine == "festival")
    # flite voices of festival's speakers are held out with them; rms is the validation voice
    assert splits["flite:kal"] == splits["flite:kal16"] == splits["flite:slt"] == "test"
    assert splits["flite:rms"] == "val" and splits["flite:awb"] == "train"
    variants = {v.speaker_id: splits[v.id] for v in voices if v.engine == "espeak-ng"}
    counts = Counter(variants.values())
    assert counts["val"] == counts["test"] == round(0.1 * len(variants)) >= 5
    # a voice's split does not depend on which other voices are listed
    flite_only = assign_splits([v for v in voices if v.engine == "flite"])
    assert flite_only == {k: v for k, v in splits.items() if k.startswith("flite:")}
    assert assign_splits(voices, SplitConfig(link_speakers=False))["flite:kal"] == "train"
    resalted = assign_splits(voices, SplitConfig(salt="other"))
    assert any(resalted[v.id] != splits[v.id] for v in voices if v.engine == "espeak-ng")


def test_plan_is_deterministic_and_voice_disjoint(voices: list[Voice]) -> None:
    ctx = parse_context(CONTEXT)
    engines = load_engines(["espeak-ng", "flite"])
    selected = list_voices(engines)
    splits = assign_splits(voices)
    config = SynthConfig(utterances=400, negatives=0.15, engines=("espeak-ng", "flite"))
    plan = plan_corpus(ctx, config, engines, selected, splits)
    assert len(plan) == 400 and len({u.id for u in plan}) == 400
    assert plan == plan_corpus(ctx, config, engines, selected, splits)
    assert plan != plan_corpus(ctx, replace(config, seed=1), engines, selected, splits)
    for u in plan:
        assert u.audio == f"audio/{u.id}.wav"
        if u.engine == "noise":
            assert u.kind in ("silence", "noise") and u.voice.startswith("noise:")
        else:
            assert splits[u.voice] == u.split  # every clip's voice belongs to its split
    assert sum(u.intent is None for u in plan) == 60
    negative_splits: dict[str, set[str]] = {}
    for u in plan:
        if u.kind in ("out_of_domain", "near_miss"):
            negative_splits.setdefault(u.text, set()).add(u.split)
    assert all(len(s) == 1 for s in negative_splits.values())  # a negative sentence is in one split only
    assert len(set().union(*negative_splits.values())) == 3
    assert all((u.intent is None) == (u.kind != "command") for u in plan)
    per_split = Counter(u.split for u in plan)
    assert 280 <= per_split["train"] <= 360 and per_split["val"] >= 20 and per_split["test"] >= 20
    assert {u.engine for u in plan if u.split == "test"} >= {"espeak-ng", "flite"}


def test_shards_cover_every_utterance_exactly_once() -> None:
    ids = [f"{i:024x}" for i in range(1000)]
    shards = [{i for i in ids if shard_of(i, 3) == k} for k in (1, 2, 3)]
    assert set().union(*shards) == set(ids) and sum(len(s) for s in shards) == len(ids)
    assert all(250 <= len(s) <= 420 for s in shards)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "2", "a/b"):
        with pytest.raises(ConfigError, match="expected i/N"):
            parse_shard(bad)


def test_cache_shards_and_merge(tmp_path: Path) -> None:
    _need("espeak-ng")
    context = tmp_path / "lights.yaml"
    context.write_text(CONTEXT)
    config = SynthConfig(utterances=10, negatives=0.2, engines=("espeak-ng",), seed=3)
    full = tmp_path / "full"
    first = synthesize_corpus(context, full, config, workers=1, progress=False)
    assert (first.planned, first.synthesized, first.cached, first.failed) == (10, 10, 0, 0)
    utterances = read_manifest(full)
    assert len(utterances) == 10
    for u in utterances:
        audio = read_wav(full / u.audio)
        assert audio.size / 16000 == pytest.approx(u.duration_s, abs=1e-3)
    manifest_text = (full / "manifest.jsonl").read_text()
    second = synthesize_corpus(context, full, config, workers=1, progress=False)
    assert (second.synthesized, second.cached) == (0, 10)
    assert (full / "manifest.jsonl").read_text() == manifest_text
    (full / utterances[0].audio).unlink()
    assert synthesize_corpus(context, full, config, workers=1, progress=False).synthesized == 1
    summary = read_summary(full)
    assert summary["context"]["sha256"] and summary["stats"]["utterances"] == 10

    sharded = tmp_path / "sharded"
    counts = [synthesize_corpus(context, sharded, config, workers=1, shard=(k, 2), progress=False).planned
              for k in (1, 2)]
    assert sum(counts) == 10 and (sharded / "manifest.shard-2-of-2.jsonl").is_file()
    merge_shards(sharded)
    merged = read_manifest(sharded)
    assert {u.id for u in merged} == {u.id for u in utterances}
    assert [u.text for u in merged] == [u.text for u in utterances]
    assert read_summary(sharded)["merged_shards"] == 2
    (sharded / "manifest.shard-2-of-2.jsonl").unlink()
    with pytest.raises(CorpusError, match="missing shard"):
        merge_shards(sharded)


def test_engine_failures_skip_utterances(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _need("espeak-ng")
    config = SynthConfig(utterances=6, negatives=0.5, engines=("espeak-ng",), timeout_s=1e-4,
                         negative_config=NegativeConfig(weights=(("silence", 1.0),)))
    with caplog.at_level(logging.WARNING):
        result = synthesize_corpus(parse_context(CONTEXT), tmp_path / "c", config, workers=1, progress=False)
    assert (result.planned, result.failed) == (6, 3)
    assert "timed out" in caplog.text and "skipping utterance" in caplog.text
    assert [u.kind for u in read_manifest(tmp_path / "c")] == ["silence"] * 3


def test_bad_context_or_config_creates_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONTEXT.replace("$color:color", "$colour:color"))
    with pytest.raises(ContextError, match="bad.yaml"):
        synthesize_corpus(bad, tmp_path / "out", SynthConfig(utterances=4), workers=1)
    with pytest.raises(ConfigError, match="matches no installed voice"):
        synthesize_corpus(parse_context(CONTEXT), tmp_path / "out", SynthConfig(voices=("nobody:*",)), workers=1)
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CorpusError, match="cannot create the corpus folder"):
        synthesize_corpus(parse_context(CONTEXT), tmp_path / "file", SynthConfig(utterances=2, engines=("flite",)),
                          workers=1, progress=False)


def test_config_validation_and_round_trip() -> None:
    with pytest.raises(ConfigError, match=r"negatives must be a fraction in \[0, 1\)"):
        SynthConfig(negatives=1.0)
    with pytest.raises(ConfigError, match="allowed: espeak-ng, flite, festival, piper"):
        SynthConfig(engines=("sam",))
    with pytest.raises(ConfigError, match="summing to 1"):
        SplitConfig(fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ConfigError, match="not one of train, val, test"):
        SplitConfig(held_out_voices=(("flite:*", "dev"),))
    config = SynthConfig(utterances=50, seed=4, voices=("flite:*",),
                         splits=SplitConfig(speaker_fractions=(0.2, 0.2)))
    assert SynthConfig.from_dict(config.to_dict()) == config

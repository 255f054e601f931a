"""``hubvoice-distill`` end to end: synth on a tiny context, corpus-stats, voices, augment, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from assistant.wav import read_wav
from distill.cli import build_parser, main
from tests.contexts import TWO_INTENTS

CONTEXT = TWO_INTENTS
FIELDS = {"id", "audio", "text", "intent", "slots", "voice", "engine", "split", "kind", "duration_s", "params"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    context = root / "lights.yaml"
    context.write_text(CONTEXT)
    out = root / "corpus"
    status = main(["synth", str(context), "-o", str(out), "--utterances", "12", "--negatives", "0.25",
                   "--seed", "1", "--workers", "2", "--no-progress"])
    assert status == 0
    return out


def test_synth_writes_the_manifest_format(corpus: Path) -> None:
    lines = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    for item in lines:
        assert set(item) >= FIELDS
        assert item["split"] in ("train", "val", "test")
        audio = read_wav(corpus / item["audio"])
        assert audio.size / 16000 == pytest.approx(item["duration_s"], abs=1e-3)
        if item["kind"] == "command":
            assert item["intent"] in ("changeLightState", "setColor") and item["slots"]
        else:
            assert item["intent"] is None and item["slots"] == {}
    assert sum(item["intent"] is None for item in lines) == 3
    assert {item["intent"] for item in lines} >= {"changeLightState", "setColor"}
    summary = json.loads((corpus / "corpus.json").read_text())
    sha = hashlib.sha256((corpus.parent / "lights.yaml").read_bytes()).hexdigest()
    assert summary["context"]["sha256"] == sha
    assert summary["config"]["utterances"] == 12 and summary["config"]["seed"] == 1
    assert summary["stats"]["utterances"] == 12 and summary["run"]["synthesized"] == 12


def test_corpus_stats_prints_tables(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["corpus-stats", str(corpus), "--per-voice"]) == 0
    out = capsys.readouterr().out
    assert "| utterances | voices | min s | mean s | max s | total hours |" in out
    assert "| intent / kind | all | train | val | test |" in out
    assert "| changeLightState |" in out and "| engine | voices | all | train | val | test |" in out


def test_augment_through_the_cli(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "aug"
    assert main(["augment", str(corpus), "-o", str(out), "--copies", "1", "--snr", "10", "--workers", "1"]) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 12 and "augment" in json.loads(lines[0])


def test_voices_lists_splits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["voices", "--engines", "flite", "--debug"]) == 0
    out = capsys.readouterr().out
    assert "| flite:rms | flite | rms | val |" in out
    assert "| flite:kal | flite | kal | test |" in out


def test_malformed_context_exits_nonzero_and_writes_nothing(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONTEXT.replace("$color:color", "$colour:color"))
    out = tmp_path / "never"
    assert main(["synth", str(bad), "-o", str(out), "--utterances", "4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: intent 'setColor', expression 1, column ")
    assert "colour" in err
    assert not out.exists()
    assert main(["synth", str(bad), "-o", str(out), "--shard", "3/2"]) == 1
    assert "expected i/N" in capsys.readouterr().err
    assert main(["corpus-stats", str(tmp_path)]) == 1
    assert "no such manifest" in capsys.readouterr().err


def test_every_subcommand_takes_debug() -> None:
    parser = build_parser()
    for argv in (["synth", "c.yaml", "-o", "x"], ["merge", "x"], ["augment", "x", "-o", "y"], ["voices"],
                 ["corpus-stats", "x"]):
        assert parser.parse_args([*argv, "--debug"]).debug is True
        assert parser.parse_args(["--debug", *argv]).debug is True
        assert parser.parse_args(argv).debug is False


def test_bench_teacher_engines_option(capsys: pytest.CaptureFixture[str]) -> None:
    from distill.bench import TEACHER_ENGINES

    parser = build_parser()
    assert parser.parse_args(["bench", "b"]).teacher_engines == TEACHER_ENGINES == ("ct2", "torch", "onnx")
    args = parser.parse_args(["bench", "b", "--teacher-engines", "onnx, ct2,onnx"])
    assert args.teacher_engines == ("onnx", "ct2")  # the order given, repeats dropped
    for bad, unknown in (("ct2,tpu", "(unknown: tpu)"), (",", "got ','")):
        with pytest.raises(SystemExit) as exc:
            main(["bench", "b", "--teacher-engines", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "argument --teacher-engines: expected a comma list of ct2, torch, onnx" in err and unknown in err


def test_build_far_kinds_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from distill.cli import _far_kinds
    from distill.evaluate import NEGATIVE_KINDS

    assert build_parser().parse_args(["build", "c.yaml", "-o", "x"]).far_kinds is None  # the preset's
    assert _far_kinds(None) is None
    assert _far_kinds("all") == list(NEGATIVE_KINDS) == ["out_of_domain", "near_miss", "silence", "noise"]
    assert _far_kinds("noise, silence") == ["noise", "silence"]
    ctx = tmp_path / "c.yaml"
    ctx.write_text(CONTEXT)
    out = tmp_path / "never"
    assert main(["build", str(ctx), "-o", str(out), "--work", str(tmp_path / "work"), "--far-kinds", "noise,tv"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: far_kinds: expected one or more of out_of_domain, near_miss, silence, noise")
    assert "'tv'" in err and not out.exists()

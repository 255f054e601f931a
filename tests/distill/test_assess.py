"""`hubvoice-distill eval` measures a bundle through ONNX Runtime on a corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from assistant.wav import write_wav  # noqa: E402
from distill.cli import main  # noqa: E402
from distill.corpus import Utterance, write_manifest  # noqa: E402
from tests.assistant.test_bundle import COMMANDS, tiny_bundle, tone_clip  # noqa: E402


def _tone_corpus(root: Path) -> Path:
    utts = []
    for i in range(15):
        k = i % len(COMMANDS)
        intent, slots = COMMANDS[k]
        write_wav(root / "audio" / f"c{i}.wav", tone_clip(k, 12000 + 320 * i, 500 + i))
        utts.append(Utterance(id=f"c{i}", audio=f"audio/c{i}.wav", text="", intent=intent, slots=dict(slots),
                              voice="tone", engine="tone", split="test",
                              kind="command" if intent else "noise"))
    write_manifest(root / "manifest.jsonl", utts)
    return root


def test_eval_prints_a_table_and_writes_reports(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tiny_bundle(tmp_path_factory)
    corpus = _tone_corpus(tmp_path / "corpus")
    assert main(["eval", str(bundle), "--corpus", str(corpus), "--snr", "15", "-o", str(tmp_path / "report")]) == 0
    table = capsys.readouterr().out
    assert "| test clean |" in table and "| test 15 dB |" in table
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    clean = summary["conditions"]["test clean"]
    assert clean["n"] == 15 and clean["n_negatives"] == 3
    assert clean["command_acceptance"] >= 0.8  # the tiny bundle was trained on exactly these tones
    assert (tmp_path / "report" / "test_clean" / "confusion.png").stat().st_size > 1000


def test_eval_without_anything_to_measure_is_an_error(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tiny_bundle(tmp_path_factory)
    assert main(["eval", str(bundle), "-o", str(tmp_path / "r")]) == 1
    assert "error: nothing to evaluate" in capsys.readouterr().err

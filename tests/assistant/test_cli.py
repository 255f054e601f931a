"""`hubvoice` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_context_check_prints_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["context", "check", str(ROOT / "examples" / "lights.yaml"), "--json", "--sample", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sentences"] == sum(i["sentences"] for i in summary["intents"].values()) > 0
    assert len(summary["samples"]) == 3 and all(s["intent"] in summary["intents"] for s in summary["samples"])


def test_context_check_reports_the_precise_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('context:\n  expressions:\n    lights:\n      - "turn [on, off the $colour:c light"\n'
                   '  slots:\n    color: ["red"]\n')
    assert main(["context", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and "intent 'lights'" in err and "expression 1" in err

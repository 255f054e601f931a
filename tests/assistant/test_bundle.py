"""Model bundles: load_bundle verifies files, sha256s, the graph and the self-test, and refuses tampering.

One tiny bundle is built per test session (a 16-channel student trained for 20 steps to tell
five synthetic "commands" apart: four harmonic tones and noise, exported with
``distill.bundle.write_bundle`` as static int8, keeping the fp32 reference and a streaming
model); test_recognizer.py and test_infer_cli.py use it too.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # building a bundle needs distill (torch); loading it does not

from assistant.bundle import (  # noqa: E402
    MANIFEST,
    Manifest,
    int8_may_saturate,
    load_bundle,
    read_manifest,
    sha256_file,
)
from assistant.context import load_context  # noqa: E402
from assistant.decode import HeadLayout  # noqa: E402
from assistant.errors import BundleError  # noqa: E402
from distill.bundle import write_bundle  # noqa: E402
from distill.export import head_sizes  # noqa: E402
from distill.nets.student import Student, StudentConfig  # noqa: E402
from tests.no_torch import BLOCK_TORCH  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

CONTEXT = """\
context:
  expressions:
    changeLightState:
      - "[turn, switch] $state:state the $location:location lights"
      - "[turn, switch] $state:state the lights"
    setColor:
      - "make the $location:location lights $color:color"
      - "make the lights $color:color"
  slots:
    state: ["on", "off"]
    location: ["kitchen", "bedroom", "living room"]
    color: ["red", "blue", "warm white"]
"""

COMMANDS: list[tuple[str | None, dict[str, str]]] = [
    ("changeLightState", {"state": "off", "location": "kitchen"}),
    ("changeLightState", {"state": "on"}),
    ("setColor", {"location": "bedroom", "color": "blue"}),
    ("setColor", {"color": "warm white"}),
    (None, {}),
]
"""What each synthetic sound class means: a tone per command, noise for 'not understood'."""
_F0 = (140.0, 250.0, 420.0, 700.0)
SAMPLE_LENGTHS = (12345, 16000, 9001, 20000, 15999)


def tone_clip(k: int, n: int, seed: int) -> np.ndarray:
    """Class ``k`` (index into COMMANDS): a vibrato harmonic tone with an envelope, or noise for the last."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    if k >= len(_F0):
        return (0.05 * rng.standard_normal(n)).astype(np.float32)
    f = _F0[k] * (1 + 0.03 * np.sin(2 * np.pi * 4 * t))
    phase = 2 * np.pi * np.cumsum(f) / 16000.0
    env = np.minimum(1.0, t / 0.1) * np.minimum(1.0, (t[-1] - t) / 0.2)
    x = sum(np.sin(h * phase) / h for h in (1, 2, 3)) * 0.3 * env + 0.01 * rng.standard_normal(n)
    return np.asarray(x, np.float32)


def train_tiny_student(layout: HeadLayout, steps: int = 20) -> Student:
    """A 16-channel student fitted to the tone classes (label smoothing keeps probabilities off 0/1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        student = Student(head_sizes(layout), StudentConfig(channels=16, dilations=(1, 2, 4), dropout=0.0)).eval()
        targets = [layout.encode(intent, slots) for intent, slots in COMMANDS]
        per_head = [torch.tensor([t[0] if h == 0 else t[1][h - 1] for t in targets]) for h in range(len(layout.slots) + 1)]
        optimizer = torch.optim.Adam(student.parameters(), lr=2e-2)
        rng = np.random.default_rng(0)
        for step in range(steps):
            n = 8000 + 320 * int(rng.integers(0, 10))
            x = np.stack([tone_clip(k, n, 1000 * step + k) * rng.uniform(0.5, 1.5) for k in range(len(COMMANDS))])
            logits = student(torch.from_numpy(x.astype(np.float32)))
            loss = sum(torch.nn.functional.cross_entropy(lg, target=y, label_smoothing=0.3)
                       for lg, y in zip(logits, per_head, strict=True))
            optimizer.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            optimizer.step()
        return student.eval()
    finally:
        torch.set_num_threads(threads)


def expected(k: int) -> dict[str, Any]:
    intent, slots = COMMANDS[k]
    return {"understood": intent is not None, "intent": intent, "slots": slots}


def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny bundle: built once in the session's temporary folder, then shared by the
    test modules that import this function (the folder, not a module global, is the cache)."""
    base = tmp_path_factory.getbasetemp() / "tiny-bundle"
    if not (base / "tiny" / MANIFEST).is_file():
        base.mkdir(exist_ok=True)
        context = base / "context.yaml"
        context.write_text(CONTEXT)
        layout = HeadLayout.from_context(load_context(context))
        samples = [(tone_clip(k, n, 7 + k), expected(k)) for k, n in enumerate(SAMPLE_LENGTHS)]
        calibration = [tone_clip(i % len(COMMANDS), 8000 + 997 * i, 100 + i) for i in range(10)]
        write_bundle(
            base / "tiny", student=train_tiny_student(layout), layout=layout, context_path=context, threshold=0.3,
            samples=samples, calibration_clips=calibration, teacher_info={"name": "none (test)"},
            recipe={"steps": 20}, metrics={"command_acceptance": 1.0},
            card_tables={"Synthetic tones": "| clips | acceptance |\n| --- | --- |\n| 5 | 100% |"},
            quantize="static", keep_fp32=True,
        )
    return base / "tiny"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle(tmp_path_factory)


@pytest.fixture
def copy_of(bundle_dir: Path, tmp_path: Path) -> Callable[[], Path]:
    def make() -> Path:
        target = tmp_path / "copy"
        shutil.copytree(bundle_dir, target)
        return target

    return make


def edit_manifest(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = folder / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# --- a good bundle ---------------------------------------------------------------------------------


def test_written_bundle_has_the_documented_files_and_manifest(bundle_dir: Path) -> None:
    names = sorted(str(p.relative_to(bundle_dir)) for p in bundle_dir.rglob("*") if p.is_file())
    assert names == ["MODEL_CARD.md", "context.yaml", "manifest.json", "model.fp32.onnx", "model.onnx",
                     "model_stream.onnx",
                     *(f"samples/{i:02d}_{(c[0] or 'not_understood')}.wav" for i, c in enumerate(COMMANDS))]
    data = json.loads((bundle_dir / MANIFEST).read_text())
    assert data["schema_version"] == 1 and data["sample_rate"] == 16000 and data["name"] == "tiny"
    assert data["model"]["input"] == "audio"
    assert data["model"]["outputs"] == ["intent", "slot_state", "slot_location", "slot_color"]
    assert data["model"]["sha256"] == sha256_file(bundle_dir / "model.onnx")
    assert data["model"]["precision"] == "int8-static" and data["reference_model"]["file"] == "model.fp32.onnx"
    assert data["context"]["sha256"] == load_context(bundle_dir / "context.yaml").sha256
    assert data["streaming"]["chunk_multiple"] == 320 and data["streaming"]["input"] == "chunk"
    assert [s["expected"]["intent"] for s in data["samples"]] == [c[0] for c in COMMANDS]
    assert data["teacher"] == {"name": "none (test)"} and data["metrics"]["command_acceptance"] == 1.0
    assert data["created"].endswith("Z") and data["hubvoice_version"]
    card = (bundle_dir / "MODEL_CARD.md").read_text()
    assert card.startswith("# tiny 1.0.0") and "## Synthetic tones" in card and "| 5 | 100% |" in card
    assert "`changeLightState`" in card and "command_acceptance" in card


def test_manifest_round_trips(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    assert Manifest.from_dict(manifest.to_dict()) == manifest


AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse4_1 sse4_2 avx avx2 fma\nprocessor\t: 1\nflags\t\t: fpu avx avx2\n"


def test_int8_may_saturate_reads_the_cpu_flags() -> None:
    assert int8_may_saturate(AVX2_ONLY, "x86_64")
    assert not int8_may_saturate(AVX2_ONLY.replace("avx2 fma", "avx2 avx512f avx512_vnni"), "x86_64")
    assert not int8_may_saturate(AVX2_ONLY.replace("avx2 fma", "avx2 avx_vnni"), "AMD64")
    assert not int8_may_saturate(AVX2_ONLY, "aarch64")  # ARM's int8 dot products do not saturate so
    assert not int8_may_saturate("processor\t: 0\nmodel name\t: ?\n", "x86_64")  # no flags: not known


def test_a_static_int8_bundle_warns_on_a_cpu_where_int8_may_saturate(bundle_dir: Path, copy_of: Callable[[], Path],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The tiny bundle is static int8: loading it warns exactly where this host's flags say int8 can saturate;
    the same bundle labelled int8-weights never warns."""
    with caplog.at_level(logging.WARNING, logger="assistant.bundle"):
        load_bundle(bundle_dir, self_test=False)
    warned = [r.getMessage() for r in caplog.records if "without VNNI" in r.getMessage()]
    assert len(warned) == int(int8_may_saturate())
    assert all(str(bundle_dir) in m and "int8-static" in m and "'weights'" in m for m in warned)
    caplog.clear()
    folder = copy_of()
    edit_manifest(folder, lambda d: d["model"].update(precision="int8-weights"))
    with caplog.at_level(logging.WARNING, logger="assistant.bundle"):
        load_bundle(folder, self_test=False)
    assert not [r for r in caplog.records if "without VNNI" in r.getMessage()]


def test_load_runs_the_self_test(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.name == "tiny" and bundle.layout.intents[1:] == ("changeLightState", "setColor")
    assert bundle.slots_by_intent() == {"changeLightState": {"state", "location"}, "setColor": {"location", "color"}}


def test_write_refuses_to_replace_an_existing_bundle(bundle_dir: Path) -> None:
    before = sha256_file(bundle_dir / MANIFEST)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(bundle_dir, student=Student([1]), layout=read_manifest(bundle_dir).layout,
                     context_path=bundle_dir / "context.yaml", threshold=0.5, samples=[(np.zeros(1600), None)])
    assert sha256_file(bundle_dir / MANIFEST) == before


# --- tampering and mismatches ----------------------------------------------------------------------


def test_a_tampered_model_is_refused(copy_of: Callable[[], Path]) -> None:
    folder = copy_of()
    blob = bytearray((folder / "model.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (folder / "model.onnx").write_bytes(bytes(blob))
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 .* differs from the manifest"):
        load_bundle(folder)


def test_a_tampered_context_or_sample_is_refused(copy_of: Callable[[], Path]) -> None:
    folder = copy_of()
    with (folder / "context.yaml").open("a") as fh:
        fh.write("# edited\n")
    with pytest.raises(BundleError, match=r"context\.yaml: sha256"):
        load_bundle(folder)
    shutil.rmtree(folder)
    folder = copy_of()
    sample = next((folder / "samples").glob("*.wav"))
    sample.write_bytes(sample.read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(BundleError, match=sample.name):
        load_bundle(folder)


def test_a_manifest_naming_other_outputs_is_refused(copy_of: Callable[[], Path]) -> None:
    folder = copy_of()
    edit_manifest(folder, lambda d: d["model"].update(outputs=["intent", "slot_state", "slot_colour", "slot_x"]))
    with pytest.raises(BundleError, match=r"model\.onnx: graph outputs are \['intent', 'slot_state', 'slot_location'"):
        load_bundle(folder)


def test_a_layout_that_differs_from_the_context_is_refused(copy_of: Callable[[], Path]) -> None:
    folder = copy_of()
    edit_manifest(folder, lambda d: d["layout"]["slots"][2]["values"].append("green"))
    with pytest.raises(BundleError, match="layout slot heads .* do not match the context"):
        load_bundle(folder)


def test_label_counts_are_checked_against_the_graph(copy_of: Callable[[], Path]) -> None:
    """Context, layout and sha256 all agree, but the model was trained for one color fewer."""
    folder = copy_of()
    text = (folder / "context.yaml").read_text().replace('"warm white"]', '"warm white", "green"]')
    (folder / "context.yaml").write_text(text)
    layout = HeadLayout.from_context(load_context(folder / "context.yaml"))

    def change(d: dict[str, Any]) -> None:
        d["layout"] = layout.to_dict()
        d["context"]["sha256"] = sha256_file(folder / "context.yaml")

    edit_manifest(folder, change)
    with pytest.raises(BundleError, match="slot_color has 4 values per row, the manifest's layout has 5 labels"):
        load_bundle(folder)


def test_a_changed_expectation_fails_the_self_test(copy_of: Callable[[], Path]) -> None:
    folder = copy_of()
    edit_manifest(folder, lambda d: d["samples"][0]["expected"].update(intent="setColor"))
    with pytest.raises(BundleError, match=r"00_changeLightState\.wav: self-test failed: the model decides "
                                          r"changeLightState .* the manifest expects setColor"):
        load_bundle(folder)
    load_bundle(folder, self_test=False)  # the files themselves are fine


@pytest.mark.parametrize("name", ["weights.pt", "model.pkl", "samples/run.py", "model.onnx.data"])
def test_files_other_than_onnx_json_yaml_wav_md_are_refused(copy_of: Callable[[], Path], name: str) -> None:
    folder = copy_of()
    (folder / name).write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(BundleError, match=f"{name} is not allowed in a bundle"):
        load_bundle(folder)


def test_symlinks_are_refused(copy_of: Callable[[], Path], tmp_path: Path) -> None:
    folder = copy_of()
    (tmp_path / "outside.md").write_text("x")
    (folder / "notes.md").symlink_to(tmp_path / "outside.md")
    with pytest.raises(BundleError, match="notes.md is a symbolic link"):
        load_bundle(folder)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(schema_version=2), "schema_version 2 is not supported"),
    (lambda d: d.update(sample_rate=8000), "sample_rate 8000: expected 16000"),
    (lambda d: d["model"].pop("sha256"), "missing field 'model.sha256'"),
    (lambda d: d["model"].update(file="../model.onnx"), "expected a path inside the bundle"),
    (lambda d: d.update(threshold=1.5), r"threshold 1.5: expected a number in \[0, 1\]"),
    (lambda d: d["streaming"].update(chunk_multiple="320"), "field 'streaming.chunk_multiple': expected int"),
    (lambda d: d.update(samples=[]), "no samples; a bundle needs at least one self-test clip"),
])
def test_malformed_manifests_name_the_field(copy_of: Callable[[], Path], change: Callable[[dict[str, Any]], None],
                                            message: str) -> None:
    folder = copy_of()
    edit_manifest(folder, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(folder)


def test_missing_files_and_folders(copy_of: Callable[[], Path], tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such bundle folder"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path)
    folder = copy_of()
    (folder / "model_stream.onnx").unlink()
    with pytest.raises(BundleError, match=r"model_stream\.onnx: missing"):
        load_bundle(folder)
    (folder / MANIFEST).write_text('{"schema_version": 1,\n "name": }')
    with pytest.raises(BundleError, match=r"not valid JSON \(line 2"):
        load_bundle(folder)


def test_a_garbage_model_with_a_matching_sha256_is_refused_by_onnx_runtime(copy_of: Callable[[], Path]) -> None:
    folder = copy_of()
    (folder / "model.onnx").write_bytes(b"not a model")
    edit_manifest(folder, lambda d: d["model"].update(sha256=sha256_file(folder / "model.onnx")))
    with pytest.raises(BundleError, match="ONNX Runtime cannot load the model"):
        load_bundle(folder)


_NO_TORCH = BLOCK_TORCH + """
import json, sys
from assistant.bundle import load_bundle
from assistant.recognizer import Recognizer, recognize_file
bundle = load_bundle(sys.argv[1])
recognizer = Recognizer(bundle)
for sample in bundle.manifest.samples:
    print(json.dumps(recognize_file(recognizer, bundle.path / sample.audio.file).to_dict()))
assert not any(m.split(".")[0] in ("torch", "torchaudio") for m in sys.modules)
"""


def test_the_hub_loads_the_bundle_without_torch(bundle_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _NO_TORCH, str(bundle_dir)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["intent"], r["slots"]) for r in results] == COMMANDS

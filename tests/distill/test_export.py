"""Export: graph shape, torch/ONNX Runtime parity, the streaming graph, int8, and the bundle end to end.

One bundle is built for the module from a tiny *random* (untrained) student: static int8,
fp32 reference kept, streaming model. A random student's decisions are arbitrary, so the
tests compare probabilities (fp32: within 1e-4 of torch) and report int8 agreement rather
than expecting particular intents (tests/assistant/test_recognizer.py measures int8
agreement on a trained student).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from assistant.bundle import load_bundle  # noqa: E402
from assistant.context import parse_context  # noqa: E402
from assistant.decode import HeadLayout, decode  # noqa: E402
from assistant.errors import BundleError, ConfigError  # noqa: E402
from assistant.wav import read_wav  # noqa: E402
from distill.bundle import write_bundle  # noqa: E402
from distill.export import (  # noqa: E402
    INTEGER_OPS,
    OPSET,
    StreamSpec,
    check_parity,
    check_stream_parity,
    export_model,
    frontend_nodes,
    head_sizes,
    load_student,
    quantize_model,
    quantize_weights,
    torch_probabilities,
)
from distill.nets.frontend import FrontendConfig  # noqa: E402
from distill.nets.student import Student, StudentConfig  # noqa: E402
from tests.no_torch import BLOCK_TORCH  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = """\
context:
  expressions:
    lights:
      - "turn $state:state the $room:room lights"
    music:
      - "play (some) music (in the $room:room)"
  slots:
    state: ["on", "off"]
    room: ["kitchen", "bedroom"]
"""
ODD_LENGTHS = (1600, 1601, 4999, 16000, 16001, 23457)
MAX_CONSTANT = 32_768
"""Largest tensor a graph may store (elements): the default student's largest weight has 5,120; the
frontend's DFT kernels would be 131,072, and its k*n index matrix, if the exporter folded it, 65,536."""


def speechlike(n: int, seed: int) -> np.ndarray:
    """A voiced-speech stand-in: gliding f0 with harmonics, syllable-rate envelope, breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000.0
    voiced = sum(np.sin(h * phase) * rng.uniform(0.2, 1.0) / h for h in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)), 0, None)
    x = 0.25 * voiced * envelope + 0.02 * rng.standard_normal(n)
    return np.asarray(x, np.float32)


@dataclass
class Built:
    student: Student
    layout: HeadLayout
    folder: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("export")
    (base / "context.yaml").write_text(CONTEXT)
    layout = HeadLayout.from_context(parse_context(CONTEXT))
    torch.manual_seed(0)
    student = Student(head_sizes(layout), StudentConfig(channels=16, dilations=(1, 2, 4))).eval()
    folder = write_bundle(
        base / "random", student=student, layout=layout, context_path=base / "context.yaml", threshold=0.0,
        samples=[(speechlike(n, i), None) for i, n in enumerate((12000, 16001, 20000, 9999))],
        calibration_clips=[speechlike(8000 + 1500 * i, 50 + i) for i in range(8)],
        teacher_info={"name": "none"}, recipe={"random": True}, metrics={}, card_tables={},
        quantize="static", keep_fp32=True,
    )
    return Built(student, layout, folder)


def manifest(built: Built) -> dict[str, Any]:
    return json.loads((built.folder / "manifest.json").read_text())


def run(path: Path, audio: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"audio": np.asarray(audio, np.float32)})


def test_graph_is_one_file_with_named_dynamic_io(built: Built) -> None:
    model = onnx.load(str(built.folder / "model.fp32.onnx"))
    assert {o.domain: o.version for o in model.opset_import}[""] == OPSET
    (audio,) = model.graph.input
    assert audio.name == "audio"
    assert [d.dim_param for d in audio.type.tensor_type.shape.dim] == ["batch", "samples"]
    assert [o.name for o in model.graph.output] == ["intent", "slot_state", "slot_room"]
    assert all(i.data_location == onnx.TensorProto.DEFAULT for i in model.graph.initializer)
    assert not list(built.folder.rglob("*.data"))


def test_fp32_matches_torch_on_odd_lengths_and_batches(built: Built) -> None:
    worst = 0.0
    for i, n in enumerate(ODD_LENGTHS):
        x = speechlike(n, 100 + i)[None]
        for want, got in zip(torch_probabilities(built.student, x), run(built.folder / "model.fp32.onnx", x),
                             strict=True):
            worst = max(worst, float(np.max(np.abs(want - got))))
            np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    batch = np.stack([speechlike(16001, 200 + i) * (0.2 + 0.4 * i) for i in range(3)])
    for want, got in zip(torch_probabilities(built.student, batch), run(built.folder / "model.fp32.onnx", batch),
                         strict=True):
        worst = max(worst, float(np.max(np.abs(want - got))))
    print(f"max |torch - ORT| = {worst:.2e}")
    assert worst <= 1e-4
    assert check_parity(built.student, built.folder / "model.fp32.onnx", [speechlike(n, 7) for n in ODD_LENGTHS]) \
        <= 1e-4


def test_the_parity_check_catches_a_different_model(built: Built) -> None:
    other = copy.deepcopy(built.student)
    head = other.heads[0]
    assert isinstance(head, torch.nn.Linear)
    with torch.no_grad():
        head.bias[1] += 0.5  # (a shift of every logit would not change the softmax)
    with pytest.raises(BundleError, match="ONNX Runtime differs from torch by"):
        check_parity(other, built.folder / "model.fp32.onnx", [speechlike(16000, 1)])


def test_streaming_graph_matches_whole_utterance_torch(built: Built) -> None:
    stream = manifest(built)["streaming"]
    assert stream["chunk_multiple"] == 320 and stream["input"] == "chunk"
    assert [s["input"] for s in stream["states"]][:2] == ["state_audio", "state_block0"]
    spec = StreamSpec(stream["chunk_multiple"], tuple(stream["outputs"]), tuple(stream["states"]))
    worst = check_stream_parity(built.student, built.folder / "model_stream.onnx", spec,
                                [speechlike(n, 300 + i) for i, n in enumerate(ODD_LENGTHS * 2)])
    assert worst <= 1e-4


def test_int8_keeps_the_frontend_in_float(built: Built) -> None:
    model = onnx.load(str(built.folder / "model.onnx"))
    producers = {out: node for node in model.graph.node for out in node.output}
    front = set(frontend_nodes(model))
    ops = {n.name: n.op_type for n in model.graph.node if n.name in front}
    # the DFT conv, power, mel matmul and log, and the nodes that build the kernels and the mel matrix
    assert {"Conv", "Mul", "Add", "MatMul", "Log", "Cos", "Sin", "Mod", "Min"} <= set(ops.values())
    assert "DequantizeLinear" not in ops.values() and "Relu" not in ops.values()
    for node in model.graph.node:
        fed_by_dq = any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in node.input)
        if node.name in front:
            assert not fed_by_dq, f"frontend node {node.name} ({node.op_type}) was quantized"
    network_convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name not in front]
    assert network_convs and all(
        any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)
        for n in network_convs)


def largest_constant(model: onnx.ModelProto) -> int:
    """Elements of the largest initializer or Constant node tensor in the graph."""
    sizes = [int(np.prod(t.dims)) for t in model.graph.initializer]
    sizes += [int(np.prod(a.t.dims)) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
              if a.type == onnx.AttributeProto.TENSOR]
    return max(sizes, default=0)


def test_default_student_exports_small(tmp_path: Path) -> None:
    """The frontend's DFT kernels (2 x 128 x 512 floats) are built in the graph, not stored: the default
    student for examples/lights.yaml fits the 250 KB int8 budget (it was 720 KB int8, 820 KB fp32)."""
    layout = HeadLayout.from_context(parse_context((ROOT / "examples" / "lights.yaml").read_text()))
    torch.manual_seed(2)
    student = Student(head_sizes(layout), StudentConfig()).eval()
    fp32 = export_model(student, tmp_path / "model.fp32.onnx", layout)
    int8 = quantize_model(fp32, tmp_path / "model.onnx", mode="static",
                          calibration_clips=[speechlike(8000, 60), speechlike(16000, 61)])
    sizes = {p.name: p.stat().st_size for p in (fp32, int8)}
    print(f"sizes: {sizes}")
    assert sizes["model.onnx"] <= 250_000 and sizes["model.fp32.onnx"] <= 300_000
    for path in (fp32, int8):
        assert largest_constant(onnx.load(str(path))) <= MAX_CONSTANT
    assert check_parity(student, fp32, [speechlike(23457, 62)]) <= 1e-4


def test_streaming_graph_stores_no_large_constant(built: Built) -> None:
    assert largest_constant(onnx.load(str(built.folder / "model_stream.onnx"))) <= MAX_CONSTANT


def test_int8_agreement_with_fp32(built: Built, tmp_path: Path) -> None:
    """Reported, not tuned: static and dynamic int8 vs fp32 on 20 fresh clips of a random student."""
    dynamic = quantize_model(built.folder / "model.fp32.onnx", tmp_path / "dynamic.onnx", mode="dynamic")
    clips = [speechlike(8000 + 977 * i, 400 + i) for i in range(20)]
    layout = built.layout
    for path in (built.folder / "model.onnx", dynamic):
        same, worst = 0, 0.0
        for clip in clips:
            want = run(built.folder / "model.fp32.onnx", clip[None])
            got = run(path, clip[None])
            worst = max(worst, *(float(np.max(np.abs(w - g))) for w, g in zip(want, got, strict=True)))
            a = decode(layout, want[0][0], [p[0] for p in want[1:]])
            b = decode(layout, got[0][0], [p[0] for p in got[1:]])
            same += (a.intent, a.slots) == (b.intent, b.slots)
        print(f"{path.name}: same decision on {same}/{len(clips)}, max |Δp| = {worst:.3f}")
        assert same >= 0.8 * len(clips) and worst < 0.15


def test_weight_only_int8_stores_int8_weights_and_keeps_activations_float(built: Built, tmp_path: Path) -> None:
    """``quantize='weights'``: every network Conv/MatMul/Gemm weight is int8 behind a per-channel
    DequantizeLinear, the frontend and the activations stay float (no QuantizeLinear), the file is as small as
    the static model's, and its outputs stay within a weight rounding's error of fp32."""
    fp32 = built.folder / "model.fp32.onnx"
    path = quantize_model(fp32, tmp_path / "weights.onnx", mode="weights")
    model = onnx.load(str(path))
    producers = {out: node for node in model.graph.node for out in node.output}
    inits = {t.name: t for t in model.graph.initializer}
    front = set(frontend_nodes(model))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" not in ops
    quantized = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        dq = producers.get(node.input[1])
        if node.name in front:
            assert dq is None or dq.op_type != "DequantizeLinear", f"frontend node {node.op_type} was quantized"
            continue
        assert dq is not None and dq.op_type == "DequantizeLinear", f"{node.op_type} weight is not int8"
        assert inits[dq.input[0]].data_type == onnx.TensorProto.INT8
        scale = onnx.numpy_helper.to_array(inits[dq.input[1]])
        assert scale.ndim == 1 and len(scale) == inits[dq.input[0]].dims[dq.attribute[0].i]  # one per channel
        quantized += 1
    assert quantized >= 10
    assert not optimized_ops(path, tmp_path) & set(INTEGER_OPS)  # what runs is float arithmetic
    sizes = {p.name: p.stat().st_size for p in (fp32, built.folder / "model.onnx", path)}
    print(f"sizes: {sizes}")
    # (the graph structure is a third of this 16-channel student's file; a random 96-channel student's
    # weight-only file was 0.32 x its fp32)
    assert sizes["weights.onnx"] <= 1.05 * sizes["model.onnx"] and sizes["weights.onnx"] < 0.75 * sizes["model.fp32.onnx"]
    worst_weights = worst_static = 0.0
    for i in range(6):
        clip = speechlike(8000 + 1531 * i, 700 + i)[None]
        want = run(fp32, clip)
        weights, static = run(path, clip), run(built.folder / "model.onnx", clip)
        worst_weights = max(worst_weights, *(float(np.max(np.abs(w - g))) for w, g in zip(want, weights, strict=True)))
        worst_static = max(worst_static, *(float(np.max(np.abs(w - g))) for w, g in zip(want, static, strict=True)))
    print(f"max |dp| weights {worst_weights:.2g}, static {worst_static:.2g}")
    assert worst_weights < 0.02 and worst_weights < worst_static


def optimized_ops(model: onnx.ModelProto | Path, tmp_path: Path) -> set[str]:
    """The op types ONNX Runtime runs for ``model`` once it has optimized the graph (default session options)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}


def test_quantize_weights_keeps_the_arithmetic_float(tmp_path: Path) -> None:
    """A hand-made graph of torch-style Linears (Gemm, weight [out, in], transB 1): Gemm(x, A) (A quantized per
    output row), then Gemm(h, B) twice, once by an excluded node, a Gemm(h, C) with C as [in, out] and
    MatMul(h, D). B, C and D stay float (ONNX Runtime would run DequantizeLinear -> the last two as MatMulNBits,
    in integers). A's int8 copy is within half a step of A, and ONNX Runtime computes every output in float."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a, b, c, d = (rng.standard_normal(shape).astype(np.float32) for shape in ((3, 4), (2, 3), (3, 2), (3, 2)))
    bias_a, bias_b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "A", "a"], ["h"], name="first", transB=1),
         helper.make_node("Gemm", ["h", "B", "b"], ["y"], name="kept", transB=1),
         helper.make_node("Gemm", ["h", "B", "b"], ["z"], name="excluded", transB=1),
         helper.make_node("Gemm", ["h", "C", "b"], ["v"], name="in_out"),
         helper.make_node("MatMul", ["h", "D"], ["w"], name="matmul")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in ("y", "z", "v", "w")],
        [numpy_helper.from_array(t, n) for t, n in ((a, "A"), (b, "B"), (c, "C"), (d, "D"), (bias_a, "a"),
                                                      (bias_b, "b"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    quantized, count = quantize_weights(model, ["excluded"])
    assert count == 1
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    assert {"B", "C", "D"} <= set(inits) and "A" not in inits and inits["A_q"].dtype == np.int8
    scale = np.abs(a).max(axis=1) / 127.0  # one per output row of A
    np.testing.assert_allclose(inits["A_scale"], scale, rtol=1e-6)
    assert np.all(np.abs(inits["A_q"] * scale[:, None] - a) <= scale[:, None] / 2 + 1e-7)
    assert not optimized_ops(quantized, tmp_path) & set(INTEGER_OPS)
    x = rng.standard_normal((1, 4)).astype(np.float32)
    session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    y, z, v, w = session.run(None, {"x": x})
    h = x @ (inits["A_q"] * scale[:, None]).T + bias_a
    np.testing.assert_allclose(y, z)
    for got, want in ((y, h @ b.T + bias_b), (v, h @ c + bias_b), (w, h @ d)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_manifest_agreement_counts_every_calibration_clip(built: Built) -> None:
    """Samples (4), all 8 calibration clips and 3 odd crops: not only the 4 clips the torch parity check runs."""
    metrics = manifest(built)["metrics"]
    assert metrics["int8_fp32_agreement_clips"] == 4 + 8 + 3
    assert 0.0 <= metrics["int8_fp32_agreement"] <= 1.0


def test_compact_names_keeps_the_graph_and_shrinks_the_file(built: Built, tmp_path: Path) -> None:
    """quantize_model writes short internal names: same outputs as the quantizer's own long-named graph."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from distill.export import QUANTIZED_OPS, ClipReader, compact_names, output_names

    fp32 = built.folder / "model.fp32.onnx"
    calib = [speechlike(8000, 60), speechlike(16000, 61)]
    raw = tmp_path / "raw.onnx"
    quantize_static(fp32, raw, ClipReader(calib), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=frontend_nodes(onnx.load(str(fp32))), op_types_to_quantize=list(QUANTIZED_OPS))
    ours = quantize_model(fp32, tmp_path / "model.onnx", mode="static", calibration_clips=calib)
    model = onnx.load(str(ours))
    onnx.checker.check_model(model)
    assert not model.graph.value_info
    assert all(n.name.startswith("n") and len(n.name) <= 5 for n in model.graph.node)
    assert [v.name for v in model.graph.input] == [v.name for v in onnx.load(str(raw)).graph.input]
    assert [v.name for v in model.graph.output] == output_names(built.layout)
    assert ours.stat().st_size < 0.9 * raw.stat().st_size
    for i in range(3):
        clip = speechlike(7000 + 3001 * i, 70 + i)[None]
        for a, b in zip(run(raw, clip), run(ours, clip), strict=True):
            assert np.array_equal(a, b)
    with pytest.raises(BundleError, match="subgraph"):
        graph = onnx.helper.make_graph([], "g", [], [])
        node = onnx.helper.make_node("If", ["c"], ["y"], then_branch=graph, else_branch=graph)
        compact_names(onnx.helper.make_model(onnx.helper.make_graph([node], "m", [], [])))


def test_quantize_validates_its_arguments(built: Built, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="quantize: expected one of static, dynamic, weights, none, got 'int4'"):
        quantize_model(built.folder / "model.fp32.onnx", tmp_path / "x.onnx", mode="int4")
    with pytest.raises(ConfigError, match="needs calibration clips"):
        quantize_model(built.folder / "model.fp32.onnx", tmp_path / "x.onnx", mode="static")


def test_load_student_from_a_distillation_checkpoint(built: Built, tmp_path: Path) -> None:
    """distill/distillation.py trains a MelStudent wrapper: its weights are prefixed ``student.``."""
    config = {"kind": "student", "head_sizes": head_sizes(built.layout), "student": built.student.cfg.to_dict(),
              "layout": built.layout.to_dict()}
    weights = {f"student.{k}": v for k, v in built.student.state_dict().items()}
    torch.save({"model": weights, "model_config": config}, tmp_path / "best.pt")
    student, layout = load_student(tmp_path / "best.pt")
    assert layout == built.layout
    x = speechlike(12345, 9)[None]
    for a, b in zip(torch_probabilities(student, x), torch_probabilities(built.student, x), strict=True):
        np.testing.assert_array_equal(a, b)
    torch.save({"model": {}, "model_config": {"kind": "teacher"}}, tmp_path / "teacher.pt")
    with pytest.raises(BundleError, match="expected a student checkpoint"):
        load_student(tmp_path / "teacher.pt")


_HUB = BLOCK_TORCH + """
import json, sys
from assistant.bundle import load_bundle
from assistant.errors import BundleError
from assistant.recognizer import Recognizer
from assistant.wav import read_wav

for folder in sys.argv[1:]:
    try:
        bundle = load_bundle(folder)
    except BundleError as err:
        print(json.dumps({"refused": str(err)}))
        continue
    int8, fp32 = Recognizer(bundle), Recognizer(bundle, reference=True)
    for sample in bundle.manifest.samples:
        audio = read_wav(bundle.path / sample.audio.file)
        probs = fp32.session.run(None, {"audio": audio[None]})
        print(json.dumps({"file": sample.audio.file, "int8": int8.recognize(audio).to_dict(),
                          "fp32": fp32.recognize(audio).to_dict(), "fp32_probs": [p[0].tolist() for p in probs]}))
assert not any(m.split(".")[0] in ("torch", "torchaudio") for m in sys.modules)
"""


def test_the_hub_runs_the_bundle_without_torch_and_refuses_tampering(built: Built, tmp_path: Path) -> None:
    """The issue's "done when": the bundle loads in a process where torch cannot be imported, makes the
    decisions torch makes, and a tampered model or a mismatched manifest is refused."""
    tampered = tmp_path / "tampered"
    shutil.copytree(built.folder, tampered)
    blob = bytearray((tampered / "model.onnx").read_bytes())
    blob[-100] ^= 0xFF
    (tampered / "model.onnx").write_bytes(bytes(blob))
    mismatched = tmp_path / "mismatched"
    shutil.copytree(built.folder, mismatched)
    data = manifest(built)
    data["model"]["outputs"] = ["intent", "slot_room", "slot_state"]
    (mismatched / "manifest.json").write_text(json.dumps(data))

    done = subprocess.run([sys.executable, "-c", _HUB, str(built.folder), str(tampered), str(mismatched)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    results, refusals = lines[:-2], lines[-2:]
    assert len(results) == 4
    agree = 0
    for line in results:
        audio = read_wav(built.folder / line["file"])
        want = torch_probabilities(built.student, audio[None])
        for w, got in zip(want, line["fp32_probs"], strict=True):
            np.testing.assert_allclose(got, w[0], atol=1e-4)
        torch_decision = decode(built.layout, want[0][0], [p[0] for p in want[1:]])
        assert (line["fp32"]["intent"], line["fp32"]["slots"]) == (torch_decision.intent, torch_decision.slots)
        agree += (line["int8"]["intent"], line["int8"]["slots"]) == (torch_decision.intent, torch_decision.slots)
    print(f"int8 decisions equal torch fp32 on {agree}/{len(results)} samples")
    assert agree >= len(results) // 2 + 1
    assert "model.onnx: sha256" in refusals[0]["refused"] and "differs from the manifest" in refusals[0]["refused"]
    assert "graph outputs are ['intent', 'slot_state', 'slot_room'], the manifest says ['intent', 'slot_room'" \
        in refusals[1]["refused"]


def test_write_bundle_checks_expectations_and_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "context.yaml").write_text(CONTEXT)
    layout = HeadLayout.from_context(parse_context(CONTEXT))
    torch.manual_seed(1)
    student = Student(head_sizes(layout), StudentConfig(channels=8, dilations=(1,), frontend=FrontendConfig()))
    wrong = {"understood": True, "intent": "music", "slots": {"room": "kitchen"}}
    out = tmp_path / "models" / "broken"
    with pytest.raises(BundleError, match=r"sample samples/00_music\.wav: the fp32 model decides .* expected .*music"):
        write_bundle(out, student=student, layout=layout, context_path=tmp_path / "context.yaml", threshold=1.0,
                     samples=[(speechlike(16000, 1), wrong)], quantize="none")
    assert list((tmp_path / "models").iterdir()) == []
    # drop_mismatched leaves such a sample out (threshold 1.0: the model understands nothing)
    with pytest.raises(BundleError, match="none of the 1 samples is decided as expected"):
        write_bundle(out, student=student, layout=layout, context_path=tmp_path / "context.yaml", threshold=1.0,
                     samples=[(speechlike(16000, 1), wrong)], quantize="none", drop_mismatched=True)
    rejected = {"understood": False, "intent": None, "slots": {}}
    kept = write_bundle(out, student=student, layout=layout, context_path=tmp_path / "context.yaml", threshold=1.0,
                        samples=[(speechlike(16000, 1), wrong), (speechlike(16000, 2), rejected)], quantize="none",
                        drop_mismatched=True)
    assert [s.audio.file for s in load_bundle(kept).manifest.samples] == ["samples/01_not_understood.wav"]
    assert sorted(p.name for p in (kept / "samples").iterdir()) == ["01_not_understood.wav"]
    shutil.rmtree(kept)
    other = HeadLayout(("__not_understood__", "lights"), (), {})
    with pytest.raises(BundleError, match="the layout does not match the context"):
        write_bundle(out, student=student, layout=other, context_path=tmp_path / "context.yaml", threshold=0.5,
                     samples=[(speechlike(16000, 1), None)])
    with pytest.raises(ConfigError, match="quantize: expected one of static, dynamic, weights, none"):
        write_bundle(out, student=student, layout=layout, context_path=tmp_path / "context.yaml", threshold=0.5,
                     samples=[(speechlike(16000, 1), None)], quantize="fp16")

"""Export a student to ONNX (whole-utterance and streaming graphs), check parity, quantize to int8.

The exported graphs take raw 16 kHz PCM: the log-mel frontend is inside (DESIGN.md), so
the hub never re-implements it. Outputs are per-head **probabilities** (softmax in the
graph): ``intent`` and ``slot_<name>`` per slot head, in :class:`HeadLayout` order, then, for a
student with a phone CTC head (:meth:`Student.attach_ctc`), ``ctc``: per-step log-probabilities
``[batch, steps, 1 + units]`` that the hub decodes through the context's grammar (the streaming
graph gives the chunk's steps).

- :func:`export_model`: ``audio [batch, samples]`` -> probabilities (dynamic batch and time).
- :func:`export_stream_model`: ``chunk [batch, k * chunk_multiple]`` + the state tensors ->
  probabilities for everything heard so far + the new state (:class:`StreamingStudent`).
- :func:`quantize_model`: static int8 (QDQ, calibrated on clips), dynamic int8, or int8 weights with float
  activations (:func:`quantize_weights`), with the frontend (DFT conv, power, mel matmul, log) kept in float.

Exports go through wrapper modules (never monkeypatching) with the dynamo exporter at
:data:`OPSET`, weights embedded (one file, no ``*.onnx.data``). ``quant_pre_process`` is
not used: its symbolic shape inference fails on these graphs (DESIGN.md). ORT's offline
graph optimization is not applied either: ORT runs the same optimizations when a session
loads, and a saved optimized graph can hold device-specific ops, so it gains nothing
portable here.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Importing onnxruntime.quantization appends onnxruntime/transformers to sys.path, and that folder
# holds a `models` namespace package that would shadow hubvoice's `models` (the zoo) in an editable
# install. Importing ours first keeps it in sys.modules.
import models  # noqa: F401  # isort: skip
import numpy as np
import onnx
import onnxruntime as ort
import onnxscript.optimizer
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from torch import nn

from assistant.decode import HeadLayout
from assistant.errors import BundleError, ConfigError
from distill.nets.student import StreamingStudent, Student, StudentConfig
from distill.train import load_checkpoint

_LOGGER = logging.getLogger(__name__)

OPSET = 18
"""ONNX opset of every exported graph."""
AUDIO_INPUT = "audio"
"""Input of the whole-utterance graph: float32 PCM ``[batch, samples]`` at 16 kHz."""
CTC_OUTPUT = "ctc"
"""Per-step CTC log-probabilities, blank first (students with a CTC head)."""
CHUNK_INPUT = "chunk"
"""Audio input of the streaming graph: ``[batch, k * chunk_multiple]``."""
MIN_SAMPLES = 1600
"""Shortest input the graphs are exported for (0.1 s); the hub pads shorter audio to this."""
MAX_EXPORT_SAMPLES = 16000 * 3600
"""Upper bound of the dynamic time axis (the manifest sets the practical maximum)."""
QUANTIZE_MODES = ("static", "dynamic", "weights", "none")
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
"""Op types int8 quantization touches (outside the frontend); BatchNormalization, Relu, Add stay float."""
FOLD_LIMIT = 1024
"""Export-time constant folding may create a constant of more elements than this only by removing
inputs at least as large: the frontend's DFT kernels and mel matrix stay generated in the graph."""
_STATE_NAMES = ("audio", "score_max", "weight_sum", "weighted_sum", "max_pool")


def output_names(layout: HeadLayout) -> list[str]:
    """``intent``, then ``slot_<name>`` for each slot head, in head order (the heads' outputs)."""
    return ["intent", *(f"slot_{name}" for name in layout.slot_names)]


def graph_outputs(student: Student, layout: HeadLayout) -> list[str]:
    """The heads' outputs, then :data:`CTC_OUTPUT` if the student has a CTC head."""
    return [*output_names(layout), *([CTC_OUTPUT] if student.ctc_head is not None else [])]


def head_sizes(layout: HeadLayout) -> list[int]:
    return [len(layout.intents), *(len(values) for _, values in layout.slots)]


class ProbabilityModel(nn.Module):
    """The whole-utterance graph: raw PCM -> softmax probabilities per head."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, feats = self.student.forward_features(audio)
        probs = tuple(torch.softmax(x, dim=-1) for x in logits)
        if self.student.ctc_head is None:
            return probs
        return (*probs, self.student.ctc_log_probs(feats))


class StreamingProbabilityModel(nn.Module):
    """The streaming graph: (chunk, *state) -> (*probabilities, *new state)."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.stream = StreamingStudent(student)

    def forward(self, chunk: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, new_state, frames = self.stream.step_frames(chunk, list(state))
        probs = tuple(torch.softmax(x, dim=-1) for x in logits)
        student = self.stream.student
        ctc = (student.ctc_log_probs(frames.transpose(1, 2)),) if student.ctc_head is not None else ()
        return (*probs, *ctc, *new_state)


@dataclass(frozen=True)
class StreamSpec:
    """What the hub needs to run the streaming graph (written into the manifest)."""

    chunk_multiple: int
    """Chunks must hold a multiple of this many samples (frontend hop x stem stride)."""
    outputs: tuple[str, ...]
    """Probability outputs, as in the whole-utterance graph."""
    states: tuple[dict[str, Any], ...]
    """Per state tensor: ``input``, ``output`` (its next value), ``shape`` (without batch), ``init``."""
    ctc_output: str | None = None
    """The chunk's per-step CTC log-probabilities (after the probabilities, before the states), if any."""

    def to_dict(self) -> dict[str, Any]:
        return {"input": CHUNK_INPUT, "chunk_multiple": self.chunk_multiple, "outputs": list(self.outputs),
                "states": [dict(s) for s in self.states], "ctc_output": self.ctc_output}


def state_names(student: Student) -> list[str]:
    """Names of the streaming state inputs (the outputs add ``_out``)."""
    blocks = [f"state_block{i}" for i in range(len(student.blocks))]
    return [f"state_{_STATE_NAMES[0]}", *blocks, *(f"state_{n}" for n in _STATE_NAMES[1:])]


def can_stream(student: Student) -> bool:
    cfg = student.cfg.frontend
    return cfg.padding == "causal" and cfg.normalize == "none" and student.cfg.causal


def load_student(path: str | os.PathLike[str], lexicon: Mapping[str, Any] | None = None) -> tuple[Student, HeadLayout]:
    """A student and its head layout from a training checkpoint (``torch.load(weights_only=True)``), with
    its phone CTC head attached when the checkpoint has one and the lexicon it spells in (``lexicon``: for a
    checkpoint saved without one)."""
    ckpt = load_checkpoint(Path(path))
    config = ckpt.get("model_config") or {}
    if config.get("kind") != "student":
        raise BundleError(f"{path}: expected a student checkpoint (model_config.kind 'student'), "
                          f"got {config.get('kind')!r}")
    student = Student(config["head_sizes"], StudentConfig.from_dict(config["student"]))
    state = {k.removeprefix("student."): v for k, v in ckpt["model"].items()}
    student.load_state_dict(state)
    lexicon, head_state = config.get("ctc_lexicon") or lexicon, ckpt.get("ctc_head")
    if lexicon and head_state:
        classes, channels = head_state["weight"].shape
        if classes != len(lexicon["units"]) + 1:
            raise BundleError(f"{path}: the CTC head has {classes} classes, its lexicon {len(lexicon['units'])} "
                              f"units + blank")
        head = nn.Linear(channels, classes)
        head.load_state_dict(head_state)
        student.attach_ctc(head.eval(), lexicon)
    return student.eval(), HeadLayout.from_dict(config["layout"])


def _frozen(student: Student) -> Student:
    model = copy.deepcopy(student).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class _QuietQuantization(logging.Filter):
    """Drops onnxruntime.quantization's advice (it logs on the root logger) to run quant_pre_process,
    which fails on these graphs (DESIGN.md); errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


def _export(module: nn.Module, args: tuple[Any, ...], path: Path, inputs: list[str], outputs: list[str],
            dynamic_shapes: tuple[Any, ...]) -> Path:
    """Export with the dynamo exporter, then run onnxscript's optimizer with :data:`FOLD_LIMIT` and save one file.

    The exporter's own optimizer pass (``optimize=True``) would fold the frontend's in-graph DFT
    kernels back into a ~0.5 MB constant; with the limit, folding never creates a constant larger
    than what it replaces, and ONNX Runtime folds that subgraph when a session loads instead.
    Node metadata (exporter stack traces and FX nodes, ~40% of a small model) is dropped.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    quiet_exporter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        program = torch.onnx.export(module.eval(), args, None, dynamo=True, opset_version=OPSET,
                                     input_names=inputs, output_names=outputs, dynamic_shapes=dynamic_shapes,
                                     optimize=False, verbose=False)
    if program is None:
        raise BundleError(f"{path}: torch.onnx.export returned no program")
    onnxscript.optimizer.optimize(program.model, output_size_limit=FOLD_LIMIT)
    return save_one_file(program, path)


def quiet_exporter() -> None:
    """Silence what the dynamo exporter logs on every export: onnxscript's rewrite passes and
    "torchvision is not installed. Skipping torchvision::nms" and the like."""
    for name in ("onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def save_one_file(program: Any, path: Path, error: type[Exception] = BundleError) -> Path:
    """Save an exported ONNX program as one file without node metadata (exporter stack traces);
    ``error`` if the exporter still wrote the weights to a separate ``*.onnx.data``."""
    for node in program.model.graph.all_nodes():
        node.metadata_props.clear()
    program.save(str(path), external_data=False)
    stray = path.with_name(path.name + ".data")
    if stray.exists():
        stray.unlink()
        raise error(f"{path}: the exporter wrote external weights ({stray.name}); a model must be one file")
    return path


def export_model(student: Student, path: str | os.PathLike[str], layout: HeadLayout) -> Path:
    """Write the whole-utterance graph (``audio`` -> probabilities) to ``path``."""
    model = _frozen(student)
    if list(model.head_sizes) != head_sizes(layout):
        raise BundleError(f"student heads {list(model.head_sizes)} do not match the layout {head_sizes(layout)}")
    batch = torch.export.Dim("batch", min=1, max=4096)
    samples = torch.export.Dim("samples", min=MIN_SAMPLES, max=MAX_EXPORT_SAMPLES)
    example = torch.randn(2, 16000) * 0.1  # batch 2: size-1 axes would be specialized
    return _export(ProbabilityModel(model), (example,), Path(path), [AUDIO_INPUT], graph_outputs(model, layout),
                   ({0: batch, 1: samples},))


def export_stream_model(student: Student, path: str | os.PathLike[str], layout: HeadLayout) -> StreamSpec:
    """Write the streaming graph to ``path``; returns what the manifest records about it."""
    model = _frozen(student)
    wrapper = StreamingProbabilityModel(model)
    multiple = wrapper.stream.chunk_multiple
    state = wrapper.stream.initial_state(2)
    names = state_names(model)
    batch = torch.export.Dim("batch", min=1, max=4096)
    steps = torch.export.Dim("steps", min=1, max=MAX_EXPORT_SAMPLES // multiple)
    chunk = torch.randn(2, 2 * multiple) * 0.1
    outputs = output_names(layout)
    ctc = [CTC_OUTPUT] if model.ctc_head is not None else []
    _export(wrapper, (chunk, *state), Path(path), [CHUNK_INPUT, *names],
            [*outputs, *ctc, *(f"{n}_out" for n in names)],
            ({0: batch, 1: multiple * steps}, tuple({0: batch} for _ in state)))
    specs = []
    for name, tensor in zip(names, state, strict=True):
        init = float(tensor.flatten()[0])
        if not torch.all(tensor == init):
            raise BundleError(f"streaming state {name}: initial value is not constant")
        specs.append({"input": name, "output": f"{name}_out", "shape": list(tensor.shape[1:]), "init": init})
    return StreamSpec(multiple, tuple(outputs), tuple(specs), CTC_OUTPUT if ctc else None)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def torch_probabilities(student: Student, audio: np.ndarray) -> list[np.ndarray]:
    """Probabilities per head for a ``[batch, samples]`` array, from the torch model in eval mode (then the
    CTC log-probabilities, if the student has a CTC head: the exported graph's outputs)."""
    model = _frozen(student)
    return [p.numpy() for p in ProbabilityModel(model)(torch.from_numpy(np.asarray(audio, np.float32)))]


def check_parity(student: Student, path: str | os.PathLike[str], clips: Sequence[np.ndarray], *,
                 atol: float = 1e-4) -> float:
    """Largest |torch - ORT| probability difference over ``clips`` (run one by one); raises above ``atol``."""
    session = _session(Path(path))
    worst = 0.0
    for clip in clips:
        x = np.asarray(clip, np.float32)[None]
        expected = torch_probabilities(student, x)
        got = session.run(None, {AUDIO_INPUT: x})
        worst = max(worst, _difference(student, expected, got))
    if worst > atol:
        raise BundleError(f"{path}: ONNX Runtime differs from torch by {worst:.2e} (> {atol:.0e})")
    _LOGGER.info("Parity %s: max |torch - ORT| = %.2e over %d clips", Path(path).name, worst, len(clips))
    return worst


def _difference(student: Student, expected: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    """Largest |a - b| over the outputs, comparing CTC log-probabilities as probabilities (float32 log-probs
    of -30 differ by more than 1e-4 between any two engines; what the decoder uses is their ordering)."""
    if len(expected) != len(got):
        raise BundleError(f"torch gives {len(expected)} outputs, ONNX Runtime {len(got)}")
    heads = len(student.head_sizes)
    diffs = [float(np.max(np.abs(e - g))) for e, g in zip(expected[:heads], got[:heads], strict=True)]
    diffs += [float(np.max(np.abs(np.exp(e) - np.exp(g)))) for e, g in zip(expected[heads:], got[heads:], strict=True)]
    return max(diffs)


def run_stream(session: ort.InferenceSession, spec: StreamSpec, audio: np.ndarray, chunk: int) -> list[np.ndarray]:
    """Probabilities after feeding ``audio`` (1-D) to a streaming session ``chunk`` samples at a time, then (if the
    graph has them) the CTC log-probabilities of every step, all chunks joined: ``[1, steps, 1 + units]``."""
    if chunk % spec.chunk_multiple:
        raise ValueError(f"chunk {chunk}: expected a multiple of {spec.chunk_multiple}")
    state = {s["input"]: np.full((1, *s["shape"]), s["init"], np.float32) for s in spec.states}
    usable = len(audio) - len(audio) % spec.chunk_multiple
    out: list[np.ndarray] = []
    n = len(spec.outputs) + bool(spec.ctc_output)
    ctc = []
    for start in range(0, usable, chunk):
        piece = np.asarray(audio[start : min(start + chunk, usable)], np.float32)[None]
        out = session.run(None, {CHUNK_INPUT: piece, **state})
        state = {s["input"]: value for s, value in zip(spec.states, out[n:], strict=True)}
        ctc += out[len(spec.outputs) : n]
    return [*out[: len(spec.outputs)], *([np.concatenate(ctc, axis=1)] if ctc else [])]


def check_stream_parity(student: Student, path: str | os.PathLike[str], spec: StreamSpec,
                        clips: Sequence[np.ndarray], *, atol: float = 1e-4) -> float:
    """Largest difference between torch whole-utterance probabilities and the ONNX stream's final ones."""
    session = _session(Path(path))
    worst = 0.0
    for i, clip in enumerate(clips):
        usable = len(clip) - len(clip) % spec.chunk_multiple
        expected = torch_probabilities(student, np.asarray(clip[:usable], np.float32)[None])
        chunk = spec.chunk_multiple * (1 + i % 7)  # vary the chunking
        got = run_stream(session, spec, clip, chunk)
        worst = max(worst, _difference(student, expected, got))
    if worst > atol:
        raise BundleError(f"{path}: streaming ONNX differs from whole-utterance torch by {worst:.2e} (> {atol:.0e})")
    return worst


def frontend_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the frontend's nodes in an ONNX graph: the ``Log`` of the log-mel and all its ancestors.

    That is the DFT convolution, the power spectrum, the mel matmul and the log: they stay in
    float (a power spectrum spans ~10 orders of magnitude, far beyond 8 bits).
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    logs = [node for node in model.graph.node if node.op_type == "Log"]
    if len(logs) != 1:
        raise BundleError(f"expected one Log node (the log-mel frontend) in the graph, found {len(logs)}")
    todo, names = [logs[0]], set()
    while todo:
        node = todo.pop()
        if node.name in names:
            continue
        names.add(node.name)
        todo.extend(producers[i] for i in node.input if i in producers)
    return sorted(names)


class ClipReader(CalibrationDataReader):
    """Calibration data for ``quantize_static``: one ``{input: clip[None]}`` per clip."""

    def __init__(self, clips: Sequence[np.ndarray], input_name: str = AUDIO_INPUT) -> None:
        self.input_name = input_name
        self.clips = [self._prepare(c) for c in clips]
        self._iter: Iterator[np.ndarray] = iter(self.clips)

    @staticmethod
    def _prepare(clip: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(np.asarray(clip, np.float32).reshape(-1))
        return np.pad(x, (0, max(0, MIN_SAMPLES - len(x))))

    def get_next(self) -> dict[str, np.ndarray] | None:
        clip = next(self._iter, None)
        return None if clip is None else {self.input_name: clip[None]}

    def rewind(self) -> None:
        self._iter = iter(self.clips)


def compact_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with short internal names: every node and inner tensor renamed ``n<i>``/``t<i>``.

    Quantization names each new tensor after its source weight plus a suffix
    (``student.blocks.7.pointwise.weight_bias_DequantizeLinear`` ...): in a 70k-parameter int8
    model those strings and the intermediate ``value_info`` are a third of the file. Graph
    inputs and outputs keep their names (the manifest names them); ``value_info`` is dropped
    (ONNX Runtime infers shapes at load). Subgraphs are not expected here and are refused.
    """
    g = model.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    rename: dict[str, str] = {}

    def new_name(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in rename:
            rename[name] = f"t{len(rename)}"
        return rename[name]

    for t in g.initializer:
        t.name = new_name(t.name)
    for i, node in enumerate(g.node):
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise BundleError(f"compact_names: node {node.name!r} has a subgraph; not supported")
        node.name = f"n{i}"
        node.input[:] = [new_name(x) for x in node.input]
        node.output[:] = [new_name(x) for x in node.output]
    del g.value_info[:]
    return model


INTEGER_OPS = ("MatMulNBits", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear",
               "QuantizeLinear", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm")
"""Ops that compute in integers: a weight-only graph (:func:`quantize_weights`) must not run any of them once
ONNX Runtime has optimized it (tests/distill/test_export.py checks the optimized graph)."""


def _weight_axis(node: onnx.NodeProto) -> int | None:
    """The output-channel axis of ``node``'s weight (its input 1), or None where the weight stays float.

    ONNX Runtime (1.32) fuses ``DequantizeLinear`` -> ``MatMul`` into ``MatMulNBits``, which computes in
    integers, and a ``Gemm`` whose weight is ``[in, out]`` (``transB`` 0) too: those weights stay float (in the
    default student only the phone CTC head's 96 x 60, a MatMul). A Conv, and a Gemm with ``transB`` 1 (how
    torch exports a Linear: the heads), stay float ops with their weights dequantized."""
    if node.op_type == "Conv":
        return 0  # [out, in / groups, k...]
    if node.op_type == "Gemm" and next((a.i for a in node.attribute if a.name == "transB"), 0) == 1:
        return 0  # [out, in]
    return None


def quantize_weights(model: onnx.ModelProto, exclude: Sequence[str] = ()) -> tuple[onnx.ModelProto, int]:
    """``model`` with every constant float weight of a Conv or a ``[out, in]`` Gemm (outside ``exclude``; see
    :func:`_weight_axis`) stored as int8, symmetric per output channel, behind a ``DequantizeLinear``;
    activations and arithmetic stay float.

    Returns the new model and the number of weights quantized. The file is as small as a static int8 model's
    (the weights are most of it), but nothing is calibrated and no activation is rounded: the only error is
    each weight's rounding to 1/127 of its channel's largest magnitude.
    """
    model = copy.deepcopy(model)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    skip = set(exclude)
    frozen = {i for node in g.node if node.name in skip for i in node.input}  # an excluded node's weights stay float
    done: set[str] = set()
    dq_nodes: list[onnx.NodeProto] = []
    for node in g.node:
        axis = _weight_axis(node) if node.name not in skip else None
        if axis is None or node.input[1] in done or node.input[1] not in inits or node.input[1] in frozen:
            continue
        t = inits[node.input[1]]
        if t.data_type != onnx.TensorProto.FLOAT or len(t.dims) < 2:
            continue
        w = onnx.numpy_helper.to_array(t).astype(np.float32)
        peak = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        name = t.name
        g.initializer.remove(t)
        g.initializer.extend([onnx.numpy_helper.from_array(q, f"{name}_q"),
                              onnx.numpy_helper.from_array(scale, f"{name}_scale"),
                              onnx.numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}_zero")])
        dq_nodes.append(onnx.helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zero"],
                                              [name], name=f"{name}_dequantize", axis=axis))
        done.add(name)
    for i, dq in enumerate(dq_nodes):  # first: the graph stays topologically sorted
        g.node.insert(i, dq)
    return model, len(done)


def quantize_model(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, mode: str = "static",
                   calibration_clips: Sequence[np.ndarray] = ()) -> Path:
    """Quantize the whole-utterance graph to int8; the frontend stays float.

    ``static``: QDQ, weights int8 per channel (7 bits used), activations uint8 with ranges calibrated on
    ``calibration_clips`` (corpus clips in real use). ``dynamic``: int8 weights, activation
    ranges computed at run time (no calibration). ``weights``: int8 weights per channel, activations and
    arithmetic in float (:func:`quantize_weights`; no calibration). ``none``: a plain copy.
    """
    if mode not in QUANTIZE_MODES:
        raise ConfigError(f"quantize: expected one of {', '.join(QUANTIZE_MODES)}, got {mode!r}")
    src, dst = Path(fp32_path), Path(out_path)
    if mode == "none":
        dst.write_bytes(src.read_bytes())
        return dst
    if mode == "static" and not calibration_clips:
        raise ConfigError("quantize 'static' needs calibration clips (or use quantize='dynamic')")
    source = onnx.load(str(src))
    exclude = frontend_nodes(source)
    if mode == "weights":
        quantized, count = quantize_weights(source, exclude)
        onnx.save(compact_names(quantized), str(dst))
        _LOGGER.info("Quantized %s (weights only: %d weights int8, activations float)", dst.name, count)
        return dst
    quiet = _QuietQuantization()
    logging.getLogger().addFilter(quiet)
    try:
        if mode == "dynamic":
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                             op_types_to_quantize=list(QUANTIZED_OPS))
            onnx.save(compact_names(onnx.load(str(dst))), str(dst))
            _LOGGER.info("Quantized %s (dynamic, %d frontend nodes kept in float)", dst.name, len(exclude))
            return dst
        reader = ClipReader(calibration_clips)
        # reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2 only) ONNX Runtime's u8 x s8 kernels
        # add pairs of products in int16, which saturates with full-range weights: there the tiny test
        # bundle's int8 model decided 5 of 40 clips unlike fp32 (0 with 7-bit weights; docs/BENCHMARKS.md)
        quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        op_types_to_quantize=list(QUANTIZED_OPS))
    finally:
        logging.getLogger().removeFilter(quiet)
    onnx.save(compact_names(onnx.load(str(dst))), str(dst))
    _LOGGER.info("Quantized %s (%s, %d calibration clips, %d frontend nodes kept in float)",
                 dst.name, mode, len(reader.clips), len(exclude))
    return dst

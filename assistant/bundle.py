"""Model bundles on the hub: read the manifest, verify every file, self-test (numpy + onnxruntime, no torch).

A bundle is a folder (``models/<name>/``)::

    manifest.json       what the runtime needs (schema below), with a sha256 for every file it names
    model.onnx          raw 16 kHz PCM [batch, samples] -> probabilities per head (int8 by default)
    model_stream.onnx   optional: the same network on chunks, carrying its state
    lexicon.json        optional: how each word of the context is spelled in the units of the model's
                        CTC output, when the bundle decodes through the grammar (manifest ``decoder``)
    model.fp32.onnx     optional: the float reference model
    context.yaml        the context the model was trained for
    MODEL_CARD.md       what it is, how it was made, how well it does
    samples/*.wav       a few clips whose expected decisions the manifest records (the self-test)

:func:`load_bundle` refuses (with a :class:`BundleError` naming the file and the problem) a
bundle holding anything but ONNX, JSON, YAML, WAV and Markdown files, an unknown schema
version, a file whose sha256 differs from the manifest, a graph whose inputs, outputs or
label counts differ from the manifest, a head layout that does not match the context, a
lexicon that cannot spell a word of the context or whose units differ from the CTC output's
size, and a model that no longer makes the recorded decisions on its samples.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import onnxruntime as ort

from assistant import __version__
from assistant.context import Context, load_context
from assistant.decode import HeadLayout
from assistant.errors import BundleError, ContextError
from assistant.grammar import GrammarGraph, GrammarSettings, Lexicon, Scorer
from assistant.wav import SAMPLE_RATE

_LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""The manifest schema this hubvoice reads and writes."""
MANIFEST = "manifest.json"
ALLOWED_SUFFIXES = (".onnx", ".json", ".yaml", ".yml", ".wav", ".md")
"""The only kinds of file a bundle may hold (no pickles, no code)."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Reader:
    """Typed access to one object of the manifest; errors name the field."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, Mapping):
            raise BundleError(f"{source}: {where or 'the manifest'}: expected a JSON object, got {type(data).__name__}")
        self.data, self.where, self.source = data, where, source

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
        if key not in self.data or (optional and self.data[key] is None):
            if optional:
                return None
            raise BundleError(f"{self.source}: missing field '{self._name(key)}'")
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # JSON true is no int
            raise BundleError(f"{self.source}: field '{self._name(key)}': expected "
                              f"{' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__} {value!r}")
        return value

    def sub(self, key: str) -> _Reader:
        return _Reader(self.get(key, dict), self._name(key), self.source)

    def optional_sub(self, key: str) -> _Reader | None:
        value = self.get(key, dict, optional=True)
        return None if value is None else _Reader(value, self._name(key), self.source)

    def names(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list)
        if not all(isinstance(v, str) and v for v in values):
            raise BundleError(f"{self.source}: field '{self._name(key)}': expected a list of names, got {values!r}")
        return tuple(values)

    def file(self, key: str = "file") -> str:
        name = self.get(key, str)
        parts = PurePosixPath(name).parts
        if not name or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
            raise BundleError(f"{self.source}: field '{self._name(key)}': expected a path inside the bundle, "
                              f"got {name!r}")
        return name


@dataclass(frozen=True)
class FileRef:
    """A file of the bundle and its sha256."""

    file: str
    """Path relative to the bundle folder (POSIX separators)."""
    sha256: str
    """Hex sha256 of the file's bytes."""

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256}


@dataclass(frozen=True)
class StateSpec:
    """One state tensor of the streaming graph."""

    input: str
    """Graph input carrying the state in."""
    output: str
    """Graph output carrying its next value."""
    shape: tuple[int, ...]
    """Shape without the batch axis."""
    init: float
    """Value of every element at the start of an utterance."""


@dataclass(frozen=True)
class StreamingSpec:
    """The streaming graph: chunks of audio in, probabilities so far and the new state out."""

    model: FileRef
    """The streaming ONNX file."""
    input: str
    """The chunk input, float32 ``[batch, k * chunk_multiple]``."""
    chunk_multiple: int
    """Every chunk must hold a multiple of this many samples."""
    outputs: tuple[str, ...]
    """Probability outputs (as in the whole-utterance graph)."""
    states: tuple[StateSpec, ...]
    """The state tensors, in graph input order after the chunk."""
    precision: str = "fp32"
    """'fp32' or an int8 scheme."""
    ctc_output: str | None = None
    """The output with the chunk's per-step CTC log-probabilities, when the bundle decodes through the grammar."""

    def to_dict(self) -> dict[str, Any]:
        return {**self.model.to_dict(), "precision": self.precision, "input": self.input,
                "chunk_multiple": self.chunk_multiple, "outputs": list(self.outputs),
                "states": [{"input": s.input, "output": s.output, "shape": list(s.shape), "init": s.init}
                           for s in self.states], "ctc_output": self.ctc_output}


@dataclass(frozen=True)
class DecoderSpec:
    """Decoding the model's CTC output through the context's grammar (:mod:`assistant.grammar`).

    With it, ``threshold`` applies to the grammar decoder's confidence, not the heads'."""

    lexicon: FileRef
    """``lexicon.json``: the units (class ``i + 1``; 0 is blank) and each word's spelling."""
    settings: GrammarSettings

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "grammar", "lexicon": self.lexicon.to_dict(), **self.settings.to_dict()}


@dataclass(frozen=True)
class SampleSpec:
    """A bundled clip and the decision the bundled model makes on it."""

    audio: FileRef
    """The WAV file (16 kHz mono 16-bit)."""
    expected: dict[str, Any]
    """``understood``, ``intent``, ``slots`` (and ``confidence``, informative) of the whole-utterance model."""
    expected_stream: dict[str, Any] | None = None
    """The same for the streaming model, when the bundle has one."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {**self.audio.to_dict(), "expected": self.expected}
        if self.expected_stream is not None:
            data["expected_stream"] = self.expected_stream
        return data


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about a bundle (``manifest.json``)."""

    name: str
    """Bundle name (the folder name in models/)."""
    version: str
    """Version of this bundle."""
    model: FileRef
    """The whole-utterance ONNX model."""
    precision: str
    """'int8-static', 'int8-dynamic', 'int8-weights' (int8 weights, float activations) or 'fp32'."""
    input: str
    """The model's audio input: float32 PCM ``[batch, samples]``."""
    outputs: tuple[str, ...]
    """Probability outputs: the intent head, then one per slot head (layout order)."""
    layout: HeadLayout
    """Labels of every head."""
    threshold: float
    """Decision threshold on the confidence (the least sure part of a command)."""
    context: FileRef
    """The context YAML."""
    min_samples: int = 1600
    """Shorter audio is zero-padded to this length."""
    max_samples: int = 160000
    """Longer audio is cropped to this length."""
    sample_rate: int = SAMPLE_RATE
    """Input rate in Hz (always 16000)."""
    streaming: StreamingSpec | None = None
    """The streaming graph, if the student is causal."""
    decoder: DecoderSpec | None = None
    """Grammar decoding of the CTC output (None: the heads decide alone, :func:`assistant.decode.decode`)."""
    reference_model: FileRef | None = None
    """The float model, when kept."""
    samples: tuple[SampleSpec, ...] = ()
    """Self-test clips."""
    teacher: dict[str, Any] = field(default_factory=dict)
    """Which teacher labelled the training data (free-form)."""
    recipe: dict[str, Any] = field(default_factory=dict)
    """How the student was trained (free-form)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Headline metrics."""
    created: str = ""
    """ISO 8601 UTC time the bundle was written."""
    hubvoice_version: str = __version__
    """hubvoice version that wrote the bundle."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "hubvoice_version": self.hubvoice_version,
            "sample_rate": self.sample_rate,
            "model": {**self.model.to_dict(), "precision": self.precision, "input": self.input,
                      "outputs": list(self.outputs), "min_samples": self.min_samples, "max_samples": self.max_samples},
            "streaming": self.streaming.to_dict() if self.streaming else None,
            "decoder": self.decoder.to_dict() if self.decoder else None,
            "reference_model": self.reference_model.to_dict() if self.reference_model else None,
            "layout": self.layout.to_dict(),
            "threshold": self.threshold,
            "context": self.context.to_dict(),
            "samples": [s.to_dict() for s in self.samples],
            "teacher": self.teacher,
            "recipe": self.recipe,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST) -> Manifest:
        top = _Reader(data, "", source)
        version = top.get("schema_version", int)
        if version != SCHEMA_VERSION:
            raise BundleError(f"{source}: schema_version {version} is not supported by hubvoice {__version__} "
                              f"(it reads {SCHEMA_VERSION}); use a matching hubvoice or re-export the bundle")
        rate = top.get("sample_rate", int)
        if rate != SAMPLE_RATE:
            raise BundleError(f"{source}: sample_rate {rate}: expected {SAMPLE_RATE}")

        def ref(r: _Reader) -> FileRef:
            return FileRef(r.file(), r.get("sha256", str))

        model, context = top.sub("model"), top.sub("context")
        try:
            layout = HeadLayout.from_dict(top.get("layout", dict))
        except BundleError as err:
            raise BundleError(f"{source}: layout: {err}") from None
        threshold = float(top.get("threshold", (int, float)))
        if not 0.0 <= threshold <= 1.0:
            raise BundleError(f"{source}: threshold {threshold}: expected a number in [0, 1]")
        min_samples, max_samples = model.get("min_samples", int), model.get("max_samples", int)
        if not 0 < min_samples <= max_samples:
            raise BundleError(f"{source}: model.min_samples/max_samples: expected 0 < min <= max, "
                              f"got {min_samples}, {max_samples}")
        streaming = None
        stream = top.optional_sub("streaming")
        if stream is not None:
            states = []
            for i, item in enumerate(stream.get("states", list)):
                s = _Reader(item, f"streaming.states[{i}]", source)
                shape = s.get("shape", list)
                if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                    raise BundleError(f"{source}: streaming.states[{i}].shape: expected sizes, got {shape!r}")
                states.append(StateSpec(s.get("input", str), s.get("output", str), tuple(shape),
                                        float(s.get("init", (int, float)))))
            multiple = stream.get("chunk_multiple", int)
            if multiple < 1:
                raise BundleError(f"{source}: streaming.chunk_multiple: expected a positive integer, got {multiple}")
            streaming = StreamingSpec(ref(stream), stream.get("input", str), multiple, stream.names("outputs"),
                                      tuple(states), stream.get("precision", str),
                                      stream.get("ctc_output", str, optional=True))
        decoder = None
        dec = top.optional_sub("decoder")
        if dec is not None:
            kind = dec.get("kind", str)
            if kind != "grammar":
                raise BundleError(f"{source}: decoder.kind {kind!r}: this hubvoice decodes 'grammar' only")
            numbers = {k: float(dec.get(k, (int, float))) for k in ("blank_penalty", "heads_weight", "gate", "prune")}
            scorer = dec.get("scorer", dict, optional=True)
            try:
                settings = GrammarSettings(output=dec.get("output", str), beam=dec.get("beam", int),
                                           nbest=dec.get("nbest", int),
                                           scorer=Scorer.from_dict(scorer) if scorer is not None else None,
                                           blank_penalty=numbers["blank_penalty"],
                                           heads_weight=numbers["heads_weight"], gate=numbers["gate"],
                                           prune=numbers["prune"])
            except BundleError as err:
                raise BundleError(f"{source}: {err}") from None
            decoder = DecoderSpec(ref(dec.sub("lexicon")), settings)
        reference = top.optional_sub("reference_model")
        samples = []
        for i, item in enumerate(top.get("samples", list)):
            s = _Reader(item, f"samples[{i}]", source)
            expected_stream = s.get("expected_stream", dict, optional=True)
            samples.append(SampleSpec(ref(s), dict(s.get("expected", dict)),
                                      dict(expected_stream) if expected_stream is not None else None))
        return cls(
            name=top.get("name", str), version=top.get("version", str), model=ref(model),
            precision=model.get("precision", str), input=model.get("input", str), outputs=model.names("outputs"),
            layout=layout, threshold=threshold, context=ref(context), min_samples=min_samples,
            max_samples=max_samples, sample_rate=rate, streaming=streaming, decoder=decoder,
            reference_model=ref(reference) if reference is not None else None, samples=tuple(samples),
            teacher=dict(top.get("teacher", dict)), recipe=dict(top.get("recipe", dict)),
            metrics=dict(top.get("metrics", dict)), created=top.get("created", str),
            hubvoice_version=top.get("hubvoice_version", str),
        )

    def files(self) -> list[FileRef]:
        refs = [self.model, self.context, *(s.audio for s in self.samples)]
        if self.streaming is not None:
            refs.append(self.streaming.model)
        if self.reference_model is not None:
            refs.append(self.reference_model)
        if self.decoder is not None:
            refs.append(self.decoder.lexicon)
        return refs


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder, manifest and context."""

    path: Path
    """The bundle folder."""
    manifest: Manifest
    """The parsed manifest."""
    context: Context
    """The parsed context."""

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def layout(self) -> HeadLayout:
        return self.manifest.layout

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model.file

    @property
    def reference_path(self) -> Path | None:
        return self.path / self.manifest.reference_model.file if self.manifest.reference_model else None

    @property
    def stream_path(self) -> Path | None:
        return self.path / self.manifest.streaming.model.file if self.manifest.streaming else None

    @functools.cached_property
    def lexicon(self) -> Lexicon | None:
        """The decoder's lexicon (None without a grammar decoder); BundleError naming the file if it is malformed."""
        decoder = self.manifest.decoder
        if decoder is None:
            return None
        path = self.path / decoder.lexicon.file
        try:
            return Lexicon.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BundleError(f"{path}: cannot read the lexicon: {err}") from None
        except BundleError as err:
            raise BundleError(f"{path}: {err}") from None

    @functools.cached_property
    def grammar(self) -> GrammarGraph | None:
        """The context compiled into spelled words for the decoder (None without one); BundleError naming
        the lexicon file if it cannot spell a word of the context."""
        lexicon = self.lexicon
        if lexicon is None:
            return None
        try:
            return GrammarGraph.from_lexicon(self.context, lexicon)
        except BundleError as err:
            assert self.manifest.decoder is not None
            raise BundleError(f"{self.path / self.manifest.decoder.lexicon.file}: {err} (a word of "
                              f"{self.manifest.context.file})") from None

    def slots_by_intent(self) -> dict[str, frozenset[str]]:
        """Slot names each intent carries (what hub.yaml actions are checked against)."""
        return {name: frozenset(self.context.intent_slots(name)) for name in self.context.intents}


def open_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads; BundleError if the file is not a model."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types (Fail, InvalidGraph, NoSuchFile, ...)
        raise BundleError(f"{path}: ONNX Runtime cannot load the model: {str(err).strip()[:300]}") from None


INTEGER_KERNEL_PRECISIONS = ("int8-static", "int8-dynamic")
"""Manifest precisions whose model computes in int8 (u8 activations x s8 weights) in ONNX Runtime."""


def int8_may_saturate(cpuinfo: str | None = None, machine: str | None = None) -> bool:
    """True on an x86 CPU without VNNI (neither AVX512-VNNI nor AVX-VNNI), where ONNX Runtime's u8 x s8
    kernels add pairs of products in 16 bits: with 8-bit weights the sums can saturate, and a static int8
    model then decides some clips unlike its float model (docs/BENCHMARKS.md, "int8 that decides like fp32
    on every CPU"). ``cpuinfo`` is the text of /proc/cpuinfo (read when None; False where it cannot be)."""
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    flags = cpu_flags(cpuinfo)
    return bool(flags) and not flags & {"avx512_vnni", "avx_vnni"}


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags: the ``flags`` (x86) and ``Features`` (ARM) lines of ``cpuinfo``, the text of
    /proc/cpuinfo (read when None; an empty set where it cannot be)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


@functools.cache
def _host_int8_may_saturate() -> bool:
    return int8_may_saturate()


def check_files(folder: Path) -> None:
    """Refuse symlinks and any file that is not ONNX, JSON, YAML, WAV or Markdown."""
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_symlink():
            raise BundleError(f"{folder}: {rel} is a symbolic link; a bundle holds regular files only")
        if path.is_file() and path.suffix.lower() not in ALLOWED_SUFFIXES:
            raise BundleError(f"{folder}: {rel} is not allowed in a bundle (only {', '.join(ALLOWED_SUFFIXES)} "
                              f"files; never pickles, checkpoints or code); remove it")


def _check_io(session: ort.InferenceSession, path: Path, inputs: Sequence[tuple[str, int | None]],
              outputs: Sequence[tuple[str, int | None]]) -> None:
    """Graph inputs/outputs must be exactly ``(name, last dim or None)`` in order."""
    for kind, args, declared in (("inputs", session.get_inputs(), inputs), ("outputs", session.get_outputs(), outputs)):
        names = [a.name for a in args]
        if names != [n for n, _ in declared]:
            raise BundleError(f"{path}: graph {kind} are {names}, the manifest says {[n for n, _ in declared]}")
        for arg, (name, size) in zip(args, declared, strict=True):
            if arg.type != "tensor(float)":
                raise BundleError(f"{path}: {name} is {arg.type}, expected tensor(float)")
            if size is not None and arg.shape[-1] != size:
                raise BundleError(f"{path}: {name} has {arg.shape[-1]} values per row, the manifest's layout "
                                  f"has {size} labels")


def _check_layout(manifest: Manifest, context: Context, source: str) -> None:
    try:
        expected = HeadLayout.from_context(context)
    except ContextError as err:
        raise BundleError(f"{source}: {err}") from None
    layout = manifest.layout
    if layout.intents != expected.intents:
        raise BundleError(f"{source}: layout intents {list(layout.intents[1:])} do not match the context's "
                          f"{list(expected.intents[1:])} ({manifest.context.file})")
    if layout.slots != expected.slots:
        raise BundleError(f"{source}: layout slot heads {dict(layout.slots)} do not match the context's "
                          f"{dict(expected.slots)} ({manifest.context.file})")
    if dict(layout.intent_slots) != dict(expected.intent_slots):
        raise BundleError(f"{source}: layout intent_slots do not match the context ({manifest.context.file})")


def read_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """Parse ``folder/manifest.json`` (no file checks)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{folder}: not a bundle (no {MANIFEST}); expected a folder written by hubvoice-distill "
                          f"export")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: cannot read: {err}") from None
    return Manifest.from_dict(data, str(path))


def load_bundle(folder: str | os.PathLike[str], *, self_test: bool = True, threads: int = 1) -> Bundle:
    """Read and verify a bundle (see the module docstring); ``self_test`` also replays its samples."""
    root = Path(folder)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    manifest = read_manifest(root)
    source = str(root / MANIFEST)
    check_files(root)
    for ref in manifest.files():
        path = root / ref.file
        if not path.is_file():
            raise BundleError(f"{path}: missing (named in {MANIFEST})")
        actual = sha256_file(path)
        if actual != ref.sha256:
            raise BundleError(f"{path}: sha256 {actual[:16]}… differs from the manifest's {ref.sha256[:16]}…; "
                              f"the file was changed or corrupted after the bundle was written")
    try:
        context = load_context(root / manifest.context.file)
    except ContextError as err:
        raise BundleError(f"{source}: the bundled context is invalid: {err}") from None
    _check_layout(manifest, context, source)
    sizes = [len(manifest.layout.intents), *(len(v) for _, v in manifest.layout.slots)]
    if len(manifest.outputs) != len(sizes):
        raise BundleError(f"{source}: {len(manifest.outputs)} outputs named for {len(sizes)} heads in the layout")
    heads: list[tuple[str, int | None]] = list(zip(manifest.outputs, sizes, strict=True))
    bundle = Bundle(root, manifest, context)
    ctc: list[tuple[str, int | None]] = []
    if manifest.decoder is not None:
        lexicon, _ = bundle.lexicon, bundle.grammar  # read and compiled now: errors name the lexicon file
        assert lexicon is not None
        ctc = [(manifest.decoder.settings.output, len(lexicon.units) + 1)]
    _check_io(open_session(root / manifest.model.file), root / manifest.model.file, [(manifest.input, None)],
              heads + ctc)
    if manifest.reference_model is not None:
        ref_path = root / manifest.reference_model.file
        _check_io(open_session(ref_path), ref_path, [(manifest.input, None)], heads + ctc)
    stream = manifest.streaming
    if stream is not None:
        if list(stream.outputs) != list(manifest.outputs):
            raise BundleError(f"{source}: streaming.outputs {list(stream.outputs)} differ from model.outputs")
        if ctc and stream.ctc_output != ctc[0][0]:
            raise BundleError(f"{source}: streaming.ctc_output {stream.ctc_output!r}: expected the decoder's "
                              f"output {ctc[0][0]!r}")
        stream_ctc = [(stream.ctc_output, ctc[0][1])] if ctc and stream.ctc_output else []
        stream_path = root / stream.model.file
        _check_io(open_session(stream_path), stream_path,
                  [(stream.input, None), *((s.input, s.shape[-1] if s.shape else None) for s in stream.states)],
                  [*heads, *stream_ctc, *((s.output, s.shape[-1] if s.shape else None) for s in stream.states)])
    if manifest.precision in INTEGER_KERNEL_PRECISIONS and _host_int8_may_saturate():
        _LOGGER.warning("%s: the model is %s, and this CPU is x86 without VNNI, where ONNX Runtime's int8 "
                        "kernels can saturate: some decisions may differ from the model's float ones (the "
                        "self-test checks only the bundled samples). Rebuild it with int8 weights "
                        "(quantize 'weights', the presets' default) to decide as in float on every CPU",
                        root, manifest.precision)
    if self_test:
        run_self_test(bundle, threads=threads)
    _LOGGER.debug("Loaded bundle %s %s from %s", manifest.name, manifest.version, root)
    return bundle


def _same(decision: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    return all(decision.get(key) == expected.get(key) for key in ("understood", "intent", "slots"))


def run_self_test(bundle: Bundle, *, threads: int = 1) -> None:
    """Replay the bundled samples; BundleError naming the first clip whose decision differs."""
    from assistant.recognizer import Recognizer  # the recognizer builds on this module
    from assistant.wav import read_wav

    if not bundle.manifest.samples:
        raise BundleError(f"{bundle.path / MANIFEST}: no samples; a bundle needs at least one self-test clip")
    recognizer = Recognizer(bundle, threads=threads)
    for sample in bundle.manifest.samples:
        path = bundle.path / sample.audio.file
        audio = read_wav(path)
        got = recognizer.recognize(audio, sample.audio.file).to_dict()
        if not _same(got, sample.expected):
            raise BundleError(f"{path}: self-test failed: the model decides {_show(got)}, the manifest expects "
                              f"{_show(sample.expected)}; this runtime or model does not behave as when exported")
        if sample.expected_stream is not None and bundle.manifest.streaming is not None:
            stream = recognizer.stream()
            step = bundle.manifest.streaming.chunk_multiple * 10
            for start in range(0, len(audio), step):
                stream.feed(audio[start : start + step])
            got = stream.result(sample.audio.file).to_dict()
            if not _same(got, sample.expected_stream):
                raise BundleError(f"{path}: streaming self-test failed: {_show(got)}, expected "
                                  f"{_show(sample.expected_stream)}")
    _LOGGER.debug("Self-test of %s passed on %d samples", bundle.name, len(bundle.manifest.samples))


def _show(decision: Mapping[str, Any]) -> str:
    if not decision.get("understood"):
        return "not understood"
    return f"{decision.get('intent')} {json.dumps(decision.get('slots', {}), sort_keys=True)}"

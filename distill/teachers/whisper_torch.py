"""Whisper's encoder in torch (fp32, trainable), built from a CTranslate2 ``model.bin``.

The teacher's Whisper model exists here only as a faster-whisper/CTranslate2 directory
(no model hub, no PyTorch checkpoint). This module reads CTranslate2's binary format
(:func:`read_model_bin`, the inverse of ``ctranslate2/specs/model_spec.py: _serialize``),
builds the encoder as a plain ``nn.Module`` from its variables (:class:`WhisperEncoderNet`)
and wraps it behind the interface of :class:`distill.teachers.whisper.WhisperEncoder`
(:class:`TorchWhisperEncoder`), so :class:`~distill.teachers.neural.EncoderTeacher` takes
it unchanged. Its parameters require grad: the encoder can be fine-tuned.

The encoder is CTranslate2's ``WhisperEncoder`` layer for layer: conv (k3) → GELU → conv
(k3, stride 2) → GELU → + the file's position encodings (the first ``frames / 2`` rows,
as CTranslate2 adds them to a short window) → pre-LN transformer layers (fused QKV
self-attention, GELU FFN) → final LayerNorm. :func:`export_teacher` writes the whole
teacher (Whisper log-mel computed **inside** the graph as a DFT convolution, encoder,
frame pooling, head, softmax) as one fp32 ONNX file: raw audio of the teacher's window in,
per-head probabilities out.

model.bin layout (little endian), binary versions 1–6 as CTranslate2's loader reads them:
``uint32`` binary version; (version ≥ 2) spec name (``uint16`` length including a NUL, the
bytes) and ``uint32`` spec revision; ``uint32`` variable count; per variable its name,
``uint8`` rank, ``uint32`` dims, then (version ≥ 4) ``uint8`` dtype id (:data:`DTYPES`) and
``uint32`` byte count, or (older) ``uint8`` item size and ``uint32`` item count; the raw
bytes; then (version ≥ 3) ``uint32`` alias count and (alias, variable) name pairs.
Quantized weights carry ``<name>_scale``: int8 per output row, ``w = w_int8 / scale``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from distill.teachers.neural import EncoderHead
from distill.teachers.whisper import HOP, N_FFT, N_MELS, TeacherModelError, WhisperFeatures, find_model_dir

_LOGGER = logging.getLogger(__name__)

BINARY_VERSION = 6
"""The binary version :func:`write_model_bin` writes (CTranslate2 4.x); :func:`read_model_bin` reads 1–6."""
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
"""CTranslate2's dtype ids (``include/ctranslate2/types.h``): the index is the id."""
_NUMPY: dict[str, Any] = {"float32": np.float32, "int8": np.int8, "int16": np.int16, "int32": np.int32,
                          "float16": np.float16, "bfloat16": np.uint16}
_ITEM_SIZE_DTYPE = {4: "float32", 2: "int16", 1: "int8"}
"""Binary versions < 4 stored an item size instead of a dtype id (CTranslate2 reads it this way)."""
SCOPE = "encoder"


# --- model.bin ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CT2Model:
    """The variables of a CTranslate2 ``model.bin`` (or those under a prefix)."""

    spec: str
    """Model specification name, e.g. ``WhisperSpec``."""
    revision: int
    """Specification revision (the weights layout)."""
    binary_version: int
    variables: dict[str, np.ndarray]
    """Name → array as stored (bfloat16 widened to float32: numpy has no bfloat16)."""
    dtypes: dict[str, str]
    """Name → stored dtype (one of :data:`DTYPES`)."""
    aliases: dict[str, str]
    """Alias → variable name (e.g. a tied projection)."""

    def __contains__(self, name: str) -> bool:
        return self._resolve(name) in self.variables

    def _resolve(self, name: str) -> str:
        seen = set()
        while name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return name

    def get(self, name: str) -> np.ndarray:
        """The variable (aliases followed); TeacherModelError naming a few neighbours when missing."""
        resolved = self._resolve(name)
        if resolved not in self.variables:
            scope = name.rsplit("/", 1)[0]
            near = sorted(n for n in self.variables if n.startswith(scope))[:6]
            raise TeacherModelError(f"model.bin: no variable {name!r} (under {scope}/: {', '.join(near) or 'none'})")
        return self.variables[resolved]

    def dequantized(self, name: str) -> np.ndarray:
        """The variable as float32; int8/int16 weights divided by their ``<name>_scale`` (per output row)."""
        value = self.get(name)
        target = self._resolve(name)  # an alias shares its target's scale, as CTranslate2 aliases them
        if f"{target}_zero" in self:
            raise TeacherModelError(f"model.bin: {name} has a zero point (AWQ quantization), which is not supported")
        if value.dtype in (np.int8, np.int16):
            if f"{target}_scale" not in self:
                raise TeacherModelError(f"model.bin: {name} is {value.dtype} without {target}_scale")
            scale = self.get(f"{target}_scale").astype(np.float32)
            scale = scale.reshape(scale.shape + (1,) * (value.ndim - scale.ndim))
            return value.astype(np.float32) / scale
        return np.asarray(value, dtype=np.float32)


class _Stream:
    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f, self.path = f, path

    def take(self, n: int) -> bytes:
        at = self.f.tell()
        data = self.f.read(n)
        if len(data) != n:
            raise TeacherModelError(f"{self.path}: truncated: needed {n} bytes at offset {at}, got {len(data)}")
        return data

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u16(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def string(self) -> str:
        return self.take(self.u16()).split(b"\0", 1)[0].decode("utf-8")


def _from_bf16(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _to_bf16(value: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bits, rounded to nearest even (exact for values that came from bfloat16)."""
    bits = np.ascontiguousarray(value, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def read_model_bin(path: str | os.PathLike[str], *, prefix: str = "") -> CT2Model:
    """Read a CTranslate2 ``model.bin``: the variables whose names start with ``prefix`` (and those they alias).

    The file is indexed first (names, shapes, dtypes, offsets) and only the selected variables
    are read: the encoder of Whisper base is 40 MB of a 145 MB file.
    """
    path = Path(path)
    index: dict[str, tuple[tuple[int, ...], str, int, int]] = {}
    with path.open("rb") as f:
        s = _Stream(f, path)
        version = s.u32()
        if not 1 <= version <= BINARY_VERSION:
            raise TeacherModelError(f"{path}: CTranslate2 binary version {version}; this reader knows 1 to "
                                    f"{BINARY_VERSION} (is it a model.bin?)")
        spec, revision = (s.string(), s.u32()) if version >= 2 else ("", 1)
        for _ in range(s.u32()):
            name = s.string()
            shape = tuple(s.u32() for _ in range(s.u8()))
            if version >= 4:
                type_id = s.u8()
                if type_id >= len(DTYPES):
                    raise TeacherModelError(f"{path}: variable {name}: unknown dtype id {type_id}")
                dtype, nbytes = DTYPES[type_id], s.u32()
            else:
                item = s.u8()
                if item not in _ITEM_SIZE_DTYPE:
                    raise TeacherModelError(f"{path}: variable {name}: unknown item size {item}")
                dtype, nbytes = _ITEM_SIZE_DTYPE[item], s.u32() * item
            expected = math.prod(shape) * np.dtype(_NUMPY[dtype]).itemsize
            if nbytes != expected:
                raise TeacherModelError(f"{path}: variable {name}: {nbytes} bytes for shape {shape} {dtype} "
                                        f"(expected {expected})")
            index[name] = (shape, dtype, f.tell(), nbytes)
            f.seek(nbytes, os.SEEK_CUR)
        aliases = {}
        if version >= 3:
            for _ in range(s.u32()):
                alias = s.string()
                aliases[alias] = s.string()
        if f.read(1):
            raise TeacherModelError(f"{path}: unexpected bytes after the aliases at offset {f.tell() - 1}")
        wanted = {n for n in index if n.startswith(prefix)}
        wanted |= {t for a, t in aliases.items() if a.startswith(prefix)}
        wanted |= {f"{t}_scale" for a, t in aliases.items() if a.startswith(prefix)} & index.keys()
        variables: dict[str, np.ndarray] = {}
        for name in sorted(wanted & index.keys(), key=lambda n: index[n][2]):
            shape, dtype, offset, nbytes = index[name]
            f.seek(offset)
            value = np.frombuffer(s.take(nbytes), dtype=np.dtype(_NUMPY[dtype]).newbyteorder("<")).reshape(shape)
            variables[name] = _from_bf16(value) if dtype == "bfloat16" else value
    return CT2Model(spec, revision, version, variables, {n: index[n][1] for n in variables}, aliases)


def write_model_bin(path: str | os.PathLike[str], variables: Mapping[str, np.ndarray], *, spec: str,
                    revision: int = 1, aliases: Mapping[str, str] | None = None,
                    dtypes: Mapping[str, str] | None = None) -> Path:
    """Write ``variables`` in CTranslate2's format (binary version :data:`BINARY_VERSION`), as ``_serialize`` does.

    Each array is stored as its numpy dtype, or as ``dtypes[name]`` when given (``bfloat16``
    takes a float32 array).
    """
    path = Path(path)

    def string(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    with path.open("wb") as f:
        f.write(struct.pack("<I", BINARY_VERSION) + string(spec) + struct.pack("<II", revision, len(variables)))
        for name, value in variables.items():
            value = np.asarray(value)
            dtype = (dtypes or {}).get(name, value.dtype.name)
            if dtype not in DTYPES:
                raise ValueError(f"{name}: dtype {dtype} is not one of {', '.join(DTYPES)}")
            raw = _to_bf16(value) if dtype == "bfloat16" else np.ascontiguousarray(value, dtype=_NUMPY[dtype])
            data = raw.astype(raw.dtype.newbyteorder("<")).tobytes()
            f.write(string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape))
            f.write(struct.pack("<BI", DTYPES.index(dtype), len(data)) + data)
        f.write(struct.pack("<I", len(aliases or {})))
        for alias, name in (aliases or {}).items():
            f.write(string(alias) + string(name))
    return path


# --- the encoder ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhisperEncoderConfig:
    n_mels: int = N_MELS
    """Log-mel bands in (conv1's input channels)."""
    d_model: int = 512
    """Width (Whisper base: 512)."""
    n_heads: int = 8
    """Attention heads."""
    n_layers: int = 6
    """Transformer layers."""
    ffn: int = 2048
    """FFN hidden width."""
    n_positions: int = 1500
    """Rows of the position table: the longest output (30 s of audio)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_model(cls, model: CT2Model, scope: str = SCOPE) -> WhisperEncoderConfig:
        conv1 = model.get(f"{scope}/conv1/weight")
        names = [*model.variables, *model.aliases]
        layers = {int(m.group(1)) for n in names if (m := re.match(rf"{scope}/layer_(\d+)/", n))}
        if layers != set(range(len(layers))) or not layers:
            raise TeacherModelError(f"model.bin: expected {scope}/layer_0 ... layer_N, found layers {sorted(layers)}")
        heads = int(model.get(f"{scope}/num_heads")) if f"{scope}/num_heads" in model else 8  # CTranslate2's default
        return cls(n_mels=int(conv1.shape[1]), d_model=int(conv1.shape[0]), n_heads=heads, n_layers=len(layers),
                   ffn=int(model.get(f"{scope}/layer_0/ffn/linear_0/weight").shape[0]),
                   n_positions=int(model.get(f"{scope}/position_encodings/encodings").shape[0]))

    def macs_per_second(self, window_s: float) -> float:
        """MACs of one encoder pass over ``window_s`` seconds of log-mel (100 frames/s), per second.

        Conv stem, then per layer the QKV/output projections, the attention scores and mixing,
        and the FFN (LayerNorms, GELUs and softmax not counted).
        """
        frames_in = int(window_s * 100)
        frames = (frames_in + 1) // 2
        d = self.d_model
        macs = frames_in * self.n_mels * d * 3 + frames * d * d * 3
        macs += self.n_layers * (frames * (4 * d * d + 2 * d * self.ffn) + 2 * frames * frames * d)
        return macs / window_s


class EncoderLayer(nn.Module):
    """Pre-LN transformer layer: x + Attn(LN(x)), then x + FFN(LN(x)) with a GELU (erf) FFN."""

    def __init__(self, cfg: WhisperEncoderConfig) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise TeacherModelError(f"d_model {cfg.d_model} is not a multiple of {cfg.n_heads} heads")
        self.n_heads = cfg.n_heads
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.fc1 = nn.Linear(cfg.d_model, cfg.ffn)
        self.fc2 = nn.Linear(cfg.ffn, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.attn_norm(x)).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (d // h) ** -0.5
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, t, d)
        x = x + self.out(mixed)
        return x + self.fc2(F.gelu(self.fc1(self.ffn_norm(x))))


class WhisperEncoderNet(nn.Module):
    """Whisper log-mel ``[batch, n_mels, frames]`` → ``[batch, ceil(frames / 2), d_model]``."""

    positions: torch.Tensor

    def __init__(self, cfg: WhisperEncoderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or WhisperEncoderConfig()
        d = self.cfg.d_model
        self.conv1 = nn.Conv1d(self.cfg.n_mels, d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(self.cfg.n_positions, d))  # fixed, as in Whisper
        self.layers = nn.ModuleList(EncoderLayer(self.cfg) for _ in range(self.cfg.n_layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        if x.shape[1] > self.cfg.n_positions:
            raise TeacherModelError(f"input of {mel.shape[-1]} frames: the encoder has positions for "
                                    f"{2 * self.cfg.n_positions} at most")
        x = x + self.positions[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    @classmethod
    def from_ct2(cls, model: CT2Model, scope: str = SCOPE) -> WhisperEncoderNet:
        """The encoder with the weights of ``model`` (dequantized to float32); every variable under scope used."""
        cfg = WhisperEncoderConfig.from_model(model, scope)
        net = cls(cfg)
        names = _ct2_names(cfg)
        expected = {f"{scope}/{n}" for n in names.values()} | {f"{scope}/num_heads"}
        expected |= {f"{n}_scale" for n in expected}  # quantization scales of those weights
        extra = sorted(n for n in model.variables if n.startswith(f"{scope}/") and n not in expected)
        if extra:
            raise TeacherModelError(f"model.bin: encoder variables this encoder does not implement: {', '.join(extra[:5])}")
        state = net.state_dict()
        for ours, theirs in names.items():
            value = torch.from_numpy(model.dequantized(f"{scope}/{theirs}").copy())
            if tuple(value.shape) != tuple(state[ours].shape):
                raise TeacherModelError(f"model.bin: {scope}/{theirs} has shape {tuple(value.shape)}, "
                                        f"expected {tuple(state[ours].shape)}")
            state[ours] = value
        net.load_state_dict(state)
        return net

    def ct2_variables(self, scope: str = SCOPE) -> dict[str, np.ndarray]:
        """The weights under CTranslate2's names (float32), e.g. to write a fine-tuned encoder back."""
        state = self.state_dict()
        out = {f"{scope}/{theirs}": state[ours].detach().cpu().numpy().astype(np.float32)
               for ours, theirs in _ct2_names(self.cfg).items()}
        out[f"{scope}/num_heads"] = np.asarray(self.cfg.n_heads, dtype=np.int16)
        return out


def _ct2_names(cfg: WhisperEncoderConfig) -> dict[str, str]:
    """state_dict name → CTranslate2 variable name under the encoder scope (``whisper_spec.py``)."""
    names = {"conv1.weight": "conv1/weight", "conv1.bias": "conv1/bias", "conv2.weight": "conv2/weight",
             "conv2.bias": "conv2/bias", "positions": "position_encodings/encodings",
             "norm.weight": "layer_norm/gamma", "norm.bias": "layer_norm/beta"}
    for i in range(cfg.n_layers):
        for ours, theirs in (("attn_norm", "self_attention/layer_norm"), ("qkv", "self_attention/linear_0"),
                             ("out", "self_attention/linear_1"), ("ffn_norm", "ffn/layer_norm"),
                             ("fc1", "ffn/linear_0"), ("fc2", "ffn/linear_1")):
            norm = ours.endswith("norm")
            names[f"layers.{i}.{ours}.weight"] = f"layer_{i}/{theirs}/{'gamma' if norm else 'weight'}"
            names[f"layers.{i}.{ours}.bias"] = f"layer_{i}/{theirs}/{'beta' if norm else 'bias'}"
    return names


def load_encoder_net(model_dir: str | os.PathLike[str] | None = None) -> WhisperEncoderNet:
    """:class:`WhisperEncoderNet` from the ``model.bin`` of :func:`find_model_dir(model_dir)` (encoder only read)."""
    path = find_model_dir(model_dir) / "model.bin"
    model = read_model_bin(path, prefix=f"{SCOPE}/")
    if not model.spec.startswith("Whisper"):
        raise TeacherModelError(f"{path}: spec {model.spec!r}, expected a Whisper model")
    return WhisperEncoderNet.from_ct2(model).eval()


class TorchWhisperEncoder:
    """Whisper's encoder in torch fp32: audio → ``[batch, window frames / 2, d_model]``.

    The interface of :class:`distill.teachers.whisper.WhisperEncoder` (``encode``,
    ``window_s``, ``model_dir``, ``features``, ``cache_tag``); the weights come from the same ``model.bin``.
    ``net`` is the trainable module (parameters require grad); ``encode`` runs it without grad.
    """

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, *, window_s: float = 3.0) -> None:
        self.model_dir = find_model_dir(model_dir)
        self.features = WhisperFeatures(window_s)
        self.window_s = window_s
        self.net = load_encoder_net(self.model_dir)
        self._loaded = weights_fingerprint(self.net)

    @property
    def cache_tag(self) -> str:
        """The engine, for :func:`distill.teachers.neural.encode_cached`'s keys (never shared with CTranslate2's).

        ``torch-fp32`` while the weights are those of ``model.bin``; once they have been changed
        (fine-tuned), ``torch-fp32-<fingerprint>`` of the current weights, so frames cached before the
        change are never read back for the changed encoder. Costs one hash of the weights per call
        (~80 MB for Whisper base).
        """
        now = weights_fingerprint(self.net)
        return "torch-fp32" if now == self._loaded else f"torch-fp32-{now[:16]}"

    def encode(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        mel = torch.from_numpy(self.features(audio))
        with torch.no_grad():
            return self.net(mel).numpy()


def weights_fingerprint(net: nn.Module) -> str:
    """sha1 of every parameter and buffer, in ``state_dict`` order (names included)."""
    h = hashlib.sha1()
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --- the teacher as one ONNX graph --------------------------------------------------------------------


class WhisperLogMel(nn.Module):
    """PCM ``[batch, samples]`` → Whisper's log-mel ``[batch, n_mels, samples // hop]``, as :class:`WhisperFeatures`.

    The STFT is a strided ``Conv1d`` with windowed DFT kernels (periodic Hann, reflect
    padding, as torchaudio's ``MelSpectrogram``) and the slaney filterbank a matmul: plain
    Conv/MatMul in ONNX instead of the slow STFT op (DESIGN.md). Then log10, a floor 8
    decades below the clip's maximum, and ``(x + 4) / 4``.
    """

    kernels: torch.Tensor
    fbank: torch.Tensor

    def __init__(self, n_mels: int = N_MELS) -> None:
        super().__init__()
        bins = N_FFT // 2 + 1
        n = torch.arange(N_FFT)
        angle = torch.remainder(torch.arange(bins)[:, None] * n[None, :], N_FFT).double() * (2 * math.pi / N_FFT)
        window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64)
        kernels = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window]).float()
        self.register_buffer("kernels", kernels[:, None, :], persistent=False)
        fbank = torchaudio.functional.melscale_fbanks(bins, 0.0, 8000.0, n_mels, 16000, norm="slaney",
                                                      mel_scale="slaney")
        self.register_buffer("fbank", fbank.T.contiguous(), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = F.pad(audio[:, None, :], (N_FFT // 2, N_FFT // 2), mode="reflect")
        spec = F.conv1d(x, self.kernels, stride=HOP)[..., :-1]
        bins = self.fbank.shape[1]
        power = spec[:, :bins] ** 2 + spec[:, bins:] ** 2
        logspec = torch.log10(torch.clamp(torch.matmul(self.fbank, power), min=1e-10))
        floor = logspec.amax(dim=(1, 2), keepdim=True) - 8.0
        return (torch.maximum(logspec, floor) + 4.0) / 4.0


class TeacherProbabilities(nn.Module):
    """The whole teacher: PCM ``[batch, window samples]`` → softmax probabilities per head.

    Log-mel (:class:`WhisperLogMel`), encoder, average pooling of frames by the head's
    ``pool_stride`` (as :func:`distill.teachers.neural.pool_frames`), head, softmax.
    """

    def __init__(self, net: WhisperEncoderNet, head: EncoderHead) -> None:
        super().__init__()
        self.logmel = WhisperLogMel(net.cfg.n_mels)
        self.encoder = net
        self.head = head
        self.stride = head.cfg.pool_stride

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        frames = self.encoder(self.logmel(audio))
        if self.stride > 1:
            b, t, d = frames.shape
            t2 = t // self.stride
            frames = frames[:, : t2 * self.stride].reshape(b, t2, self.stride, d).mean(dim=2)
        return tuple(torch.softmax(z, dim=-1) for z in self.head(frames))


def export_teacher(net: WhisperEncoderNet, head: EncoderHead, path: str | os.PathLike[str], *, samples: int,
                   outputs: Sequence[str]) -> Path:
    """Write :class:`TeacherProbabilities` as one fp32 ONNX file: input ``audio [batch, samples]``, ``outputs``.

    Dynamo exporter at :data:`distill.export.OPSET`, weights embedded (no ``*.onnx.data``); dynamic batch,
    fixed window (the teacher's: ``WhisperFeatures(window_s).samples``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from distill.export import (  # onnxruntime.quantization: only when exporting
        OPSET,
        quiet_exporter,
        save_one_file,
    )

    model = TeacherProbabilities(net, head).eval()
    quiet_exporter()
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = torch.randn(2, samples) * 0.1  # batch 2: a size-1 axis would be specialized
    with torch.no_grad():
        program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=OPSET,
                                     input_names=["audio"], output_names=list(outputs),
                                     dynamic_shapes=({0: batch},), verbose=False)
    if program is None:
        raise TeacherModelError(f"{path}: torch.onnx.export returned no program")
    return save_one_file(program, path, TeacherModelError)

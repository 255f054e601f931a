"""The torch Whisper encoder: CTranslate2's model.bin read (and written), parity with CTranslate2, ONNX export."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from assistant.decode import ABSENT, NOT_UNDERSTOOD, HeadLayout  # noqa: E402
from assistant.wav import read_wav  # noqa: E402
from distill.teachers.neural import (  # noqa: E402
    EncoderHead,
    EncoderTeacher,
    HeadConfig,
    cache_paths,
    encode_cached,
    pool_frames,
)
from distill.teachers.whisper import TeacherModelError, WhisperFeatures, find_model_dir  # noqa: E402
from distill.teachers.whisper_torch import (  # noqa: E402
    CT2Model,
    TorchWhisperEncoder,
    WhisperEncoderConfig,
    WhisperEncoderNet,
    WhisperLogMel,
    export_teacher,
    load_encoder_net,
    read_model_bin,
    write_model_bin,
)

TINY = WhisperEncoderConfig(d_model=32, n_heads=2, n_layers=2, ffn=64, n_positions=200)
SAMPLES = Path(__file__).resolve().parents[2] / "models" / "smart_home" / "samples"
HAVE_CT2 = importlib.util.find_spec("ctranslate2") is not None


def sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's position table (``whisper/model.py: sinusoids``)."""
    inc = np.log(10000) / (channels // 2 - 1)
    scaled = np.arange(length)[:, None] * np.exp(-inc * np.arange(channels // 2))[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def tiny_net(seed: int = 0, cfg: WhisperEncoderConfig = TINY) -> WhisperEncoderNet:
    """A random encoder whose every tensor differs (LayerNorms too), with Whisper's position table."""
    torch.manual_seed(seed)
    net = WhisperEncoderNet(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
        net.positions.copy_(torch.from_numpy(sinusoids(cfg.n_positions, cfg.d_model)))
    return net.eval()


def tiny_whisper_dir(root: Path, net: WhisperEncoderNet | None = None) -> Path:
    """A CTranslate2-style Whisper folder: the encoder in float16 (as Whisper base ships), a decoder stub, an alias."""
    root.mkdir(parents=True, exist_ok=True)
    variables = {"decoder/embeddings/weight": np.ones((5, 4), np.float16), **(net or tiny_net()).ct2_variables()}
    dtypes = {n: "float16" for n, v in variables.items() if v.dtype == np.float32}
    write_model_bin(root / "model.bin", variables, spec="WhisperSpec", revision=3, dtypes=dtypes,
                    aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    (root / "config.json").write_text("{}\n")
    return root


def speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = np.sin(2 * np.pi * (180 + 60 * np.sin(3 * t)) * t) * (0.5 + 0.5 * np.sin(7 * t))
    return (0.3 * tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


# --- model.bin -------------------------------------------------------------------------------------------


def test_model_bin_round_trip_every_dtype(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    variables: dict[str, np.ndarray] = {
        "a/f32": rng.standard_normal((2, 3)).astype(np.float32),
        "a/f16": rng.standard_normal(4).astype(np.float16),
        "a/w": rng.integers(-127, 128, (3, 2)).astype(np.int8),
        "a/w_scale": np.array([2.0, 4.0, 0.5], np.float32),
        "a/heads": np.asarray(8, np.int16),
        "a/i32": np.arange(5, dtype=np.int32),
        "a/bf16": np.array([1.0, -2.5, 3.140625], np.float32),  # exactly representable in bfloat16
        "b/other": np.zeros((2, 2), np.float32),
    }
    path = write_model_bin(tmp_path / "model.bin", variables, spec="TestSpec", revision=7,
                           aliases={"b/tied": "a/w"}, dtypes={"a/bf16": "bfloat16"})
    model = read_model_bin(path)
    assert (model.spec, model.revision, model.binary_version) == ("TestSpec", 7, 6)
    assert model.aliases == {"b/tied": "a/w"} and model.variables.keys() == variables.keys()
    for name, value in variables.items():
        assert model.variables[name].dtype == value.dtype and model.variables[name].shape == value.shape, name
        np.testing.assert_array_equal(model.variables[name], value)
    assert model.dtypes["a/bf16"] == "bfloat16" and model.dtypes["a/w"] == "int8" and model.dtypes["a/heads"] == "int16"
    np.testing.assert_array_equal(model.get("b/tied"), variables["a/w"])
    # int8 weights divide by their per-row scale (CTranslate2: w_int8 = rint(w * 127 / max|row|))
    np.testing.assert_allclose(model.dequantized("a/w"), variables["a/w"] / np.array([[2.0], [4.0], [0.5]]))
    np.testing.assert_allclose(model.dequantized("b/tied"), model.dequantized("a/w"))  # an alias shares the scale
    # a prefix reads only its variables, and the targets of its aliases
    only_b = read_model_bin(path, prefix="b/")
    assert set(only_b.variables) == {"b/other", "a/w", "a/w_scale"} and "a/f32" not in only_b
    with pytest.raises(TeacherModelError, match="no variable 'a/missing'"):
        model.get("a/missing")


def test_model_bin_bytes_are_ctranslate2s_layout(tmp_path: Path) -> None:
    """One variable and one alias, assembled by hand from the format description (model_spec.py: _serialize)."""
    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    value = np.array([[1.5, -2.0, 0.25]], np.float16)
    expected = (struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, 1)
                + string("enc/x") + struct.pack("<BII", 2, 1, 3) + struct.pack("<BI", 4, 6) + value.tobytes()
                + struct.pack("<I", 1) + string("enc/y") + string("enc/x"))
    path = write_model_bin(tmp_path / "model.bin", {"enc/x": value}, spec="WhisperSpec", revision=3,
                           aliases={"enc/y": "enc/x"})
    assert path.read_bytes() == expected
    (tmp_path / "cut.bin").write_bytes(expected[:-9])
    with pytest.raises(TeacherModelError, match="truncated"):
        read_model_bin(tmp_path / "cut.bin")
    (tmp_path / "v9.bin").write_bytes(struct.pack("<I", 9) + expected[4:])
    with pytest.raises(TeacherModelError, match="binary version 9"):
        read_model_bin(tmp_path / "v9.bin")


@pytest.mark.skipif(not HAVE_CT2, reason="ctranslate2 is not installed (extra 'whisper')")
@pytest.mark.parametrize("quantization", ["int8", "float16"])
def test_reads_what_ctranslate2_writes(tmp_path: Path, quantization: str) -> None:
    """CTranslate2's own writer (WhisperEncoderSpec, quantized and with its aliases) → our reader → the same encoder."""
    from ctranslate2.specs import model_spec, whisper_spec

    class EncoderOnly(model_spec.ModelSpec):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = whisper_spec.WhisperEncoderSpec(TINY.n_layers, TINY.n_heads)

        @property
        def name(self) -> str:
            return "WhisperSpec"

    net = tiny_net(1)
    spec = EncoderOnly()
    for name, value in net.ct2_variables().items():
        *scopes, attr = name.split("/")
        obj = spec
        for scope in scopes:
            if hasattr(obj, scope):
                obj = getattr(obj, scope)
            else:
                base, i = scope.rsplit("_", 1)
                obj = getattr(obj, base)[int(i)]
        setattr(obj, attr, value)
    spec.validate()
    spec.optimize(quantization)
    spec._serialize(str(tmp_path / "model.bin"))
    model = read_model_bin(tmp_path / "model.bin")
    assert model.spec == "WhisperSpec" and WhisperEncoderConfig.from_model(model) == TINY
    assert (model.dtypes["encoder/layer_1/ffn/linear_0/weight"] == quantization
            and "encoder/layer_1/ffn/linear_0/weight_scale" in model) is (quantization == "int8")
    ours = WhisperEncoderNet.from_ct2(model)
    for key, want in net.state_dict().items():
        got = ours.state_dict()[key]
        step = (want.abs().amax(dim=tuple(range(1, want.ndim)), keepdim=True) / 127 if want.ndim > 1
                and quantization == "int8" and key != "positions" else want.abs().max() * 2**-10)
        assert torch.all((got - want).abs() <= step * 0.5 + 1e-6), key  # within half a quantization step
    mel = torch.randn(2, 80, 60)
    with torch.no_grad():
        np.testing.assert_allclose(ours(mel).numpy(), net(mel).numpy(), atol=0.1)


def test_encoder_round_trips_through_model_bin(tmp_path: Path) -> None:
    net = tiny_net(2)
    path = write_model_bin(tmp_path / "model.bin", net.ct2_variables(), spec="WhisperSpec", revision=3)
    model = read_model_bin(path)
    again = WhisperEncoderNet.from_ct2(model)
    assert again.cfg == TINY
    for key, value in net.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    mel = torch.randn(1, 80, 101)  # odd: ceil(101 / 2) frames, positions 0..50
    with torch.no_grad():
        out = again(mel)
    assert out.shape == (1, 51, TINY.d_model)
    with pytest.raises(TeacherModelError, match="positions for 400"):
        again(torch.randn(1, 80, 401))
    extra = CT2Model("WhisperSpec", 3, 6, {**model.variables, "encoder/layer_0/self_attention/queries_scale":
                                          np.ones((), np.float32)}, dict(model.dtypes), {})
    with pytest.raises(TeacherModelError, match="does not implement: encoder/layer_0/self_attention/queries_scale"):
        WhisperEncoderNet.from_ct2(extra)


def test_macs_match_the_whisper_base_formula() -> None:
    from distill.nets.profile import whisper_encoder_cost

    base = WhisperEncoderConfig()
    for window in (3.0, 5.0, 30.0):
        assert base.macs_per_second(window) == pytest.approx(whisper_encoder_cost(512, window)[1])


# --- the encoder behind WhisperEncoder's interface ---------------------------------------------------------


def test_torch_encoder_has_whisper_encoders_interface_and_trains(tmp_path: Path) -> None:
    folder = tiny_whisper_dir(tmp_path / "whisper")
    encoder = TorchWhisperEncoder(folder, window_s=1.0)
    assert encoder.model_dir == folder and encoder.window_s == 1.0 and encoder.features.frames == 100
    clips = [speechlike(0.6, 0), speechlike(1.4, 1)]  # shorter and longer than the window
    frames = encoder.encode(clips)
    assert frames.shape == (2, 50, TINY.d_model) and frames.dtype == np.float32
    ref = tiny_net()  # the folder's encoder, stored as float16
    with torch.no_grad():
        np.testing.assert_allclose(frames, ref(torch.from_numpy(encoder.features(clips))).numpy(), atol=0.05)
    params = list(encoder.net.parameters())
    assert params and all(p.requires_grad for p in params)
    encoder.net(torch.from_numpy(encoder.features(clips))).square().mean().backward()
    assert encoder.net.conv1.weight.grad is not None and float(encoder.net.conv1.weight.grad.abs().sum()) > 0
    layout = HeadLayout(intents=(NOT_UNDERSTOOD, "on", "off"), slots=(("room", (ABSENT, "hall")),))
    head = EncoderHead([3, 2], HeadConfig(d_in=TINY.d_model, hidden=16, pool_stride=2))
    probs = EncoderTeacher(encoder, head, layout).predict(clips).probs
    assert [p.shape for p in probs] == [(2, 3), (2, 2)]
    np.testing.assert_allclose([p.sum(axis=1) for p in probs], 1.0, rtol=1e-5)


def test_torch_encoder_features_are_cached_apart_from_ctranslate2s(tmp_path: Path) -> None:
    folder = tiny_whisper_dir(tmp_path / "whisper")
    encoder = TorchWhisperEncoder(folder, window_s=1.0)
    assert encoder.cache_tag == "torch-fp32"
    cache, keys, clips = tmp_path / "cache", ["a", "b"], [speechlike(0.6, 0), speechlike(0.9, 1)]
    cache.mkdir()
    for path in cache_paths(SimpleNamespace(model_dir=folder, window_s=1.0, cache_tag="ct2-int8"), keys, cache, stride=2):
        np.save(path, np.zeros((25, TINY.d_model), np.float16))  # CTranslate2 int8 features of the same model
    got = encode_cached(encoder, clips, keys, cache, stride=2)
    np.testing.assert_allclose(got, pool_frames(encoder.encode(clips), 2), atol=0.01)  # its own, not int8's zeros
    assert float(np.abs(got).mean()) > 0.1 and len(list(cache.glob("*.npy"))) == 4


def test_a_fine_tuned_encoder_never_reads_the_frames_cached_before_the_change(tmp_path: Path) -> None:
    folder = tiny_whisper_dir(tmp_path / "whisper")
    encoder = TorchWhisperEncoder(folder, window_s=1.0)
    cache, keys, clips = tmp_path / "cache", ["a", "b"], [speechlike(0.6, 0), speechlike(0.9, 1)]
    before = encode_cached(encoder, clips, keys, cache, stride=2)
    with torch.no_grad():
        next(encoder.net.parameters()).add_(0.5)  # one optimizer step's worth of change, say
    assert encoder.cache_tag.startswith("torch-fp32-") and encoder.cache_tag != "torch-fp32"
    after = encode_cached(encoder, clips, keys, cache, stride=2)
    np.testing.assert_allclose(after, pool_frames(encoder.encode(clips), 2), atol=0.01)  # the new weights' frames
    assert np.abs(after.astype(np.float32) - before).max() > 0.01 and len(list(cache.glob("*.npy"))) == 4
    assert TorchWhisperEncoder(folder, window_s=1.0).cache_tag == "torch-fp32"  # the unchanged weights' files


def test_logmel_conv_matches_whisper_features() -> None:
    clips = [speechlike(0.7, 3), speechlike(1.0, 4), 1e-4 * speechlike(0.3, 5)]
    features = WhisperFeatures(1.0)
    batch = np.zeros((3, features.samples), np.float32)
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    with torch.no_grad():
        ours = WhisperLogMel()(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(ours, features(clips), atol=1e-4)


# --- ONNX ----------------------------------------------------------------------------------------------


def test_teacher_exports_to_one_onnx_file_that_matches_torch(tmp_path: Path) -> None:
    from assistant.bundle import open_session

    encoder = TorchWhisperEncoder(tiny_whisper_dir(tmp_path / "whisper"), window_s=1.0)
    torch.manual_seed(3)
    head = EncoderHead([3, 2], HeadConfig(d_in=TINY.d_model, hidden=16, pool_stride=2)).eval()
    path = export_teacher(encoder.net, head, tmp_path / "teacher.onnx", samples=encoder.features.samples,
                          outputs=["intent", "slot_room"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("teacher")] == ["teacher.onnx"]
    session = open_session(path, threads=1)
    assert [i.name for i in session.get_inputs()] == ["audio"]
    assert [o.name for o in session.get_outputs()] == ["intent", "slot_room"]
    clips = [speechlike(0.5, 6), speechlike(1.3, 7), speechlike(0.9, 8)]
    with torch.no_grad():
        frames = pool_frames(encoder.encode(clips), head.cfg.pool_stride)
        want = [torch.softmax(z, dim=-1).numpy() for z in head(torch.from_numpy(frames))]
    batch = np.zeros((3, encoder.features.samples), np.float32)
    for i, c in enumerate(clips):
        c = c[: encoder.features.samples]
        batch[i, : len(c)] = c
    for rows in (slice(0, 3), slice(1, 2)):  # dynamic batch
        got = session.run(None, {"audio": batch[rows]})
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w[rows], atol=2e-5)


# --- the real model --------------------------------------------------------------------------------------


def _real_model_dir() -> Path:
    if not HAVE_CT2:
        pytest.skip("ctranslate2 is not installed (extra 'whisper'): nothing to compare the torch encoder with")
    try:
        return find_model_dir()
    except TeacherModelError as err:
        pytest.skip(f"no Whisper model to compare: {err}")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_matches_ctranslate2_on_the_real_model() -> None:
    """Whisper base (the development model): torch fp32 vs CTranslate2 float32 (and int8, as the teacher runs)."""
    from distill.teachers.whisper import WhisperEncoder

    folder = _real_model_dir()
    clips = [read_wav(p) for p in sorted(SAMPLES.glob("*.wav"))[:3]]
    assert len(clips) == 3, f"expected the bundle samples in {SAMPLES}"
    torch.set_num_threads(1)
    ours = TorchWhisperEncoder(folder, window_s=3.0)
    assert ours.net.cfg == WhisperEncoderConfig()  # Whisper base: 6 layers of 512, 8 heads, 1500 positions
    got = ours.encode(clips)
    assert got.shape == (3, 150, 512)
    fp32 = WhisperEncoder(folder, window_s=3.0, compute_type="float32", threads=1).encode(clips)
    assert float(np.abs(got - fp32).max()) < 0.02 and float(_cosines(got, fp32).min()) > 0.99999
    int8 = WhisperEncoder(folder, window_s=3.0, compute_type="int8", threads=1).encode(clips)
    assert float(_cosines(got, int8).mean()) > 0.98  # int8 compute: close on average, a few padding frames differ


def test_load_encoder_net_reads_only_the_encoder(tmp_path: Path) -> None:
    folder = tiny_whisper_dir(tmp_path / "whisper")
    model = read_model_bin(folder / "model.bin", prefix="encoder/")
    assert not any(n.startswith("decoder/") for n in model.variables)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert load_encoder_net(folder).cfg == TINY
    (folder / "model.bin").write_bytes(b"")
    with pytest.raises(TeacherModelError, match="truncated"):
        load_encoder_net(folder)

"""The conv log-mel frontend equals torchaudio's MelSpectrogram and exports to ONNX."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchaudio")

import torch  # noqa: E402
import torchaudio  # noqa: E402

from assistant.errors import ConfigError  # noqa: E402
from distill.nets.frontend import FrontendConfig, LogMel, dft_kernels, mel_filterbank  # noqa: E402


def _reference(cfg: FrontendConfig) -> torch.nn.Module:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length,
        f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels, power=2.0, center=True, pad_mode="reflect",
        norm=None, mel_scale="htk",
    )


@pytest.mark.parametrize("f_max", [4000.0, 8000.0])
@pytest.mark.parametrize("samples", [16000, 12345, 48000])
def test_matches_torchaudio_melspectrogram(f_max: float, samples: int) -> None:
    cfg = FrontendConfig(f_max=f_max, normalize="none")
    gen = torch.Generator().manual_seed(samples)
    audio = 0.3 * torch.randn(2, samples, generator=gen)
    ours = LogMel(cfg)(audio)
    ref = torch.log(_reference(cfg)(audio) + cfg.log_floor)
    assert ours.shape == ref.shape == (2, cfg.n_mels, samples // cfg.hop_length + 1)
    torch.testing.assert_close(ours, ref, atol=3e-4, rtol=1e-4)


def test_only_bins_below_f_max_are_computed() -> None:
    assert LogMel(FrontendConfig(f_max=4000.0)).n_bins <= 129  # bins up to 4 kHz of 257
    assert LogMel(FrontendConfig(f_max=8000.0)).n_bins >= 256


def test_utterance_normalization_removes_band_means() -> None:
    audio = torch.randn(1, 16000)
    feats = LogMel(FrontendConfig(normalize="utterance"))(audio)
    torch.testing.assert_close(feats.mean(dim=2), torch.zeros(1, 40), atol=1e-4, rtol=0)
    louder = LogMel(FrontendConfig(normalize="utterance"))(10 * audio)
    torch.testing.assert_close(feats, louder, atol=1e-3, rtol=0)  # gain-invariant


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="frontend.normalize"):
        FrontendConfig(normalize="global")
    with pytest.raises(ConfigError, match="f_max"):
        FrontendConfig(f_max=9000.0)
    assert FrontendConfig.from_dict(FrontendConfig().to_dict()) == FrontendConfig()


@pytest.mark.parametrize(("n_fft", "win_length", "sample_rate", "f_max"),
                         [(512, 400, 16000, 4000.0), (256, 255, 8000, 4000.0), (400, 400, 16000, 8000.0)])
def test_kernels_and_filterbank_match_their_float64_definitions(n_fft: int, win_length: int, sample_rate: int,
                                                                f_max: float) -> None:
    """The float32 construction that also runs inside the exported graph: windowed DFT rows within 1e-6 of
    float64, the mel matrix equal to torchaudio's ``melscale_fbanks``."""
    cfg = FrontendConfig(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, f_max=f_max)
    front = LogMel(cfg)
    n, k = np.arange(n_fft), np.arange(front.n_bins)
    left = (n_fft - win_length) // 2
    window = np.zeros(n_fft)
    window[left : left + win_length] = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(win_length) / win_length)
    angle = 2 * math.pi * np.outer(k, n) / n_fft
    want = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])[:, None, :]
    assert front.kernels.shape == (2 * front.n_bins, 1, n_fft)
    np.testing.assert_allclose(front.kernels.numpy(), want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(dft_kernels(cfg, front.n_bins).numpy(), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(front.fbank, mel_filterbank(cfg)[: front.n_bins].T, atol=1e-6, rtol=0)


@pytest.mark.parametrize("padding", ["center", "causal"])
def test_export_builds_the_kernels_in_the_graph(padding: str) -> None:
    """Exported without the exporter's optimizer, the graph stores no DFT kernels or mel matrix (it
    builds them from scalars and the n_mels + 2 mel points) and ONNX Runtime computes the same log-mel."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    front = LogMel(FrontendConfig(normalize="none", padding=padding)).eval()
    samples = torch.export.Dim("samples", min=1600, max=160000)
    program = torch.onnx.export(front, (0.1 * torch.randn(2, 16000),), None, dynamo=True, opset_version=18,
                                optimize=False, dynamic_shapes=({0: torch.export.Dim("batch", max=64), 1: samples},),
                                verbose=False)
    assert program is not None
    model = program.model_proto
    sizes = [int(np.prod(t.dims)) for t in model.graph.initializer]
    sizes += [int(np.prod(a.t.dims)) for node in model.graph.node for a in node.attribute
              if a.type == onnx.AttributeProto.TENSOR]
    assert max(sizes) <= front.cfg.n_mels + 2  # the mel points; the kernels alone are 2 x 128 x 512
    assert {"Cos", "Sin", "Conv", "MatMul"} <= {node.op_type for node in model.graph.node}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (16000, 12345):
        audio = 0.3 * torch.randn(1, n, generator=torch.Generator().manual_seed(n))
        (got,) = session.run(None, {session.get_inputs()[0].name: audio.numpy()})
        np.testing.assert_allclose(got, front(audio).detach().numpy(), atol=2e-4, rtol=0)

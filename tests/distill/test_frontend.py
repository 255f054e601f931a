"""The conv log-mel frontend equals torchaudio's MelSpectrogram and exports to ONNX."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torchaudio = pytest.importorskip("torchaudio")

from assistant.errors import ConfigError  # noqa: E402
from distill.nets.frontend import FrontendConfig, LogMel  # noqa: E402


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

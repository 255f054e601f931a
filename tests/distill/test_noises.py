"""Noise generators and SNR mixing (distill/noises.py)."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.errors import AudioError
from distill.noises import (
    COLORS,
    HOUSEHOLD_KINDS,
    add_noise,
    audible_indices,
    babble,
    babble_from,
    colored_noise,
    household_noise,
    measure_snr,
)

SR = 16000
SNRS = (24.0, 15.0, 9.0, 6.0, 0.0)


def _speechy(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Harmonic bursts separated by silence: a stand-in for an utterance with pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(100, 200)
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    gate = (np.sin(2 * np.pi * 3 * t) > 0).astype(float)
    gate[: SR // 10] = 0  # leading silence
    return (0.3 * tone * gate).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _slope(x: np.ndarray) -> float:
    """Power-spectrum slope in log-log (0 white, -1 pink, -2 brown, +1 blue) between 50 Hz and 5 kHz."""
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    band = (freqs > 50) & (freqs < 5000)
    return float(np.polyfit(np.log10(freqs[band]), np.log10(spec[band] + 1e-30), 1)[0])


def _centroid(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    return float(np.sum(spec * np.fft.rfftfreq(x.size, 1 / SR)) / np.sum(spec))


@pytest.mark.parametrize(("color", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0), ("blue", 1.0)])
def test_colored_noise_has_its_spectral_slope_and_unit_rms(color: str, slope: float) -> None:
    x = colored_noise(4 * SR, color, np.random.default_rng(1))
    assert x.dtype == np.float32 and x.shape == (4 * SR,)
    assert _rms(x) == pytest.approx(1.0, abs=1e-4)
    assert _slope(x) == pytest.approx(slope, abs=0.15)


def test_colored_noise_odd_requests() -> None:
    assert colored_noise(0, "pink", np.random.default_rng(0)).shape == (0,)
    assert colored_noise(2, "brown", np.random.default_rng(0)).shape == (2,)
    with pytest.raises(AudioError, match="white, pink, brown, blue"):
        colored_noise(100, "purple", np.random.default_rng(0))
    with pytest.raises(AudioError, match="non-negative integer"):
        colored_noise(-1, "white", np.random.default_rng(0))


@pytest.mark.parametrize("kind", HOUSEHOLD_KINDS)
def test_household_noise_is_unit_rms_finite_and_deterministic(kind: str) -> None:
    a = household_noise(SR, kind, np.random.default_rng(7))
    b = household_noise(SR, kind, np.random.default_rng(7))
    c = household_noise(SR, kind, np.random.default_rng(8))
    assert a.dtype == np.float32 and a.shape == (SR,)
    assert np.isfinite(a).all()
    assert _rms(a) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for n in (0, 1, 37):
        short = household_noise(n, kind, np.random.default_rng(0))
        assert short.shape == (n,) and np.isfinite(short).all()


def test_household_kinds_sound_like_their_names() -> None:
    rng = np.random.default_rng(3)
    low = [_centroid(household_noise(2 * SR, k, rng)) for k in ("fan", "hvac", "traffic", "washing_machine")
           for _ in range(3)]
    high = [_centroid(household_noise(2 * SR, k, rng)) for k in ("clatter", "rain", "dishwasher", "vacuum")
            for _ in range(3)]
    assert max(low) < 1500 < 1800 < min(high)
    # dishes: impulsive, so heavy-tailed (a Gaussian has kurtosis 3)
    for _ in range(3):
        x = household_noise(2 * SR, "clatter", rng).astype(np.float64)
        assert np.mean(x**4) / np.mean(x**2) ** 2 > 8
    # a kettle's hiss rises while it heats
    for seed in range(3):
        x = household_noise(10 * SR, "kettle", np.random.default_rng(seed))
        assert _rms(x[-2 * SR:]) > 1.05 * _rms(x[: 2 * SR])
    with pytest.raises(AudioError, match="fan, hvac"):
        household_noise(10, "blender", rng)


def test_babble_sums_other_utterances_and_loops_them() -> None:
    pool = [_speechy(0.3, seed) for seed in range(5)]
    x, used = babble_from(pool, 2 * SR, np.random.default_rng(0), talkers=(3, 4), exclude=[2])
    assert x.shape == (2 * SR,) and x.dtype == np.float32
    assert _rms(x) == pytest.approx(1.0, abs=1e-3)
    assert 3 <= len(used) <= 4 and 2 not in used
    assert np.abs(x[-SR // 2:]).max() > 0  # 0.3 s utterances looped over 2 s
    first = babble(pool, SR, np.random.default_rng(1))
    np.testing.assert_array_equal(first, babble(pool, SR, np.random.default_rng(1)))
    assert not np.array_equal(first, babble(pool, SR, np.random.default_rng(2)))


def test_babble_from_a_precomputed_audible_list_is_the_same_babble() -> None:
    pool = [_speechy(0.3, 0), np.zeros(0, np.float32), np.zeros(900, np.float32), *(_speechy(0.2, k) for k in (1, 2, 3))]
    assert audible_indices(pool) == [0, 3, 4, 5]
    for seed in range(5):
        a = babble_from(pool, SR, np.random.default_rng(seed), exclude=[3])
        b = babble_from(pool, SR, np.random.default_rng(seed), exclude=[3], audible=audible_indices(pool))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1] and 3 not in a[1]


def test_augmenting_a_pool_from_itself_draws_the_same_babble_as_scanning_it() -> None:
    # The Augmenter lists the pool's audible clips once; the clips it makes must be exactly the ones
    # made by scanning the pool on every call (cached teacher encodings are keyed by clip, not content).
    from distill.augment import AugmentConfig, Augmenter

    pool = [_speechy(0.4, k) for k in range(6)] + [np.zeros(800, np.float32)]
    cfg = AugmentConfig.noise_only()
    fast = Augmenter(cfg, babble_pool=pool)
    scanning = Augmenter(cfg, babble_pool=pool)
    scanning._audible = None  # type: ignore[assignment]  # babble_from then scans the pool itself
    kinds = set()
    for i in range(len(pool)):
        a, rec = fast(pool[i], np.random.default_rng(i), exclude=(i,))
        b, _ = scanning(pool[i], np.random.default_rng(i), exclude=(i,))
        np.testing.assert_array_equal(a, b)
        kinds.add(rec.get("noise", {}).get("type"))
    assert "babble" in kinds  # the path under test was taken


def test_babble_rejects_pools_without_speech() -> None:
    with pytest.raises(AudioError, match="no usable utterance"):
        babble([], SR, np.random.default_rng(0))
    with pytest.raises(AudioError, match="no usable utterance"):
        babble([np.zeros(100, np.float32), np.zeros(0, np.float32)], SR, np.random.default_rng(0))
    with pytest.raises(AudioError, match="no usable utterance"):
        babble_from([_speechy(0.2)], SR, np.random.default_rng(0), exclude=[0])
    one = babble([np.zeros(50, np.float32), _speechy(0.2)], SR, np.random.default_rng(0), talkers=(2, 2))
    assert np.isfinite(one).all() and _rms(one) == pytest.approx(1.0, abs=1e-3)


def _noises(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    out = {f"colored:{c}": colored_noise(n, c, rng) for c in COLORS}
    out.update({f"household:{k}": household_noise(n, k, rng) for k in HOUSEHOLD_KINDS})
    out["babble"] = babble([_speechy(0.4, s) for s in range(6)], n, rng)
    return out


@pytest.mark.parametrize("snr", SNRS)
def test_add_noise_hits_the_requested_snr_for_every_noise_family(snr: float) -> None:
    clean = _speechy(1.0)
    for name, noise in _noises(clean.size).items():
        noisy = add_noise(clean, noise, snr)
        assert noisy.dtype == np.float32 and noisy.shape == clean.shape
        assert abs(measure_snr(clean, noisy) - snr) < 0.5, name
        # and by an independent computation of the definition (whole-clip powers)
        residual = noisy.astype(np.float64) - clean
        direct = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(residual**2))
        assert abs(direct - snr) < 0.5, name


def test_add_noise_loops_short_noise_and_crops_long_noise() -> None:
    clean = _speechy(1.0)
    short = colored_noise(SR // 7, "pink", np.random.default_rng(0))
    noisy = add_noise(clean, short, 6.0)
    residual = noisy - clean
    np.testing.assert_allclose(residual[: short.size], residual[short.size: 2 * short.size], atol=1e-6)
    assert abs(measure_snr(clean, noisy) - 6.0) < 0.01
    long = colored_noise(3 * SR, "white", np.random.default_rng(0))
    assert abs(measure_snr(clean, add_noise(clean, long, 9.0)) - 9.0) < 0.01


def test_snr_of_silence_or_bad_input_is_an_error_never_nan() -> None:
    noise = colored_noise(SR, "white", np.random.default_rng(0))
    with pytest.raises(AudioError, match="silent"):
        add_noise(np.zeros(SR, np.float32), noise, 10.0)
    with pytest.raises(AudioError, match="empty"):
        add_noise(np.zeros(0, np.float32), noise, 10.0)
    with pytest.raises(AudioError, match="silent"):
        measure_snr(np.zeros(SR, np.float32), noise)
    with pytest.raises(AudioError, match="silent"):
        add_noise(_speechy(), np.zeros(10, np.float32), 10.0)
    with pytest.raises(AudioError, match="NaN"):
        add_noise(np.array([0.1, np.nan, 0.2], np.float32), noise, 10.0)
    with pytest.raises(AudioError, match="NaN"):
        add_noise(_speechy(), np.array([0.1, np.inf], np.float32), 10.0)
    with pytest.raises(AudioError, match="finite"):
        add_noise(_speechy(), noise, float("nan"))
    with pytest.raises(AudioError, match="equal lengths"):
        measure_snr(_speechy(), noise[:100])
    with pytest.raises(AudioError, match="1-D"):
        add_noise(np.zeros((2, 100), np.float32), noise, 10.0)
    clean = _speechy()
    assert measure_snr(clean, clean) == float("inf")

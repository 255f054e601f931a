"""Augmentation effects, the Augmenter and augment_corpus (distill/augment.py, distill/rooms.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from assistant.errors import AudioError, ConfigError, CorpusError
from assistant.wav import read_wav, write_wav
from distill.augment import (
    AugmentConfig,
    Augmenter,
    apply_gain,
    augment_corpus,
    bandlimit,
    clip,
    measure_snr,
    mu_law,
    pitch_shift,
    reverberate,
    speed_perturb,
    synth_rir,
)
from distill.rooms import random_room, room_rir

SR = 16000


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _sine(freq: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def _speechy(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(100, 200)
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    return (0.3 * tone * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)


def _dominant(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * SR / x.size)


# --- effects -----------------------------------------------------------------------------------------------


def test_gain_changes_rms_by_the_requested_db() -> None:
    x = _speechy()
    for db in (-12.0, -3.5, 0.0, 6.0):
        assert 20 * math.log10(_rms(apply_gain(x, db)) / _rms(x)) == pytest.approx(db, abs=1e-3)


def test_bandlimit_removes_energy_outside_the_band() -> None:
    noise = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1
    freqs = np.fft.rfftfreq(noise.size, 1 / SR)

    before = np.abs(np.fft.rfft(noise.astype(np.float64))) ** 2

    def share(y: np.ndarray, mask: np.ndarray) -> float:
        """Fraction of the input's power in ``mask`` that is left in ``y``."""
        after = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
        return float(after[mask].sum() / before[mask].sum())

    low = bandlimit(noise, None, 4000, SR)
    assert low.shape == noise.shape and low.dtype == np.float32
    assert share(low, freqs > 4000) < 0.05
    assert share(low, freqs > 5000) < 1e-4  # -40 dB a quarter above the cut-off
    assert share(low, freqs < 3000) > 0.95  # the passband is kept
    phone = bandlimit(noise, 300, 3400, SR)
    assert share(phone, freqs < 200) < 1e-3 and share(phone, freqs > 4000) < 1e-3
    assert share(phone, (freqs > 600) & (freqs < 3000)) > 0.95
    np.testing.assert_array_equal(bandlimit(noise, 0, None, SR), noise)
    assert bandlimit(noise[:5], 300, 3400, SR).shape == (5,)
    with pytest.raises(AudioError, match="low_hz < high_hz"):
        bandlimit(noise, 3400, 300, SR)


def test_speed_perturb_changes_duration_and_pitch_together() -> None:
    x = _sine(440)
    fast = speed_perturb(x, 1.1)
    assert fast.size == pytest.approx(x.size / 1.1, abs=2)
    assert _dominant(fast) == pytest.approx(440 * 1.1, rel=0.01)
    slow = speed_perturb(x, 0.9)
    assert slow.size == pytest.approx(x.size / 0.9, abs=2)
    assert _dominant(slow) == pytest.approx(440 * 0.9, rel=0.01)
    with pytest.raises(AudioError, match="speed factor"):
        speed_perturb(x, 0.0)


@pytest.mark.parametrize("semitones", [-3.0, -1.0, 2.0, 4.0])
def test_pitch_shift_moves_frequency_and_keeps_duration(semitones: float) -> None:
    x = _sine(440)
    y = pitch_shift(x, semitones, SR)
    assert abs(y.size - x.size) <= 0.03 * x.size
    assert _dominant(y) == pytest.approx(440 * 2 ** (semitones / 12), rel=0.01)
    assert _rms(y) == pytest.approx(_rms(x), rel=0.05)


def test_clip_bounds_the_peak_and_keeps_the_rest() -> None:
    x = _sine(200, amp=0.9)
    y = clip(x, 0.4)
    assert np.abs(y).max() == pytest.approx(0.4)
    small = np.abs(x) < 0.4
    np.testing.assert_array_equal(y[small], x[small])
    with pytest.raises(AudioError, match="positive"):
        clip(x, 0.0)


def test_mu_law_is_a_lossy_but_close_round_trip() -> None:
    x = _speechy()
    y = mu_law(x)
    assert not np.array_equal(x, y)
    assert measure_snr(x, y) > 25
    assert np.abs(mu_law(x * 3)).max() <= 1.0


def _t20(rir: np.ndarray) -> float:
    """Schroeder backward integration: the -5..-25 dB decay extrapolated to 60 dB, below 1.5 kHz."""
    low = signal.sosfiltfilt(signal.butter(4, 1500, "lowpass", fs=SR, output="sos"), rir.astype(np.float64))
    edc = np.cumsum(low[::-1] ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0] + 1e-30)
    return 3 * float(np.argmax(edc_db < -25) - np.argmax(edc_db < -5)) / SR


@pytest.mark.parametrize("rt60", [0.3, 0.6])
def test_room_impulse_response_has_the_requested_decay(rt60: float) -> None:
    for seed in range(3):
        rng = np.random.default_rng(seed)
        room = random_room(rng, rt60, room_size=((6, 8), (5, 6), (2.5, 3)), distance=(2.5, 3.0))
        rir = room_rir(room, rng, SR)
        assert rir[0] == 1.0 and np.abs(rir[1:]).max() < 1.0  # direct path first, normalized
        assert rir.size == math.ceil(1.1 * rt60 * SR)
        assert _t20(rir) == pytest.approx(rt60, rel=0.25)


def test_reverberation_adds_a_tail_but_keeps_length_and_level() -> None:
    burst = np.zeros(SR, np.float32)
    burst[: SR // 4] = np.random.default_rng(1).standard_normal(SR // 4) * 0.1
    rir = synth_rir(np.random.default_rng(0), SR, rt60=0.6)
    wet = reverberate(burst, rir)
    assert wet.shape == burst.shape and wet.dtype == np.float32
    assert _rms(wet) == pytest.approx(_rms(burst), rel=1e-4)
    tail = slice(SR // 4 + SR // 20, SR // 2)
    assert _rms(burst[tail]) == 0.0 and _rms(wet[tail]) > 0.01 * _rms(wet)
    # the direct path keeps the timing: the cross-correlation peaks at lag 0
    lag = np.argmax(signal.correlate(wet, burst, mode="full")) - (burst.size - 1)
    assert lag == 0
    with pytest.raises(AudioError, match="empty impulse"):
        reverberate(burst, np.zeros(0, np.float32))


# --- configuration -----------------------------------------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    config = AugmentConfig(snr_db=(5.0, 10.0), colors=("pink",), babble_talkers=(2, 3))
    assert AugmentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert AugmentConfig.from_dict({}) == AugmentConfig()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"snr_db": (30.0, 10.0)}, r"AugmentConfig.snr_db: expected .*-20 <= low <= high <= 60"),
        ({"noise_prob": 1.5}, r"AugmentConfig.noise_prob: expected a number in \[0, 1\]"),
        ({"reverb_prob": "often"}, r"AugmentConfig.reverb_prob"),
        ({"speed": (0.9,)}, r"AugmentConfig.speed: expected"),
        ({"colors": ("white", "purple")}, r"AugmentConfig.colors: expected a list of white, pink, brown"),
        ({"household_kinds": ("blender",)}, r"AugmentConfig.household_kinds: expected a list of fan, hvac"),
        ({"bandlimit_high_hz": (3000.0, 9000.0)}, r"AugmentConfig.bandlimit_high_hz: .*7999"),
        ({"bandlimit_low_hz": (100.0, 4000.0)}, r"bandlimit_low_hz: expected every value below"),
        ({"babble_talkers": (2.5, 3)}, r"AugmentConfig.babble_talkers: expected \(integers"),
        ({"colored_weight": 0.0, "household_weight": 0.0, "babble_weight": 0.0}, "all 0"),
    ],
)
def test_config_validation_names_the_field_and_the_allowed_values(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AugmentConfig.from_dict(values)


def test_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) snr \(known: .*snr_db"):
        AugmentConfig.from_dict({"snr": (1, 2)})


# --- the augmenter -----------------------------------------------------------------------------------------

def _every_prob(value: float) -> AugmentConfig:
    return AugmentConfig.from_dict({f: value for f in AugmentConfig().to_dict() if f.endswith("_prob")})


_EVERYTHING = _every_prob(1.0)


def test_augmenter_is_deterministic_given_the_seed() -> None:
    aug = Augmenter(_EVERYTHING, [_speechy(0.5, s) for s in range(4)])
    x = _speechy()
    a, rec_a = aug.augment(x, 5)
    b, rec_b = aug.augment(x, 5)
    c, rec_c = aug.augment(x, 6)
    np.testing.assert_array_equal(a, b)
    assert rec_a == rec_b and rec_a["seed"] == 5 and "clip" in rec_a
    assert not np.array_equal(a, c) and rec_a != rec_c


def test_augmenter_output_is_safe_and_its_record_is_json() -> None:
    config = AugmentConfig.from_dict({**_EVERYTHING.to_dict(), "gain_db": [10.0, 20.0], "clip_prob": 0.0})
    aug = Augmenter(config, [_speechy(0.5, s) for s in range(4)], babble_ids=["a", "b", "c", "d"])
    seen: set[str] = set()
    for seed in range(12):
        y, record = aug.augment(_speechy(0.8), seed)
        assert y.dtype == np.float32 and np.isfinite(y).all() and np.abs(y).max() <= 1.0
        assert json.loads(json.dumps(record)) == record
        assert record["normalize_db"] < 0  # +10..20 dB on a 0.6-peak clip must have been scaled back
        assert {"speed", "pitch_semitones", "reverb", "noise", "bandlimit", "gain_db", "codec"} <= set(record)
        seen.add(record["noise"]["type"])
        if record["noise"]["type"] == "babble":
            assert set(record["noise"]["sources"]) <= {"a", "b", "c", "d"}
        assert y.size == pytest.approx(0.8 * SR / record["speed"], abs=2)
    assert seen == {"colored", "household", "babble"}


def test_augmenter_applies_nothing_when_every_probability_is_zero() -> None:
    config = _every_prob(0.0)
    x = _speechy()
    y, record = Augmenter(config).augment(x, 1)
    np.testing.assert_array_equal(x, y)
    assert record == {"seed": 1}


@pytest.mark.parametrize("snr", [24.0, 15.0, 9.0, 6.0, 0.0])
@pytest.mark.parametrize("family", ["colored", "household", "babble"])
def test_augmenter_snr_is_within_half_a_db(snr: float, family: str) -> None:
    weights = {f"{name}_weight": float(name == family) for name in ("colored", "household", "babble")}
    aug = Augmenter(AugmentConfig.noise_only(snr, **weights), [_speechy(0.7, s) for s in range(5)])
    clean = _speechy(1.0, seed=9)
    for seed in range(3):
        y, record = aug.augment(clean, seed)
        assert record["noise"]["type"] == family and record["noise"]["snr_db"] == snr
        # a peak above full scale was scaled back as a whole (recorded): the reference scales with it
        reference = clean * np.float32(10 ** (record.get("normalize_db", 0.0) / 20))
        assert abs(measure_snr(reference, y) - snr) < 0.5


def test_augmenter_babble_needs_a_pool() -> None:
    with pytest.raises(ConfigError, match="babble pool is empty"):
        Augmenter(AugmentConfig.noise_only(colored_weight=0.0, household_weight=0.0))
    aug = Augmenter(AugmentConfig.noise_only())  # babble weight ignored without a pool
    assert all(aug.augment(_speechy(), s)[1]["noise"]["type"] != "babble" for s in range(10))


def test_augmenter_odd_inputs() -> None:
    aug = Augmenter(_EVERYTHING, [_speechy(0.5)])
    with pytest.raises(AudioError, match="empty"):
        aug.augment(np.zeros(0, np.float32), 0)
    with pytest.raises(AudioError, match="NaN"):
        aug.augment(np.array([0.0, np.nan, 0.1], np.float32), 0)
    silent, record = Augmenter(AugmentConfig.noise_only()).augment(np.zeros(SR, np.float32), 0)
    assert np.isfinite(silent).all() and "snr_db" not in record["noise"]
    assert 20 * math.log10(_rms(silent)) == pytest.approx(record["noise"]["level_dbfs"], abs=0.01)
    for n in (1, 7, 100):
        y, _ = aug.augment(_speechy(0.01)[:n] + 0.01, 3)
        assert y.size > 0 and np.isfinite(y).all() and np.abs(y).max() <= 1.0


# --- a corpus ----------------------------------------------------------------------------------------------


def _tiny_corpus(root: Path) -> Path:
    rows = []
    for i, split in enumerate(["train", "train", "test", "test"]):
        uid = f"utt{i}"
        write_wav(root / "audio" / f"{uid}.wav", _speechy(0.4 + 0.1 * i, seed=i))
        rows.append({"id": uid, "audio": f"audio/{uid}.wav", "text": "turn on the light", "intent": "lights",
                     "slots": {"state": "on"}, "voice": f"v{i}", "engine": "espeak-ng", "split": split,
                     "teacher": {"label": i}})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "manifest.jsonl").read_text().splitlines()]


def test_augment_corpus_writes_valid_wavs_and_keeps_keys(tmp_path: Path) -> None:
    corpus = _tiny_corpus(tmp_path / "corpus")
    config = AugmentConfig(noise_prob=1.0, colored_weight=0.0, household_weight=0.0)  # babble only
    out = augment_corpus(corpus, tmp_path / "aug", config, copies=2, seed=3, workers=1)
    rows = _read(out)
    sources = {r["id"]: r for r in _read(corpus)}
    assert [r["id"] for r in rows] == [f"utt{i}-aug{k}" for i in range(4) for k in range(2)]
    for row in rows:
        src = sources[row["source_id"]]
        kept = [k for k in src if k not in ("id", "audio")]
        assert {k: row[k] for k in kept} == {k: src[k] for k in kept}
        audio = read_wav(out / row["audio"])
        assert audio.size == round(row["duration_s"] * SR) and np.abs(audio).max() <= 1.0
        noise = row["augment"]["noise"]
        same_split = {i for i, s in sources.items() if s["split"] == src["split"]} - {src["id"]}
        # never from another split, never the clip itself
        assert noise["type"] == "babble" and set(noise["sources"]) <= same_split
    assert json.loads((out / "corpus.json").read_text())["augment"]["copies"] == 2
    with pytest.raises(CorpusError, match="already exists"):
        augment_corpus(corpus, out, config, workers=1)


def test_augment_corpus_is_deterministic_for_any_worker_count(tmp_path: Path) -> None:
    corpus = _tiny_corpus(tmp_path / "corpus")
    a = augment_corpus(corpus, tmp_path / "a", seed=1, workers=1)
    b = augment_corpus(corpus, tmp_path / "b", seed=1, workers=2)
    c = augment_corpus(corpus, tmp_path / "c", seed=2, workers=1)
    assert _read(a) == _read(b) and _read(a) != _read(c)
    for row in _read(a):
        assert (a / row["audio"]).read_bytes() == (b / row["audio"]).read_bytes()


def test_augment_corpus_fixed_snr_condition(tmp_path: Path) -> None:
    corpus = _tiny_corpus(tmp_path / "corpus")
    out = augment_corpus(corpus, tmp_path / "six", snr_db=6.0, workers=1)  # no config: noise only
    for row in _read(out):
        assert row["augment"]["noise"]["snr_db"] == 6.0
        assert set(row["augment"]) <= {"seed", "copy", "noise", "normalize_db"}
        clean = read_wav(corpus / f"audio/{row['source_id']}.wav")
        assert abs(measure_snr(clean, read_wav(out / row["audio"])) - 6.0) < 0.5  # after 16-bit rounding


def test_augment_corpus_reports_a_broken_clip(tmp_path: Path) -> None:
    corpus = _tiny_corpus(tmp_path / "corpus")
    (corpus / "audio" / "utt2.wav").write_bytes(b"not a wav")
    with pytest.raises(CorpusError, match="utt2"):
        augment_corpus(corpus, tmp_path / "out", workers=1)

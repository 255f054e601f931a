"""Every installed TTS engine speaks a short command as plausible 16 kHz audio, honouring its parameters."""

from __future__ import annotations

import logging
import random
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import AudioError, ConfigError
from distill import tts
from distill.tts import ENGINE_NAMES, Engine, Voice, list_voices, load_engines, make_engine

TEXT = "turn on the kitchen lights"
# the parameter that sets speed, and a slow and a fast value of it, per engine
SPEED = {"espeak-ng": ("rate", 120, 240), "flite": ("rate", 0.7, 1.4), "festival": ("rate", 0.7, 1.4),
         "piper": ("length_scale", 1.4, 0.7)}


def _engine(name: str) -> Engine:
    engine = make_engine(name)
    if not engine.is_available():
        pytest.skip(f"{name} is not installed here (deploy/install-system-deps.sh installs it)")
    return engine


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_engine_speaks_plausible_audio_and_honours_speed(name: str, tmp_path: Path) -> None:
    engine = _engine(name)
    voices = engine.list_voices()
    assert voices and all(v.engine == name and v.id.startswith(f"{name}:") for v in voices)
    voice = voices[0]
    params = engine.sample_params(random.Random(0))
    audio = engine.synthesize(TEXT, voice.with_params(params), tmp_path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.3 <= audio.size / 16000 <= 4.0
    assert _rms(audio) > 0.01
    assert np.abs(audio).max() <= 1.0
    key, slow, fast = SPEED[name]
    slow_audio = engine.synthesize(TEXT, voice.with_params({**params, key: slow}), tmp_path)
    fast_audio = engine.synthesize(TEXT, voice.with_params({**params, key: fast}), tmp_path)
    assert slow_audio.size > 1.3 * fast_audio.size


def test_espeak_output_is_resampled_to_16k_without_changing_duration(tmp_path: Path) -> None:
    engine = _engine("espeak-ng")
    native = tmp_path / "native.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+f3", "-s", "150", "-p", "60", "-w", str(native), TEXT], check=True)
    with wave.open(str(native)) as w:
        seconds, rate = w.getnframes() / w.getframerate(), w.getframerate()
    assert rate != 16000  # otherwise this test proves nothing
    audio = engine.synthesize(TEXT, Voice("espeak-ng", "en-us+f3").with_params({"rate": 150, "pitch": 60}), tmp_path)
    assert audio.size == pytest.approx(seconds * 16000, abs=2)


def test_espeak_voices_cover_accents_and_variants() -> None:
    voices = {v.id: v for v in _engine("espeak-ng").list_voices()}
    assert len({v.name.split("+")[0] for v in voices.values()}) == 8
    assert "espeak-ng:en-us+f3" in voices and "espeak-ng:en-gb-scotland+klatt" in voices
    assert "espeak-ng:en-us+fast" not in voices
    # one speaker (variant) across the accents
    assert voices["espeak-ng:en-us+f3"].speaker_id == voices["espeak-ng:en-029+f3"].speaker_id


def test_failures_raise_audio_error_naming_voice_and_text(tmp_path: Path) -> None:
    espeak = _engine("espeak-ng")
    with pytest.raises(AudioError, match=r"espeak-ng:xx-nope .*'hello'"):
        espeak.synthesize("hello", Voice("espeak-ng", "xx-nope"), tmp_path)
    with pytest.raises(AudioError, match="empty text"):
        espeak.synthesize("   ", Voice("espeak-ng", "en-us"), tmp_path)
    with pytest.raises(ConfigError, match="belongs to engine flite"):
        espeak.synthesize("hello", Voice("flite", "slt"), tmp_path)
    with pytest.raises(AudioError, match="timed out"):
        tts.EspeakEngine(timeout_s=1e-4).synthesize("hello " * 50, Voice("espeak-ng", "en-us"), tmp_path)
    with pytest.raises(AudioError, match="unknown flite voice"):
        _engine("flite").synthesize("hello", Voice("flite", "nobody"), tmp_path)
    with pytest.raises(AudioError, match="festival:no_such_voice"):
        _engine("festival").synthesize("hello", Voice("festival", "no_such_voice"), tmp_path)


class _MissingFlite(tts.FliteEngine):
    binary = "flite-not-installed-here"


def test_missing_engine_is_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(tts.ENGINE_CLASSES, "flite", _MissingFlite)
    with caplog.at_level(logging.WARNING):
        engines = load_engines(["flite", "espeak-ng"])
    assert "flite" not in engines
    assert "TTS engine flite is not installed" in caplog.text
    assert _MissingFlite().list_voices() == []
    with pytest.raises(AudioError, match="cannot run flite-not-installed-here"):
        _MissingFlite().synthesize("hello", Voice("flite", "slt"), tmp_path)
    with pytest.raises(ConfigError, match="unknown engine.*allowed: espeak-ng, flite, festival, piper"):
        load_engines(["espeak"])


def test_voice_ids_keys_and_patterns() -> None:
    voice = Voice("espeak-ng", "en-us+f3", speaker="espeak-ng+f3")
    bound = voice.with_params({"rate": 150, "pitch": 40})
    assert bound.id == "espeak-ng:en-us+f3" and bound.params == (("pitch", 40), ("rate", 150))
    assert bound.key(TEXT) == voice.with_params({"pitch": 40, "rate": 150}).key(TEXT)
    assert bound.key(TEXT) != voice.with_params({"pitch": 41, "rate": 150}).key(TEXT)
    assert bound.key(TEXT) != bound.key("turn off the kitchen lights")
    assert Voice.from_dict(bound.to_dict()) == bound
    engines = load_engines(["espeak-ng", "flite"])
    picked = list_voices(engines, ["flite:*", "espeak-ng:en-us+f?"])
    assert {v.id for v in picked} >= {"flite:slt", "espeak-ng:en-us+f3"}
    assert all(v.engine == "flite" or v.name.startswith("en-us+f") for v in picked)
    with pytest.raises(ConfigError, match="'piper:nobody' matches no installed voice"):
        list_voices(engines, ["piper:nobody"])


def test_festival_diphone_voice_honours_speed(tmp_path: Path) -> None:
    engine = _engine("festival")
    names = [v.name for v in engine.list_voices() if v.name.endswith("_diphone")]
    if not names:
        pytest.skip("no festival diphone voice installed")
    voice = Voice("festival", names[0])
    slow = engine.synthesize(TEXT, voice.with_params({"rate": 0.7, "pitch": 2.0}), tmp_path)
    fast = engine.synthesize(TEXT, voice.with_params({"rate": 1.4, "pitch": -2.0}), tmp_path)
    assert slow.size > 1.3 * fast.size

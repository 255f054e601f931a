"""The endpointer on synthetic speech (espeak-ng if installed, else harmonic tones) padded with known
silence and noise: detected boundaries within 150 ms of the truth, pre-roll, max length, clicks, early stop,
the listen gate."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from assistant.config import EndpointConfig, HubConfig
from assistant.endpoint import Endpointer, find_utterances, level_dbfs, pcm16, speech_spans
from assistant.errors import ConfigError
from assistant.wav import SAMPLE_RATE, read_wav

TOLERANCE_S = 0.15
PHRASES = ("turn off the kitchen lights", "set the thermostat to twenty one degrees", "what time is it")


def harmonic(seconds: float, f0: float = 160.0, seed: int = 0) -> np.ndarray:
    """A voiced-speech stand-in: harmonics with vibrato and syllable-like amplitude modulation."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t + seed))
    phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
    x = sum(np.sin(h * phase) / h for h in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.2 * x * np.minimum(1, t / 0.02) * np.minimum(1, (t[-1] - t) / 0.02)).astype(np.float32)


@pytest.fixture(scope="module")
def phrases(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Spoken commands from espeak-ng (written with -w), trimmed to the speech; tones when it is missing."""
    if shutil.which("espeak-ng") is None:
        return [harmonic(1.2 + 0.3 * i, 120 + 40 * i, i) for i in range(len(PHRASES))]
    out = []
    folder = tmp_path_factory.mktemp("espeak")
    for i, text in enumerate(PHRASES):
        path = folder / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, timeout=30)
        x = read_wav(path)
        loud = np.flatnonzero(np.abs(x) >= 0.02 * np.max(np.abs(x)))
        out.append(x[loud[0] : loud[-1] + 1])
    return out


def noise(seconds: float, level: float, seed: int) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def compose(parts: list[np.ndarray], gaps_s: list[float], noise_level: float, seed: int = 0
            ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """``gap0 part0 gap1 part1 ...`` over steady noise; returns the audio and each part's (start, end) in s."""
    pieces, truth, pos = [], [], 0
    for part, gap in zip(parts, gaps_s, strict=False):
        pieces += [np.zeros(int(gap * SAMPLE_RATE), np.float32), part]
        pos += int(gap * SAMPLE_RATE)
        truth.append((pos / SAMPLE_RATE, (pos + len(part)) / SAMPLE_RATE))
        pos += len(part)
    pieces.append(np.zeros(int(gaps_s[len(parts)] * SAMPLE_RATE), np.float32))
    x = np.concatenate(pieces)
    return x + noise(len(x) / SAMPLE_RATE, noise_level, seed), truth


def assert_near(spans: list[tuple[float, float]], truth: list[tuple[float, float]]) -> None:
    assert len(spans) == len(truth), (spans, truth)
    for (start, end), (true_start, true_end) in zip(spans, truth, strict=True):
        assert abs(start - true_start) <= TOLERANCE_S and abs(end - true_end) <= TOLERANCE_S, (spans, truth)


@pytest.mark.parametrize("noise_level", [0.0, 0.001, 0.005])
@pytest.mark.parametrize("aggressiveness", [0, 2, 3])
def test_boundaries_of_speech_in_silence_and_noise(phrases: list[np.ndarray], noise_level: float,
                                                   aggressiveness: int) -> None:
    audio, truth = compose(phrases, [0.8, 1.2, 1.0, 1.0], noise_level, seed=aggressiveness)
    found = find_utterances(audio, EndpointConfig(aggressiveness=aggressiveness))
    assert_near(speech_spans(found), truth)
    assert all(u.reason == "silence" for u in found)


@pytest.mark.parametrize("frame_ms", [10, 30])
def test_other_frame_sizes(phrases: list[np.ndarray], frame_ms: int) -> None:
    audio, truth = compose(phrases[:2], [0.5, 1.0, 1.0], 0.002)
    assert_near(speech_spans(find_utterances(audio, EndpointConfig(frame_ms=frame_ms))), truth)


def test_pre_and_post_roll_are_kept(phrases: list[np.ndarray]) -> None:
    audio, truth = compose(phrases[:1], [1.0, 1.0], 0.002)
    for pre_ms, post_ms in ((300, 100), (0, 0), (600, 250)):
        (u,) = find_utterances(audio, EndpointConfig(pre_roll_ms=pre_ms, post_roll_ms=post_ms))
        assert u.audio_start_s == pytest.approx(u.start_s - pre_ms / 1000, abs=1e-9)
        first = round(u.audio_start_s * SAMPLE_RATE)
        np.testing.assert_array_equal(u.audio, audio[first : first + len(u.audio)])  # the stream's own samples
        assert u.duration_s == pytest.approx(u.end_s + post_ms / 1000 - u.audio_start_s, abs=1e-9)


def test_pre_roll_is_limited_by_what_was_heard() -> None:
    audio = np.concatenate([np.zeros(1600, np.float32), harmonic(1.0), np.zeros(16000, np.float32)])
    (u,) = find_utterances(audio, EndpointConfig(pre_roll_ms=500))
    assert u.audio_start_s == 0.0 and u.start_s == pytest.approx(0.1, abs=0.05)


def test_max_length_cuts_and_waits_for_silence() -> None:
    long_speech = harmonic(4.0)
    audio, truth = compose([long_speech, harmonic(1.0, 200)], [0.5, 1.0, 1.0], 0.001)
    config = EndpointConfig(max_utterance_s=1.5)
    first, second = find_utterances(audio, config)
    assert first.reason == "max_length" and first.duration_s <= 1.5 + 0.02
    assert abs(first.start_s - truth[0][0]) <= TOLERANCE_S
    # the remaining 2.5 s of the long speech are not a new command; the next speech is
    assert second.reason == "silence" and abs(second.start_s - truth[1][0]) <= TOLERANCE_S


def test_min_speech_rejects_clicks_and_short_bursts() -> None:
    click = np.zeros(160, np.float32)
    click[:8] = [0.9, -0.9, 0.8, -0.7, 0.5, -0.3, 0.2, -0.1]
    burst = harmonic(0.15, 220)
    audio, truth = compose([click, burst, harmonic(1.0)], [1.0, 1.0, 1.0, 1.0], 0.001)
    assert_near(speech_spans(find_utterances(audio)), truth[2:])  # min_speech_ms 250: only the real speech
    assert_near(speech_spans(find_utterances(audio, EndpointConfig(min_speech_ms=50))), truth[1:])


def test_steady_noise_and_silence_are_not_speech() -> None:
    for x in (noise(6.0, 0.01, 1), noise(6.0, 0.1, 2), np.zeros(6 * SAMPLE_RATE, np.float32)):
        assert find_utterances(x) == []


def test_stream_in_odd_pieces_equals_the_whole(phrases: list[np.ndarray]) -> None:
    audio, _ = compose(phrases, [0.5, 1.0, 1.0, 1.0], 0.002)
    whole = find_utterances(audio)
    endpointer, found, i = Endpointer(), [], 0
    rng = np.random.default_rng(3)
    while i < len(audio):
        n = int(rng.integers(1, 2000))
        found += endpointer.process(audio[i : i + n])
        i += n
    assert [(u.start_s, u.end_s, len(u.audio)) for u in found] == [(u.start_s, u.end_s, len(u.audio)) for u in whole]


def test_end_of_stream_flushes_speech_in_progress(phrases: list[np.ndarray]) -> None:
    audio = np.concatenate([np.zeros(8000, np.float32), phrases[0]])
    endpointer = Endpointer()
    assert endpointer.process(audio) == []
    last = endpointer.flush()
    assert last is not None and last.reason == "end_of_stream"
    assert abs(last.end_s - len(audio) / SAMPLE_RATE) <= TOLERANCE_S


class StopAfter:
    """An EarlyStop that is confident once it has heard ``seconds`` of the utterance."""

    def __init__(self, seconds: float) -> None:
        self.samples, self.heard, self.resets = int(seconds * SAMPLE_RATE), 0, 0

    def reset(self) -> None:
        self.heard, self.resets = 0, self.resets + 1

    def feed(self, audio: np.ndarray) -> bool:
        self.heard += len(audio)
        return self.heard >= self.samples


def test_early_stop_ends_the_utterance_when_the_model_is_confident() -> None:
    audio, truth = compose([harmonic(2.0), harmonic(1.0, 220)], [0.5, 1.0, 1.0], 0.001)
    stop = StopAfter(0.8)
    first, second = find_utterances(audio, EndpointConfig(pre_roll_ms=300), early_stop=stop)
    assert first.reason == "confident" and first.duration_s == pytest.approx(0.8, abs=0.021)
    assert first.end_s < truth[0][1] - 0.5
    assert second.reason == "confident" and stop.resets == 2  # the rest of the first was not taken as a command


def test_early_stop_waits_for_min_speech() -> None:
    audio, _ = compose([harmonic(1.5)], [0.5, 1.0], 0.001)
    (u,) = find_utterances(audio, EndpointConfig(pre_roll_ms=0, min_speech_ms=600), early_stop=StopAfter(0.0))
    assert u.reason == "confident" and u.end_s - u.start_s == pytest.approx(0.6, abs=0.021)


def test_a_failing_early_stop_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def reset(self) -> None:
            pass

        def feed(self, audio: np.ndarray) -> bool:
            raise RuntimeError("model crashed")

    audio, truth = compose([harmonic(1.0)], [0.5, 1.0], 0.001)
    found = find_utterances(audio, early_stop=Broken())
    assert_near(speech_spans(found), truth)
    assert found[0].reason == "silence"
    assert "early-stop check failed" in caplog.text



def test_listen_gate_opens_for_one_utterance() -> None:
    speech, silence = harmonic(1.0), np.zeros(SAMPLE_RATE, np.float32)
    endpointer = Endpointer(listen=True, listen_timeout_s=3.0)
    assert endpointer.process(np.concatenate([silence, speech, silence])) == []  # not asked to listen
    endpointer.listen()
    (u,) = endpointer.process(np.concatenate([speech, silence]))
    assert u.reason == "silence" and not endpointer.listening
    assert endpointer.process(np.concatenate([speech, silence])) == []  # one command per listen
    endpointer.listen(timeout_s=0.5)
    assert endpointer.process(np.concatenate([silence, speech, silence])) == []  # speech came too late
    endpointer.listen(timeout_s=2.0)
    assert len(endpointer.process(np.concatenate([silence, speech, silence]))) == 1


def test_reset_forgets_speech_in_progress() -> None:
    endpointer = Endpointer()
    endpointer.process(np.concatenate([np.zeros(8000, np.float32), harmonic(0.5)]))
    assert endpointer.state == "speech"
    endpointer.reset()
    assert endpointer.state == "idle" and endpointer.pos == 0 and endpointer.flush() is None


def test_pure_helpers() -> None:
    assert np.frombuffer(pcm16(np.array([0.0, 0.5, -1.0, 2.0], np.float32)), "<i2").tolist() == \
        [0, 16384, -32767, 32767]
    assert level_dbfs(np.zeros(320, np.float32)) == -200.0
    assert level_dbfs(np.full(320, 0.1, np.float32)) == pytest.approx(-20.0, abs=1e-4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("audio: {endpoint: {frame_ms: 25}}", "hub.yaml: audio.endpoint.frame_ms: expected 10, 20 or 30"),
        ("audio: {endpoint: {aggressiveness: 4}}", "hub.yaml: audio.endpoint.aggressiveness: expected 0, 1, 2 or 3"),
        ("audio: {endpoint: {trailing_silence: 3}}", "hub.yaml: audio.endpoint.trailing_silence: unknown key"),
        ("audio: {endpoint: {max_utterance_s: 0.2}}", "audio.endpoint.max_utterance_s: must leave room for"),
        ("audio: {endpoint: {min_level_dbfs: 3}}", "audio.endpoint.min_level_dbfs: expected a number in [-120, 0]"),
        ("audio: {format: mp3, source: stdin}", "audio.format: expected 'u8', 's16le', 's24le', 's32le' or 'f32le'"),
        ("audio: {source: wav}", "audio.paths: source 'wav' needs at least one WAV file"),
        ("audio: {satellites: [a/b]}", "audio.satellites: expected a list of site ids"),
        ("recognizer: {early_stop: 2}", "recognizer.early_stop: expected a number > 0.0 and <= 1.0, got 2"),
    ],
)
def test_config_errors_name_the_key(text: str, message: str) -> None:
    import yaml

    with pytest.raises(ConfigError) as err:
        HubConfig.from_dict(yaml.safe_load(text), env={})
    assert message in str(err.value)


def test_config_round_trip() -> None:
    import yaml

    config = HubConfig.from_dict(yaml.safe_load(
        "audio: {source: satellite, satellites: [a, b], listen: true, endpoint: {frame_ms: 30, pre_roll_ms: 0}}\n"
        "recognizer: {early_stop: 0.9}"), env={})
    assert config.audio.endpoint == EndpointConfig(frame_ms=30, pre_roll_ms=0)
    assert config.audio.satellites == ("a", "b") and config.recognizer.early_stop == 0.9
    again = HubConfig.from_dict(config.to_dict(), env={})
    assert again.audio == config.audio and again.recognizer == config.recognizer

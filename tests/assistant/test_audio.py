"""Audio sources: WAV files (odd ones too), raw PCM on a pipe, satellite frames over a real mosquitto, and the
microphone source driven through a stand-in for sounddevice's stream (there is no microphone on this machine)."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import paho.mqtt.client as paho
import pytest

from assistant.audio import (
    Framer,
    LogOnce,
    MicSource,
    RawSource,
    SatelliteSource,
    StreamResampler,
    Trim,
    WavSource,
    decode_raw,
    sanitize,
    speech_bounds,
)
from assistant.config import MqttConfig
from assistant.errors import AudioError
from assistant.wav import SAMPLE_RATE, read_wav, resample, to_mono, write_wav
from tests.wavs import write_pcm_wav

if TYPE_CHECKING:
    from tests.assistant.conftest import Broker

FRAME = 320


def sine(freq: float, rate: int, seconds: float, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def dominant_hz(x: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


def wav_bytes(frames: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    frames = frames.reshape(len(frames), -1)
    with wave.open(buf, "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.round(frames * 32767), -32768, 32767).astype("<i2").tobytes())
    return buf.getvalue()


def check_frames(frames: list[np.ndarray]) -> np.ndarray:
    assert frames and all(f.dtype == np.float32 and f.shape == (FRAME,) for f in frames)
    audio = np.concatenate(frames)
    assert np.all(np.isfinite(audio)) and np.max(np.abs(audio)) <= 1.0
    return audio


# --- pure parts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 11111])
def test_stream_resampler_equals_resampling_the_whole_stream(rate: int) -> None:
    rng = np.random.default_rng(rate)
    x = rng.standard_normal(rate // 2).astype(np.float32)
    resampler, out, i = StreamResampler(rate), [], 0
    while i < len(x):
        n = int(rng.integers(1, 2000))
        out.append(resampler.process(x[i : i + n]))
        i += n
    out.append(resampler.flush())
    np.testing.assert_allclose(np.concatenate(out), resample(x, rate, SAMPLE_RATE), atol=1e-6)


def _tone(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (level * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("floor_dbfs", [-200.0, -60.0, -40.0])
def test_speech_bounds_keep_the_margins_around_the_loud_part(floor_dbfs: float) -> None:
    rng = np.random.default_rng(0)
    quiet = (rng.standard_normal(SAMPLE_RATE) * 10 ** (floor_dbfs / 20)).astype(np.float32)
    x = np.concatenate([quiet, _tone(0.5), quiet])  # the tone is samples 16000-24000, at -13 dBFS
    start, end = speech_bounds(x, Trim(before_s=0.3, after_s=0.2))
    assert abs(start - (16000 - 4800)) <= 160 and abs(end - (24000 + 3200)) <= 160
    assert speech_bounds(x, Trim(before_s=5.0, after_s=5.0)) == (0, len(x))  # margins end at the clip's edges


def test_speech_bounds_leave_quiet_steady_and_short_clips_whole() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(2 * SAMPLE_RATE) * 0.1).astype(np.float32)
    for x in (np.zeros(SAMPLE_RATE, np.float32), noise, _tone(1.0), _tone(0.02), np.zeros(0, np.float32)):
        assert speech_bounds(x) == (0, len(x))
    # a loud part 45 dB above the rest of the clip: below_peak_db and above_floor_db decide which frames are
    # loud; one 20 dB above a noise floor is loud, but a clip with no quiet part (min_range_db) is not trimmed
    x = np.concatenate([_tone(1.0, 0.3 * 10 ** (-45 / 20)), _tone(0.5), _tone(1.0, 0.3 * 10 ** (-45 / 20))])
    assert speech_bounds(x, Trim(0.0, 0.0)) == (16000, 24000)
    assert speech_bounds(x, Trim(0.0, 0.0, below_peak_db=50.0, above_floor_db=0.0)) == (0, len(x))
    x = np.concatenate([noise * 0.1, noise[:8000], noise * 0.1])
    assert speech_bounds(x, Trim(0.0, 0.0, min_range_db=15.0)) == (32000, 40000)
    assert speech_bounds(x, Trim(0.0, 0.0)) == (0, len(x))


def test_sanitize_replaces_nonfinite_and_clips() -> None:
    x, nonfinite, over = sanitize(np.array([0.5, np.nan, np.inf, -np.inf, 1.5, -3.0], np.float32))
    assert x.tolist() == [0.5, 0.0, 1.0, -1.0, 1.0, -1.0] and (nonfinite, over) == (3, 2)


def test_decode_raw_formats() -> None:
    ints = np.array([0, 16384, -16384, 32767, -32768], "<i2")
    np.testing.assert_allclose(decode_raw(ints.tobytes(), "s16le", 1)[:, 0], ints / 32768.0)
    np.testing.assert_allclose(decode_raw(np.array([128, 192, 64], np.uint8).tobytes(), "u8", 1)[:, 0],
                               [0.0, 0.5, -0.5])
    s24 = b"".join(int(v).to_bytes(3, "little", signed=True) for v in (0, 1 << 22, -(1 << 22)))
    np.testing.assert_allclose(decode_raw(s24, "s24le", 1)[:, 0], [0.0, 0.5, -0.5])
    np.testing.assert_allclose(decode_raw(np.array([1 << 30, -(1 << 30)], "<i4").tobytes(), "s32le", 1)[:, 0],
                               [0.5, -0.5])
    stereo = decode_raw(np.array([0.25, -0.25, 0.5, 0.0], "<f4").tobytes(), "f32le", 2)
    assert stereo.shape == (2, 2) and stereo[1].tolist() == [0.5, 0.0]
    with pytest.raises(AudioError, match="expected one of u8, s16le"):
        decode_raw(b"", "mulaw", 1)


def test_framer_converts_and_logs_each_problem_once(caplog: pytest.LogCaptureFixture) -> None:
    problems = LogOnce()
    framer = Framer(44100, FRAME, name="test", problems=problems)
    block = sine(1000, 44100, 0.02, channels=2)  # 882 stereo samples a block, like a 20 ms PortAudio block
    block[5, 0] = np.nan
    block[7, 1] = 4.0
    frames: list[np.ndarray] = []
    with caplog.at_level(logging.WARNING, logger="assistant.audio"):
        for _ in range(50):
            frames += framer.push(block)
        frames += framer.flush()
    audio = check_frames(frames)
    assert len(frames) == -(-round(50 * 882 * SAMPLE_RATE / 44100) // FRAME)
    assert abs(dominant_hz(audio[1000:-1000]) - 1000) < 20
    messages = [r.getMessage() for r in caplog.records]
    assert sum("NaN" in m for m in messages) == 1 and sum("clipped" in m for m in messages) == 1
    assert problems.counts["nonfinite"] == 50 and problems.counts["range"] == 50


def test_log_once_logs_again_after_forget(caplog: pytest.LogCaptureFixture) -> None:
    log = LogOnce()
    with caplog.at_level(logging.WARNING, logger="assistant.audio"):
        assert log("gone", "device %s gone", "x") and not log("gone", "device %s gone", "x")
        log.forget("gone")
        assert log("gone", "device %s gone", "x")
    assert [r.getMessage() for r in caplog.records] == ["device x gone"] * 2
    assert log.counts["gone"] == 3 and log.summary() == "gone: 3"


# --- WAV files -------------------------------------------------------------------------------------


def test_wav_source_reads_odd_files_and_skips_broken_ones(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = [
        write_pcm_wav(tmp_path / "8k-stereo.wav", sine(300, 8000, 0.5, channels=2), 8000, 2),
        write_pcm_wav(tmp_path / "8bit.wav", sine(500, 16000, 0.3), 16000, 1),
        write_pcm_wav(tmp_path / "44k.wav", sine(700, 44100, 0.4), 44100, 2),
        tmp_path / "broken.wav",
        tmp_path / "missing.wav",
    ]
    files[3].write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    expected = [read_wav(p) for p in files[:3]]
    with caplog.at_level(logging.ERROR, logger="assistant.audio"):
        frames = list(WavSource(files))
    audio = check_frames(frames)
    assert len(frames) == sum(-(-len(x) // FRAME) for x in expected)
    pos = 0
    for x, hz in zip(expected, (300, 500, 700), strict=True):
        np.testing.assert_allclose(audio[pos : pos + len(x)], x, atol=1e-6)
        assert abs(dominant_hz(audio[pos : pos + len(x)]) - hz) < 10
        pos += -(-len(x) // FRAME) * FRAME
    skipped = [r.getMessage() for r in caplog.records]
    assert any("broken.wav" in m for m in skipped) and any("missing.wav: no such file" in m for m in skipped)


def test_wav_source_replaces_nan_samples(tmp_path: Path) -> None:
    data = np.zeros(3200, "<f4")
    data[100:200] = np.nan
    import struct

    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data.nbytes) + data.tobytes()
    path = tmp_path / "nan.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    source = WavSource([path])
    audio = check_frames(list(source))
    assert len(audio) == 3200 and source.problems.counts["nonfinite"] == 1


def test_wav_source_in_real_time_and_close(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    write_wav(path, sine(440, 16000, 0.4))
    start = time.monotonic()
    assert len(list(WavSource([path], realtime=True))) == 20
    assert time.monotonic() - start >= 0.35  # 20 frames of 20 ms, paced
    start = time.monotonic()
    assert len(list(WavSource([path]))) == 20
    assert time.monotonic() - start < 0.3

    write_wav(path, np.zeros(16000 * 30, np.float32))
    source = WavSource([path], realtime=True)
    threading.Timer(0.2, source.close).start()
    start = time.monotonic()
    count = sum(1 for _ in source)
    assert time.monotonic() - start < 1.0 and count < 30


# --- raw PCM on a pipe -----------------------------------------------------------------------------


def test_raw_source_reads_s16le_from_a_pipe_in_odd_pieces() -> None:
    x = sine(440, 16000, 0.5)
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()
    read_fd, write_fd = os.pipe()

    def writer() -> None:
        rng = np.random.default_rng(0)
        i = 0
        while i < len(pcm):
            n = int(rng.integers(1, 999))  # cuts samples in half now and then
            os.write(write_fd, pcm[i : i + n])
            i += n
            time.sleep(0.0005)
        os.close(write_fd)

    threading.Thread(target=writer).start()
    try:
        audio = check_frames(list(RawSource(read_fd)))
    finally:
        os.close(read_fd)
    assert len(audio) == 8000
    np.testing.assert_allclose(audio, np.round(x * 32767) / 32768, atol=1e-6)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_raw_source_reads_8k_stereo_from_a_sox_subprocess() -> None:
    sox = subprocess.Popen(["sox", "-n", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "2", "-",
                            "synth", "1", "sine", "440"], stdout=subprocess.PIPE)
    assert sox.stdout is not None
    try:
        audio = check_frames(list(RawSource(sox.stdout, sample_rate=8000, channels=2)))
    finally:
        sox.wait(5)
    assert abs(len(audio) - 16000) < FRAME
    assert abs(dominant_hz(audio) - 440) < 5 and np.max(np.abs(audio)) > 0.5


def test_raw_source_f32_with_nan_and_a_partial_sample(caplog: pytest.LogCaptureFixture) -> None:
    x = sine(200, 16000, 0.1)
    x[10:20] = np.nan
    read_fd, write_fd = os.pipe()
    os.write(write_fd, x.astype("<f4").tobytes() + b"\x01\x02")
    os.close(write_fd)
    source = RawSource(read_fd, sample_format="f32le")
    with caplog.at_level(logging.WARNING, logger="assistant.audio"):
        audio = check_frames(list(source))
    os.close(read_fd)
    assert len(audio) == 1600 and np.all(audio[10:20] == 0)
    assert source.problems.counts["nonfinite"] >= 1 and source.problems.counts["partial"] == 1
    assert any("2 stray bytes" in r.getMessage() for r in caplog.records)


def test_raw_source_close_unblocks_a_silent_pipe() -> None:
    read_fd, write_fd = os.pipe()
    source = RawSource(read_fd, poll_s=0.05)
    threading.Timer(0.2, source.close).start()
    start = time.monotonic()
    assert list(source) == []
    assert time.monotonic() - start < 1.0
    os.close(read_fd)
    os.close(write_fd)


# --- the microphone, driven -------------------------------------------------------------------------


class DrivenDevice:
    """Stands in for sounddevice (``query_devices`` and ``InputStream``): there is no microphone on this
    machine, so a thread calls the stream callback with generated blocks, like PortAudio does. The device
    opens only at ``rate`` x ``channels`` (like an ALSA hw device); ``unplug_after`` blocks into the first
    stream it stops and calls the finished callback (PortAudio's end of stream), and the next
    ``absent_opens`` attempts fail as an unplugged device does."""

    def __init__(self, rate: int = 44100, channels: int = 2, *, unplug_after: int | None = None,
                 absent_opens: int = 0, silent_after: int | None = None, freq: float = 440.0) -> None:
        self.rate, self.channels, self.freq = rate, channels, freq
        self.unplug_after, self.absent_opens, self.silent_after = unplug_after, absent_opens, silent_after
        self.absent_left = 0
        """Queries still to fail (the device is unplugged)."""
        self.open_times: list[float] = []
        self.attempts: list[tuple[int, int]] = []
        self.streams: list[Any] = []
        self.samples_sent = 0

    def query_devices(self, device: object = None, kind: str | None = None) -> dict[str, Any]:
        if self.absent_left > 0:
            self.absent_left -= 1
            raise ValueError(f"No input device matching {device!r}")
        return {"name": "Driven USB mic", "index": 3, "max_input_channels": self.channels,
                "default_samplerate": float(self.rate)}

    def InputStream(self, **kwargs: Any) -> Any:  # sounddevice's name
        device = self
        device.attempts.append((kwargs["samplerate"], kwargs["channels"]))
        if (kwargs["samplerate"], kwargs["channels"]) != (self.rate, self.channels):
            raise RuntimeError("Invalid sample rate [PaErrorCode -9997]")

        class Stream:
            active = True

            def __init__(self) -> None:
                self.stop_event = threading.Event()
                self.thread = threading.Thread(target=self.run, daemon=True)

            def start(self) -> None:
                device.open_times.append(time.monotonic())
                device.streams.append(self)
                self.thread.start()

            def run(self) -> None:
                first = len(device.streams) == 1
                block, n = kwargs["blocksize"], 0
                while not self.stop_event.wait(block / device.rate / 4):  # 4x real time keeps the test short
                    if first and device.unplug_after is not None and n >= device.unplug_after:
                        self.active = False
                        device.absent_left = device.absent_opens
                        kwargs["finished_callback"]()
                        return
                    if first and device.silent_after is not None and n >= device.silent_after:
                        continue  # a stalled device: no callbacks, no error
                    t = (device.samples_sent + np.arange(block)) / device.rate
                    data = np.stack([0.5 * np.sin(2 * np.pi * device.freq * t)] * device.channels, axis=1)
                    device.samples_sent += block
                    kwargs["callback"](data.astype(np.float32), block, None, None)
                    n += 1

            def abort(self) -> None:
                self.stop_event.set()

            def close(self) -> None:
                self.stop_event.set()

        return Stream()


def take(source: MicSource, count: int, timeout: float = 10.0) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    deadline = time.monotonic() + timeout
    for frame in source:
        frames.append(frame)
        if len(frames) >= count or time.monotonic() > deadline:
            break
    source.close()
    return frames


def test_mic_source_converts_the_device_format() -> None:
    device = DrivenDevice(rate=44100, channels=2, freq=440)
    source = MicSource("USB", backend=device)
    audio = check_frames(take(source, 50))
    assert device.attempts[:3] == [(16000, 1), (44100, 1), (44100, 2)] and source.format == (44100, 2)
    assert abs(dominant_hz(audio[2000:]) - 440) < 10 and np.max(np.abs(audio)) > 0.4


def test_mic_source_reopens_an_unplugged_device_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    device = DrivenDevice(rate=16000, channels=1, unplug_after=10, absent_opens=3)
    source = MicSource(backend=device, reopen_min_s=0.05, reopen_max_s=1.0)
    open_attempts: list[float] = []
    original = device.query_devices

    def query(*args: Any, **kwargs: Any) -> dict[str, Any]:
        open_attempts.append(time.monotonic())
        return original(*args, **kwargs)

    device.query_devices = query  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="assistant.audio"):
        frames = take(source, 30)
    assert len(frames) == 30 and len(device.streams) == 2 and source.opened == 2
    gaps = np.diff(open_attempts[1:5])  # lost, wait 0.05 s, then 3 failed opens with waits of 0.1, 0.2, 0.4 s
    assert len(gaps) == 3 and all(0.1 * 2**i - 0.005 <= gap < 0.1 * 2**i + 0.3 for i, gap in enumerate(gaps)), gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([m for m in warnings if "stream ended" in m]) == 1
    assert len([m for m in warnings if "cannot open the microphone" in m]) == 1, warnings  # 3 failures, 1 line
    assert any("open again" in r.getMessage() for r in caplog.records)
    assert source.problems.counts["open"] == 3 and source.problems.counts["lost"] == 1


def test_mic_source_reopens_a_stalled_device() -> None:
    device = DrivenDevice(rate=16000, channels=1, silent_after=5)
    source = MicSource(backend=device, reopen_min_s=0.01, stall_s=0.2)
    frames = take(source, 20)
    assert len(frames) == 20 and len(device.streams) == 2
    assert source.problems.counts["lost"] == 1


def test_mic_source_close_while_the_device_is_absent() -> None:
    device = DrivenDevice(rate=16000, channels=1)
    device.absent_left = 1000  # unplugged from the start
    source = MicSource(backend=device, reopen_min_s=0.05)
    threading.Timer(0.3, source.close).start()
    start = time.monotonic()
    assert list(source) == []
    assert time.monotonic() - start < 1.5 and source.problems.counts["open"] >= 2


# --- satellites over MQTT ---------------------------------------------------------------------------


@pytest.fixture
def listener_for(broker: Broker) -> Iterator[Callable[[SatelliteSource], Any]]:
    from assistant.app import MqttListener

    listeners: list[MqttListener] = []

    def make(source: SatelliteSource) -> MqttListener:
        listener = MqttListener(MqttConfig(host="127.0.0.1", port=broker.port), client_id=f"test-{source.site}")
        listener.subscribe(source.topic, source.feed)
        listener.start()
        assert listener.subscribed.wait(5)
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        listener.stop()


def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-satellite")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_satellite_frames_over_mqtt(broker: Broker, listener_for: Callable[[SatelliteSource], Any],
                                    caplog: pytest.LogCaptureFixture) -> None:
    source = SatelliteSource("kitchen-sat")
    other = SatelliteSource("garage")
    listener_for(source)
    listener_for(other)
    stereo = sine(523, 22050, 0.6, amp=0.4, channels=2)
    chunks = [stereo[i : i + 512] for i in range(0, len(stereo), 512)]
    messages = [("hermes/audioServer/kitchen-sat/audioFrame", wav_bytes(c, 22050)) for c in chunks]
    messages.insert(3, ("hermes/audioServer/kitchen-sat/audioFrame", b"not a wav"))
    messages.insert(5, ("hermes/audioServer/kitchen-sat/audioFrame", b"RIFF\x00\x00\x00\x00WAVE"))
    with caplog.at_level(logging.WARNING, logger="assistant.audio"):
        publish(broker.port, messages)
        expected = resample(to_mono(stereo), 22050, SAMPLE_RATE)
        frames: list[np.ndarray] = []
        timer = threading.Timer(5.0, source.close)  # the test fails on too few frames instead of hanging
        timer.start()
        for frame in source:
            frames.append(frame)
            if len(frames) * FRAME >= len(expected) - 400:
                break
        timer.cancel()
    source.close()
    audio = check_frames(frames)
    np.testing.assert_allclose(audio, expected[: len(audio)], atol=1e-4)  # the stream equals the whole, resampled
    assert source.chunks == len(chunks) and other.chunks == 0
    assert source.problems.counts["payload"] == 2
    assert len([r for r in caplog.records if "Ignoring audio from satellite kitchen-sat" in r.getMessage()]) == 1


def test_satellite_source_drops_the_oldest_audio_when_nobody_reads() -> None:
    source = SatelliteSource("s", max_queue_s=0.1)  # 5 frames
    for i in range(10):
        source.feed(wav_bytes(np.full(FRAME, i / 20, np.float32), 16000))
    frames = []
    threading.Timer(0.3, source.close).start()
    frames = list(source)
    assert len(frames) == 5 and frames[0][0] == pytest.approx(5 / 20, abs=1e-4)
    assert source.problems.counts["overflow"] == 5

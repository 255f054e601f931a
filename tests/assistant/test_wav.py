"""WAV reading/writing and resampling: every odd or broken input either converts or errors clearly."""

from __future__ import annotations

import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import AudioError
from assistant.wav import SAMPLE_RATE, decode_wav, encode_wav, read_wav, resample, write_wav


def _sine(freq: float, rate: int, seconds: float = 0.5, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _riff(fmt_tag: int, channels: int, rate: int, bits: int, data: bytes, *, data_size: int | None = None) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _dominant_hz(x: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


def test_roundtrip_16k_mono(tmp_path: Path) -> None:
    x = _sine(440, SAMPLE_RATE)
    write_wav(tmp_path / "a.wav", x)
    y = read_wav(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1 / 32767)
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_are_resampled(tmp_path: Path, rate: int) -> None:
    write_wav(tmp_path / "r.wav", _sine(440, rate), sample_rate=rate)
    y = read_wav(tmp_path / "r.wav")
    assert len(y) == SAMPLE_RATE // 2
    assert abs(_dominant_hz(y) - 440) < 5


def test_stereo_8bit_24bit_32bit_float(tmp_path: Path) -> None:
    x = _sine(300, SAMPLE_RATE)
    stereo = np.stack([x, x], axis=1)
    pcm16 = (stereo * 32767).astype("<i2").tobytes()
    got = decode_wav(_riff(1, 2, SAMPLE_RATE, 16, pcm16))
    np.testing.assert_allclose(got, x, atol=2e-4)

    pcm8 = (np.round(x * 127) + 128).astype(np.uint8).tobytes()
    np.testing.assert_allclose(decode_wav(_riff(1, 1, SAMPLE_RATE, 8, pcm8)), x, atol=1 / 64)

    ints = np.round(x * (2**23 - 1)).astype(np.int32)
    pcm24 = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    np.testing.assert_allclose(decode_wav(_riff(1, 1, SAMPLE_RATE, 24, pcm24)), x, atol=1e-5)

    pcm32 = np.round(x * (2**31 - 1)).astype("<i4").tobytes()
    np.testing.assert_allclose(decode_wav(_riff(1, 1, SAMPLE_RATE, 32, pcm32)), x, atol=1e-6)

    f32 = x.astype("<f4").tobytes()
    np.testing.assert_allclose(decode_wav(_riff(3, 1, SAMPLE_RATE, 32, f32)), x, atol=1e-7)


def test_nan_is_an_error_unless_allowed() -> None:
    x = _sine(300, SAMPLE_RATE)
    x[10] = np.nan
    x[20] = np.inf
    blob = _riff(3, 1, SAMPLE_RATE, 32, x.astype("<f4").tobytes())
    with pytest.raises(AudioError, match="NaN or infinite"):
        decode_wav(blob, name="nan.wav")
    y = decode_wav(blob, allow_nonfinite=True)
    assert np.all(np.isfinite(y)) and y[10] == 0.0 and y[20] == 1.0


def test_float_out_of_range_is_clipped() -> None:
    x = np.full(100, 3.0, np.float32)
    y = decode_wav(_riff(3, 1, SAMPLE_RATE, 32, x.astype("<f4").tobytes()))
    assert float(y.max()) == 1.0


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "file is empty"),
        (b"hello, I am not audio at all", "not a WAV"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no 'fmt ' chunk"),
        (_riff(1, 1, SAMPLE_RATE, 16, b""), "no audio samples"),
        (_riff(6, 1, SAMPLE_RATE, 8, b"\x00" * 100), "encoding 0x6 is not supported"),
        (_riff(1, 1, SAMPLE_RATE, 40, b"\x00" * 100), "40-bit PCM is not supported"),
        (_riff(1, 0, SAMPLE_RATE, 16, b"\x00" * 100), "invalid WAV header"),
    ],
)
def test_broken_files_name_the_problem(tmp_path: Path, blob: bytes, message: str) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(blob)
    with pytest.raises(AudioError, match=message) as info:
        read_wav(path)
    assert str(path) in str(info.value)


def test_truncated_data_reads_what_is_there(tmp_path: Path) -> None:
    x = _sine(440, SAMPLE_RATE)
    pcm = (x * 32767).astype("<i2").tobytes()
    blob = _riff(1, 1, SAMPLE_RATE, 16, pcm[: len(pcm) // 2 + 1], data_size=len(pcm))
    y = decode_wav(blob)
    assert len(y) == len(x) // 2


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such file"):
        read_wav(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="is a directory"):
        read_wav(tmp_path)


def test_write_refuses_nan_and_leaves_no_partial_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError):
        write_wav(tmp_path / "x.wav", np.array([0.0, np.nan], np.float32))
    assert list(tmp_path.iterdir()) == []
    assert encode_wav(np.array([2.0, -2.0], np.float32))[-4:] == struct.pack("<hh", 32767, -32768)


def test_resample_removes_content_above_new_nyquist() -> None:
    y = resample(_sine(9000, 44100, 1.0), 44100, SAMPLE_RATE)
    assert np.sqrt(np.mean(y[200:-200] ** 2)) < 0.02  # 9 kHz cannot exist at 16 kHz
    y = resample(_sine(1000, 44100, 1.0), 44100, SAMPLE_RATE)
    ref = _sine(1000, SAMPLE_RATE, 1.0)
    assert np.max(np.abs(y[200:-200] - ref[200:-200])) < 1e-3


def test_resample_bad_rates() -> None:
    with pytest.raises(AudioError, match="positive"):
        resample(np.zeros(10, np.float32), 0, SAMPLE_RATE)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
def test_reads_a_real_sox_file(tmp_path: Path) -> None:
    """A file written by another program (sox: 44.1 kHz, stereo, 24-bit, extensible header)."""
    out = tmp_path / "sox.wav"
    subprocess.run(
        ["sox", "-n", "-r", "44100", "-c", "2", "-b", "24", str(out), "synth", "0.5", "sine", "440"],
        check=True,
        timeout=30,
    )
    y = read_wav(out)
    assert len(y) == SAMPLE_RATE // 2
    assert abs(_dominant_hz(y) - 440) < 5

"""Audio in: every source is an iterator of float32 16 kHz mono frames of a fixed size, with ``close()``.

- :class:`MicSource` — a microphone through ``sounddevice`` (PortAudio), by name or index, at
  whatever rate and channel count the device offers; a device that goes away is re-opened with
  exponential backoff. ``sounddevice`` is imported only here, when a microphone is used.
- :class:`WavSource` — WAV files one after the other, in real time or as fast as possible.
- :class:`RawSource` — raw interleaved PCM on a pipe (stdin): ``s16le`` mono 16 kHz by default.
- :class:`SatelliteSource` — Hermes ``hermes/audioServer/<site>/audioFrame`` payloads (small WAV
  chunks of any rate and channel count), fed by the app's MQTT listener.

Bad audio never stops a source: rates and channels are converted (:class:`Framer`, with a
streaming resampler whose output equals :func:`assistant.wav.resample` on the whole stream),
NaN/Inf become 0/±1, out-of-range samples are clipped, and each kind of problem is logged once
and counted (:class:`LogOnce`), never once per frame.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import select
import threading
import time
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from assistant.errors import AudioError
from assistant.wav import SAMPLE_RATE, decode_wav, read_wav, resample, to_mono

_LOGGER = logging.getLogger(__name__)

PORTAUDIO_HINT = ("install the PortAudio library ('sudo apt install libportaudio2' on Debian, Ubuntu and "
                  "Raspberry Pi OS; 'brew install portaudio' on macOS); WAV, stdin and satellite audio work without it")
RAW_WIDTHS = {"u8": 1, "s16le": 2, "s24le": 3, "s32le": 4, "f32le": 4}
"""Bytes per sample of each raw PCM format."""
_ZERO_CROSSINGS = 16
_FULL_SCALE = 0.999


def frame_samples(frame_ms: int) -> int:
    """Samples in one frame of ``frame_ms`` at 16 kHz."""
    return SAMPLE_RATE * frame_ms // 1000


class LogOnce:
    """Logs the first of each kind of problem and counts them all (thread-safe; never a line per frame).

    After :meth:`forget` (the problem went away), the next occurrence is logged again.
    """

    def __init__(self, logger: logging.Logger = _LOGGER) -> None:
        self.logger = logger
        self.counts: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str, message: str, *args: object, level: int = logging.WARNING) -> bool:
        """Count one ``key`` problem; log ``message % args`` if it is the first since start (or :meth:`forget`)."""
        with self._lock:
            self.counts[key] += 1
            first = key not in self._logged
            self._logged.add(key)
            count = self.counts[key]
        if first:
            self.logger.log(level, message, *args)
        elif count in (10, 100, 1000, 10000, 100000):
            self.logger.debug("%s (%d times so far)", message % args if args else message, count)
        return first

    def forget(self, key: str) -> None:
        with self._lock:
            self._logged.discard(key)

    def summary(self) -> str:
        """``'key: count, ...'`` of every problem seen, or '' if none."""
        with self._lock:
            return ", ".join(f"{key}: {count}" for key, count in sorted(self.counts.items()))


def sanitize(x: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``(clean, non-finite count, out-of-range count)``: NaN becomes 0, ±Inf ±1, the rest clipped to [-1, 1]."""
    x = np.asarray(x, dtype=np.float32)
    nonfinite = int(x.size - np.count_nonzero(np.isfinite(x)))
    if nonfinite:
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    over = int(np.count_nonzero(np.abs(x) > 1.0))
    if over:
        x = np.clip(x, -1.0, 1.0)
    return x, nonfinite, over


@dataclass(frozen=True)
class Trim:
    """How much quiet :func:`speech_bounds` keeps around the speech of a clip.

    The defaults follow the training clips: the TTS engines leave 0-0.3 s before the speech (p90 0.06 s
    espeak-ng and piper, 0.28 s flite) and 0.05-0.4 s after it (docs/BENCHMARKS.md, "Quiet around a
    command"). A clip with more, like a 3-s ``arecord`` of a 1.5-s command, is one the student never
    heard in training: its heads' gate fell on every shipped sample with 0.6 s of silence appended.
    """

    before_s: float = 0.3
    """Seconds kept before the first loud frame."""
    after_s: float = 0.3
    """Seconds kept after the last loud frame."""
    below_peak_db: float = 40.0
    """A frame is loud if it is within this many dB of the clip's loudest 10-ms frame ..."""
    above_floor_db: float = 10.0
    """... and this many dB above its quiet floor (the 10th percentile of its frames' levels)."""
    min_range_db: float = 25.0
    """Only a clip whose loudest frame is this many dB above its floor is trimmed. In noise (15 or 6 dB SNR)
    the quiet around a command is that noise, as in the noisy clips the student trained on; trimming it cost
    up to 1.5 points of commands right at 6 dB on validation (1.9 on test), and 20, 25 and 30 dB here all
    avoided that on validation."""


DEFAULT_TRIM = Trim()


def speech_bounds(x: np.ndarray, trim: Trim = DEFAULT_TRIM, sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """``(start, end)`` samples of ``x`` to keep: from ``trim.before_s`` before its first loud 10-ms frame to
    ``trim.after_s`` after its last. The whole clip where no frame is loud (silence, steady noise) or the
    clip has no quiet part (``trim.min_range_db``)."""
    step = sample_rate // 100
    n = len(x) // step
    if n < 3:
        return 0, len(x)
    frames = np.asarray(x[: n * step], np.float64).reshape(n, step)
    level = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)
    peak, floor = float(level.max()), float(np.percentile(level, 10))
    if peak - floor < trim.min_range_db:
        return 0, len(x)
    loud = np.flatnonzero(level > max(peak - trim.below_peak_db, floor + trim.above_floor_db))
    if not len(loud):  # a configured below_peak_db of 0, or above_floor_db >= min_range_db
        return 0, len(x)
    start = max(0, int(loud[0]) * step - round(trim.before_s * sample_rate))
    end = min(len(x), (int(loud[-1]) + 1) * step + round(trim.after_s * sample_rate))
    return start, end


def decode_raw(data: bytes, sample_format: str, channels: int) -> np.ndarray:
    """Interleaved raw PCM bytes (whole samples of every channel) as float32 ``[samples, channels]``."""
    if sample_format not in RAW_WIDTHS:
        raise AudioError(f"raw audio format {sample_format!r}: expected one of {', '.join(RAW_WIDTHS)}")
    if sample_format == "u8":
        x = (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif sample_format == "s16le":
        x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    elif sample_format == "s24le":
        b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(ints >= 1 << 23, ints - (1 << 24), ints).astype(np.float32) / float(1 << 23)
    elif sample_format == "s32le":
        x = (np.frombuffer(data, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    else:
        x = np.frombuffer(data, "<f4").astype(np.float32)
    return x.reshape(-1, channels)


class StreamResampler:
    """:func:`assistant.wav.resample` for a stream in pieces: the concatenated output of :meth:`process`
    and :meth:`flush` equals resampling the whole stream at once (the same kernel and alignment)."""

    def __init__(self, sr_in: int, sr_out: int = SAMPLE_RATE) -> None:
        g = math.gcd(sr_in, sr_out)
        self.sr_in, self.sr_out, self.up, self.down = sr_in, sr_out, sr_out // g, sr_in // g
        self.margin = math.ceil(_ZERO_CROSSINGS / min(1.0, sr_out / sr_in)) + 1
        """Input samples of context each output sample needs on either side."""
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, np.float32)
        self._start = 0  # absolute input index of _buf[0]; always a multiple of self.down
        self._emitted = 0  # absolute index of the next output sample

    def _take(self, k_end: int) -> np.ndarray:
        if k_end <= self._emitted:
            return np.zeros(0, np.float32)
        y = resample(self._buf, self.sr_in, self.sr_out, zero_crossings=_ZERO_CROSSINGS)
        k0 = self._start // self.down * self.up
        out = y[self._emitted - k0 : k_end - k0]
        self._emitted = k_end
        keep = max(0, self._emitted * self.down // self.up - self.margin) // self.down * self.down
        self._buf, self._start = self._buf[keep - self._start :], keep
        return out

    def process(self, x: np.ndarray) -> np.ndarray:
        """The output samples whose kernel lies entirely within the audio seen so far."""
        if self.up == self.down:
            return np.asarray(x, np.float32)
        self._buf = np.concatenate([self._buf, np.asarray(x, np.float32)])
        last_usable = self._start + len(self._buf) - 1 - self.margin
        return self._take(((last_usable + 1) * self.up + self.down - 1) // self.down if last_usable >= 0 else 0)

    def flush(self) -> np.ndarray:
        """The rest of the output (the stream ended; it is zero-padded like the offline resampler)."""
        if self.up == self.down:
            return np.zeros(0, np.float32)
        out = self._take(int(round((self._start + len(self._buf)) * self.up / self.down)))
        self.reset()
        return out


class Framer:
    """Blocks of any rate, channel count and length in; clean fixed-size 16 kHz mono float32 frames out."""

    def __init__(self, sample_rate: int, frame_samples: int, *, name: str, problems: LogOnce) -> None:
        if sample_rate < 1000:
            raise AudioError(f"{name}: sample rate {sample_rate} Hz is not usable (expected 8000 Hz or more)")
        self.sample_rate, self.frame_samples, self.name, self.problems = sample_rate, frame_samples, name, problems
        self._resampler = StreamResampler(sample_rate) if sample_rate != SAMPLE_RATE else None
        self._pending = np.zeros(0, np.float32)

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        """``block`` is ``[samples]`` or ``[samples, channels]`` float audio at this framer's rate."""
        x = np.asarray(block, dtype=np.float32)
        if x.ndim == 2:
            x = to_mono(x)
        x, nonfinite, over = sanitize(x.reshape(-1))
        if nonfinite:
            self.problems("nonfinite", "%s: audio holds NaN or infinite samples; they are replaced by 0 / ±1", self.name)
        if over:
            self.problems("range", "%s: samples outside [-1, 1]; they are clipped", self.name)
        if x.size and np.count_nonzero(np.abs(x) >= _FULL_SCALE) > max(2, x.size // 100):
            self.problems("clipping", "%s: the input is clipping (full-scale samples); lower the input gain", self.name)
        if self._resampler is not None:
            x = self._resampler.process(x)
        return self._frames(x)

    def flush(self) -> list[np.ndarray]:
        """The rest, the last frame zero-padded (the stream ended)."""
        rest = self._resampler.flush() if self._resampler is not None else np.zeros(0, np.float32)
        frames = self._frames(rest)
        if self._pending.size:
            frames.append(np.pad(self._pending, (0, self.frame_samples - self._pending.size)))
            self._pending = np.zeros(0, np.float32)
        return frames

    def _frames(self, x: np.ndarray) -> list[np.ndarray]:
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        n = x.size // self.frame_samples
        frames = [x[i * self.frame_samples : (i + 1) * self.frame_samples].copy() for i in range(n)]
        self._pending = x[n * self.frame_samples :].copy()
        return frames


class AudioSource:
    """Iterate for float32 16 kHz mono frames of ``frame_samples``; :meth:`close` (from any thread) ends it.

    ``live`` sources deliver in real time (a consumer that falls behind loses frames); the others wait.
    """

    live = True

    def __init__(self, name: str, frame_samples: int) -> None:
        self.name = name
        self.frame_samples = frame_samples
        self.problems = LogOnce()
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WavSource(AudioSource):
    """WAV files (any rate, channels, sample width) one after the other; a file that cannot be read is
    logged and skipped. ``realtime`` paces the frames at the recorded speed."""

    live = False

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *, frame_samples: int = 320, realtime: bool = False,
                 name: str = "wav") -> None:
        super().__init__(name, frame_samples)
        self.paths = [os.fspath(p) for p in paths]
        self.realtime = realtime

    def _read(self, path: str) -> np.ndarray | None:
        try:
            return read_wav(path)
        except AudioError as err:
            try:
                audio = read_wav(path, allow_nonfinite=True)
            except AudioError:
                _LOGGER.error("Skipping %s", err)
                return None
            self.problems("nonfinite", "%s: WAV holds NaN or infinite samples; they are replaced by 0 / ±1", path)
            return audio

    def __iter__(self) -> Iterator[np.ndarray]:
        frame_s = self.frame_samples / SAMPLE_RATE
        start, sent = time.monotonic(), 0
        for path in self.paths:
            audio = None if self.closed else self._read(path)
            if audio is None:
                continue
            framer = Framer(SAMPLE_RATE, self.frame_samples, name=path, problems=self.problems)
            for frame in framer.push(audio) + framer.flush():
                if self.realtime:
                    delay = start + sent * frame_s - time.monotonic()
                    if delay > 0 and self._closed.wait(delay):
                        return
                if self.closed:
                    return
                sent += 1
                yield frame
            _LOGGER.debug("%s: %d frames so far", path, sent)


class RawSource(AudioSource):
    """Raw interleaved PCM from a pipe or file (stdin): ``sample_format`` in RAW_WIDTHS, any rate and channels.

    Reads without blocking :meth:`close` (select with a short timeout); ends at end of file.
    """

    live = False

    def __init__(self, stream: IO[bytes] | int, *, sample_rate: int = SAMPLE_RATE, sample_format: str = "s16le",
                 channels: int = 1, frame_samples: int = 320, name: str = "stdin", poll_s: float = 0.1) -> None:
        super().__init__(name, frame_samples)
        if sample_format not in RAW_WIDTHS:
            raise AudioError(f"{name}: raw audio format {sample_format!r}: expected one of {', '.join(RAW_WIDTHS)}")
        if channels < 1:
            raise AudioError(f"{name}: expected 1 or more channels, got {channels}")
        self.fd = stream if isinstance(stream, int) else stream.fileno()
        self.sample_rate, self.sample_format, self.channels, self.poll_s = sample_rate, sample_format, channels, poll_s
        self.bytes_read = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        block = RAW_WIDTHS[self.sample_format] * self.channels
        chunk = block * max(1, math.ceil(self.frame_samples * self.sample_rate / SAMPLE_RATE))
        framer = Framer(self.sample_rate, self.frame_samples, name=self.name, problems=self.problems)
        leftover = b""
        while not self.closed:
            readable, _, _ = select.select([self.fd], [], [], self.poll_s)
            if not readable:
                continue
            try:
                data = os.read(self.fd, chunk)
            except OSError as err:
                _LOGGER.error("%s: cannot read audio (%s); stopping this source", self.name, err)
                break
            if not data:
                break
            self.bytes_read += len(data)
            data = leftover + data
            usable = len(data) - len(data) % block
            leftover = data[usable:]
            if usable:
                yield from framer.push(decode_raw(data[:usable], self.sample_format, self.channels))
        if leftover and not self.closed:
            self.problems("partial", "%s: the stream ended inside a sample (%d stray bytes dropped)", self.name,
                          len(leftover))
        if not self.closed:
            yield from framer.flush()
        _LOGGER.info("%s: %s after %.1f s of audio", self.name, "closed" if self.closed else "end of audio",
                     self.bytes_read / block / self.sample_rate)


def import_sounddevice() -> Any:
    """The sounddevice module, or AudioError saying how to install PortAudio."""
    try:
        import sounddevice
    except OSError as err:  # "PortAudio library not found"
        raise AudioError(f"cannot use a microphone: {err}; {PORTAUDIO_HINT}") from None
    except ImportError:
        raise AudioError("cannot use a microphone: the 'sounddevice' package is not installed "
                         "(pip install sounddevice)") from None
    return sounddevice


def list_devices(backend: Any = None) -> list[dict[str, Any]]:
    """Audio devices that can record: index, name, host API, input channels, default rate, default flag."""
    sd = backend if backend is not None else import_sounddevice()
    devices = sd.query_devices()
    try:
        default = int(sd.default.device[0])
    except (AttributeError, TypeError, ValueError, IndexError):
        default = -1
    try:
        apis = [api["name"] for api in sd.query_hostapis()]
    except Exception:  # a host API list is a nicety
        apis = []
    return [{"index": int(d["index"]), "name": d["name"],
             "hostapi": apis[d["hostapi"]] if d.get("hostapi", -1) in range(len(apis)) else "",
             "channels": int(d["max_input_channels"]), "sample_rate": float(d["default_samplerate"]),
             "default": int(d["index"]) == default}
            for d in devices if int(d["max_input_channels"]) > 0]


class MicSource(AudioSource):
    """A microphone through sounddevice: opened at 16 kHz mono if the device allows, else at its own rate
    and channels (converted). A device that fails to open, stops delivering audio or disappears is
    re-opened with exponential backoff (``reopen_min_s`` doubling up to ``reopen_max_s``), logged once
    per outage.

    ``backend`` is anything with sounddevice's ``query_devices`` and ``InputStream`` (default: sounddevice,
    imported on first use).
    """

    def __init__(self, device: str | int | None = None, *, frame_samples: int = 320, backend: Any = None,
                 reopen_min_s: float = 0.5, reopen_max_s: float = 30.0, stall_s: float = 2.0, block_ms: int = 20,
                 max_queue: int = 200) -> None:
        super().__init__(f"mic:{'default' if device is None else device}", frame_samples)
        self.device, self.backend = device, backend
        self.reopen_min_s, self.reopen_max_s, self.stall_s = reopen_min_s, max(reopen_max_s, reopen_min_s), stall_s
        self.block_ms, self.max_queue = block_ms, max_queue
        self.opened = 0
        """How many times a stream was opened."""
        self.format: tuple[int, int] | None = None
        """(rate, channels) of the open stream."""

    def _open(self, sd: Any, blocks: queue.Queue[np.ndarray], finished: threading.Event) -> Any:
        info = sd.query_devices(self.device, kind="input")
        rate, channels = int(info["default_samplerate"]), max(1, int(info["max_input_channels"]))

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if status:
                self.problems("status", "%s: the device reports %s", self.name, status)
            try:
                blocks.put_nowait(np.array(indata, dtype=np.float32, copy=True))
            except queue.Full:
                self.problems("overflow", "%s: audio dropped; the hub is not keeping up", self.name)

        errors = []
        for sr, ch in dict.fromkeys(((SAMPLE_RATE, 1), (rate, 1), (rate, channels))):
            try:
                stream = sd.InputStream(device=self.device, samplerate=sr, channels=ch, dtype="float32",
                                        blocksize=sr * self.block_ms // 1000, callback=callback,
                                        finished_callback=finished.set)
                stream.start()
            except Exception as err:  # PortAudio says why; try the next format
                errors.append(f"{sr} Hz x{ch}: {err}")
                continue
            self.format = (sr, ch)
            return stream
        raise AudioError(f"{self.name} ({info.get('name', '?')}): cannot open an input stream ({'; '.join(errors)})")

    def __iter__(self) -> Iterator[np.ndarray]:
        sd = self.backend if self.backend is not None else import_sounddevice()
        delay, failures = self.reopen_min_s, 0
        while not self.closed:
            blocks: queue.Queue[np.ndarray] = queue.Queue(self.max_queue)
            finished = threading.Event()
            try:
                stream = self._open(sd, blocks, finished)
            except Exception as err:  # an absent device is retried, not fatal
                failures += 1
                self.problems("open", "%s: cannot open the microphone (%s); retrying with backoff up to %g s",
                              self.name, err, self.reopen_max_s)
                if self._closed.wait(delay):
                    break
                delay = min(delay * 2, self.reopen_max_s)
                self._refresh(sd)
                continue
            self.opened += 1
            if failures or self.opened > 1:
                _LOGGER.info("%s: microphone open again (%d Hz, %d channel(s)) after %d failed attempt(s)",
                             self.name, *(self.format or (0, 0)), failures)
            else:
                _LOGGER.info("%s: microphone open (%d Hz, %d channel(s))", self.name, *(self.format or (0, 0)))
            self.problems.forget("open")
            delay, failures = self.reopen_min_s, 0
            framer = Framer(self.format[0] if self.format else SAMPLE_RATE, self.frame_samples, name=self.name,
                            problems=self.problems)
            try:
                why = yield from self._read(stream, blocks, finished, framer)
            finally:
                self._close_stream(stream)
            if why:
                self.problems("lost", "%s: the microphone %s; re-opening with backoff up to %g s", self.name, why,
                              self.reopen_max_s)
                self.problems.forget("open")
                failures = 1
                if self._closed.wait(delay):
                    break
                delay = min(delay * 2, self.reopen_max_s)
                self._refresh(sd)

    def _read(self, stream: Any, blocks: queue.Queue[np.ndarray], finished: threading.Event, framer: Framer
              ) -> Generator[np.ndarray, None, str | None]:
        """Frames until the stream ends; returns why it ended (None: closed)."""
        last = time.monotonic()
        while not self.closed:
            try:
                block = blocks.get(timeout=0.05)
            except queue.Empty:
                if finished.is_set() and blocks.empty():
                    return "stream ended (device unplugged?)"
                if not getattr(stream, "active", True):
                    return "stream stopped"
                if time.monotonic() - last > self.stall_s:
                    return f"delivered no audio for {self.stall_s:g} s"
                continue
            last = time.monotonic()
            yield from framer.push(block)
        return None

    def _close_stream(self, stream: Any) -> None:
        for method in ("abort", "close"):
            try:
                getattr(stream, method)()
            except Exception as err:  # the device may already be gone
                _LOGGER.debug("%s: %s(): %s", self.name, method, err)

    @staticmethod
    def _refresh(sd: Any) -> None:
        """PortAudio lists devices only when initialized: re-initialize so a re-plugged device is found."""
        terminate, initialize = getattr(sd, "_terminate", None), getattr(sd, "_initialize", None)
        if terminate is not None and initialize is not None:
            try:
                terminate()
                initialize()
            except Exception as err:
                _LOGGER.debug("re-initializing PortAudio failed: %s", err)


def wav_rate(blob: bytes) -> int | None:
    """The sample rate in a WAV's ``fmt`` chunk, or None if there is none (decode_wav then says why)."""
    pos = 12
    while pos + 8 <= len(blob):
        size = int.from_bytes(blob[pos + 4 : pos + 8], "little")
        if blob[pos : pos + 4] == b"fmt " and size >= 16 and pos + 16 <= len(blob):
            return int.from_bytes(blob[pos + 12 : pos + 16], "little")
        pos += 8 + size + (size & 1)
    return None


class SatelliteSource(AudioSource):
    """Audio a Hermes satellite streams as WAV chunks on ``hermes/audioServer/<site>/audioFrame``.

    :meth:`feed` (called from the MQTT thread) decodes each chunk; a chunk that is not a usable WAV is
    logged once and skipped. If the consumer falls ``max_queue_s`` behind, the oldest audio is dropped.
    """

    def __init__(self, site: str, *, frame_samples: int = 320, max_queue_s: float = 5.0) -> None:
        super().__init__(f"satellite:{site}", frame_samples)
        self.site = site
        self.topic = f"hermes/audioServer/{site}/audioFrame"
        self._frames: queue.Queue[np.ndarray] = queue.Queue(max(1, int(max_queue_s * SAMPLE_RATE / frame_samples)))
        self._framer: Framer | None = None
        self.chunks = 0
        """Chunks accepted so far."""

    def feed(self, payload: bytes) -> None:
        if self.closed:
            return
        rate = wav_rate(payload) or SAMPLE_RATE
        try:
            try:
                audio = decode_wav(payload, name=self.topic, sample_rate=rate)
            except AudioError:
                audio = decode_wav(payload, name=self.topic, sample_rate=rate, allow_nonfinite=True)
                self.problems("nonfinite", "%s: audio holds NaN or infinite samples; they are replaced by 0 / ±1",
                              self.topic)
        except AudioError as err:
            self.problems("payload", "Ignoring audio from satellite %s: %s", self.site, err)
            return
        if self._framer is None or self._framer.sample_rate != rate:
            if self._framer is not None:
                self.problems("rate", "%s: sample rate changed from %d to %d Hz", self.topic, self._framer.sample_rate,
                              rate, level=logging.INFO)
            self._framer = Framer(rate, self.frame_samples, name=self.topic, problems=self.problems)
        self.chunks += 1
        for frame in self._framer.push(audio):
            while True:
                try:
                    self._frames.put_nowait(frame)
                    break
                except queue.Full:
                    self.problems("overflow", "%s: audio dropped; the hub is not keeping up", self.topic)
                    with contextlib.suppress(queue.Empty):
                        self._frames.get_nowait()

    def __iter__(self) -> Iterator[np.ndarray]:
        while not self.closed:
            try:
                yield self._frames.get(timeout=0.1)
            except queue.Empty:
                continue

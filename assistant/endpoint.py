"""Endpointing: cutting utterances out of a continuous 16 kHz stream.

A frame is *voiced* when webrtcvad calls it speech **and** it is louder than both the running
noise floor (the quietest frame of the last few seconds) plus a margin and an absolute floor;
the level gate trims webrtcvad's built-in hangover and its guesses while it adapts.

:class:`Endpointer` is the streaming state machine (``idle`` → ``speech`` → ``idle``):

- an utterance opens after ``onset_ms`` of voiced frames without a break, and starts
  ``pre_roll_ms`` before them;
- it ends after ``trailing_silence_ms`` without a voiced frame (kept: ``post_roll_ms`` after the
  last one), when the optional :class:`EarlyStop` (the model's own confidence) says so, or at
  ``max_utterance_s``; after the last two it waits for silence before the next utterance
  (``waiting``), so the rest of a long sentence is not taken for a new command;
- utterances with less than ``min_speech_ms`` from onset to the last voiced frame (clicks) are dropped.

With ``listen=True`` the endpointer opens only within ``timeout_s`` of a :meth:`Endpointer.listen`
call (``hubvoice/<site>/listen``, from a push-to-talk button or a wake-word device), for one utterance.
Times in :class:`Utterance` are seconds of stream audio since the endpointer started.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from assistant.config import EndpointConfig
from assistant.errors import ConfigError
from assistant.wav import SAMPLE_RATE

_LOGGER = logging.getLogger(__name__)

IDLE, SPEECH, WAITING = "idle", "speech", "waiting"


def pcm16(frame: np.ndarray) -> bytes:
    """Float audio in [-1, 1] as 16-bit little-endian PCM bytes (what webrtcvad reads)."""
    return np.clip(np.round(np.asarray(frame, np.float32) * 32767.0), -32768, 32767).astype("<i2").tobytes()


def level_dbfs(frame: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-200 for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64)))) if len(frame) else 0.0
    return 20.0 * np.log10(rms) if rms > 1e-10 else -200.0


def _webrtcvad() -> Any:
    try:
        import webrtcvad
    except ImportError:
        raise ConfigError("endpointing needs webrtcvad: pip install webrtcvad-wheels") from None
    return webrtcvad


class VoiceDetector:
    """Is this frame speech? webrtcvad, gated by level over the running noise floor."""

    def __init__(self, config: EndpointConfig, sample_rate: int = SAMPLE_RATE) -> None:
        if config.frame_ms not in (10, 20, 30) or sample_rate not in (8000, 16000, 32000, 48000):
            raise ConfigError(f"webrtcvad needs 10, 20 or 30 ms frames at 8, 16, 32 or 48 kHz, "
                              f"got {config.frame_ms} ms at {sample_rate} Hz")
        self.config, self.sample_rate = config, sample_rate
        self.frame_samples = sample_rate * config.frame_ms // 1000
        self._vad_module = _webrtcvad()
        self.reset()

    def reset(self) -> None:
        self._vad = self._vad_module.Vad(self.config.aggressiveness)
        self._levels: collections.deque[float] = collections.deque(
            maxlen=max(1, round(self.config.noise_window_s * 1000 / self.config.frame_ms)))

    @property
    def noise_floor_dbfs(self) -> float:
        return min(self._levels) if self._levels else -200.0

    def is_voiced(self, frame: np.ndarray) -> bool:
        if len(frame) != self.frame_samples:
            raise ValueError(f"expected frames of {self.frame_samples} samples, got {len(frame)}")
        level = level_dbfs(frame)
        self._levels.append(level)
        speech = bool(self._vad.is_speech(pcm16(frame), self.sample_rate))
        gate = max(self.config.min_level_dbfs, self.noise_floor_dbfs + self.config.energy_margin_db)
        return speech and level >= gate


class EarlyStop(Protocol):
    """The model's own opinion while an utterance is heard (e.g. a streaming recognizer)."""

    def reset(self) -> None:
        """A new utterance starts."""

    def feed(self, audio: np.ndarray) -> bool:
        """More audio of the utterance; True when confident enough to end the utterance now."""


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech and the audio kept around it."""

    audio: np.ndarray
    """16 kHz float32 audio from ``audio_start_s``: pre-roll, speech, post-roll."""
    start_s: float
    """Speech onset (the first voiced frame), seconds since the stream started."""
    end_s: float
    """End of the last voiced frame."""
    audio_start_s: float
    """Where ``audio`` starts (``start_s`` minus the pre-roll available)."""
    reason: str
    """Why it ended: 'silence', 'confident', 'max_length' or 'end_of_stream'."""
    ended_at: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when the endpointer decided it was over (for latency measurements)."""

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


class Endpointer:
    """Streaming endpointer: :meth:`process` audio of any length, get the utterances that ended in it."""

    def __init__(self, config: EndpointConfig | None = None, *, sample_rate: int = SAMPLE_RATE,
                 early_stop: EarlyStop | None = None, listen: bool = False, listen_timeout_s: float = 8.0,
                 name: str = "audio") -> None:
        self.config = config or EndpointConfig()
        self.detector = VoiceDetector(self.config, sample_rate)
        self.sample_rate, self.frame = sample_rate, self.detector.frame_samples
        self.early_stop, self.gated, self.listen_timeout_s, self.name = early_stop, listen, listen_timeout_s, name
        ms = self.sample_rate // 1000
        self._pre_roll = self.config.pre_roll_ms * ms
        self._onset = max(1, -(-self.config.onset_ms // self.config.frame_ms))
        self._trailing = max(1, -(-self.config.trailing_silence_ms // self.config.frame_ms))
        self._max = int(self.config.max_utterance_s * self.sample_rate)
        self._lock = threading.Lock()
        self._listen_request: float | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new stream)."""
        self.detector.reset()
        self.state = IDLE
        self.pos = 0
        """Samples processed so far (the stream clock)."""
        self._pending = np.zeros(0, np.float32)
        self._history: collections.deque[np.ndarray] = collections.deque(
            maxlen=-(-self._pre_roll // self.frame) + self._onset)
        self._run = 0
        self._open_until: int | None = None
        self._reset_utterance()

    def _reset_utterance(self) -> None:
        self._frames: list[np.ndarray] = []
        self._audio_start = self._onset_pos = self._last_voiced = 0
        self._silence = 0

    # --- listen gate -----------------------------------------------------------------------------

    def listen(self, timeout_s: float | None = None) -> None:
        """Open for one utterance within ``timeout_s`` (default ``listen_timeout_s``); safe from any thread."""
        with self._lock:
            self._listen_request = self.listen_timeout_s if timeout_s is None else float(timeout_s)

    @property
    def listening(self) -> bool:
        """Whether an onset would open an utterance now."""
        return not self.gated or (self._open_until is not None and self.pos < self._open_until)

    def _update_gate(self) -> None:
        with self._lock:
            request, self._listen_request = self._listen_request, None
        if request is not None:
            self._open_until = self.pos + int(request * self.sample_rate)
            _LOGGER.info("%s: listening for %g s", self.name, request)
        elif self._open_until is not None and self.pos >= self._open_until and self.state == IDLE:
            _LOGGER.info("%s: no command heard before the listen timeout", self.name)
            self._open_until = None

    # --- the state machine -----------------------------------------------------------------------

    def process(self, audio: np.ndarray) -> list[Utterance]:
        """Feed 16 kHz float audio (any length); returns the utterances that ended within it."""
        x = np.asarray(audio, np.float32).reshape(-1)
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        n = len(x) // self.frame
        self._pending = x[n * self.frame :].copy()
        out = []
        for i in range(n):
            utterance = self._step(x[i * self.frame : (i + 1) * self.frame])
            if utterance is not None:
                out.append(utterance)
        return out

    def flush(self) -> Utterance | None:
        """The stream ended: the utterance in progress, if it has enough speech."""
        utterance = self._finish("end_of_stream") if self.state == SPEECH else None
        self.state = IDLE
        return utterance

    def _step(self, frame: np.ndarray) -> Utterance | None:
        if self.gated:
            self._update_gate()
        voiced = self.detector.is_voiced(frame)
        self.pos += self.frame
        self._history.append(frame)
        if self.state == IDLE:
            self._run = self._run + 1 if voiced else 0
            if self._run >= self._onset and self.listening:
                self._open()
            return None
        self._silence = 0 if voiced else self._silence + 1
        if self.state == WAITING:
            if self._silence >= self._trailing:
                self.state, self._run = IDLE, 0
            return None
        self._frames.append(frame)
        if voiced:
            self._last_voiced = self.pos
        if self._silence >= self._trailing:
            return self._finish("silence")
        if self._confident(frame):
            return self._finish("confident")
        if voiced and self.pos - self._audio_start >= self._max:  # speech, not its trailing silence, is cut
            return self._finish("max_length")
        return None

    def _open(self) -> None:
        self.state = SPEECH
        self._onset_pos = self.pos - self._onset * self.frame
        frames = list(self._history)
        keep = min(len(frames), self._onset + -(-self._pre_roll // self.frame))
        audio = np.concatenate(frames[-keep:])
        extra = max(0, len(audio) - (self._onset * self.frame + self._pre_roll))
        self._frames = [audio[extra:]]
        self._audio_start = self.pos - len(self._frames[0])
        self._last_voiced, self._silence = self.pos, 0
        _LOGGER.debug("%s: speech starts at %.2f s", self.name, self._onset_pos / self.sample_rate)
        if self.early_stop is not None:
            try:
                self.early_stop.reset()
                self.early_stop.feed(self._frames[0])
            except Exception:
                _LOGGER.exception("%s: the early-stop check failed; ignoring it for this utterance", self.name)

    def _confident(self, frame: np.ndarray) -> bool:
        if self.early_stop is None:
            return False
        try:
            confident = self.early_stop.feed(frame)
        except Exception:
            _LOGGER.exception("%s: the early-stop check failed; waiting for silence instead", self.name)
            return False
        return bool(confident) and (self._last_voiced - self._onset_pos) * 1000 >= \
            self.config.min_speech_ms * self.sample_rate

    def _finish(self, reason: str) -> Utterance | None:
        speech_ms = (self._last_voiced - self._onset_pos) * 1000 / self.sample_rate
        end = min(self.pos, self._last_voiced + self.config.post_roll_ms * self.sample_rate // 1000)
        audio = np.concatenate(self._frames)[: end - self._audio_start]
        sr = self.sample_rate
        self.state = WAITING if reason in ("confident", "max_length") else IDLE
        self._run = 0
        onset, last, start = self._onset_pos, self._last_voiced, self._audio_start
        self._reset_utterance()
        if speech_ms < self.config.min_speech_ms:
            _LOGGER.debug("%s: %.0f ms of speech at %.2f s is shorter than min_speech_ms; dropped", self.name,
                          speech_ms, onset / sr)
            self.state = IDLE
            return None
        if self.gated:
            self._open_until = None
        _LOGGER.debug("%s: utterance %.2f-%.2f s (%s)", self.name, onset / sr, last / sr, reason)
        return Utterance(audio, onset / sr, last / sr, start / sr, reason)


def find_utterances(audio: np.ndarray, config: EndpointConfig | None = None,
                    early_stop: EarlyStop | None = None) -> list[Utterance]:
    """Every utterance in a whole recording (the stream ends with it)."""
    endpointer = Endpointer(config, early_stop=early_stop)
    found = endpointer.process(audio)
    last = endpointer.flush()
    return [*found, *([last] if last is not None else [])]


def speech_spans(utterances: Sequence[Utterance]) -> list[tuple[float, float]]:
    """``[(start_s, end_s), ...]`` of the speech in each utterance."""
    return [(u.start_s, u.end_s) for u in utterances]

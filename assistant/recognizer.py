"""Running a bundle's model: audio in, :class:`InferenceResult` out (numpy + onnxruntime).

:class:`Recognizer` runs the whole-utterance graph on one clip (:meth:`Recognizer.recognize`)
or several (:meth:`Recognizer.recognize_batch`) and decides: with the bundle's head layout and
threshold (:func:`assistant.decode.decode`), or, when the manifest has a ``decoder``, by
decoding the graph's CTC output through the context's grammar, chosen together with the heads
(:func:`assistant.grammar.best_candidate`), accepted by the threshold (on the probability of the bundle's
scorer that the sentence is right, if it has one; else on the decoder's confidence) and the heads' gate.
Input is 16 kHz mono float PCM in [-1, 1]: NaN/Inf samples are replaced (and logged once), quiet
beyond a margin before and after the speech is cut off (:class:`assistant.audio.Trim`: the student
was trained on clips with little of it), audio shorter than the manifest's ``min_samples`` is
zero-padded, longer than ``max_samples`` cropped (logged).

:meth:`Recognizer.stream` runs the streaming graph, if the bundle has one, on chunks of any
length as they arrive; after the last chunk :meth:`RecognizerStream.result` equals what
:meth:`Recognizer.recognize` decides on the whole utterance (same padding and cropping) with ``trim=None``:
a stream cannot take back the quiet it has already heard.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from assistant.audio import DEFAULT_TRIM, Trim, speech_bounds
from assistant.bundle import Bundle, StreamingSpec, open_session
from assistant.decode import Decision, decode
from assistant.errors import AudioError, BundleError, ConfigError
from assistant.grammar import SEARCH_ENGINE, best_candidate, grammar_decision
from assistant.messages import InferenceResult
from assistant.wav import read_wav

_LOGGER = logging.getLogger(__name__)


@dataclass
class _Warned:
    nonfinite: bool = False
    cropped: bool = False


def check_audio(audio: object, name: str) -> np.ndarray:
    """``audio`` as a 1-D float32 array, or AudioError saying what was expected."""
    x = np.asarray(audio)
    if x.dtype.kind != "f":
        hint = " (divide int16 PCM by 32768)" if x.dtype.kind in "iu" else ""
        raise AudioError(f"{name}: expected float PCM in [-1, 1] at 16000 Hz, got dtype {x.dtype}{hint}")
    if x.ndim != 1:
        raise AudioError(f"{name}: expected 1-D mono audio [samples], got shape {x.shape} "
                         f"(average the channels with assistant.wav.to_mono)")
    return x.astype(np.float32, copy=False)


class Recognizer:
    """ONNX Runtime session over a bundle's model, and the decision made from its output."""

    def __init__(self, bundle: Bundle, *, threads: int = 1, threshold: float | None = None,
                 gate: float | None = None, reference: bool = False, trim: Trim | None = DEFAULT_TRIM) -> None:
        """``threshold``, ``gate``: override the bundle's confidence threshold and, for a bundle that decodes
        through its grammar, the heads' gate (both in [0, 1]). ``reference``: run the bundle's float
        reference model (``model.fp32.onnx``) instead of ``model.onnx``. ``trim``: how much quiet to keep
        around the speech of each clip (:func:`assistant.audio.speech_bounds`); None: decide clips whole."""
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"recognizer threads: expected a positive integer, got {threads!r}")
        for key, value in (("threshold", threshold), ("gate", gate)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"recognizer {key}: expected a number in [0, 1], got {value!r}")
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.threads = threads
        self.trim = trim
        self.threshold = self.manifest.threshold if threshold is None else float(threshold)
        decoder = self.manifest.decoder
        if gate is not None and decoder is None:
            raise ConfigError(f"recognizer gate: {bundle.path} decides with its heads alone (no grammar decoder), "
                              f"so it has no heads' gate; set only the threshold")
        self.gate = (decoder.settings.gate if decoder is not None else 0.0) if gate is None else float(gate)
        """The heads' 1 - P(not understood) a grammar decision also needs (unused by a heads-only bundle)."""
        model = bundle.reference_path if reference else bundle.model_path
        if model is None:
            raise BundleError(f"{bundle.path}: this bundle kept no float reference model (write it with keep_fp32=True)")
        self.session = open_session(model, threads)
        self._stream_session: ort.InferenceSession | None = None
        self._warned = _Warned()
        if decoder is not None and SEARCH_ENGINE != "c":
            _LOGGER.warning("the compiled grammar search (assistant._search) is not built: decoding in Python, "
                            "~20x slower (reinstall hubvoice where a C compiler is present: pip install .)")

    # --- input handling ----------------------------------------------------------------------------

    def prepare(self, audio: object, name: str = "<audio>") -> np.ndarray:
        """Checked, sanitized, padded/cropped 1-D float32 audio, ready for the model."""
        x = check_audio(audio, name)
        x = self.sanitize(x, name)
        if self.trim is not None:
            start, end = speech_bounds(x, self.trim, self.manifest.sample_rate)
            if (start, end) != (0, len(x)):
                _LOGGER.debug("%s: kept samples %d-%d of %d around the speech", name, start, end, len(x))
                x = x[start:end]
        m = self.manifest
        if len(x) < m.min_samples:
            _LOGGER.debug("%s: %d samples, padded to %d", name, len(x), m.min_samples)
            x = np.pad(x, (0, m.min_samples - len(x)))
        elif len(x) > m.max_samples:
            self._log_crop(name, len(x))
            x = x[: m.max_samples]
        return x

    def sanitize(self, x: np.ndarray, name: str) -> np.ndarray:
        if np.all(np.isfinite(x)):
            return x
        level = logging.DEBUG if self._warned.nonfinite else logging.WARNING
        _LOGGER.log(level, "%s: audio holds NaN or infinite samples; they are replaced by 0 / ±1 "
                    "(logged once per recognizer)", name)
        self._warned.nonfinite = True
        return np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)

    def _log_crop(self, name: str, samples: int) -> None:
        level = logging.DEBUG if self._warned.cropped else logging.WARNING
        _LOGGER.log(level, "%s: %.1f s of audio, only the first %.1f s are used (the bundle's maximum)",
                    name, samples / self.manifest.sample_rate, self.manifest.max_samples / self.manifest.sample_rate)
        self._warned.cropped = True

    # --- inference -------------------------------------------------------------------------------

    def decide(self, probs: Sequence[np.ndarray], ctc: np.ndarray | None = None) -> Decision:
        """Decision from one row of head probabilities (intent first) and, for a bundle that decodes through
        the grammar, the clip's CTC log-probabilities ``[steps, 1 + units]``."""
        decoder = self.manifest.decoder
        if decoder is None:
            return decode(self.manifest.layout, probs[0], list(probs[1:]), threshold=self.threshold)
        if ctc is None or self.bundle.grammar is None:
            raise BundleError(f"{self.bundle.path}: this bundle decodes through its grammar; the model gave no "
                              f"{decoder.settings.output!r} output")
        candidate = best_candidate(self.bundle.grammar, self.manifest.layout, ctc, probs, decoder.settings)
        return grammar_decision(candidate, self.threshold, self.gate)

    def _split(self, out: Sequence[np.ndarray], row: int) -> tuple[list[np.ndarray], np.ndarray | None]:
        """One clip's head rows and CTC rows from a run's outputs (heads first, then the CTC output)."""
        n = len(self.manifest.outputs)
        return [o[row] for o in out[:n]], (out[n][row] if self.manifest.decoder is not None else None)

    def _result(self, decision: Decision, name: str | None, latency_s: float) -> InferenceResult:
        return InferenceResult(name, decision.understood, decision.intent, dict(decision.slots),
                               round(min(max(decision.confidence, 0.0), 1.0), 4), round(latency_s * 1000.0, 3))

    def recognize(self, audio: object, input_name: str | None = None) -> InferenceResult:
        """Decide one utterance; ``latency_ms`` is the model run time plus the grammar decoding, if any."""
        x = self.prepare(audio, input_name or "<audio>")
        start = time.perf_counter()
        out = self.session.run(None, {self.manifest.input: x[None]})
        decision = self.decide(*self._split(out, 0))
        return self._result(decision, input_name, time.perf_counter() - start)

    def recognize_batch(self, clips: Sequence[object], input_names: Sequence[str | None] | None = None
                        ) -> list[InferenceResult]:
        """Decide several utterances; clips of equal length share one model run (padding would change
        the pooled features, so unequal clips are not padded together). ``latency_ms`` is each run's
        time divided among its clips."""
        names = list(input_names) if input_names is not None else [None] * len(clips)
        if len(names) != len(clips):
            raise ValueError(f"{len(clips)} clips but {len(names)} input names")
        prepared = [self.prepare(c, n or f"<clip {i}>") for i, (c, n) in enumerate(zip(clips, names, strict=True))]
        groups: dict[int, list[int]] = {}
        for i, x in enumerate(prepared):
            groups.setdefault(len(x), []).append(i)
        results: list[InferenceResult | None] = [None] * len(clips)
        for indices in groups.values():
            batch = np.stack([prepared[i] for i in indices])
            start = time.perf_counter()
            out = self.session.run(None, {self.manifest.input: batch})
            share = (time.perf_counter() - start) / len(indices)
            for row, i in enumerate(indices):
                started = time.perf_counter()
                decision = self.decide(*self._split(out, row))
                results[i] = self._result(decision, names[i], share + time.perf_counter() - started)
        return [r for r in results if r is not None]

    def stream(self) -> RecognizerStream:
        """A streaming decoder over the bundle's streaming model; BundleError if it has none."""
        spec = self.manifest.streaming
        if spec is None or self.bundle.stream_path is None:
            raise BundleError(f"{self.bundle.path}: this bundle has no streaming model; export it from a causal "
                              f"student (frontend padding 'causal', normalize 'none')")
        if self._stream_session is None:
            self._stream_session = open_session(self.bundle.stream_path, self.threads)
        return RecognizerStream(self, self._stream_session, spec)


class RecognizerStream:
    """Feeds audio chunks of any length to the streaming graph; :meth:`result` decides on all heard so far."""

    def __init__(self, recognizer: Recognizer, session: ort.InferenceSession, spec: StreamingSpec) -> None:
        self.recognizer = recognizer
        self.session = session
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self.state = {s.input: np.full((1, *s.shape), s.init, np.float32) for s in self.spec.states}
        self.pending = np.zeros(0, np.float32)
        self.heard = 0
        """Samples accepted so far (at most the bundle's max_samples)."""
        self.probs: list[np.ndarray] | None = None
        self.ctc: list[np.ndarray] = []
        """Per chunk run, its steps' CTC log-probabilities (bundles that decode through the grammar)."""
        self.latency_s = 0.0

    def _step(self, chunk: np.ndarray, state: dict[str, np.ndarray]
              ) -> tuple[list[np.ndarray], np.ndarray | None, dict[str, np.ndarray]]:
        start = time.perf_counter()
        out = self.session.run(None, {self.spec.input: chunk[None], **state})
        self.latency_s += time.perf_counter() - start
        n = len(self.spec.outputs)
        ctc = out[n][0] if self.spec.ctc_output else None
        n += bool(self.spec.ctc_output)
        return [o[0] for o in out[: len(self.spec.outputs)]], ctc, {
            s.input: v for s, v in zip(self.spec.states, out[n:], strict=True)}

    def feed(self, chunk: object, name: str = "<stream>") -> None:
        """Add audio (1-D float PCM, any length); full multiples of the chunk size run at once."""
        x = self.recognizer.sanitize(check_audio(chunk, name), name)
        room = self.recognizer.manifest.max_samples - self.heard
        if len(x) > room:
            self.recognizer._log_crop(name, self.heard + len(x))
            x = x[: max(room, 0)]
        self.heard += len(x)
        self.pending = np.concatenate([self.pending, x])
        usable = len(self.pending) - len(self.pending) % self.spec.chunk_multiple
        if usable:
            self.probs, ctc, self.state = self._step(self.pending[:usable], self.state)
            if ctc is not None:
                self.ctc.append(ctc)
            self.pending = self.pending[usable:]

    def result(self, input_name: str | None = None) -> InferenceResult:
        """The decision on everything fed since :meth:`reset` (short audio is padded as in ``recognize``)."""
        probs, ctc = self.probs, list(self.ctc)
        missing = self.recognizer.manifest.min_samples - self.heard
        if missing > 0 or probs is None:
            tail = np.concatenate([self.pending, np.zeros(max(missing, 0), np.float32)])
            usable = len(tail) - len(tail) % self.spec.chunk_multiple
            if usable:
                probs, more, _ = self._step(tail[:usable], self.state)  # the stream itself is left as it was
                ctc += [more] if more is not None else []
        if probs is None:
            raise AudioError(f"{input_name or '<stream>'}: no audio fed yet")
        start = time.perf_counter()
        decision = self.recognizer.decide(probs, np.concatenate(ctc) if ctc else None)
        return self.recognizer._result(decision, input_name, self.latency_s + time.perf_counter() - start)


def recognize_file(recognizer: Recognizer, path: str | os.PathLike[str]) -> InferenceResult:
    """Read any common WAV (converted to 16 kHz mono) and decide it; AudioError names the file.

    NaN/Inf samples in float WAVs become 0 / ±1 (logged) instead of failing the file.
    """
    name = os.fspath(path)
    try:
        audio = read_wav(name)
    except AudioError:
        audio = read_wav(name, allow_nonfinite=True)  # raises again unless NaN/Inf was the only problem
        _LOGGER.warning("%s: WAV holds NaN or infinite samples; they are replaced by 0 / ±1", name)
    return recognizer.recognize(audio, name)

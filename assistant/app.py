"""The hub service (``hubvoice run``): audio in, endpointing, ONNX Runtime, MQTT out.

Stages joined by bounded queues, each a thread with a loop that logs and survives its own
failures and exits on shutdown::

    source thread (one per audio source) ─frames─► endpointer thread (one per source)
        ─utterances─► recognizer thread ─results─► publisher thread ─► outbox ─► broker

A live source (microphone, satellite) never waits for a slow consumer: frames are dropped and
the drop is logged once. Files and pipes wait instead, so nothing is lost. When every source
ends (files read, stdin closed), what is in flight is recognized and published and the service
stops by itself; :meth:`Service.stop` (SIGINT/SIGTERM) stops the audio at once. Either way the
outbox is flushed (``Publisher.stop``) and ``offline`` is published before the process exits.

A second MQTT connection (:class:`MqttListener`) carries what the hub receives: satellite audio
(``hermes/audioServer/<site>/audioFrame``) and, with ``audio.listen``, ``<prefix>/<site>/listen``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import paho.mqtt.client as paho

from assistant.audio import (
    AudioSource,
    MicSource,
    RawSource,
    SatelliteSource,
    WavSource,
    frame_samples,
    import_sounddevice,
)
from assistant.bundle import Bundle, load_bundle
from assistant.config import HubConfig, MqttConfig
from assistant.decode import decode
from assistant.endpoint import Endpointer, Utterance
from assistant.errors import AudioError, BundleError, ConfigError, HubvoiceError
from assistant.messages import InferenceResult, MessageError
from assistant.mqtt import Publisher, build_client
from assistant.recognizer import Recognizer, RecognizerStream

_LOGGER = logging.getLogger(__name__)

_END = None
"""Sentinel passed down the queues when a source has ended."""
_POLL_S = 0.1


def parse_listen(payload: bytes, default_timeout_s: float) -> float:
    """Seconds to listen from a ``listen`` message: empty, or ``{"timeout_s": 8}``; MessageError otherwise."""
    text = payload.decode("utf-8", errors="replace").strip()
    if not text:
        return default_timeout_s
    try:
        data = json.loads(text)
    except ValueError:
        raise MessageError(f"expected empty or a JSON object like {{\"timeout_s\": 8}}, got {text[:60]!r}") from None
    if not isinstance(data, dict):
        raise MessageError(f"expected a JSON object like {{\"timeout_s\": 8}}, got {text[:60]!r}")
    timeout = data.get("timeout_s", default_timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise MessageError(f"timeout_s: expected a number of seconds in (0, 3600], got {timeout!r}")
    return float(timeout)


class MqttListener:
    """An MQTT connection that only subscribes (QoS 0) and hands payloads to handlers; paho reconnects."""

    def __init__(self, config: MqttConfig, *, client_id: str) -> None:
        self.config = replace(config, client_id=client_id)
        # a clean session and no will: it only receives live audio and listen requests (QoS 0),
        # nothing worth keeping for it while it is away, and the Publisher owns the site's status
        self._client = build_client(self.config, status_topic=f"{config.prefix}/.listener", presence=False)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self.subscribed = threading.Event()
        """Set once the broker confirmed the subscriptions."""
        self._client.on_subscribe = lambda *args: self.subscribed.set()
        self._handlers: list[tuple[str, Callable[[bytes], None]]] = []
        self._warned: dict[str, float] = {}

    def subscribe(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Call ``handler(payload)`` (on paho's thread) for each message matching ``topic``; before :meth:`start`."""
        self._handlers.append((topic, handler))

    @property
    def topics(self) -> list[str]:
        return [topic for topic, _ in self._handlers]

    def start(self) -> None:
        _LOGGER.info("Listening on %s for %s", self.config.url, ", ".join(self.topics))
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            _LOGGER.error("MQTT broker %s refused the listener connection: %s", self.config.url, reason)
            return
        client.subscribe([(topic, 0) for topic in self.topics])

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        for topic, handler in self._handlers:
            if paho.topic_matches_sub(topic, message.topic):
                try:
                    handler(bytes(message.payload))
                except Exception as err:
                    now = time.monotonic()  # at most one warning per topic filter every 10 s: no flood
                    level = logging.WARNING if now - self._warned.get(topic, -1e9) >= 10.0 else logging.DEBUG
                    if level == logging.WARNING:
                        self._warned[topic] = now
                    _LOGGER.log(level, "Ignoring a message on %s: %s", message.topic, err,
                                exc_info=not isinstance(err, HubvoiceError))


class StreamConfidence:
    """:class:`assistant.endpoint.EarlyStop` from the bundle's streaming model: confident when the decision on
    what was heard so far is understood with at least ``threshold`` confidence.

    For a bundle that decodes through its grammar, "the decision so far" is the heads' (decided on every
    chunk, they cost nothing); the grammar decoder then decides the utterance once, when it ends."""

    def __init__(self, recognizer: Recognizer, threshold: float) -> None:
        self.recognizer, self.threshold = recognizer, threshold
        self.stream: RecognizerStream = recognizer.stream()

    def reset(self) -> None:
        self.stream.reset()

    def feed(self, audio: np.ndarray) -> bool:
        self.stream.feed(audio)
        if self.stream.probs is None or self.stream.heard < self.recognizer.manifest.min_samples:
            return False
        probs = self.stream.probs
        if self.recognizer.manifest.decoder is not None:
            decision = decode(self.recognizer.manifest.layout, probs[0], list(probs[1:]))
        else:
            decision = self.recognizer.decide(probs)
        return decision.understood and decision.confidence >= self.threshold


def resolve_bundle(hub: HubConfig, base: Path) -> Path:
    """The bundle folder: ``bundle`` relative to hub.yaml's folder, as given, or a name in ``models/``."""
    import models

    if hub.bundle is None:
        name = "smart_home"
    else:
        for folder in (base / Path(hub.bundle).expanduser(), Path(hub.bundle).expanduser()):
            if folder.is_dir():
                return folder.resolve()
        name = hub.bundle
    try:
        return models.path(name)
    except FileNotFoundError as err:
        raise ConfigError(f"{hub.source}: bundle: no folder {hub.bundle!r} and {err}") from None


def open_sources(hub: HubConfig, *, stdin: BinaryIO | None = None) -> list[AudioSource]:
    """The sources hub.yaml names (not started: a microphone opens when it is iterated)."""
    audio = hub.audio
    n = frame_samples(audio.endpoint.frame_ms)
    if audio.source == "mic":
        import_sounddevice()  # no PortAudio: say how to install it now, not in a retry loop
        return [MicSource(audio.device, frame_samples=n, reopen_max_s=audio.reopen_max_s)]
    if audio.source == "wav":
        return [WavSource(audio.paths, frame_samples=n, realtime=audio.realtime)]
    if audio.source == "stdin":
        return [RawSource(stdin if stdin is not None else sys.stdin.buffer, sample_rate=audio.sample_rate,
                          sample_format=audio.format, channels=audio.channels, frame_samples=n)]
    return [SatelliteSource(site, frame_samples=n) for site in (audio.satellites or (hub.site,))]


@dataclass
class _Lane:
    """One source and its endpointer."""

    source: AudioSource
    endpointer: Endpointer
    frames: queue.Queue[np.ndarray | None]


class Service:
    """The running hub; :meth:`run` blocks until every source ended or :meth:`stop` was called."""

    def __init__(self, hub: HubConfig, bundle: Bundle, *, sources: Sequence[AudioSource] | None = None,
                 stdin: BinaryIO | None = None, publisher: Publisher | None = None,
                 flush_timeout_s: float = 5.0) -> None:
        self.hub, self.bundle, self.flush_timeout_s = hub, bundle, flush_timeout_s
        config = hub.recognizer
        unknown = sorted(set(config.thresholds) - {"intent", "gate"})
        if unknown:
            _LOGGER.warning("%s: recognizer.thresholds: ignoring %s (known: intent, gate)", hub.source,
                            ", ".join(unknown))
        try:
            self.recognizer = Recognizer(bundle, threads=config.threads, threshold=config.thresholds.get("intent"),
                                         gate=config.thresholds.get("gate"), trim=config.trim)
        except ConfigError as e:
            raise ConfigError(f"{hub.source}: recognizer.thresholds: {e}") from None
        if config.early_stop is not None and bundle.manifest.streaming is None:
            raise BundleError(f"{hub.source}: recognizer.early_stop needs a bundle with a streaming model; "
                              f"{bundle.path} has none (remove early_stop or export a causal student)")
        if hub.audio.endpoint.max_utterance_s * bundle.manifest.sample_rate > bundle.manifest.max_samples:
            _LOGGER.warning("audio.endpoint.max_utterance_s is %g s but the model hears at most %g s",
                            hub.audio.endpoint.max_utterance_s, bundle.manifest.max_samples / bundle.manifest.sample_rate)
        self.sources = list(sources) if sources is not None else open_sources(hub, stdin=stdin)
        self.publisher = publisher or Publisher.from_config(hub, bundle.slots_by_intent(), model=bundle.name)
        self.lanes = [_Lane(s, self._endpointer(s), queue.Queue(maxsize=max(1, 2 * 16000 // s.frame_samples)))
                      for s in self.sources]
        self.utterances: queue.Queue[tuple[str, Utterance] | None] = queue.Queue(maxsize=64)
        self.results: queue.Queue[tuple[InferenceResult, Utterance] | None] = queue.Queue(maxsize=64)
        self.listener = self._listener()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.published = 0
        """Results handed to the publisher so far."""

    def _endpointer(self, source: AudioSource) -> Endpointer:
        early = self.hub.recognizer.early_stop
        return Endpointer(self.hub.audio.endpoint, early_stop=StreamConfidence(self.recognizer, early) if early else None,
                          listen=self.hub.audio.listen, listen_timeout_s=self.hub.audio.listen_timeout_s, name=source.name)

    def _listener(self) -> MqttListener | None:
        satellites = [s for s in self.sources if isinstance(s, SatelliteSource)]
        if not satellites and not self.hub.audio.listen:
            return None
        listener = MqttListener(self.hub.mqtt, client_id=f"{self.hub.mqtt.client_id or 'hubvoice-' + self.hub.site}-in")
        for source in satellites:
            listener.subscribe(source.topic, source.feed)
        if self.hub.audio.listen:
            topic = f"{self.hub.mqtt.prefix}/{self.hub.site}/listen"

            def on_listen(payload: bytes) -> None:
                timeout = parse_listen(payload, self.hub.audio.listen_timeout_s)
                for lane in self.lanes:
                    lane.endpointer.listen(timeout)

            listener.subscribe(topic, on_listen)
        return listener

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.publisher.start()
        if self.listener is not None:
            self.listener.start()
        threads: list[tuple[str, Callable[..., None], tuple[_Lane, ...]]] = []
        for lane in self.lanes:
            threads += [(f"audio-{lane.source.name}", self._source_loop, (lane,)),
                        (f"endpoint-{lane.source.name}", self._endpoint_loop, (lane,))]
        threads += [("recognize", self._recognize_loop, ()), ("publish", self._publish_loop, ())]
        for name, target, args in threads:
            thread = threading.Thread(target=target, args=args, name=f"hubvoice-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        _LOGGER.info("hubvoice running: site %s, bundle %s, audio from %s", self.hub.site, self.bundle.name,
                     ", ".join(s.name for s in self.sources))

    def stop(self) -> None:
        """Ask the service to stop (safe from a signal handler): the audio stops now, the rest drains."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the pipeline drained (True) or ``timeout`` passed (False); stops the sources on stop()."""
        deadline = None if timeout is None else time.monotonic() + timeout
        closed = False
        while alive := [t for t in self._threads if t.is_alive()]:
            if self._stop.is_set() and not closed:
                closed = True
                for source in self.sources:
                    source.close()
            if deadline is not None and time.monotonic() >= deadline:
                return False
            alive[0].join(_POLL_S)  # short joins: signal handlers run in between
        return True

    def shutdown(self) -> bool:
        """Stop everything: sources, stages (up to the flush timeout), listener, publisher (flush + offline)."""
        self.stop()
        drained = self.wait(self.flush_timeout_s)
        if not drained:
            _LOGGER.warning("Stages still busy after %g s; stopping anyway", self.flush_timeout_s)
        if self.listener is not None:
            self.listener.stop()
        delivered = self.publisher.stop(timeout=self.flush_timeout_s)
        problems = "; ".join(f"{s.name}: {s.problems.summary()}" for s in self.sources if s.problems.summary())
        _LOGGER.info("hubvoice stopped: %d result(s) published%s", self.published,
                     f"; audio problems seen: {problems}" if problems else "")
        return drained and delivered

    def run(self) -> int:
        """Start, run until the audio ends or :meth:`stop`, shut down cleanly; 0 on a clean exit."""
        self.start()
        try:
            self.wait()
        finally:
            self.shutdown()
        return 0

    # --- stages ----------------------------------------------------------------------------------

    def _put(self, q: queue.Queue[Any], item: Any, *, live: bool, lane: _Lane | None = None) -> bool:
        """Put on a bounded queue: a live lane drops its oldest frame when full; others wait. False when stopping."""
        while True:
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                if self._stop.is_set() and item is not _END:
                    return False
                if live and lane is not None and item is not _END:
                    lane.source.problems("lagging", "%s: audio dropped; endpointing is not keeping up", lane.source.name)
                    with contextlib.suppress(queue.Empty):
                        q.get_nowait()

    def _source_loop(self, lane: _Lane) -> None:
        source, backoff = lane.source, 0.5
        try:
            while not self._stop.is_set():
                delivered = False
                try:
                    for frame in source:
                        delivered = True
                        if not self._put(lane.frames, frame, live=source.live, lane=lane):
                            break
                    break  # the source ended
                except Exception as err:
                    if isinstance(err, AudioError):
                        _LOGGER.error("%s: %s", source.name, err)
                    else:
                        _LOGGER.exception("%s: the audio source failed", source.name)
                    backoff = 0.5 if delivered else min(backoff * 2, 30.0)
                    if not source.live or self._stop.wait(backoff):
                        break
                    _LOGGER.info("%s: starting the audio source again", source.name)
        finally:
            source.close()
            self._put(lane.frames, _END, live=False)

    def _endpoint_loop(self, lane: _Lane) -> None:
        endpointer = lane.endpointer
        while True:
            try:
                frame = lane.frames.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if frame is _END:
                break
            try:
                utterances = endpointer.process(frame)
            except Exception:
                _LOGGER.exception("%s: endpointing failed; starting over", lane.source.name)
                endpointer.reset()
                continue
            for utterance in utterances:
                self._put(self.utterances, (lane.source.name, utterance), live=False)
        try:
            last = None if self._stop.is_set() else endpointer.flush()
        except Exception:
            _LOGGER.exception("%s: endpointing the end of the audio failed", lane.source.name)
            last = None
        if last is not None:
            self._put(self.utterances, (lane.source.name, last), live=False)
        self._put(self.utterances, _END, live=False)

    def _recognize_loop(self) -> None:
        ended = 0
        while ended < len(self.lanes):
            item = self.utterances.get()
            if item is _END:
                ended += 1
                continue
            name, utterance = item
            try:
                result = self.recognizer.recognize(utterance.audio, name)
            except Exception:
                _LOGGER.exception("%s: recognizing the utterance at %.2f s failed; skipped", name, utterance.start_s)
                continue
            what = " ".join([result.intent or "", *(f"{k}={v}" for k, v in result.slots.items())]) \
                if result.understood else "not understood"
            _LOGGER.info("%s: %.2f-%.2f s (%s): %s (confidence %.2f, model %.1f ms)", name, utterance.start_s,
                         utterance.end_s, utterance.reason, what, result.confidence, result.latency_ms)
            self._put(self.results, (result, utterance), live=False)
        self._put(self.results, _END, live=False)

    def _publish_loop(self) -> None:
        while True:
            item = self.results.get()
            if item is _END:
                return
            result, utterance = item
            try:
                self.publisher.publish_result(result)
            except Exception:
                _LOGGER.exception("Publishing %s failed; the result is lost", result.intent or "a result")
                continue
            self.published += 1
            _LOGGER.debug("end of speech -> outbox: %.1f ms", (time.monotonic() - utterance.ended_at) * 1000)


def load_service(hub: HubConfig, *, base: Path | str = ".", stdin: BinaryIO | None = None) -> Service:
    """Load and verify the bundle hub.yaml names, and build the service (nothing started yet)."""
    bundle = load_bundle(resolve_bundle(hub, Path(base)), threads=hub.recognizer.threads)
    return Service(hub, bundle, stdin=stdin)


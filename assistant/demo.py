"""``hubvoice demo``: the default model, end to end, on a machine with nothing else installed.

What it shows is what ``hubvoice run`` does: each of the bundle's sample commands (WAVs
from voices the model never trained on) goes through the recognizer and the same
:class:`~assistant.mqtt.Publisher` (durable outbox, QoS 1), and a second MQTT client
subscribed to ``#`` prints every message as it arrives — the intent event, the Hermes
message, the mapped device commands — with the time since the command's audio ended.

The broker: ``--broker mqtt[s]://host:port`` uses yours; without one the demo starts an
in-process MQTT broker (the ``amqtt`` package, ``pip install 'hubvoice[demo]'``) on a free
port of 127.0.0.1 and stops it at the end. ``--mic`` listens to the default microphone
through the full service (VAD endpointing) until Ctrl-C instead of playing the samples.

The device commands come from :data:`DEMO_ACTIONS`, the same ``actions`` a hub.yaml has
(``deploy/examples/hub.yaml`` is the commented version for a real home).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from assistant.bundle import Bundle, load_bundle
from assistant.config import HubConfig
from assistant.errors import ConfigError

_LOGGER = logging.getLogger(__name__)

DEMO_ACTIONS: list[dict[str, Any]] = [
    # zigbee2mqtt lights: one topic per area ("all" when no area was said)
    {"intent": "HassTurnOn", "when": {"domain": "light"}, "topic": "zigbee2mqtt/{area|default:all|slug}_light/set",
     "payload": {"state": "ON"}},
    {"intent": "HassTurnOff", "when": {"domain": "light"}, "topic": "zigbee2mqtt/{area|default:all|slug}_light/set",
     "payload": {"state": "OFF"}},
    {"intent": "HassLightSet", "topic": "zigbee2mqtt/{area|default:all|slug}_light/set",
     "payload": {"brightness_percent": "{brightness|default:100|int}"}},
    # a Home Assistant thermostat through an MQTT climate entity's command topic
    {"intent": "HassClimateSetTemperature", "topic": "home/{area|default:house|slug}/thermostat/set",
     "payload": {"temperature": "{temperature|float}"}},
    # an MQTT cover
    {"intent": "HassSetPosition", "topic": "home/{area|default:house|slug}/cover/set_position",
     "payload": "{position|int}"},
]


class InProcessBroker:
    """An amqtt MQTT broker on 127.0.0.1 in a background thread (for the demo and its test)."""

    def __init__(self, port: int = 0) -> None:
        try:
            from amqtt.broker import Broker  # noqa: F401  (checked here: a clear error before any thread starts)
        except ImportError:
            raise ConfigError("no --broker given and the in-process broker needs the amqtt package: "
                              "pip install 'hubvoice[demo]' (or pass --broker mqtt://host:port)") from None
        self.port = port or _free_port()
        self._loop = asyncio.new_event_loop()
        self._broker: Any = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hubvoice-demo-broker", daemon=True)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> InProcessBroker:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # it logs every client's disconnect as an error
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise ConfigError(f"the in-process MQTT broker did not start on port {self.port}: "
                              f"{self._error or 'timed out'}")
        return self

    def stop(self) -> None:
        if self._broker is not None and self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
            except Exception as err:  # noqa: BLE001  (a demo broker that fails to stop must not hide the results)
                _LOGGER.debug("in-process broker shutdown: %s", err)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        from amqtt.broker import Broker

        async def start() -> None:
            config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                      "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
            self._broker = Broker(config)
            await self._broker.start()

        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(start())
        except BaseException as err:  # noqa: BLE001  (reported by start())
            self._error = err
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Arrival:
    """One message the live view received."""

    t: float
    """time.monotonic() at arrival."""
    topic: str
    payload: bytes
    retain: bool


@dataclass
class LiveView:
    """A second MQTT client subscribed to ``#``: prints and keeps every message it receives."""

    url: str
    out: TextIO | None = None
    arrivals: list[Arrival] = field(default_factory=list)

    def __post_init__(self) -> None:
        from assistant.config import parse_broker_url

        self._target = parse_broker_url(self.url)
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"hubvoice-demo-view-{time.time_ns()}")
        if self._target.username:
            self._client.username_pw_set(self._target.username, self._target.password)
        if self._target.tls:
            self._client.tls_set()
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
        self._client.on_message = self._on_message
        self._lock = threading.Condition()
        self.since: float | None = None
        """Times are printed relative to this (the end of the current command's audio)."""

    def start(self) -> LiveView:
        try:
            self._client.connect(self._target.host, self._target.port)
        except OSError as err:
            raise ConfigError(f"cannot reach the MQTT broker {self.url}: {err.strerror or err}") from None
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def wait_for(self, match: Callable[[Arrival], bool], timeout: float) -> Arrival | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for a in self.arrivals:
                    if match(a):
                        return a
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        arrival = Arrival(time.monotonic(), message.topic, bytes(message.payload), bool(message.retain))
        with self._lock:
            self.arrivals.append(arrival)
            self._lock.notify_all()
        if self.out is not None:
            when = "retained" if arrival.retain else (
                f"+{(arrival.t - self.since) * 1000:6.1f} ms" if self.since is not None else "")
            text = arrival.payload.decode("utf-8", "replace")
            print(f"    {when:>11}  {arrival.topic}  {text if len(text) <= 110 else text[:107] + '...'}",
                  file=self.out, flush=True)


def demo_config(site: str, broker_url: str, outbox: Path, intents: Collection[str]) -> HubConfig:
    """The demo's hub config: the broker, a throwaway outbox, the :data:`DEMO_ACTIONS` of ``intents``, the mic."""
    actions = [a for a in DEMO_ACTIONS if a["intent"] in intents]
    return HubConfig.from_dict({"site": site, "outbox": {"path": str(outbox)}, "actions": actions,
                                "audio": {"source": "mic"}}, source="hubvoice demo", broker=broker_url)


def _is_event(topics: Collection[str], event_id: str, arrival: Arrival) -> bool:
    """Is ``arrival`` the intent event (or not-understood event) with id ``event_id``?"""
    if arrival.topic not in topics:
        return False
    try:
        data = json.loads(arrival.payload)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("id") == event_id


def _describe(intent: str | None, slots: dict[str, Any]) -> str:
    return " ".join([intent or "not understood", *(f"{k}={v}" for k, v in slots.items())])


def play_samples(bundle: Bundle, hub: HubConfig, view: LiveView, out: TextIO, *, timeout: float = 10.0
                 ) -> tuple[int, list[float]]:
    """Recognize and publish each bundled sample; returns (samples as expected, end-of-audio -> event ms)."""
    from assistant.messages import Topics
    from assistant.mqtt import Publisher
    from assistant.recognizer import Recognizer, recognize_file

    recognizer = Recognizer(bundle, threads=hub.recognizer.threads)
    publisher = Publisher.from_config(hub, bundle.slots_by_intent(), model=bundle.name)
    publisher.start()
    if not publisher.wait_connected(timeout):
        publisher.stop(timeout=0.5)
        raise ConfigError(f"cannot reach the MQTT broker {hub.mqtt.url} ({publisher.last_error or 'timed out'})")
    topics = Topics(hub.site, hub.mqtt.prefix)
    events = (topics.intent, topics.not_understood)
    time.sleep(0.2)  # the retained status and the discovery config print before the first command
    ok, latencies = 0, []
    try:
        for sample in bundle.manifest.samples:
            path = bundle.path / sample.audio.file
            expected = sample.expected
            print(f"\n> {sample.audio.file}  (expected: {_describe(expected.get('intent'), expected.get('slots', {}))})",
                  file=out, flush=True)
            view.since = time.monotonic()  # the whole file has been "spoken": its audio ended now
            result = recognize_file(recognizer, path)
            event = publisher.publish_result(result, input_name=sample.audio.file)
            got = view.wait_for(functools.partial(_is_event, events, event.id), timeout)
            same = (result.understood, result.intent, result.slots) == (
                expected.get("understood"), expected.get("intent"), expected.get("slots", {}))
            ok += same
            if got is not None:
                latencies.append((got.t - (view.since or got.t)) * 1000)
            time.sleep(0.05)  # let the device commands of this sample print before the next header
            print(f"  recognized: {_describe(result.intent, result.slots)}  (confidence {result.confidence:.2f}, "
                  f"model {result.latency_ms:.1f} ms)  {'as expected' if same else 'NOT as expected'}"
                  + ("" if got is not None else f"  -- no intent event within {timeout:g} s"), file=out, flush=True)
    finally:
        publisher.stop(timeout=timeout)
    return ok, latencies


def run_demo(bundle_dir: str | Path, *, broker: str | None = None, site: str = "demo", mic: bool = False,
             out: TextIO, stop: threading.Event | None = None) -> int:
    """``hubvoice demo``: 0 when every sample was recognized as expected and published (see module doc)."""
    bundle = load_bundle(bundle_dir)
    local = None if broker else InProcessBroker().start()
    url = broker if broker else local.url if local else ""
    print(f"hubvoice demo: model {bundle.name} ({bundle.model_path.stat().st_size / 1024:.0f} KiB, "
          f"{len(bundle.layout.intents) - 1} intents), broker {url}{' (in-process)' if local else ''}, site {site}",
          file=out, flush=True)
    view = LiveView(url, out).start()
    try:
        with tempfile.TemporaryDirectory(prefix="hubvoice-demo-") as tmp:
            hub = demo_config(site, url, Path(tmp) / "outbox.sqlite3", bundle.slots_by_intent())
            if mic:
                return _listen(bundle, hub, view, out, stop or threading.Event())
            ok, latencies = play_samples(bundle, hub, view, out)
            total = len(bundle.manifest.samples)
            summary = f"\n{ok}/{total} sample commands recognized as expected"
            if latencies:
                summary += (f"; end of audio -> intent event received: median {statistics.median(latencies):.1f} ms, "
                            f"max {max(latencies):.1f} ms")
            print(summary, file=out, flush=True)
            return 0 if ok == total and len(latencies) == total else 1
    finally:
        view.stop()
        if local is not None:
            local.stop()


def _listen(bundle: Bundle, hub: HubConfig, view: LiveView, out: TextIO, stop: threading.Event) -> int:
    from assistant.app import Service

    view.since = None
    service = Service(hub, bundle)
    print("listening to the microphone: say a command (Ctrl-C to stop)", file=out, flush=True)
    service.start()
    try:
        while not stop.wait(0.2) and not service.stopping:
            pass
    except KeyboardInterrupt:
        pass
    return 0 if service.shutdown() else 1


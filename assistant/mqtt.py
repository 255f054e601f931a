"""Publishing the hub's results over MQTT (paho-mqtt 2.x), through the durable outbox.

:class:`Publisher` ties the parts together: :meth:`Publisher.publish_result` writes the
device commands (actions), the intent event and the Hermes message of one result to the
outbox in one transaction, and a pump thread publishes what is due whenever the broker is
connected. paho runs its own network thread and reconnects with exponential backoff.

Delivery is at-least-once and in order: a message leaves the outbox only when the broker
acknowledges it (PUBACK). After a reconnect, messages paho had in flight are dropped from
paho (``drop_out_messages``) and sent again from the outbox, after checking their age: a
command older than its maximum age is never sent late; it is marked expired, logged, and
reported on ``<prefix>/<site>/expired``. A message can arrive twice if the connection
dropped between the broker receiving it and its PUBACK reaching the hub.

Connection lifecycle: client id ``hubvoice-<site>``, a persistent session (MQTT 3.1.1
clean_session off; MQTT 5 clean_start off with a session expiry), a retained last will
``offline`` and a retained ``online`` on ``<prefix>/<site>/status``. A refused connection
(wrong password) is logged once as an error naming the broker and the user, and retried
with backoff like a network failure; :attr:`Publisher.state` tells where it stands.

A one-shot tool that publishes next to a running hub (``hubvoice infer --publish``) uses
``presence=False``: it must neither take the service's client id (the broker would disconnect
the service) nor speak for the site's presence. Its client id gets ``-<pid>`` appended, the
session is clean (nothing is left on the broker), and it sets no last will, publishes no
``online``/``offline`` and no Home Assistant discovery: the retained status stays the
service's. Its own messages still go through the outbox with QoS 1 and PUBACK.
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import queue
import ssl
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from assistant.actions import Actions
from assistant.config import HubConfig, MqttConfig
from assistant.errors import ConfigError, HubvoiceError
from assistant.messages import (
    HERMES_NOT_RECOGNIZED_TOPIC,
    ExpiredItem,
    ExpiredReport,
    HaDiscovery,
    HermesIntent,
    HermesNotRecognized,
    InferenceResult,
    IntentEvent,
    MessageError,
    Topics,
    encode,
    utc_timestamp,
)
from assistant.outbox import Outbox, OutboxMessage, StoredMessage

_LOGGER = logging.getLogger(__name__)

_PURGE_AFTER_S = 7 * 24 * 3600.0
_TRANSIENT_IDS = itertools.count()


class ConnectionState(str, enum.Enum):
    """Where the broker connection stands."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    REFUSED = "refused"


class _Client(paho.Client):
    """paho's client, remembering why the last connection attempt failed (paho does not say)."""

    last_connect_error: OSError | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as err:
            self.last_connect_error = err
            raise


def transient_client_id(base: str) -> str:
    """``base-<pid>`` (``base-<pid>-<n>`` for the second and later in one process): an id no service uses."""
    n = next(_TRANSIENT_IDS)
    return f"{base}-{os.getpid()}" + (f"-{n}" if n else "")


def build_client(config: MqttConfig, *, status_topic: str, presence: bool = True) -> _Client:
    """A paho client set up from the config (not connected); ConfigError for unusable TLS files.

    ``presence``: a persistent session and the retained last will ``offline`` on ``status_topic``;
    without it a clean session and no will (a one-shot tool, see the module docstring).
    """
    v5 = config.protocol == "5"
    client = _Client(
        CallbackAPIVersion.VERSION2,
        client_id=config.client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        transport="websockets" if config.transport == "websockets" else "tcp",
        **({} if v5 else {"clean_session": not presence}),
    )
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    if config.tls is not None:
        try:
            client.tls_set(ca_certs=config.tls.ca, certfile=config.tls.cert, keyfile=config.tls.key)
        except (OSError, ssl.SSLError, ValueError) as err:
            raise ConfigError(f"mqtt.tls: cannot use ca={config.tls.ca} cert={config.tls.cert} "
                              f"key={config.tls.key}: {err}") from err
        client.tls_insecure_set(config.tls.insecure)
    if presence:
        client.will_set(status_topic, "offline", qos=1, retain=True)
    client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)  # type: ignore[arg-type]
    return client


class Publisher:
    """Publishes intent events, Hermes messages and device commands for one site."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        site: str,
        outbox: Outbox | str | Path,
        actions: Actions | None = None,
        max_age_s: float = 30.0,
        model: str = "unknown",
        max_inflight: int = 16,
        tick_s: float = 0.25,
        presence: bool = True,
    ) -> None:
        """``outbox`` is an open Outbox (left open by :meth:`stop`) or a path (opened and closed here).

        ``presence=False``: publish without being the site's presence (a one-shot tool next to a
        running hub): unique client id, clean session, no last will, online/offline or discovery.
        """
        if not config.client_id:
            config = replace(config, client_id=f"hubvoice-{site}")
        if not presence:
            config = replace(config, client_id=transient_client_id(config.client_id))
        self.config = config
        self.presence = presence
        self.site = site
        self.topics = Topics(site, config.prefix)
        self.actions = actions if actions is not None else Actions([], default_qos=config.qos)
        self.max_age_s = max_age_s
        self.model = model
        self._max_inflight = max_inflight
        self._tick_s = tick_s
        self._client = build_client(config, status_topic=self.topics.status, presence=presence)
        self._own_outbox = not isinstance(outbox, Outbox)
        self.outbox = outbox if isinstance(outbox, Outbox) else Outbox(outbox)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._state = ConnectionState.STOPPED
        self.last_error: str | None = None
        """Why the last connection attempt failed, for status displays; None while connected."""
        self.connect_attempts = 0
        """Connection attempts so far (successful or not)."""
        self._connected = threading.Event()
        self._link_up = False
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._changed = threading.Condition()
        self._pump_thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._outage_logged = False
        # Owned by the pump thread only:
        self._inflight: dict[int, int] = {}
        self._cursor = 0
        self._pump_connected = False

    @classmethod
    def from_config(
        cls, hub: HubConfig, slots_by_intent: Mapping[str, Collection[str]] | None = None, *, model: str | None = None,
        presence: bool = True,
    ) -> Publisher:
        """Build from hub.yaml; the actions are checked against ``{intent: slot names}`` here, at start-up."""
        actions = Actions(hub.actions, slots_by_intent, default_qos=hub.mqtt.qos, source=hub.source)
        return cls(hub.mqtt, site=hub.site, outbox=hub.outbox.path, actions=actions,
                   max_age_s=hub.outbox.max_age_s, model=model or (Path(hub.bundle).name if hub.bundle else "unknown"),
                   presence=presence)

    # --- public API ------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    def start(self) -> None:
        """Connect in the background (returns at once; paho retries until :meth:`stop`)."""
        if self._closed:
            raise HubvoiceError("this Publisher was stopped; make a new one")
        if self._pump_thread is not None:
            return
        self.outbox.purge(_PURGE_AFTER_S)
        self._state = ConnectionState.CONNECTING
        self._pump_thread = threading.Thread(target=self._pump_loop, name=f"hubvoice-outbox-{self.site}", daemon=True)
        self._pump_thread.start()
        kwargs: dict[str, Any] = {}
        if self.config.protocol == "5" and self.presence:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.config.session_expiry_s
            kwargs = {"clean_start": False, "properties": properties}
        elif self.config.protocol == "5":
            kwargs = {"clean_start": True}  # no session expiry: the broker forgets it on disconnect
        _LOGGER.info("Connecting to MQTT broker %s as %s", self.config.url, self.config.client_id)
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive, **kwargs)
        self._client.loop_start()

    def publish_result(self, result: InferenceResult, input_name: str | None = None) -> IntentEvent:
        """Store the messages for one result in the outbox (durably) and let the pump publish them."""
        if self._closed:
            raise HubvoiceError("this Publisher was stopped; make a new one")
        if input_name is not None:
            result = replace(result, input=input_name)
        event = IntentEvent.create(result, self.site)
        self.outbox.put(self.messages_for(event))
        self._events.put(("wake",))
        return event

    def messages_for(self, event: IntentEvent) -> list[OutboxMessage]:
        """Device commands first (they are the ones a person waits for), then the event, then Hermes."""
        result = event.result

        def message(topic: str, payload: bytes, qos: int = self.config.qos, retain: bool = False) -> OutboxMessage:
            return OutboxMessage(topic, payload, qos, retain, intent=result.intent, ref=event.id,
                                 max_age_s=self.max_age_s)

        out = []
        if result.understood and result.intent is not None:
            for action in self.actions.render(result.intent, result.slots, self.site):
                out.append(message(action.topic, action.payload, action.qos, action.retain))
            out.append(message(self.topics.intent, encode(event)))
            if self.config.hermes:
                try:
                    hermes = HermesIntent.from_event(event)
                    out.append(message(hermes.topic, encode(hermes)))
                except MessageError as err:
                    _LOGGER.warning("Not publishing the Hermes message for %s: %s", result.intent, err)
        else:
            out.append(message(self.topics.not_understood, encode(event)))
            if self.config.hermes:
                out.append(message(HERMES_NOT_RECOGNIZED_TOPIC, encode(HermesNotRecognized.from_event(event))))
        return out

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until nothing is pending in the outbox (delivered, expired or rejected); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.outbox.pending_count():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.1))
        return True

    def stop(self, timeout: float = 5.0) -> bool:
        """Flush the outbox (up to ``timeout``), publish ``offline`` (with presence), disconnect cleanly.

        Returns True if everything pending was delivered; what was not stays in the outbox.
        """
        if self._closed:
            return True
        deadline = time.monotonic() + timeout
        flushed = self.wait_delivered(timeout) if self._connected.is_set() else self.outbox.pending_count() == 0
        self._stopping = True
        if self._pump_thread is not None:
            self._events.put(("stop",))
            self._pump_thread.join(max(deadline - time.monotonic(), 1.0))
        if self._connected.is_set() and self.presence:
            info = self._client.publish(self.topics.status, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(max(deadline - time.monotonic(), 0.5))
            except (RuntimeError, ValueError) as err:
                _LOGGER.warning("Could not publish 'offline' before disconnecting: %s", err)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._state = ConnectionState.STOPPED
        self._closed = True
        pending = self.outbox.pending_count()
        if pending:
            _LOGGER.warning("Stopped with %d message(s) still in the outbox %s; they are sent on the next start",
                            pending, self.outbox.path)
        if self._own_outbox:
            self.outbox.close()
        return flushed

    # --- paho callbacks (paho's network thread) -----------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        self.connect_attempts += 1
        if reason.is_failure:
            error = (f"MQTT broker {self.config.url} refused the connection for user "
                     f"{self.config.username or '(anonymous)'}: {reason}")
            if error != self.last_error:
                hint = ""
                if reason.value in (4, 5, 134, 135):
                    hint = " Check mqtt.username and mqtt.password (or HUBVOICE_MQTT_USERNAME/HUBVOICE_MQTT_PASSWORD)."
                _LOGGER.error("%s.%s Retrying with backoff (up to %g s).", error, hint, self.config.reconnect_max_s)
            else:
                _LOGGER.debug("%s (attempt %d)", error, self.connect_attempts)
            self.last_error = error
            self._state = ConnectionState.REFUSED
            return
        # paho would resend what it had in flight as is; the outbox resends it after checking its age.
        client.drop_out_messages()
        if self.presence:
            client.publish(self.topics.status, "online", qos=1, retain=True)
            if self.config.homeassistant.discovery:
                client.subscribe(f"{self.config.homeassistant.prefix}/status", qos=1)
                self._announce(client)
        self._link_up = True
        self._events.put(("connected",))
        self._state = ConnectionState.CONNECTED
        self.last_error = None
        self._outage_logged = False
        self._connected.set()
        _LOGGER.info("Connected to MQTT broker %s (%d message(s) waiting in the outbox)",
                     self.config.url, self.outbox.pending_count())

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self.connect_attempts += 1
        err = getattr(client, "last_connect_error", None)
        self.last_error = f"cannot reach MQTT broker {self.config.url}: {err or 'connection failed'}"
        self._state = ConnectionState.DISCONNECTED
        if not self._outage_logged:
            self._outage_logged = True
            _LOGGER.warning("%s; retrying with backoff (up to %g s); commands wait in the outbox for up to %.0f s",
                            self.last_error, self.config.reconnect_max_s, self.max_age_s)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
                       ) -> None:
        self._link_up = False
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._events.put(("disconnected",))
        if self._stopping:
            return
        if self._state != ConnectionState.REFUSED:
            self._state = ConnectionState.DISCONNECTED
        if was_connected:
            self.last_error = f"lost the connection to MQTT broker {self.config.url}: {reason}"
            _LOGGER.warning("%s; reconnecting with backoff", self.last_error)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        self._events.put(("ack", mid, reason))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic != f"{self.config.homeassistant.prefix}/status":
            return
        payload = message.payload.decode("utf-8", errors="replace").strip()
        if payload == "online":
            _LOGGER.info("Home Assistant came online; announcing the assistant again")
            self._announce(client)
        elif payload != "offline":
            _LOGGER.warning("Ignoring %r on %s: expected 'online' or 'offline'", payload[:40], message.topic)

    def _announce(self, client: paho.Client) -> None:
        discovery = HaDiscovery(self.site, self.topics.intent, self.topics.status, self.model)
        client.publish(discovery.topic(self.config.homeassistant.prefix), encode(discovery), qos=1, retain=True)

    # --- the pump (its own thread) ------------------------------------------------------------------

    def _pump_loop(self) -> None:
        while True:
            try:
                event: tuple[Any, ...] | None = self._events.get(timeout=self._tick_s)
            except queue.Empty:
                event = None
            try:
                acked: list[int] = []
                while event is not None:
                    if event[0] == "stop":
                        return
                    self._handle(event, acked)
                    event = self._events.get_nowait() if not self._events.empty() else None
                if acked:
                    self.outbox.ack(*acked)  # one transaction (one fsync) for a burst of PUBACKs
                self._pump()
            except Exception:
                _LOGGER.exception("Outbox pump failed; retrying in 1 s")
                time.sleep(1.0)
            finally:
                with self._changed:
                    self._changed.notify_all()

    def _handle(self, event: tuple[Any, ...], acked: list[int]) -> None:
        kind = event[0]
        if kind == "connected":
            self._inflight.clear()
            self._cursor = 0
            self._pump_connected = True
        elif kind == "disconnected":
            self._pump_connected = False
        elif kind == "ack":
            _, mid, reason = event
            seq = self._inflight.pop(mid, None)
            if seq is None:
                return  # status / discovery, or a message from before a reconnect
            if reason.is_failure:
                self.outbox.reject(seq)
                _LOGGER.error("MQTT broker %s refused message %d: %s (kept in the outbox as rejected)",
                              self.config.url, seq, reason)
            else:
                acked.append(seq)

    def _pump(self) -> None:
        if not (self._pump_connected and self._link_up):
            self.outbox.due(after_seq=self._cursor, limit=0)  # expire stale messages while offline
            return
        expired = self.outbox.report_expired(self._expired_report)
        if expired:
            _LOGGER.warning(
                "%d message(s) were older than their maximum age before the broker could take them and were NOT "
                "sent: %s (reported on %s)", len(expired),
                ", ".join(f"{m.intent or m.topic} ({m.age(time.time()):.1f} s)" for m in expired), self.topics.expired)
        free = self._max_inflight - len(self._inflight)
        if free <= 0:
            return
        for message in self.outbox.due(after_seq=self._cursor, limit=free):
            try:
                info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
            except ValueError as err:
                _LOGGER.error("Cannot publish message %d to %r: %s (kept in the outbox as rejected)",
                              message.seq, message.topic, err)
                self.outbox.reject(message.seq)
                continue
            self._cursor = message.seq
            self._inflight[info.mid] = message.seq
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break  # the link went down; the next "connected" event starts over

    def _expired_report(self, expired: list[StoredMessage]) -> OutboxMessage:
        items = tuple(ExpiredItem(m.ref or str(m.seq), m.topic, m.intent, m.age(time.time()), m.max_age_s or 0.0)
                      for m in expired)
        report = ExpiredReport(self.site, utc_timestamp(), items)
        return OutboxMessage(self.topics.expired, encode(report), self.config.qos)

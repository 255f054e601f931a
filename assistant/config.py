"""The hub's configuration: one YAML file (``hub.yaml``) validated into frozen dataclasses.

::

    site: kitchen                     # one topic level: letters, digits, '_' and '-'
    bundle: models/smart_home
    mqtt:
      host: broker.local              # or: hubvoice run --broker mqtts://user@broker.local:8883
      port: 1883                      # default 1883, or 8883 with tls
      protocol: "3.1.1"               # or "5"
      tls: {ca: ca.pem, cert: hub.pem, key: hub.key, insecure: false}
      username: hub
      password: secret                # better: HUBVOICE_MQTT_PASSWORD in the environment
      qos: 1
      prefix: hubvoice
      hermes: true
      homeassistant: {discovery: true, prefix: homeassistant}
    outbox: {path: /var/lib/hubvoice/outbox.sqlite3, max_age_s: 30}
    audio:
      source: mic                     # mic, wav, stdin or satellite
      device: USB                     # mic: (part of) a name, or an index; see `hubvoice devices`
      # paths: [a.wav, b.wav]         # wav (realtime: true to pace them)
      # format: s16le                 # stdin: raw PCM (u8, s16le, s24le, s32le, f32le), sample_rate, channels
      # satellites: [porch]           # satellite: Hermes site ids (default: this site)
      listen: false                   # true: only after a message on <prefix>/<site>/listen
      endpoint: {aggressiveness: 2, pre_roll_ms: 300, trailing_silence_ms: 600, max_utterance_s: 8}
    recognizer: {threads: 1, thresholds: {intent: 0.6, gate: 0.9}, early_stop: 0.9,
                 trim: {before_s: 0.3, after_s: 0.3}}   # false: decide utterances as cut
    actions: [...]                    # see assistant.actions

Errors name the file, the key path and the allowed values, e.g.
``hub.yaml: mqtt.qos: expected 0, 1 or 2, got 3``. Relative file paths are relative to the
config file's folder. Precedence: the file, then the environment (``HUBVOICE_MQTT_USERNAME``,
``HUBVOICE_MQTT_PASSWORD``), then ``--broker``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from assistant.actions import ActionSpec
from assistant.audio import DEFAULT_TRIM, Trim
from assistant.errors import ConfigError

PROTOCOLS = ("3.1.1", "5")
TRANSPORTS = ("tcp", "websockets")
AUDIO_SOURCES = ("mic", "wav", "stdin", "satellite")
RAW_FORMATS = ("u8", "s16le", "s24le", "s32le", "f32le")
ENV_USERNAME = "HUBVOICE_MQTT_USERNAME"
ENV_PASSWORD = "HUBVOICE_MQTT_PASSWORD"
_SITE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PREFIX_LEVEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Section:
    """Reads one mapping of the YAML file; every error names the file and the key path."""

    def __init__(self, data: Any, path: str, source: str, allowed: tuple[str, ...]) -> None:
        self.path, self.source = path, source
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            self.fail("", f"expected a mapping with keys {', '.join(allowed)}, got {_show(data)}")
        unknown = [key for key in data if key not in allowed]
        if unknown:
            self.fail(str(unknown[0]), f"unknown key (allowed: {', '.join(allowed)})")
        self.data = data

    def where(self, key: str) -> str:
        return ".".join(p for p in (self.path, key) if p)

    def fail(self, key: str, message: str) -> None:
        raise ConfigError(f"{self.source}: {self.where(key) or '(top level)'}: {message}")

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        return default if value is None else value

    def get_str(self, key: str, default: str | None = None, *, choices: tuple[str, ...] = ()) -> Any:
        value = self.get(key, default)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and choices:
            value = f"{value}"  # protocol: 5 written without quotes
        if value is not None and not isinstance(value, str):
            self.fail(key, f"expected a string, got {_show(value)}")
        if choices and value not in choices:
            self.fail(key, f"expected {_one_of(choices)}, got {_show(value)}")
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_show(value)}")
        return bool(value)

    def get_int(self, key: str, default: int, low: int, high: int) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            allowed = _one_of(tuple(str(v) for v in range(low, high + 1)), quote=False) if high - low < 4 else f"an integer in [{low}, {high}]"
            self.fail(key, f"expected {allowed}, got {_show(value)}")
        return int(value)

    def get_float(self, key: str, default: float, low: float, high: float = math.inf) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
            self.fail(key, f"expected a number > {low}" + (f" and <= {high}" if high < math.inf else "")
                      + f", got {_show(value)}")
        return float(value)

    def path_value(self, key: str, base: Path, *, must_exist: bool) -> str | None:
        value = self.get_str(key)
        if value is None:
            return None
        resolved = (base / Path(value).expanduser()).resolve() if not Path(value).expanduser().is_absolute() \
            else Path(value).expanduser()
        if must_exist and not resolved.is_file():
            self.fail(key, f"file not found: {resolved}")
        return str(resolved)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value) if not isinstance(value, Mapping) else "a mapping"


def _one_of(choices: tuple[str, ...], *, quote: bool = True) -> str:
    shown = [repr(c) if quote else c for c in choices]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


@dataclass(frozen=True)
class TlsConfig:
    """TLS for the broker connection."""

    ca: str | None = None
    """CA certificate file (PEM) that signed the broker's certificate; None: the system's CAs."""
    cert: str | None = None
    """Client certificate file (PEM) for brokers that require one."""
    key: str | None = None
    """The client certificate's private key file (PEM)."""
    insecure: bool = False
    """Skip the check that the broker's certificate names the host (like ``mosquitto_pub --insecure``);
    the certificate chain is still verified against ``ca``."""


@dataclass(frozen=True)
class HomeAssistantConfig:
    """Home Assistant MQTT discovery for the assistant itself."""

    discovery: bool = True
    """Announce a 'last intent' sensor (re-announced when Home Assistant comes online)."""
    prefix: str = "homeassistant"
    """Home Assistant's discovery prefix."""


@dataclass(frozen=True)
class MqttConfig:
    """The broker connection and what is published."""

    host: str = "localhost"
    """Broker host name or address."""
    port: int = 1883
    """Broker port (default 1883, or 8883 when tls is set)."""
    transport: str = "tcp"
    """'tcp' or 'websockets'."""
    protocol: str = "3.1.1"
    """MQTT version: '3.1.1' or '5'."""
    tls: TlsConfig | None = None
    """TLS settings; None: plain TCP."""
    username: str | None = None
    """Broker user (env HUBVOICE_MQTT_USERNAME overrides)."""
    password: str | None = field(default=None, repr=False)
    """Broker password (env HUBVOICE_MQTT_PASSWORD overrides)."""
    client_id: str = ""
    """MQTT client id; default ``hubvoice-<site>``."""
    keepalive: int = 60
    """Seconds between keep-alive pings."""
    qos: int = 1
    """QoS of published messages: 0, 1 or 2."""
    prefix: str = "hubvoice"
    """First topic level(s) of the hub's topics."""
    hermes: bool = True
    """Also publish Rhasspy/Snips Hermes messages."""
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    """Home Assistant discovery."""
    session_expiry_s: int = 3600
    """MQTT 5: how long the broker keeps the session after a disconnect."""
    reconnect_min_s: float = 1.0
    """First reconnect delay; doubles on each failure."""
    reconnect_max_s: float = 60.0
    """Longest reconnect delay."""

    _KEYS = ("host", "port", "transport", "protocol", "tls", "username", "password", "client_id", "keepalive",
             "qos", "prefix", "hermes", "homeassistant", "session_expiry_s", "reconnect_min_s", "reconnect_max_s")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "hub.yaml", base: Path = Path("."), site: str = "default"
                  ) -> MqttConfig:
        s = _Section(data, "mqtt", source, cls._KEYS)
        tls = None
        if s.get("tls") not in (None, False):
            t = _Section({} if s.get("tls") is True else s.get("tls"), "mqtt.tls", source,
                         ("ca", "cert", "key", "insecure"))
            tls = TlsConfig(t.path_value("ca", base, must_exist=True), t.path_value("cert", base, must_exist=True),
                            t.path_value("key", base, must_exist=True), t.get_bool("insecure", False))
            if tls.key and not tls.cert:
                t.fail("key", "a key needs its certificate in mqtt.tls.cert")
        ha = _Section(s.get("homeassistant"), "mqtt.homeassistant", source, ("discovery", "prefix"))
        config = cls(
            host=s.get_str("host", "localhost"),
            port=s.get_int("port", 8883 if tls else 1883, 1, 65535),
            transport=s.get_str("transport", "tcp", choices=TRANSPORTS),
            protocol=s.get_str("protocol", "3.1.1", choices=PROTOCOLS),
            tls=tls,
            username=s.get_str("username"),
            password=s.get_str("password"),
            client_id=s.get_str("client_id", f"hubvoice-{site}"),
            keepalive=s.get_int("keepalive", 60, 5, 65535),
            qos=s.get_int("qos", 1, 0, 2),
            prefix=s.get_str("prefix", "hubvoice"),
            hermes=s.get_bool("hermes", True),
            homeassistant=HomeAssistantConfig(ha.get_bool("discovery", True), ha.get_str("prefix", "homeassistant")),
            session_expiry_s=s.get_int("session_expiry_s", 3600, 0, 2**32 - 1),
            reconnect_min_s=s.get_float("reconnect_min_s", 1.0, 0.0, 3600.0),
            reconnect_max_s=s.get_float("reconnect_max_s", 60.0, 0.0, 86400.0),
        )
        if not config.host:
            s.fail("host", "expected a host name or address, got ''")
        for key, prefix in (("prefix", config.prefix), ("homeassistant.prefix", config.homeassistant.prefix)):
            if not all(_PREFIX_LEVEL.match(level) for level in prefix.split("/")):
                s.fail(key, f"expected topic levels of letters, digits, '_', '-', '.' separated by '/', got {prefix!r}")
        if config.reconnect_max_s < config.reconnect_min_s:
            s.fail("reconnect_max_s", f"must be >= reconnect_min_s ({config.reconnect_min_s})")
        if config.password is not None and config.username is None:
            s.fail("password", "a password needs mqtt.username (or HUBVOICE_MQTT_USERNAME)")
        return config

    def with_env(self, env: Mapping[str, str]) -> MqttConfig:
        """Secrets from the environment override the file."""
        return replace(self, username=env.get(ENV_USERNAME) or self.username,
                       password=env.get(ENV_PASSWORD) or self.password)

    def with_broker(self, url: str) -> MqttConfig:
        """Apply ``--broker mqtt[s]://[user[:password]@]host[:port]``: host, port, TLS on/off, user."""
        broker = parse_broker_url(url)
        tls = (self.tls or TlsConfig()) if broker.tls else None
        return replace(self, host=broker.host, port=broker.port, tls=tls,
                       username=broker.username or self.username,
                       password=broker.password if broker.password is not None else self.password)

    @property
    def url(self) -> str:
        """``mqtt[s]://[user@]host:port`` for messages (never the password)."""
        user = f"{self.username}@" if self.username else ""
        return f"mqtt{'s' if self.tls else ''}://{user}{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed ``--broker`` URL."""

    host: str
    """Host name or address."""
    port: int
    """Port (default 1883, 8883 for mqtts)."""
    tls: bool
    """True for mqtts://."""
    username: str | None = None
    """User, if the URL names one."""
    password: str | None = field(default=None, repr=False)
    """Password, if the URL has one (prefer HUBVOICE_MQTT_PASSWORD)."""


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse ``mqtt[s]://[user[:password]@]host[:port]``; ConfigError says what was expected."""
    expected = "expected mqtt://[user@]host[:port] or mqtts://[user@]host[:port]"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise ConfigError(f"--broker: {expected}, got {url!r} ({err})") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise ConfigError(f"--broker: {expected}, got {url!r}")
    tls = parts.scheme == "mqtts"
    return BrokerUrl(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


@dataclass(frozen=True)
class OutboxConfig:
    """The durable outbox of messages waiting for the broker."""

    path: str
    """SQLite file; default ``$XDG_STATE_HOME/hubvoice/outbox-<site>.sqlite3``."""
    max_age_s: float = 30.0
    """A command still unsent after this many seconds is given up (marked expired and reported)."""


@dataclass(frozen=True)
class EndpointConfig:
    """Where an utterance starts and ends (``assistant.endpoint``): webrtcvad plus a level gate."""

    aggressiveness: int = 2
    """webrtcvad aggressiveness: 0 (lets the most through) to 3 (strictest about what is speech)."""
    frame_ms: int = 20
    """Length of the frames the VAD judges (and the sources deliver): 10, 20 or 30 ms."""
    pre_roll_ms: int = 300
    """Audio kept from before the detected onset (the quiet start of the first word)."""
    onset_ms: int = 60
    """Voiced audio needed, without a break, to open an utterance."""
    min_speech_ms: int = 250
    """Utterances with less speech than this (clicks, knocks) are dropped."""
    trailing_silence_ms: int = 600
    """Silence that ends an utterance."""
    post_roll_ms: int = 100
    """Audio kept after the last voiced frame."""
    max_utterance_s: float = 8.0
    """Longest utterance; longer speech is cut here, and the endpointer waits for silence before the next."""
    energy_margin_db: float = 10.0
    """A voiced frame must also be this many dB above the running noise floor (0: no noise-floor gate)."""
    min_level_dbfs: float = -60.0
    """... and at least this loud (dB relative to full scale)."""
    noise_window_s: float = 5.0
    """The noise floor is the quietest frame of this many recent seconds."""

    _KEYS = ("aggressiveness", "frame_ms", "pre_roll_ms", "onset_ms", "min_speech_ms", "trailing_silence_ms",
             "post_roll_ms", "max_utterance_s", "energy_margin_db", "min_level_dbfs", "noise_window_s")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "hub.yaml", path: str = "audio.endpoint") -> EndpointConfig:
        e = _Section(data, path, source, cls._KEYS)
        d = cls()
        frame_ms = e.get_int("frame_ms", d.frame_ms, 10, 30)
        if frame_ms not in (10, 20, 30):
            e.fail("frame_ms", f"expected 10, 20 or 30 (what webrtcvad accepts), got {frame_ms}")
        config = cls(
            aggressiveness=e.get_int("aggressiveness", d.aggressiveness, 0, 3),
            frame_ms=frame_ms,
            pre_roll_ms=e.get_int("pre_roll_ms", d.pre_roll_ms, 0, 5000),
            onset_ms=e.get_int("onset_ms", d.onset_ms, 10, 2000),
            min_speech_ms=e.get_int("min_speech_ms", d.min_speech_ms, 0, 10000),
            trailing_silence_ms=e.get_int("trailing_silence_ms", d.trailing_silence_ms, 10, 10000),
            post_roll_ms=e.get_int("post_roll_ms", d.post_roll_ms, 0, 5000),
            max_utterance_s=e.get_float("max_utterance_s", d.max_utterance_s, 0.0, 60.0),
            energy_margin_db=_number(e, "energy_margin_db", d.energy_margin_db, 0.0, 60.0),
            min_level_dbfs=_number(e, "min_level_dbfs", d.min_level_dbfs, -120.0, 0.0),
            noise_window_s=e.get_float("noise_window_s", d.noise_window_s, 0.0, 600.0),
        )
        if config.max_utterance_s * 1000 < config.onset_ms + config.pre_roll_ms:
            e.fail("max_utterance_s", f"must leave room for pre_roll_ms + onset_ms "
                                      f"({config.pre_roll_ms + config.onset_ms} ms)")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(s: _Section, key: str, default: float, low: float, high: float) -> float:
    """A number in [low, high] (both ends allowed)."""
    value = s.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        s.fail(key, f"expected a number in [{low:g}, {high:g}], got {_show(value)}")
    return float(value)


@dataclass(frozen=True)
class AudioConfig:
    """Where the audio comes from, and how utterances are cut from it."""

    source: str = "mic"
    """'mic', 'wav', 'stdin' or 'satellite'."""
    device: str | int | None = None
    """Microphone name (or part of it) or index (source 'mic'); None: the default input."""
    paths: tuple[str, ...] = ()
    """WAV files to read, one after the other (source 'wav')."""
    realtime: bool = False
    """Source 'wav': deliver the audio at the speed it was recorded; False: as fast as the hub can take it."""
    sample_rate: int = 16000
    """Sample rate of raw audio on stdin."""
    format: str = "s16le"
    """Sample format of raw audio on stdin: 'u8', 's16le', 's24le', 's32le' or 'f32le'."""
    channels: int = 1
    """Channels of raw audio on stdin (interleaved; averaged to mono)."""
    satellites: tuple[str, ...] = ()
    """Source 'satellite': Hermes site ids whose ``hermes/audioServer/<site>/audioFrame`` are heard,
    each with its own endpointer; empty: the hub's own site."""
    listen: bool = False
    """Open the endpointer only after a message on ``<prefix>/<site>/listen`` (push-to-talk, wake word)."""
    listen_timeout_s: float = 8.0
    """How long the endpointer stays open after a listen message without ``timeout_s``."""
    reopen_max_s: float = 30.0
    """Longest wait between attempts to re-open a microphone that went away (the wait doubles from 0.5 s)."""
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    """Endpointing: VAD, pre-roll, silence, lengths."""

    _KEYS = ("source", "device", "paths", "realtime", "sample_rate", "format", "channels", "satellites", "listen",
             "listen_timeout_s", "reopen_max_s", "endpoint")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "hub.yaml", base: Path = Path(".")) -> AudioConfig:
        a = _Section(data, "audio", source, cls._KEYS)
        device = a.get("device")
        if device is not None and (isinstance(device, bool) or not isinstance(device, (str, int))):
            a.fail("device", f"expected a device name or index, got {_show(device)}")
        paths = a.get("paths", [])
        if not isinstance(paths, (list, tuple)) or not all(isinstance(p, str) for p in paths):
            a.fail("paths", f"expected a list of WAV file paths, got {_show(paths)}")
        satellites = a.get("satellites", [])
        if not isinstance(satellites, (list, tuple)) or not all(isinstance(s, str) and _SITE.match(s) for s in satellites):
            a.fail("satellites", f"expected a list of site ids (letters, digits, '_' or '-'), got {_show(satellites)}")
        config = cls(
            source=a.get_str("source", "mic", choices=AUDIO_SOURCES),
            device=device,
            paths=tuple(str((base / p).resolve()) for p in paths),
            realtime=a.get_bool("realtime", False),
            sample_rate=a.get_int("sample_rate", 16000, 8000, 192000),
            format=a.get_str("format", "s16le", choices=RAW_FORMATS),
            channels=a.get_int("channels", 1, 1, 32),
            satellites=tuple(satellites),
            listen=a.get_bool("listen", False),
            listen_timeout_s=a.get_float("listen_timeout_s", 8.0, 0.0, 3600.0),
            reopen_max_s=a.get_float("reopen_max_s", 30.0, 0.0, 3600.0),
            endpoint=EndpointConfig.from_dict(a.get("endpoint"), source=source),
        )
        if config.source == "wav" and not config.paths:
            a.fail("paths", "source 'wav' needs at least one WAV file in audio.paths")
        return config

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["paths"], data["satellites"] = list(self.paths), list(self.satellites)
        return data


@dataclass(frozen=True)
class RecognizerConfig:
    """Running the model."""

    threads: int = 1
    """ONNX Runtime intra-op threads."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """Overrides of the bundle's decision thresholds (name -> value in [0, 1]); 'intent' is the confidence
    a command needs to be understood; 'gate', for a bundle that decodes through its grammar, the heads'
    1 - P(not understood) it also needs (the manifest's ``decoder.gate``)."""
    early_stop: float | None = None
    """End an utterance as soon as the bundle's streaming model is this confident of a command (in (0, 1]);
    None: wait for the trailing silence. Needs a bundle with a streaming model."""
    trim: Trim | None = DEFAULT_TRIM
    """How much quiet to keep before and after the speech of each utterance (``trim: {before_s: 0.3,
    after_s: 0.3}``, :class:`assistant.audio.Trim`); None (``trim: false``): decide utterances whole, as the
    endpointer cut them."""

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "hub.yaml") -> RecognizerConfig:
        r = _Section(data, "recognizer", source, ("threads", "thresholds", "early_stop", "trim"))
        thresholds = r.get("thresholds", {})
        if not isinstance(thresholds, Mapping):
            r.fail("thresholds", f"expected {{name: number in [0, 1]}}, got {_show(thresholds)}")
        for name, value in thresholds.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                r.fail(f"thresholds.{name}", f"expected a number in [0, 1], got {_show(value)}")
        early_stop = None if r.get("early_stop") in (None, False) else r.get_float("early_stop", 1.0, 0.0, 1.0)
        return cls(r.get_int("threads", 1, 1, 256), {str(k): float(v) for k, v in thresholds.items()}, early_stop,
                   _trim(r.data.get("trim"), source))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["trim"] = False if self.trim is None else asdict(self.trim)
        return data


def _trim(data: Any, source: str) -> Trim | None:
    """``recognizer.trim``: false (None), true or absent (the default), or a mapping of :class:`Trim`'s fields."""
    if data is False:
        return None
    if data is None or data is True:
        return DEFAULT_TRIM
    limits = {"before_s": 10.0, "after_s": 10.0, "below_peak_db": 120.0, "above_floor_db": 120.0,
              "min_range_db": 120.0}
    t = _Section(data, "recognizer.trim", source, tuple(limits))
    return Trim(**{key: _number(t, key, getattr(DEFAULT_TRIM, key), 0.0, high) for key, high in limits.items()})


@dataclass(frozen=True)
class HubConfig:
    """Everything ``hubvoice run`` needs."""

    site: str
    """The hub's site id (one topic level)."""
    bundle: str | None
    """The model bundle folder or name."""
    mqtt: MqttConfig
    """The broker connection."""
    outbox: OutboxConfig
    """The durable outbox."""
    audio: AudioConfig = field(default_factory=AudioConfig)
    """The audio source."""
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    """Model settings."""
    actions: tuple[ActionSpec, ...] = ()
    """Intent -> device command mappings (checked against the context at start-up)."""
    source: str = "hub.yaml"
    """Where the config came from (used in error messages)."""

    _KEYS = ("site", "bundle", "mqtt", "outbox", "audio", "recognizer", "actions")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "hub.yaml", base: Path = Path("."),
                  env: Mapping[str, str] | None = None, broker: str | None = None) -> HubConfig:
        env = os.environ if env is None else env
        top = _Section(data, "", source, cls._KEYS)
        site = top.get_str("site", "default")
        if not _SITE.match(site):
            top.fail("site", f"expected 1-64 letters, digits, '_' or '-' (it becomes a topic level), got {site!r}")
        mqtt = MqttConfig.from_dict(top.get("mqtt"), source=source, base=base, site=site).with_env(env)
        if broker is not None:
            mqtt = mqtt.with_broker(broker)
        o = _Section(top.get("outbox"), "outbox", source, ("path", "max_age_s"))
        state_home = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        outbox = OutboxConfig(
            path=o.path_value("path", base, must_exist=False) or str(state_home / "hubvoice" / f"outbox-{site}.sqlite3"),
            max_age_s=o.get_float("max_age_s", 30.0, 0.0),
        )
        audio = AudioConfig.from_dict(top.get("audio"), source=source, base=base)
        recognizer = RecognizerConfig.from_dict(top.get("recognizer"), source=source)
        actions_data = top.get("actions", [])
        if not isinstance(actions_data, list):
            top.fail("actions", f"expected a list of actions, got {_show(actions_data)}")
        actions = tuple(ActionSpec.from_dict(item, where=f"{source}: actions[{i}]") for i, item in enumerate(actions_data))
        bundle = top.get_str("bundle")
        return cls(site, bundle, mqtt, outbox, audio, recognizer, actions, source)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["actions"] = [spec.to_dict() for spec in self.actions]
        data["audio"] = self.audio.to_dict()
        data["recognizer"] = self.recognizer.to_dict()
        del data["source"]
        return data


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None, broker: str | None = None) -> HubConfig:
    """Read and validate ``hub.yaml``; ConfigError names the file, the key path and the allowed values."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: {where}not valid YAML ({getattr(err, 'problem', None) or err})") from None
    return HubConfig.from_dict(data, source=str(path), base=path.parent.resolve(), env=env, broker=broker)

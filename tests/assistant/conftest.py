"""Fixtures for the MQTT tests: a real mosquitto process on a free port, and paho subscribers.

The broker is started from a mosquitto.conf written in the test's tmp_path; variants add a
password file (``mosquitto_passwd``), TLS listeners (a CA and certificates made with the
``openssl`` CLI in the test session), persistence, or a websockets listener. Every wait has a
timeout. Tests that need the broker are skipped, with the reason, only when mosquitto is not
installed.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion


def _find(name: str) -> str | None:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/local/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


MOSQUITTO = _find("mosquitto")
MOSQUITTO_PASSWD = _find("mosquitto_passwd")
OPENSSL = _find("openssl")
START_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """A test CA, a server certificate for DNS:localhost (not 127.0.0.1) and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


class Broker:
    """One mosquitto process; ``port`` is plain MQTT, ``tls_port`` TLS and ``ws_port`` websockets (if asked)."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
        persistence: bool = False,
        websockets: bool = False,
    ) -> None:
        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed (apt install mosquitto); the MQTT tests need a real broker")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.ws_port = free_port() if websockets else None
        self.log_path = workdir / "mosquitto.log"
        self.conf_path = workdir / "mosquitto.conf"
        self.process: subprocess.Popen[bytes] | None = None
        lines = ["user root" if os.geteuid() == 0 else "", "log_dest stderr", "log_type all", "per_listener_settings true"]
        auth = ["allow_anonymous true"]
        if users:
            if MOSQUITTO_PASSWD is None:
                pytest.skip("mosquitto_passwd is not installed")
            password_file = workdir / "passwords"
            for i, (user, password) in enumerate(users.items()):
                flags = ["-b", "-c"] if i == 0 else ["-b"]
                subprocess.run([MOSQUITTO_PASSWD, *flags, str(password_file), user, password],
                               check=True, capture_output=True, timeout=10)
            auth = ["allow_anonymous false", f"password_file {password_file}"]
        lines += [f"listener {self.port} 127.0.0.1", *auth]
        if tls:
            lines += [f"listener {self.tls_port} 127.0.0.1", *auth, f"cafile {tls.ca}", f"certfile {tls.server_cert}",
                      f"keyfile {tls.server_key}", f"require_certificate {'true' if require_certificate else 'false'}"]
        if websockets:
            lines += [f"listener {self.ws_port} 127.0.0.1", "protocol websockets", *auth]
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1",
                      "autosave_on_changes true"]
        else:
            lines += ["persistence false"]
        self.conf_path.write_text("\n".join(line for line in lines if line) + "\n")

    def start(self) -> Broker:
        assert self.process is None or self.process.poll() is not None, "broker already running"
        log = self.log_path.open("ab")
        start_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf_path)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}:\n{self.log()[-2000:]}")
            if b" running" in self.log_path.read_bytes()[start_offset:]:
                return self
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not start within {START_TIMEOUT_S} s:\n{self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (persistence is saved)."""
        if self.process is not None and self.process.poll() is None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL: the broker dies without a word; connections are reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered (a hung broker or a dead link)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens."""
    return free_port()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Make and start brokers for this test (each in its own folder); all are stopped afterwards."""
    brokers: list[Broker] = []

    def make(**kwargs: object) -> Broker:
        broker = Broker(tmp_path / f"broker{len(brokers)}", **kwargs)  # type: ignore[arg-type]
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    """A plain, anonymous mosquitto on a free port."""
    return make_broker()


def _openssl(*args: str) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throw-away CA with a server certificate (localhost) and a client certificate, made with openssl."""
    if OPENSSL is None:
        pytest.skip("the openssl CLI is not installed; the TLS tests make their certificates with it")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "2",
             "-subj", "/CN=hubvoice test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, usage, san in (("server", "serverAuth", "subjectAltName=DNS:localhost\n"), ("client", "clientAuth", "")):
        _openssl("req", *ec, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
                 "-subj", f"/CN={'localhost' if name == 'server' else 'hubvoice-client'}")
        ext = d / f"{name}.ext"
        ext.write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n{san}"
                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-out", str(d / f"{name}.pem"), "-days", "2", "-extfile", str(ext))
    for key in d.glob("*.key"):
        key.chmod(0o644)  # mosquitto may read them as another user
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


class Subscriber:
    """A paho subscriber that collects what arrives; ``persistent`` keeps its session across broker restarts."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("#",), *, client_id: str = "", persistent: bool = False
                 ) -> None:
        self.topics = topics
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.received: list[paho.MQTTMessage] = []
        self._subscribed = queue.Queue[bool]()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-sub-{port}-{id(self)}",
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.put(True)
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        try:
            self._subscribed.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self.client.loop_stop()
            raise AssertionError(f"subscriber could not subscribe on port {port} within {START_TIMEOUT_S} s") from None

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        self.received.append(message)
        self.messages.put(message)

    def wait_for(self, topic_filter: str, count: int = 1, timeout: float = 5.0) -> list[paho.MQTTMessage]:
        """The next ``count`` messages matching ``topic_filter`` (others are skipped and kept in ``received``)."""
        found: list[paho.MQTTMessage] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            remaining = deadline - time.monotonic()
            try:
                message = self.messages.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                raise AssertionError(
                    f"got {len(found)} of {count} message(s) on {topic_filter} within {timeout} s; all received: "
                    f"{[(m.topic, m.payload[:60]) for m in self.received]}"
                ) from None
            if paho.topic_matches_sub(topic_filter, message.topic):
                found.append(message)
        return found

    def drain(self, quiet_s: float = 0.3) -> list[paho.MQTTMessage]:
        """Everything that arrives until nothing has for ``quiet_s``."""
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=quiet_s))
            except queue.Empty:
                return out

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def make_subscriber() -> Iterator[Callable[..., Subscriber]]:
    subscribers: list[Subscriber] = []

    def make(port: int, topics: tuple[str, ...] = ("#",), **kwargs: object) -> Subscriber:
        subscriber = Subscriber(port, topics, **kwargs)  # type: ignore[arg-type]
        subscribers.append(subscriber)
        return subscriber

    yield make
    for subscriber in subscribers:
        subscriber.stop()

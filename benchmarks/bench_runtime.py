"""The hub runtime end to end against a real mosquitto: latency, idle cost, and a soak (a script, not a test).

    .venv/bin/python benchmarks/bench_runtime.py --bundle work/models/lights-tiny -o work/bench-runtime.json

Starts its own mosquitto on a free port (a temporary folder, no persistence) and measures:

**Latency** (in process, ``--utterances``, default 500). The bundle's ``samples/*.wav`` (cycled, each
at a random gain of -6..0 dB, with 0.5-1.5 s of quiet noise before and the trailing window + 40 ms
after) go through exactly what ``hubvoice run`` with ``audio.source: stdin`` runs: an OS pipe read by
:class:`assistant.audio.RawSource`, the :class:`assistant.app.Service` stages (endpointer, recognizer,
publisher), the SQLite outbox and paho, to the broker. The audio before each utterance's end of
speech is written as fast as the pipe takes it (not real time); from 0.2 s before the end of speech
(found once per sample with the same endpointer settings) the writer waits until the pipe and the
service's frame queue are empty and then writes one 20 ms frame every 20 ms, i.e. in real time, and
keeps doing so (quiet noise) until that utterance's messages are acknowledged. So everything from the
end of speech on happens at the speed a microphone delivers it, and each utterance starts with an idle
pipeline like a real one; only the seconds of audio before it are compressed. Times:

- *end of speech*: when the writer put the 20 ms frame holding the last voiced sample (the
  endpointer's ``Utterance.end_s``) into the pipe;
- *decision*: ``Utterance.ended_at``, when the endpointer closed the utterance (the trailing window
  of ``--trailing-ms`` of silence after the end of speech has been heard);
- *PUBACK*: when paho's network thread got the broker's PUBACK for the utterance's intent event
  (``hubvoice/<site>/intent`` or ``not_understood``; no actions are configured, so it is the first
  message of each result), seen by wrapping the client's ``publish`` and ``on_publish`` (instrumentation
  only, nothing replaced);
- *receipt*: when a subscriber in another process (paho, QoS 1) got the event; ``time.monotonic`` is
  the same clock in both processes.

A short trailing window (default 300 ms; the hub's default is 600 ms) keeps 500 utterances at a few
minutes of real time; the latency *beyond* the window does not depend on its length.

**Idle** (``--idle-seconds``, default 30): ``hubvoice run`` as a subprocess on quiet noise (-66 dBFS)
written to its stdin in real time; CPU of the process (utime + stime from ``/proc/<pid>/stat``, all
threads) over the window after a 5 s warm-up, as % of one core; peak RSS (``VmHWM``).

**Soak** (``--soak-seconds`` of audio, default 3600): ``hubvoice run`` as a subprocess, fed speech
(the samples) and 1-10 s of quiet noise between them as fast as it reads its stdin. Reported:
utterances published, warnings/errors in its log, RSS at 10 % of the audio and at the end (a leak
shows as growth), the outbox at exit, and whether every event reached the subscriber.

Markdown tables on stdout; ``-o`` writes the same numbers (and the conditions) as JSON.
"""

from __future__ import annotations

import argparse
import array
import fcntl
import json
import logging
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant.app import Service  # noqa: E402
from assistant.audio import RawSource, frame_samples  # noqa: E402
from assistant.bundle import load_bundle  # noqa: E402
from assistant.config import EndpointConfig, HubConfig  # noqa: E402
from assistant.endpoint import Utterance, find_utterances  # noqa: E402
from assistant.outbox import Outbox  # noqa: E402
from assistant.wav import SAMPLE_RATE, read_wav  # noqa: E402

NOISE_RMS = 0.0005  # -66 dBFS white noise: a quiet room through a cheap microphone
PACE_LEAD_S = 0.2  # real time starts this long before the end of speech
GATE_TIMEOUT_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- mosquitto ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("error: mosquitto is not installed (apt install mosquitto); the benchmark needs a real broker")


class Mosquitto:
    """A mosquitto on a free 127.0.0.1 port, anonymous, no persistence, logging notices to a file."""

    def __init__(self, workdir: Path) -> None:
        self.binary = find_mosquitto()
        self.port = free_port()
        self.log_path = workdir / "mosquitto.log"
        conf = workdir / "mosquitto.conf"
        lines = ["user root" if os.geteuid() == 0 else "", "log_dest stderr", "log_type error", "log_type warning",
                 "log_type notice", "log_type information", f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false"]
        conf.write_text("\n".join(line for line in lines if line) + "\n")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while b" running" not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"error: mosquitto did not start:\n{self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)
        self.version = re.search(rb"mosquitto version (\S+)", self.log_path.read_bytes()).group(1).decode()  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


SUBSCRIBER = r"""
import json, os, sys, threading, time
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, topics = int(sys.argv[1]), sys.argv[2:]
def on_message(client, userdata, message):
    t = time.monotonic()
    try:
        ident = str(json.loads(message.payload).get("id", ""))
    except (ValueError, AttributeError):
        ident = message.payload[:40].decode("utf-8", "replace")
    sys.stdout.write(f"{t:.6f}\t{message.topic}\t{ident}\n")
    sys.stdout.flush()
client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{port}", clean_session=True)
client.on_connect = lambda c, u, f, r, p: c.subscribe([(t, 1) for t in topics])
client.on_subscribe = lambda *a: print("ready", flush=True)
client.on_message = on_message
client.connect("127.0.0.1", port, 30)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()  # ends with its parent
client.loop_forever()
"""


@dataclass
class Received:
    t: float
    topic: str
    ident: str


class Subscriber:
    """A paho subscriber in its own process (no GIL shared with the hub); what it prints is collected here."""

    def __init__(self, port: int, topics: Sequence[str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(port), *topics],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            sys.exit("error: the benchmark's subscriber could not subscribe")
        self.messages: list[Received] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            t, topic, ident = line.rstrip("\n").split("\t", 2)
            with self.changed:
                self.messages.append(Received(float(t), topic, ident))
                self.changed.notify_all()

    def count(self, topics: Sequence[str]) -> int:
        with self.changed:
            return sum(1 for m in self.messages if m.topic in topics)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


# --- audio -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    audio: np.ndarray
    speech_end: int
    """Samples from the start of ``audio`` to the end of the speech the endpointer finds in it."""


def load_samples(bundle: Path, endpoint: EndpointConfig) -> list[Sample]:
    """The bundle's sample WAVs, each with where the endpointer (these settings) says its speech ends."""
    paths = sorted((bundle / "samples").glob("*.wav"))
    if not paths:
        sys.exit(f"error: {bundle}/samples has no WAV files to replay")
    samples = []
    pad, rng = 16000, np.random.default_rng(0)
    for path in paths:
        audio = read_wav(path)
        found = find_utterances(np.concatenate([noise(pad, rng), audio, noise(pad, rng)]), endpoint)
        if len(found) != 1:
            sys.exit(f"error: the endpointer finds {len(found)} utterances in {path}, expected 1")
        samples.append(Sample(path.name, audio, min(len(audio), round(found[0].end_s * SAMPLE_RATE) - pad)))
    return samples


def noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return (NOISE_RMS * rng.standard_normal(n)).astype(np.float32)


def s16le(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2").tobytes()


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def pipe_backlog(fd: int) -> int:
    """Bytes waiting in the pipe whose read end is ``fd``."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def hub_config(bundle: Path, port: int, workdir: Path, name: str, trailing_ms: int) -> dict[str, Any]:
    """hub.yaml of one part: site ``bench-<name>`` (its own status topic), its own outbox, audio on stdin."""
    return {
        "site": f"bench-{name}",
        "bundle": str(bundle),
        "mqtt": {"host": "127.0.0.1", "port": port, "keepalive": 30},
        "outbox": {"path": str(workdir / f"outbox-{name}.sqlite3")},
        "audio": {"source": "stdin", "endpoint": {"trailing_silence_ms": trailing_ms}},
        "recognizer": {"threads": 1},
    }


# --- statistics ----------------------------------------------------------------------------------------


def summary(values_ms: Sequence[float]) -> dict[str, float]:
    x = np.asarray(values_ms, np.float64)
    if not len(x):
        return {"n": 0}
    return {"n": int(len(x)), "p50": float(np.percentile(x, 50)), "p95": float(np.percentile(x, 95)),
            "p99": float(np.percentile(x, 99)), "max": float(x.max()), "mean": float(x.mean())}


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- (a) latency -----------------------------------------------------------------------------------------


@dataclass
class Instruments:
    """Times taken around the service (appends from its threads; read after it stopped)."""

    utterances: list[Utterance] = field(default_factory=list)
    published: list[tuple[int, str, bytes, float]] = field(default_factory=list)
    acks: list[tuple[int, float]] = field(default_factory=list)
    decided: int = 0

    def attach(self, service: Service) -> None:
        endpointer = service.lanes[0].endpointer
        process = endpointer.process

        def recording_process(audio: np.ndarray) -> list[Utterance]:
            found = process(audio)
            self.utterances.extend(found)
            self.decided += len(found)
            return found

        endpointer.process = recording_process  # type: ignore[method-assign]
        client = service.publisher._client
        publish = client.publish
        on_publish: Any = client.on_publish

        def recording_publish(topic: str, payload: Any = None, *args: Any, **kwargs: Any) -> Any:
            info = publish(topic, payload, *args, **kwargs)
            data = payload if isinstance(payload, bytes) else str(payload or "").encode()
            self.published.append((info.mid, topic, data, time.monotonic()))
            return info

        def recording_on_publish(c: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
            self.acks.append((mid, time.monotonic()))
            assert on_publish is not None
            on_publish(c, userdata, mid, reason, properties)

        client.publish = recording_publish  # type: ignore[method-assign]
        client.on_publish = recording_on_publish

    def ack_times(self) -> list[float | None]:
        """The PUBACK time of each published message (the n-th use of a message id is acked by its n-th ack)."""
        acks: dict[int, list[float]] = defaultdict(list)
        for mid, t in self.acks:
            acks[mid].append(t)
        used: dict[int, int] = defaultdict(int)
        out: list[float | None] = []
        for mid, _, _, _ in self.published:
            k = used[mid]
            used[mid] += 1
            out.append(acks[mid][k] if k < len(acks[mid]) else None)
        return out


def bench_latency(bundle_dir: Path, port: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    hub = HubConfig.from_dict(hub_config(bundle_dir, port, workdir, "latency", args.trailing_ms))
    endpoint = hub.audio.endpoint
    frame = frame_samples(endpoint.frame_ms)
    frame_s = frame / SAMPLE_RATE
    samples = load_samples(bundle_dir, endpoint)
    bundle = load_bundle(bundle_dir, threads=hub.recognizer.threads)
    topics = (f"hubvoice/{hub.site}/intent", f"hubvoice/{hub.site}/not_understood")
    subscriber = Subscriber(port, topics)
    read_fd, write_fd = os.pipe()
    service = Service(hub, bundle, sources=[RawSource(read_fd, frame_samples=frame, name="bench")])
    instruments = Instruments()
    instruments.attach(service)
    rng = np.random.default_rng(args.seed)
    written_at: list[float] = []  # per frame of the stream
    segment_starts: list[int] = []  # stream sample where each utterance's audio starts
    paced_from: list[int] = []  # stream frame where real time starts in each
    gate_timeouts = 0

    def write_frames(frames: np.ndarray, paced_from: float | None) -> None:
        if paced_from is None:
            write_all(write_fd, s16le(frames.reshape(-1)))
            now = time.monotonic()
            written_at.extend([now] * len(frames))
            return
        for i, f in enumerate(frames):
            due = paced_from + i * frame_s
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            write_all(write_fd, s16le(f))
            written_at.append(time.monotonic())

    def idle_pipeline() -> None:
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while (pipe_backlog(read_fd) or service.lanes[0].frames.qsize()) and time.monotonic() < deadline:
            time.sleep(0.0005)

    def delivered(before: int) -> bool:
        """At least one utterance more than ``before`` was cut, and everything cut so far was acknowledged."""
        return (instruments.decided > before and service.published >= instruments.decided
                and service.publisher.outbox.pending_count() == 0)

    def writer() -> None:
        nonlocal gate_timeouts
        try:
            for n in range(args.utterances):
                sample = samples[n % len(samples)]
                lead = noise(int(rng.uniform(0.5, 1.5) * SAMPLE_RATE), rng)
                gain = float(10 ** (rng.uniform(-6.0, 0.0) / 20))
                tail_n = int(args.trailing_ms / 1000 * SAMPLE_RATE) + 2 * frame  # then noise until delivered
                audio = np.concatenate([lead, sample.audio * gain + noise(len(sample.audio), rng), noise(tail_n, rng)])
                audio = np.concatenate([audio, noise(-len(audio) % frame, rng)])
                frames = audio.reshape(-1, frame)
                segment_starts.append(len(written_at) * frame)
                before = instruments.decided
                eos = (len(lead) + sample.speech_end) // frame
                paced = max(0, eos - round(PACE_LEAD_S / frame_s))
                write_frames(frames[:paced], None)
                paced_from.append(len(written_at))
                idle_pipeline()
                start = time.monotonic()
                write_frames(frames[paced:], start)
                # Real time goes on (quiet noise) until this utterance's messages are acknowledged.
                k, deadline = len(frames) - paced, time.monotonic() + GATE_TIMEOUT_S
                while not delivered(before):
                    if time.monotonic() > deadline:
                        gate_timeouts += 1
                        break
                    write_frames(noise(frame, rng)[None, :], start + k * frame_s)
                    k += 1
                if (n + 1) % 50 == 0:
                    print(f"  latency: {n + 1}/{args.utterances} utterances, {time.monotonic() - started:.0f} s, "
                          f"{gate_timeouts} waits timed out", file=sys.stderr, flush=True)
        finally:
            os.close(write_fd)

    started = time.monotonic()
    service.start()
    if not service.publisher.wait_connected(10):
        sys.exit(f"error: the service could not connect to mosquitto on port {port}")
    thread = threading.Thread(target=writer, name="bench-writer", daemon=True)
    thread.start()
    thread.join()
    service.wait(30)
    service.shutdown()
    os.close(read_fd)
    wall = time.monotonic() - started
    time.sleep(0.3)
    subscriber.stop()

    acks = instruments.ack_times()
    events = [(i, mid, topic, payload, t) for i, (mid, topic, payload, t) in enumerate(instruments.published)
              if topic in topics]
    received = {m.ident: m.t for m in subscriber.messages}
    rows: dict[str, list[float]] = defaultdict(list)
    per_segment: dict[int, int] = defaultdict(int)
    utterances = instruments.utterances
    for u in utterances:
        per_segment[int(np.searchsorted(segment_starts, round(u.start_s * SAMPLE_RATE), side="right")) - 1] += 1
    skipped, early = 0, 0
    if len(events) != len(utterances):  # the n-th event is the n-th utterance only when none was lost
        print(f"warning: {len(utterances)} utterances but {len(events)} events; latencies not matched",
              file=sys.stderr)
    pairs = list(zip(utterances, events, strict=True)) if len(events) == len(utterances) else []
    for u, (i, _, _, payload, t_publish) in pairs:
        segment = int(np.searchsorted(segment_starts, round(u.start_s * SAMPLE_RATE), side="right")) - 1
        t_ack = acks[i]
        data = json.loads(payload)
        if per_segment[segment] != 1 or u.reason != "silence" or t_ack is None or data["id"] not in received:
            skipped += 1
            continue
        eos_frame = round(u.end_s * SAMPLE_RATE) // frame - 1
        if eos_frame < paced_from[segment]:  # the endpointer heard the speech end in the fast-written audio
            early += 1
            continue
        t_eos = written_at[eos_frame]
        t_recv = received[data["id"]]
        rows["end of speech -> decision (trailing window)"].append((u.ended_at - t_eos) * 1000)
        rows["decision -> handed to paho (recognize + outbox)"].append((t_publish - u.ended_at) * 1000)
        rows["model inference (recognizer latency_ms)"].append(float(data["latency_ms"]))
        rows["decision -> PUBACK"].append((t_ack - u.ended_at) * 1000)
        rows["decision -> subscriber receipt"].append((t_recv - u.ended_at) * 1000)
        rows["end of speech -> PUBACK"].append((t_ack - t_eos) * 1000)
        rows["end of speech -> subscriber receipt"].append((t_recv - t_eos) * 1000)
        rows[f"end of speech -> PUBACK, beyond the {args.trailing_ms} ms window"].append(
            (t_ack - t_eos) * 1000 - args.trailing_ms)
    return {
        "utterances_fed": args.utterances,
        "utterances_decided": len(utterances),
        "events_published": len(events),
        "events_received": len(received),
        "measured": len(rows["decision -> PUBACK"]),
        "not_measured": skipped,
        "end_of_speech_before_real_time": early,
        "gate_timeouts": gate_timeouts,
        "trailing_ms": args.trailing_ms,
        "samples": [s.name for s in samples],
        "wall_s": wall,
        "stats_ms": {name: summary(values) for name, values in rows.items()},
    }


# --- (b) idle and (c) soak: hubvoice run as a subprocess ----------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def proc_memory_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class Hub:
    """``hubvoice run -c hub.yaml`` reading its stdin; its log is drained and its warnings counted."""

    def __init__(self, config: Path, subscriber: Subscriber, site: str) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "assistant.cli", "run", "-c", str(config)], cwd=ROOT,
                                        stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.process.stdin is not None and self.process.stderr is not None
        self.stdin = self.process.stdin
        self.levels: dict[str, int] = defaultdict(int)
        self.problems: list[str] = []
        self.tail: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True)
        self._reader.start()
        status = f"hubvoice/{site}/status"
        deadline = time.monotonic() + 60
        while not any(m.topic == status and m.ident == "online" for m in subscriber.messages):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                sys.exit("error: hubvoice run did not come online:\n" + "".join(self.tail[-30:]))
            time.sleep(0.01)
        self.online_s = time.monotonic() - self.started

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace")
            level = line.split(" ", 1)[0]
            if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                self.levels[level] += 1
                if level in ("WARNING", "ERROR", "CRITICAL") and len(self.problems) < 20:
                    self.problems.append(line.rstrip())
            self.tail = [*self.tail[-199:], line]

    def finish(self, timeout: float = 120) -> int:
        """Close stdin (the audio ends): the hub drains, flushes and exits by itself."""
        self.stdin.close()
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGTERM)
            code = self.process.wait(30)
        self._reader.join(5)
        return code


def realtime_noise(stdin: IO[bytes], seconds: float, frame: int, seed: int) -> None:
    frame_s = frame / SAMPLE_RATE
    start, rng = time.monotonic(), np.random.default_rng(seed)
    for i in range(round(seconds / frame_s)):
        delay = start + i * frame_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stdin.write(s16le((NOISE_RMS * rng.standard_normal(frame)).astype(np.float32)))
        stdin.flush()


def bench_idle(bundle_dir: Path, port: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    config = workdir / "hub-idle.yaml"
    config.write_text(json.dumps(hub_config(bundle_dir, port, workdir, "idle", 600)))
    subscriber = Subscriber(port, ("hubvoice/bench-idle/#",))
    hub = Hub(config, subscriber, "bench-idle")
    frame = frame_samples(20)
    warmup = 5.0
    realtime_noise(hub.stdin, warmup, frame, 1)
    cpu0, t0 = proc_cpu_s(hub.process.pid), time.monotonic()
    realtime_noise(hub.stdin, args.idle_seconds, frame, 2)
    cpu1, t1 = proc_cpu_s(hub.process.pid), time.monotonic()
    memory = proc_memory_kb(hub.process.pid)
    code = hub.finish()
    subscriber.stop()
    return {
        "seconds": t1 - t0,
        "warmup_s": warmup,
        "cpu_s": cpu1 - cpu0,
        "cpu_percent_of_one_core": 100 * (cpu1 - cpu0) / (t1 - t0),
        "rss_mb": memory.get("VmRSS", 0) / 1024,
        "peak_rss_mb": memory.get("VmHWM", 0) / 1024,
        "online_after_s": hub.online_s,
        "utterances_published": sum(1 for m in subscriber.messages if m.topic.endswith(("/intent", "/not_understood"))),
        "exit_code": code,
        "log_levels": dict(hub.levels),
    }


def soak_stream(samples: Sequence[Sample], seconds: float, seed: int) -> Iterator[np.ndarray]:
    """1-10 s of quiet noise, then a sample at -6..0 dB, until ``seconds`` of audio."""
    rng = np.random.default_rng(seed)
    total, n = 0, 0
    while total < seconds * SAMPLE_RATE:
        sample = samples[n % len(samples)]
        gain = float(10 ** (rng.uniform(-6.0, 0.0) / 20))
        part = np.concatenate([noise(int(rng.uniform(1.0, 10.0) * SAMPLE_RATE), rng),
                               sample.audio * gain + noise(len(sample.audio), rng)])
        total += len(part)
        n += 1
        yield part
    yield noise(SAMPLE_RATE * 2, rng)  # the last utterance ends in silence, not at end of stream


def bench_soak(bundle_dir: Path, port: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    config = workdir / "hub-soak.yaml"
    data = hub_config(bundle_dir, port, workdir, "soak", 600)
    config.write_text(json.dumps(data))
    outbox_path = Path(data["outbox"]["path"])
    samples = load_samples(bundle_dir, HubConfig.from_dict(data).audio.endpoint)
    site = data["site"]
    events = (f"hubvoice/{site}/intent", f"hubvoice/{site}/not_understood")
    subscriber = Subscriber(port, (f"hubvoice/{site}/#",))
    hub = Hub(config, subscriber, site)
    pid = hub.process.pid
    rss: list[tuple[float, float, float]] = []  # (audio fraction written, RSS MB, wall s)
    written = 0
    stop = threading.Event()
    cpu_last = [0.0]

    def sample_memory() -> None:
        while not stop.wait(0.5):
            try:
                rss.append((written / (args.soak_seconds * SAMPLE_RATE), proc_memory_kb(pid)["VmRSS"] / 1024,
                            time.monotonic() - started))
                cpu_last[0] = proc_cpu_s(pid)
            except (OSError, KeyError):
                return

    started = time.monotonic()
    segments = 0
    rss_online = proc_memory_kb(pid)["VmRSS"] / 1024
    threading.Thread(target=sample_memory, daemon=True).start()
    try:
        for part in soak_stream(samples, args.soak_seconds, args.seed):
            hub.stdin.write(s16le(part))
            written += len(part)
            segments += 1
    except BrokenPipeError:
        pass
    segments -= 1  # the closing silence
    fed_s = time.monotonic() - started
    # The pipe and the stages drain; then the end of the audio stops the hub.
    quiet_since, last = time.monotonic(), -1
    while time.monotonic() - quiet_since < 3.0 and time.monotonic() - started < fed_s + 120:
        now_count = subscriber.count(events)
        if now_count != last:
            last, quiet_since = now_count, time.monotonic()
        time.sleep(0.1)
    end_rss = proc_memory_kb(pid)
    cpu_total = proc_cpu_s(pid)
    code = hub.finish()
    wall = time.monotonic() - started
    stop.set()
    time.sleep(0.5)
    subscriber.stop()
    box = Outbox(outbox_path)
    counts = box.counts()
    box.close()
    log = "".join(hub.tail)
    match = re.search(r"hubvoice stopped: (\d+) result\(s\) published", log)
    published = int(match.group(1)) if match else -1
    ids = [m.ident for m in subscriber.messages if m.topic in events]
    last_event_s = max((m.t for m in subscriber.messages if m.topic in events), default=started) - started
    statuses = [m.ident for m in subscriber.messages if m.topic == f"hubvoice/{site}/status"]
    at10 = next((mb for frac, mb, _ in rss if frac >= 0.1), rss_online)
    at50 = next((mb for frac, mb, _ in rss if frac >= 0.5), rss_online)
    return {
        "audio_s": written / SAMPLE_RATE,
        "wall_s": wall,
        "feed_s": fed_s,
        "last_event_s": last_event_s,
        "speedup": written / SAMPLE_RATE / max(fed_s, last_event_s),
        "cpu_s": cpu_total or cpu_last[0],
        "utterances_fed": segments,
        "utterances_published": published,
        "events_received": len(ids),
        "events_unique": len(set(ids)),
        "warnings": hub.levels.get("WARNING", 0),
        "errors": hub.levels.get("ERROR", 0) + hub.levels.get("CRITICAL", 0),
        "problems": hub.problems,
        "rss_online_mb": rss_online,
        "rss_at_10pct_mb": at10,
        "rss_at_50pct_mb": at50,
        "rss_end_mb": end_rss["VmRSS"] / 1024,
        "peak_rss_mb": end_rss["VmHWM"] / 1024,
        "rss_series_mb": [(round(f, 3), round(mb, 1)) for f, mb, _ in rss[:: max(1, len(rss) // 40)]],
        "outbox_at_exit": counts,
        "outbox_bytes": sum(p.stat().st_size for p in outbox_path.parent.glob(outbox_path.name + "*")),
        "last_status": statuses[-1] if statuses else None,
        "exit_code": code,
        "all_delivered": published == len(set(ids)) and counts["pending"] == 0 and code == 0,
    }


# --- report -------------------------------------------------------------------------------------------------


def default_bundle() -> Path:
    import models

    try:
        return models.path("smart_home")
    except FileNotFoundError as err:
        sys.exit(f"error: no --bundle given and {err}")


def report(results: dict[str, Any]) -> str:
    out = [f"# Hub runtime benchmark ({results['conditions']['bundle']})", ""]
    c = results["conditions"]
    out += [f"{c['cpus']} CPUs, load average {c['loadavg_start']} at the start and {c['loadavg_end']} at the end; "
            f"mosquitto {c['mosquitto']} on 127.0.0.1; Python {c['python']}; onnxruntime {c['onnxruntime']}.", ""]
    if "latency" in results:
        lat = results["latency"]
        out += [f"## Latency over {lat['measured']} utterances (trailing window {lat['trailing_ms']} ms)", "",
                f"{lat['utterances_fed']} fed ({', '.join(lat['samples'])}), {lat['utterances_decided']} cut by the "
                f"endpointer, {lat['events_published']} events published, {lat['events_received']} received; "
                f"{lat['not_measured']} not measured (split or merged utterances, no PUBACK seen) and "
                f"{lat['end_of_speech_before_real_time']} with the end of speech before the real-time part; "
                f"{lat['gate_timeouts']} waits for delivery timed out; {lat['wall_s']:.0f} s wall.", ""]
        rows = [[name, *(s.get(k, "-") for k in ("p50", "p95", "p99", "max", "mean"))]
                for name, s in lat["stats_ms"].items()]
        out += [table(["ms", "p50", "p95", "p99", "max", "mean"], rows), ""]
    if "idle" in results:
        idle = results["idle"]
        out += [f"## `hubvoice run` idle-listening ({idle['seconds']:.0f} s of quiet noise on stdin, real time)", "",
                table(["metric", "value"], [
                    ["CPU (% of one core)", f"{idle['cpu_percent_of_one_core']:.2f}"],
                    ["RSS at the end (MB)", idle["rss_mb"]],
                    ["peak RSS (MB)", idle["peak_rss_mb"]],
                    ["start -> online (s)", f"{idle['online_after_s']:.2f}"],
                    ["utterances published (expected 0)", idle["utterances_published"]],
                    ["exit code", idle["exit_code"]],
                ]), ""]
    if "soak" in results:
        soak = results["soak"]
        out += [f"## Soak: {soak['audio_s'] / 3600:.2f} h of audio through `hubvoice run` as fast as it reads", "",
                table(["metric", "value"], [
                    ["audio written / last event at (s, wall)",
                     f"{soak['feed_s']:.1f} / {soak['last_event_s']:.1f} ({soak['speedup']:.0f}x real time)"],
                    ["CPU time of the hub (s)", soak["cpu_s"]],
                    ["utterances fed / published", f"{soak['utterances_fed']} / {soak['utterances_published']}"],
                    ["events received (unique)", f"{soak['events_received']} ({soak['events_unique']})"],
                    ["warnings / errors logged", f"{soak['warnings']} / {soak['errors']}"],
                    ["RSS online / at 10 % / 50 % / end of the audio (MB)",
                     f"{soak['rss_online_mb']:.1f} / {soak['rss_at_10pct_mb']:.1f} / {soak['rss_at_50pct_mb']:.1f} / "
                     f"{soak['rss_end_mb']:.1f}"],
                    ["peak RSS (MB)", soak["peak_rss_mb"]],
                    ["outbox at exit", ", ".join(f"{k} {v}" for k, v in soak["outbox_at_exit"].items())
                     + f" ({soak['outbox_bytes'] / 1024:.0f} KiB)"],
                    ["last status", soak["last_status"]],
                    ["exit code", soak["exit_code"]],
                    ["all delivered", "yes" if soak["all_delivered"] else "NO"],
                ]), ""]
        if soak["problems"]:
            out += ["Log lines at WARNING or above (first 20):", "", "```", *soak["problems"], "```", ""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: models/smart_home)")
    parser.add_argument("--utterances", type=int, default=500, help="utterances for the latency part")
    parser.add_argument("--trailing-ms", type=int, default=300, help="trailing-silence window of the latency part")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="measured idle window")
    parser.add_argument("--soak-seconds", type=float, default=3600.0, help="seconds of audio in the soak")
    parser.add_argument("--skip", action="append", default=[], choices=["latency", "idle", "soak"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    bundle = (args.bundle or default_bundle()).resolve()
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="hubvoice-bench-") as tmp:
        workdir = Path(tmp)
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                            filename=str(workdir / "latency.log"))  # what `hubvoice run` logs, to a file
        broker = Mosquitto(workdir)
        results: dict[str, Any] = {"conditions": {
            "bundle": str(bundle), "cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "mosquitto": broker.version, "loadavg_start": loadavg(), "date": time.strftime("%Y-%m-%d"),
            "seed": args.seed,
        }}
        try:
            for part, run in (("latency", bench_latency), ("idle", bench_idle), ("soak", bench_soak)):
                if part not in args.skip:
                    print(f"running {part} ...", file=sys.stderr, flush=True)
                    results[part] = run(bundle, broker.port, workdir, args)
                    if part == "latency":
                        log = (workdir / "latency.log").read_text(errors="replace").splitlines()
                        results[part]["warnings"] = [line for line in log if line.startswith(("WARNING", "ERROR"))][:20]
        finally:
            broker.stop()
        results["conditions"]["loadavg_end"] = loadavg()
    print(report(results))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

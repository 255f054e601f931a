"""`hubvoice run` and `hubvoice devices` as a user runs them: a subprocess on the session's tiny bundle
(test_bundle.py) and a real mosquitto; tone "commands" on stdin or in WAV files; SIGTERM/SIGINT shut it down
with ``offline`` published and exit code 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import paho.mqtt.client as paho
import pytest

from assistant.wav import write_wav

pytest.importorskip("torch")  # the tiny bundle is built with distill
from tests.assistant.test_bundle import COMMANDS, tiny_bundle, tone_clip  # noqa: E402  (builds once per session)

if TYPE_CHECKING:
    from tests.assistant.conftest import Broker, Subscriber

ROOT = Path(__file__).resolve().parents[2]
UNDERSTOOD = [(intent, slots) for intent, slots in COMMANDS if intent is not None]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle(tmp_path_factory)


def commands_audio(ks: list[int], seed: int = 0) -> np.ndarray:
    """Tone "commands" (test_bundle.COMMANDS) separated by 1 s of quiet noise."""
    parts = [np.zeros(8000, np.float32)]
    for k in ks:
        parts += [tone_clip(k, 16000, 60 + k), np.zeros(16000, np.float32)]
    x = np.concatenate(parts)
    return x + (0.001 * np.random.default_rng(seed).standard_normal(len(x))).astype(np.float32)


def s16le(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()


def write_config(tmp_path: Path, broker: Broker, bundle_dir: Path, audio: str) -> Path:
    config = tmp_path / "hub.yaml"
    config.write_text(f"""\
site: den
bundle: {bundle_dir}
mqtt: {{host: 127.0.0.1, port: {broker.port}}}
outbox: {{path: outbox.sqlite3}}
audio: {audio}
actions:
  - intent: changeLightState
    topic: "zigbee2mqtt/{{location}}_light/set"
    payload: {{"state": "{{state|upper}}"}}
""")
    return config


def hubvoice(*args: str, stdin: int | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "assistant.cli", *args], cwd=ROOT, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def finish(process: subprocess.Popen[bytes], timeout: float = 20.0) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"hubvoice did not exit within {timeout} s:\n{err.decode()[-3000:]}") from None
    return process.returncode, err.decode()


def decisions(messages: list[paho.MQTTMessage]) -> list[tuple[str | None, dict[str, str]]]:
    return [(p["intent"], p["slots"]) for p in (json.loads(m.payload) for m in messages)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_from_stdin_publishes_intents_then_stops_on_a_signal(
        tmp_path: Path, broker: Broker, bundle_dir: Path, make_subscriber: Callable[..., Subscriber],
        signum: int) -> None:
    config = write_config(tmp_path, broker, bundle_dir, "{source: stdin}")
    subscriber = make_subscriber(broker.port, ("hubvoice/den/#", "zigbee2mqtt/#"))
    process = hubvoice("run", "-c", str(config), stdin=subprocess.PIPE)
    assert process.stdin is not None
    stdin = process.stdin
    threading.Thread(target=lambda: (stdin.write(s16le(commands_audio([0, 1, 4, 2, 3]))), stdin.flush()),
                     daemon=True).start()
    try:
        intents = subscriber.wait_for("hubvoice/den/intent", 4, timeout=30)
    finally:
        process.send_signal(signum)  # stdin is still open: only the signal ends it
        code, err = finish(process)
    assert code == 0, err
    assert decisions(intents) == UNDERSTOOD
    assert f"{signal.Signals(signum).name}: stopping" in err and "hubvoice stopped: 5 result(s) published" in err
    topics = [m.topic for m in subscriber.received]
    assert topics.count("hubvoice/den/not_understood") == 1 and "zigbee2mqtt/kitchen_light/set" in topics
    assert topics[-1] == "hubvoice/den/status" and subscriber.received[-1].payload == b"offline"
    stdin.close()


def test_run_from_wav_files_exits_when_they_end(tmp_path: Path, broker: Broker, bundle_dir: Path,
                                                make_subscriber: Callable[..., Subscriber]) -> None:
    write_wav(tmp_path / "one.wav", commands_audio([3, 1]))
    write_wav(tmp_path / "two.wav", commands_audio([0], seed=1))
    config = write_config(tmp_path, broker, bundle_dir, "{source: wav, paths: [one.wav, two.wav]}")
    subscriber = make_subscriber(broker.port, ("hubvoice/hall/#",))
    code, err = finish(hubvoice("run", "-c", str(config), "--site", "hall", "--broker", f"mqtt://127.0.0.1:{broker.port}"))
    assert code == 0, err
    subscriber.wait_for("hubvoice/hall/status", 2)
    intents = [m for m in subscriber.received if m.topic == "hubvoice/hall/intent"]
    assert decisions(intents) == [UNDERSTOOD[3], UNDERSTOOD[1], UNDERSTOOD[0]]
    assert subscriber.received[-1].payload == b"offline"
    assert (tmp_path / "outbox.sqlite3").exists()  # hub.yaml's own outbox path, --site changed only defaults


def test_run_with_a_bad_config_says_why(tmp_path: Path, broker: Broker, bundle_dir: Path) -> None:
    config = write_config(tmp_path, broker, bundle_dir, "{source: stdin, endpoint: {frame_ms: 25}}")
    code, err = finish(hubvoice("run", "-c", str(config)))
    assert code == 2 and "audio.endpoint.frame_ms: expected 10, 20 or 30" in err
    code, err = finish(hubvoice("run", "-c", str(tmp_path / "missing.yaml")))
    assert code == 2 and "missing.yaml: config file not found" in err


def test_devices_lists_inputs_or_says_none() -> None:
    process = hubvoice("devices")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert b"no audio input devices found" in out or b"channel(s)" in out


def test_devices_without_portaudio_says_how_to_install_it(tmp_path: Path) -> None:
    """PortAudio is installed here, so its absence is reproduced the way it shows: ``import sounddevice``
    raising OSError (a module of that name earlier on the path raises exactly what sounddevice does)."""
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    process = hubvoice("devices", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert b"PortAudio library not found" in err and b"sudo apt install libportaudio2" in err

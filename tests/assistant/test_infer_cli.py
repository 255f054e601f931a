"""`hubvoice infer` on the session's tiny bundle (built in test_bundle.py): output, odd WAVs, errors, --publish."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

import models
from assistant.cli import main
from assistant.config import MqttConfig
from assistant.messages import InferenceResult
from assistant.mqtt import ConnectionState, Publisher
from assistant.wav import write_wav

pytest.importorskip("torch")  # the tiny bundle is built with distill
from tests.assistant.test_bundle import COMMANDS, tiny_bundle, tone_clip  # noqa: E402  (builds once per session)
from tests.wavs import write_pcm_wav  # noqa: E402

if TYPE_CHECKING:
    from tests.assistant.conftest import Broker, Subscriber


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle(tmp_path_factory)


@pytest.fixture
def wavs(tmp_path: Path) -> list[Path]:
    """One clean 16 kHz WAV per command."""
    paths = []
    for k in range(len(COMMANDS)):
        path = tmp_path / f"cmd{k}.wav"
        write_wav(path, tone_clip(k, 15000 + 500 * k, 300 + k))
        paths.append(path)
    return paths


def write_float(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    """Mono IEEE float32 WAV (format tag 3), which the `wave` module cannot write."""
    data = np.asarray(audio, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_output_is_one_result_per_file(bundle_dir: Path, wavs: list[Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", "--bundle", str(bundle_dir), *map(str, wavs), "--json"]) == 0
    results = [InferenceResult.from_dict(d) for d in json_lines(capsys.readouterr().out)]
    assert [r.input for r in results] == [str(p) for p in wavs]
    assert [(r.intent, r.slots) for r in results] == COMMANDS
    assert all(r.latency_ms > 0 for r in results)


def test_readable_output(bundle_dir: Path, wavs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", "--bundle", str(bundle_dir), str(wavs[0]), str(wavs[-1])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{wavs[0]}: changeLightState state=off location=kitchen (confidence 0.")
    assert lines[0].endswith(" ms)")
    assert lines[1].startswith(f"{wavs[-1]}: not understood (confidence ")


def test_threshold_option(bundle_dir: Path, wavs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", "--bundle", str(bundle_dir), str(wavs[0]), "--json", "--threshold", "1.0"]) == 0
    (result,) = json_lines(capsys.readouterr().out)
    assert result["understood"] is False and result["intent"] is None


def test_fp32_option_runs_the_reference_model(bundle_dir: Path, wavs: list[Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", "--bundle", str(bundle_dir), *map(str, wavs), "--json", "--fp32", "--threads", "2"]) == 0
    results = json_lines(capsys.readouterr().out)
    assert [(r["intent"], r["slots"]) for r in results] == COMMANDS


def test_a_corrupt_wav_gets_an_error_line_and_the_others_still_run(bundle_dir: Path, wavs: list[Path],
                                                                   tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFX\x00\x00garbage")
    files = [str(wavs[0]), str(corrupt), str(tmp_path / "missing.wav"), str(wavs[2])]
    assert main(["infer", "--bundle", str(bundle_dir), *files, "--json"]) == 1
    out, err = capsys.readouterr()
    lines = json_lines(out)
    assert [line["input"] for line in lines] == files
    assert lines[1] == {"input": str(corrupt), "error": f"{corrupt}: not a WAV file (no RIFF/WAVE header)"}
    assert lines[2]["error"] == f"{tmp_path / 'missing.wav'}: no such file"
    assert (lines[0]["intent"], lines[3]["intent"]) == (COMMANDS[0][0], COMMANDS[2][0])
    assert f"error: {corrupt}: not a WAV file" in err and "missing.wav: no such file" in err


def test_odd_wavs(bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                  caplog: pytest.LogCaptureFixture) -> None:
    clip = tone_clip(2, 24000, 77)  # tones stay below 2.1 kHz, so 8 kHz loses nothing the model uses
    stereo_8k = write_pcm_wav(tmp_path / "stereo8k.wav", np.stack([clip[::2], 0.8 * clip[::2]], axis=1), 8000, 2)
    unsigned_8bit = write_pcm_wav(tmp_path / "u8.wav", clip[:, None], 16000, 1)
    empty = write_pcm_wav(tmp_path / "empty.wav", np.zeros((0, 1)), 16000, 2)
    with_nan = clip.copy()
    with_nan[1000:1010] = np.nan
    nan_float = write_float(tmp_path / "nan.wav", with_nan)
    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.touch()
    files = [stereo_8k, unsigned_8bit, empty, nan_float, zero_bytes]
    assert main(["infer", "--bundle", str(bundle_dir), *map(str, files), "--json"]) == 1
    out, err = capsys.readouterr()
    by_name = {Path(str(line["input"])).name: line for line in json_lines(out)}
    for name in ("stereo8k.wav", "u8.wav", "nan.wav"):
        assert (by_name[name]["intent"], by_name[name]["slots"]) == COMMANDS[2], name
    assert by_name["empty.wav"]["error"] == f"{empty}: WAV holds no audio samples"
    assert by_name["zero.wav"]["error"] == f"{zero_bytes}: file is empty"
    assert "empty.wav: WAV holds no audio samples" in err and "zero.wav: file is empty" in err
    assert any(r.levelname == "WARNING" and "nan.wav: WAV holds NaN or infinite samples; they are replaced"
               in r.getMessage() for r in caplog.records)


def test_bad_bundle_and_default_bundle(tmp_path: Path, wavs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", "--bundle", str(tmp_path), str(wavs[0])]) == 2
    assert "not a bundle (no manifest.json)" in capsys.readouterr().err
    if "smart_home" not in models.available():
        assert main(["infer", str(wavs[0])]) == 2
        assert "no --bundle given and no bundle 'smart_home'" in capsys.readouterr().err


def test_publish_needs_a_broker(bundle_dir: Path, wavs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", "--bundle", str(bundle_dir), str(wavs[0]), "--publish"]) == 2
    assert "--publish needs --broker" in capsys.readouterr().err


def test_publish_sends_each_result(bundle_dir: Path, wavs: list[Path], broker: Broker,
                                   make_subscriber: Callable[..., Subscriber],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    subscriber = make_subscriber(broker.port, ("hubvoice/#",))
    code = main(["infer", "--bundle", str(bundle_dir), *map(str, wavs), "--json", "--publish",
                 "--broker", f"mqtt://127.0.0.1:{broker.port}", "--site", "hall"])
    assert code == 0, capsys.readouterr().err
    printed = json_lines(capsys.readouterr().out)
    understood = sum(1 for intent, _ in COMMANDS if intent is not None)
    events = [json.loads(m.payload) for m in subscriber.wait_for("hubvoice/hall/intent", understood)]
    rejected = [json.loads(m.payload) for m in subscriber.wait_for("hubvoice/hall/not_understood", 1)]
    assert [(e["input"], e["intent"], e["slots"], e["site"]) for e in events] == \
        [(p["input"], p["intent"], p["slots"], "hall") for p in printed if p["understood"]]
    assert rejected[0]["input"] == str(wavs[-1]) and rejected[0]["intent"] is None


def test_publish_with_a_hub_config_runs_its_actions(bundle_dir: Path, wavs: list[Path], broker: Broker,
                                                    make_subscriber: Callable[..., Subscriber], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "hub.yaml"
    config.write_text(f"""\
site: den
mqtt: {{host: 127.0.0.1, port: {broker.port}}}
recognizer: {{threads: 2}}
actions:
  - intent: changeLightState
    topic: "zigbee2mqtt/{{location}}_light/set"
    payload: {{"state": "{{state|upper}}"}}
""")
    subscriber = make_subscriber(broker.port, ("zigbee2mqtt/#", "hubvoice/den/intent"))
    assert main(["infer", "--bundle", str(bundle_dir), str(wavs[0]), "-c", str(config), "--publish"]) == 0, \
        capsys.readouterr().err
    (command,) = subscriber.wait_for("zigbee2mqtt/kitchen_light/set")
    assert json.loads(command.payload) == {"state": "OFF"}
    (event,) = subscriber.wait_for("hubvoice/den/intent")
    assert json.loads(event.payload)["intent"] == "changeLightState"
    # No hub runs for den: infer leaves no retained status or discovery behind.
    late = make_subscriber(broker.port, ("hubvoice/den/status", "homeassistant/#"))
    assert [(m.topic, m.payload) for m in late.drain(0.5)] == []


def test_publish_leaves_a_running_hub_and_its_status_alone(bundle_dir: Path, wavs: list[Path], broker: Broker,
                                                          make_subscriber: Callable[..., Subscriber], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The hub of site hall keeps its connection, its retained ``online`` and its discovery; the result arrives."""
    watcher = make_subscriber(broker.port, ("hubvoice/hall/status", "homeassistant/#"))
    hub = Publisher(MqttConfig(host="127.0.0.1", port=broker.port), site="hall", outbox=tmp_path / "hub.sqlite3")
    hub.start()
    try:
        assert [m.payload for m in watcher.wait_for("hubvoice/hall/status")] == [b"online"]
        watcher.wait_for("homeassistant/#")
        subscriber = make_subscriber(broker.port, ("hubvoice/hall/intent",))
        code = main(["infer", "--bundle", str(bundle_dir), str(wavs[0]), "--json", "--publish",
                     "--broker", f"mqtt://127.0.0.1:{broker.port}", "--site", "hall"])
        assert code == 0, capsys.readouterr().err
        (event,) = subscriber.wait_for("hubvoice/hall/intent")
        assert json.loads(event.payload)["intent"] == COMMANDS[0][0]
        assert f"as hubvoice-hall-infer-{os.getpid()}" in broker.log()
        assert [(m.topic, m.payload) for m in watcher.drain(0.5)] == []  # no offline, online or discovery
        (status,) = make_subscriber(broker.port, ("hubvoice/hall/status",)).wait_for("hubvoice/hall/status")
        assert (status.payload, status.retain) == (b"online", True)
        assert hub.state is ConnectionState.CONNECTED and hub.connect_attempts == 1  # never kicked off
    finally:
        hub.stop(timeout=1.0)


def test_publish_to_an_unreachable_broker_fails_after_the_timeout(bundle_dir: Path, wavs: list[Path],
                                                                   unused_port: int,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["infer", "--bundle", str(bundle_dir), str(wavs[0]), "--json", "--publish", "--broker",
                 f"mqtt://127.0.0.1:{unused_port}", "--publish-timeout", "0.5"])
    out, err = capsys.readouterr()
    assert code == 1
    assert json_lines(out)[0]["intent"] == COMMANDS[0][0]  # the result is still printed
    assert f"not every result reached the broker mqtt://127.0.0.1:{unused_port} within 0.5 s" in err

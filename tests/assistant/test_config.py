"""hub.yaml: parsing, defaults, errors that name the key and the allowed values, env and --broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from assistant.audio import DEFAULT_TRIM, Trim
from assistant.config import HubConfig, MqttConfig, TlsConfig, load_config, parse_broker_url
from assistant.errors import ConfigError

FULL = """\
site: kitchen
bundle: models/smart_home
mqtt:
  host: broker.local
  protocol: 5
  tls: {ca: certs/ca.pem, insecure: true}
  username: hub
  password: from-file
  qos: 2
  prefix: home/voice
  hermes: false
  homeassistant: {discovery: false, prefix: ha}
outbox: {path: state/outbox.sqlite3, max_age_s: 12.5}
audio: {source: wav, paths: [a.wav]}
recognizer: {threads: 2, thresholds: {intent: 0.6}, trim: {after_s: 0.5}}
actions:
  - intent: changeLightState
    topic: "zigbee2mqtt/{location}_light/set"
    payload: {"state": "{state|upper}"}
"""


def write(tmp_path: Path, text: str, name: str = "hub.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_full_file(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("not checked here")
    config = load_config(write(tmp_path, FULL), env={})
    assert config.site == "kitchen" and config.bundle == "models/smart_home"
    mqtt = config.mqtt
    assert (mqtt.host, mqtt.port, mqtt.protocol, mqtt.qos, mqtt.prefix, mqtt.hermes) == (
        "broker.local", 8883, "5", 2, "home/voice", False)
    assert mqtt.tls == TlsConfig(ca=str(tmp_path / "certs" / "ca.pem"), insecure=True)  # relative to hub.yaml
    assert (mqtt.username, mqtt.password, mqtt.client_id) == ("hub", "from-file", "hubvoice-kitchen")
    assert (mqtt.homeassistant.discovery, mqtt.homeassistant.prefix) == (False, "ha")
    assert mqtt.url == "mqtts://hub@broker.local:8883"
    assert "from-file" not in repr(mqtt)
    assert config.outbox.path == str(tmp_path / "state" / "outbox.sqlite3") and config.outbox.max_age_s == 12.5
    assert config.audio.source == "wav" and config.audio.paths == (str(tmp_path / "a.wav"),)
    assert config.recognizer.threads == 2 and config.recognizer.thresholds == {"intent": 0.6}
    assert config.recognizer.trim == Trim(before_s=DEFAULT_TRIM.before_s, after_s=0.5)
    assert config.actions[0].payload == {"state": "{state|upper}"}
    again = HubConfig.from_dict(config.to_dict(), env={})
    assert again.mqtt == config.mqtt and again.actions == config.actions and again.outbox == config.outbox
    assert again.recognizer == config.recognizer


@pytest.mark.parametrize(("text", "trim"), [("", DEFAULT_TRIM), ("recognizer: {trim: true}", DEFAULT_TRIM),
                                            ("recognizer: {trim: false}", None),
                                            ("recognizer: {trim: {before_s: 0, after_s: 1}}", Trim(0.0, 1.0))])
def test_recognizer_trim(text: str, trim: Trim | None, tmp_path: Path) -> None:
    """On unless turned off; false survives a round trip through to_dict (it is not the default)."""
    config = HubConfig.from_dict(__import__("yaml").safe_load(text), source="hub.yaml", base=tmp_path, env={})
    assert config.recognizer.trim == trim
    assert HubConfig.from_dict(config.to_dict(), env={}).recognizer.trim == trim


def test_defaults_from_an_empty_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert config.site == "default"
    assert config.mqtt == MqttConfig(client_id="hubvoice-default")
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.qos, config.mqtt.protocol) == ("localhost", 1883, 1, "3.1.1")
    assert config.outbox.path == str(tmp_path / "state" / "hubvoice" / "outbox-default.sqlite3")
    assert config.outbox.max_age_s == 30.0
    assert config.audio.source == "mic" and config.actions == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mqtt: {qos: 3}", "hub.yaml: mqtt.qos: expected 0, 1 or 2, got 3"),
        ("mqtt: {qos: '1'}", "hub.yaml: mqtt.qos: expected 0, 1 or 2, got '1'"),
        ("mqtt: {protocol: '3'}", "hub.yaml: mqtt.protocol: expected '3.1.1' or '5', got '3'"),
        ("mqtt: {transport: udp}", "hub.yaml: mqtt.transport: expected 'tcp' or 'websockets', got 'udp'"),
        ("mqtt: {port: 70000}", "hub.yaml: mqtt.port: expected an integer in [1, 65535], got 70000"),
        ("mqtt: {hots: x}", "hub.yaml: mqtt.hots: unknown key (allowed: host, port, transport, protocol, tls,"),
        ("mqtt: {hermes: 'yes'}", "hub.yaml: mqtt.hermes: expected true or false, got 'yes'"),
        ("mqtt: {tls: {ca: missing.pem}}", "hub.yaml: mqtt.tls.ca: file not found:"),
        ("mqtt: {tls: {verify: false}}", "hub.yaml: mqtt.tls.verify: unknown key (allowed: ca, cert, key, insecure)"),
        ("mqtt: {password: x}", "hub.yaml: mqtt.password: a password needs mqtt.username"),
        ("mqtt: {prefix: 'a/+'}", "hub.yaml: mqtt.prefix: expected topic levels"),
        ("mqtt: {homeassistant: {prefix: 'ha/'}}", "hub.yaml: mqtt.homeassistant.prefix: expected topic levels"),
        ("mqtt: {reconnect_min_s: 5, reconnect_max_s: 1}", "hub.yaml: mqtt.reconnect_max_s: must be >="),
        ("mqtt: [a]", "hub.yaml: mqtt: expected a mapping with keys host, port"),
        ("site: 'kitchen/+/#'", "hub.yaml: site: expected 1-64 letters, digits, '_' or '-'"),
        ("site: 'a/b'", "hub.yaml: site:"),
        ("site: '#'", "hub.yaml: site:"),
        ("site: \"a\\0b\"", "hub.yaml: site:"),
        ("sites: x", "hub.yaml: sites: unknown key (allowed: site, bundle, mqtt, outbox, audio, recognizer, actions)"),
        ("outbox: {max_age_s: 0}", "hub.yaml: outbox.max_age_s: expected a number > 0.0, got 0"),
        ("audio: {source: radio}", "hub.yaml: audio.source: expected 'mic', 'wav', 'stdin' or 'satellite'"),
        ("audio: {device: [1]}", "hub.yaml: audio.device: expected a device name or index"),
        ("recognizer: {threads: 0}", "hub.yaml: recognizer.threads: expected an integer in [1, 256], got 0"),
        ("recognizer: {thresholds: {intent: 2}}", "hub.yaml: recognizer.thresholds.intent: expected a number in [0, 1]"),
        ("recognizer: {trim: {after_s: -1}}", "hub.yaml: recognizer.trim.after_s: expected a number in [0, 10], got -1"),
        ("recognizer: {trim: {after: 1}}", "hub.yaml: recognizer.trim.after: unknown key (allowed: before_s, after_s,"),
        ("recognizer: {trim: 0.3}", "hub.yaml: recognizer.trim: expected a mapping with keys before_s, after_s"),
        ("actions: {a: 1}", "hub.yaml: actions: expected a list of actions"),
        ("actions: [{intent: x, topic: 'a/#', payload: p}]", "hub.yaml: actions[0].topic: 'a/#' contains a wildcard"),
        ("- just\n- a list", "hub.yaml: (top level): expected a mapping"),
    ],
)
def test_errors_name_the_key_and_the_allowed_values(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        HubConfig.from_dict(__import__("yaml").safe_load(text), source="hub.yaml", base=tmp_path, env={})
    assert str(info.value).startswith(message), str(info.value)


def test_tls_true_uses_the_system_cas_and_port_8883(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "mqtt: {tls: true}"), env={})
    assert (config.mqtt.tls, config.mqtt.port, config.mqtt.url) == (TlsConfig(), 8883, "mqtts://localhost:8883")
    assert load_config(write(tmp_path, "mqtt: {tls: false}", "plain.yaml"), env={}).mqtt.tls is None


def test_yaml_syntax_errors_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"hub.yaml: line 2, column 7: not valid YAML"):
        load_config(write(tmp_path, "site: a\nmqtt: @x\n"), env={})
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_environment_overrides_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, "mqtt: {username: file-user, password: file-pass}\n")
    config = load_config(path, env={"HUBVOICE_MQTT_USERNAME": "env-user", "HUBVOICE_MQTT_PASSWORD": "env-pass"})
    assert (config.mqtt.username, config.mqtt.password) == ("env-user", "env-pass")
    only_password = load_config(write(tmp_path, "mqtt: {username: u}\n", "other.yaml"),
                                env={"HUBVOICE_MQTT_PASSWORD": "p"})
    assert (only_password.mqtt.username, only_password.mqtt.password) == ("u", "p")
    untouched = load_config(path, env={})
    assert (untouched.mqtt.username, untouched.mqtt.password) == ("file-user", "file-pass")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.local", ("broker.local", 1883, False, None, None)),
        ("mqtts://broker.local", ("broker.local", 8883, True, None, None)),
        ("mqtt://hub@10.0.0.2:1884", ("10.0.0.2", 1884, False, "hub", None)),
        ("mqtts://hub:p%40ss@broker:8884/", ("broker", 8884, True, "hub", "p@ss")),
        ("mqtt://[::1]:1999", ("::1", 1999, False, None, None)),
    ],
)
def test_broker_urls(url: str, expected: tuple[Any, ...]) -> None:
    broker = parse_broker_url(url)
    assert (broker.host, broker.port, broker.tls, broker.username, broker.password) == expected


@pytest.mark.parametrize("url", ["http://broker", "broker:1883", "mqtt://", "mqtt://host:99999", "mqtt://host/topic",
                                 "mqtt://host:abc", "mqtt://host?x=1"])
def test_bad_broker_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="--broker: expected mqtt://"):
        parse_broker_url(url)


def test_broker_url_overrides_the_file_and_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "mqtt: {host: file-host, port: 1999, username: file-user}\n")
    config = load_config(path, env={"HUBVOICE_MQTT_USERNAME": "env-user", "HUBVOICE_MQTT_PASSWORD": "pw"},
                         broker="mqtts://cli-user@cli-host")
    mqtt = config.mqtt
    assert (mqtt.host, mqtt.port, mqtt.tls, mqtt.username, mqtt.password) == (
        "cli-host", 8883, TlsConfig(), "cli-user", "pw")
    plain = load_config(path, env={}, broker="mqtt://other")
    assert (plain.mqtt.host, plain.mqtt.port, plain.mqtt.tls, plain.mqtt.username) == ("other", 1883, None, "file-user")

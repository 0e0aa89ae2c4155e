"""The ``[web]`` and ``[mqtt]`` sections of the node configuration, and what the web service makes of them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from services.node.mqtt_feed import FeedSettings
from services.node.web.service import WebSettings


def write(tmp_path: Path, text: str, secrets: str | None = None) -> Path:
    cfg = tmp_path / "q.toml"
    body = text
    if secrets is not None:
        sp = tmp_path / "secrets.toml"
        sp.write_text(secrets)
        os.chmod(sp, 0o600)
        body = f'[daemon]\nsecrets_file = "{sp}"\nruntime_dir = "{tmp_path}"\n' + text
    cfg.write_text(body)
    return cfg


def test_defaults_serve_the_lan_without_cors_and_without_state_changes(tmp_path: Path):
    cfg = load_config(write(tmp_path, ""))
    assert (cfg.web.host, cfg.web.port, cfg.web.cors_origins) == ("0.0.0.0", 8080, [])
    assert cfg.web.token.get_secret_value() == "" and cfg.mqtt.enabled is False
    ws = WebSettings.from_config(cfg)
    assert ws.socket_path == cfg.daemon.runtime_dir / "live.sock" and ws.token == ""
    assert (ws.signal.green_enter_w, ws.signal.hold_s) == (500, 120)


def test_tokens_and_passwords_come_from_the_secrets_file_only(tmp_path: Path):
    with pytest.raises(ConfigError, match="web.token: secrets do not belong in the config file"):
        load_config(write(tmp_path, '[web]\ntoken = "abc"\n'))
    with pytest.raises(ConfigError, match="mqtt.password"):
        load_config(write(tmp_path, '[mqtt]\npassword = "abc"\n'))
    cfg = load_config(write(tmp_path, '[mqtt]\nenabled = true\nusername = "quartier"\n',
                            secrets='[web]\ntoken = "t0k"\n[mqtt]\npassword = "pw"\n'))
    assert WebSettings.from_config(cfg).token == "t0k"
    feed = FeedSettings.from_config(cfg.mqtt)
    assert (feed.username, feed.password, feed.base_topic, feed.discovery_prefix) == ("quartier", "pw", "quartier", "homeassistant")


@pytest.mark.parametrize("text, key", [
    ('[web]\nport = 70000\n', "web.port"),
    ('[web.signal]\ngreen_enter_w = 100\ngreen_exit_w = 300\n', "web.signal"),
    ('[mqtt]\nbase_topic = "home/#"\n', "mqtt.base_topic"),
    ('[mqtt]\nnode_id = "my node"\n', "mqtt.node_id"),
    ('[web]\ncolour = "green"\n', "web.colour"),
])
def test_bad_keys_are_named(tmp_path: Path, text: str, key: str):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert key in str(err.value)


def test_a_bad_password_is_never_shown(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "", secrets="[mqtt]\npassword = 12345\n"))
    assert "12345" not in str(err.value) and "mqtt.password" in str(err.value)


def test_the_page_takes_own_production_from_the_meter_whose_role_is_production():
    from gateway.config import Config
    from services.node.web.service import _production_meter

    flukso = Config(sources=[{"type": "flukso", "host": "192.0.2.1", "meter_id": "home", "sensors": [
        {"id": "a" * 32, "role": "grid_import"}, {"id": "b" * 32, "role": "grid_export"},
        {"id": "c" * 32, "role": "production", "meter_id": "home-pv"}]}])
    assert _production_meter(flukso) == "home-pv"
    p1_pv = Config(sources=[{"type": "p1"}, {"type": "p1", "port": "/dev/pv", "meter_id": "pv1", "role": "production"}])
    assert _production_meter(p1_pv) == "pv1"
    assert _production_meter(Config(sources=[{"type": "p1"}])) is None

"""Configuration: a bad config names the key, the value and the reason; secrets stay apart."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway.config import ConfigError, load_config


def write(tmp_path, text, name="quartier.toml", mode=0o644):
    p = tmp_path / name
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg.sources[0].type == "p1" and cfg.sources[0].port == "/dev/p1"
    assert cfg.influx.enabled is False


def test_each_bad_key_is_named_with_value_and_reason(tmp_path):
    p = write(tmp_path, '[[sources]]\ntype="p1"\nbaudrate=19200\n[influx]\nurl="ftp://x"\n[daemon]\ntimezone="Mars/Olympus"\ncolour=1\n')
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "sources.0.baudrate = 19200" in msg
    assert "influx.url = 'ftp://x': must start with http:// or https://" in msg
    assert "daemon.timezone = 'Mars/Olympus': unknown time zone" in msg
    assert "daemon.colour = 1: unknown key" in msg


def test_unknown_source_type_is_refused(tmp_path):
    p = write(tmp_path, '[[sources]]\ntype="modbus"\n')
    with pytest.raises(ConfigError, match="sources.0"):
        load_config(p)


def test_toml_syntax_error_names_the_file(tmp_path):
    p = write(tmp_path, "[store\npath=1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_token_in_main_config_is_refused(tmp_path):
    p = write(tmp_path, '[influx]\nenabled=true\ntoken="s3cret"\n')
    with pytest.raises(ConfigError, match="influx.token: secrets do not belong in the config file"):
        load_config(p)


def test_secrets_file_must_be_private(tmp_path):
    s = write(tmp_path, '[influx]\ntoken="s3cret"\n', "secrets.toml", 0o644)
    p = write(tmp_path, f'[influx]\nenabled=true\n[daemon]\nsecrets_file="{s}"\n')
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(p)
    os.chmod(s, 0o600)
    cfg = load_config(p)
    assert cfg.influx.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)


def test_influx_enabled_without_token_says_where_to_put_it(tmp_path):
    p = write(tmp_path, "[influx]\nenabled=true\n")
    with pytest.raises(ConfigError, match="QUARTIER_INFLUX__TOKEN"):
        load_config(p)


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    p = write(tmp_path, '[influx]\nenabled=true\nurl="http://a:8086"\n')
    monkeypatch.setenv("QUARTIER_INFLUX__URL", "http://b:8086")
    monkeypatch.setenv("QUARTIER_INFLUX__TOKEN", "t")
    cfg = load_config(p)
    assert cfg.influx.url == "http://b:8086" and cfg.influx.token.get_secret_value() == "t"


def test_cli_config_check_reports_without_traceback(tmp_path):
    p = write(tmp_path, "[store]\nmax_mb=-1\n")
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "check", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "store.max_mb = -1: Input should be greater than or equal to 1" in r.stderr
    assert "Traceback" not in r.stderr
    ok = write(tmp_path, "[store]\nmax_mb=100\n", "ok.toml")
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "check", str(ok)], capture_output=True, text=True)
    assert r.returncode == 0 and "OK" in r.stdout


def test_example_config_is_valid(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "example"], capture_output=True, text=True, check=True)
    p = write(tmp_path, r.stdout)
    load_config(p)

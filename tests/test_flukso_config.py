"""A Flukso source in the configuration: roles checked at load, the broker password kept apart."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flukso.source import FluksoSettings
from gateway.config import ConfigError, load_config

A, B, C = "a" * 32, "b" * 32, "c" * 32


def write(tmp_path, text, name="quartier.toml", mode=0o644):
    p = tmp_path / name
    p.write_text(text)
    os.chmod(p, mode)
    return p


SOURCE = f"""
[[sources]]
type = "flukso"
host = "192.168.1.50"
meter_id = "home"
device = "{'D' * 32}"
sensors = [
  {{ id = "{A.upper()}", role = "grid_import" }},
  {{ id = "{B}", role = "grid_export" }},
  {{ id = "{C}", role = "production", meter_id = "home-pv" }},
]
"""


def test_a_flukso_source_loads_with_defaults(tmp_path):
    cfg = load_config(write(tmp_path, SOURCE))
    src = cfg.sources[0]
    assert isinstance(src, FluksoSettings)
    assert (src.port, src.clock, src.client_id, src.device) == (1883, "pi", None, "d" * 32)
    assert [(s.id, s.role, s.meter_id) for s in src.sensors] == [
        (A, "grid_import", None), (B, "grid_export", None), (C, "production", "home-pv")]
    assert src.password is None


@pytest.mark.parametrize(("text", "message"), [
    (SOURCE.replace('role = "grid_export"', 'role = "export"'), "sources.0.sensors.1.role = 'export'"),
    (SOURCE.replace(f'id = "{B}"', 'id = "12"'), "sources.0.sensors.1.id = '12': must be a Fluksometer sensor id"),
    (SOURCE.replace(', meter_id = "home-pv"', ""), "sources.0: sensors: meter 'home' mixes roles"),
    (SOURCE.replace('meter_id = "home"\n', ""), "sources.0.meter_id: required key is missing"),
    (SOURCE.replace('host = "192.168.1.50"', 'host = "x"\ncolour = 1'), "sources.0.colour = 1: unknown key"),
    (SOURCE.replace(f'device = "{"D" * 32}"', 'device = "flm"'), "sources.0.device = 'flm'"),
    (SOURCE + 'clock = "ntp"\n', "sources.0.clock = 'ntp'"),
])
def test_a_bad_flukso_source_names_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    assert message in str(exc.value)


def test_the_broker_password_is_refused_in_the_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r'sources.0.password: secrets do not belong in the config file.*\[flukso."home"\]'):
        load_config(write(tmp_path, SOURCE + 'password = "s3cret"\n'))
    with pytest.raises(ConfigError, match="flukso: credentials do not belong"):
        load_config(write(tmp_path, SOURCE + '[flukso.home]\npassword = "s3cret"\n'))


def test_the_broker_password_comes_from_the_private_secrets_file(tmp_path):
    secrets = write(tmp_path, '[flukso."home"]\nusername = "quartier"\npassword = "s3cret"\n', "secrets.toml", 0o600)
    cfg = load_config(write(tmp_path, SOURCE + f'[daemon]\nsecrets_file = "{secrets}"\n'))
    src = cfg.sources[0]
    assert (src.username, src.password.get_secret_value()) == ("quartier", "s3cret")
    assert "s3cret" not in repr(cfg)
    os.chmod(secrets, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(write(tmp_path, SOURCE + f'[daemon]\nsecrets_file = "{secrets}"\n'))


def test_secrets_for_a_meter_without_a_flukso_source_are_refused(tmp_path):
    secrets = write(tmp_path, '[flukso."flat"]\npassword = "s3cret"\n', "secrets.toml", 0o600)
    with pytest.raises(ConfigError, match="flukso.flat: no flukso source has meter_id 'flat'"):
        load_config(write(tmp_path, SOURCE + f'[daemon]\nsecrets_file = "{secrets}"\n'))


def test_config_check_accepts_a_flukso_source(tmp_path):
    p = write(tmp_path, SOURCE)
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "check", str(p)], capture_output=True, text=True)
    assert r.returncode == 0 and "OK" in r.stdout and "flukso" in r.stdout

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


def refusal(tmp_path, text: str) -> str:
    """The message a config with ``text`` is refused with."""
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    return str(exc.value)


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg.sources[0].type == "p1" and cfg.sources[0].port == "/dev/p1"
    assert cfg.influx.enabled is False


def test_each_bad_key_is_named_with_value_and_reason(tmp_path):
    msg = refusal(tmp_path, '[[sources]]\ntype="p1"\nbaudrate=19200\n[influx]\nurl="ftp://x"\n[daemon]\ntimezone="Mars/Olympus"\ncolour=1\n')
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
    assert r.returncode == 78  # EX_CONFIG (issue 17): not 2, a usage error; the units do not restart on it
    assert "store.max_mb = -1: Input should be greater than or equal to 1" in r.stderr
    assert "Traceback" not in r.stderr
    ok = write(tmp_path, "[store]\nmax_mb=100\n", "ok.toml")
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "check", str(ok)], capture_output=True, text=True)
    assert r.returncode == 0 and "OK" in r.stdout


def test_example_config_is_valid(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "example"], capture_output=True, text=True, check=True)
    p = write(tmp_path, r.stdout)
    load_config(p)


# -- issue 13: nothing that arrives in a file is trusted ---------------------------------------------


def _cli(*args) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *map(str, args)], capture_output=True, text=True, timeout=60)


def _refused_by_the_cli(path, *needles: str) -> None:
    """``quartier config check`` and ``quartier run`` both: exit 78 (EX_CONFIG, issue 17), a clear
    message, no traceback."""
    for command in (("config", "check", path), ("run", "--config", path)):
        r = _cli(*command)
        assert r.returncode == 78, (command, r.returncode, r.stderr)
        assert r.stderr.startswith("quartier: ") and "internal error" not in r.stderr and "Traceback" not in r.stderr
        assert all(n in r.stderr for n in needles), (command, r.stderr)


def test_a_non_utf8_config_names_the_file(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes('[store]\npath = "/var/lib/quartier/caf\xe9.sqlite"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=f"config {p}: not UTF-8 text"):
        load_config(p)
    _refused_by_the_cli(p, f"config {p}: not UTF-8 text")  # was: internal error: UnicodeDecodeError


def test_a_non_utf8_secrets_file_names_the_file(tmp_path):
    s = tmp_path / "secrets.toml"
    s.write_bytes('[web]\ntoken = "caf\xe9"\n'.encode("latin-1"))
    os.chmod(s, 0o600)
    p = write(tmp_path, f'[daemon]\nsecrets_file = "{s}"\n')
    with pytest.raises(ConfigError, match=f"secrets file {s}: not UTF-8 text"):
        load_config(p)


def test_a_directory_as_the_config_or_secrets_file_names_it(tmp_path):
    d = tmp_path / "conf.d"
    d.mkdir()
    with pytest.raises(ConfigError, match=f"config {d}: is a directory"):
        load_config(d)
    _refused_by_the_cli(d, f"config {d}: is a directory")  # was: internal error: IsADirectoryError
    p = write(tmp_path, f'[daemon]\nsecrets_file = "{d}"\n')
    with pytest.raises(ConfigError, match=f"secrets file {d}: is a directory"):
        load_config(p)


@pytest.mark.parametrize("text, key", [
    ("[daemon]\nmax_interpolation_gap_s = inf\n", "daemon.max_interpolation_gap_s = inf"),
    ("[daemon]\nhealth_interval_s = nan\n", "daemon.health_interval_s = nan"),
    ("[web]\ngrid_price_eur_kwh = inf\n", "web.grid_price_eur_kwh = inf"),
    ("[web.signal]\nred_exit_w = -inf\n", "web.signal.red_exit_w = -inf"),
    ("[influx]\ntimeout_s = +inf\n", "influx.timeout_s = inf"),
    ("[uplink]\nlive_interval_s = nan\n", "uplink.live_interval_s = nan"),
    ('[[sources]]\ntype = "simulated"\nspeed = nan\n', "sources.0.speed = nan"),
    ('[[sources]]\ntype = "flukso"\nhost = "h"\nmeter_id = "m"\nstale_after_s = inf\n'
     'sensors = [{ id = "0123456789abcdef0123456789abcdef", role = "grid_net" }]\n', "sources.0.stale_after_s = inf"),
])
def test_non_finite_numbers_are_refused_naming_file_and_key(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(exc.value).startswith(f"invalid configuration in {p}:") and f"{key}: Input should be a finite number" in str(exc.value)


def test_run_refuses_an_infinite_gap_in_one_clear_message(tmp_path):
    p = write(tmp_path, "[daemon]\nmax_interpolation_gap_s = inf\n")
    _refused_by_the_cli(p, str(p), "daemon.max_interpolation_gap_s = inf: Input should be a finite number")


@pytest.mark.parametrize("secret_text, key", [
    ('[store]\npath = "/tmp/elsewhere.sqlite"\n', "store.path"),
    ('[web]\ntoken = "t"\nport = 8081\n', "web.port"),
    ('[daemon]\ntimezone = "UTC"\n', "daemon.timezone"),
    ('[influx]\ntoken = "t"\n[influx.extra]\nx = 1\n', "influx.extra"),
    ('debug = true\n', "debug"),
])
def test_the_secrets_file_holds_secrets_only(tmp_path, secret_text, key):
    s = write(tmp_path, secret_text, "secrets.toml", 0o600)
    p = write(tmp_path, f'[daemon]\nsecrets_file = "{s}"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(p)  # was: accepted, store.path silently moved by the secrets file
    assert f"secrets file {s}: {key} is not a secret; it belongs in the config file" in str(exc.value)
    _refused_by_the_cli(p, f"{key} is not a secret")


def test_the_secrets_file_still_takes_every_secret(tmp_path):
    s = write(tmp_path, '[influx]\ntoken = "i"\n[web]\ntoken = "w"\n[mqtt]\npassword = "m"\n[uplink]\npassword = "u"\n',
              "secrets.toml", 0o600)
    cfg = load_config(write(tmp_path, f'[daemon]\nsecrets_file = "{s}"\n'))
    assert [cfg.influx.token.get_secret_value(), cfg.web.token.get_secret_value(), cfg.mqtt.password.get_secret_value(),
            cfg.uplink.password.get_secret_value()] == ["i", "w", "m", "u"]


def test_per_tariff_prices_and_names_are_checked_naming_the_key(tmp_path):
    ok = load_config(write(tmp_path, '[web]\ngrid_price_eur_kwh = 0.3\ngrid_price_eur_kwh_by_tariff = { "1" = 0.34, "2" = 0.27 }\n'
                                     'tariff_names = { "1" = "day", "2" = "night" }\n'))
    assert ok.web.grid_price_eur_kwh_by_tariff == {"1": 0.34, "2": 0.27} and ok.web.tariff_names["2"] == "night"
    msg = refusal(tmp_path, '[web]\ngrid_price_eur_kwh_by_tariff = { "1" = 0.34, "day" = 0.27, "2" = -1, "3" = inf }\n'
                            'tariff_names = { "1" = "" }\n')
    assert "web.grid_price_eur_kwh_by_tariff.day.[key] = 'day': must be a meter tariff number" in msg
    assert "web.grid_price_eur_kwh_by_tariff.2 = -1: Input should be greater than or equal to 0" in msg
    assert "web.grid_price_eur_kwh_by_tariff.3 = inf: Input should be a finite number" in msg
    assert "web.tariff_names.1 = '': String should have at least 1 character" in msg

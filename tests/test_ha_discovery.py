"""The feed's Home Assistant discovery, checked with Home Assistant's own code (tests/ha_check.py, run in
a virtual environment of its own with tests/ha-requirements.txt): a P1 meter with gas, and a Fluksometer
house with production. Also: the entities are the ones the meters give, grid import/export, production
and gas are valid Energy dashboard sources, and the quarter-hour sensors are disabled by default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.live import reading_message
from gateway.from_p1 import to_reading
from p1.decode import parse_telegram
from services.node.ha_discovery import meter_view
from services.node.mqtt_feed import Topics, discovery_config, meter_messages, node_id_from_serial

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "tests" / "ha-requirements.txt"


def ha_venv() -> Path:
    """Where CI (.ci/run) installs Home Assistant; made here when missing (a few minutes, once)."""
    return Path(os.environ.get("QUARTIER_HA_VENV") or Path.home() / ".cache" / "quartier" / "ha-venv-2024.3.3")


@pytest.fixture(scope="session")
def ha_python() -> Path:
    venv = ha_venv()
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    if not python.exists() or not stamp.exists() or stamp.read_text() != REQUIREMENTS.read_text():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True, timeout=1500)
        stamp.write_text(REQUIREMENTS.read_text())
    return python


def ha_run(python: Path, script: str, job: dict) -> dict:
    """A check script of tests/ run by Home Assistant's interpreter: the job on stdin, JSON back."""
    out = subprocess.run([str(python), str(ROOT / "tests" / script)], input=json.dumps(job),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def ha_check(python: Path, config: dict, energy: dict) -> dict:
    return ha_run(python, "ha_check.py", {"config": config, "energy": energy})


def p1_grid_message() -> dict:
    """A simulated e-MUCS meter with gas, through the real decoder and the daemon's live message."""
    from demo.meter import MeterSimulator

    start = datetime(2026, 1, 15, 11, 0, tzinfo=UTC)
    sim = MeterSimulator(start=start, seed=3, gas=True, phases=3)
    frame = sim.telegram_at(start + timedelta(seconds=30))
    reading = to_reading(parse_telegram(frame))
    return reading_message(reading, None, time.time(), "grid", reading.meter_id)


def flukso_messages() -> tuple[dict, dict[str, dict]]:
    """A Fluksometer house: grid import/export sensors on "home", a production clamp on "home-pv"."""
    from flukso.source import FluksoSettings
    from gateway.model import Reading

    s = FluksoSettings(host="192.0.2.1", meter_id="home", sensors=[
        {"id": "a" * 32, "role": "grid_import"}, {"id": "b" * 32, "role": "grid_export"},
        {"id": "c" * 32, "role": "production", "meter_id": "home-pv"}])
    t = datetime(2026, 6, 1, 12, tzinfo=UTC)
    grid = Reading("home", t, {"0": 1_000_000}, {"0": 2_000_000}, 0.0, 1500.0, source="flukso")
    pv = Reading("home-pv", t, {}, {"0": 3_000_000}, None, 2500.0, source="flukso")
    g = reading_message(grid, None, time.time(), s.role_of("home"), s.serial_of("home"))
    p = reading_message(pv, None, time.time(), s.role_of("home-pv"), s.serial_of("home-pv"))
    return g, {"home-pv": p}


def test_p1_meter_with_gas_gives_every_value_as_an_entity() -> None:
    grid = p1_grid_message()
    assert grid["submeters"] and grid["submeters"][0]["kind"] == "gas"
    node = node_id_from_serial(grid["serial"])
    t = Topics("quartier", node)
    cmps = discovery_config(t, meter_view(grid))["cmps"]
    for key in ("import_energy_t1", "import_energy_t2", "export_energy_t1", "export_energy_t2", "tariff",
                "l1_voltage", "l2_current", "l3_import_power", "l3_export_power", "gas_1", "month_peak",
                "meter_demand", "projected_demand", "peak_margin", "above_month_peak"):
        assert key in cmps, key
    assert (cmps["gas_1"]["device_class"], cmps["gas_1"]["unit_of_measurement"], cmps["gas_1"]["state_class"]) == \
        ("gas", "m³", "total_increasing")
    # every state topic named in discovery is one the feed publishes for this meter
    published = {topic for topic, _p, _r in meter_messages(t, grid)}
    for key in ("import_energy_t1", "tariff", "l1_voltage", "gas_1", "meter_demand"):
        assert cmps[key]["state_topic"] in published, key
    # the quarter-hour energies restart every quarter-hour: offered, but off unless asked for
    for key in ("quarter_import", "quarter_export", "last_quarter_import", "last_quarter_export"):
        assert cmps[key]["enabled_by_default"] is False


def test_identity_comes_from_the_serial_not_the_host_name(monkeypatch) -> None:
    import socket

    grid = p1_grid_message()
    ids = set()
    for host in ("raspberrypi", "kitchen-pi"):
        monkeypatch.setattr(socket, "gethostname", lambda h=host: h)
        cfg = discovery_config(Topics("quartier", node_id_from_serial(grid["serial"])), meter_view(grid))
        ids.add((cfg["dev"]["ids"][0], cfg["cmps"]["import_energy"]["unique_id"]))
        assert cfg["dev"]["sn"] == grid["serial"]
    assert len(ids) == 1


def test_home_assistant_accepts_the_p1_meter_with_gas(ha_python: Path) -> None:
    grid = p1_grid_message()
    t = Topics("quartier", node_id_from_serial(grid["serial"]))
    cfg = discovery_config(t, meter_view(grid), configuration_url="http://quartier.local:8080/",
                           removed={"gone_sensor": "sensor"})
    res = ha_check(ha_python, cfg, {"grid_import": ["import_energy", "import_energy_t1", "import_energy_t2"],
                                    "grid_export": ["export_energy", "export_energy_t1", "export_energy_t2"],
                                    "gas": ["gas_1"]})
    print(f"\nHome Assistant {res['version']}: {res['checked']} components checked; newer keys: {res['newer']}")
    assert res["errors"] == []
    assert res["checked"] == len(cfg["cmps"]) - 1  # all but the removal marker
    assert set(res["newer"]) <= {"signal.options"}


def test_home_assistant_accepts_the_flukso_house_with_production(ha_python: Path) -> None:
    grid, producers = flukso_messages()
    assert grid["role"] == "grid" and producers["home-pv"]["role"] == "production"
    assert grid["serial"] == "a" * 32  # a sensor id: the installer's "home" may repeat on another Pi
    t = Topics("quartier", node_id_from_serial(grid["serial"]))
    view = meter_view(grid, producers)
    cfg = discovery_config(t, view, configuration_url="http://quartier.local:8080/")
    cmps = cfg["cmps"]
    assert {"production_home-pv", "production_home-pv_power"} <= set(cmps)
    published = {topic: p for topic, p, _r in meter_messages(t, grid, producers)}
    assert published[cmps["production_home-pv"]["state_topic"]] == "3000000"
    assert published[cmps["production_home-pv_power"]["state_topic"]] == "2500"
    res = ha_check(ha_python, cfg, {"grid_import": ["import_energy"], "grid_export": ["export_energy"],
                                    "production": ["production_home-pv"]})
    assert res["errors"] == []


def test_the_check_catches_what_home_assistant_refuses(ha_python: Path) -> None:
    """The check is not a rubber stamp: wrong units, classes and keys come back as errors."""
    t = Topics("quartier", "x")
    cfg = discovery_config(t)
    cfg["cmps"]["import_energy"]["unit_of_measurement"] = "W"
    cfg["cmps"]["export_energy"]["state_class"] = "measurement"
    cfg["cmps"]["import_power"]["stat_topic"] = "typo"
    cfg["cmps"]["net_power"]["device_class"] = "watts"
    res = ha_check(ha_python, cfg, {"grid_import": ["import_energy"], "grid_export": ["export_energy"]})
    text = "\n".join(res["errors"])
    assert "import_energy: unit 'W'" in text
    assert "energy source export_energy: state_class 'measurement'" in text
    assert "import_power: keys Home Assistant ignores: ['stat_topic']" in text
    assert "net_power:" in text

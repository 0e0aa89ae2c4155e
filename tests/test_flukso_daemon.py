"""The real ``quartier run`` daemon with a Flukso source: an emulated FLM02 on a real Mosquitto, the
store and a real InfluxDB v2 write API (VictoriaMetrics). The closed quarter-hours must be those the
P1 pipeline makes of the same house, to the Wh, in the store and in the database; a second Flukso
source whose broker is down must not hold the first one up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from gateway.store import Store
from tests.servers import free_port
from tests.test_flukso_client import (
    SUNRISE,
    compare,
    emulator,
    p1_quarter_hours,
    wait_for,
)


def stored(db: Path, meter: str) -> list:
    s = Store(db)
    try:
        return s.quarter_hours(meter)
    finally:
        s.close()


def outbox_depth(db: Path) -> int:
    s = Store(db)
    try:
        return s.outbox_depth()
    finally:
        s.close()


def test_daemon_with_a_flukso_source_commits_what_a_p1_source_would(tmp_path, mosquitto, victoria_metrics):
    frames: list[bytes] = []
    emu = emulator(mosquitto, frames, firmware="flm02", start_time=SUNRISE, speed=600)
    db, runtime, log_path = tmp_path / "store.sqlite", tmp_path / "run", tmp_path / "daemon.log"
    sensors = ",\n".join(
        "  { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in s.items()) + " }" for s in emu.config_sensors("home", "home-pv"))
    config = tmp_path / "quartier.toml"
    config.write_text(f"""
[[sources]]
type = "flukso"
host = "{mosquitto.host}"
port = {mosquitto.port}
client_id = "quartier-daemon-test"
device = "{emu.device}"
meter_id = "home"
clock = "sensor"
sensors = [
{sensors}
]

[[sources]]               # a second Fluksometer whose broker is down: it must not hold up the first
type = "flukso"
host = "127.0.0.1"
port = {free_port()}
meter_id = "ghost"
sensors = [{{ id = "{'f' * 32}", role = "grid_import" }}]

[store]
path = "{db}"

[influx]
enabled = true
url = "{victoria_metrics.url}"
org = "community"
bucket = "quartier"
backoff_max_s = 1

[daemon]
runtime_dir = "{runtime}"
health_interval_s = 0.5
""")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "QUARTIER_INFLUX__TOKEN": "test-token"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        wait_for(lambda: "flukso.connected" in log_path.read_text(), 20, "the daemon to subscribe")
        emu.start()
        wait_for(lambda: len(stored(db, "home")) >= 4 and len(stored(db, "home-pv")) >= 4, 40, "four quarter-hours")
        emu.stop()
        wait_for(lambda: outbox_depth(db) == 0, 20, "the outbox to drain into InfluxDB")
        health = json.loads((runtime / "health.json").read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        emu.close()
        if proc.poll() is None:
            proc.kill()
    log = log_path.read_text()
    home, pv = stored(db, "home"), stored(db, "home-pv")
    p1 = p1_quarter_hours(frames, tmp_path)
    pv_truth = [emu.truth[int(q.end.timestamp())].production_wh - emu.truth[int(q.start.timestamp())].production_wh for q in pv]
    points = {(p.labels["meter_id"], p.timestamp_s): p.value for p in victoria_metrics.query_points("quarter_hour_import_wh")}
    exports = {(p.labels["meter_id"], p.timestamp_s): p.value for p in victoria_metrics.query_points("quarter_hour_export_wh")}
    sources = {p.labels.get("source") for p in victoria_metrics.query_points("quarter_hour_import_wh")}
    in_db = [(q.meter_id, int(q.start.timestamp())) for q in home + pv]
    print(f"\n[daemon flukso] home={[(q.import_wh, q.export_wh) for q in home]} pv={[q.export_wh for q in pv]} "
          f"p1_differ={len(compare(home, p1))} quality={dict(Counter(q.quality.value for q in home))} "
          f"influx_points={len(points)} health_meters={sorted(health['meters'])}")
    assert "Traceback" not in log
    assert "flukso.connect_failed" in log and "ghost" not in health["meters"]
    assert compare(home, p1) == [] and [q.export_wh for q in pv] == pv_truth
    assert all(points.get(k) == q.import_wh and exports.get(k) == q.export_wh for k, q in zip(in_db, home + pv, strict=True))
    assert set(points) == set(in_db) and sources == {"flukso"}
    assert health["meters"]["home"]["source"] == "flukso0" and health["meters"]["home"]["rejected"] == 0
    assert health["readers"]["flukso0"]["port"] == f"mqtt://{mosquitto.host}:{mosquitto.port}"

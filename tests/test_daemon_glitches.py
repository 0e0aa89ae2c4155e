"""Glitch telegrams through the real ``quartier run`` daemon on a pty (the real pyserial path): each
kind is counted under its reason for the meter, none adds energy or quarter-hours, memory stays put;
the watchdog is fed only while readings are accepted; a store whose last boundary is in the future
does not block honest readings.

Each test prints its figures (run with -s, or see CI's -rA summary)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest

from gateway.model import Quality, QuarterHour
from gateway.store import Store
from tests.daemon_harness import make_rig
from tests.servers import Mosquitto, free_port
from tests.test_daemon_faults import START, check_ledger, closed
from tests.test_mqtt_feed import Listener

KINDS = ["flip_no_crc", "zero", "missing_line", "day_ahead", "ten_years_ahead", "flip_up", "no_crc",
         "flip_down", "unreadable", "hour_back", "flip_keep_crc"]
REASON = {"flip_no_crc": "no_crc", "no_crc": "no_crc", "flip_keep_crc": "crc", "zero": "register_drop",
          "flip_down": "register_drop", "missing_line": "unknown_register", "unreadable": "unknown_register",
          "flip_up": "implausible_step", "day_ahead": "time_jump", "ten_years_ahead": "time_jump",
          "hour_back": "time_jump"}


@pytest.mark.slow
def test_glitch_telegrams_add_no_energy_no_quarter_hours_and_no_memory(tmp_path):
    rig = make_rig(tmp_path, start=START, speed=120,  # a telegram every 6 simulated s, 20 a second
                   import_wh=(5_123_456, 3_000_000), export_wh=(1_234_567, 456_789))
    rig.write_config()
    try:
        rig.start_daemon()
        rig.wait_for(lambda: len(closed(rig)) >= 1, 60, "a first quarter-hour")
        time.sleep(1)
        rss_before = rig.rss_kb()
        for kind in KINDS:  # one glitch, then honest telegrams around it, for each kind
            rig.glitches.append(kind)
            n = len(rig.sent)
            rig.wait_for(lambda: len(rig.sent) >= n + 12, 30, "honest telegrams after the glitch")
        n = len(closed(rig))
        rig.wait_for(lambda: len(closed(rig)) >= n + 1, 60, "one more quarter-hour")
        time.sleep(1)
        rss_after = rig.rss_kb()
        health = rig.health()
        assert rig.stop() == 0
    finally:
        rig.meter.stop()
    qhs = closed(rig)
    assert len(rig.glitched) == len(KINDS)
    check_ledger(rig, qhs, "glitches")
    (meter,) = health["meters"].values()  # no phantom meter "?"
    expected: dict[str, int] = {}
    for k in KINDS:
        expected[REASON[k]] = expected.get(REASON[k], 0) + 1
    print(f"[glitches] refused={meter['refused']} quarter_hours={len(qhs)} rss_kb before={rss_before} after={rss_after} "
          f"last_qh={qhs[-1].start.isoformat()} last_sent={rig.sent[-1][0].isoformat()}")
    assert meter["refused"] == expected
    assert meter["crc_errors"] == expected["crc"] + expected["no_crc"]
    assert qhs[-1].end <= rig.sent[-1][0]  # nothing a day or ten years ahead
    assert sum(q.quality is Quality.INTERPOLATED for q in qhs) <= 2 * len(KINDS)
    assert rss_after - rss_before < 5_000  # kB: no quarter-hours of 2035 in memory


@pytest.mark.slow
def test_watchdog_is_fed_only_while_readings_are_accepted(tmp_path):
    rig = make_rig(tmp_path, start=START, speed=60)
    rig.write_config(extra_daemon="watchdog_max_telegram_age_s = 2")
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    messages: list[str] = []

    def drain(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                pass

    try:
        rig.start_daemon(env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "1000000"})
        drain(4)
        fed_before = sum("WATCHDOG=1" in m for m in messages)
        rig.glitch_all = "no_crc"  # bytes keep arriving, every telegram damaged
        drain(3)
        mark = len(messages)
        drain(3)
        fed_while_refused = sum("WATCHDOG=1" in m for m in messages[mark:])
        health = rig.health()
        rig.glitch_all = None
        mark = len(messages)
        drain(5)
        fed_after = sum("WATCHDOG=1" in m for m in messages[mark:])
        rig.stop()
    finally:
        rig.meter.stop()
        sock.close()
    (meter,) = health["meters"].values()
    print(f"\n[watchdog/refused] fed_before={fed_before} fed_while_refused={fed_while_refused} fed_after={fed_after} "
          f"telegram_age={health['last_telegram_age_s']} accepted_age={health['last_accepted_age_s']} refused={meter['refused']}")
    assert fed_before >= 3 and fed_while_refused == 0 and fed_after >= 2
    assert health["last_telegram_age_s"] < 1 and meter["refused"]["no_crc"] > 10


@pytest.mark.slow
def test_a_store_whose_last_boundary_is_in_the_future_does_not_block_honest_readings(tmp_path):
    rig = make_rig(tmp_path, start=START, speed=60)
    rig.write_config()
    sim = rig.meter.simulator
    ahead = START + timedelta(days=1)
    store = Store(rig.db)  # what the old code left after one telegram stamped a day ahead
    store.commit_quarter_hours([QuarterHour(sim.meter_id, ahead, 0, 0, Quality.ESTIMATED, {"1": 0, "2": 0}, {"1": 0, "2": 0},
                                            {"1": 1000, "2": 1000}, {"1": 0, "2": 0})])
    store.close()
    try:
        rig.start_daemon()
        t0 = time.monotonic()
        rig.wait_for(lambda: any(q.start < ahead for q in closed(rig)), 60, "an honest quarter-hour")
        took = time.monotonic() - t0
        n = len(closed(rig))
        rig.wait_for(lambda: len(closed(rig)) >= n + 2, 60, "honest metering going on")
        assert rig.stop() == 0
    finally:
        rig.meter.stop()
    honest = [q for q in closed(rig) if q.start < ahead]
    print(f"\n[future store] first honest quarter-hour after {took:.1f} s; honest quarter-hours={len(honest)} "
          f"flags={[q.flags for q in honest[:2]]}")
    assert len(honest) >= 3 and all(q.import_wh >= 0 for q in honest)
    assert took < 30  # 15 s a quarter-hour at 60x: the first one that could close did


def _live_lines(path, stop: threading.Event, out: list[dict]) -> None:
    """Every message of the daemon's live socket (gateway/live.py), as the web service reads them."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.settimeout(0.2)
    buf = b""
    try:
        while not stop.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            out += [json.loads(line) for line in lines if line]
    finally:
        sock.close()


@pytest.mark.slow
def test_a_glitched_gas_value_never_reaches_the_live_feed_nor_home_assistant(tmp_path, mosquitto: Mosquitto):
    """A real telegram whose MBus gas register reads 99999.999 m3 (with a right CRC), on the pty serial
    path: refused and counted as gas_implausible_step, never in a live ``reading`` message, never on the
    MQTT feed (Quartier's topics, DSMR-reader's, Home Assistant's discovery keeps the gas entity)."""
    rig = make_rig(tmp_path, start=START, speed=60, gas_dm3=1_234_567, annual_gas_m3=30_000)  # a capture every 5 s
    rig.write_config()
    web_port = free_port()
    with rig.config.open("a") as f:
        f.write("\n".join(["[web]", 'host = "127.0.0.1"', f"port = {web_port}",
                           "[mqtt]", "enabled = true", f'host = "{mosquitto.host}"', f"port = {mosquitto.port}",
                           'node_id = "gw"', "keepalive_s = 5", "power_interval_s = 1", "dsmr_reader_topics = true"]) + "\n")
    ha = Listener(mosquitto, "quartier/#", "dsmr/#", "homeassistant/#")
    live: list[dict] = []
    stop = threading.Event()
    web = None
    try:
        rig.start_daemon()
        sock = rig.runtime / "live.sock"
        rig.wait_for(sock.exists, 30, "the live socket")
        reader = threading.Thread(target=_live_lines, args=(sock, stop, live), daemon=True)
        reader.start()
        web = subprocess.Popen([sys.executable, "-m", "gateway.cli", "web", "--config", str(rig.config)],
                               stdout=subprocess.DEVNULL, stderr=open(tmp_path / "web.log", "wb"),
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
        first = float(ha.wait("quartier/gw/gas/1", timeout=60))
        for _ in range(3):  # three glitches, each between honest telegrams
            rig.glitches.append("gas_spike")
            n = len(rig.sent)
            rig.wait_for(lambda: len(rig.sent) >= n + 12, 30, "honest telegrams after the glitch")
        after = len(ha.messages)
        later = float(ha.wait("quartier/gw/gas/1", lambda p: float(p) > first, timeout=30, after=after))
        time.sleep(1)
        health = rig.health()
        assert rig.stop() == 0
    finally:
        stop.set()
        if web is not None:
            web.terminate()
            web.wait(15)
        rig.meter.stop()
        ha.close()
    glitched = [kind for _, kind in rig.glitched]
    readings = [m for m in live if m.get("type") == "reading"]
    gas_values = [s["value"] for m in readings for s in m["submeters"] if s["kind"] == "gas"]
    mqtt_gas = [float(p) for t, p, _ in ha.messages if t in ("quartier/gw/gas/1", "dsmr/consumption/gas/delivered")]
    (meter,) = health["meters"].values()
    discovery = [json.loads(p) for t, p, _ in ha.messages if t == "homeassistant/device/gw/config" and p]
    print(f"\n[gas glitch] glitched={len(glitched)} refused={meter['refused']} live readings={len(readings)} "
          f"gas {min(gas_values)}..{max(gas_values)} m3; mqtt gas {first} -> {later} ({len(mqtt_gas)} states)")
    assert glitched == ["gas_spike"] * 3 and meter["refused"] == {"gas_implausible_step": 3}
    assert readings and len(gas_values) == len(readings)  # the channel never vanished from a reading
    assert max(gas_values) < 99_999 and max(mqtt_gas) < 99_999
    assert not any("99999" in p for _, p, _ in ha.messages)
    assert gas_values == sorted(gas_values) and mqtt_gas == sorted(mqtt_gas)  # never down, never "reset"
    assert all("gas_1" in d["cmps"] and d["cmps"]["gas_1"].get("state_class") == "total_increasing" for d in discovery)

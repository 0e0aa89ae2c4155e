"""The Flukso MQTT client against a real Mosquitto, with the emulator publishing both firmwares.

The emulator drives the same household model as the simulated P1 meter and hands out the P1
telegram of every second, so the quarter-hours a Flukso source yields are compared, to the Wh, with
those the P1 pipeline makes of the same house. Each test prints its figures (run with -s)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flukso.client import FluksoClient
from demo.flukso_emulator import FluksoEmulator
from flukso.readings import TimePolicy
from flukso.sensors import Assignment, Role
from gateway.config import load_config
from gateway.model import QUARTER, Quality, QuarterHour, Reading
from gateway.pipeline import Pipeline
from demo.meter import MeterSimulator
from gateway.store import Store
from p1.decode import parse_telegram

UTC = timezone.utc
SUNRISE = datetime(2026, 6, 21, 6, 30, tzinfo=UTC)  # this house both imports and exports then (seed 1)
LATE_MORNING = datetime(2026, 6, 21, 10, 45, tzinfo=UTC)


# -- helpers (also used by test_flukso_daemon) ------------------------------------------------------


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def settle(client: FluksoClient, quiet_s: float = 0.4, timeout: float = 10) -> None:
    """Wait until the client has taken everything the broker had for it (no message for a while)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = client.stats["messages"]
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)
    raise AssertionError("the client never went quiet")


def emulator(broker, frames: list | None = None, **kw) -> FluksoEmulator:
    """A connected emulator; ``frames`` collects the P1 telegram of every emulated second."""
    emu = FluksoEmulator(host=broker.host, port=broker.port, seed=1,
                         on_telegram=(lambda t, f: frames.append(f)) if frames is not None else None, **kw)
    emu.connect()
    return emu


def assignments(emu: FluksoEmulator) -> list[Assignment]:
    return [Assignment(e["id"], Role(e["role"]), e.get("meter_id", "home")) for e in emu.config_sensors("home", "home-pv")]


class Gateway:
    """Client → pipeline → store, in this process: the daemon's metering path without the daemon."""

    def __init__(self, tmp: Path, broker, emu: FluksoEmulator, *, policy: TimePolicy | None = None, now=None,
                 client_id: str = "quartier-test", max_gap_s: float = 300) -> None:
        self.store = Store(tmp / "flukso.sqlite")
        self.pipeline = Pipeline(self.store, max_gap=timedelta(seconds=max_gap_s))
        self.readings: list[Reading] = []
        self.client = FluksoClient(
            host=broker.host, port=broker.port, client_id=client_id, device=emu.device, assignments=assignments(emu),
            on_reading=self._reading, baseline=self.store.last_boundary, policy=policy or TimePolicy(clock="sensor"),
            clock_synced=lambda: True, now=now, backoff_min_s=0.2, backoff_max_s=1.0,
        )

    def _reading(self, r: Reading) -> None:
        self.readings.append(r)
        self.pipeline.feed_reading(r)

    def start(self) -> Gateway:
        self.client.start()
        wait_for(lambda: self.client.connected, 10, "the client to connect")
        return self

    def stop(self) -> None:
        """Like a killed daemon: the open quarter-hour is not flushed."""
        self.client.close()
        self.client.join(10)

    def closed(self, meter: str = "home") -> list[QuarterHour]:
        return self.store.quarter_hours(meter)


def p1_quarter_hours(frames: list[bytes], tmp: Path, meter_id: str = "home") -> dict[datetime, QuarterHour]:
    """What a P1 source reading the same house would have committed."""
    store = Store(tmp / "p1.sqlite")
    pipeline = Pipeline(store, meter_id=meter_id, batch=True)
    for f in list(frames):
        pipeline.feed_telegram(parse_telegram(f))
    pipeline.flush()
    out = {q.start: q for q in store.quarter_hours(meter_id)}
    store.close()
    return out


def assert_ledger(qhs: list[QuarterHour], label: str) -> None:
    starts = [q.start for q in qhs]
    assert starts == [starts[0] + i * QUARTER for i in range(len(starts))], f"[{label}] a quarter-hour lost or twice"
    assert all(q.import_wh >= 0 and q.export_wh >= 0 for q in qhs)


def compare(qhs: list[QuarterHour], p1: dict[datetime, QuarterHour]) -> list[datetime]:
    """Starts of the Flukso quarter-hours whose energies differ from the P1 ones."""
    return [q.start for q in qhs if (q.import_wh, q.export_wh) != (p1[q.start].import_wh, p1[q.start].export_wh)]


# -- to the Wh, as a P1 source ----------------------------------------------------------------------


def test_flm02_net_counter_and_pv_clamp_give_the_p1_quarter_hours_to_the_wh(tmp_path, mosquitto):
    frames: list[bytes] = []
    emu = emulator(mosquitto, frames, firmware="flm02", start_time=SUNRISE, speed=900)
    gw = Gateway(tmp_path, mosquitto, emu).start()
    try:
        emu.start()
        wait_for(lambda: len(gw.closed()) >= 4 and len(gw.closed("home-pv")) >= 4, 30, "four quarter-hours")
        emu.stop()
    finally:
        emu.close()
        gw.stop()
    home, pv = gw.closed(), gw.closed("home-pv")
    p1 = p1_quarter_hours(frames, tmp_path)
    assert_ledger(home, "flm02")
    differ = compare(home, p1)
    pv_truth = [emu.truth[int(q.end.timestamp())].production_wh - emu.truth[int(q.start.timestamp())].production_wh for q in pv]
    print(f"\n[flm02] quarter-hours={len(home)} import_wh={[q.import_wh for q in home]} export_wh={[q.export_wh for q in home]} "
          f"p1_differ={len(differ)} quality={dict(Counter(q.quality.value for q in home))} messages={gw.client.stats['messages']} "
          f"published={emu.published} production_wh={[q.export_wh for q in pv]}")
    assert differ == []
    assert any(q.import_wh > 0 and q.export_wh > 0 for q in home), "the net counter both rose and fell in one quarter-hour"
    assert [q.export_wh for q in pv] == pv_truth and all(q.import_wh == 0 for q in pv)
    assert all(q.source == "flukso" for q in home + pv)
    assert sum(gw.client.stats[k] for k in ("malformed", "unknown_unit", "backwards", "future")) == 0


def test_a_restart_resumes_the_net_split_from_the_store_without_counting_twice(tmp_path, mosquitto):
    frames: list[bytes] = []
    emu = emulator(mosquitto, frames, firmware="flm02", start_time=SUNRISE, speed=900)
    gw1 = Gateway(tmp_path, mosquitto, emu).start()
    try:
        emu.start()
        wait_for(lambda: len(gw1.closed()) >= 2, 30, "two quarter-hours before the crash")
        gw1.stop()  # killed: its open quarter-hour and the split it held are gone
        crashed_at = gw1.readings[-1].time
        gw1.store.close()
        time.sleep(0.6)  # about nine simulated minutes without a gateway
        gw2 = Gateway(tmp_path, mosquitto, emu).start()
        wait_for(lambda: len(gw2.closed()) >= 5, 30, "three quarter-hours after the restart")
        emu.stop()
    finally:
        emu.close()
        gw1.stop()
        gw2.stop()
    qhs = gw2.closed()
    resumed_at = gw2.readings[0].time
    p1 = p1_quarter_hours(frames, tmp_path)
    assert_ledger(qhs, "restart")
    assert gw2.store.conflicts() == []
    outside = [q for q in qhs if q.end <= crashed_at or q.start >= resumed_at]
    across = [q for q in qhs if q not in outside and q.start < resumed_at]
    span = [q for q in qhs if q.end <= max(q2.end for q2 in across)] if across else []
    print(f"\n[restart] crashed_at={crashed_at.time()} resumed_at={resumed_at.time()} quarter-hours={len(qhs)} "
          f"across_gap={[(q.start.time().isoformat(), q.import_wh, q.export_wh, p1[q.start].import_wh, p1[q.start].export_wh) for q in across]}")
    assert compare(outside, p1) == []
    assert across, "a quarter-hour overlaps the gap"
    # across the gap only the net change is known: conserved exactly, never more than the P1 energies
    assert sum(q.import_wh - q.export_wh for q in span) == sum(p1[q.start].import_wh - p1[q.start].export_wh for q in span)
    assert sum(q.import_wh for q in span) <= sum(p1[q.start].import_wh for q in span)
    assert sum(q.export_wh for q in span) <= sum(p1[q.start].export_wh for q in span)


@pytest.mark.parametrize("qos", [0, 1])
def test_a_broker_restart_mid_test_loses_no_quarter_hour(tmp_path, mosquitto, qos):
    frames: list[bytes] = []
    emu = emulator(mosquitto, frames, firmware="flm03", start_time=LATE_MORNING, speed=900, qos=qos, gauge_interval_s=60)
    gw = Gateway(tmp_path, mosquitto, emu).start()
    try:
        emu.start()
        wait_for(lambda: len(gw.closed()) >= 2, 30, "two quarter-hours before the broker restart")
        mosquitto.stop()
        time.sleep(1.2)  # eighteen simulated minutes without a broker: a boundary passes in the dark
        mosquitto.start()
        n = len(gw.closed())
        wait_for(lambda: len(gw.closed()) >= n + 3, 30, "three quarter-hours after the broker restart")
        emu.stop()
    finally:
        emu.close()
        gw.stop()
    qhs = gw.closed()
    p1 = p1_quarter_hours(frames, tmp_path)
    assert_ledger(qhs, f"broker restart qos{qos}")
    first, last = int(qhs[0].start.timestamp()), int(qhs[-1].end.timestamp())
    measured = [q for q in qhs if q.quality is Quality.MEASURED]
    print(f"\n[broker restart, QoS {qos}] quarter-hours={len(qhs)} quality={dict(Counter(q.quality.value for q in qhs))} "
          f"reconnects={gw.client.reconnects} lost_while_down={emu.dropped} p1_differ={len(compare(qhs, p1))} "
          f"stale={gw.client.stats['stale']} duplicate={gw.client.stats['duplicate']} late={gw.client.assembler.counts['late']}")
    assert gw.client.reconnects >= 1
    # FLM03 counters come on the minute: a boundary outside the outage is a counter sample, so the
    # quarter-hours whose two boundaries were seen are measured, and the P1 ones to the Wh
    seen = {r.time for r in gw.readings if r.meter_id == "home"}
    lit = [q for q in qhs if q.start in seen and q.end in seen]
    assert lit == measured and compare(measured, p1) == [] and len(measured) >= 2
    if qos == 0:  # the firmware's QoS 0: what was published into the outage is lost, the boundary estimated
        assert emu.dropped > 0 and any(q.quality is Quality.ESTIMATED for q in qhs)
    assert sum(q.import_wh for q in qhs) == emu.truth[last].import_wh - emu.truth[first].import_wh
    assert sum(q.export_wh for q in qhs) == emu.truth[last].export_wh - emu.truth[first].export_wh
    if qos == 1:  # queued by the publisher and by the broker for our persistent session: nothing lost
        assert compare(qhs, p1) == [] and emu.dropped == 0


# -- bad input, stale values ------------------------------------------------------------------------


def test_bad_input_is_counted_logged_once_with_topic_and_payload_and_skipped(tmp_path, mosquitto, caplog):
    caplog.set_level(logging.INFO, logger="quartier.flukso")
    house = MeterSimulator(LATE_MORNING, seed=1, import_wh=(1_234_567, 765_432), export_wh=(345_678, 12))
    emu = emulator(mosquitto, firmware="flm03", simulator=house, counter_interval_s=10)
    gw = Gateway(tmp_path, mosquitto, emu, policy=TimePolicy(clock="pi"),
                 now=lambda: emu.sim_time + timedelta(seconds=1)).start()  # the emulator's clock is the Pi's

    def run(seconds: int) -> None:
        emu.run_until(emu.sim_time + timedelta(seconds=seconds))
        settle(gw.client)

    try:
        run(120)
        plus = emu.sensors["pplus"].sensor_id
        ts = int(emu.sim_time.timestamp())
        bad = [
            (f"/sensor/{plus}/counter", b"not json"),
            (f"/sensor/{plus}/gauge", f'[{ts}, "12.5", "W"]'.encode()),
            (f"/sensor/{plus}/counter", f'[{ts}, 12.000, "kWh"]'.encode()),
            (f"/sensor/{plus}/counter", f'[{ts}, 1999.000, "Wh"]'.encode()),  # backwards
            (f"/sensor/{plus}/counter", f'[{ts + 3600}, 99999.000, "Wh"]'.encode()),  # an hour in the future
        ] + [(f"/sensor/{plus}/gauge", b"[1,2") for _ in range(12)]  # a sensor repeating garbage
        for topic, payload in bad:
            emu.publish_raw(topic, payload)
        run(120)
        emu.close()
    finally:
        emu.close()
        gw.stop()
    stats = gw.client.stats
    lines = [r for r in caplog.records if r.getMessage() == "flukso.bad_input"]
    print(f"\n[bad input] stats={ {k: stats[k] for k in ('malformed', 'unknown_unit', 'backwards', 'future', 'readings')} } "
          f"log_lines={len(lines)}")
    assert (stats["malformed"], stats["unknown_unit"], stats["backwards"], stats["future"]) == (14, 1, 1, 1)
    for topic, payload in bad[:5]:
        assert any(r.topic == topic and r.payload == payload.decode() for r in lines), payload
    garbage = [r for r in lines if r.payload == "[1,2"]
    assert len(garbage) == 2 and garbage[1].repeats == 10  # once, then only at 10, 100, ... repeats
    # the client went on: readings continued past the bad input, none from the future
    times = [r.time for r in gw.readings if r.meter_id == "home"]
    assert max(times) >= emu.sim_time - timedelta(seconds=15) and max(times) <= emu.sim_time
    assert all(1_999_999 <= r.import_wh["0"] < 2_010_000 for r in gw.readings if r.meter_id == "home")


def test_stale_retained_values_are_recognised_not_taken_as_live(tmp_path, mosquitto, caplog):
    caplog.set_level(logging.INFO, logger="quartier.flukso")
    emu = emulator(mosquitto, firmware="flm02", start_time=SUNRISE)
    emu.run_until(SUNRISE + timedelta(seconds=60))  # FLM02 leaves its last values retained ...
    time.sleep(0.3)
    later = SUNRISE + timedelta(hours=1)  # ... and goes quiet for an hour before the gateway starts
    gw = Gateway(tmp_path, mosquitto, emu, policy=TimePolicy(clock="pi"),
                 now=lambda: max(later, emu.sim_time) + timedelta(seconds=1)).start()
    try:
        wait_for(lambda: gw.client.stats["stale"] >= 4, 10, "the retained values to arrive")
        assert gw.readings == []
        emu.skip_to(later)
        emu.run_until(later + timedelta(seconds=30))
        wait_for(lambda: any(r.meter_id == "home" for r in gw.readings), 10, "live readings")
    finally:
        emu.close()
        gw.stop()
    stale_lines = [r for r in caplog.records if r.getMessage() == "flukso.stale_sample"]
    print(f"\n[stale] stale={gw.client.stats['stale']} log_lines={len(stale_lines)} first_live={gw.readings[0].time}")
    assert min(r.time for r in gw.readings) >= later
    assert len(stale_lines) == 2  # once per sensor (net, solar)


# -- the commands -----------------------------------------------------------------------------------


def test_emulate_and_listen_commands(tmp_path, mosquitto):
    broker = f"{mosquitto.host}:{mosquitto.port}"
    emulate = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "flukso", "emulate", "--broker", broker, "--firmware", "flm03",
         "--speed", "60", "--counter-interval", "5", "--duration", "3", "--meter-id", "flat"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        listen = subprocess.run([sys.executable, "-m", "gateway.cli", "flukso", "listen", "--broker", broker,
                                 "--seconds", "1.2", "--json"], capture_output=True, text=True, timeout=30)
        out, err = emulate.communicate(timeout=30)
    finally:
        emulate.kill()
    assert emulate.returncode == 0, err
    assert listen.returncode == 0, listen.stderr
    report = json.loads(listen.stdout)
    by_subtype = {s["subtype"]: s for s in report["sensors"] if s["subtype"]}
    assert {"pplus", "pminus", "vrms"} <= set(by_subtype)
    assert by_subtype["pplus"]["gauge"]["unit"] == "W" and by_subtype["pplus"]["counter"]["unit"] == "Wh"
    assert by_subtype["pplus"]["gauge"]["used"] is True
    assert (by_subtype["vrms"]["gauge"]["unit"], by_subtype["vrms"]["gauge"]["used"]) == ("V", False)
    # the printed block is a working configuration
    cfg_path = tmp_path / "q.toml"
    cfg_path.write_text(out)
    src = load_config(cfg_path).sources[0]
    assert (src.type, src.meter_id, src.clock, src.port) == ("flukso", "flat", "sensor", mosquitto.port)
    assert {s.role for s in src.sensors} == {"grid_import", "grid_export", "production"}
    assert "messages published" in err

    bad = subprocess.run([sys.executable, "-m", "gateway.cli", "flukso", "listen", "--broker", "127.0.0.1:notaport"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "port 'notaport' is not a number" in bad.stderr and "Traceback" not in bad.stderr


def test_a_failing_consumer_never_ends_the_client():
    """``handle`` is what the paho callback runs: no broker needed to feed it."""
    sid = "ab" * 16
    taken: list[Reading] = []

    def consumer(r: Reading) -> None:
        if not taken:
            taken.append(r)
            raise RuntimeError("store locked")
        taken.append(r)

    client = FluksoClient(host="127.0.0.1", client_id="offline", assignments=[Assignment(sid, Role.GRID_NET, "m")],
                          on_reading=consumer, policy=TimePolicy(clock="sensor"), clock_synced=lambda: True)
    ts = 1782032400
    for i in range(4):
        client.handle(f"/sensor/{sid}/counter", f'[{ts + i},{100 + i},"Wh"]'.encode())
    client.handle(f"/sensor/{sid}/gauge", b"\xff\xfe")  # not even UTF-8
    client.handle(f"/sensor/{'cd' * 16}/gauge", f'[{ts},1,"W"]'.encode())  # not ours
    assert [r.import_wh["0"] for r in taken] == [100, 101, 102]
    assert (client.stats["sink_errors"], client.stats["malformed"], client.stats["ignored"]) == (1, 1, 1)

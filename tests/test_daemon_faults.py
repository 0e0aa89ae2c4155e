"""Fault tests of the real daemon: kill -9 in a loop, serial cable unplugged, corrupt telegrams at a
boundary, InfluxDB down. The meter is simulated on a pty, so the real pyserial path runs.

Each test prints its counts (run with -s, or see CI's -rA summary)."""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from gateway.model import Quality
from gateway.store import Store
from tests.daemon_harness import make_rig

UTC = timezone.utc
START = datetime(2026, 6, 21, 9, 0, tzinfo=UTC)  # a sunny summer morning: import and export both move


def closed(rig):
    store = Store(rig.db)
    try:
        return store.quarter_hours()
    finally:
        store.close()


def truth_at(rig, t):
    """The simulated meter's registers in the telegram it sent stamped exactly at ``t``."""
    for ts, imp, exp in rig.sent:
        if ts == t:
            return imp, exp
    return None


def check_ledger(rig, qhs, label):
    """No quarter-hour lost, none twice, energy conserved; measured ones equal the meter's truth."""
    starts = [q.start for q in qhs]
    dup = sum(n - 1 for n in Counter(starts).values())
    expected = [starts[0] + timedelta(minutes=15 * i) for i in range(len(starts))] if starts else []
    lost = len(set(expected) - set(starts))
    first = truth_at(rig, qhs[0].start)
    last_end = qhs[-1].end
    assert first is not None, "the first quarter-hour starts on a telegram stamped at its boundary"
    total_imp = sum(q.import_wh for q in qhs)
    total_exp = sum(q.export_wh for q in qhs)
    assert total_imp == sum(qhs[-1].end_import_register.values()) - first[0]
    assert total_exp == sum(qhs[-1].end_export_register.values()) - first[1]
    end_truth = truth_at(rig, last_end)
    if end_truth is not None and qhs[-1].quality is Quality.MEASURED:
        assert (total_imp, total_exp) == (end_truth[0] - first[0], end_truth[1] - first[1])
    mismatched = 0
    for q in qhs:
        if q.quality is Quality.MEASURED:
            a, b = truth_at(rig, q.start), truth_at(rig, q.end)
            if a and b and (q.import_wh, q.export_wh) != (b[0] - a[0], b[1] - a[1]):
                mismatched += 1
    qual = Counter(q.quality.value for q in qhs)
    print(f"\n[{label}] quarter-hours={len(qhs)} lost={lost} duplicated={dup} measured_mismatch={mismatched} "
          f"quality={dict(qual)} import_wh={total_imp} export_wh={total_exp}")
    assert (lost, dup, mismatched) == (0, 0, 0)
    assert all(q.import_wh >= 0 and q.export_wh >= 0 for q in qhs)
    return qual


@pytest.mark.slow
def test_kill_minus_9_fifty_times_loses_and_duplicates_nothing(tmp_path):
    rig = make_rig(tmp_path, start=START, speed=300)  # a quarter-hour every 3 s of real time
    rig.write_config()
    rng = random.Random(42)
    kills = 0
    try:
        # a first run establishes the baseline (a committed quarter-hour); every later start resumes from it
        rig.start_daemon()
        rig.wait_for(lambda: len(closed(rig)) >= 2, 60, "two quarter-hours before the first kill")
        rig.kill9()
        for _ in range(50):
            rig.start_daemon()
            time.sleep(rng.uniform(0.2, 2.5))
            rig.kill9()
            kills += 1
        rig.start_daemon()
        n0 = len(closed(rig))
        rig.wait_for(lambda: len(closed(rig)) >= n0 + 3, 60, "three more quarter-hours after the last kill")
        assert rig.stop() == 0
    finally:
        rig.meter.stop()
    qhs = closed(rig)
    print(f"\n[kill -9] kills={kills} simulated span={rig.sent[-1][0] - rig.sent[0][0]}")
    check_ledger(rig, qhs, "kill -9")
    assert len(qhs) >= 20


@pytest.mark.slow
def test_serial_cable_unplugged_and_back(tmp_path):
    rig = make_rig(tmp_path, start=START, speed=300)
    rig.write_config()
    try:
        rig.start_daemon()
        rig.wait_for(lambda: len(closed(rig)) >= 2, 60, "two quarter-hours")
        rig.meter.unplug()
        time.sleep(7)  # 35 simulated minutes without a cable
        rig.meter.replug()
        n = len(closed(rig))
        rig.wait_for(lambda: len(closed(rig)) >= n + 4, 60, "quarter-hours after the cable is back")
        assert rig.stop() == 0
    finally:
        rig.meter.stop()
    log = rig.log()
    assert "serial.disconnected" in log and "serial.reconnected" in log
    qual = check_ledger(rig, closed(rig), "unplugged")
    assert qual["estimated"] >= 2  # the gap is said to be estimated


@pytest.mark.slow
def test_corrupt_telegram_at_a_boundary_is_counted_and_skipped(tmp_path):
    rig = make_rig(tmp_path, start=START, speed=120)
    rig.write_config()
    sim = rig.meter.simulator
    try:
        rig.start_daemon()
        rig.wait_for(lambda: len(closed(rig)) >= 1, 60, "a first quarter-hour")
        # corrupt the telegrams around the next boundaries
        for _ in range(3):
            nxt = rig.meter.sim_time
            boundary = nxt.replace(minute=nxt.minute - nxt.minute % 15, second=0, microsecond=0) + timedelta(minutes=15)
            while rig.meter.sim_time < boundary - timedelta(seconds=20):
                time.sleep(0.02)
            # every telegram from here to 20 s past the boundary is damaged, the boundary's included
            sim.corrupt_next(40 // rig.meter.step_s + 1)
            while rig.meter.sim_time < boundary + timedelta(seconds=20):
                time.sleep(0.02)
        n = len(closed(rig))
        rig.wait_for(lambda: len(closed(rig)) >= n + 1, 60, "one more quarter-hour")
        health = rig.health()
        assert rig.stop() == 0
    finally:
        rig.meter.stop()
    crc_errors = sum(m["crc_errors"] for m in health["meters"].values())
    qhs = closed(rig)
    qual = check_ledger(rig, qhs, "corrupt at boundary")
    print(f"[corrupt at boundary] crc_errors={crc_errors}")
    assert crc_errors >= 3 * 3  # several damaged telegrams around each of three boundaries, each counted
    assert qual["interpolated"] >= 3  # those boundaries were interpolated around the damaged telegrams


@pytest.mark.slow
def test_systemd_watchdog_fed_only_while_telegrams_arrive(tmp_path):
    rig = make_rig(tmp_path, start=START, speed=60)
    rig.write_config(extra_daemon="watchdog_max_telegram_age_s = 2")
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    messages: list[tuple[float, str]] = []

    def drain(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                messages.append((time.monotonic(), sock.recv(4096).decode()))
            except socket.timeout:
                pass

    try:
        rig.start_daemon(env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "1000000"})
        drain(4)
        assert any("READY=1" in m for _, m in messages)
        fed_before = sum("WATCHDOG=1" in m for _, m in messages)
        rig.meter.unplug()
        drain(3)  # the last telegram ages past 2 s (feeding may go on until then)
        mark = len(messages)
        drain(3)
        fed_while_silent = sum("WATCHDOG=1" in m for _, m in messages[mark:])
        rig.meter.replug()
        mark = len(messages)
        drain(5)
        fed_after = sum("WATCHDOG=1" in m for _, m in messages[mark:])
        rig.stop()
        drain(0.5)
    finally:
        rig.meter.stop()
        sock.close()
    print(f"\n[watchdog] fed_before={fed_before} fed_while_silent={fed_while_silent} fed_after_replug={fed_after}")
    assert fed_before >= 3 and fed_while_silent == 0 and fed_after >= 2
    assert any("STOPPING=1" in m for _, m in messages)


@pytest.mark.slow
def test_database_down_for_an_hour_then_backlog_arrives_once_and_in_order(tmp_path, victoria_metrics):
    vm = victoria_metrics
    rig = make_rig(tmp_path, start=START, speed=300)
    rig.write_config(influx={"url": vm.url, "org": "community", "bucket": "quartier", "backoff_max_s": 1})
    env = {"QUARTIER_INFLUX__TOKEN": "test-token"}
    try:
        rig.start_daemon(env=env)
        rig.wait_for(lambda: len(closed(rig)) >= 2, 60, "two quarter-hours pushed")
        vm.stop()
        down_at = len(closed(rig))
        # an hour and a half of meter time (18 s at 300x) with the database unreachable
        rig.wait_for(lambda: len(closed(rig)) >= down_at + 6, 60, "six quarter-hours during the outage")
        rig.kill9()  # and the gateway itself dies with a backlog in its outbox
        rig.start_daemon(env=env)
        vm.start()
        n = len(closed(rig))
        rig.wait_for(lambda: len(closed(rig)) >= n + 2, 60, "two more quarter-hours after the outage")

        def drained():
            from gateway.store import Store

            s = Store(rig.db)
            try:
                return s.outbox_depth() == 0
            finally:
                s.close()

        rig.wait_for(drained, 60, "the outbox to drain")
        assert rig.stop() == 0
    finally:
        rig.meter.stop()
    qhs = closed(rig)
    check_ledger(rig, qhs, "influx outage")
    vm.flush()
    points = vm.query_points("quarter_hour_import_wh")
    by_start = Counter(p.timestamp_s for p in points)
    stored = {int(q.start.timestamp()): q for q in qhs}
    lost = [t for t in stored if t not in by_start]
    duplicated = [t for t, c in by_start.items() if c > 1]
    wrong = [p.timestamp_s for p in points if p.timestamp_s in stored and p.value != stored[p.timestamp_s].import_wh]
    print(f"[influx outage] committed={len(stored)} in_database={len(by_start)} lost={len(lost)} "
          f"duplicated={len(duplicated)} wrong_value={len(wrong)} outage_quarter_hours>=6")
    assert (lost, duplicated, wrong) == ([], [], [])
    assert set(by_start) == set(stored)

"""The gateway's command-line contract: replay a capture, export quarter-hours, status."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from gateway.model import QUARTER, Quality, QuarterHour
from demo.meter import MeterSimulator
from gateway.store import Store

UTC = timezone.utc
START = datetime(2026, 6, 21, 10, 0, tzinfo=UTC)


def quartier(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], input=stdin, capture_output=True)


def capture(tmp_path, *, seconds: int = 3600, step: int = 10, gap: tuple[int, int] | None = None, corrupt_at: int | None = None):
    """A raw P1 byte stream from the simulated meter, with optional garbage, gap and damaged telegram."""
    sim = MeterSimulator(start=START, seed=5)
    truth = {}
    out = bytearray(b"\x00garbage before the first telegram\r\n")
    for s in range(0, seconds + 1, step):
        t = START + timedelta(seconds=s)
        if corrupt_at is not None and s == corrupt_at:
            sim.corrupt_next()
        frame = sim.telegram_at(t)
        truth[t] = (sum(sim.import_wh), sum(sim.export_wh))
        if gap and gap[0] <= s < gap[1]:
            continue  # the cable was out: the meter kept counting, nobody read
        out += frame
    path = tmp_path / "capture.p1"
    path.write_bytes(bytes(out))
    return path, truth, sim.meter_id


def export(db, *extra) -> list[dict]:
    r = quartier("export", "quarter-hours", "--db", str(db), *extra)
    assert r.returncode == 0, r.stderr.decode()
    return [json.loads(line) for line in r.stdout.decode().splitlines()]


def test_replay_then_export_gives_register_differences(tmp_path):
    path, truth, meter_id = capture(tmp_path)
    db = tmp_path / "s.sqlite"
    r = quartier("replay", str(path), "--db", str(db))
    assert r.returncode == 0, r.stderr.decode()
    summary = json.loads(r.stderr.decode().strip().splitlines()[-1])
    assert summary["telegrams"] == 361 and summary["crc_errors"] == 0 and summary["quarter_hours"] == 4
    rows = export(db)
    assert len(rows) == 4
    for row in rows:
        assert set(row) >= {"meter_id", "start", "end", "import_wh", "export_wh", "quality"}
        start = datetime.fromisoformat(row["start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(row["end"].replace("Z", "+00:00"))
        assert end - start == QUARTER and row["start"].endswith("Z")
        assert row["meter_id"] == meter_id and row["quality"] == "measured"
        assert row["import_wh"] == truth[end][0] - truth[start][0]
        assert row["export_wh"] == truth[end][1] - truth[start][1]
        assert row["import_wh"] == sum(v for k, v in row.items() if k.startswith("import_t"))


def test_replaying_the_same_capture_twice_counts_nothing_twice(tmp_path):
    path, _, _ = capture(tmp_path)
    db = tmp_path / "s.sqlite"
    assert quartier("replay", str(path), "--db", str(db)).returncode == 0
    first = export(db)
    assert quartier("replay", str(path), "--db", str(db)).returncode == 0
    assert export(db) == first


def test_gap_and_corrupt_telegram_are_estimated_and_counted(tmp_path):
    # cable out from 10:20 to 10:50; a damaged telegram exactly on the 11:00 boundary
    path, truth, _ = capture(tmp_path, seconds=4500, gap=(1200, 3000), corrupt_at=3600)
    db = tmp_path / "s.sqlite"
    r = quartier("replay", str(path), "--db", str(db))
    summary = json.loads(r.stderr.decode().strip().splitlines()[-1])
    assert summary["crc_errors"] == 1
    rows = export(db)
    assert [row["quality"] for row in rows] == ["measured", "estimated", "estimated", "estimated", "interpolated"]
    first = datetime.fromisoformat(rows[0]["start"].replace("Z", "+00:00"))
    last = datetime.fromisoformat(rows[-1]["end"].replace("Z", "+00:00"))
    assert sum(row["import_wh"] for row in rows) == truth[last][0] - truth[first][0]
    assert sum(row["export_wh"] for row in rows) == truth[last][1] - truth[first][1]


def test_export_csv_and_time_filter(tmp_path):
    path, _, _ = capture(tmp_path)
    db = tmp_path / "s.sqlite"
    quartier("replay", str(path), "--db", str(db))
    r = quartier("export", "quarter-hours", "--db", str(db), "--format", "csv", "--from", "2026-06-21T10:15:00Z", "--to", "2026-06-21T10:45:00Z")
    rows = list(csv.DictReader(io.StringIO(r.stdout.decode())))
    assert [row["start"] for row in rows] == ["2026-06-21T10:15:00Z", "2026-06-21T10:30:00Z"]
    assert rows[0]["quality"] == "measured" and int(rows[0]["import_wh"]) >= 0


def test_user_errors_are_one_line_without_traceback(tmp_path):
    r = quartier("export", "quarter-hours", "--db", str(tmp_path / "none.sqlite"))
    assert r.returncode == 2 and b"no such store" in r.stderr and b"Traceback" not in r.stderr
    path, _, _ = capture(tmp_path, seconds=60)
    quartier("replay", str(path), "--db", str(tmp_path / "s.sqlite"))
    r = quartier("export", "quarter-hours", "--db", str(tmp_path / "s.sqlite"), "--from", "yesterday")
    assert r.returncode == 2 and b"--from 'yesterday': not an ISO 8601" in r.stderr
    for flag, value in (("--from", "0001-01-01T00:00:00+01:00"), ("--to", "9999-12-31T23:59:59-05:00")):  # issue 13
        r = quartier("export", "quarter-hours", "--db", str(tmp_path / "s.sqlite"), flag, value)
        assert r.returncode == 2 and f"{flag}: {value} is out of range".encode() in r.stderr, r.stderr
        assert b"Traceback" not in r.stderr and b"internal error" not in r.stderr
    r = quartier("replay", str(tmp_path / "missing.p1"), "--db", str(tmp_path / "x.sqlite"))
    assert r.returncode == 2 and b"cannot read" in r.stderr and b"Traceback" not in r.stderr


def test_status_shows_outbox_and_dead_letters(tmp_path):
    db = tmp_path / "s.sqlite"
    store = Store(db, sinks=["influx"])
    qhs = [QuarterHour("M1", START + i * QUARTER, 10 * i, 0, Quality.MEASURED, {"1": 10 * i}, {"1": 0},
                       {"1": 100 + 10 * i}, {"1": 0}) for i in range(3)]
    store.commit_quarter_hours(qhs)
    (first_id, _), *_ = store.outbox_peek("influx", 1)
    store.dead_letter("influx", [first_id], "HTTP 400: field type conflict")
    store.close()
    r = quartier("status", "--db", str(db))
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "quarter-hours  3 closed" in out and "outbox         2 waiting" in out
    assert "dead letters   1" in out and "field type conflict" in out
    j = json.loads(quartier("status", "--db", str(db), "--json").stdout)
    assert j["outbox_depth"] == 2 and len(j["dead_letters"]) == 1


# -- the command's own contract (issue 17) ---------------------------------------------------------


def test_version_and_a_bare_quartier_prints_the_help_on_stdout():
    from importlib.metadata import version

    r = quartier("--version")
    assert r.returncode == 0 and r.stdout.decode().strip() == f"quartier {version('quartier')}"
    bare = quartier()
    assert bare.returncode == 0, bare.stderr.decode()
    out = bare.stdout.decode()
    assert out.startswith("usage: quartier") and "run" in out and "doctor" in out and bare.stderr == b""
    # an empty or misspelt command is still a usage error
    assert quartier("").returncode == 2 and quartier("rnu").returncode == 2


def test_the_command_table_names_what_each_module_registers():
    """gateway.cli imports only the module that owns the command typed: its table must be exact."""
    import argparse
    import importlib

    from gateway.cli import COMMANDS

    for name, commands in COMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(name).register(sub)
        assert tuple(sub.choices) == commands, name


def test_the_daemon_and_the_web_service_load_no_other_command_s_modules():
    """The long-running services keep for their lifetime only what they run (issue 17's memory budget)."""
    code = ("import sys; from gateway.cli import build_parser; build_parser(sys.argv[1:]); "
            "print(' '.join(m for m in sys.modules if m.startswith(('services', 'demo', 'gateway.doctor', 'flukso'))))")
    for argv, allowed in ((["--log-level", "INFO", "run", "--config", "x"], set()),
                          (["web", "--config", "x"], {"services", "services.cli"})):
        r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, check=True)
        assert set(r.stdout.decode().split()) == allowed, argv


def test_a_configuration_error_exits_78_for_every_service(tmp_path):
    """EX_CONFIG: the units carry RestartPreventExitStatus=78, so a bad file is not restarted for ever."""
    bad = tmp_path / "quartier.toml"
    bad.write_text('[daemon]\ntimezone = "Europe/Brussels"\nbogus_key = 1\n')
    for args in (("run", "--config", str(bad)), ("web", "--config", str(bad)), ("config", "check", str(bad)),
                 ("light", "--config", str(bad), "--mock"), ("status", "--config", str(bad)),
                 ("run", "--config", str(tmp_path / "missing.toml"))):
        r = quartier(*args)
        assert r.returncode == 78, (args, r.returncode, r.stderr.decode())
        err = r.stderr.decode()
        assert "Traceback" not in err and ("bogus_key" in err or "file not found" in err), err
    # a usage error is not a configuration error
    assert quartier("run").returncode == 2


def _wait_for(predicate, timeout: float, what: str):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_demo_stops_on_sigterm_and_status_tells_a_stopped_daemon_from_a_live_one(tmp_path):
    """Issue 17: `quartier demo --duration N` waited N seconds after SIGTERM; `quartier status` showed a
    stopped daemon as live ("last telegram 0.0 s ago") from the health file left in the runtime dir."""
    import os
    import signal
    import time

    from demo.cli import free_port

    d = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "demo", "--dir", str(d), "--duration", "300",
                             "--port", str(free_port("127.0.0.1")), "--speed", "60"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def live_health():
            try:
                h = json.loads((d / "health.json").read_text())
            except (OSError, ValueError):
                return None
            return h if h.get("last_telegram_age_s") is not None else None

        _wait_for(live_health, 60, "the demo's first telegram in health.json")
        status = ["status", "--db", str(d / "quartier.sqlite"), "--runtime-dir", str(d)]
        running = quartier(*status)
        assert running.returncode == 0, running.stderr.decode()
        assert f"daemon         RUNNING: process {proc.pid}" in running.stdout.decode()
        assert json.loads(quartier(*status, "--json").stdout)["daemon_state"]["state"] == "running"

        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.stderr.read().decode()
        assert time.monotonic() - t0 < 15  # not the 300 s of --duration
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(1.5)
    stopped = quartier(*status).stdout.decode()
    assert f"daemon         STOPPED: process {proc.pid} stopped cleanly" in stopped, stopped
    # the ages count from now, not from the last health file: never "0 s ago" for a stopped daemon
    line = next(ln for ln in stopped.splitlines() if ln.startswith("last telegram"))
    assert int(line.split()[2]) >= 1, line
    state = json.loads(quartier(*status, "--json").stdout)["daemon_state"]
    assert state["state"] == "stopped" and state["pid_alive"] is False

    # a daemon killed with SIGKILL leaves a health file that still says "running": its pid tells
    health = json.loads((d / "health.json").read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (d / "health.json").write_text(json.dumps({**health, "state": "running", "pid": dead.pid}))
    gone = quartier(*status).stdout.decode()
    assert f"STOPPED: process {dead.pid} is gone (crashed or killed)" in gone, gone
    # a live process whose health file is old: stuck (the watchdog would restart it under systemd)
    old = {**health, "state": "running", "pid": os.getpid(), "time": "2026-01-01T00:00:00Z"}
    (d / "health.json").write_text(json.dumps(old))
    assert "daemon         STUCK: process" in quartier(*status).stdout.decode()

"""The web service next to the real daemon: whatever happens to it (killed, frozen, restarted),
metering loses no reading. Both run as real processes; the meter is simulated on a pty."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime

from gateway.model import Quality
from gateway.store import Store
from tests.daemon_harness import make_rig
from tests.servers import free_port

START = datetime(2026, 6, 21, 9, 0, tzinfo=UTC)  # a summer morning: import and export both move


def _web(rig, port: int) -> subprocess.Popen:
    log = open(rig.tmp / f"web-{time.monotonic_ns()}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "web", "--config", str(rig.config), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _get(port: int, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def _telegrams(rig) -> int:
    h = rig.health() or {}
    return sum(m["telegrams"] for m in h.get("meters", {}).values())


def _committed(rig) -> list:
    store = Store(rig.db)
    try:
        return store.quarter_hours()
    finally:
        store.close()


def test_killing_or_freezing_the_web_service_loses_no_reading(tmp_path):
    rig = make_rig(tmp_path, start=START, speed=300)  # 20 telegrams/s, a quarter-hour every 3 s
    rig.write_config()
    port = free_port()
    rig.start_daemon()
    web = _web(rig, port)
    try:
        rig.wait_for(lambda: (_get(port, "/api/v1/health") or {}).get("status") == "ok", 30, "the web service live")
        live = _get(port, "/api/v1/live")
        assert live["gateway"]["connected"] and live["power"] is not None
        dropped_before, written_before = rig.meter.dropped, rig.meter.written

        # killed outright: the daemon notices a closed subscriber, nothing else
        web.send_signal(signal.SIGKILL)
        web.wait(10)
        before = _telegrams(rig)
        rig.wait_for(lambda: _telegrams(rig) >= before + 60, 30, "telegrams while the web service is dead")

        # frozen (a stuck process that never reads its socket): metering goes on regardless
        web = _web(rig, port)
        rig.wait_for(lambda: (_get(port, "/api/v1/health") or {}).get("status") == "ok", 30, "the web service again")
        os.kill(web.pid, signal.SIGSTOP)
        before = _telegrams(rig)
        n_qh = len(_committed(rig))
        rig.wait_for(lambda: _telegrams(rig) >= before + 100 and len(_committed(rig)) >= n_qh + 2, 60,
                     "telegrams and a quarter-hour while the web service is frozen")
        os.kill(web.pid, signal.SIGCONT)
        rig.wait_for(lambda: (_get(port, "/api/v1/health") or {}).get("status") == "ok", 30, "the web service thawed")
        health = rig.health()
        assert health["live"]["connections"] >= 2

        web.send_signal(signal.SIGTERM)
        assert web.wait(15) == 0
        # the meter never had to drop a telegram: the daemon read every one, whatever the web service did
        assert rig.meter.dropped == dropped_before and rig.meter.written > written_before + 160
        assert rig.stop() == 0
    finally:
        for p in (web, rig.proc):
            if p is not None and p.poll() is None:
                p.kill()
        rig.meter.stop()

    # the ledger: every quarter-hour once, contiguous, energy equal to the register difference
    qhs = _committed(rig)
    assert len(qhs) >= 2
    starts = [q.start for q in qhs]
    assert starts == sorted(set(starts))
    assert all((b - a).total_seconds() == 900 for a, b in zip(starts, starts[1:], strict=False))
    assert all(q.quality is not Quality.ESTIMATED for q in qhs)
    for a, b in zip(qhs, qhs[1:], strict=False):
        imp = sum(b.end_import_register.values()) - sum(a.end_import_register.values())
        exp = sum(b.end_export_register.values()) - sum(a.end_export_register.values())
        assert (b.import_wh, b.export_wh) == (imp, exp)
    h = rig.health()
    assert sum(m["crc_errors"] + m["rejected"] for m in h["meters"].values()) == 0


def test_health_shows_what_the_daemon_refused_by_reason(tmp_path):
    """Glitch telegrams through the real daemon reach the real web service's ``/api/v1/health``,
    counted for the one meter under their reasons (no phantom meter)."""
    rig = make_rig(tmp_path, start=START, speed=120, import_wh=(5_123_456, 3_000_000), export_wh=(1_234_567, 456_789))
    rig.write_config()
    port = free_port()
    rig.start_daemon()
    web = _web(rig, port)
    try:
        rig.wait_for(lambda: (_get(port, "/api/v1/health") or {}).get("status") == "ok", 30, "the web service live")
        for kind in ("no_crc", "zero"):
            rig.glitches.append(kind)
            n = len(rig.sent)
            rig.wait_for(lambda: len(rig.sent) >= n + 6, 30, "honest telegrams after the glitch")

        def refused() -> dict:
            meters = ((_get(port, "/api/v1/health") or {}).get("metering") or {}).get("meters") or {}
            return next(iter(meters.values()))["refused"] if len(meters) == 1 else {}

        try:
            rig.wait_for(lambda: refused().get("no_crc") == 1 and refused().get("register_drop") == 1, 30,
                         "the refusals in /api/v1/health")
        except AssertionError:
            raise AssertionError(f"health: {_get(port, '/api/v1/health')} daemon: {rig.health()}") from None
    finally:
        web.terminate()
        web.wait(10)
        assert rig.stop() == 0
        rig.meter.stop()

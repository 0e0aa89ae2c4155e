"""Before/after figures for issue 13 (meter side): what one glitch telegram does to the metering.

Feeds an honest simulated e-MUCS stream (a telegram every 10 s) and the same stream with one glitch
telegram through ``gateway.pipeline.Pipeline`` into a real SQLite store, and prints, per glitch kind,
the energy and quarter-hours it added against the honest stream. With ``--daemon`` it also runs the
real ``quartier run`` daemon on a pty, sends one telegram stamped ten years ahead, and reports the
quarter-hours created and the daemon's RSS.

Runs against whatever ``gateway`` is first on PYTHONPATH (the base commit or this branch):
    PYTHONPATH=/path/to/tree python bench/glitch_attacks.py [--daemon]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # p1_glitches, after the tree under test

from gateway.pipeline import Pipeline  # noqa: E402
from demo.meter import MeterSimulator  # noqa: E402
from gateway.store import Store  # noqa: E402
from p1 import parse_telegram  # noqa: E402
from p1_glitches import KINDS, glitch  # noqa: E402

UTC = timezone.utc
START = datetime(2026, 6, 21, 6, 0, tzinfo=UTC)
STEP_S, N = 10, 6 * 60 * 4 + 1  # four hours


def frames() -> list[bytes]:
    sim = MeterSimulator(start=START, seed=3, import_wh=(5_123_456, 3_000_000), export_wh=(1_234_567, 456_789))
    return [sim.telegram_at(START + timedelta(seconds=STEP_S * i)) for i in range(N)]


def run(fs: list[bytes]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "q.sqlite")
        p = Pipeline(store, max_gap=timedelta(seconds=300), batch=True)
        for f in fs:
            p.feed_telegram(parse_telegram(f))
        p.flush()
        qhs = store.quarter_hours()
        store.close()
    return {"qhs": len(qhs), "import_wh": sum(q.import_wh for q in qhs), "export_wh": sum(q.export_wh for q in qhs),
            "not_measured": sum(q.quality.value != "measured" for q in qhs), "meters": sorted(p.health)}


def pipeline_figures() -> None:
    honest_frames = frames()
    honest = run(honest_frames)
    print(f"honest: {honest}")
    for kind in KINDS:
        fs = list(honest_frames)
        i = N // 2 + 7
        fs[i] = glitch(fs[i], kind)
        try:
            r = run(fs)
        except Exception as exc:  # the old code may fall over
            print(f"{kind:16s} crashed: {exc!r}")
            continue
        print(f"{kind:16s} +import_wh={r['import_wh'] - honest['import_wh']:>12,} +export_wh={r['export_wh'] - honest['export_wh']:>10,} "
              f"+qhs={r['qhs'] - honest['qhs']:>7,} not_measured={r['not_measured']:>7,} meters={r['meters']}")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def daemon_figures(kind: str) -> None:
    """The real daemon on a pty; one glitch telegram of ``kind`` once a quarter-hour has closed."""
    from demo.pty_meter import PtyMeter

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sim = MeterSimulator(start=START, seed=1, import_wh=(5_123_456, 3_000_000), export_wh=(1_234_567, 456_789))
        pending: list[str] = []
        inner = sim.telegram_at

        def telegram_at(t):
            f = inner(t)
            return glitch(f, pending.pop(0)) if pending else f

        sim.telegram_at = telegram_at
        meter = PtyMeter(sim, speed=60, link=tmp / "p1")
        meter.start()
        cfg = tmp / "q.toml"
        cfg.write_text(f'[[sources]]\ntype = "p1"\nport = "{meter.path}"\nbaudrate = 115200\n[store]\npath = "{tmp / "s.sqlite"}"\n'
                       f'[daemon]\nruntime_dir = "{tmp / "run"}"\nhealth_interval_s = 0.5\n')
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=open(tmp / "log", "wb"), env={**os.environ})
        try:
            def count():
                s = Store(tmp / "s.sqlite")
                try:
                    return s.count_quarter_hours()
                finally:
                    s.close()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (not (tmp / "s.sqlite").exists() or count() < 1):
                time.sleep(0.2)
            time.sleep(1)
            n0, rss0 = count(), rss_kb(proc.pid)
            pending.append(kind)
            t_glitch = time.monotonic()
            peak = rss0
            while time.monotonic() - t_glitch < 20:
                peak = max(peak, rss_kb(proc.pid) if proc.poll() is None else -1)
                time.sleep(0.2)
            n1 = count()
            health = json.loads((tmp / "run" / "health.json").read_text())
            s = Store(tmp / "s.sqlite")
            qhs = s.quarter_hours()
            s.close()
            honest_after = [q for q in qhs[n0:] if q.start < START + timedelta(days=1)]
            print(f"daemon {kind}: quarter-hours before={n0} after 20 s={n1} (+{n1 - n0}; honest ones among them: "
                  f"{len(honest_after)}), import_wh total={sum(q.import_wh for q in qhs):,}, rss_kb before={rss0} peak={peak}, "
                  f"last_accepted_or_telegram_age={health.get('last_accepted_age_s', health.get('last_telegram_age_s'))}, "
                  f"meters={ {m: v.get('refused', {'crc_errors': v['crc_errors'], 'rejected': v['rejected']}) for m, v in health['meters'].items()} }")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            meter.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--daemon", nargs="*", metavar="KIND", help="also through the real daemon (default kinds: ten_years_ahead flip_no_crc)")
    args = ap.parse_args()
    pipeline_figures()
    if args.daemon is not None:
        for kind in args.daemon or ["ten_years_ahead", "day_ahead", "flip_no_crc"]:
            daemon_figures(kind)

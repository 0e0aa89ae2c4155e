"""End-to-end cost of the metering path: CPU per 1,000 telegrams, and the daemon's peak RSS.

    python bench/pipeline.py [--telegrams 20000] [--rss-seconds 20]

1. Generates a capture of e-MUCS telegrams, one per simulated second, with the simulated meter.
2. Runs ``quartier replay`` on it in a child process (framing, CRC, OBIS decoding, readings,
   quarter-hours, SQLite commits) and reports the child's CPU-seconds per 1,000 telegrams, and what
   that means at one telegram per second (% of one core).
3. Runs ``quartier run`` with the InfluxDB sink enabled against a real VictoriaMetrics and a
   simulated meter on a pty, and reports the daemon's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_capture(path: Path, n: int) -> int:
    from demo.meter import MeterSimulator

    start = datetime(2026, 6, 21, 4, 0, tzinfo=timezone.utc)
    sim = MeterSimulator(start=start, seed=7)
    size = 0
    with path.open("wb") as fh:
        for i in range(n):
            frame = sim.telegram_at(start + timedelta(seconds=i))
            size += len(frame)
            fh.write(frame)
    return size


def child_cpu(cmd: list[str]) -> tuple[float, float, int]:
    """(cpu seconds, wall seconds, max RSS kB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr.read().decode()[-2000:]}")
    return ru.ru_utime + ru.ru_stime, wall, ru.ru_maxrss


def bench_replay(tmp: Path, n: int) -> None:
    cap = tmp / "capture.p1"
    size = make_capture(cap, n)
    quartier = [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING"]
    # the interpreter and imports alone, to separate the fixed start-up from the per-telegram cost
    base_cpu, _, _ = child_cpu(quartier + ["replay", "/dev/null", "--db", str(tmp / "empty.sqlite")])
    cpu, wall, rss = child_cpu(quartier + ["replay", str(cap), "--db", str(tmp / "replay.sqlite")])
    per_k = (cpu - base_cpu) / n * 1000
    print(f"replay: {n} telegrams ({size / 1e6:.1f} MB, {n // 900} quarter-hours) in {wall:.2f} s wall, "
          f"{cpu:.2f} CPU-s ({base_cpu:.2f} of it start-up), peak RSS {rss / 1024:.1f} MB")
    print(f"pipeline CPU per 1,000 telegrams: {per_k:.3f} CPU-s")
    print(f"at 1 telegram/s: {per_k / 1000 * 100:.3f} % of one core (target < 1 %)")


def bench_daemon_rss(tmp: Path, seconds: float) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from servers import VictoriaMetrics  # the same real server the tests start

    from demo.pty_meter import PtyMeter
    from demo.meter import MeterSimulator

    vm = VictoriaMetrics(tmp / "vm")
    vm.start()
    # 300x: a quarter-hour every 3 s, so the sink pushes several times during the measurement
    meter = PtyMeter(MeterSimulator(start=datetime(2026, 6, 21, 8, 0, tzinfo=timezone.utc), seed=3), speed=300, link=tmp / "p1")
    meter.start()
    cfg = tmp / "quartier.toml"
    cfg.write_text(
        f'[[sources]]\ntype="p1"\nport="{meter.path}"\nbaudrate=115200\n'
        f'[store]\npath="{tmp / "daemon.sqlite"}"\n'
        f'[influx]\nenabled=true\nurl="{vm.url}"\n'
        f'[daemon]\nruntime_dir="{tmp / "run"}"\n'
    )
    env = {**os.environ, "QUARTIER_INFLUX__TOKEN": "bench"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "run", "--config", str(cfg)],
                            env=env, stderr=subprocess.PIPE)
    try:
        time.sleep(seconds)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
        rss = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
        with open(f"/proc/{proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        daemon_cpu = (int(fields[11]) + int(fields[12])) / ticks
        vm.flush()
        pushed = len(vm.query_points("quarter_hour_import_wh"))
        print(f"daemon with InfluxDB sink, {seconds:.0f} s at 300x ({meter.step_s} simulated s per telegram, 20 telegrams/s):"
              f" peak RSS {int(hwm) / 1024:.1f} MB (now {int(rss) / 1024:.1f} MB, target <= 45 MB),"
              f" CPU {daemon_cpu:.2f} s incl. start-up, points in VictoriaMetrics: {pushed}")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        meter.stop()
        vm.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--telegrams", type=int, default=20000)
    ap.add_argument("--rss-seconds", type=float, default=20)
    ap.add_argument("--skip-daemon", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="quartier-bench-"))
    try:
        bench_replay(tmp, args.telegrams)
        if not args.skip_daemon:
            bench_daemon_rss(tmp, args.rss_seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

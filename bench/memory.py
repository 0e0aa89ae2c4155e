"""The node's memory budget: the daemon with the InfluxDB sink (quarter-hours and the live
measurement) <= 60 MB RSS, and the daemon + the web service (with the MQTT feed) <= 110 MB together.

    python bench/memory.py [--seconds 30] [--speed 60]

Starts a real VictoriaMetrics and a real Mosquitto (tests/servers.py), a simulated e-MUCS meter with
gas on a pty, ``quartier run`` with ``[influx] enabled, live_interval_s = 1`` and ``quartier web``
with ``[mqtt] enabled``, lets them run, then reads each process's peak (VmHWM) and current (VmRSS)
resident memory from /proc. Exits 1 when a budget is exceeded. Prints its figures.
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
sys.path.insert(0, str(ROOT / "tests"))

DAEMON_BUDGET_MB = 60
TOTAL_BUDGET_MB = 110


def _status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def run(seconds: float, speed: float) -> int:
    from servers import Mosquitto, VictoriaMetrics, free_port

    from demo.meter import MeterSimulator
    from demo.pty_meter import PtyMeter

    tmp = Path(tempfile.mkdtemp(prefix="qmem-"))
    vm = VictoriaMetrics(tmp / "vm")
    broker = Mosquitto(tmp / "mq")
    procs: list[subprocess.Popen] = []
    meter = None
    try:
        vm.start()
        broker.start()
        # in the past, so the meter's clock (running at ``speed``) stays behind VictoriaMetrics' clock,
        # which refuses samples from the future
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=(seconds + 30) * speed)
        meter = PtyMeter(MeterSimulator(start=start, seed=3, gas=True), speed=speed, link=tmp / "p1")
        meter.start()
        cfg = tmp / "quartier.toml"
        cfg.write_text(
            f'[[sources]]\ntype="p1"\nport="{meter.path}"\nbaudrate=115200\nclock_check="neighbours"\n'
            f'[store]\npath="{tmp / "node.sqlite"}"\n'
            f'[influx]\nenabled=true\nurl="{vm.url}"\nlive_interval_s=1\n'
            f'[daemon]\nruntime_dir="{tmp / "run"}"\n'
            f'[web]\nhost="127.0.0.1"\nport={free_port()}\n'
            f'[mqtt]\nenabled=true\nhost="{broker.host}"\nport={broker.port}\npower_interval_s=1\n'
        )
        env = {**os.environ, "QUARTIER_INFLUX__TOKEN": "bench"}
        cli = [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING"]
        daemon = subprocess.Popen(cli + ["run", "--config", str(cfg)], env=env, stderr=open(tmp / "daemon.log", "wb"))
        procs.append(daemon)
        time.sleep(2)
        web = subprocess.Popen(cli + ["web", "--config", str(cfg)], env=env, stderr=open(tmp / "web.log", "wb"))
        procs.append(web)
        time.sleep(seconds)
        for p, name in ((daemon, "daemon"), (web, "web")):
            if p.poll() is not None:
                print((tmp / f"{name}.log").read_text()[-3000:])
                raise SystemExit(f"{name} exited with {p.returncode}")
        d_hwm, d_rss = _status(daemon.pid, "VmHWM"), _status(daemon.pid, "VmRSS")
        w_hwm, w_rss = _status(web.pid, "VmHWM"), _status(web.pid, "VmRSS")
        live = len(vm.query_points("live_import_w"))
        gas = len(vm.query_points("live_gas_m3"))
        qhs = len(vm.query_points("quarter_hour_import_wh"))
        print(f"{seconds:.0f} s at {speed:g}x, influx sink with live_interval_s=1, MQTT feed with power_interval_s=1")
        print(f"daemon: peak RSS {d_hwm:.1f} MB (now {d_rss:.1f} MB), budget {DAEMON_BUDGET_MB} MB")
        print(f"web service: peak RSS {w_hwm:.1f} MB (now {w_rss:.1f} MB)")
        print(f"daemon + web: {d_hwm + w_hwm:.1f} MB peak, {d_rss + w_rss:.1f} MB now, budget {TOTAL_BUDGET_MB} MB")
        print(f"in VictoriaMetrics: {live} live points ({gas} with gas), {qhs} quarter-hours")
        ok = d_hwm <= DAEMON_BUDGET_MB and d_hwm + w_hwm <= TOTAL_BUDGET_MB and live > 0
        print("within budget" if ok else "OVER BUDGET (or no live point written)")
        return 0 if ok else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        if meter is not None:
            meter.stop()
        broker.stop()
        vm.stop()
        if os.environ.get("QMEM_KEEP"):
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--speed", type=float, default=60)
    args = ap.parse_args()
    raise SystemExit(run(args.seconds, args.speed))


if __name__ == "__main__":
    main()

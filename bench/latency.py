"""Live path latency, telegram to screen and to home automation, and the web service's footprint.

    python bench/latency.py [--telegrams 120] [--speed 1] [--rss-clients 3]

1. A simulated meter writes e-MUCS telegrams to a pty at a real meter's pace (one a second at
   ``--speed 1``); the bench records when each telegram is written.
2. The real daemon (``quartier run``) reads it; the real web service (``quartier web``, its own
   process) reads the daemon's live socket and publishes the MQTT feed to a real Mosquitto.
3. The bench listens to the server-sent-event stream (``GET /api/v1/stream``) and to
   ``<base>/<node>/quarter_hour/running`` on the broker, and matches each event to its telegram by
   the meter time it carries: latency = received - written (one clock: CLOCK_MONOTONIC of this
   process). Prints p50/p90/p99/max for both paths (target p99 < 200 ms).
4. Prints the web service's RSS (VmRSS and peak VmHWM, target <= 60 MB) with ``--rss-clients``
   stream clients connected and the MQTT feed on, the daemon's RSS for comparison, and the page's
   total transfer (the page and its assets, target < 150 kB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def _summary(name: str, values: list[float], expected: int) -> None:
    if not values:
        print(f"{name}: no samples")
        return
    ms = [v * 1000 for v in values]
    print(f"{name}: {len(ms)}/{expected} telegrams seen, p50 {statistics.median(ms):.1f} ms, p90 {_pct(ms, 90):.1f} ms, "
          f"p99 {_pct(ms, 99):.1f} ms, max {max(ms):.1f} ms (target p99 < 200 ms)")


class SseListener(threading.Thread):
    """Reads the stream with a plain socket (no client library between the bytes and the clock)."""

    def __init__(self, port: int, on_live) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.on_live = on_live
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(b"GET /api/v1/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
                    s.settimeout(None)
                    buf = b""
                    while not self.stop:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        now = time.monotonic()
                        buf += chunk
                        while b"\n\n" in buf:
                            block, buf = buf.split(b"\n\n", 1)
                            self._block(block, now)
            except OSError:
                time.sleep(0.2)

    def _block(self, block: bytes, now: float) -> None:
        event, data = None, None
        for line in block.split(b"\n"):
            line = line.strip()
            if b"event:" in line:
                event = line.split(b"event:", 1)[1].strip()
            elif line.startswith(b"data:"):
                data = line[5:].strip()
        if event == b"live" and data:
            try:
                self.on_live(json.loads(data), now)
            except ValueError:
                pass  # a chunked-encoding size line glued to a block: the next event will do


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--telegrams", type=int, default=120, help="how many telegrams to time (default 120)")
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (1: a real meter)")
    ap.add_argument("--rss-clients", type=int, default=3, help="extra stream clients while measuring RSS")
    args = ap.parse_args()

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from demo.pty_meter import PtyMeter
    from demo.meter import MeterSimulator
    from tests.servers import Mosquitto

    tmp = Path(tempfile.mkdtemp(prefix="qlat-"))
    broker = Mosquitto(tmp / "mqtt")
    broker.start()
    written: dict[str, float] = {}  # meter time (ISO, UTC) -> when the telegram was written
    sse: dict[str, float] = {}
    via_mqtt: dict[str, float] = {}

    sim = MeterSimulator(start=datetime(2026, 6, 21, 9, 0, tzinfo=UTC), seed=5)
    inner = sim.telegram_at

    def stamped(t: datetime) -> bytes:
        frame = inner(t)
        written[t.astimezone(UTC).isoformat().replace("+00:00", "Z")] = time.monotonic()  # written right after
        return frame

    sim.telegram_at = stamped  # type: ignore[method-assign]
    meter = PtyMeter(sim, speed=args.speed, link=tmp / "p1")
    port = _free_port()
    cfg = tmp / "quartier.toml"
    cfg.write_text("\n".join([
        "[[sources]]", 'type = "p1"', f'port = "{meter.path}"', "baudrate = 115200",
        "[store]", f'path = "{tmp / "q.sqlite"}"',
        "[daemon]", f'runtime_dir = "{tmp / "run"}"',
        "[web]", 'host = "127.0.0.1"', f"port = {port}",
        "[mqtt]", "enabled = true", f'host = "{broker.host}"', f"port = {broker.port}", 'node_id = "bench"',
    ]) + "\n")
    quartier = [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    daemon = subprocess.Popen(quartier + ["run", "--config", str(cfg)], env=env, stderr=open(tmp / "daemon.log", "wb"))
    web = subprocess.Popen(quartier + ["web", "--config", str(cfg)], env=env, stderr=open(tmp / "web.log", "wb"))
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-listener")

    def on_message(_c, _u, msg) -> None:
        now = time.monotonic()
        try:
            t = json.loads(msg.payload).get("time")
        except ValueError:
            return
        if t and t not in via_mqtt:
            via_mqtt[t] = now

    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe("quartier/bench/quarter_hour/running", qos=0)
    sub.loop_start()
    listener = SseListener(port, lambda live, now: live.get("time") and sse.setdefault(live["time"], now))
    extra: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=1) as r:
                    if json.loads(r.read())["gateway"]["connected"]:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the web service did not come up:\n{(tmp / 'web.log').read_text()[-2000:]}")
            time.sleep(0.2)
        listener.start()
        time.sleep(1.0)
        meter.start()
        warmup = 3
        print(f"timing {args.telegrams} telegrams at {args.speed:g}x ({meter.step_s} simulated s per telegram) ...",
              flush=True)
        target = args.telegrams + warmup
        while len(written) < target + 1:
            time.sleep(0.2)
        time.sleep(1.5)
        keys = sorted(written)[warmup:target]
        sse_lat = [sse[k] - written[k] for k in keys if k in sse]
        mqtt_lat = [via_mqtt[k] - written[k] for k in keys if k in via_mqtt]
        _summary("telegram -> SSE event ", sse_lat, len(keys))
        _summary("telegram -> MQTT message", mqtt_lat, len(keys))

        for _ in range(args.rss_clients):  # a few phones with the page open
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /api/v1/stream HTTP/1.1\r\nHost: bench\r\n\r\n")
            extra.append(s)
        page = 0
        for path in ("/", "/static/app.css", "/static/app.js", "/static/i18n.js", "/static/icon.svg"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as r:
                page += len(r.read())
        for path in ("/api/v1/live", "/api/v1/quarter-hours", "/api/v1/allocation?period=month"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as r:
                page += len(r.read())
        time.sleep(3)
        rss, hwm = _mem_kb(web.pid, "VmRSS"), _mem_kb(web.pid, "VmHWM")
        print(f"web service ({1 + args.rss_clients} stream clients, MQTT feed on): RSS {rss / 1024:.1f} MB, "
              f"peak {hwm / 1024:.1f} MB (target <= 60 MB)")
        print(f"daemon (live socket on): RSS {_mem_kb(daemon.pid, 'VmRSS') / 1024:.1f} MB, "
              f"peak {_mem_kb(daemon.pid, 'VmHWM') / 1024:.1f} MB (its own target <= 45 MB)")
        print(f"page transfer (page, assets, the three API reads it makes): {page / 1000:.1f} kB (target < 150 kB)")
    finally:
        listener.stop = True
        for s in extra:
            s.close()
        sub.loop_stop()
        sub.disconnect()
        for p in (web, daemon):
            p.terminate()
        for p in (web, daemon):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        meter.stop()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The web service under test: served by a real uvicorn on a free loopback port, fed by the real live
publisher (gateway/live.py) through a real metering pipeline and store, as the daemon would."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import httpx
import uvicorn

from gateway.live import LivePublisher
from gateway.live_pipeline import LivePipeline
from gateway.model import ClockQuality, Reading
from gateway.plausibility import Limits
from gateway.store import Store
from services.node.web.app import create_app
from services.node.web.figures import Prices
from services.node.web.fleet import Fleet
from services.node.web.service import WebService, WebSettings
from services.signal import SignalSettings

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)  # 10:00 in Brussels
METER = "1SIM0000000042"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebRig:
    """A fake daemon (pipeline + store + live publisher) and the web service reading from it."""

    def __init__(self, *, token: str = "", fleet: Fleet | None = None, mqtt_feed=None, cors: tuple[str, ...] = (),
                 signal: SignalSettings | None = None, prices: Prices | None = None,
                 stream_interval_s: float = 0.3, tariffs: tuple[str, ...] = ("1",),
                 tariff_names: dict[str, str] | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="qw")  # short: Unix socket paths are limited
        self.dir = Path(self._tmp.name)
        self.socket_path = self.dir / "live.sock"
        self.store = Store(self.dir / "quartier.sqlite", timezone="Europe/Brussels")
        self.publisher = LivePublisher(self.socket_path)
        self.publisher.start()
        # this rig feeds readings minutes apart, all at once: its gate believes gaps of up to an hour
        self.pipeline = LivePipeline(self.store, publisher=self.publisher,
                                     limits=Limits(clock_tolerance_s=None, max_jump_s=3600, cadence_factor=None))
        # exact registers (Wh) per tariff; the meter shows them rounded down. ``tariff``: the one running
        self.imp = {t: Fraction(1_000_000 if t == tariffs[0] else 0) for t in tariffs}
        self.exp = {t: Fraction(500_000 if t == tariffs[0] else 0) for t in tariffs}
        self.tariff = tariffs[0]
        self.submeters: tuple = ()  # the gas and water channels the next readings carry
        self.t = T0
        self.settings = WebSettings(
            socket_path=self.socket_path, store_path=self.store.path, timezone="Europe/Brussels", token=token,
            cors_origins=cors, prices=prices or Prices(), stream_interval_s=stream_interval_s,
            signal=signal or SignalSettings(hold_s=0), tariff_names=tariff_names or {},
        )
        self.service = WebService(self.settings, fleet=fleet, mqtt_feed=mqtt_feed)
        self.app = create_app(self.service)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None,
                                                    access_log=False, lifespan="on", http="h11", ws="none",
                                                    timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.wait_for(lambda: self.service.state.connected, "the live socket")

    # -- the fake meter ----------------------------------------------------------------------------

    def feed(self, seconds: float, import_w: float = 0.0, export_w: float = 0.0) -> None:
        """Advance the meter by ``seconds`` at constant power and feed the reading at the end."""
        self.t += timedelta(seconds=seconds)
        self.imp[self.tariff] += Fraction(import_w) * Fraction(seconds) / 3600
        self.exp[self.tariff] += Fraction(export_w) * Fraction(seconds) / 3600
        self.pipeline.feed_reading(Reading(
            meter_id=METER, time=self.t, import_wh={t: int(v) for t, v in self.imp.items()},
            export_wh={t: int(v) for t, v in self.exp.items()}, import_w=import_w, export_w=export_w,
            clock=ClockQuality.METER, month_peak_w=3200.0, tariff=self.tariff, submeters=self.submeters))

    def feed_quarter_hours(self, n: int, import_w: float = 0.0, export_w: float = 0.0, step_s: float = 60) -> None:
        for _ in range(int(n * 900 / step_s)):
            self.feed(step_s, import_w, export_w)

    # -- helpers -------------------------------------------------------------------------------------

    def get(self, path: str, **kw) -> dict:
        r = self.http.get(path, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def wait_for(self, pred, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def wait_live(self, pred, what: str, timeout: float = 10.0) -> dict:
        box: dict = {}

        def check() -> bool:
            box["live"] = self.get("/api/v1/live")
            return bool(pred(box["live"]))

        self.wait_for(check, what, timeout)
        return box["live"]

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.publisher.stop()
        self.store.close()
        self._tmp.cleanup()


def sse_events(client: httpx.Client, path: str = "/api/v1/stream") -> Iterator[tuple[str, dict]]:
    """(event, data) pairs of a server-sent-event stream, as they arrive."""
    with client.stream("GET", path, timeout=httpx.Timeout(10, read=10)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        event, data = "message", []
        for line in resp.iter_lines():
            if line == "":
                if data:
                    yield event, json.loads("\n".join(data))
                event, data = "message", []
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())

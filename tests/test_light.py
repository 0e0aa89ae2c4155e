"""The consume-now light: signal -> LED pattern (pure), the LEDs on gpiozero's mock pins, the health
file fallback, the polling edge against a real HTTP server, and ``quartier light`` against a running
demo (and the node web service, when it runs)."""

from __future__ import annotations

import json
import os
import signal as signals
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from services.node.light import (
    AMBER,
    GREEN,
    PATTERNS,
    RED,
    REDUCE_NOW,
    UNSURE,
    LedLight,
    LightLoop,
    RgbLight,
    inputs_from_health,
    pattern_for,
)
from services.signal import Basis, Reason, SignalSettings, State, next_signal
from tests.servers import free_port

QUARTIER = [sys.executable, "-m", "gateway.cli"]
T0 = datetime(2026, 6, 1, 10, 5, tzinfo=timezone.utc)


@pytest.fixture
def factory():
    """gpiozero's mock pins (PWM-capable, for the RGB LED's amber), as the default factory too."""
    f = MockFactory(pin_class=MockPWMPin)
    previous = Device.pin_factory
    Device.pin_factory = f
    try:
        yield f
    finally:
        f.reset()
        Device.pin_factory = previous


def _states(f: MockFactory, pins=(17, 27, 22)) -> tuple[bool, ...]:
    return tuple(bool(f.pin(p).state) for p in pins)


def _wait_toggles(pin, n: int, within_s: float = 5.0) -> list[bool]:
    """Wait (not time) until the pin has changed state ``n`` times; return the states it went through."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        seq = [s.state for s in pin.states]
        changes = [b for a, b in zip(seq, seq[1:]) if a != b]
        if len(changes) >= n:
            return changes
        time.sleep(0.02)
    pytest.fail(f"pin changed state {len(changes)} times, expected {n}")


# -- signal -> pattern -----------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "reason", "expected"), [
    ("green", "surplus", GREEN),
    ("amber", "small_surplus", AMBER),
    ("red", "no_surplus", RED),
    ("red", "reduce_now", REDUCE_NOW),
    ("amber", "stale_data", UNSURE),
    ("red", "stale_data", UNSURE),
    ("red", "no_data", UNSURE),
    ("purple", "surplus", UNSURE),
])
def test_pattern_for_each_signal(state: str, reason: str, expected) -> None:
    assert pattern_for({"state": state, "reason": reason}) is expected


def test_no_signal_blinks_amber_and_every_pattern_lights_one_lamp() -> None:
    assert pattern_for(None) is UNSURE
    assert UNSURE.amber.mode == "blink" and UNSURE.amber.off_s > UNSURE.amber.on_s  # slow, mostly off
    assert REDUCE_NOW.red.mode == "blink" and REDUCE_NOW.red.on_s == REDUCE_NOW.red.off_s
    for p in PATTERNS:
        lit = [c for c in ("green", "amber", "red") if getattr(p, c).mode != "off"]
        assert len(lit) == 1, p  # one RGB LED can show every pattern
    assert len({p.meaning for p in PATTERNS}) == len(PATTERNS)


def test_the_signal_objects_of_services_signal_map_to_patterns() -> None:
    """From :func:`services.signal.next_signal` itself, not hand-written dicts."""
    from services.signal import Alert, QuarterSoFar, SignalInputs

    def q(export_w: float, age: float = 0.0) -> QuarterSoFar:
        return QuarterSoFar(start=T0 - timedelta(minutes=5), elapsed_s=300, imported_wh=0, exported_wh=export_w / 12,
                            import_w=0, export_w=export_w, age_s=age)

    assert pattern_for(next_signal(None, SignalInputs(now=T0, own=q(3000))).as_dict()) is GREEN
    assert pattern_for(next_signal(None, SignalInputs(now=T0, own=q(300))).as_dict()) is AMBER
    assert pattern_for(next_signal(None, SignalInputs(now=T0, own=q(-2000))).as_dict()) is RED
    assert pattern_for(next_signal(None, SignalInputs(now=T0, own=q(3000, age=600))).as_dict()) is UNSURE
    alert = Alert(T0 - timedelta(minutes=1), T0 + timedelta(hours=1), "peak")
    assert pattern_for(next_signal(None, SignalInputs(now=T0, own=q(3000), alert=alert)).as_dict()) is REDUCE_NOW
    assert pattern_for(next_signal(None, SignalInputs(now=T0)).as_dict()) is UNSURE


# -- the LEDs on mock pins -------------------------------------------------------------------------


def test_three_leds_follow_the_patterns(factory) -> None:
    light = LedLight((17, 27, 22))
    try:
        assert light.show(GREEN)
        assert _states(factory) == (True, False, False)
        assert light.show(AMBER)
        assert _states(factory) == (False, True, False)
        assert light.show(RED)
        assert _states(factory) == (False, False, True)
        assert not light.show(RED)  # unchanged: nothing is touched
        assert light.show(REDUCE_NOW)
        toggles = _wait_toggles(factory.pin(22), 4)
        assert toggles[:4] in ([False, True, False, True], [True, False, True, False])
        assert _states(factory)[:2] == (False, False)
        assert light.show(GREEN)  # a steady pattern stops the blinking
        time.sleep(0.05)
        before = len(factory.pin(22).states)
        assert _states(factory) == (True, False, False)
        time.sleep(0.6)
        assert len(factory.pin(22).states) == before
    finally:
        light.close()


def test_unsure_blinks_the_amber_led(factory) -> None:
    light = LedLight((5, 6, 13))
    try:
        light.show(UNSURE)
        assert _wait_toggles(factory.pin(6), 2)[:2] in ([True, False], [False, True])
        assert not factory.pin(5).state and not factory.pin(13).state
    finally:
        light.close()


def test_active_low_leds_are_inverted(factory) -> None:
    light = LedLight((17, 27, 22), active_high=False)
    try:
        light.show(GREEN)
        assert _states(factory) == (False, True, True)  # low = lit when wired from 3.3 V
    finally:
        light.close()


def test_rgb_led_colours(factory) -> None:
    light = RgbLight((23, 24, 25))
    try:
        light.show(GREEN)
        assert (factory.pin(23).state, factory.pin(24).state, factory.pin(25).state) == (0, 1, 0)
        light.show(AMBER)
        assert factory.pin(23).state == 1 and 0 < factory.pin(24).state < 1 and factory.pin(25).state == 0
        light.show(RED)
        assert (factory.pin(23).state, factory.pin(24).state, factory.pin(25).state) == (1, 0, 0)
        light.show(REDUCE_NOW)
        assert _wait_toggles(factory.pin(23), 2)
        assert factory.pin(24).state == 0
    finally:
        light.close()
    anode = RgbLight((23, 24, 25), common_anode=True)
    try:
        anode.show(GREEN)
        assert (factory.pin(23).state, factory.pin(24).state, factory.pin(25).state) == (1, 0, 1)
    finally:
        anode.close()


# -- the health file fallback ----------------------------------------------------------------------


def _health(written: datetime, *, export_w: float, import_w: float = 0.0, export_wh: int = 300, import_wh: int = 0,
            elapsed_s: int = 600, telegram_age: float = 0.5) -> dict:
    start = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)
    meter_time = start + timedelta(seconds=elapsed_s)
    z = lambda t: t.isoformat().replace("+00:00", "Z")
    return {
        "time": z(written),
        "last_telegram_age_s": telegram_age,
        "meters": {"1SAG1100000292": {
            "telegrams": 600, "crc_errors": 0, "last_telegram_age_s": telegram_age, "meter_time": z(meter_time),
            "import_w": import_w, "export_w": export_w,
            "quarter_hour": {"start": z(start), "import_wh": import_wh, "export_wh": export_wh},
        }},
    }


def test_inputs_from_health_are_the_running_quarter_hour() -> None:
    written = datetime(2026, 6, 1, 10, 10, 1, tzinfo=timezone.utc)
    inputs = inputs_from_health(_health(written, export_w=2400), written + timedelta(seconds=2))
    assert inputs is not None and inputs.own is not None
    q = inputs.own
    assert q.elapsed_s == 600 and q.exported_wh == 300 and q.imported_wh == 0 and q.export_w == 2400
    assert q.age_s == pytest.approx(2.5)  # file written 2 s ago + last telegram 0.5 s before that
    assert inputs.now == datetime(2026, 6, 1, 10, 10, 2, 500000, tzinfo=timezone.utc)
    sig = next_signal(None, inputs)
    assert sig.state is State.GREEN and sig.basis is Basis.OWN_METER
    # the same file read much later: stale, so the light says it does not know
    late = next_signal(None, inputs_from_health(_health(written, export_w=2400), written + timedelta(minutes=5)))
    assert late.reason is Reason.STALE_DATA and pattern_for(late.as_dict()) is UNSURE
    assert inputs_from_health(None, written) is None
    assert inputs_from_health({"time": "2026-06-01T10:00:00Z", "meters": {"m": {"quarter_hour": None}}}, written) is None


# -- the polling edge against a real HTTP server ---------------------------------------------------


class _SignalServer:
    def __init__(self) -> None:
        self.body: bytes = b"{}"
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v1/signal"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_loop_prefers_the_web_service_then_the_health_file_then_blinks(factory, tmp_path: Path) -> None:
    server = _SignalServer()
    written = datetime(2026, 6, 1, 10, 10, 1, tzinfo=timezone.utc)
    now = [written + timedelta(seconds=1)]
    (tmp_path / "health.json").write_text(json.dumps(_health(written, export_w=0, import_w=1500, export_wh=0,
                                                             import_wh=250)))
    changes: list[tuple[str, str]] = []
    light = LedLight()
    loop = LightLoop(light, server.url, tmp_path, SignalSettings(), clock=lambda: now[0],
                     on_change=lambda p, src, sig: changes.append((p.name, src)))
    try:
        server.body = json.dumps({"state": "green", "reason": "surplus", "headroom_w": 1200}).encode()
        assert loop.step() is GREEN and loop.source == "web service"
        assert _states(factory) == (True, False, False)
        server.body = json.dumps({"state": "red", "reason": "reduce_now"}).encode()
        assert loop.step() is REDUCE_NOW
        server.status, server.body = 500, b"oops"  # a broken answer: the health file decides
        assert loop.step() is RED and loop.source == "gateway health file"
        assert _states(factory) == (False, False, True)
        server.close()  # the web service is gone entirely
        assert loop.step() is RED
        now[0] = written + timedelta(minutes=10)  # and the daemon stopped writing
        assert loop.step() is UNSURE
        (tmp_path / "health.json").unlink()
        assert loop.step() is UNSURE and loop.source == "none"
    finally:
        light.close()
    assert changes == [("green", "web service"), ("reduce_now", "web service"), ("red", "gateway health file"),
                       ("unsure", "gateway health file"), ("unsure", "none")]


# -- the command -----------------------------------------------------------------------------------


def _wait_health(d: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            h = json.loads((d / "health.json").read_text())
            meters = h.get("meters") or {}
            if any((m.get("quarter_hour") or {}).get("start") for m in meters.values()):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    pytest.fail("the demo wrote no health file with a running quarter-hour")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signals.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def test_quartier_light_against_the_demo_and_its_web_service(tmp_path: Path) -> None:
    port = free_port()
    demo = subprocess.Popen([*QUARTIER, "demo", "--dir", str(tmp_path), "--speed", "60", "--duration", "45",
                             "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        _wait_health(tmp_path)
        # 1. the web service is not asked: the light computes the signal from the daemon's health file
        closed = f"http://127.0.0.1:{free_port()}/api/v1/signal"
        proc = subprocess.run([*QUARTIER, "light", "--mock", "--once", "--url", closed, "--runtime-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "[from: gateway health file]" in proc.stdout
        assert any(p.meaning in proc.stdout for p in (GREEN, AMBER, RED)), proc.stdout  # fresh data: a real colour

        # 2. with the demo's configuration the light asks the demo's web service (GET /api/v1/signal)
        url = f"http://127.0.0.1:{port}/api/v1/signal"
        deadline = time.monotonic() + 30
        sig = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    sig = json.loads(resp.read())
                if sig.get("reason") not in ("no_data", "stale_data"):
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert sig is not None, "the demo's web service did not answer"
        proc = subprocess.run([*QUARTIER, "light", "--mock", "--once", "--config", str(tmp_path / "quartier.toml")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "[from: web service]" in proc.stdout
        with urllib.request.urlopen(url, timeout=2) as resp:
            after = json.loads(resp.read())
        shown = [p for p in PATTERNS if p.meaning in proc.stdout]
        assert shown and shown[0] in (pattern_for(sig), pattern_for(after))
    finally:
        _stop(demo)


def test_quartier_light_without_gpio_says_what_to_do() -> None:
    if os.path.exists("/proc/device-tree/model"):
        pytest.skip("this machine has GPIO")  # only on a Pi itself
    proc = subprocess.run([*QUARTIER, "light", "--once", "--url", "", "--runtime-dir", "/nonexistent"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "cannot use the GPIO pins" in proc.stderr and "try --mock" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = subprocess.run([*QUARTIER, "light", "--pins", "17,17,22"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "three different GPIO numbers" in bad.stderr

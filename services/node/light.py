"""The consume-now light (lampe « consommez maintenant », « verbruik nu »-lamp): three LEDs or one RGB
LED on the Pi's GPIO follow the consume-now signal, for members who have no smartphone.

What the light shows (the same table is in hardware/README.md and on the member's sheet):

- steady green: the community has surplus, run appliances now;
- steady amber: a small surplus, run only small appliances;
- steady red: no surplus, what you use comes from the grid;
- red blinking fast: the community asks everyone to reduce consumption now;
- amber blinking slowly: the light does not know (no recent meter data, the gateway is down).

Where the signal comes from: the node's web service (``GET /api/v1/signal``), which computes it from
the live readings and the fleet's figures; when the web service does not answer, the light computes
it itself from the daemon's health file (the running quarter-hour of this node's own meter, with the
same :mod:`services.signal` code and thresholds). With neither, it blinks amber.

The mapping from signal to LEDs (:func:`pattern_for`) and from the health file to the signal's inputs
(:func:`inputs_from_health`) are pure; :class:`LedLight` and :class:`RgbLight` drive gpiozero
devices (any pin factory: the tests use gpiozero's mock pins); :class:`LightLoop` is the thin polling
edge. gpiozero is imported only when a light is built, so ``quartier`` starts without it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from gateway.logs import get_logger

log = get_logger("quartier.services.light")

DEFAULT_PINS = (17, 27, 22)  # BCM numbers of green, amber, red: header pins 11, 13, 15 (hardware/README.md)
DEFAULT_CONFIG = Path("/etc/quartier/quartier.toml")


# -- what each LED does (pure) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lamp:
    """One LED: off, on, or blinking ``on_s`` seconds on and ``off_s`` off."""

    mode: Literal["off", "on", "blink"] = "off"
    on_s: float = 0.0
    off_s: float = 0.0


OFF = Lamp()
ON = Lamp("on")


@dataclass(frozen=True, slots=True)
class Pattern:
    """What the three LEDs show. At most one is lit, so one RGB LED can show the same."""

    name: str
    green: Lamp = OFF
    amber: Lamp = OFF
    red: Lamp = OFF
    meaning: str = ""

    @property
    def lit(self) -> tuple[str, Lamp] | None:
        for colour in ("green", "amber", "red"):
            lamp = getattr(self, colour)
            if lamp.mode != "off":
                return colour, lamp
        return None


GREEN = Pattern("green", green=ON, meaning="steady green: surplus, run appliances now")
AMBER = Pattern("amber", amber=ON, meaning="steady amber: small surplus, run only small appliances")
RED = Pattern("red", red=ON, meaning="steady red: no surplus, what you use comes from the grid")
REDUCE_NOW = Pattern("reduce_now", red=Lamp("blink", 0.5, 0.5),
                     meaning="red blinking: the community asks everyone to reduce consumption now")
UNSURE = Pattern("unsure", amber=Lamp("blink", 0.3, 2.7),
                 meaning="amber blinking slowly: no recent meter data, the light does not know")
PATTERNS = (GREEN, AMBER, RED, REDUCE_NOW, UNSURE)


def pattern_for(signal: Mapping[str, Any] | None) -> Pattern:
    """The LEDs for a signal object (``GET /api/v1/signal``'s JSON); ``None``: no signal at all."""
    if signal is None:
        return UNSURE
    reason = signal.get("reason")
    if reason == "reduce_now":
        return REDUCE_NOW
    if reason in ("stale_data", "no_data"):
        return UNSURE
    return {"green": GREEN, "amber": AMBER, "red": RED}.get(str(signal.get("state")), UNSURE)


# -- the signal from the daemon's health file (pure) -----------------------------------------------


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def inputs_from_health(health: Mapping[str, Any] | None, now: datetime, meter_id: str | None = None):
    """The consume-now signal's inputs from ``health.json`` (written every few seconds by the daemon):
    the running quarter-hour of this node's meter, aged by how old the file and its last telegram are.
    ``None`` when the file says nothing usable."""
    from services.signal import QuarterSoFar, SignalInputs

    if not health:
        return None
    written = _time(health.get("time"))
    meters = health.get("meters") or {}
    if written is None or not isinstance(meters, Mapping):
        return None
    ids = [meter_id] if meter_id is not None else sorted(meters)
    for mid in ids:
        m = meters.get(mid)
        if not isinstance(m, Mapping):
            continue
        q = m.get("quarter_hour")
        meter_time = _time(m.get("meter_time"))
        start = _time(q.get("start")) if isinstance(q, Mapping) else None
        if meter_time is None or start is None:
            continue
        age = max(0.0, (now - written).total_seconds()) + float(m.get("last_telegram_age_s") or 0.0)
        own = QuarterSoFar(
            start=start,
            elapsed_s=max(0.0, (meter_time - start).total_seconds()),
            imported_wh=q.get("import_wh"),
            exported_wh=q.get("export_wh"),
            import_w=float(m.get("import_w") or 0.0),
            export_w=float(m.get("export_w") or 0.0),
            age_s=age,
        )
        return SignalInputs(now=meter_time + timedelta(seconds=age), own=own)
    return None


# -- the LEDs (gpiozero) ---------------------------------------------------------------------------


def _gpiozero():
    try:
        import gpiozero
    except ModuleNotFoundError:
        raise SystemExit(
            "quartier light: gpiozero is not installed: sudo deploy/install.sh --light installs it "
            "(or: pip install 'quartier[pi]')"
        ) from None
    return gpiozero


class LedLight:
    """Green, amber and red LEDs on three GPIO pins (BCM numbers), each through its own resistor.

    ``active_high=False`` for LEDs wired from 3.3 V to the pin (the pin sinks the current)."""

    def __init__(self, pins: tuple[int, int, int] = DEFAULT_PINS, *, active_high: bool = True, pin_factory=None) -> None:
        gz = _gpiozero()
        self.leds: dict[str, Any] = {}
        try:
            for colour, pin in zip(("green", "amber", "red"), pins, strict=True):
                self.leds[colour] = gz.LED(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
        except BaseException:
            self.close()
            raise
        self.shown: Pattern | None = None

    def show(self, pattern: Pattern) -> bool:
        """Show a pattern; returns False (and leaves blinking undisturbed) if it is already shown."""
        if pattern == self.shown:
            return False
        for colour, led in self.leds.items():
            lamp: Lamp = getattr(pattern, colour)
            if lamp.mode == "on":
                led.on()
            elif lamp.mode == "blink":
                led.blink(on_time=lamp.on_s, off_time=lamp.off_s, background=True)
            else:
                led.off()
        self.shown = pattern
        return True

    def close(self) -> None:
        for led in self.leds.values():
            led.close()
        self.leds = {}


# colours of an RGB LED for each lamp; amber needs PWM (a dimmed green beside the red)
RGB_COLOURS = {"green": (0.0, 1.0, 0.0), "amber": (1.0, 0.35, 0.0), "red": (1.0, 0.0, 0.0)}


class RgbLight:
    """One RGB LED on three pins (red, green, blue). ``common_anode=True`` for LEDs whose common leg
    goes to 3.3 V. Amber is red with a little green, which needs PWM (every Pi pin can do it in software)."""

    def __init__(self, pins: tuple[int, int, int], *, common_anode: bool = False, pin_factory=None) -> None:
        gz = _gpiozero()
        red, green, blue = pins
        self.led = gz.RGBLED(red, green, blue, active_high=not common_anode, initial_value=(0, 0, 0), pwm=True,
                             pin_factory=pin_factory)
        self.shown: Pattern | None = None

    def show(self, pattern: Pattern) -> bool:
        if pattern == self.shown:
            return False
        lit = pattern.lit
        if lit is None:
            self.led.off()
        else:
            colour, lamp = lit
            rgb = RGB_COLOURS[colour]
            if lamp.mode == "blink":
                self.led.blink(on_time=lamp.on_s, off_time=lamp.off_s, fade_in_time=0, fade_out_time=0,
                               on_color=rgb, off_color=(0, 0, 0), background=True)
            else:
                self.led.color = rgb
        self.shown = pattern
        return True

    def close(self) -> None:
        self.led.close()


# -- the polling edge ------------------------------------------------------------------------------


def fetch_signal(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The web service's signal, or None when it does not answer properly."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status != 200:
                return None
            data = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return data if isinstance(data, dict) and "state" in data else None


@dataclass
class LightLoop:
    """Every ``interval_s``: ask the web service; if it does not answer, compute the signal from the
    health file; show the pattern. :meth:`step` is one round (the tests call it directly)."""

    light: Any  # LedLight | RgbLight
    url: str | None
    runtime_dir: Path | None
    settings: Any = None  # services.signal.SignalSettings for the health fallback
    meter_id: str | None = None
    interval_s: float = 2.0
    on_change: Callable[[Pattern, str, dict[str, Any] | None], None] | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    source: str = "none"  # where the last signal came from: "web service", "gateway health file", "none"
    _tracker: Any = None

    def __post_init__(self) -> None:
        from services.signal import SignalSettings, SignalTracker

        self._tracker = SignalTracker(self.settings or SignalSettings())

    def current_signal(self) -> tuple[dict[str, Any] | None, str]:
        if self.url:
            sig = fetch_signal(self.url)
            if sig is not None:
                return sig, "web service"
        if self.runtime_dir is not None:
            from gateway.health import read_health

            inputs = inputs_from_health(read_health(self.runtime_dir), self.clock(), self.meter_id)
            if inputs is not None:
                return self._tracker.update(inputs).as_dict(), "gateway health file"
        return None, "none"

    def step(self) -> Pattern:
        signal, source = self.current_signal()
        pattern = pattern_for(signal)
        changed = self.light.show(pattern)
        if changed or source != self.source:
            log.info("light.changed", extra={"pattern": pattern.name, "source": source,
                                             "state": (signal or {}).get("state"), "reason": (signal or {}).get("reason")})
            if self.on_change is not None:
                self.on_change(pattern, source, signal)
        self.source = source
        return pattern

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # a bad answer must not leave the light frozen on an old colour
                log.exception("light.step_failed")
                self.light.show(UNSURE)
            stop.wait(self.interval_s)


# -- the command -----------------------------------------------------------------------------------


def _pins(text: str) -> tuple[int, int, int]:
    try:
        pins = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: three GPIO numbers separated by commas, e.g. 17,27,22") from None
    if len(pins) != 3 or len(set(pins)) != 3 or not all(0 <= p <= 27 for p in pins):
        raise argparse.ArgumentTypeError(f"{text!r}: three different GPIO numbers (0-27) separated by commas")
    return pins  # type: ignore[return-value]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("light", help="drive the consume-now light (GPIO LEDs) from the signal",
                       description="Three LEDs (green, amber, red) or one RGB LED on the Pi's GPIO follow the "
                       "consume-now signal: from the web service, or, when it does not answer, from the gateway's "
                       "health file. Wiring: hardware/README.md.")
    p.add_argument("--config", "-c", type=Path,
                   help=f"the node's configuration: web port, runtime dir, signal thresholds (default {DEFAULT_CONFIG} if it exists)")
    p.add_argument("--url", help="the signal's address (default http://127.0.0.1:<web.port>/api/v1/signal; '' for none)")
    p.add_argument("--runtime-dir", type=Path, help="where the daemon writes health.json (default daemon.runtime_dir)")
    p.add_argument("--pins", type=_pins, default=DEFAULT_PINS, metavar="G,A,R",
                   help="GPIO (BCM) numbers of the green, amber and red LEDs (default 17,27,22)")
    p.add_argument("--active-low", action="store_true", help="LEDs wired from 3.3 V to the pins")
    p.add_argument("--rgb", type=_pins, metavar="R,G,B", help="one RGB LED on these three pins instead")
    p.add_argument("--common-anode", action="store_true", help="the RGB LED's common leg goes to 3.3 V")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between updates (default 2)")
    p.add_argument("--meter", help="the meter to follow in the health file (default: the first)")
    p.add_argument("--mock", action="store_true", help="no GPIO: simulated pins, print each change (try it on a PC)")
    p.add_argument("--once", action="store_true", help="show the current signal once, print it and exit")
    p.add_argument("--test", action="store_true", help="lamp test: show every pattern for 3 s, to check the wiring")
    p.set_defaults(func=cmd_light)


def _settings_from_config(args: argparse.Namespace) -> tuple[str | None, Path | None, Any]:
    from services.signal import SignalSettings

    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    url, runtime_dir, settings = "http://127.0.0.1:8080/api/v1/signal", Path("/run/quartier"), SignalSettings()
    if path is not None:
        from gateway.config import ConfigError, load_config

        try:
            cfg = load_config(path)
        except ConfigError as exc:
            from gateway.cli import EX_CONFIG

            print(f"quartier light: {exc}", file=sys.stderr)
            raise SystemExit(EX_CONFIG) from None  # not restarted by the unit (RestartPreventExitStatus=78)
        host = "127.0.0.1" if cfg.web.host in ("0.0.0.0", "::", "") else cfg.web.host
        url = f"http://{host}:{cfg.web.port}/api/v1/signal"
        runtime_dir = cfg.daemon.runtime_dir
        s = cfg.web.signal
        settings = SignalSettings.from_section(s)
    if args.url is not None:
        url = args.url or None
    if args.runtime_dir is not None:
        runtime_dir = args.runtime_dir
    return url, runtime_dir, settings


def make_light(args: argparse.Namespace):
    import warnings

    gz = _gpiozero()
    # gpiozero tries pin libraries one after the other and warns about each; the error below says it all
    warnings.simplefilter("ignore", gz.PinFactoryFallback)
    factory = None
    if args.mock:
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        factory = MockFactory(pin_class=MockPWMPin)
    try:
        if args.rgb:
            return RgbLight(args.rgb, common_anode=args.common_anode, pin_factory=factory)
        return LedLight(args.pins, active_high=not args.active_low, pin_factory=factory)
    except gz.GPIOZeroError as exc:
        raise SystemExit(f"quartier light: cannot use the GPIO pins ({type(exc).__name__}: {exc}). On a computer "
                         "without GPIO, try --mock; on a Pi, the service user needs group gpio.") from None


def cmd_light(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise SystemExit("quartier light: --interval must be more than 0")
    url, runtime_dir, settings = _settings_from_config(args)
    light = make_light(args)

    def report(pattern: Pattern, source: str, signal: dict[str, Any] | None) -> None:
        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
        detail = f" ({signal.get('detail')})" if signal and signal.get("detail") else ""
        print(f"{stamp} {pattern.meaning} [from: {source}]{detail}", flush=True)

    try:
        if args.test:
            for pattern in PATTERNS:
                light.show(pattern)
                print(f"lamp test: {pattern.meaning}", flush=True)
                threading.Event().wait(3.0)
            return 0
        loop = LightLoop(light, url, runtime_dir, settings, meter_id=args.meter, interval_s=args.interval,
                         on_change=report if (args.mock or args.once or sys.stdout.isatty()) else None)
        if args.once:
            loop.step()
            return 0
        stop = threading.Event()
        import signal as signals

        for sig in (signals.SIGTERM, signals.SIGINT):
            signals.signal(sig, lambda *_: stop.set())
        log.info("light.started", extra={"url": url, "runtime_dir": str(runtime_dir), "rgb": bool(args.rgb)})
        loop.run(stop)
        return 0
    finally:
        light.close()

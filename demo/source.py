"""The simulated meter as a gateway source (``type = "simulated"``): the demo, and tests without hardware.

A simulated e-MUCS meter writes its telegrams to a pseudo-terminal and the real P1 path reads them
through pyserial, so the demo exercises exactly what runs on a Pi.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Literal

from pydantic import Field

from gateway.logs import get_logger
from gateway.sources import SourceContext, SourceKind, SourceSettings

log = get_logger("quartier.demo.source")


class SimulatedSettings(SourceSettings):
    """A simulated e-MUCS meter on a pseudo-terminal."""

    type: Literal["simulated"] = "simulated"
    speed: float = Field(default=60.0, gt=0, le=3600)
    seed: int = 0
    pv_kwp: float = Field(default=4.0, ge=0, le=100)
    start: str | None = None  # ISO 8601; default: today 10:00 local (the sun is up)
    # ISO 8601: the real instant the simulated clock read ``start``; meters (and a community server)
    # given the same start, origin and speed keep one clock, whenever each process started
    origin: str | None = None

    def describe(self) -> str:
        return f"simulated:{self.speed:g}x"

    def serial_of(self, meter_id: str) -> str | None:
        return meter_id  # the simulated meter announces an equipment id like a real one


class SimulatedSource:
    """The P1 source on the pty of a running simulated meter; closing it stops the meter too."""

    def __init__(self, meter, serial) -> None:
        self.meter = meter  # demo.pty_meter.PtyMeter
        self._serial = serial  # p1.source.SerialSource

    @property
    def port(self) -> str | None:
        return self._serial.port

    @property
    def reconnects(self) -> int:
        return self._serial.reconnects

    def run(self, stop: threading.Event) -> None:
        self._serial.run(stop)

    def close(self) -> None:
        self._serial.close()
        self.meter.stop()


def _open(settings: SimulatedSettings, ctx: SourceContext) -> SimulatedSource:
    from demo.meter import MeterSimulator
    from demo.pty_meter import PtyMeter
    from p1.source import open_serial

    start = datetime.fromisoformat(settings.start) if settings.start else demo_start(ctx.timezone)
    if settings.origin:
        from gateway.simulated_time import SimulatedTime

        origin = datetime.fromisoformat(settings.origin)
        aware = [t if t.tzinfo is not None else t.astimezone() for t in (start, origin)]  # naive: local time
        start = SimulatedTime(aware[0], aware[1], settings.speed).now()
    sim = MeterSimulator(start=start, seed=settings.seed, pv_kwp=settings.pv_kwp)
    last = ctx.baseline(sim.meter_id)
    if last is not None and last.end > start:
        # the store is ahead (a demo run again in the same directory): go on from its last boundary
        # rather than replay readings the aggregator must refuse as out of order; the simulator is a
        # function of seed and time, so the registers carry on seamlessly
        log.info("simulated_meter.resumed", extra={"meter": sim.meter_id, "start": start.isoformat(),
                                                   "resumed_at": last.end.isoformat()})
        start = last.end
        sim = MeterSimulator(start=start, seed=settings.seed, pv_kwp=settings.pv_kwp)
    meter = PtyMeter(sim, speed=settings.speed)
    meter.start()
    log.info("simulated_meter.started", extra={"port": meter.path, "speed": settings.speed, "start": start.isoformat()})
    return SimulatedSource(meter, open_serial(meter.path, 115200, ctx))


def demo_start(tz: str) -> datetime:
    """Today 10:00 local: the sun is up when the demo starts."""
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo(tz))
    return now.replace(hour=10, minute=0, second=0, microsecond=0)


KIND = SourceKind(settings=SimulatedSettings, open=_open)

"""The P1 port as a gateway source (``type = "p1"``): pyserial → framing → CRC → the daemon's pipeline.

Kept apart from the parser modules: ``p1.framing``, ``p1.crc`` and ``p1.decode`` know nothing of the
gateway; this adapter is the one place where a telegram meets the daemon.
"""

from __future__ import annotations

import threading
from typing import Annotated, Literal

from pydantic import Field

from gateway.sources import SourceContext, SourceKind, SourceSettings


class P1Settings(SourceSettings):
    """A meter read on its P1 port (DSMR 2.2-5, e-MUCS H) through a serial cable."""

    type: Literal["p1"] = "p1"
    port: str = "/dev/p1"
    baudrate: Literal["auto", 115200, 9600] = "auto"
    # override the id the meter announces (0-0:96.1.1); pseudonymous ids on the wire come later
    meter_id: str | None = None
    # "pi": a meter time further than daemon.clock_tolerance_s from the synchronised Pi clock is refused;
    # "neighbours": judged only against the telegrams around it (a simulated meter faster than real time)
    clock_check: Literal["pi", "neighbours"] = "pi"
    # the most an MBus sub-meter can pass, in its unit per hour (m³/h), per kind; a larger register step
    # between its own capture times is a glitch (gateway/submeter_plausibility.py). Defaults: gas 10
    # (a G6 meter), water 5 (a Q3 4 m³/h meter); heat, cold, other: no bound unless set here.
    max_flow: dict[Literal["gas", "water", "heat", "cold", "other"], Annotated[float, Field(gt=0, le=100_000)]] = {}

    @property
    def runs_on_real_time(self) -> bool:
        return self.clock_check == "pi"

    def serial_of(self, meter_id: str) -> str | None:
        """The equipment id the meter announces (0-0:96.1.1); an overriding meter_id is the
        installer's own name, not a serial."""
        return None if self.meter_id else meter_id

    def describe(self) -> str:
        return f"p1:{self.port}"


class SerialSource:
    """Telegrams from a serial reader into the pipeline, one at a time, until stopped."""

    def __init__(self, reader, ctx: SourceContext) -> None:
        self.reader = reader  # p1.serial_reader.SerialReader: reconnects by itself
        self._sink = ctx.sink

    @property
    def port(self) -> str | None:
        return self.reader.port

    @property
    def reconnects(self) -> int:
        return self.reader.reconnects

    def run(self, stop: threading.Event) -> None:
        for telegram in self.reader:
            self._sink.feed_telegram(telegram)
            if stop.is_set():
                return

    def close(self) -> None:
        self.reader.close()


def open_serial(port: str, baudrate: int | None, ctx: SourceContext) -> SerialSource:
    from p1.serial_reader import SerialReader

    return SerialSource(SerialReader(port, baudrate=baudrate), ctx)


def _open(settings: P1Settings, ctx: SourceContext) -> SerialSource:
    return open_serial(settings.port, None if settings.baudrate == "auto" else int(settings.baudrate), ctx)


KIND = SourceKind(settings=P1Settings, open=_open)

"""The data every source produces and every sink consumes.

``Reading`` is what one telegram (or one Flukso sample) says at one instant; ``QuarterHour`` is a
closed settlement interval (kwartier, quart d'heure). Plain slotted dataclasses: they are built once a
second on a Raspberry Pi, so they stay cheap; pydantic lives at the boundaries only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum

QUARTER = timedelta(minutes=15)


class ClockQuality(StrEnum):
    """Whose clock stamped a reading, and whether it can be trusted for bucketing."""

    METER = "meter"  # the meter's own clock (P1 0-0:1.0.0): the settlement clock
    SYNCED = "synced"  # the Pi's clock, NTP-synchronised
    UNSYNCED = "unsynced"  # the Pi's clock, not (yet) synchronised: estimated at best


class Quality(StrEnum):
    """How a closed quarter-hour's energy was obtained."""

    MEASURED = "measured"  # both boundary registers read at the boundary itself
    INTERPOLATED = "interpolated"  # a boundary interpolated between close readings
    ESTIMATED = "estimated"  # a gap: the register difference spread over the missed quarter-hours


@dataclass(slots=True, frozen=True)
class PhasePower:
    """Instantaneous per-phase figures (L1..L3); ``None`` where the meter does not give them."""

    phase: int
    import_w: float | None = None
    export_w: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None


@dataclass(slots=True, frozen=True)
class SubMeterReading:
    """An MBus channel (gas, water, heat) or pulse counter, stamped with its own time."""

    channel: int
    kind: str  # "gas" | "water" | "heat" | "cold" | "other"
    value: float
    unit: str
    time: datetime | None  # UTC; the sub-meter's own capture time


@dataclass(slots=True, frozen=True)
class Reading:
    """One observation of one meter: cumulative registers (the durable truth) and live power."""

    meter_id: str
    time: datetime  # aware, UTC
    # cumulative registers per tariff ("1", "2", ...), Wh; None = unknown (a line missing or unreadable:
    # never zero, never a reset). Only readings with every register known reach the aggregator.
    import_wh: dict[str, int | None]
    export_wh: dict[str, int | None]
    import_w: float | None = None  # instantaneous import power, >= 0
    export_w: float | None = None  # instantaneous export power, >= 0
    clock: ClockQuality = ClockQuality.METER
    source: str = "p1"
    phases: tuple[PhasePower, ...] = ()
    submeters: tuple[SubMeterReading, ...] = ()
    tariff: str | None = None  # active tariff indicator (0-0:96.14.0)
    demand_w: float | None = None  # e-MUCS 1-0:1.4.0: running quarter-hour average demand
    month_peak_w: float | None = None  # e-MUCS 1-0:1.6.0: this month's peak quarter-hour demand
    month_peak_time: datetime | None = None
    # the power the connection can carry as the meter announces it (e-MUCS limiter 0-0:17.0.0, fuse
    # 1-0:31.4.0), W; None when it announces none: the configured maximum applies
    max_power_w: float | None = None

    @property
    def import_total_wh(self) -> int:
        return sum(v for v in self.import_wh.values() if v is not None)

    @property
    def export_total_wh(self) -> int:
        return sum(v for v in self.export_wh.values() if v is not None)


@dataclass(slots=True, frozen=True)
class QuarterHour:
    """A closed quarter-hour of one meter. Identified by (meter_id, start): writes are idempotent."""

    meter_id: str
    start: datetime  # aware, UTC, on a quarter-hour boundary
    import_wh: int
    export_wh: int
    quality: Quality
    import_by_tariff: dict[str, int] = field(default_factory=dict)
    export_by_tariff: dict[str, int] = field(default_factory=dict)
    # cumulative registers at the end boundary: the baseline the next quarter-hour starts from,
    # so a restarted daemon resumes exactly where the last committed quarter-hour ended
    end_import_register: dict[str, int] = field(default_factory=dict)
    end_export_register: dict[str, int] = field(default_factory=dict)
    flags: tuple[str, ...] = ()  # e.g. "register_reset", "clock_unsynced"
    source: str = "p1"

    @property
    def end(self) -> datetime:
        return self.start + QUARTER


def floor_quarter(t: datetime) -> datetime:
    """Start of the quarter-hour containing ``t`` (UTC). Whole-hour offsets make UTC and local agree."""
    t = t.astimezone(timezone.utc)
    return t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)


def utc_iso(t: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as the health file, the live feed and the API write times."""
    return t.isoformat().replace("+00:00", "Z") if t is not None else None

"""Gas per local day (verbruik per dag, consommation journalière) from the MBus register. Pure: no I/O.

The daemon keeps, per grid meter, gas channel and local day (the store's time zone, by the gas
meter's own capture time), the day's first and last accepted register (gateway/submeter_plausibility.py
has judged them) in the store's ``gas_days`` table, written with the quarter-hour commits: one row
change per capture (every 5 minutes on DSMR 5, every hour on DSMR 4), never per telegram.

Gas used on day D is ``last(D) - last(D - 1)`` when the day before is in the table: the gas between
the last capture before midnight and the first after it counts in D, as DSMR-reader does with hourly
readings. Without the day before, it is ``last(D) - first(D)``, marked ``partial``. A confirmed reset
(a meter exchange) inside D breaks the register: only the consistent segments inside D are counted
(each segment's last minus its first reading), and the day is ``partial`` — never negative, never the
difference between two meters' registers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.model import SubMeterReading


@dataclass(frozen=True, slots=True)
class GasDay:
    """One gas channel's accepted registers over one local day (m³, times UTC)."""

    meter_id: str
    channel: int
    day: date
    unit: str
    first_m3: float
    first_time: datetime
    last_m3: float
    last_time: datetime
    segment_start_m3: float  # where the running consistent segment began: first_m3, or the first after a reset
    earlier_m3: float = 0.0  # used in the day's segments a confirmed reset closed
    resets: int = 0  # confirmed resets (meter exchanges) in the day


@dataclass(frozen=True, slots=True)
class GasUse:
    day: date
    m3: float
    partial: bool  # the day before is unknown, or the register was reset during the day


def advance(day: GasDay | None, meter_id: str, m: SubMeterReading, *, reset: bool, tz: ZoneInfo) -> GasDay | None:
    """The channel's day record after one accepted reading; a new record when the local day changed.
    None for a reading that cannot be placed (no capture time) or lies in a day before the record's
    (a clock moved back across midnight: that day is left as it was stored)."""
    if m.time is None:
        return day
    local = m.time.astimezone(tz).date()
    if day is None or local > day.day or day.unit != m.unit:
        return GasDay(meter_id, m.channel, local, m.unit, m.value, m.time, m.value, m.time, m.value,
                      resets=1 if reset and day is not None else 0)
    if local < day.day:
        return day
    if reset:
        return replace(day, last_m3=m.value, last_time=m.time, segment_start_m3=m.value, resets=day.resets + 1,
                       earlier_m3=day.earlier_m3 + max(0.0, day.last_m3 - day.segment_start_m3))
    return replace(day, last_m3=m.value, last_time=m.time)


def gas_used(days: Iterable[GasDay]) -> dict[date, GasUse]:
    """Gas used per day of one channel's records (any order), as the module's docstring says."""
    by_day = {d.day: d for d in days}
    out: dict[date, GasUse] = {}
    for day, d in sorted(by_day.items()):
        prev = by_day.get(day - timedelta(days=1))
        if d.resets == 0 and prev is not None and prev.unit == d.unit and prev.last_m3 <= d.first_m3:
            out[day] = GasUse(day, round(d.last_m3 - prev.last_m3, 3), False)
        else:
            out[day] = GasUse(day, round(d.earlier_m3 + max(0.0, d.last_m3 - d.segment_start_m3), 3), True)
    return out


def gas_per_day(days: Iterable[GasDay]) -> dict[date, GasUse]:
    """Gas used per day over every gas channel of a meter (summed; partial if any channel is)."""
    channels: dict[int, list[GasDay]] = {}
    for d in days:
        channels.setdefault(d.channel, []).append(d)
    out: dict[date, GasUse] = {}
    for ch in channels.values():
        for day, use in gas_used(ch).items():
            was = out.get(day)
            out[day] = use if was is None else GasUse(day, round(was.m3 + use.m3, 3), was.partial or use.partial)
    return out

"""Quarter-hour aggregation (kwartier, quart d'heure) from cumulative registers.

A quarter-hour's energy is the difference of the meter's cumulative registers at its two boundaries,
never a sum of power samples: the registers are what the grid operator bills, and a difference of
registers cannot lose or invent energy whatever happened in between. A boundary's registers are the
reading stamped exactly at the boundary when there is one, else interpolated linearly (in whole Wh,
rounded down, so consecutive quarter-hours always add up to the register difference) between the
readings around it.

Quality of a closed quarter-hour:
- ``measured``: both boundaries come from readings stamped at the boundary;
- ``interpolated``: a boundary was interpolated between readings at most ``max_gap`` apart;
- ``estimated``: the readings around a boundary are further apart than ``max_gap`` (an outage, a
  reboot, an unplugged cable): the register difference is spread over the missed quarter-hours in
  proportion to time, and the quarter-hour says so.

Flags ``end_interpolated`` / ``end_estimated`` say how the end boundary was obtained: it is the
next quarter-hour's start, also after a restart.

A register that goes backwards (the meter was replaced or reset) is never turned into negative
energy: the interval across the reset counts zero, the quarter-hour is flagged ``register_reset`` and
``estimated``, and counting resumes from the new register. Whether a drop is a reset or a glitch is
not decided here: the plausibility gate (gateway/plausibility.py) passes only confirmed ones, and
says so (``reset=True``) also for a confirmed jump upwards (a replaced meter with a higher register).

A gap between readings is filled with estimated quarter-hours up to ``max_fill`` of them; a longer
one (a meter clock ten years ahead, confirmed) is not spread over years of quarter-hours: counting
restarts at the new time and the energy across the gap goes to the quarter-hour it restarts in,
flagged ``gap_too_long``. A confirmed backwards clock correction (``clock_step=True``) likewise
moves the running quarter-hour to the new time, flagged ``clock_step``.

Pure: no I/O, no clock; the daemon feeds readings and commits what comes out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.logs import get_logger
from gateway.model import QUARTER, ClockQuality, Quality, QuarterHour, Reading, floor_quarter

log = get_logger("quartier.gateway.aggregator")

_US = timedelta(microseconds=1)


@dataclass(slots=True)
class _Point:
    """Registers at one instant, in the aggregator's continuous space (resets folded out)."""

    time: datetime
    imp: dict[str, int]
    exp: dict[str, int]


@dataclass(slots=True)
class _Boundary:
    time: datetime
    imp: dict[str, int]
    exp: dict[str, int]
    exact: bool
    estimated: bool


@dataclass(slots=True)
class LiveQuarter:
    """The running quarter-hour, as far as the readings so far tell."""

    meter_id: str
    start: datetime
    import_wh: int | None  # energy since the start boundary; None before a start boundary is known
    export_wh: int | None
    elapsed_s: float
    import_w: float | None
    export_w: float | None

    @property
    def remaining_s(self) -> float:
        return max(0.0, QUARTER.total_seconds() - self.elapsed_s)

    def projected_demand_w(self) -> float | None:
        """Average import power this quarter-hour will end at if the current power holds.

        The quantity the Flemish capacity tariff (capaciteitstarief) bills on: the month's highest
        quarter-hour average demand.
        """
        if self.import_wh is None:
            return None
        future_wh = (self.import_w or 0.0) * self.remaining_s / 3600.0
        return (self.import_wh + future_wh) * 4.0


@dataclass(slots=True)
class AggregatorStats:
    readings: int = 0
    out_of_order: int = 0
    resets: int = 0
    closed: int = 0
    estimated: int = 0


def _sub(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) - b.get(k, 0) for k in a.keys() | b.keys()}


def _interp(a: dict[str, int], b: dict[str, int], num: int, den: int) -> dict[str, int]:
    """a + (b - a) * num / den per tariff, rounded down (monotone, exact at the ends)."""
    return {k: a.get(k, 0) + (b.get(k, 0) - a.get(k, 0)) * num // den for k in a.keys() | b.keys()}


@dataclass(slots=True)
class QuarterHourAggregator:
    """Turns one meter's readings (in time order) into closed quarter-hours.

    ``baseline`` is the last committed quarter-hour of this meter: a restarted daemon resumes from its
    end registers, so nothing is lost or counted twice across a restart.
    """

    meter_id: str
    max_gap: timedelta = timedelta(minutes=5)
    source: str = "p1"
    baseline: QuarterHour | None = None
    max_fill: int = 96 * 35  # the most quarter-hours one reading may close (a gap of 35 days)
    stats: AggregatorStats = field(default_factory=AggregatorStats)
    _last: _Point | None = None
    _start: _Boundary | None = None
    _offset_imp: dict[str, int] = field(default_factory=dict)  # continuous = raw + offset
    _offset_exp: dict[str, int] = field(default_factory=dict)
    _pending_flags: set[str] = field(default_factory=set)
    _last_reading: Reading | None = None

    def __post_init__(self) -> None:
        b = self.baseline
        if b is not None:
            # how the committed end boundary was obtained travels in its flags, so a restart neither
            # upgrades an interpolated boundary to measured nor downgrades a measured one
            exact = not ({"end_interpolated", "end_estimated"} & set(b.flags))
            self._start = _Boundary(b.end, dict(b.end_import_register), dict(b.end_export_register),
                                    exact, "end_estimated" in b.flags)
            self._last = _Point(b.end, dict(b.end_import_register), dict(b.end_export_register))

    # -- feeding ---------------------------------------------------------------------------------

    def add(self, reading: Reading, *, reset: bool = False, clock_step: bool = False) -> list[QuarterHour]:
        """Feed one reading; return the quarter-hours it closed (usually none, one at a boundary).

        ``reset``: the registers restart here (counted zero across). ``clock_step``: the meter's clock
        was moved back (confirmed by the caller); counting goes on from the new time.
        """
        self.stats.readings += 1
        if clock_step and self._last is not None and reading.time <= self._last.time:
            self._restart_at(reading.time, "clock_step")
        elif (self._start is not None and self._last is not None
              and reading.time - self._start.time > QUARTER * (self.max_fill + 1)):
            self._restart_at(reading.time, "gap_too_long")
        last = self._last
        if last is not None and reading.time <= last.time:
            self.stats.out_of_order += 1
            log.warning(
                "reading.out_of_order",
                extra={"meter": self.meter_id, "time": reading.time.isoformat(), "last": last.time.isoformat()},
            )
            return []
        self._last_reading = reading
        imp = self._continuous(reading.import_wh, self._offset_imp)
        exp = self._continuous(reading.export_wh, self._offset_exp)
        if last is not None and (reset or _falls(imp, last.imp) or _falls(exp, last.exp)):
            # meter replaced or reset: the interval across it counts zero, never negative
            self.stats.resets += 1
            log.warning(
                "register.went_backwards",
                extra={"meter": self.meter_id, "time": reading.time.isoformat(),
                       "import_wh": reading.import_total_wh, "export_wh": reading.export_total_wh},
            )
            self._rebase(reading.import_wh, last.imp, self._offset_imp)
            self._rebase(reading.export_wh, last.exp, self._offset_exp)
            imp = self._continuous(reading.import_wh, self._offset_imp)
            exp = self._continuous(reading.export_wh, self._offset_exp)
            self._pending_flags.add("register_reset")
        if reading.clock is ClockQuality.UNSYNCED:
            self._pending_flags.add("clock_unsynced")
        point = _Point(reading.time, imp, exp)
        closed: list[QuarterHour] = []
        if self._start is None:
            if reading.time == floor_quarter(reading.time):
                self._start = _Boundary(reading.time, imp, exp, exact=True, estimated=False)
            elif last is not None and floor_quarter(last.time) != floor_quarter(reading.time):
                b = floor_quarter(reading.time)
                self._start = self._boundary_between(last, point, b)
        else:
            prev = last if last is not None else point
            nxt = self._start.time + QUARTER
            while reading.time >= nxt:
                end = (
                    _Boundary(nxt, imp, exp, exact=True, estimated=False)
                    if reading.time == nxt
                    else self._boundary_between(prev, point, nxt)
                )
                closed.append(self._close(self._start, end))
                self._start = end
                nxt = end.time + QUARTER
            if closed:
                # a flag belongs to every quarter-hour the flagged interval touched, then it is spent
                self._pending_flags.clear()
        self._last = point
        return closed

    def _restart_at(self, t: datetime, flag: str) -> None:
        """Move the running quarter-hour to the one containing ``t``: its start keeps the old start's
        registers (nothing is lost), estimated, since where the energy fell in time is not known."""
        log.warning("aggregator.restart", extra={"meter": self.meter_id, "at": t.isoformat(), "flag": flag,
                                                 "last": self._last.time.isoformat() if self._last else "none"})
        if self._start is not None:
            s = self._start
            self._start = _Boundary(floor_quarter(t), s.imp, s.exp, exact=False, estimated=True)
        if self._last is not None:  # the registers go on from the last reading, just before ``t``
            self._last = _Point(t - _US, self._last.imp, self._last.exp)
        self._pending_flags.add(flag)

    def _boundary_between(self, a: _Point, b: _Point, at: datetime) -> _Boundary:
        num = (at - a.time) // _US
        den = (b.time - a.time) // _US
        estimated = (b.time - a.time) > self.max_gap
        return _Boundary(at, _interp(a.imp, b.imp, num, den), _interp(a.exp, b.exp, num, den), False, estimated)

    def _close(self, start: _Boundary, end: _Boundary) -> QuarterHour:
        imp = _sub(end.imp, start.imp)
        exp = _sub(end.exp, start.exp)
        if start.estimated or end.estimated or "register_reset" in self._pending_flags:
            quality = Quality.ESTIMATED
        elif start.exact and end.exact:
            quality = Quality.MEASURED
        else:
            quality = Quality.INTERPOLATED
        flags = set(self._pending_flags)
        if not end.exact:
            flags.add("end_estimated" if end.estimated else "end_interpolated")
        qh = QuarterHour(
            meter_id=self.meter_id,
            start=start.time,
            import_wh=sum(imp.values()),
            export_wh=sum(exp.values()),
            quality=quality,
            import_by_tariff=imp,
            export_by_tariff=exp,
            end_import_register=_sub(end.imp, self._offset_imp),
            end_export_register=_sub(end.exp, self._offset_exp),
            flags=tuple(sorted(flags)),
            source=self.source,
        )
        self.stats.closed += 1
        if quality is Quality.ESTIMATED:
            self.stats.estimated += 1
        return qh

    @staticmethod
    def _continuous(raw: dict[str, int], offset: dict[str, int]) -> dict[str, int]:
        if not offset:
            return raw
        return {k: raw.get(k, 0) + offset.get(k, 0) for k in raw.keys() | offset.keys()}

    @staticmethod
    def _rebase(raw: dict[str, int], last_cont: dict[str, int], offset: dict[str, int]) -> None:
        """Choose offsets so the reset reading continues exactly where the last one stood."""
        for k in raw.keys() | last_cont.keys():
            offset[k] = last_cont.get(k, 0) - raw.get(k, 0)

    # -- live view -------------------------------------------------------------------------------

    def live(self) -> LiveQuarter | None:
        """The running quarter-hour so far (for the consume-now signal and the capacity tariff)."""
        r = self._last_reading
        last = self._last
        if r is None or last is None:
            return None
        start = floor_quarter(last.time)
        imp = exp = None
        if self._start is not None and self._start.time == start:
            imp = sum(_sub(last.imp, self._start.imp).values())
            exp = sum(_sub(last.exp, self._start.exp).values())
        return LiveQuarter(
            meter_id=self.meter_id,
            start=start,
            import_wh=imp,
            export_wh=exp,
            elapsed_s=(last.time - start).total_seconds(),
            import_w=r.import_w,
            export_w=r.export_w,
        )


def _falls(now: dict[str, int], before: dict[str, int]) -> bool:
    return any(now.get(k, 0) < v for k, v in before.items())

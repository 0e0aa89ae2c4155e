"""Collective alerts (« alerte collective », « collectieve oproep »): which ones the nodes must know,
and what each one changed. Pure: no I/O, no clock (times come in as arguments).

An alert asks every home of an operation to ``reduce`` consumption now (the cabin's evening peak:
the nodes turn red) or to ``consume`` now (a sunny noon: green), from ``start`` for some minutes. The
server publishes every alert that is neither ended nor expired (active and scheduled) as one retained
message; each node decides on its own clock which one is active, so a scheduled alert starts on time
without another message, and an expired one is never shown.

The effect of an alert is measured on the ledger's quarter-hours. The **baseline** of a window is the
mean, over the previous four weeks, of the same weekday and local time (the same window shifted by
7, 14, 21 and 28 days on the wall clock, so DST does not move it), counting only the weeks whose
window holds no other alert and has every quarter-hour the alert's window has. Fewer than four such
weeks: the baseline is the mean of those there are and ``baseline_weeks`` says how many; none: the
baseline and the change are ``None`` ("not enough data"). The members' figure is the sum of the
members' imports over the quarter-hours where every member reported; the observer's (the cabin or
feeder meter) is its own import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

QUARTER = timedelta(minutes=15)
BASELINE_WEEKS = 4
MAX_MINUTES = 1440
MAX_SCHEDULE_AHEAD = timedelta(days=60)  # a scheduled alert further ahead than this is refused
BASELINE_RULE = ("mean of the same weekday and local time over the previous 4 weeks, weeks with another "
                 "alert or missing quarter-hours left out")


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One alert as the server keeps it. ``ended_at``: ended by the operator before ``until``."""

    id: str
    operation: str
    kind: str  # "reduce" | "consume"
    message: str
    start: datetime
    until: datetime
    created_at: datetime
    ended_at: datetime | None = None

    @property
    def effective_until(self) -> datetime:
        """The end of the window the alert really ran (an early end shortens it)."""
        return min(self.until, self.ended_at) if self.ended_at is not None else self.until

    def status(self, now: datetime) -> str:
        """``scheduled``, ``active``, ``ended`` (by the operator) or ``expired``."""
        if self.ended_at is not None and self.ended_at <= now:
            return "ended"
        if now >= self.until:
            return "expired"
        return "active" if now >= self.start else "scheduled"


class AlertInputError(ValueError):
    """A request the server refuses (the API answers 422 with this message)."""


def check_request(start: datetime | None, minutes: int, now: datetime) -> tuple[datetime, datetime]:
    """The window of a new alert: from ``start`` (default now) for ``minutes``. Refused: a naive
    start, a window already over, or one further ahead than :data:`MAX_SCHEDULE_AHEAD`."""
    if not 1 <= minutes <= MAX_MINUTES:
        raise AlertInputError(f"minutes: between 1 and {MAX_MINUTES}")
    if start is None:
        start = now
    elif start.tzinfo is None:
        raise AlertInputError("start: give a time zone (e.g. 2026-06-21T18:00:00+02:00)")
    start = start.astimezone(UTC).replace(microsecond=0)
    until = start + timedelta(minutes=minutes)
    if until <= now:
        raise AlertInputError("start: this alert would already be over")
    if start - now > MAX_SCHEDULE_AHEAD:
        raise AlertInputError(f"start: at most {MAX_SCHEDULE_AHEAD.days} days ahead")
    return start, until


def to_publish(records: Iterable[AlertRecord], now: datetime, limit: int) -> list[AlertRecord]:
    """What the retained message carries: alerts neither ended nor expired, soonest first."""
    live = [r for r in records if r.status(now) in ("active", "scheduled")]
    return sorted(live, key=lambda r: (r.start, r.created_at))[:limit]


def last_finished(records: Iterable[AlertRecord], now: datetime) -> AlertRecord | None:
    """The alert whose window ended most recently (its result is what the members' pages show)."""
    done = [r for r in records if r.effective_until <= now and r.effective_until > r.start]
    return max(done, key=lambda r: r.effective_until, default=None)


# -- effect ------------------------------------------------------------------------------------------


def floor_quarter(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)


def window_quarters(start: datetime, until: datetime) -> list[datetime]:
    """The quarter-hours an alert window touches: from the one holding ``start`` to the one before ``until``."""
    out = []
    q = floor_quarter(start)
    while q < until:
        out.append(q)
        q += QUARTER
    return out


def shifted(t: datetime, weeks: int, tz: ZoneInfo) -> datetime:
    """``t`` moved back ``weeks`` weeks on the local wall clock (same weekday and local time)."""
    local = t.astimezone(tz)
    return (local - timedelta(days=7 * weeks)).replace(tzinfo=None).replace(tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class SeriesEffect:
    kwh: float | None
    baseline_kwh: float | None
    change_pct: float | None
    baseline_weeks: int
    quarter_hours: int  # quarter-hours of the window that had data


def series_effect(window: Sequence[datetime], series: Mapping[datetime, float], tz: ZoneInfo,
                  other_windows: Sequence[tuple[datetime, datetime]] = (), weeks: int = BASELINE_WEEKS) -> SeriesEffect:
    """The energy (kWh) of ``series`` (Wh per quarter-hour start) over ``window`` against its baseline."""
    have = [q for q in window if q in series]
    if not have:
        return SeriesEffect(None, None, None, 0, 0)
    kwh = sum(series[q] for q in have) / 1000
    sums = []
    for k in range(1, weeks + 1):
        qs = [shifted(q, k, tz) for q in have]
        lo, hi = qs[0], qs[-1] + QUARTER
        if any(s < hi and lo < e for s, e in other_windows):
            continue  # that week had an alert of its own: not a baseline
        if all(q in series for q in qs):
            sums.append(sum(series[q] for q in qs) / 1000)
    if not sums:
        return SeriesEffect(round(kwh, 3), None, None, 0, len(have))
    base = sum(sums) / len(sums)
    change = None if base <= 0 else round((kwh - base) / base * 100, 1)
    return SeriesEffect(round(kwh, 3), round(base, 3), change, len(sums), len(have))


def effect(record: AlertRecord, members: Mapping[datetime, float], observer: Mapping[datetime, float] | None,
           tz: ZoneInfo, all_records: Iterable[AlertRecord]) -> dict[str, object]:
    """The ``effect`` object of ``GET /api/v1/operations/{op}/alerts`` for one alert."""
    window = window_quarters(record.start, record.effective_until)
    others = [(floor_quarter(r.start), r.effective_until) for r in all_records
              if r.id != record.id and r.effective_until > r.start]
    m = series_effect(window, members, tz, others)
    o = series_effect(window, observer, tz, others) if observer is not None else SeriesEffect(None, None, None, 0, 0)
    return {
        "members_kwh": m.kwh, "members_baseline_kwh": m.baseline_kwh, "members_change_pct": m.change_pct,
        "observer_kwh": o.kwh, "observer_baseline_kwh": o.baseline_kwh, "observer_change_pct": o.change_pct,
        "baseline_weeks": {"members": m.baseline_weeks, "observer": o.baseline_weeks},
        "quarter_hours": len(window), "baseline": BASELINE_RULE,
    }


def members_series(rows: Iterable[tuple[str, datetime, int]], members: Sequence[str]) -> dict[datetime, float]:
    """Sum of the members' imports per quarter-hour, only where every member reported."""
    want = set(members)
    by_q: dict[datetime, dict[str, int]] = {}
    for member, start, import_wh in rows:
        if member in want:
            by_q.setdefault(start, {})[member] = import_wh
    return {q: float(sum(v.values())) for q, v in by_q.items() if len(v) == len(want)}

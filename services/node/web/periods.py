"""The page's history: a day (by hour), a week or a month (by day), a year (by month). Pure: no I/O.

Built from what the store keeps durably — closed quarter-hours for a day, the daily and monthly
totals for the rest — so a year is twelve rows, not 35,000. Euros only where the prices are
configured (``web.grid_price_eur_kwh``, ``web.shared_price_eur_kwh``): energy from the grid at the
supplier's price, shared energy at the community's. The store has no day/night split, so there is
one price per source of energy, not per meter tariff.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from services.node.web.figures import Prices, local_midnight
from services.node.web.state import iso

Period = Literal["day", "week", "month", "year"]


@dataclass(frozen=True, slots=True)
class Span:
    """One period: its local bounds, its buckets' starts, and the neighbouring periods' dates."""

    period: str
    label: str
    start: datetime
    end: datetime
    buckets: tuple[datetime, ...]
    prev: date
    next: date


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _add_months(d: date, n: int) -> date:
    m = d.year * 12 + d.month - 1 + n
    return date(m // 12, m % 12 + 1, 1)


def span(period: str, day: date, tz: ZoneInfo) -> Span:
    """The local day, ISO week (Monday first), month or year holding ``day``."""
    if period == "day":
        start = local_midnight(day, tz)
        end = local_midnight(day + timedelta(days=1), tz)
        # hours by the clock on the wall: 23 or 25 of them on a DST day (UTC steps, shown locally)
        hours, t = [], start
        while t < end:
            hours.append(t)
            t = (t.astimezone(ZoneInfo("UTC")) + timedelta(hours=1)).astimezone(tz)
        return Span("day", day.isoformat(), start, end, tuple(hours), day - timedelta(days=1), day + timedelta(days=1))
    if period == "week":
        first = day - timedelta(days=day.weekday())
        days = [first + timedelta(days=i) for i in range(7)]
        iso_year, week, _ = first.isocalendar()
        return Span("week", f"{iso_year}-W{week:02d}", local_midnight(first, tz), local_midnight(first + timedelta(days=7), tz),
                    tuple(local_midnight(d, tz) for d in days), first - timedelta(days=7), first + timedelta(days=7))
    if period == "month":
        first = _month_start(day)
        nxt = _add_months(first, 1)
        days = [first + timedelta(days=i) for i in range((nxt - first).days)]
        return Span("month", f"{first.year:04d}-{first.month:02d}", local_midnight(first, tz), local_midnight(nxt, tz),
                    tuple(local_midnight(d, tz) for d in days), _add_months(first, -1), nxt)
    if period == "year":
        first = date(day.year, 1, 1)
        months = [date(day.year, m, 1) for m in range(1, 13)]
        return Span("year", f"{day.year:04d}", local_midnight(first, tz), local_midnight(date(day.year + 1, 1, 1), tz),
                    tuple(local_midnight(m, tz) for m in months), date(day.year - 1, 1, 1), date(day.year + 1, 1, 1))
    raise ValueError(f"period must be day, week, month or year, not {period!r}")


@dataclass(frozen=True, slots=True)
class Energy:
    """Energy of one bucket of one meter (Wh) and how many of its quarter-hours were estimated."""

    start: datetime
    import_wh: int
    export_wh: int
    estimated: int = 0


def _bucket_of(t: datetime, sp: Span) -> int | None:
    """Index of the bucket holding ``t`` (the last start at or before it)."""
    if t < sp.start or t >= sp.end:
        return None
    lo, hi = 0, len(sp.buckets) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sp.buckets[mid] <= t:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _eur(wh: int, price: float | None) -> float | None:
    return None if price is None else round(wh / 1000 * price, 2)


def history_view(
    sp: Span, *, tz: ZoneInfo, meter_id: str | None, energy: Iterable[Energy], shared: Mapping[datetime, int],
    production: Iterable[Energy] | None, prices: Prices, basis: str,
) -> dict:
    """``GET /api/v1/history``: one row per bucket and the period's totals.

    ``shared_wh``: what the community allocated to this member (the community share of its
    consumption); ``production_wh`` and ``self_consumption_wh`` (production - export, what the home
    used of its own panels) only with a production meter; ``consumption_wh`` = import +
    self-consumption, the home's use whatever its source."""
    n = len(sp.buckets)
    imp, exp, est, sh = [0] * n, [0] * n, [0] * n, [0] * n
    seen = [False] * n
    for e in energy:
        i = _bucket_of(e.start, sp)
        if i is not None:
            imp[i] += e.import_wh
            exp[i] += e.export_wh
            est[i] += e.estimated
            seen[i] = True
    for t, wh in shared.items():
        i = _bucket_of(t, sp)
        if i is not None:
            sh[i] += wh
    prod: list[int] | None = None
    if production is not None:
        prod = [0] * n
        for e in production:
            i = _bucket_of(e.start, sp)
            if i is not None:
                prod[i] += e.export_wh  # a production meter's export register is what the panels made

    def row(start: datetime | None, end: datetime | None, i_wh: int, e_wh: int, s_wh: int, p_wh: int | None,
            n_est: int, has: bool) -> dict:
        s_wh = min(s_wh, i_wh)
        self_wh = None if p_wh is None else max(0, p_wh - e_wh)
        out = {
            "start": iso(start), "end": iso(end), "has_data": has,
            "import_wh": i_wh, "export_wh": e_wh, "shared_wh": s_wh, "grid_import_wh": i_wh - s_wh,
            "production_wh": p_wh, "self_consumption_wh": self_wh,
            "consumption_wh": None if self_wh is None else i_wh + self_wh,
            "estimated_quarter_hours": n_est,
            "grid_cost_eur": _eur(i_wh - s_wh, prices.grid_eur_kwh),
            "shared_cost_eur": _eur(s_wh, prices.shared_eur_kwh),
        }
        if start is None:
            del out["start"], out["end"]
        return out

    rows = []
    for i, b in enumerate(sp.buckets):
        end = sp.buckets[i + 1] if i + 1 < n else sp.end
        rows.append(row(b, end, imp[i], exp[i], sh[i], None if prod is None else prod[i], est[i], seen[i]))
    total = row(None, None, sum(imp), sum(exp), sum(r["shared_wh"] for r in rows),
                None if prod is None else sum(prod), sum(est), any(seen))
    return {
        "period": sp.period, "label": sp.label, "from": iso(sp.start), "to": iso(sp.end), "timezone": tz.key,
        "meter_id": meter_id, "basis": basis, "provisional": True,
        "prices": {"grid_eur_kwh": prices.grid_eur_kwh, "shared_eur_kwh": prices.shared_eur_kwh},
        "previous": sp.prev.isoformat(), "next": sp.next.isoformat(),
        "buckets": rows, "totals": total,
    }

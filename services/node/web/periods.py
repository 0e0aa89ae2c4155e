"""The page's history: a day (by hour), a week or a month (by day), a year (by month). Pure: no I/O.

Built from what the store keeps durably — closed quarter-hours for a day, the daily and monthly
totals for the rest — so a year is twelve rows, not 35,000. Euros only where the prices are
configured (``web.grid_price_eur_kwh``, ``web.shared_price_eur_kwh``): energy from the grid at the
supplier's price, shared energy at the community's.

Per meter tariff (day/night, dal/normaal): the quarter-hours and the store's totals keep the import
per tariff, so grid energy is priced per tariff (``web.grid_price_eur_kwh_by_tariff``, the single
price for a tariff without its own). Shared energy is taken off the tariff it was received in, quarter-
hour by quarter-hour. Where the split is unknown (totals whose quarter-hours were pruned before the
store kept it) nothing is guessed: that bucket has no per-tariff figures and is priced with the single
price, or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.gas_days import GasUse
from gateway.store import add_split
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
    """Energy of one bucket of one meter (Wh), how many of its quarter-hours were estimated, and the
    import and export per meter tariff (None: unknown)."""

    start: datetime
    import_wh: int
    export_wh: int
    estimated: int = 0
    import_by_tariff: Mapping[str, int] | None = None
    export_by_tariff: Mapping[str, int] | None = None


Split = dict[str, int] | None  # Wh per tariff; None: unknown


def shared_by_tariff(shared_wh: int, import_by_tariff: Mapping[str, int]) -> dict[str, int]:
    """One quarter-hour's shared energy by tariff: all of it in the tariff that ran (the usual case);
    in a quarter-hour that straddles a tariff switch, in proportion to its import per tariff, in whole
    Wh that add up (largest remainder). Never more than the import of the tariff."""
    total = sum(import_by_tariff.values())
    shared_wh = min(shared_wh, total)
    if shared_wh <= 0:
        return {}
    exact = {t: shared_wh * wh / total for t, wh in import_by_tariff.items() if wh > 0}
    out = {t: int(x) for t, x in exact.items()}
    for t in sorted(exact, key=lambda t: (out[t] - exact[t], t))[: shared_wh - sum(out.values())]:
        out[t] += 1
    return out


def grid_costs(grid_wh: int, grid_by_tariff: Split, prices: Prices) -> tuple[float | None, dict[str, float | None] | None]:
    """EUR of grid energy (not rounded): per tariff where the split is known (each tariff at its own
    price, else the single one), in total from those, or from the single price where it is not."""
    if grid_by_tariff is None:
        single = prices.grid_eur_kwh
        return (None if single is None else grid_wh / 1000 * single), None
    per = {t: (None if prices.grid_price(t) is None else wh / 1000 * prices.grid_price(t))
           for t, wh in sorted(grid_by_tariff.items())}
    if not per:
        return (0.0 if prices.any_grid_price else None), {}
    total = None if any(v is None for v in per.values()) else sum(per.values())  # type: ignore[misc]
    return total, per


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


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def history_view(
    sp: Span, *, tz: ZoneInfo, meter_id: str | None, energy: Iterable[Energy], shared: Mapping[datetime, int],
    production: Iterable[Energy] | None, prices: Prices, basis: str,
    qh_tariffs: Mapping[datetime, Mapping[str, int]] | None = None, tariff_names: Mapping[str, str] | None = None,
    gas: Mapping[date, GasUse] | None = None,
) -> dict:
    """``GET /api/v1/history``: one row per bucket and the period's totals.

    ``shared_wh``: what the community allocated to this member (the community share of its
    consumption); ``production_wh`` and ``self_consumption_wh`` (production - export, what the home
    used of its own panels) only with a production meter; ``consumption_wh`` = import +
    self-consumption, the home's use whatever its source. ``import_by_tariff_wh`` and
    ``grid_import_by_tariff_wh`` (import - shared) and ``grid_cost_by_tariff_eur`` where the split is known;
    ``qh_tariffs``: each quarter-hour's import per tariff, to take shared energy off its tariff.
    ``gas``: gas used per local day (gateway/gas_days.py), as ``gas_m3`` per day or month bucket and in
    the totals (a day period: in the totals only), null where unknown, ``gas_partial`` where a day counted
    is not whole."""
    n = len(sp.buckets)
    imp, exp, est, sh = [0] * n, [0] * n, [0] * n, [0] * n
    imp_t: list[Split] = [{} for _ in range(n)]
    exp_t: list[Split] = [{} for _ in range(n)]
    sh_t: list[Split] = [{} for _ in range(n)]
    seen = [False] * n
    for e in energy:
        i = _bucket_of(e.start, sp)
        if i is not None:
            imp[i] += e.import_wh
            exp[i] += e.export_wh
            est[i] += e.estimated
            imp_t[i] = add_split(imp_t[i], e.import_by_tariff)
            exp_t[i] = add_split(exp_t[i], e.export_by_tariff)
            seen[i] = True
    for t, wh in shared.items():
        i = _bucket_of(t, sp)
        if i is not None:
            sh[i] += wh
            split = (qh_tariffs or {}).get(t)
            sh_t[i] = add_split(sh_t[i], None if split is None else shared_by_tariff(wh, split))
    prod: list[int] | None = None
    if production is not None:
        prod = [0] * n
        for e in production:
            i = _bucket_of(e.start, sp)
            if i is not None:
                prod[i] += e.export_wh  # a production meter's export register is what the panels made

    def row(start: datetime | None, end: datetime | None, i_wh: int, e_wh: int, s_wh: int, p_wh: int | None,
            n_est: int, has: bool, i_t: Split, e_t: Split, s_t: Split, cost: float | None = None) -> dict:
        """One bucket or the totals; ``cost``: the totals' sum of the buckets' (else priced here)."""
        s_wh = min(s_wh, i_wh)
        self_wh = None if p_wh is None else max(0, p_wh - e_wh)
        grid_t = None if i_t is None or s_t is None else {k: max(0, v - s_t.get(k, 0)) for k, v in i_t.items()}
        own_cost, per = grid_costs(i_wh - s_wh, grid_t, prices)
        cost = own_cost if start is not None else cost
        out = {
            "start": iso(start), "end": iso(end), "has_data": has,
            "import_wh": i_wh, "export_wh": e_wh, "shared_wh": s_wh, "grid_import_wh": i_wh - s_wh,
            "production_wh": p_wh, "self_consumption_wh": self_wh,
            "consumption_wh": None if self_wh is None else i_wh + self_wh,
            "estimated_quarter_hours": n_est,
            "grid_cost_eur": _round(cost),
            "shared_cost_eur": _eur(s_wh, prices.shared_eur_kwh),
            "import_by_tariff_wh": i_t, "export_by_tariff_wh": e_t, "grid_import_by_tariff_wh": grid_t,
            "grid_cost_by_tariff_eur": None if per is None else {k: _round(v) for k, v in per.items()},
        }
        if start is None:
            del out["start"], out["end"]
        else:
            out["_cost"] = cost  # unrounded, for the totals
        return out

    rows = []
    for i, b in enumerate(sp.buckets):
        end = sp.buckets[i + 1] if i + 1 < n else sp.end
        rows.append(row(b, end, imp[i], exp[i], sh[i], None if prod is None else prod[i], est[i], seen[i],
                        imp_t[i], exp_t[i], sh_t[i]))
    # the period's euros: each bucket priced as well as its data allows (per tariff, or the single price)
    costs = [r.pop("_cost") for r in rows]
    total_cost = None if any(c is None for c in costs) else sum(c for c in costs if c is not None)
    total_imp_t: Split = {}
    total_exp_t: Split = {}
    total_sh_t: Split = {}
    for i in range(n):
        total_imp_t, total_exp_t = add_split(total_imp_t, imp_t[i]), add_split(total_exp_t, exp_t[i])
        total_sh_t = add_split(total_sh_t, sh_t[i])
    total = row(None, None, sum(imp), sum(exp), sum(r["shared_wh"] for r in rows),
                None if prod is None else sum(prod), sum(est), any(seen), total_imp_t, total_exp_t, total_sh_t, total_cost)
    gas = gas or {}
    for i, r in enumerate(rows):
        r["gas_m3"], r["gas_partial"] = _gas_of(gas, _bucket_days(sp, i))
    total["gas_m3"], total["gas_partial"] = _gas_of(gas, [d for i in range(n) for d in _bucket_days(sp, i)]
                                                    if sp.period != "day" else [sp.start.date()])
    return {
        "period": sp.period, "label": sp.label, "from": iso(sp.start), "to": iso(sp.end), "timezone": tz.key,
        "meter_id": meter_id, "basis": basis, "provisional": True,
        "prices": {"grid_eur_kwh": prices.grid_eur_kwh, "shared_eur_kwh": prices.shared_eur_kwh,
                   "grid_eur_kwh_by_tariff": dict(prices.grid_eur_kwh_by_tariff)},
        "tariff_names": dict(tariff_names or {}),
        "previous": sp.prev.isoformat(), "next": sp.next.isoformat(),
        "buckets": rows, "totals": total,
    }


def _bucket_days(sp: Span, i: int) -> list[date]:
    """The local days a bucket holds: its day (week, month), its month's days (year), none (a day's hours)."""
    if sp.period == "day":
        return []
    first = sp.buckets[i].date()
    if sp.period != "year":
        return [first]
    nxt = _add_months(first, 1)
    return [first + timedelta(days=k) for k in range((nxt - first).days)]


def _gas_of(gas: Mapping[date, GasUse], days: Iterable[date]) -> tuple[float | None, bool]:
    """m³ used over these days (None when none is known) and whether any of them is partial."""
    uses = [gas[d] for d in days if d in gas]
    if not uses:
        return None, False
    return round(sum(u.m3 for u in uses), 3), any(u.partial for u in uses)

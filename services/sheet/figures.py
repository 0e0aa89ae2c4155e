"""The sheet's figures (pure: data in, figures out): the month's totals, the shared energy and the best
hours to use electricity.

The best hours are where surplus was highest on average over the month: the community's energy that
went back to the grid (``to_grid_wh`` of the allocation) when known, else the member's own injection
(a producer's own surplus). Hours at or above half of the best hour's average make the "best hours".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from services.languages import LANGS

BEST_SHARE = 0.5  # hours with at least half the best hour's average surplus are "best hours"
MIN_SURPLUS_WH = 50.0  # below this average per hour, no hour stands out


# -- figures (pure) --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllocatedQuarter:
    """One quarter-hour of a provisional allocation, seen from one member."""

    start: datetime
    received_wh: int  # shared energy allocated to this member
    to_grid_wh: int  # the community's surplus that nobody used (returned to the grid)


@dataclass(frozen=True, slots=True)
class SheetFigures:
    meter_id: str
    month: str  # YYYY-MM
    import_wh: int
    export_wh: int
    quarter_hours: int  # closed quarter-hours stored for the month
    expected_quarter_hours: int  # how many the month has (2,976 in a 31-day month, ±4 at a DST change)
    estimated: int  # of them estimated (an outage was bridged from the meter's registers)
    days_with_data: int
    days_in_month: int
    shared_wh: int | None  # None: not known (no allocation data for this member and month)
    shared_quarter_hours: int  # quarter-hours the allocation covered
    grid_price: float | None  # EUR/kWh
    community_price: float | None
    hourly_surplus_wh: tuple[float, ...]  # 24 values: average Wh of surplus in each local hour of a day
    surplus_basis: str | None  # "community", "own", or None (no surplus data)
    best_hours: tuple[tuple[int, int], ...]  # [start, end) local hours, best first
    sharing_fee_eur_year: float | None = None  # the supplier's fee for taking part in sharing, per year

    @property
    def sharing_fee_eur(self) -> float:
        """The supplier's sharing fee for this month's days (fee x days / 365)."""
        return round((self.sharing_fee_eur_year or 0.0) * self.days_in_month / 365, 2)

    @property
    def savings_eur(self) -> float | None:
        """Honest savings: shared kWh x (supplier's energy price - community's price) - the month's
        part of the supplier's sharing fee; negative when sharing cost the member money."""
        if self.shared_wh is None or self.grid_price is None or self.community_price is None:
            return None
        return round(self.shared_wh / 1000 * (self.grid_price - self.community_price) - self.sharing_fee_eur, 2)

    @property
    def shared_share(self) -> float | None:
        """Shared energy / electricity taken from the grid (the member's self-sufficiency)."""
        if self.shared_wh is None or not self.import_wh:
            return None
        return self.shared_wh / self.import_wh


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    year, m = int(month[:4]), int(month[5:7])
    first = datetime(year, m, 1, tzinfo=tz)
    nxt = datetime(year + m // 12, m % 12 + 1, 1, tzinfo=tz)
    return first, nxt


def hourly_profile(points: Iterable[tuple[datetime, float]], tz: ZoneInfo, days: int) -> tuple[float, ...]:
    """Average Wh per local hour of the day over ``days`` days, from (quarter-hour start, Wh) points."""
    sums = [0.0] * 24
    for start, wh in points:
        sums[start.astimezone(tz).hour] += wh
    return tuple(s / days if days else 0.0 for s in sums)


def best_hours(profile: Sequence[float], *, share: float = BEST_SHARE, min_wh: float = MIN_SURPLUS_WH,
               limit: int = 2) -> tuple[tuple[int, int], ...]:
    """Runs of consecutive hours at or above ``share`` × the best hour, the ``limit`` largest first
    (by surplus); nothing when even the best hour is below ``min_wh``."""
    top = max(profile, default=0.0)
    if top < min_wh:
        return ()
    runs: list[tuple[int, int]] = []
    h = 0
    while h < 24:
        if profile[h] >= share * top:
            start = h
            while h < 24 and profile[h] >= share * top:
                h += 1
            runs.append((start, h))
        else:
            h += 1
    runs.sort(key=lambda r: -sum(profile[r[0]:r[1]]))
    return tuple(sorted(runs[:limit]))


def month_figures(
    *, meter_id: str, month: str, tz: ZoneInfo, import_wh: int, export_wh: int, quarter_hours: int,
    expected_quarter_hours: int, estimated: int, days_with_data: int,
    own_quarter_hours: Sequence[tuple[datetime, int, int]],
    allocation: Sequence[AllocatedQuarter] | None,
    grid_price: float | None = None, community_price: float | None = None, sharing_fee_eur_year: float | None = None,
) -> SheetFigures:
    """The sheet's figures from the month's totals, the member's quarter-hours (start, import_wh,
    export_wh) and, when known, the member's provisional allocation."""
    first, nxt = month_bounds(month, tz)
    days = (nxt.date() - first.date()).days
    in_month = [a for a in (allocation or ()) if first <= a.start < nxt]
    if in_month:
        shared: int | None = sum(a.received_wh for a in in_month)
        profile = hourly_profile(((a.start, a.to_grid_wh) for a in in_month), tz, days_with_data or days)
        basis: str | None = "community"
    else:
        shared = None
        own = [(s, exp) for s, _imp, exp in own_quarter_hours if first <= s < nxt]
        profile = hourly_profile(own, tz, days_with_data or days)
        basis = "own" if own and any(wh for _, wh in own) else None
    return SheetFigures(
        meter_id=meter_id, month=month, import_wh=import_wh, export_wh=export_wh, quarter_hours=quarter_hours,
        expected_quarter_hours=expected_quarter_hours, estimated=estimated, days_with_data=days_with_data,
        days_in_month=days, shared_wh=shared, shared_quarter_hours=len(in_month), grid_price=grid_price,
        community_price=community_price, hourly_surplus_wh=profile, surplus_basis=basis,
        sharing_fee_eur_year=sharing_fee_eur_year,
        best_hours=best_hours(profile) if basis else (),
    )


def allocation_for_member(data: Mapping[str, Any], member_id: str) -> list[AllocatedQuarter]:
    """This member's quarter-hours from ``quartier allocate``'s JSON output. Raises ``ValueError`` with
    a reason a user can act on."""
    qhs = data.get("quarter_hours") if isinstance(data, Mapping) else None
    if not isinstance(qhs, list):
        raise ValueError("not the output of `quartier allocate` (no quarter_hours list)")
    out = []
    seen = False
    for i, q in enumerate(qhs):
        try:
            start = datetime.fromisoformat(str(q["start"]).replace("Z", "+00:00"))
            alloc = q["allocated_wh"]
            to_grid = int(q["to_grid_wh"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"quarter_hours[{i}]: missing or bad field ({exc})") from None
        if start.tzinfo is None:
            raise ValueError(f"quarter_hours[{i}].start has no UTC offset")
        seen = seen or member_id in alloc
        out.append(AllocatedQuarter(start, int(alloc.get(member_id, 0)), to_grid))
    if qhs and not seen:
        members = sorted({m for q in qhs for m in q.get("allocated_wh", {})})
        raise ValueError(f"member {member_id!r} is not in the allocation (members: {', '.join(members[:10])})")
    return out

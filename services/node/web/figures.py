"""The history and allocation answers of the API, as plain JSON objects. Pure: no I/O.

Every sharing figure is *provisional* (the grid operator computes the binding allocation monthly).
Without fleet data the node knows only its own meter: it says so (``basis = "own_meter"``), counts
shared energy as 0 and leaves undefined ratios ``null``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.model import QuarterHour
from services.node.web.fleet import MemberQuarterHour, OperationSetup
from services.node.web.state import iso

NO_FLEET_NOTE = (
    "No fleet data: these figures come from this meter alone (its own import and export). Shared energy "
    "counts as 0 until fleet sync brings the operation's quarter-hours; ratios without a denominator are null."
)
FLEET_NOTE = (
    "Provisional allocation over the whole operation's quarter-hours (by the community server through "
    "fleet sync, or on this node from the community file); the grid operator's monthly figures replace it."
)


@dataclass(frozen=True, slots=True)
class Prices:
    """EUR per kWh, for the savings figure; both needed. Honest savings: shared x (supplier's energy
    price - community's price) - the supplier's sharing fee for the days of the period (fee x days /
    365), since network costs are paid either way; negative: sharing cost the member money."""

    grid_eur_kwh: float | None = None
    shared_eur_kwh: float | None = None
    sharing_fee_eur_year: float | None = None
    # per meter tariff ("1", "2"): precedes ``grid_eur_kwh`` for that tariff's import
    grid_eur_kwh_by_tariff: Mapping[str, float] = field(default_factory=dict)

    def grid_price(self, tariff: str) -> float | None:
        """The supplier's price of a kWh imported in ``tariff``: its own, else the single grid price."""
        return self.grid_eur_kwh_by_tariff.get(tariff, self.grid_eur_kwh)

    @property
    def any_grid_price(self) -> bool:
        return self.grid_eur_kwh is not None or bool(self.grid_eur_kwh_by_tariff)

    def savings(self, shared_wh: int, days: float = 0.0) -> float | None:
        if self.grid_eur_kwh is None or self.shared_eur_kwh is None:
            return None
        return round(shared_wh / 1000 * (self.grid_eur_kwh - self.shared_eur_kwh) - self.fee(days), 2)

    def fee(self, days: float) -> float:
        return round((self.sharing_fee_eur_year or 0.0) * days / 365, 2)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def period_bounds(period: str, day: date, tz: ZoneInfo) -> tuple[datetime, datetime, str]:
    """Local day or month containing ``day``: (start, end, label "YYYY-MM-DD" / "YYYY-MM")."""
    if period == "day":
        return local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz), day.isoformat()
    if period == "month":
        first = day.replace(day=1)
        nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return local_midnight(first, tz), local_midnight(nxt, tz), f"{first.year:04d}-{first.month:02d}"
    raise ValueError(f"period must be 'day' or 'month', not {period!r}")


def ratio(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def quarter_hours_view(
    qhs: Sequence[QuarterHour], member: Mapping[datetime, MemberQuarterHour], *, start: datetime, end: datetime,
    tz: ZoneInfo, meter_id: str | None, fleet_setup: OperationSetup | None,
) -> dict:
    """``GET /api/v1/quarter-hours``: closed quarter-hours with quality, and the shared energy this
    member received in each where fleet data exists (``null`` where it does not)."""
    rows = []
    for qh in qhs:
        m = member.get(qh.start)
        rows.append({
            "start": iso(qh.start),
            "end": iso(qh.end),
            "import_wh": qh.import_wh,
            "export_wh": qh.export_wh,
            "quality": qh.quality.value,
            "flags": list(qh.flags),
            "shared_wh": None if m is None else m.received_wh,
        })
    with_fleet = sum(1 for r in rows if r["shared_wh"] is not None)
    return {
        "meter_id": meter_id,
        "from": iso(start),
        "to": iso(end),
        "timezone": tz.key,
        "provisional": True,
        "basis": "operation" if fleet_setup is not None and with_fleet else "own_meter",
        "count": len(rows),
        "quarter_hours": rows,
    }


def allocation_view(
    *, period: str, label: str, start: datetime, end: datetime, meter_id: str | None,
    import_wh: int, export_wh: int, quarter_hours: int, expected: int,
    member: Mapping[datetime, MemberQuarterHour], setup: OperationSetup | None, prices: Prices,
) -> dict:
    """``GET /api/v1/allocation``: this member's provisional shared energy, sharing rate and
    self-sufficiency over a local day or month (closed quarter-hours only).

    - ``shared_wh``: shared energy this member received (allocated from the pool);
    - ``self_sufficiency`` = shared_wh / import_wh (null without import);
    - ``sharing_rate`` = the part of this member's own injection that went to other members /
      its injection (null without injection; a producer's figure);
    - ``operation``: the operation's pool, shared energy and rates over the quarter-hours with data.
    """
    fleet = setup is not None and bool(member)
    shared = sum(m.received_wh for m in member.values()) if fleet else 0
    injection_shared = sum(m.injection_shared_wh for m in member.values()) if fleet else 0
    out: dict = {
        "period": period,
        "label": label,
        "from": iso(start),
        "to": iso(end),
        "meter_id": meter_id,
        "member_id": setup.member_id if setup else None,
        "provisional": True,
        "basis": "operation" if fleet else "own_meter",
        "note": FLEET_NOTE if fleet else NO_FLEET_NOTE,
        "quarter_hours": quarter_hours,
        "expected_quarter_hours": expected,
        "quarter_hours_with_fleet_data": len(member) if fleet else 0,
        "import_wh": import_wh,
        "export_wh": export_wh,
        "shared_wh": shared,
        "grid_import_wh": max(0, import_wh - shared),
        "injection_shared_wh": injection_shared,
        "self_sufficiency": ratio(shared, import_wh),
        "sharing_rate": ratio(injection_shared, export_wh),
        "savings_eur": prices.savings(shared, (end - start).total_seconds() / 86400),
        "sharing_fee_eur": prices.fee((end - start).total_seconds() / 86400) if prices.sharing_fee_eur_year else None,
        "operation": None,
    }
    if fleet:
        pool = sum(m.pool_wh for m in member.values())
        op_shared = sum(m.shared_wh for m in member.values())
        cons = sum(m.consumption_wh for m in member.values())
        out["operation"] = {
            "operation_id": setup.operation_id,
            "pool_wh": pool,
            "shared_wh": op_shared,
            "consumption_wh": cons,
            "sharing_rate": ratio(op_shared, pool),
            "self_sufficiency": ratio(op_shared, cons),
        }
    return out

"""An operation's live totals from its members' latest live summaries, and its consume-now signal. Pure.

Pool = what the producers inject now, consumption = what the participants import now; the running
quarter-hour's energies are summed only when every reporting member is in the same quarter-hour and
knows its start (otherwise ``None``: the signal then works from power alone).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from gateway.model import floor_quarter
from services.community.roster import Seat
from services.community.wire import LiveMsg, TotalsMsg
from services.signal import QuarterSoFar, SignalInputs, SignalTracker


def operation_totals(
    operation: str,
    seats: list[Seat],
    latest: Mapping[str, tuple[LiveMsg, float]],
    now: datetime,
    now_s: float,
    stale_after_s: float,
    tracker: SignalTracker,
) -> TotalsMsg:
    """``latest``: member -> (its last live summary, when it was received, epoch seconds)."""
    fresh = [(s, latest[s.member][0]) for s in seats if s.member in latest and now_s - latest[s.member][1] <= stale_after_s]
    cons_w = sum(m.import_w for s, m in fresh if s.receives)
    pool_w = sum(m.export_w for s, m in fresh if s.produces)
    start = floor_quarter(now)
    starts = {m.qh_start for _, m in fresh}
    cons_wh = pool_wh = None
    if fresh and starts == {start} and all(m.qh_import_wh is not None and m.qh_export_wh is not None for _, m in fresh):
        cons_wh = sum(m.qh_import_wh or 0.0 for s, m in fresh if s.receives)
        pool_wh = sum(m.qh_export_wh or 0.0 for s, m in fresh if s.produces)
    newest = max((m.time for _, m in fresh), default=now)
    elapsed = max(0.0, min(900.0, (now - start).total_seconds()))
    q = QuarterSoFar(start=start, elapsed_s=elapsed, imported_wh=cons_wh, exported_wh=pool_wh,
                     import_w=cons_w, export_w=pool_w, age_s=max(0.0, (now - newest).total_seconds()))
    sig = tracker.update(SignalInputs(now=now, operation=q if fresh else None))
    return TotalsMsg(
        operation=operation, time=now, qh_start=start, elapsed_s=elapsed, consumption_w=round(cons_w, 1),
        pool_w=round(pool_w, 1), consumption_wh=None if cons_wh is None else round(cons_wh, 1),
        pool_wh=None if pool_wh is None else round(pool_wh, 1), members_reporting=len(fresh),
        members_total=len(seats), signal=sig.state.value, headroom_w=sig.headroom_w, reason=sig.reason.value,
    )

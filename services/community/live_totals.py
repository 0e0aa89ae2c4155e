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
from gateway.wire import LiveMsg, TotalsMsg
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
    """``latest``: member -> (its last live summary, when it was received, epoch seconds).

    Freshness and age are measured on the server's clock (when a summary *arrived*); the running
    quarter-hour is the one the reporting members agree on, so a member clock that is off (a Pi
    without RTC before NTP sync, or a simulated meter) never makes fresh data look hours old.
    """
    fresh = [(s, latest[s.member][0], latest[s.member][1]) for s in seats
             if s.member in latest and now_s - latest[s.member][1] <= stale_after_s]
    cons_w = sum(m.import_w for s, m, _ in fresh if s.receives)
    pool_w = sum(m.export_w for s, m, _ in fresh if s.produces)
    starts = {m.qh_start for _, m, _ in fresh}
    cons_wh = pool_wh = None
    if len(starts) == 1 and None not in starts:
        start = starts.pop()
        _, newest, newest_at = max(fresh, key=lambda f: f[2])
        elapsed = (newest.time - start).total_seconds() + (now_s - newest_at)
        if all(m.qh_import_wh is not None and m.qh_export_wh is not None for _, m, _ in fresh):
            cons_wh = sum(m.qh_import_wh or 0.0 for s, m, _ in fresh if s.receives)
            pool_wh = sum(m.qh_export_wh or 0.0 for s, m, _ in fresh if s.produces)
    else:  # no common quarter-hour (members disagree, or none reports): power alone
        start = floor_quarter(now)
        elapsed = (now - start).total_seconds()
    elapsed = max(0.0, min(900.0, elapsed))
    age_s = max(0.0, now_s - max((at for _, _, at in fresh), default=now_s))
    q = QuarterSoFar(start=start, elapsed_s=elapsed, imported_wh=cons_wh, exported_wh=pool_wh,
                     import_w=cons_w, export_w=pool_w, age_s=age_s)
    sig = tracker.update(SignalInputs(now=now, operation=q if fresh else None))
    return TotalsMsg(
        operation=operation, time=now, qh_start=start, elapsed_s=elapsed, consumption_w=round(cons_w, 1),
        pool_w=round(pool_w, 1), consumption_wh=None if cons_wh is None else round(cons_wh, 1),
        pool_wh=None if pool_wh is None else round(pool_wh, 1), members_reporting=len(fresh),
        members_total=len(seats), signal=sig.state.value, headroom_w=sig.headroom_w, reason=sig.reason.value,
    )

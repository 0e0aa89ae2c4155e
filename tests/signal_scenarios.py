"""Build coherent signal inputs from a power profile, for the signal tests.

A profile is a list of steps ``(duration_s, net_w)``: the meter's net power (positive = export) is
constant over each step. The registers are integrated exactly, quarter-hour energies are register
differences from the quarter-hour's start (as the gateway's aggregator computes them), and one
:class:`~services.signal.SignalInputs` is produced at the end of each step.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from services.signal import QuarterSoFar, SignalInputs, TriggeredLoad

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # on a quarter-hour boundary


def _floor_quarter_s(t: float) -> float:
    return t - t % 900.0


def inputs_for(
    steps: Sequence[tuple[float, float]],
    *,
    load_w: float = 0.0,
    load_from_step: int | None = None,
    declare: bool = False,
    start: datetime = T0,
    offset_s: float = 0.0,
) -> list[SignalInputs]:
    """One input per step. With ``load_w``, a load of that power runs from the start of step
    ``load_from_step`` on (it lowers the net power); ``declare`` says it was triggered by the signal."""
    t = offset_s  # seconds since ``start``
    imp = exp = 0.0  # cumulative registers, Wh
    q_start = _floor_quarter_s(t)
    q_imp, q_exp = imp, exp
    load_since: datetime | None = None
    out: list[SignalInputs] = []
    for i, (dur, base_net) in enumerate(steps):
        loaded = load_from_step is not None and i >= load_from_step
        if loaded and load_since is None:
            load_since = start + timedelta(seconds=t)
        net = base_net - (load_w if loaded else 0.0)
        end = t + dur
        while True:  # integrate, recording the registers at every quarter-hour boundary crossed
            boundary = q_start + 900.0
            seg_end = min(end, boundary)
            e = net * (seg_end - t) / 3600.0
            if e >= 0:
                exp += e
            else:
                imp -= e
            t = seg_end
            if t >= boundary:
                q_start, q_imp, q_exp = boundary, imp, exp
            if t >= end:
                break
        now = start + timedelta(seconds=t)
        own = QuarterSoFar(
            start=start + timedelta(seconds=q_start),
            elapsed_s=t - q_start,
            imported_wh=imp - q_imp,
            exported_wh=exp - q_exp,
            import_w=max(0.0, -net),
            export_w=max(0.0, net),
        )
        loads = (TriggeredLoad(load_w, load_since),) if declare and load_since is not None else ()
        out.append(SignalInputs(now=now, own=own, triggered=loads))
    return out

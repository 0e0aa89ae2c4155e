"""What following the signal is worth: flexible loads (dishwasher, washing machine, boiler, EV) run at
their usual time, or moved by the consume-now signal, over the same year of quarter-hours.

The signal is the live one (services/signal.py), computed from the same data and without foresight:
at the start of each quarter-hour it knows only that nothing is banked yet and the current net power,
taken as the previous quarter-hour's average (pool minus consumption). Loads the signal triggered are
added back by the live signal (no feedback loop), so it is computed from the data without them. A
load starts at the first green quarter-hour between its earliest start and the latest start that
still meets its deadline (« heure limite », « deadline »); never green: it starts at the latest start.

Pure: numpy and the signal logic; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from services.signal import QUARTER_S, QuarterSoFar, SignalInputs, SignalSettings, State, next_signal

QUARTERS_PER_DAY = 96


@dataclass(frozen=True)
class FlexibleLoad:
    """One run a day of a member's load: ``energy_wh`` spread over ``duration_q`` quarter-hours;
    times are local quarter-hours of the day (0..95); a ``deadline`` before ``earliest`` is the next day."""

    member: str
    kind: str  # dishwasher | washing_machine | boiler | ev | ...
    energy_wh: int
    duration_q: int
    usual: int  # the usual start
    earliest: int
    deadline: int  # the run ends by then
    every_days: int = 1  # one run every this many days (the first on the data's first whole day)

    def __post_init__(self) -> None:
        if self.energy_wh <= 0 or self.duration_q <= 0:
            raise ValueError(f"{self.member} {self.kind}: energy and duration must be positive")
        if self.window_q < self.duration_q:
            raise ValueError(f"{self.member} {self.kind}: the window from earliest start to deadline is shorter than the run")

    @property
    def window_q(self) -> int:
        return (self.deadline - self.earliest) % QUARTERS_PER_DAY or QUARTERS_PER_DAY


def green_quarters(epoch: np.ndarray, pool_wh: np.ndarray, consumption_wh: np.ndarray,
                   settings: SignalSettings = SignalSettings()) -> np.ndarray:
    """Whether the live signal shows green at the start of each quarter-hour (bool [T])."""
    out = np.zeros(epoch.size, dtype=bool)
    sig = None
    for i, ts in enumerate(epoch.tolist()):
        start = datetime.fromtimestamp(int(ts), UTC)
        prev_net_w = 0.0 if i == 0 else float(pool_wh[i - 1] - consumption_wh[i - 1]) * 3600.0 / QUARTER_S
        q = QuarterSoFar(start=start, elapsed_s=0.0, imported_wh=0.0, exported_wh=0.0,
                         import_w=max(0.0, -prev_net_w), export_w=max(0.0, prev_net_w))
        sig = next_signal(sig, SignalInputs(now=start, operation=q), settings)
        out[i] = sig.state is State.GREEN
    return out


def _day_rows(epoch: np.ndarray, tz: ZoneInfo) -> list[int]:
    """Row of each local midnight in the data (rows are consecutive quarter-hours)."""
    rows = []
    for i, ts in enumerate(epoch.tolist()):
        t = datetime.fromtimestamp(int(ts), tz)
        if t.hour == 0 and t.minute == 0:
            rows.append(i)
    return rows


def _spread(extra: np.ndarray, start: int, load: FlexibleLoad) -> None:
    per, rest = divmod(load.energy_wh, load.duration_q)
    for k in range(load.duration_q):
        if 0 <= start + k < extra.size:
            extra[start + k] += per + (rest if k == 0 else 0)


def run_starts(load: FlexibleLoad, epoch: np.ndarray, tz: ZoneInfo, green: np.ndarray) -> list[tuple[int, int]]:
    """``(usual start row, start row moved by the signal)`` of each run. Only days whose whole window
    and usual run are in the data are counted (both runs count the same days)."""
    out: list[tuple[int, int]] = []
    n = 0
    for day in _day_rows(epoch, tz):
        first = day + load.earliest
        last_start = first + load.window_q - load.duration_q
        u = day + load.usual if load.usual >= load.earliest else day + QUARTERS_PER_DAY + load.usual
        if last_start + load.duration_q > epoch.size or u + load.duration_q > epoch.size:
            continue
        n += 1
        if (n - 1) % load.every_days:
            continue
        out.append((u, next((q for q in range(first, last_start + 1) if green[q]), last_start)))
    return out


def spread(load: FlexibleLoad, energy_wh: int | None = None) -> list[int]:
    """The run's Wh in each of its quarter-hours (evenly, the remainder in the first)."""
    energy = load.energy_wh if energy_wh is None else energy_wh
    per, rest = divmod(energy, load.duration_q)
    return [per + (rest if k == 0 else 0) for k in range(load.duration_q)]


def runs(load: FlexibleLoad, epoch: np.ndarray, tz: ZoneInfo, green: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Extra consumption (Wh per quarter-hour) of the load at its usual time and moved by the signal."""
    usual = np.zeros(epoch.size, dtype=np.int64)
    moved = np.zeros(epoch.size, dtype=np.int64)
    for u, start in run_starts(load, epoch, tz, green):
        _spread(usual, u, load)
        _spread(moved, start, load)
    return usual, moved


def local_quarter(text: str) -> int:
    """``"19:30"`` -> 78: the local quarter-hour of the day (minutes rounded down to a quarter)."""
    h, m = (int(x) for x in text.split(":"))
    if not (0 <= h <= 24 and 0 <= m < 60) or h * 60 + m > 24 * 60:
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    return (h * 4 + m // 15) % QUARTERS_PER_DAY


def hours(q: int) -> str:
    return (datetime(2000, 1, 1) + timedelta(minutes=15 * q)).strftime("%H:%M")

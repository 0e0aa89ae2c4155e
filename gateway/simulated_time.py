"""One simulated clock that several processes share: ``start`` at the real instant ``origin``, running
``speed`` times faster than real time.

Why: the demos' meters are simulated on a fast clock, and anything that judges their times (the
community server's collective alert windows, a node's signal) must read the same clock, not the
wall clock. Each process computes it from the same three numbers, so no process has to ask another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class SimulatedTime:
    start: datetime  # aware: the simulated time at ``origin``
    origin: datetime  # aware: the real instant the simulated clock read ``start``
    speed: float  # simulated seconds per real second

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.origin.tzinfo is None:
            raise ValueError("start and origin need a time zone")
        if not self.speed > 0:
            raise ValueError("speed must be > 0")

    def at(self, real_s: float) -> float:
        """The simulated epoch seconds at the real epoch seconds ``real_s``."""
        return self.start.timestamp() + (real_s - self.origin.timestamp()) * self.speed

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.at(time.time()), self.start.tzinfo)

    def clock(self) -> Callable[[], float]:
        """A ``time.time``-like clock of simulated epoch seconds."""
        return lambda: self.at(time.time())

    def real_delay_s(self, simulated: timedelta) -> float:
        """How many real seconds a simulated span takes."""
        return simulated.total_seconds() / self.speed

"""A scripted day for the consume-now signal: how often does the light change colour?

A household with 4 kWp of panels on 21 June (Europe/Brussels): a clear morning, cumulus clouds passing
over the panels from 11:00 to 15:00 (shadows of half a minute to four minutes, bright gaps between,
as on a day of « nuages passagers », « wisselende bewolking »), a clear afternoon and an evening of
cooking and dishes. The meter's net power is given per second; :func:`replay` drives the pure signal
logic with it on the meter's clock (one reading a second, registers integrated exactly, the running
quarter-hour as the gateway's aggregator sees it) and counts the state changes per local hour.

Why a script and not real data: the flicker figure must be reproducible in a test and comparable
between settings; the shapes (cloud shadows, kettle, oven) are what makes a light flicker.

    python -m demo.signal_day            # the figure for today's settings (bench/signal_flicker.py)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.signal import QUARTER_S, QuarterSoFar, SignalInputs, SignalSettings, State, next_signal

TZ = ZoneInfo("Europe/Brussels")
DAY = datetime(2026, 6, 21, tzinfo=TZ)
DAY_S = 86_400
PV_PEAK_W = 3_400.0  # 4 kWp on a clear June noon
CLOUDY = (11 * 3600, 15 * 3600)  # passing clouds, local time


def _pv_clear(t: float) -> float:
    """Clear-sky output: a bell from 05:45 to 21:45 local, highest at 13:45 (solar noon in summer time)."""
    rise, sets = 5.75 * 3600, 21.75 * 3600
    if not rise < t < sets:
        return 0.0
    x = (t - rise) / (sets - rise)
    return PV_PEAK_W * math.sin(math.pi * x) ** 1.6


def scripted_day(seed: int = 18) -> list[float]:
    """Net power (W, positive = export) for each second of the day."""
    rng = random.Random(seed)
    pv = [_pv_clear(t) for t in range(DAY_S)]
    # passing clouds: shadows (PV at 20-35 %) and bright gaps, each of random length
    t = CLOUDY[0]
    while t < CLOUDY[1]:
        gap = rng.uniform(60, 420)
        shadow = rng.uniform(30, 240)
        depth = rng.uniform(0.20, 0.35)
        for s in range(int(t + gap), min(int(t + gap + shadow), CLOUDY[1])):
            pv[s] *= depth
        t += gap + shadow
    load = [180.0 + 60.0 * (1 if (s // 1200) % 3 == 0 else 0) for s in range(DAY_S)]  # base + fridge cycles

    def run(start_h: float, minutes: float, watts: float) -> None:
        a = int(start_h * 3600)
        for s in range(a, min(DAY_S, a + int(minutes * 60))):
            load[s] += watts

    # the morning: kettle and toaster, a shower pump, the dishwasher after breakfast
    run(7.0, 3, 2000), run(7.1, 4, 900), run(7.5, 10, 400), run(8.5, 60, 200), run(8.6, 20, 1900)
    # noon: cooking, the kettle, a vacuum cleaner
    run(12.0, 25, 1500), run(12.6, 3, 2000), run(13.2, 20, 900), run(14.1, 3, 2000)
    # the evening: oven, hob, dishwasher, television and lights
    run(18.2, 45, 2100), run(18.6, 20, 1500), run(19.5, 240, 250), run(20.2, 15, 2000), run(20.5, 60, 300)
    for _ in range(12):  # small things at random: a hair dryer, the microwave, a pump
        run(rng.uniform(6, 23), rng.uniform(2, 8), rng.choice((700, 1200, 1800)))
    return [pv[s] - load[s] for s in range(DAY_S)]


@dataclass(frozen=True)
class Replay:
    changes_per_hour: list[int]  # state changes in each local hour (0..23)
    states: dict[State, int]  # seconds shown in each state

    def worst(self, hours: Sequence[int]) -> int:
        return max(self.changes_per_hour[h] for h in hours)


def replay(net_w: Sequence[float], settings: SignalSettings = SignalSettings(), day: datetime = DAY,
           step_s: int = 1) -> Replay:
    """Drive :func:`services.signal.next_signal` with one reading every ``step_s`` seconds of meter time."""
    start = day.astimezone(ZoneInfo("UTC"))
    imp = exp = 0.0  # Wh since the running quarter-hour started
    changes = [0] * 24
    shown = {s: 0 for s in State}
    sig = None
    for t in range(0, len(net_w), step_s):
        q_start = t - t % int(QUARTER_S)
        if t == q_start:
            imp = exp = 0.0
        net = net_w[t]
        if t > q_start:  # the previous second's power, integrated up to now
            prev = net_w[t - 1]
            if prev >= 0:
                exp += prev / 3600.0
            else:
                imp -= prev / 3600.0
        q = QuarterSoFar(start=start + timedelta(seconds=q_start), elapsed_s=float(t - q_start), imported_wh=imp,
                         exported_wh=exp, import_w=max(0.0, -net), export_w=max(0.0, net))
        before = sig.state if sig is not None else None
        sig = next_signal(sig, SignalInputs(now=start + timedelta(seconds=t), own=q), settings)
        if before is not None and sig.state is not before:
            changes[t // 3600] += 1
        shown[sig.state] += step_s
    return Replay(changes, shown)


def main() -> None:  # pragma: no cover - a bench's printout
    from bench.signal_flicker import main as bench

    bench()


if __name__ == "__main__":  # pragma: no cover
    main()

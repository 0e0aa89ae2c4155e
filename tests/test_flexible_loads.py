"""Flexible loads moved by the signal (services/community/flexible.py), checked by hand on a small day."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from services.allocation import allocate
from services.community.flexible import FlexibleLoad, green_quarters, local_quarter, runs

TZ = ZoneInfo("Europe/Brussels")


def _day() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One local day: the pool is 2 kWh a quarter-hour (8 kW) from 12:00 to 12:30, else nothing; one
    consumer uses 100 Wh every quarter-hour."""
    t0 = int(datetime(2026, 6, 21, tzinfo=TZ).timestamp())
    epoch = t0 + 900 * np.arange(96, dtype=np.int64)
    pool = np.zeros(96, dtype=np.int64)
    pool[48:50] = 2000
    cons = np.full(96, 100, dtype=np.int64)
    return epoch, pool, cons


def test_a_dishwasher_moved_by_the_signal_by_hand():
    epoch, pool, cons = _day()
    green = green_quarters(epoch, pool, cons)
    # no foresight: the signal sees 12:00's surplus (1900 Wh = 7.6 kW) only from 12:15 on, until 12:45
    assert np.flatnonzero(green).tolist() == [49, 50]
    dishwasher = FlexibleLoad("c", "dishwasher", energy_wh=1000, duration_q=1, usual=local_quarter("08:00"),
                              earliest=local_quarter("08:00"), deadline=local_quarter("18:00"))
    usual, moved = runs(dishwasher, epoch, TZ, green)
    assert np.flatnonzero(usual).tolist() == [32] and np.flatnonzero(moved).tolist() == [49]
    received = {}
    for name, extra in (("usual", usual), ("moved", moved)):
        res = allocate((cons + extra)[:, None], pool[:, None], ("equal",), member_ids=("c",), producer_ids=("pv",),
                       slots=epoch // 900)
        received[name] = int(res.allocated.sum())
    # usual: 100 + 100 Wh shared at 12:00 and 12:15; moved: 12:15 takes 1,100 Wh of its 2,000 Wh: 1,000 Wh more
    assert received == {"usual": 200, "moved": 1200}


def test_a_run_that_never_sees_green_starts_at_the_latest_start_and_an_overnight_window():
    epoch, pool, cons = _day()
    green = np.zeros(96, dtype=bool)
    boiler = FlexibleLoad("c", "boiler", energy_wh=2000, duration_q=8, usual=local_quarter("06:00"),
                          earliest=local_quarter("06:00"), deadline=local_quarter("16:00"))
    _, moved = runs(boiler, epoch, TZ, green)
    assert np.flatnonzero(moved).tolist() == list(range(56, 64)) and moved.sum() == 2000
    with pytest.raises(ValueError):
        FlexibleLoad("c", "ev", energy_wh=7000, duration_q=12, usual=0, earliest=local_quarter("22:00"),
                     deadline=local_quarter("23:00"))

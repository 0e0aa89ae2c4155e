"""Meter plausibility (gateway/plausibility.py) through the real pipeline: parsed telegrams from the
simulated meter, a real SQLite store. One glitch telegram must never change the energy."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.model import ClockQuality, Quality, Reading
from gateway.pipeline import Pipeline
from gateway.plausibility import Change, Limits, MeterGate, Reason
from demo.meter import MeterSimulator
from gateway.store import Store
from p1 import parse_telegram
from tests.p1_glitches import KINDS, glitch

UTC = timezone.utc
START = datetime(2026, 6, 21, 10, 0, tzinfo=UTC)
STEP_S = 10
N = 6 * 70 + 1  # 70 minutes, a telegram every 10 s


@cache
def honest_frames(dialect: str = "emucs") -> tuple[bytes, ...]:
    sim = MeterSimulator(start=START, seed=3, dialect=dialect, import_wh=(5_123_456, 3_000_000),
                         export_wh=(1_234_567, 456_789))
    return tuple(sim.telegram_at(START + timedelta(seconds=STEP_S * i)) for i in range(N))


def run(frames, d: Path, *, limits: Limits | None = None, now=None):
    store = Store(d / "q.sqlite")
    try:
        p = Pipeline(store, max_gap=timedelta(seconds=300), batch=False, limits=limits,
                     **({"wall_clock": now, "clock_synced": lambda: True} if now else {}))
        for f in frames:
            p.feed_telegram(parse_telegram(f))
        p.flush()
        return store.quarter_hours(), p
    finally:
        store.close()


def day_energy(qhs, p) -> tuple[int, int]:
    """Import and export through the end of the stream: the closed quarter-hours and the running one
    (a glitch on the last closed boundary may move a Wh across it, never create or lose one)."""
    (running,) = p.live().values()
    return (sum(q.import_wh for q in qhs) + running.import_wh, sum(q.export_wh for q in qhs) + running.export_wh)


@cache
def honest_result(dialect: str = "emucs"):
    with tempfile.TemporaryDirectory() as d:
        qhs, p = run(honest_frames(dialect), Path(d))
        return qhs, day_energy(qhs, p)


def test_honest_stream_is_all_accepted(tmp_path):
    qhs, p = run(honest_frames(), tmp_path)
    (h,) = p.health.values()
    assert h.accepted == N and sum(h.refused.values()) == 0
    assert len(qhs) == 4 and all(q.quality is Quality.MEASURED for q in qhs)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), index=st.integers(1, N - 4), dialect=st.sampled_from(["emucs", "dsmr5"]))
def test_one_glitch_changes_no_energy_and_at_most_two_quarter_hours(kind, index, dialect):
    """Any single glitch between honest telegrams: the day's energy changes by 0 Wh, no quarter-hour
    appears or disappears, at most the two that touch it change, and those say they are interpolated."""
    frames = list(honest_frames(dialect))
    frames[index] = glitch(frames[index], kind)
    with tempfile.TemporaryDirectory() as d:
        qhs, p = run(frames, Path(d))
    honest, honest_energy = honest_result(dialect)
    assert [q.start for q in qhs] == [q.start for q in honest]  # none created, none lost
    assert day_energy(qhs, p) == honest_energy  # 0 Wh against the honest stream, import and export
    changed = [(a, b) for a, b in zip(qhs, honest, strict=True) if a != b]
    t = START + timedelta(seconds=STEP_S * index)
    assert len(changed) <= 2
    for a, _ in changed:  # only the two that touch the glitch, interpolated and flagged so
        assert a.start <= t <= a.end and a.quality is Quality.INTERPOLATED
        assert {"end_interpolated"} & set(a.flags) or a.start == t
    (h,) = p.health.values()
    assert "?" not in p.health and sum(h.refused.values()) == 1, dict(h.refused)


@pytest.mark.parametrize("kind, reason", [
    ("flip_keep_crc", "crc"), ("flip_no_crc", "no_crc"), ("no_crc", "no_crc"), ("flip_up", "implausible_step"),
    ("flip_down", "register_drop"), ("zero", "register_drop"), ("missing_line", "unknown_register"),
    ("unreadable", "unknown_register"), ("day_ahead", "time_jump"), ("ten_years_ahead", "time_jump"),
    ("hour_back", "time_jump"), ("gas_spike", "gas_implausible_step"),
])
def test_each_glitch_is_counted_once_under_its_reason(tmp_path, kind, reason):
    frames = list(honest_frames())
    frames[100] = glitch(frames[100], kind)
    qhs, p = run(frames, tmp_path)
    (mid,) = p.health
    assert dict(p.health[mid].refused) == {reason: 1}
    assert day_energy(qhs, p) == honest_result()[1]


def test_damaged_frames_before_any_meter_count_for_the_ports_meter(tmp_path):
    frames = list(honest_frames()[:20])
    frames[0] = glitch(frames[0], "flip_keep_crc")
    frames[1] = glitch(frames[1], "flip_no_crc")
    _, p = run(frames, tmp_path)
    (h,) = p.health.values()
    assert dict(h.refused) == {"crc": 1, "no_crc": 1} and h.crc_errors == 2 and h.telegrams == 20
    assert p.unattributed_crc_errors == 0 and h.crc_error_rate == pytest.approx(0.1)


def test_a_synchronised_pi_clock_refuses_a_telegram_from_the_future_at_once(tmp_path):
    frames = list(honest_frames()[:121])
    frames[30] = glitch(frames[30], "day_ahead")
    frames[40] = glitch(frames[40], "ten_years_ahead")
    pi = iter(START + timedelta(seconds=STEP_S * i + 0.4) for i in range(121))
    qhs, p = run(frames, tmp_path, limits=Limits(clock_tolerance_s=900), now=lambda: next(pi))
    (h,) = p.health.values()
    assert dict(h.refused) == {"future": 2} and h.accepted == 119
    assert [(q.start, q.quality) for q in qhs] == [(START, Quality.MEASURED)]


# -- the gate on its own: confirmation of what persists ---------------------------------------------


def reading(s: int, imp: int, exp: int = 0, *, t2: int | None = 1000) -> Reading:
    regs = {"1": imp} if t2 is None else {"1": imp, "2": t2}
    return Reading("m", START + timedelta(seconds=s), regs, {"1": exp}, clock=ClockQuality.METER)


def feed(gate: MeterGate, rs):
    out = []
    for r in rs:
        out.append(gate.check(r))
    return out


def test_a_real_meter_reset_is_accepted_once_it_persists():
    g = MeterGate("m", Limits(confirm=3))
    feed(g, [reading(s, 5_000_000 + s) for s in range(0, 3)])
    assert g.last is not None and g.last.import_wh["1"] == 5_000_002
    d = feed(g, [reading(3, 0), reading(4, 1), reading(5, 2)])
    assert d[0].held and d[1].held and not d[0].refused
    assert [(r.import_wh["1"], c) for r, c in d[2].accepted] == [(0, Change.RESET), (1, Change.NORMAL), (2, Change.NORMAL)]


def test_a_register_read_as_zero_once_counts_nothing():
    g = MeterGate("m", Limits(confirm=3))
    feed(g, [reading(s, 5_000_000 + s) for s in range(0, 3)])
    d = feed(g, [reading(3, 0), reading(4, 5_000_004)])
    assert d[0].held and [r.reason for r in d[1].refused] == [Reason.REGISTER_DROP]
    assert [r.import_wh["1"] for r, _ in d[1].accepted] == [5_000_004]


def test_a_real_clock_correction_backwards_is_accepted_as_a_clock_step():
    g = MeterGate("m", Limits(confirm=3))
    feed(g, [reading(3600 + s, 100 + s) for s in range(0, 3)])
    d = feed(g, [reading(s, 103 + s) for s in range(0, 3)])
    assert [c for _, c in d[2].accepted] == [Change.CLOCK_STEP, Change.NORMAL, Change.NORMAL]


def test_a_step_beyond_the_connection_is_refused_and_an_announced_fuse_lowers_the_bound():
    g = MeterGate("m", Limits(max_power_w=43_650))
    feed(g, [reading(s, 1000 + s) for s in range(0, 3)])
    ok = g.check(reading(4, 1002 + 20))  # 20 Wh in 2 s = 36 kW: fits a 3 x 63 A connection
    assert ok.accepted
    big = g.check(reading(5, 1022 + 100))  # 100 Wh in 1 s = 360 kW: no house draws that
    assert big.held and g.held_reason is Reason.IMPLAUSIBLE_STEP
    small = MeterGate("m", Limits(max_power_w=43_650))
    announced = [Reading("m", START + timedelta(seconds=s), {"1": 1000 + 5 * s}, {}, max_power_w=9200) for s in range(3)]
    feed(small, announced)
    d = small.check(Reading("m", START + timedelta(seconds=3), {"1": 1010 + 20}, {}, max_power_w=9200))
    assert d.held and small.held_reason is Reason.IMPLAUSIBLE_STEP  # 20 Wh in 1 s = 72 kW > 9.2 kW fuse


def test_a_missing_register_is_unknown_never_zero():
    g = MeterGate("m")
    feed(g, [reading(s, 1000 + s) for s in range(0, 3)])
    d = g.check(reading(3, 1003, t2=None))
    assert [r.reason for r in d.refused] == [Reason.UNKNOWN_REGISTER] and not d.accepted


def test_limits_are_finite():
    for bad in (float("nan"), float("inf"), 0, -1):
        with pytest.raises(ValueError):
            Limits(max_power_w=bad)
        with pytest.raises(ValueError):
            Limits(clock_tolerance_s=bad)

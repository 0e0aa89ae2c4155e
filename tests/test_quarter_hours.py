"""Quarter-hour aggregation: energy from register differences, exact, never negative, restartable."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import ClockQuality, Quality, Reading
from gateway.quarter_hours import QuarterHourAggregator

UTC = timezone.utc
T0 = datetime(2026, 6, 21, 10, 0, tzinfo=UTC)


def reading(t: datetime, imp: int, exp: int = 0, *, t2: int = 0, w: float | None = None) -> Reading:
    return Reading("M1", t, {"1": imp, "2": t2}, {"1": exp, "2": 0}, import_w=w, export_w=0.0)


def run(readings, agg=None):
    agg = agg or QuarterHourAggregator("M1")
    out = []
    for r in readings:
        out.extend(agg.add(r))
    return agg, out


def test_reading_on_each_boundary_gives_measured_register_differences():
    rs = [reading(T0 + timedelta(seconds=s), 1000 + s // 10) for s in range(0, 3601, 10)]
    _, qhs = run(rs)
    assert [q.start for q in qhs] == [T0 + timedelta(minutes=15 * i) for i in range(4)]
    assert all(q.quality is Quality.MEASURED for q in qhs)
    assert [q.import_wh for q in qhs] == [90, 90, 90, 90]
    assert qhs[-1].end_import_register == {"1": 1360, "2": 0}


def test_boundary_between_readings_is_interpolated_in_whole_wh():
    # readings at :14:57 and :15:07, registers 1000 and 1010: boundary at 3/10 of the way → 1003
    rs = [
        reading(T0, 700),
        reading(T0 + timedelta(minutes=14, seconds=57), 1000),
        reading(T0 + timedelta(minutes=15, seconds=7), 1010),
        reading(T0 + timedelta(minutes=30), 1100),
    ]
    _, qhs = run(rs)
    assert [(q.import_wh, q.quality) for q in qhs] == [(303, Quality.INTERPOLATED), (97, Quality.INTERPOLATED)]


def test_gap_is_spread_over_missed_quarter_hours_and_marked_estimated():
    rs = [reading(T0, 0), reading(T0 + timedelta(minutes=5), 100), reading(T0 + timedelta(hours=1, minutes=5), 1300)]
    _, qhs = run(rs)
    assert [q.quality for q in qhs] == [Quality.ESTIMATED] * 4
    # 1200 Wh over 60 minutes, spread in proportion to time
    assert [q.import_wh for q in qhs] == [100 + 200, 300, 300, 300]
    assert sum(q.import_wh for q in qhs) == 1200


def test_register_going_backwards_is_flagged_never_negative():
    rs = [reading(T0, 5000), reading(T0 + timedelta(minutes=5), 5100), reading(T0 + timedelta(minutes=6), 3),
          reading(T0 + timedelta(minutes=15), 50), reading(T0 + timedelta(minutes=30), 80)]
    agg, qhs = run(rs)
    assert agg.stats.resets == 1
    assert qhs[0].import_wh == 100 + 47  # before the swap, then counting from the new register
    assert "register_reset" in qhs[0].flags and qhs[0].quality is Quality.ESTIMATED
    assert qhs[0].end_import_register["1"] == 50  # raw register of the new meter: the restart baseline
    assert qhs[1].import_wh == 30 and qhs[1].quality is Quality.MEASURED and not qhs[1].flags


def test_out_of_order_and_duplicate_readings_are_ignored():
    rs = [reading(T0, 0), reading(T0 + timedelta(minutes=10), 10), reading(T0 + timedelta(minutes=5), 999),
          reading(T0 + timedelta(minutes=10), 10), reading(T0 + timedelta(minutes=15), 15)]
    agg, qhs = run(rs)
    assert agg.stats.out_of_order == 2
    assert [q.import_wh for q in qhs] == [15]


def test_first_partial_quarter_hour_is_not_invented():
    rs = [reading(T0 + timedelta(minutes=7), 0), reading(T0 + timedelta(minutes=15), 80), reading(T0 + timedelta(minutes=30), 90)]
    _, qhs = run(rs)
    assert [q.start for q in qhs] == [T0 + timedelta(minutes=15)]


def test_restart_from_baseline_loses_and_duplicates_nothing():
    rs = [reading(T0 + timedelta(seconds=s), s // 3, s // 7) for s in range(0, 7201, 5)]
    _, whole = run(rs)
    agg1, first = run(rs[:500])
    # the daemon dies; a new one starts from the last committed quarter-hour, misses 40 readings
    agg2 = QuarterHourAggregator("M1", baseline=first[-1])
    _, second = run(rs[540:], agg2)
    both = first + second
    assert [q.start for q in both] == [q.start for q in whole]
    assert sum(q.import_wh for q in both) == sum(q.import_wh for q in whole)
    assert sum(q.export_wh for q in both) == sum(q.export_wh for q in whole)


def test_dst_days_have_92_and_100_quarter_hours():
    tz = ZoneInfo("Europe/Brussels")
    for day, expected in (((2026, 3, 29), 92), ((2026, 10, 25), 100), ((2026, 6, 21), 96)):
        start = datetime(*day, tzinfo=tz).astimezone(UTC)
        rs = [reading(start + timedelta(minutes=m), m) for m in range(0, 26 * 60 + 1)]
        _, qhs = run(rs)
        per_day = Counter(q.start.astimezone(tz).date() for q in qhs)
        assert per_day[datetime(*day).date()] == expected


def test_unsynced_clock_is_flagged():
    r = [Reading("M1", T0 + timedelta(minutes=m), {"1": m}, {"1": 0}, clock=ClockQuality.UNSYNCED) for m in (0, 15)]
    _, qhs = run(r)
    assert qhs[0].flags == ("clock_unsynced",)


def test_restart_keeps_how_the_baseline_boundary_was_obtained():
    rs = [reading(T0, 0), reading(T0 + timedelta(minutes=14), 140), reading(T0 + timedelta(minutes=16), 160)]
    _, first = run(rs)
    assert first[0].quality is Quality.INTERPOLATED and first[0].flags == ("end_interpolated",)
    # restart: the next quarter-hour starts on an interpolated boundary, so it cannot be "measured"
    _, second = run([reading(T0 + timedelta(minutes=30), 300)], QuarterHourAggregator("M1", baseline=first[0]))
    assert second[0].quality is Quality.INTERPOLATED and second[0].import_wh == 150


def test_live_projection_for_the_capacity_tariff():
    rs = [reading(T0, 0, w=0), reading(T0 + timedelta(minutes=5), 250, w=3000.0)]
    agg, _ = run(rs)
    live = agg.live()
    assert live.import_wh == 250 and live.elapsed_s == 300
    # 250 Wh so far + 3 kW for the 10 remaining minutes = 750 Wh in the quarter-hour → 3 kW average
    assert live.projected_demand_w() == 3000.0


# -- properties ----------------------------------------------------------------------------------

steps = st.lists(
    st.tuples(st.integers(1, 1200), st.integers(0, 400), st.integers(0, 400), st.booleans()),
    min_size=1, max_size=120,
)


def build(stream):
    t, imp, exp, t2 = T0, 10_000, 500, 0
    out = [Reading("M1", t, {"1": imp, "2": t2}, {"1": exp}, clock=ClockQuality.METER)]
    for dt, di, de, night in stream:
        t += timedelta(seconds=dt)
        if night:
            t2 += di
        else:
            imp += di
        exp += de
        out.append(Reading("M1", t, {"1": imp, "2": t2}, {"1": exp}))
    return out


@settings(max_examples=300, deadline=None)
@given(steps)
def test_energy_is_conserved_contiguous_and_non_negative(stream):
    rs = build(stream)
    _, qhs = run(rs)
    for a, b in zip(qhs, qhs[1:]):
        assert b.start == a.end
    for q in qhs:
        assert q.import_wh >= 0 and q.export_wh >= 0
        assert min(q.import_by_tariff.values()) >= 0
        assert q.import_wh == sum(q.import_by_tariff.values())
    if qhs:
        first_start = rs[0]
        assert sum(q.import_wh for q in qhs) == sum(qhs[-1].end_import_register.values()) - first_start.import_total_wh
        assert sum(q.export_wh for q in qhs) == sum(qhs[-1].end_export_register.values()) - first_start.export_total_wh
        last_closed_end = qhs[-1].end
        assert last_closed_end <= rs[-1].time


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(0, 119), st.integers(0, 5))
def test_restart_anywhere_gives_the_same_quarter_hours_and_total(stream, cut, lost):
    rs = build(stream)
    _, whole = run(rs)
    cut = min(cut, len(rs))
    _, first = run(rs[:cut])
    if not first:
        return
    _, second = run(rs[cut + lost:], QuarterHourAggregator("M1", baseline=first[-1]))
    both = first + second
    starts = [q.start for q in both]
    assert len(starts) == len(set(starts))  # nothing counted twice
    whole_starts = [q.start for q in whole]
    assert starts == whole_starts[: len(starts)]  # nothing skipped
    # what was closed before and after the restart adds up to the register difference: no Wh lost
    assert sum(q.import_wh for q in both) == sum(both[-1].end_import_register.values()) - rs[0].import_total_wh
    assert all(q.import_wh >= 0 and q.export_wh >= 0 for q in both)

"""Samples → Readings: registers from counters, the FLM02 net split and its restart, time checks, bad
input. Pure (no broker): the same assembler the MQTT client drives."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flukso.payload import decode_sample
from flukso.readings import ReadingAssembler, Rejected, TimePolicy, assembler_for
from flukso.sensors import Assignment, Role
from gateway.model import QUARTER, ClockQuality, QuarterHour, Reading
from gateway.quarter_hours import QuarterHourAggregator

UTC = timezone.utc
T0 = 1782032400  # 2026-06-21T09:00:00Z, a quarter-hour boundary
NET, PLUS, MINUS, SOLAR = "1" * 32, "2" * 32, "3" * 32, "4" * 32


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def s(sid: str, kind: str, ts: int, value, flm03: bool = False, unit: str | None = None):
    unit = unit or ("W" if kind == "gauge" else "Wh")
    text = f'[{ts}, {value:.3f}, "{unit}"]' if flm03 else f'[{ts},{value},"{unit}"]'
    return decode_sample(f"/sensor/{sid}/{kind}", text.encode())


def flm03(policy=None, baseline=None) -> ReadingAssembler:
    return assembler_for([Assignment(PLUS, Role.GRID_IMPORT, "home"), Assignment(MINUS, Role.GRID_EXPORT, "home"),
                          Assignment(SOLAR, Role.PRODUCTION, "pv")], policy or TimePolicy(clock="sensor"), baseline)


def flm02(policy=None, baseline=None) -> ReadingAssembler:
    return assembler_for([Assignment(NET, Role.GRID_NET, "home")], policy or TimePolicy(clock="sensor"), baseline)


def feed(asm: ReadingAssembler, *samples, now: datetime | None = None, synced: bool | None = True,
         retained: bool = False) -> list[Reading]:
    out = []
    for x in samples:
        out += asm.accept(x, now=now or at(x.ts + 1), synced=synced, retained=retained)
    return out


# -- registers and emission ------------------------------------------------------------------------


def test_flm03_counters_of_one_second_make_one_reading_with_both_registers():
    a = flm03()
    out = feed(a, s(PLUS, "counter", T0, 1000.5, True), s(MINUS, "counter", T0, 250.999, True),
               s(PLUS, "gauge", T0, 300.0, True), s(MINUS, "gauge", T0, 0.0, True))
    assert out == []  # other sensors of that second may still come
    out = feed(a, s(PLUS, "gauge", T0 + 1, 310.0, True))
    assert len(out) == 1
    r = out[0]
    assert (r.meter_id, r.time, r.import_wh, r.export_wh) == ("home", at(T0), {"0": 1000}, {"0": 250})
    assert (r.import_w, r.export_w, r.clock, r.source) == (300.0, 0.0, ClockQuality.METER, "flukso")
    assert a.flush(now=at(T0 + 2), synced=True) == []  # nothing pending any more


def test_a_meter_waits_until_each_of_its_counters_has_reported():
    a = flm03()
    assert feed(a, s(PLUS, "counter", T0, 10.0, True), s(PLUS, "counter", T0 + 60, 11.0, True)) == []
    assert a.notes == [("meter.waiting_for_sensor", {"meter": "home", "sensors": MINUS})]
    out = feed(a, s(MINUS, "counter", T0 + 60, 5.0, True)) + a.flush(now=at(T0 + 61), synced=True)
    assert [(r.time, r.import_wh, r.export_wh) for r in out] == [(at(T0 + 60), {"0": 11}, {"0": 5})]


def test_production_meter_carries_export_only():
    a = flm03()
    feed(a, s(SOLAR, "gauge", T0, 2500.0, True), s(SOLAR, "counter", T0, 1234.5, True))
    [r] = a.flush(now=at(T0 + 1), synced=True)
    assert (r.meter_id, r.import_wh, r.export_wh, r.import_w, r.export_w) == ("pv", {}, {"0": 1234}, None, 2500.0)


def test_a_late_sample_goes_into_the_next_reading_never_backwards_in_time():
    a = flm03()
    feed(a, s(PLUS, "counter", T0, 10.0, True))
    [r1] = feed(a, s(MINUS, "counter", T0, 5.0, True)) + a.flush(now=at(T0 + 1), synced=True)
    assert r1.time == at(T0)
    with pytest.raises(Rejected, match="not newer"):  # the same second again: a QoS 1 duplicate
        feed(a, s(MINUS, "counter", T0, 6.0, True))
    assert a.counts["duplicate"] == 1
    feed(a, s(PLUS, "counter", T0 + 60, 12.0, True))
    [r2] = a.flush(now=at(T0 + 61), synced=True)
    assert (r2.time, r2.import_wh, r2.export_wh) == (at(T0 + 60), {"0": 12}, {"0": 5})


def test_signed_net_gauge_is_split_into_import_and_export_power():
    a = flm02()
    feed(a, s(NET, "counter", T0, 100), s(NET, "gauge", T0, -1500))
    [r] = a.flush(now=at(T0 + 1), synced=True)
    assert (r.import_w, r.export_w) == (0.0, 1500.0)
    feed(a, s(NET, "counter", T0 + 1, 101), s(NET, "gauge", T0 + 1, 700))
    [r] = a.flush(now=at(T0 + 2), synced=True)
    assert (r.import_w, r.export_w) == (700.0, 0.0)
    feed(a, s(NET, "counter", T0 + 500, 102))  # the gauge went quiet: its last value is not live power
    [r] = a.flush(now=at(T0 + 501), synced=True)
    assert (r.import_w, r.export_w) == (None, None)
    assert a.live()["home"].import_w == 700.0


# -- the FLM02 net counter -------------------------------------------------------------------------

walks = st.lists(st.tuples(st.integers(min_value=1, max_value=200), st.integers(min_value=-40, max_value=40)),
                 min_size=1, max_size=300)


def run_net(asm: ReadingAssembler, start_net: int, steps, t: int = T0) -> list[Reading]:
    out = feed(asm, s(NET, "counter", t, start_net))
    net = start_net
    for dt, d in steps:
        t += dt
        net += d
        out += feed(asm, s(NET, "counter", t, net))
    return out + asm.flush(now=at(t + 1), synced=True)


@settings(max_examples=300)
@given(start=st.integers(min_value=-10**6, max_value=10**6), steps=walks)
def test_net_counter_splits_into_two_monotone_registers(start, steps):
    rs = run_net(flm02(), start, steps)
    nets = [start]
    for _, d in steps:
        nets.append(nets[-1] + d)
    assert len(rs) == len(nets)
    rises = falls = 0
    for i, (r, net) in enumerate(zip(rs, nets, strict=True)):
        imp, exp = r.import_wh["0"], r.export_wh["0"]
        assert imp - exp == net  # the split always stands for the net counter
        if i:
            d = net - nets[i - 1]
            rises += max(d, 0)
            falls += max(-d, 0)
            assert imp == rs[0].import_wh["0"] + rises and exp == rs[0].export_wh["0"] + falls
    assert min(rs[0].import_wh["0"], rs[0].export_wh["0"]) == 0 and all(r.time > rs[0].time for r in rs[1:])


class ListStore:
    """What the pipeline needs of a store: committed quarter-hours and the last one per meter."""

    def __init__(self) -> None:
        self.qhs: list[QuarterHour] = []

    def commit(self, qhs: list[QuarterHour]) -> None:
        self.qhs += qhs

    def last_boundary(self, meter_id: str) -> QuarterHour | None:
        mine = [q for q in self.qhs if q.meter_id == meter_id]
        return mine[-1] if mine else None


def quarter_hours(samples, store: ListStore, baseline=None):
    """One daemon run: assembler → aggregator → committed quarter-hours (the open one is lost)."""
    asm = flm02(baseline=baseline)
    agg = QuarterHourAggregator("home", max_gap=timedelta(minutes=5), source="flukso",
                                baseline=baseline("home") if baseline else None)
    for x in samples:
        for r in feed(asm, x):
            store.commit(agg.add(r))
    for r in asm.flush(now=at(samples[-1].ts + 1), synced=True) if samples else []:
        store.commit(agg.add(r))


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(min_value=30, max_value=90), st.integers(min_value=-30, max_value=30)),
                      min_size=250, max_size=400),
       crash=st.floats(min_value=0.3, max_value=0.7), down=st.integers(min_value=0, max_value=40))
def test_a_restart_resumes_the_split_without_counting_twice(steps, crash, down):
    net, t, samples = 5000, T0, []
    for dt, d in steps:
        t, net = t + dt, net + d
        samples.append(s(NET, "counter", t, net))
    ref = ListStore()
    quarter_hours(samples, ref)
    k = int(len(samples) * crash)
    run = ListStore()
    quarter_hours(samples[:k], run)  # the daemon dies after sample k ...
    assert run.qhs, "the first run committed a quarter-hour to resume from"
    crashed_at = samples[k - 1].ts
    quarter_hours(samples[k + down:], run, baseline=run.last_boundary)  # ... and is back `down` samples later
    resumed_at = samples[k + down].ts
    starts = [q.start for q in run.qhs]
    assert starts == [starts[0] + i * QUARTER for i in range(len(starts))]  # none lost, none twice
    assert all(q.import_wh >= 0 and q.export_wh >= 0 for q in run.qhs)
    ref_by = {q.start: q for q in ref.qhs}
    assert set(starts) <= set(ref_by)

    def same(q: QuarterHour) -> bool:
        return (q.import_wh, q.export_wh) == (ref_by[q.start].import_wh, ref_by[q.start].export_wh)

    # before the crash and once both boundaries lie after the restart: exactly the reference
    assert all(same(q) for q in run.qhs if q.end.timestamp() <= crashed_at or q.start.timestamp() >= resumed_at)
    # across the gap: the net is conserved exactly, and what the gap hides can only be an import and
    # an export that cancelled each other, never energy counted twice
    after = [q for q in run.qhs if q.end.timestamp() >= resumed_at]
    assert after, "a boundary was crossed after the restart"
    span = [q for q in run.qhs if q.end <= after[0].end]
    ref_span = [ref_by[q.start] for q in span]
    assert sum(q.import_wh - q.export_wh for q in span) == sum(q.import_wh - q.export_wh for q in ref_span)
    assert sum(q.import_wh for q in span) <= sum(q.import_wh for q in ref_span)
    assert sum(q.export_wh for q in span) <= sum(q.export_wh for q in ref_span)


def test_restart_from_a_baseline_books_the_net_change_by_its_sign():
    b = QuarterHour("home", at(T0 - 900), 10, 3, "measured", end_import_register={"0": 700},
                    end_export_register={"0": 200})  # stands for net = 500
    a = flm02(baseline=lambda m: b)
    with pytest.raises(Rejected) as exc:  # before the committed end: already counted
        feed(a, s(NET, "counter", T0 - 5, 480))
    assert exc.value.kind == "stale" and a.counts["stale"] == 1
    feed(a, s(NET, "counter", T0 + 30, 470))
    [r1] = a.flush(now=at(T0 + 31), synced=True)
    feed(a, s(NET, "counter", T0 + 60, 520))
    [r2] = a.flush(now=at(T0 + 61), synced=True)
    assert (r1.import_wh, r1.export_wh) == ({"0": 700}, {"0": 230})
    assert (r2.import_wh, r2.export_wh) == ({"0": 750}, {"0": 230})


# -- time -------------------------------------------------------------------------------------------


def test_pi_clock_synchronised_refuses_future_and_recognises_stale_samples():
    a = flm03(TimePolicy(clock="pi", stale_after_s=120, future_tolerance_s=10))
    now = at(T0)
    with pytest.raises(Rejected) as exc:
        feed(a, s(PLUS, "counter", T0 + 3600, 1.0, True), now=now)
    assert exc.value.kind == "future" and "3600 s ahead" in exc.value.reason and exc.value.meter_id == "home"
    with pytest.raises(Rejected) as exc:  # a retained value the Fluksometer left an hour ago
        feed(a, s(PLUS, "counter", T0 - 3600, 1.0, True), now=now, retained=True)
    assert exc.value.kind == "stale"
    out = feed(a, s(PLUS, "counter", T0 - 2, 2.0, True), s(MINUS, "counter", T0 - 2, 1.0, True), now=now)
    out += a.flush(now=now, synced=True)
    assert [(r.time, r.clock) for r in out] == [(at(T0 - 2), ClockQuality.SYNCED)]  # its own second
    assert (a.counts["future"], a.counts["stale"]) == (1, 1)


def test_pi_clock_unsynchronised_stamps_on_receipt_and_skips_retained_values():
    a = flm03(TimePolicy(clock="pi"))
    pi_now = at(T0 - 86400 * 30)  # a Pi without RTC, booted a month in the past
    with pytest.raises(Rejected) as exc:
        feed(a, s(PLUS, "counter", T0, 2.0, True), now=pi_now, synced=False, retained=True)
    assert exc.value.kind == "stale" and "unknown age" in exc.value.reason
    out = feed(a, s(PLUS, "counter", T0, 2.0, True), s(MINUS, "counter", T0, 1.0, True), now=pi_now, synced=False)
    out += feed(a, s(PLUS, "gauge", T0 + 1, 5.0, True), now=pi_now + timedelta(seconds=1), synced=False)
    assert [(r.time, r.clock) for r in out] == [(pi_now + timedelta(seconds=1), ClockQuality.UNSYNCED)]


def test_sensor_clock_judges_staleness_against_the_newest_sample():
    a = flm03(TimePolicy(clock="sensor", stale_after_s=120))
    feed(a, s(PLUS, "gauge", T0, 1.0, True), synced=False)
    with pytest.raises(Rejected, match="older than the newest"):
        feed(a, s(MINUS, "counter", T0 - 121, 1.0, True), synced=False)
    feed(a, s(MINUS, "counter", T0 - 100, 1.0, True), synced=False)  # within the window: fine


# -- bad input -------------------------------------------------------------------------------------


def test_a_counter_going_backwards_is_refused_until_it_is_clearly_a_reset():
    a = flm03()
    feed(a, s(PLUS, "counter", T0, 5000.0, True), s(MINUS, "counter", T0, 10.0, True))
    with pytest.raises(Rejected) as exc:
        feed(a, s(PLUS, "counter", T0 + 60, 4000.0, True))  # a glitch
    assert exc.value.kind == "backwards" and "5000 Wh to 4000 Wh" in exc.value.reason
    feed(a, s(PLUS, "counter", T0 + 120, 5001.0, True))  # and back on track
    for i, v in enumerate((3.0, 4.0)):  # a replaced Fluksometer: counting again from zero ...
        with pytest.raises(Rejected):
            feed(a, s(PLUS, "counter", T0 + 180 + 60 * i, v, True))
    feed(a, s(PLUS, "counter", T0 + 300, 5.0, True))  # ... consistently: accepted as a reset
    assert a.notes[-1][0] == "counter.reset" and a.counts["backwards"] == 3 and a.counts["reset"] == 1
    [r] = a.flush(now=at(T0 + 301), synced=True)
    assert r.import_wh == {"0": 5}  # the aggregator counts the reset interval as zero and flags it


def test_a_unit_that_is_not_electricity_is_refused_for_an_energy_role():
    a = flm03()
    with pytest.raises(Rejected) as exc:
        feed(a, s(PLUS, "counter", T0, 12, unit="L"))
    assert exc.value.kind == "unknown_unit" and "'L'" in exc.value.reason
    with pytest.raises(Rejected, match="negative"):
        feed(a, s(PLUS, "counter", T0, -12))

"""The local store: exact round-trips, idempotent commits, totals on local days, outbox, retention, disk."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sqlite3
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.store.schema as store_module  # the schema version and migrations
from gateway.model import QUARTER, Quality, QuarterHour
from gateway.store import Store, StoreError

UTC = timezone.utc
JAN = datetime(2026, 1, 5, tzinfo=UTC)


# -- round trip ---------------------------------------------------------------------------------------

registers = st.dictionaries(st.text(min_size=1, max_size=4), st.integers(0, 2**53), max_size=4)
quarter_hours = st.builds(
    QuarterHour,
    meter_id=st.text(min_size=1, max_size=24),
    start=st.integers(0, 4_000_000_000 // 900).map(lambda k: datetime.fromtimestamp(k * 900, UTC)),
    import_wh=st.integers(0, 2**53),
    export_wh=st.integers(0, 2**53),
    quality=st.sampled_from(list(Quality)),
    import_by_tariff=registers,
    export_by_tariff=registers,
    end_import_register=registers,
    end_export_register=registers,
    flags=st.lists(st.text(max_size=16), max_size=3).map(tuple),
    source=st.text(max_size=8),
)


def test_every_field_round_trips_exactly(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.sqlite", sinks=("influx",))
    serial = itertools.count()

    @settings(max_examples=250, deadline=None)
    @given(quarter_hours)
    def check(qh: QuarterHour) -> None:
        qh = dataclasses.replace(qh, meter_id=f"{qh.meter_id}#{next(serial)}")  # a new key every example
        assert store.commit_quarter_hours([qh]) == 1
        back = store.quarter_hours(qh.meter_id)
        assert back == [qh]
        assert back[0].start.tzinfo is UTC
        assert isinstance(back[0].quality, Quality) and isinstance(back[0].flags, tuple)
        assert store.last_boundary(qh.meter_id) == qh
        assert store.outbox_peek("influx", 10**6)[-1][1] == qh

    check()
    store.close()


def test_round_trip_survives_reopening(tmp_path: Path, make_quarter_hours) -> None:
    qhs = make_quarter_hours("m1", JAN, 8, quality=Quality.INTERPOLATED)
    qhs[3] = dataclasses.replace(qhs[3], flags=("register_reset", "clock_unsynced"), quality=Quality.ESTIMATED)
    with Store(tmp_path / "q.sqlite") as s:
        s.commit_quarter_hours(qhs)
    with Store(tmp_path / "q.sqlite") as s:
        assert s.quarter_hours() == qhs
        assert s.last_boundary("m1") == qhs[-1]
        assert s.last_boundary("nobody") is None


def test_quarter_hours_filters_and_orders_by_start_then_meter(store: Store, make_quarter_hours) -> None:
    a = make_quarter_hours("b-meter", JAN, 4)
    b = make_quarter_hours("a-meter", JAN, 4)
    store.commit_quarter_hours(a)
    store.commit_quarter_hours(b)
    everything = store.quarter_hours()
    assert [(q.start, q.meter_id) for q in everything] == sorted((q.start, q.meter_id) for q in a + b)
    window = store.quarter_hours(start=JAN + QUARTER, end=JAN + 3 * QUARTER)
    assert {q.start for q in window} == {JAN + QUARTER, JAN + 2 * QUARTER}
    assert store.quarter_hours("a-meter", start=JAN + 3 * QUARTER) == b[3:]
    assert store.meters() == ["a-meter", "b-meter"]


def test_malformed_quarter_hours_are_refused_and_nothing_of_the_batch_is_committed(store: Store, make_quarter_hours) -> None:
    good = make_quarter_hours("m1", JAN, 2)
    naive = dataclasses.replace(good[1], start=datetime(2026, 1, 5, 0, 15))
    off_boundary = dataclasses.replace(good[1], start=JAN + timedelta(minutes=7))
    for bad in (naive, off_boundary):
        with pytest.raises(ValueError):
            store.commit_quarter_hours([good[0], bad])
    assert store.quarter_hours() == []
    assert store.outbox_depth() == 0


# -- duplicates -----------------------------------------------------------------------------------------


def test_an_identical_duplicate_is_a_no_op(store: Store, make_quarter_hours) -> None:
    qhs = make_quarter_hours("m1", JAN, 12)
    assert store.commit_quarter_hours(qhs) == 12
    totals = store.daily_totals()
    assert store.commit_quarter_hours(qhs) == 0
    assert store.commit_quarter_hours(qhs[5:] + make_quarter_hours("m1", JAN + 12 * QUARTER, 1)) == 1
    assert store.count_quarter_hours() == 13
    assert store.outbox_depth("influx") == 13
    assert store.daily_totals()[0].quarter_hours == totals[0].quarter_hours + 1
    assert store.conflicts() == []


def test_a_conflicting_duplicate_is_kept_out_and_logged(store: Store, make_quarter_hours, caplog) -> None:
    qhs = make_quarter_hours("m1", JAN, 4)
    store.commit_quarter_hours(qhs)
    before = store.daily_totals()
    changed = dataclasses.replace(qhs[2], import_wh=qhs[2].import_wh + 1, quality=Quality.ESTIMATED)
    fresh = make_quarter_hours("m1", JAN + 4 * QUARTER, 1)
    with caplog.at_level(logging.WARNING, logger="quartier.gateway.store"):
        assert store.commit_quarter_hours([changed, fresh[0]]) == 1  # the new one still goes in
    assert store.quarter_hours("m1", start=qhs[2].start, end=qhs[2].end) == [qhs[2]]
    assert store.daily_totals()[0].import_wh == before[0].import_wh + fresh[0].import_wh
    warnings = [r for r in caplog.records if r.getMessage() == "store.conflicting_duplicate"]
    assert len(warnings) == 1
    assert warnings[0].fields == "import_wh,quality"  # type: ignore[attr-defined]
    [conflict] = store.conflicts()
    assert (conflict.meter_id, conflict.start) == ("m1", qhs[2].start)
    assert conflict.offered["import_wh"] == changed.import_wh and conflict.offered["quality"] == "estimated"
    # offered again: logged again, recorded once
    store.commit_quarter_hours([changed])
    assert len(store.conflicts()) == 1


def test_a_conflict_inside_one_batch_keeps_the_first(store: Store, make_quarter_hours) -> None:
    [qh] = make_quarter_hours("m1", JAN, 1)
    other = dataclasses.replace(qh, export_wh=qh.export_wh + 5)
    assert store.commit_quarter_hours([qh, other, qh]) == 1
    assert store.quarter_hours() == [qh]
    assert len(store.conflicts()) == 1


# -- totals on local calendar days ------------------------------------------------------------------------


def local_day_sums(qhs: list[QuarterHour], first_utc: datetime, after_utc: datetime) -> tuple[int, int, int]:
    inside = [q for q in qhs if first_utc <= q.start < after_utc]
    return sum(q.import_wh for q in inside), sum(q.export_wh for q in inside), len(inside)


@pytest.mark.parametrize(
    ("day", "first_utc", "after_utc", "expected"),
    [
        # spring forward: 02:00 CET -> 03:00 CEST, the local day lasts 23 h
        (date(2026, 3, 29), datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC), 92),
        (date(2026, 6, 15), datetime(2026, 6, 14, 22, tzinfo=UTC), datetime(2026, 6, 15, 22, tzinfo=UTC), 96),
        # fall back: 03:00 CEST -> 02:00 CET, the local day lasts 25 h
        (date(2026, 10, 25), datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 25, 23, tzinfo=UTC), 100),
    ],
)
def test_daily_totals_follow_the_local_calendar_day(
    store: Store, make_quarter_hours, day: date, first_utc: datetime, after_utc: datetime, expected: int
) -> None:
    # a margin of three hours on both sides lands in the neighbouring local days
    qhs = make_quarter_hours("m1", first_utc - timedelta(hours=3), (expected + 24))
    qhs[10] = dataclasses.replace(qhs[10], quality=Quality.ESTIMATED)  # inside the day (13th quarter-hour is 00:15 local)
    qhs[20] = dataclasses.replace(qhs[20], quality=Quality.ESTIMATED)
    store.commit_quarter_hours(qhs)
    totals = {t.day: t for t in store.daily_totals("m1")}
    assert sorted(totals) == [day - timedelta(days=1), day, day + timedelta(days=1)]
    t = totals[day]
    assert (t.import_wh, t.export_wh, t.quarter_hours) == local_day_sums(qhs, first_utc, after_utc)
    assert t.quarter_hours == t.expected == expected
    assert t.estimated == 1  # qhs[10] is the day before's last hour; qhs[20] is inside
    assert sum(x.quarter_hours for x in totals.values()) == len(qhs)
    assert store.daily_totals("m1", start=day, end=day + timedelta(days=1)) == [t]


def test_monthly_totals_and_expected_counts_across_the_dst_months(store: Store, make_quarter_hours) -> None:
    march = make_quarter_hours("m1", datetime(2026, 2, 28, 23, tzinfo=UTC), 2972)  # all of March, local
    october = make_quarter_hours("m1", datetime(2026, 9, 30, 22, tzinfo=UTC), 2980)  # all of October
    store.commit_quarter_hours(march)
    store.commit_quarter_hours(october)
    [mar, oct_] = store.monthly_totals("m1")
    assert (mar.month, mar.quarter_hours, mar.expected) == ("2026-03", 2972, 2972)
    assert (oct_.month, oct_.quarter_hours, oct_.expected) == ("2026-10", 2980, 2980)
    assert mar.import_wh == sum(q.import_wh for q in march) and oct_.export_wh == sum(q.export_wh for q in october)
    assert store.monthly_totals(start="2026-04") == [oct_]
    daily = store.daily_totals("m1", start=date(2026, 3, 1), end=date(2026, 4, 1))
    assert len(daily) == 31 and all(d.quarter_hours == d.expected for d in daily)
    assert sum(d.import_wh for d in daily) == mar.import_wh


def test_totals_use_the_configured_time_zone(tmp_path: Path, make_quarter_hours) -> None:
    with Store(tmp_path / "utc.sqlite", timezone="UTC") as s:
        s.commit_quarter_hours(make_quarter_hours("m1", datetime(2026, 3, 29, tzinfo=UTC), 96))
        [day] = s.daily_totals()
        assert (day.day, day.quarter_hours, day.expected) == (date(2026, 3, 29), 96, 96)


# -- outbox and dead letters ----------------------------------------------------------------------------


def test_outbox_peek_ack_and_dead_letter(tmp_path: Path, make_quarter_hours) -> None:
    s = Store(tmp_path / "q.sqlite", sinks=("influx", "uplink"))
    first = make_quarter_hours("m1", JAN, 3)
    second = make_quarter_hours("m2", JAN, 3)
    s.commit_quarter_hours(first)
    s.commit_quarter_hours(second)
    assert s.outbox_depths() == {"influx": 6, "uplink": 6}
    rows = s.outbox_peek("influx", 4)
    assert [qh for _, qh in rows] == first + second[:1]  # commit order, oldest first
    assert [i for i, _ in rows] == sorted(i for i, _ in rows)
    s.outbox_ack("influx", [rows[0][0], rows[1][0]], state={"influx.last_push": "x"})
    assert s.get_state("influx.last_push") == "x"
    s.dead_letter("influx", [rows[2][0]], "HTTP 400: field type conflict")
    assert [qh for _, qh in s.outbox_peek("influx", 10)] == second
    assert s.outbox_depth("uplink") == 6 and s.outbox_depth() == 9
    [dead] = s.dead_letters()
    assert (dead.sink, dead.quarter_hour, dead.reason) == ("influx", first[2], "HTTP 400: field type conflict")
    assert s.dead_letters("uplink") == []
    # after fixing the cause, a dead letter goes back to the end of the queue
    assert s.requeue_dead_letters("influx") == 1
    assert [qh for _, qh in s.outbox_peek("influx", 10)] == second + [first[2]]
    assert s.dead_letters() == []
    s.dead_letter("influx", [s.outbox_peek("influx", 1)[0][0]], "HTTP 422")
    assert s.discard_dead_letters("influx") == 1
    s.close()


def test_enqueue_requeues_committed_quarter_hours_once(store: Store, make_quarter_hours) -> None:
    qhs = make_quarter_hours("m1", JAN, 5)
    store.commit_quarter_hours(qhs)
    store.outbox_ack("influx", [i for i, _ in store.outbox_peek("influx", 10)])
    assert store.enqueue("influx", start=JAN + 2 * QUARTER) == 3
    assert store.enqueue("influx") == 2  # the three still queued are not queued twice
    assert [qh for _, qh in store.outbox_peek("influx", 10)] == qhs[2:] + qhs[:2]
    assert store.enqueue("new-sink", meter_id="m1") == 5
    assert store.outbox_discard("new-sink") == 5


def test_state_is_a_small_key_value_table(store: Store) -> None:
    assert store.get_state("influx.last_push") is None
    store.set_state("influx.last_push", "2026-01-01T00:00:00+00:00")
    store.set_state("influx.last_push", "2026-01-02T00:00:00+00:00")
    store.set_state("mqtt.down_since", "")
    assert store.states("influx.") == {"influx.last_push": "2026-01-02T00:00:00+00:00"}


# -- retention and disk ------------------------------------------------------------------------------


def test_retention_never_deletes_unpushed_or_dead_lettered_quarter_hours(tmp_path: Path, make_quarter_hours) -> None:
    s = Store(tmp_path / "q.sqlite", sinks=("influx",), retention_days=7)
    old = make_quarter_hours("m1", datetime(2026, 1, 1, tzinfo=UTC), 96 * 10)  # ten days
    quiet = make_quarter_hours("m2", datetime(2026, 1, 1, tzinfo=UTC), 4)  # a meter that went silent
    s.commit_quarter_hours(old + quiet)
    ids = {(qh.meter_id, qh.start): i for i, qh in s.outbox_peek("influx", 10**6)}
    pushed = old[:500] + quiet
    s.outbox_ack("influx", [ids[q.meter_id, q.start] for q in pushed])
    s.dead_letter("influx", [ids["m1", old[600].start]], "HTTP 400")
    totals_before = s.daily_totals()
    now = datetime(2026, 1, 11, 0, 0, 30, 123456, tzinfo=UTC)  # cutoff: 2026-01-04 00:00:31
    deleted = s.enforce_retention(now)
    cutoff = now - timedelta(days=7)
    kept = {(q.meter_id, q.start) for q in s.quarter_hours()}
    expected_gone = {(q.meter_id, q.start) for q in pushed if q.start < cutoff} - {("m2", quiet[-1].start)}
    assert deleted == len(expected_gone) == 3 * 96 + 1 + 3  # 2026-01-04 00:00 began before the cutoff
    assert kept == {(q.meter_id, q.start) for q in old + quiet} - expected_gone
    assert ("m1", old[600].start) in kept
    assert s.last_boundary("m2") == quiet[-1]  # the restart baseline of a silent meter stays
    assert s.daily_totals() == totals_before  # totals outlive their quarter-hours
    assert s.enforce_retention(now) == 0
    s.close()


def test_without_retention_nothing_is_deleted(store: Store, make_quarter_hours) -> None:
    store.commit_quarter_hours(make_quarter_hours("m1", datetime(2020, 1, 1, tzinfo=UTC), 10))
    store.outbox_ack("influx", [i for i, _ in store.outbox_peek("influx", 100)])
    assert store.enforce_retention(datetime(2026, 1, 1, tzinfo=UTC)) == 0
    assert store.count_quarter_hours() == 10


def test_disk_alarm_when_over_the_bound_logged_once(tmp_path: Path, make_quarter_hours, caplog) -> None:
    s = Store(tmp_path / "q.sqlite", sinks=("influx",), max_bytes=96 * 1024)  # an empty store is ~76 kB (schema 3)
    assert not s.disk_status().alarm
    with caplog.at_level(logging.INFO, logger="quartier.gateway.store"):
        for day in range(10):
            s.commit_quarter_hours(make_quarter_hours("m1", JAN + timedelta(days=day), 96))
        status = s.disk_status()
        assert status.alarm and "over its bound" in (status.message or "")
        assert status.used_bytes > 96 * 1024 and status.file_bytes >= status.used_bytes
        assert status.outbox_rows == 960
        # every row is still un-pushed: the bound trims nothing, the alarm stays
        assert s.enforce_retention(datetime(2026, 6, 1, tzinfo=UTC)) == 0
        assert s.count_quarter_hours() == 960 and s.disk_status().alarm
    assert [r.getMessage() for r in caplog.records].count("store.disk_alarm") == 1
    # once pushed, the oldest quarter-hours make room, the newest and the totals stay
    s.outbox_ack("influx", [i for i, _ in s.outbox_peek("influx", 10**6)])
    with caplog.at_level(logging.INFO, logger="quartier.gateway.store"):
        deleted = s.enforce_retention(datetime(2026, 6, 1, tzinfo=UTC))
    assert 0 < deleted < 960
    remaining = s.quarter_hours()
    assert remaining[-1].start == JAN + timedelta(days=10) - QUARTER and remaining[0].start > JAN
    assert not s.disk_status().alarm
    assert "store.bound_trimmed" in caplog.messages and "store.disk_ok" in caplog.messages
    assert sum(d.quarter_hours for d in s.daily_totals()) == 960
    s.close()


def test_disk_alarm_when_free_space_is_short(tmp_path: Path) -> None:
    with Store(tmp_path / "q.sqlite", min_free_bytes=2**62) as s:
        status = s.disk_status()
        assert status.alarm and "free on the file system" in (status.message or "")
        assert status.free_bytes > 0


# -- the file itself ------------------------------------------------------------------------------------


def test_the_database_is_in_wal_mode_with_a_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION


def test_a_database_from_a_newer_quartier_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        Store(path)


def test_migrations_run_once_in_order(tmp_path: Path, make_quarter_hours, monkeypatch) -> None:
    path = tmp_path / "q.sqlite"
    with Store(path) as s:
        s.commit_quarter_hours(make_quarter_hours("m1", JAN, 2))
    ran = []

    def add_note_column(conn: sqlite3.Connection) -> None:
        ran.append(1)
        conn.execute("ALTER TABLE quarter_hours ADD COLUMN note TEXT")

    current = store_module.SCHEMA_VERSION
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(store_module.MIGRATIONS, current, add_note_column)
    with Store(path) as s:
        assert len(s.quarter_hours()) == 2
    with Store(path) as s:
        pass
    assert ran == [1]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == current + 1
        assert "note" in [r[1] for r in conn.execute("PRAGMA table_info(quarter_hours)")]


# -- threads ----------------------------------------------------------------------------------------------


def test_a_writer_and_a_sink_thread_share_the_store(store: Store, make_quarter_hours) -> None:
    meters = ("m1", "m2", "m3")
    batches = [make_quarter_hours(m, JAN, 300) for m in meters]
    done = threading.Event()
    acked: list[tuple[str, datetime]] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(300):
                store.commit_quarter_hours([b[i] for b in batches])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    def sink() -> None:
        try:
            while True:
                finished = done.is_set()
                rows = store.outbox_peek("influx", 7)
                if rows:
                    acked.extend((qh.meter_id, qh.start) for _, qh in rows)
                    store.outbox_ack("influx", [i for i, _ in rows])
                elif finished:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=sink)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(acked) == len(set(acked)) == 900
    assert [start for _, start in acked] == sorted(start for _, start in acked)
    assert store.outbox_depth() == 0 and store.count_quarter_hours() == 900

"""This member's allocations in the node's store: one row per (operation, quarter-hour), the server's
latest figures win, and the web service reads them read-only (also from a store written by an older
release, which has no such table yet)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import store as store_module
from gateway.store import Allocation, Store
from services.node.web.history import History

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)
Q = timedelta(minutes=15)


def share(start: datetime, received_wh: int, operation: str = "op1", **kw) -> Allocation:
    base = dict(operation=operation, start=start, received_wh=received_wh, injection_shared_wh=0, pool_wh=90,
                shared_wh=80, consumption_wh=100)
    return Allocation(**{**base, **kw})


def figures(a: Allocation) -> tuple:
    return (a.operation, a.start, a.received_wh, a.injection_shared_wh, a.pool_wh, a.shared_wh, a.consumption_wh,
            a.missing, a.provisional)


def test_a_rerun_replaces_and_a_redelivery_changes_nothing(store: Store) -> None:
    first = datetime(2026, 6, 1, 8, 20, 1, tzinfo=timezone.utc)
    assert store.put_allocation(share(T0, 40, received_at=first)) is True
    assert store.put_allocation(share(T0, 40, received_at=first + timedelta(minutes=5))) is False  # a redelivery
    assert [a.received_at for a in store.allocations()] == [first]  # ...keeps when the figures first came
    corrected = share(T0, 25, pool_wh=70, missing=1, provisional=False, received_at=first + timedelta(hours=1))
    assert store.put_allocation(corrected) is True  # a re-run: the corrected share replaces it
    assert [(figures(a), a.received_at) for a in store.allocations()] == [(figures(corrected), corrected.received_at)]


def test_allocations_are_read_by_operation_and_half_open_range(store: Store) -> None:
    for q in range(4):
        store.put_allocation(share(T0 + q * Q, 10 * q))
    store.put_allocation(share(T0, 99, operation="op2"))  # the member moved operations: kept apart
    got = store.allocations("op1", T0 + Q, T0 + 3 * Q)
    assert [(a.start, a.received_wh) for a in got] == [(T0 + Q, 10), (T0 + 2 * Q, 20)]
    assert [a.operation for a in store.allocations(start=T0, end=T0 + Q)] == ["op1", "op2"]
    assert store.allocations("op3") == []
    assert all(a.received_at is not None and a.received_at.tzinfo is not None for a in store.allocations())


def test_a_start_off_the_quarter_hour_grid_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="quarter-hour boundary"):
        store.put_allocation(share(T0 + timedelta(minutes=5), 1))
    with pytest.raises(ValueError, match="naive"):
        store.put_allocation(share(T0.replace(tzinfo=None), 1))
    assert store.allocations() == []


def test_retention_removes_allocations_as_old_as_the_quarter_hours_it_removes(tmp_path: Path) -> None:
    with Store(tmp_path / "q.sqlite", retention_days=30) as s:
        s.put_allocation(share(T0 - timedelta(days=40), 5))
        s.put_allocation(share(T0 - timedelta(days=10), 6))
        s.enforce_retention(T0)
        assert [a.received_wh for a in s.allocations()] == [6]


def test_the_table_is_added_to_an_older_store_without_a_schema_version_bump(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    with Store(path) as s:
        s.put_allocation(share(T0, 7))
    with sqlite3.connect(path) as db:  # as an older release wrote it: no allocations table
        db.execute("DROP TABLE allocations")
        assert db.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
    history = History(path)
    try:
        assert history.allocations("op1", T0, T0 + Q) == []  # the web service copes until the daemon upgrades
        with Store(path) as s:  # the new daemon opens it: the table is there, the version unchanged
            s.put_allocation(share(T0, 8))
        assert [a.received_wh for a in history.allocations("op1", T0, T0 + Q)] == [8]  # same read-only connection
    finally:
        history.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION


def test_the_web_service_reads_them_read_only(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    history = History(path)
    try:
        assert history.allocations("op1", T0, T0 + Q) == []  # no store yet
        with Store(path) as s:
            s.put_allocation(share(T0, 40))
        assert [(a.start, a.received_wh) for a in history.allocations("op1", T0, T0 + Q)] == [(T0, 40)]
        with pytest.raises(sqlite3.OperationalError, match="readonly|query_only|read-only"):
            history.store().put_allocation(share(T0 + Q, 1))  # type: ignore[union-attr]
    finally:
        history.close()


operations = st.sampled_from(["op1", "op2"])
quarters = st.integers(min_value=0, max_value=5)
wh = st.integers(min_value=0, max_value=5000)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(operations, quarters, wh, wh, st.integers(0, 3)), max_size=12))
def test_the_store_holds_the_last_figures_sent_for_each_quarter_hour(store: Store, sends) -> None:
    with store._transaction() as c:  # a fresh table for each example (the fixture is shared)
        c.execute("DELETE FROM allocations")
    last: dict[tuple[str, datetime], Allocation] = {}
    for op, q, received, pool, missing in sends:
        a = share(T0 + q * Q, received, operation=op, pool_wh=pool, missing=missing)
        before = last.get((op, a.start))
        assert store.put_allocation(a) is (before is None or figures(before) != figures(a))
        last[(op, a.start)] = a
    expected = sorted(last.values(), key=lambda a: (a.start, a.operation))
    assert [figures(a) for a in store.allocations()] == [figures(a) for a in expected]

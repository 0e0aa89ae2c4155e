"""The community server's ingest and allocation (batches handed in directly, no broker needed)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.community.ledger import Ledger
from services.community.roster import QuarterHourResult
from services.community.server import BrokerLink, CommunityServer
from gateway.wire import LiveMsg, QuarterHourMsg, meter_topic, pseudonym
from tests.community_fixtures import SECRET, roster

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)
EAN = {"alice": "541448820000000001", "bob": "541448820000000002", "school": "541448820000000003",
       "carol": "541448820000000004"}
OP = {"alice": "op1", "bob": "op1", "school": "op1", "carol": "op2"}


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[CommunityServer, list[QuarterHourResult], Clock]]:
    got: list[QuarterHourResult] = []
    clock = Clock((T0 + timedelta(minutes=15)).timestamp())
    ledger = Ledger(tmp_path / "community.sqlite")
    srv = CommunityServer(roster(tmp_path), ledger, BrokerLink("127.0.0.1", 1), deadline_s=300,
                          clock=clock, on_allocated=got.append)
    try:
        yield srv, got, clock
    finally:
        ledger.close()


def qh(member: str, start: datetime, imp: int, exp: int, received: float | None = None) -> tuple[str, bytes, float]:
    """A quarter-hour message as the server's queue holds it; received by default right at its end."""
    p = pseudonym(EAN[member], SECRET)
    msg = QuarterHourMsg(meter=p, operation=OP[member], start=start, import_wh=imp, export_wh=exp)
    at = (start + timedelta(minutes=15)).timestamp() if received is None else received
    return meter_topic("moulin", OP[member], p, "qh"), msg.to_bytes(), at


def test_allocates_as_soon_as_every_member_is_in(server) -> None:
    srv, got, _ = server
    srv.handle_batch([qh("alice", T0, 300, 0), qh("school", T0, 0, 500)])
    assert got == []  # bob missing, deadline not reached
    srv.handle_batch([qh("bob", T0, 100, 0)])
    assert len(got) == 1
    res = got[0]
    assert res.received_wh == {"alice": 250, "bob": 100}  # equal key: 250 each, bob capped at 100
    assert res.pool_wh == 500 and res.shared_wh == 350 and res.estimated == ()
    totals = srv.ledger.allocation_totals("op1", T0, T0 + timedelta(minutes=15))
    assert totals["alice"]["received_wh"] == 250 and totals["school"]["injection_shared_wh"] == 350


def test_duplicates_change_nothing_and_late_corrections_rerun(server) -> None:
    srv, got, _ = server
    batch = [qh("alice", T0, 300, 0), qh("bob", T0, 100, 0), qh("school", T0, 0, 500)]
    srv.handle_batch(batch)
    srv.handle_batch(batch)  # at-least-once: the same quarter-hours again
    assert len(got) == 1 and srv.stats.duplicates == 3
    srv.handle_batch([qh("bob", T0, 400, 0)])  # a corrected value arrives late
    assert len(got) == 2 and srv.stats.reruns == 1
    assert got[1].received_wh == {"alice": 250, "bob": 250}
    assert srv.ledger.allocation_totals("op1", T0, T0 + timedelta(hours=1))["bob"]["received_wh"] == 250


def test_a_redelivered_batch_allocates_what_a_killed_server_stored_but_never_allocated(server) -> None:
    """kill -9 between the ledger's commit and the allocation: the broker redelivers the unacknowledged
    messages, all duplicates now, and they complete the quarter-hour at once, not at the deadline."""
    srv, got, _ = server
    batch = [qh("alice", T0, 300, 0), qh("bob", T0, 100, 0), qh("school", T0, 0, 500)]
    srv.ledger.add_quarter_hours([srv._admit(*m) for m in batch])  # stored, then the process died
    assert not srv.ledger.is_allocated("op1", T0)
    srv.handle_batch(batch)  # the redelivery after the restart
    assert len(got) == 1 and got[0].estimated == () and srv.stats.duplicates == 3
    srv.handle_batch(batch)  # and once allocated, the same figures change nothing
    assert len(got) == 1


def test_deadline_allocates_with_the_missing_member_estimated_then_late_data_replaces_it(server) -> None:
    srv, got, clock = server
    prev = T0 - timedelta(minutes=15)
    srv.handle_batch([qh("alice", prev, 300, 0), qh("bob", prev, 80, 0), qh("school", prev, 0, 400)])
    srv.handle_batch([qh("alice", T0, 300, 0), qh("school", T0, 0, 500)])
    assert len(got) == 1
    clock.t = (T0 + timedelta(minutes=15)).timestamp() + 299
    assert srv.allocate_overdue(clock.t) == 0  # not yet
    clock.t += 1
    assert srv.allocate_overdue(clock.t) == 1
    est = got[-1]
    assert est.estimated == ("bob",)
    assert est.consumption_wh["bob"] == 80  # its last known quarter-hour
    assert srv.ledger.allocation_totals("op1", T0, T0 + timedelta(minutes=15))["bob"]["estimated_quarter_hours"] == 1
    srv.handle_batch([qh("bob", T0, 120, 0)])  # the member comes back with its real figure
    assert got[-1].estimated == () and got[-1].received_wh["bob"] == 120
    assert srv.ledger.allocation_totals("op1", T0, T0 + timedelta(minutes=15))["bob"]["estimated_quarter_hours"] == 0


def test_spoofed_or_unknown_senders_are_rejected(server) -> None:
    srv, got, _ = server
    topic, payload, r = qh("alice", T0, 300, 0)
    bob = pseudonym(EAN["bob"], SECRET)
    srv.handle_batch([
        (meter_topic("moulin", "op1", bob, "qh"), payload, r),  # alice's payload on bob's topic
        (meter_topic("moulin", "op2", pseudonym(EAN["alice"], SECRET), "qh"), payload, r),  # wrong operation
        (meter_topic("moulin", "op1", "mnobody", "qh"), payload, r),
        (topic, b"{garbage", r),
    ])
    assert srv.stats.rejected == 4 and got == []


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 8000)), min_size=1, max_size=4))
def test_allocation_conserves_energy_whatever_the_arrival_order(tmp_path_factory, rows) -> None:
    tmp = tmp_path_factory.mktemp("c")
    got: list[QuarterHourResult] = []
    ledger = Ledger(tmp / "c.sqlite")
    srv = CommunityServer(roster(tmp, ["op1"]), ledger, BrokerLink("127.0.0.1", 1), on_allocated=got.append)
    try:
        for i, (a, b, p) in enumerate(rows):
            start = T0 + timedelta(minutes=15 * i)
            srv.handle_batch([qh("school", start, 0, p), qh("bob", start, b, 0)])
            srv.handle_batch([qh("alice", start, a, 0)])
        assert len(got) == len(rows)
        for res, (a, b, p) in zip(got, rows, strict=True):
            assert sum(res.received_wh.values()) == res.shared_wh <= p
            assert res.received_wh["alice"] <= a and res.received_wh["bob"] <= b
            assert res.injection_shared_wh["school"] == res.shared_wh
    finally:
        ledger.close()


def test_live_totals_sum_fresh_members_and_give_a_signal(server) -> None:
    srv, _, clock = server
    now = T0 + timedelta(minutes=5)
    clock.t = now.timestamp()

    def live(member: str, imp: float, exp: float, qi: float, qe: float) -> tuple[str, bytes, float]:
        p = pseudonym(EAN[member], SECRET)
        m = LiveMsg(meter=p, operation=OP[member], time=now, import_w=imp, export_w=exp, qh_start=T0,
                    qh_import_wh=qi, qh_export_wh=qe)
        return meter_topic("moulin", OP[member], p, "live"), m.to_bytes(), clock.t

    srv.handle_batch([live("alice", 400, 0, 30, 0), live("bob", 300, 0, 20, 0), live("school", 0, 4000, 0, 300)])
    srv.publish_totals(clock.t)
    t = srv.last_totals["op1"]
    assert (t.consumption_w, t.pool_w, t.consumption_wh, t.pool_wh) == (700, 4000, 50, 300)
    assert t.members_reporting == 3 and t.signal == "green"
    assert srv.last_totals["op2"].members_reporting == 0 and srv.last_totals["op2"].signal == "red"
    clock.t += 31  # everyone stale
    srv.publish_totals(clock.t)
    assert srv.last_totals["op1"].members_reporting == 0


def test_a_backlog_after_an_outage_is_not_estimated_while_it_drains(server) -> None:
    """The deadline runs from the first figure's arrival on the server's clock: quarter-hours a day
    old that arrive now wait ``deadline_s`` for the other members' backlogs before any estimate."""
    srv, got, clock = server
    clock.t = (T0 + timedelta(days=1)).timestamp()
    old = [T0 + timedelta(minutes=15 * i) for i in range(4)]
    srv.handle_batch([qh("alice", s, 300, 0, received=clock.t) for s in old])
    srv.handle_batch([qh("school", s, 0, 500, received=clock.t) for s in old])
    assert srv.allocate_overdue(clock.t) == 0 and got == []  # a day late, yet not overdue: bob may be draining
    clock.t += 120
    srv.handle_batch([qh("bob", s, 100, 0, received=clock.t) for s in old[:3]])  # bob's backlog, all but one
    assert [r.estimated for r in got] == [()] * 3
    clock.t += 179
    assert srv.allocate_overdue(clock.t) == 0
    clock.t += 1  # 300 s after the first figure of the last quarter-hour
    assert srv.allocate_overdue(clock.t) == 1 and got[-1].start == old[3] and got[-1].estimated == ("bob",)
    assert srv.allocate_overdue(clock.t + 3600) == 0  # allocated once, not again at every tick


def test_a_ledger_from_before_the_pending_table_finds_its_incomplete_quarter_hours(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    ledger = Ledger(path)
    srv = CommunityServer(roster(tmp_path), ledger, BrokerLink("127.0.0.1", 1), deadline_s=300)
    srv.handle_batch([qh("alice", T0, 300, 0), qh("school", T0, 0, 500)])
    srv.handle_batch([qh(m, T0 + timedelta(minutes=15), 1, 1) for m in ("alice", "bob", "school")])
    ledger.close()
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE pending")  # as written by the previous release
    ledger = Ledger(path)
    try:
        end = (T0 + timedelta(minutes=15)).timestamp()
        assert ledger.pending_starts("op1", end + 1) == [T0]  # the complete one was allocated already
        assert ledger.pending_starts("op1", end) == []
    finally:
        ledger.close()


def test_live_totals_follow_the_members_quarter_hour_whatever_their_clocks(server) -> None:
    """Members whose clocks are hours off (a Pi before NTP sync, the demo's simulated meters) still
    count as fresh: freshness is when their summary arrived, the quarter-hour the one they agree on."""
    srv, _, clock = server
    clock.t = (T0 + timedelta(hours=6)).timestamp()
    their_now = T0 + timedelta(minutes=10)  # six hours behind the server
    for member, imp, exp, qi, qe in (("alice", 400, 0, 60, 0), ("bob", 300, 0, 50, 0), ("school", 0, 4000, 0, 600)):
        p = pseudonym(EAN[member], SECRET)
        m = LiveMsg(meter=p, operation="op1", time=their_now, import_w=imp, export_w=exp, qh_start=T0,
                    qh_import_wh=qi, qh_export_wh=qe)
        srv.handle_batch([(meter_topic("moulin", "op1", p, "live"), m.to_bytes(), clock.t - 1)])
    srv.publish_totals(clock.t)
    t = srv.last_totals["op1"]
    assert t.members_reporting == 3 and t.qh_start == T0 and 600 <= t.elapsed_s <= 602
    assert (t.consumption_wh, t.pool_wh) == (110, 600) and t.signal == "green"


def test_a_rerun_reaches_the_central_store_as_a_new_revision_never_an_overwrite(server, victoria_metrics) -> None:
    """The estimate and the re-run after bob's late figure both stay in the store, one second apart
    inside the quarter-hour; the last point of the quarter-hour is the current figure, whatever the
    server's deduplication keeps for a timestamp written twice (services/community/central.py)."""
    from gateway.sinks.influx import load_influxdb_client

    srv, got, clock = server
    mod = load_influxdb_client()
    from influxdb_client.client.write_api import SYNCHRONOUS

    client = mod.InfluxDBClient(url=victoria_metrics.url, token="t", org="o", timeout=10_000)
    write = client.write_api(write_options=SYNCHRONOUS)
    cfg = {"bucket": "b", "org": "o"}
    try:
        srv.handle_batch([qh("alice", T0, 300, 0), qh("school", T0, 0, 500)])
        clock.t += 300
        assert srv.allocate_overdue(clock.t) == 1 and got[-1].estimated == ("bob",)  # bob: 0 Wh, no history
        assert srv.push_once(write, cfg, "allocation", mod) == 3
        assert srv.push_once(write, cfg, "allocation", mod) == 0  # pushed once
        srv.handle_batch([qh("bob", T0, 400, 0)])  # late: the quarter-hour re-runs
        assert srv.push_once(write, cfg, "allocation", mod) == 3
        t0 = int(T0.timestamp())
        pts = {(s.labels["member"], s.timestamp_s): s.value
               for s in victoria_metrics.query_points("allocation_received_wh", operation="op1")}
        first, rerun = got[-2], got[-1]
        assert first.received_wh["bob"] == 0 and rerun.received_wh["bob"] == 250
        assert pts == {**{(m, t0): first.received_wh.get(m, 0) for m in ("alice", "bob", "school")},
                       **{(m, t0 + 1): rerun.received_wh.get(m, 0) for m in ("alice", "bob", "school")}}
        revs = {s.timestamp_s: s.value for s in victoria_metrics.query_points("allocation_revision", member="bob")}
        assert revs == {t0: 1, t0 + 1: 2}
    finally:
        client.close()


def test_a_member_estimated_while_online_is_asked_once_for_that_quarter_hour(server) -> None:
    """Online yet missing at the deadline: the broker dropped its figure (a full queue), its store has
    it. The server asks it for that one quarter-hour; an offline member is simply estimated."""
    srv, got, clock = server
    srv.ledger.set_status("op1", "bob", "online", clock.t)
    for start in (T0, T0 + timedelta(minutes=15)):
        srv.handle_batch([qh("alice", start, 300, 0, received=clock.t), qh("school", start, 0, 500, received=clock.t)])
    clock.t += 300
    assert srv.allocate_overdue(clock.t) == 2 and [r.estimated for r in got] == [("bob",), ("bob",)]
    assert srv.stats.resend_requests == 2 and len(srv._asked) == 2
    srv.ledger.set_status("op1", "bob", "offline", clock.t)
    srv.handle_batch([qh("alice", T0 + timedelta(minutes=30), 300, 0, received=clock.t)])
    clock.t += 300
    assert srv.allocate_overdue(clock.t) == 1 and srv.stats.resend_requests == 2  # offline: not asked

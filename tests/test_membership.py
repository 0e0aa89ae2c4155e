"""Membership over time: join and leave dates, shares with effective dates, the roster of each
quarter-hour (also for a re-run weeks later), one meter in two operations refused, reload while running."""

from __future__ import annotations

import os
import tomllib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.wire import QuarterHourMsg, meter_topic, pseudonym
from services.allocation.errors import AllocationInputError
from services.allocation.model import load_community, parse_community
from services.community.ledger import Ledger
from services.community.membership import operation_on
from services.community.reload import CommunityFileWatcher
from services.community.roster import Roster
from services.community.server import BrokerLink, CommunityServer

SECRET = "membership-secret"
EAN = {"alice": "541448820000000001", "bob": "541448820000000002", "school": "541448820000000003",
       "dora": "541448820000000005"}
# 2026-06-10: dora joins (local day); bob leaves on 2026-06-20 (his last day is the 19th)
BASE = """
[community]
id = "moulin"

[[operations]]
id = "op1"
preset = "fixed-equal"

[[operations.members]]
id = "alice"
meter = "541448820000000001"

[[operations.members]]
id = "bob"
meter = "541448820000000002"
{bob_dates}

[[operations.members]]
id = "school"
role = "producer"
meter = "541448820000000003"

[[operations.members]]
id = "dora"
meter = "541448820000000005"
joined = 2026-06-10
"""


def community_file(tmp: Path, bob_dates: str = "") -> Path:
    path = tmp / "community.toml"
    path.write_text(BASE.format(bob_dates=bob_dates))
    return path


def qh(member: str, start: datetime, imp: int, exp: int) -> tuple[str, bytes, float]:
    p = pseudonym(EAN[member], SECRET)
    msg = QuarterHourMsg(meter=p, operation="op1", start=start, import_wh=imp, export_wh=exp)
    return meter_topic("moulin", "op1", p, "qh"), msg.to_bytes(), (start + timedelta(minutes=15)).timestamp()


def build(c) -> Roster:
    return Roster.build(c, SECRET)


def everyone(start: datetime) -> list[tuple[str, bytes, float]]:
    return [qh("alice", start, 300, 0), qh("bob", start, 300, 0), qh("dora", start, 300, 0), qh("school", start, 0, 600)]


def test_a_member_without_dates_is_a_member_from_the_beginning(tmp_path: Path) -> None:
    op = load_community(community_file(tmp_path)).operation("op1")
    assert [m.id for m in operation_on(op, date(1990, 1, 1)).members] == ["alice", "bob", "school"]
    assert [m.id for m in operation_on(op, date(2026, 6, 10)).members] == ["alice", "bob", "school", "dora"]


def test_each_quarter_hour_uses_the_roster_of_its_local_day_and_a_rerun_weeks_later_the_old_one(tmp_path: Path) -> None:
    got = []
    ledger = Ledger(tmp_path / "c.sqlite")
    path = community_file(tmp_path)
    srv = CommunityServer(build(load_community(path)), ledger, BrokerLink("127.0.0.1", 1),
                          on_allocated=got.append, reloader=CommunityFileWatcher(path, build))
    try:
        before = datetime(2026, 6, 9, 10, 0, tzinfo=timezone.utc)  # dora not yet a member
        # 2026-06-09 22:00 UTC is already the 10th in Brussels (UTC+2): dora is in
        local_10th = datetime(2026, 6, 9, 22, 0, tzinfo=timezone.utc)
        srv.handle_batch([qh("alice", before, 300, 0), qh("bob", before, 300, 0), qh("school", before, 0, 600)])
        assert got[-1].received_wh == {"alice": 300, "bob": 300}  # complete without dora: allocated at once
        srv.handle_batch(everyone(local_10th))
        assert got[-1].received_wh == {"alice": 200, "bob": 200, "dora": 200}
        # the operator edits the file: bob leaves, his last day the 10th; the server reloads it
        path = community_file(tmp_path, 'left = 2026-06-11')
        os.utime(path, ns=(1, 1))  # a different mtime than the first write, whatever the clock's grain
        assert srv.check_reload() is True
        later = datetime(2026, 6, 12, 10, 0, tzinfo=timezone.utc)
        srv.handle_batch([qh("alice", later, 300, 0), qh("dora", later, 300, 0), qh("school", later, 0, 600)])
        assert got[-1].received_wh == {"alice": 300, "dora": 300}  # bob is gone, nobody waits for him
        # weeks later a corrected figure for the 9th arrives: re-run with the roster of the 9th
        srv.handle_batch([qh("alice", before, 200, 0)])
        assert got[-1].start == before and got[-1].received_wh == {"alice": 200, "bob": 300}
        assert "dora" not in ledger.allocation_totals("op1", before, before + timedelta(minutes=15))
    finally:
        ledger.close()


def test_shares_follow_their_effective_dates() -> None:
    c = parse_community(tomllib.loads("""
[community]
id = "c"
[[operations]]
id = "op"
preset = "fixed-specific"
[[operations.members]]
id = "a"
share = 0.5
shares = [{from = 2026-07-01, share = 0.3}]
[[operations.members]]
id = "b"
share = 0.5
[[operations.members]]
id = "c"
joined = 2026-07-01
shares = [{from = 2026-07-01, share = 0.2}]
"""))
    op = c.operation("op")
    assert operation_on(op, date(2026, 6, 30)).shares == {"a": 0.5, "b": 0.5}
    assert operation_on(op, date(2026, 7, 1)).shares == {"a": 0.3, "b": 0.5, "c": 0.2}


def test_shares_over_100_percent_on_some_day_are_refused_with_the_day() -> None:
    with pytest.raises(AllocationInputError, match=r"members\[\*\]\.share: .*from 2026-07-01"):
        parse_community(tomllib.loads("""
[community]
id = "c"
[[operations]]
id = "op"
preset = "fixed-specific"
[[operations.members]]
id = "a"
share = 0.5
[[operations.members]]
id = "b"
share = 0.5
[[operations.members]]
id = "c"
joined = 2026-07-01
share = 0.2
"""))


TWO_OPS = """
[community]
id = "c"
[[operations]]
id = "north"
preset = "prorata"
[[operations.members]]
id = "a"
meter = "5414"
{a}
[[operations]]
id = "south"
preset = "prorata"
[[operations.members]]
id = "z"
meter = "5414"
{z}
"""


def test_one_meter_in_two_operations_at_the_same_time_is_refused_naming_both() -> None:
    with pytest.raises(AllocationInputError) as err:
        parse_community(tomllib.loads(TWO_OPS.format(a="", z="joined = 2026-03-01")))
    msg = str(err.value)
    assert "operations[1].members[0].meter" in msg and "'north'" in msg and "'south'" in msg and "5414" in msg


def test_one_meter_moving_from_one_operation_to_another_is_fine() -> None:
    c = parse_community(tomllib.loads(TWO_OPS.format(a="left = 2026-03-01", z="joined = 2026-03-01")))
    roster = Roster.build(c, SECRET)
    p = pseudonym("5414", SECRET)
    assert roster.seat("north", p).member == "a" and roster.seat("south", p).member == "z"


def test_a_bad_edit_is_refused_and_the_running_roster_kept(tmp_path: Path) -> None:
    path = community_file(tmp_path)
    watcher = CommunityFileWatcher(path, build)
    assert watcher.poll() is None  # unchanged
    path.write_text(BASE.format(bob_dates="left = 2026-01-01\njoined = 2026-02-01"))
    os.utime(path, ns=(2, 2))
    assert watcher.poll() is None  # left before joined: logged, nothing applied
    path.write_text(BASE.format(bob_dates="left = 2026-06-20"))
    os.utime(path, ns=(3, 3))
    new = watcher.poll()
    assert new is not None and new.operations["op1"].member("bob").left == date(2026, 6, 20)
    watcher.request()  # SIGHUP: reload even though the file's time did not change
    assert watcher.poll() is not None

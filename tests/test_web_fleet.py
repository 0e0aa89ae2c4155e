"""The fleet seam (services/node/web/fleet.py): what the fleet uplink fills, and this member's provisional
allocation through the engine's single-quarter-hour path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.allocation import load_community
from services.node.web.fleet import Fleet, FleetQuarterHour, OperationSetup, allocate_member

EXAMPLE = Path(__file__).resolve().parents[1] / "demo" / "operation.toml"
T0 = datetime(2026, 6, 21, 10, 0, tzinfo=UTC)


def test_setup_from_the_community_file():
    op = load_community(EXAMPLE).operation()
    setup = OperationSetup.from_operation(op, "m01")
    assert setup.operation_id == op.id and setup.rounds == op.key_rounds
    assert setup.members == tuple(op.participants) and "hangar" not in setup.members  # a pure producer receives nothing
    with pytest.raises(ValueError, match="not in operation"):
        OperationSetup.from_operation(op, "nobody")


def test_member_allocation_is_conserved_and_capped():
    op = load_community(EXAMPLE).operation()
    setup = OperationSetup.from_operation(op, "m01")
    consumption = {m: 100 + 37 * i for i, m in enumerate(setup.members)}
    production = {"hangar": 2500, "ecole": 1200, "m01": 300}
    mine = allocate_member(setup, FleetQuarterHour(T0, consumption, production))
    assert mine.pool_wh == 4000
    assert mine.shared_wh == min(mine.pool_wh, sum(consumption.values()))  # the last round is pro-rata
    assert 0 <= mine.received_wh <= consumption["m01"]
    assert 0 <= mine.injection_shared_wh <= production["m01"]
    # every member's share, summed, is the operation's shared energy
    total = sum(allocate_member(OperationSetup.from_operation(op, m), FleetQuarterHour(T0, consumption, production)).received_wh
                for m in setup.members)
    assert total == mine.shared_wh


def test_fleet_caches_allocations_and_stays_bounded():
    fleet = Fleet(max_quarter_hours=8)
    assert not fleet.has_data and fleet.member_quarter_hours(T0, T0 + timedelta(days=1)) == {}
    fleet.set_setup(OperationSetup("op", "a", ("equal",), ("a", "b")))
    qhs = [FleetQuarterHour(T0 + timedelta(minutes=15 * i), {"a": 100, "b": 100}, {"p": 60 + i}) for i in range(12)]
    fleet.add_quarter_hours(qhs)
    got = fleet.member_quarter_hours(T0, T0 + timedelta(days=1))
    assert sorted(got) == [q.start for q in qhs[4:]]  # the oldest four were evicted
    for i, m in zip(range(4, 12), got.values(), strict=True):  # equal key: half the pool each, odd Wh rotates
        assert m.received_wh in ((60 + i) // 2, (60 + i + 1) // 2)
    # corrected figures for one quarter-hour replace the cached allocation
    fleet.add_quarter_hours([FleetQuarterHour(qhs[-1].start, {"a": 100, "b": 100}, {"p": 0})])
    assert fleet.member_quarter_hours(qhs[-1].start, qhs[-1].start + timedelta(minutes=15))[qhs[-1].start].received_wh == 0

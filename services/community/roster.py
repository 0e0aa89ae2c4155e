"""Who is who on the wire, and one operation's quarter-hour allocation from its members' data. Pure.

The community file (``services.allocation.load_community``) lists each member's meter EAN; the
server derives each meter's pseudonym with the community secret, so the wire carries only
pseudonyms and the operator's views show member ids.

A quarter-hour is allocated when every member with a meter has sent it, or, once the deadline has
passed, with the missing members *estimated* (their last known quarter-hour, or 0) and marked.
Data that arrives later replaces the estimate and the quarter-hour is allocated again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from services.allocation import Settings, allocate_quarter_hour
from services.allocation.model import Community, Operation
from services.community.admission import DEFAULT_MAX_POWER_W
from services.community.membership import active_ids, operation_at
from gateway.wire import pseudonym


def shard_of(community: str, operation: str, shards: int) -> int:
    """The shard (0-based) that owns an operation: rendezvous (highest random weight) hashing.

    Why rendezvous rather than ``hash % N``: every server process computes the same owner from the
    names alone, with no coordinator, and going from N to N+1 processes moves only the operations the
    new shard wins (about 1/(N+1) of them); modulo would move almost all, and with them their state.
    """
    if shards < 1:
        raise ValueError("shards: at least 1")
    return max(range(shards), key=lambda k: hashlib.sha256(f"{community}/{operation}/{k}".encode()).digest())


def shard_operations(community: str, operations: Iterable[str], shard: int, shards: int) -> list[str]:
    """The operations shard ``shard`` (0-based) of ``shards`` owns."""
    return [op for op in operations if shard_of(community, op, shards) == shard]


@dataclass(frozen=True, slots=True)
class Seat:
    """One metered member of one operation, as the server knows it."""

    operation: str
    member: str
    pseudonym: str
    receives: bool
    produces: bool
    max_power_w: float = DEFAULT_MAX_POWER_W  # the community file's value, else a residential default
    observer: bool = False  # a watched meter (the cabin), not a member: reports, never allocated


@dataclass(frozen=True)
class Roster:
    """Pseudonym -> seat for the community's (or this shard's) operations."""

    community: str
    operations: Mapping[str, Operation]
    seats: Mapping[str, Seat]  # by pseudonym (a meter that moved between operations: its last seat)
    by_operation: Mapping[tuple[str, str], Seat] = field(default_factory=dict)  # (operation, pseudonym)

    @classmethod
    def build(cls, community: Community, secret: str, only: list[str] | None = None,
              default_max_power_w: float = DEFAULT_MAX_POWER_W) -> Roster:
        ops = {op.id: op for op in community.operations if not only or op.id in only}
        missing = sorted(set(only or ()) - set(ops))
        if missing:
            raise ValueError(f"operations: {', '.join(missing)} not in the community file")
        seats: dict[str, Seat] = {}
        by_operation: dict[tuple[str, str], Seat] = {}
        for op in ops.values():
            for m in op.members:
                if m.meter is None:
                    continue  # a member without a meter cannot report: it is never waited for
                p = pseudonym(m.meter, secret)
                seats[p] = by_operation[(op.id, p)] = Seat(op.id, m.id, p, m.receives, m.produces,
                                                           m.max_power_w or default_max_power_w,
                                                           m.role == "observer")
        return cls(community.id, ops, seats, by_operation)

    def seat(self, operation: str, pseudonym_: str) -> Seat | None:
        """The meter's seat in that operation (a meter may have been in another operation before)."""
        if self.by_operation:
            return self.by_operation.get((operation, pseudonym_))
        s = self.seats.get(pseudonym_)
        return s if s is not None and s.operation == operation else None

    def members_of(self, operation: str) -> list[Seat]:
        """Every metered seat the operation ever had (the file's whole history), observers included
        (they report like members)."""
        source = self.by_operation.values() if self.by_operation else self.seats.values()
        return [s for s in source if s.operation == operation]

    def members_at(self, operation: str, start: datetime) -> list[Seat]:
        """The metered members of the operation at that quarter-hour (joined, not yet left): those the
        allocation waits for and shares among, never observers."""
        active = active_ids(self.operations[operation], start)
        return [s for s in self.members_of(operation) if s.member in active and not s.observer]

    def update_from(self, new: Roster) -> None:
        """Take the members of a reloaded community file, in place (the operator API holds this object).

        The operations must be the same ones: adding or removing an operation changes the server's MQTT
        subscriptions, which needs a restart (``ValueError`` says so)."""
        if set(new.operations) != set(self.operations) or new.community != self.community:
            raise ValueError("operations added or removed: restart the server to take them")
        for target, source in ((self.operations, new.operations), (self.seats, new.seats),
                               (self.by_operation, new.by_operation)):
            assert isinstance(target, dict)
            target.update(source)
            for gone in set(target) - set(source):
                del target[gone]

    def allocated_of(self, operation: str) -> list[Seat]:
        """The seats that take part in the allocation: members, never observers."""
        return [s for s in self.members_of(operation) if not s.observer]


@dataclass(frozen=True, slots=True)
class MemberFigures:
    import_wh: int
    export_wh: int
    estimated: bool = False


@dataclass(frozen=True)
class QuarterHourResult:
    """One operation's provisional allocation of one quarter-hour, per member."""

    operation: str
    start: datetime
    received_wh: dict[str, int]  # participant -> shared energy allocated
    injection_shared_wh: dict[str, int]  # producer -> part of its injection that went to members
    consumption_wh: dict[str, int]
    injection_wh: dict[str, int]
    estimated: tuple[str, ...]  # members whose figures were estimated
    pool_wh: int
    shared_wh: int
    total_consumption_wh: int
    extra: dict[str, object] = field(default_factory=dict)


def fill_missing(
    seats: list[Seat], have: Mapping[str, MemberFigures], last_known: Mapping[str, MemberFigures]
) -> dict[str, MemberFigures]:
    """Every seat's figures for a quarter-hour: what it sent, else its last known quarter-hour
    (persistence: a household's next quarter-hour resembles its last), else 0; estimates marked."""
    out: dict[str, MemberFigures] = {}
    for s in seats:
        if s.member in have:
            out[s.member] = have[s.member]
        else:
            prev = last_known.get(s.member)
            out[s.member] = MemberFigures(prev.import_wh if prev else 0, prev.export_wh if prev else 0, True)
    return out


def allocate_operation(op: Operation, start: datetime, figures: Mapping[str, MemberFigures]) -> QuarterHourResult:
    """The engine's single-quarter-hour path over the figures of the members active at ``start``
    (services/community/membership.py: the roster of that day, also for a re-run weeks later)."""
    op = operation_at(op, start)
    participants = op.participants
    if not participants:  # nobody could receive that day (before the first member joined): all to the grid
        injection = {m: figures[m].export_wh for m in op.producers if m in figures}
        return QuarterHourResult(op.id, start, {}, {m: 0 for m in injection}, {}, injection, (),
                                 sum(injection.values()), 0, 0)
    consumption = {m: figures[m].import_wh for m in participants if m in figures}
    production = {m: figures[m].export_wh for m in op.producers if m in figures}
    res = allocate_quarter_hour(
        consumption, production, op.key_rounds, shares=op.shares, settings=op.settings or Settings(),
        start=start, members=participants, round_shares=op.round_shares,
    )
    return QuarterHourResult(
        operation=op.id,
        start=start,
        received_wh={m: int(v) for m, v in res.allocated_wh.items()},
        injection_shared_wh={p: int(v["shared_wh"]) for p, v in res.by_producer.items()},
        consumption_wh=consumption,
        injection_wh=production,
        estimated=tuple(sorted(m for m, f in figures.items() if f.estimated)),
        pool_wh=res.pool_wh,
        shared_wh=res.shared_wh,
        total_consumption_wh=res.consumption_wh,
    )

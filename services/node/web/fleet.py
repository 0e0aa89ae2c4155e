"""The seam the fleet uplink fills: the sharing operation's live totals and per-quarter-hour figures.

A node sees only its own meter. What the rest of the operation consumed and injected comes from the
fleet sync (the community server collects every member's quarter-hours). :class:`Fleet` holds what
the web service knows of it in memory:

- :meth:`Fleet.set_setup`: which operation this node's member belongs to and how it allocates
  (rounds, shares, settings, participants), from the community file, or just the operation and the
  member's pseudonym when the community server allocates (``[uplink]``);
- :meth:`Fleet.update_live`: the operation's running quarter-hour (pool and consumption so far), for
  the consume-now signal and the live surplus (the daemon's uplink relays it, gateway/live.py);
- :meth:`Fleet.add_quarter_hours`: closed quarter-hours of every member (consumption per participant,
  injection per producer), for a provisional allocation of this member computed on this node.

The community server's allocation of this member's share is *not* kept here: the daemon stores it
(``gateway.uplink.UplinkSink``) and the web service reads it from the store, so it survives a restart
of either process (``WebService.member_quarter_hours``).

Everything the page and the API say about sharing is *provisional*: the grid operator computes the
binding allocation once a month from its own data.

The allocation engine (and numpy with it) is imported only when fleet quarter-hours exist, so a node
without fleet data keeps the web service small.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from services.signal import QuarterSoFar


@dataclass(frozen=True, slots=True)
class OperationSetup:
    """How this node's member takes part in its sharing operation."""

    operation_id: str
    member_id: str  # this node's member id in the operation
    rounds: tuple[str, ...]
    members: tuple[str, ...]  # every participant (those who can receive)
    shares: Mapping[str, float] | None = None
    settings: Mapping[str, str] = field(default_factory=dict)  # services.allocation.Settings fields

    @classmethod
    def from_operation(cls, operation, member_id: str) -> OperationSetup:
        """From a :class:`services.allocation.Operation` (the community TOML file)."""
        if member_id not in {m.id for m in operation.members}:
            raise ValueError(f"member {member_id!r} is not in operation {operation.id!r}")
        return cls(
            operation_id=operation.id,
            member_id=member_id,
            rounds=tuple(operation.key_rounds),
            members=tuple(operation.participants),
            shares=operation.shares,
            settings=operation.settings.model_dump(),
        )


@dataclass(frozen=True, slots=True)
class FleetQuarterHour:
    """One closed quarter-hour of the whole operation."""

    start: datetime
    consumption_wh: Mapping[str, int]  # each participant's net import
    production_wh: Mapping[str, int]  # each producer's net injection


@dataclass(frozen=True, slots=True)
class OperationLive:
    """The operation's running quarter-hour so far, summed over the members that reported."""

    start: datetime
    elapsed_s: float
    consumption_wh: float | None  # None: not every member's quarter-hour start is known
    pool_wh: float | None
    consumption_w: float
    pool_w: float
    as_of: datetime  # meter time of the figures
    received_monotonic: float  # when this process received them (time.monotonic())
    members_reporting: int = 0
    members_total: int = 0

    @classmethod
    def from_totals(cls, totals: Mapping[str, object], received_monotonic: float) -> OperationLive:
        """From the community server's totals (a ``TotalsMsg`` as JSON; ``ValueError`` if it is not)."""
        from gateway.wire import TotalsMsg

        msg = TotalsMsg.model_validate(totals)
        return cls(start=msg.qh_start, elapsed_s=msg.elapsed_s, consumption_wh=msg.consumption_wh,
                   pool_wh=msg.pool_wh, consumption_w=msg.consumption_w, pool_w=msg.pool_w, as_of=msg.time,
                   received_monotonic=received_monotonic, members_reporting=msg.members_reporting,
                   members_total=msg.members_total)

    def quarter(self, age_s: float) -> QuarterSoFar:
        """As the consume-now signal's input (export = the pool, import = the consumption)."""
        return QuarterSoFar(
            start=self.start,
            elapsed_s=self.elapsed_s,
            imported_wh=self.consumption_wh,
            exported_wh=self.pool_wh,
            import_w=self.consumption_w,
            export_w=self.pool_w,
            age_s=age_s,
        )


@dataclass(frozen=True, slots=True)
class MemberQuarterHour:
    """This member's provisional share of one closed quarter-hour."""

    start: datetime
    received_wh: int  # shared energy allocated to this member
    injection_shared_wh: int  # part of this member's own injection that went to others
    pool_wh: int
    shared_wh: int  # operation total
    consumption_wh: int  # operation total


class Fleet:
    """Thread-safe holder of what the fleet uplink knows; bounded in memory."""

    def __init__(self, *, max_quarter_hours: int = 40 * 100) -> None:
        self._lock = threading.Lock()
        self._setup: OperationSetup | None = None
        self._live: OperationLive | None = None
        self._qhs: OrderedDict[datetime, FleetQuarterHour] = OrderedDict()
        self._alloc: dict[datetime, MemberQuarterHour] = {}  # computed here, cached
        self._max = max_quarter_hours

    # -- filled by the uplink --------------------------------------------------------------------

    def set_setup(self, setup: OperationSetup | None) -> None:
        with self._lock:
            self._setup = setup
            self._alloc.clear()  # computed under the old setup

    def update_live(self, live: OperationLive | None) -> None:
        with self._lock:
            self._live = live

    def add_quarter_hours(self, qhs: Iterable[FleetQuarterHour]) -> None:
        with self._lock:
            for qh in qhs:
                self._qhs[qh.start] = qh
                self._qhs.move_to_end(qh.start)
                self._alloc.pop(qh.start, None)  # corrected figures: allocate again
            while len(self._qhs) > self._max:
                old, _ = self._qhs.popitem(last=False)
                self._alloc.pop(old, None)

    # -- read by the web service -----------------------------------------------------------------

    @property
    def setup(self) -> OperationSetup | None:
        return self._setup

    def live(self) -> OperationLive | None:
        return self._live

    @property
    def has_data(self) -> bool:
        """Whether there are fleet quarter-hours to allocate on this node."""
        return self._setup is not None and bool(self._qhs)

    def quarter_hours(self, start: datetime, end: datetime) -> list[FleetQuarterHour]:
        with self._lock:
            return [qh for s, qh in self._qhs.items() if start <= s < end]

    def member_quarter_hours(self, start: datetime, end: datetime) -> dict[datetime, MemberQuarterHour]:
        """This member's allocation, computed on this node, in each closed quarter-hour the fleet
        has, keyed by start."""
        setup = self._setup
        if setup is None:
            return {}
        out: dict[datetime, MemberQuarterHour] = {}
        todo: list[FleetQuarterHour] = []
        with self._lock:
            for s, m in self._alloc.items():
                if start <= s < end:
                    out[s] = m
            for s, qh in self._qhs.items():
                if start <= s < end and s not in out:
                    todo.append(qh)
        for qh in todo:
            out[qh.start] = allocate_member(setup, qh)
        with self._lock:
            for qh in todo:
                if qh.start in self._qhs:  # not evicted meanwhile
                    self._alloc[qh.start] = out[qh.start]
        return out


def allocate_member(setup: OperationSetup, qh: FleetQuarterHour) -> MemberQuarterHour:
    """The allocation engine's single-quarter-hour path, seen from this member."""
    from services.allocation import Settings, allocate_quarter_hour

    res = allocate_quarter_hour(
        {k: int(v) for k, v in qh.consumption_wh.items()},
        {k: int(v) for k, v in qh.production_wh.items()},
        setup.rounds,
        shares=setup.shares,
        settings=Settings(**setup.settings),
        start=qh.start,
        members=setup.members,
    )
    own = res.by_producer.get(setup.member_id)
    return MemberQuarterHour(
        start=qh.start,
        received_wh=int(res.allocated_wh.get(setup.member_id, 0)),
        injection_shared_wh=int(own["shared_wh"]) if own else 0,
        pool_wh=res.pool_wh,
        shared_wh=res.shared_wh,
        consumption_wh=res.consumption_wh,
    )

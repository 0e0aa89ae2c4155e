"""Membership over time: who is in an operation, with which agreed share, on a quarter-hour's day. Pure.

Members join and leave during the year and shares change by decision (design.md, field facts); the
community file records it (``joined``, ``left``, ``shares``, see services/allocation/model.py). Every
quarter-hour is allocated with the roster valid on its *local* day in the operation's time zone, also
when a late figure re-runs it weeks later: the file keeps the history, so the old roster is still
there after a member left.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from services.allocation.model import Member, Operation


def local_day(op: Operation, start: datetime) -> date:
    """The quarter-hour's day in the operation's time zone (memberships and prices change at local midnight)."""
    return start.astimezone(_zone(op.timezone)).date()


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def members_on(op: Operation, day: date) -> list[Member]:
    """The members active on that day, each with the share in force that day (file order kept)."""
    out = []
    for m in op.members:
        if m.active_on(day):
            share = m.share_on(day)
            out.append(m if share == m.share and not m.shares else m.model_copy(update={"share": share, "shares": ()}))
    return out


def operation_on(op: Operation, day: date) -> Operation:
    """The operation as it stood on that day: only the members then active, with their shares then.

    Built with ``model_copy`` (no validation: the file was validated as a whole, day by day, when it was
    loaded); the list may be empty on a day before anyone joined."""
    key = (id(op), day)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is op:  # the same object (an id can be reused after a reload)
        return hit[1]
    members = members_on(op, day)
    result = op if members == list(op.members) else op.model_copy(update={"members": members})
    if len(_CACHE) > 4096:
        _CACHE.clear()
    _CACHE[key] = (op, result)
    return result


_CACHE: dict[tuple[int, date], tuple[Operation, Operation]] = {}


def operation_at(op: Operation, start: datetime) -> Operation:
    """:func:`operation_on` for the local day of a quarter-hour start."""
    return operation_on(op, local_day(op, start))


def active_ids(op: Operation, start: datetime) -> set[str]:
    """Ids of the members active at that quarter-hour."""
    return {m.id for m in operation_at(op, start).members}

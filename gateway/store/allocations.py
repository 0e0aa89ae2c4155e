"""This member's allocations as the community server sent them: one row per operation and quarter-hour,
replaced only by a newer figure (a re-run), read by the web service and the sheet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from gateway.store.schema import (
    _QUARTER_S,
    _from_seconds,
    _qh_filter,
    _utc_seconds,
)

_ALLOCATION_COLUMNS = (
    "operation, start, received_wh, injection_shared_wh, pool_wh, shared_wh, consumption_wh, missing, provisional,"
    " received_at"
)
_ALLOCATION_FIGURES = ("received_wh", "injection_shared_wh", "pool_wh", "shared_wh", "consumption_wh", "missing",
                       "provisional")


@dataclass(slots=True, frozen=True)
class Allocation:
    """This member's provisional share of one closed quarter-hour, with the operation's totals, as
    the community server computed and sent it (``AllocationMsg`` on the member's ``alloc`` topic)."""

    operation: str
    start: datetime
    received_wh: int
    injection_shared_wh: int
    pool_wh: int
    shared_wh: int
    consumption_wh: int
    missing: int = 0
    provisional: bool = True
    received_at: datetime | None = None  # when the node stored these figures; None: now, on storing


class AllocationsMixin:
    """The ``allocations`` table of :class:`~gateway.store.Store`."""


    def put_allocation(self, a: Allocation) -> bool:
        """Store the server's share of one quarter-hour, replacing what was stored for the same
        (operation, start): a re-run of a quarter-hour sends corrected figures, and they win.

        Returns False when exactly these figures were already stored (a QoS 1 redelivery; its
        ``received_at`` is then left as it was). Raises ``ValueError`` for a start that is not an aware
        quarter-hour boundary, ``sqlite3.Error`` when the card fails (nothing is written then).
        """
        start = _utc_seconds(a.start, "Allocation.start")
        if start % _QUARTER_S:
            raise ValueError(f"Allocation.start is not on a quarter-hour boundary: {a.start.isoformat()}")
        received = a.received_at or datetime.now(timezone.utc)
        if received.tzinfo is None:
            raise ValueError(f"Allocation.received_at must be an aware datetime, got naive {received!r}")
        row = (a.operation, start, int(a.received_wh), int(a.injection_shared_wh), int(a.pool_wh), int(a.shared_wh),
               int(a.consumption_wh), int(a.missing), 1 if a.provisional else 0, int(received.timestamp()))
        figures = ", ".join(_ALLOCATION_FIGURES)
        with self._transaction() as c:
            changed = c.execute(
                f"INSERT INTO allocations ({_ALLOCATION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (operation, start) DO UPDATE SET "
                + ", ".join(f"{n} = excluded.{n}" for n in (*_ALLOCATION_FIGURES, "received_at"))
                + f" WHERE ({figures}) IS NOT ({', '.join('excluded.' + n for n in _ALLOCATION_FIGURES)})",
                row,
            ).rowcount
        return changed > 0

    def allocations(
        self, operation: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> list[Allocation]:
        """Stored allocations with ``start <= a.start < end``, ordered by start, then operation."""
        where, args = _qh_filter(None, start, end)
        if operation is not None:
            where.insert(0, "operation = ?")
            args.insert(0, operation)
        sql = f"SELECT {_ALLOCATION_COLUMNS} FROM allocations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start, operation"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [
            Allocation(op, _from_seconds(s), rw, isw, pw, sw, cw, mi, bool(pr), _from_seconds(ra))
            for op, s, rw, isw, pw, sw, cw, mi, pr, ra in rows
        ]

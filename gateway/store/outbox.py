"""The sinks' outbox and dead letters: every sink reads its rows here and deletes them only after the
remote side acknowledged; a row a server refused for good becomes a dead letter, kept for
``quartier status`` until an operator requeues or discards it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from gateway.model import QuarterHour
from gateway.store.schema import _COLUMN_NAMES, _chunks, _from_seconds, _qh_filter, decode


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """A quarter-hour a sink's server refused for good (a 4xx), kept for ``quartier status``."""

    id: int
    sink: str
    quarter_hour: QuarterHour
    reason: str
    dead_at: datetime
    enqueued_at: datetime


class OutboxMixin:
    """The ``outbox`` and ``dead_letters`` tables of :class:`~gateway.store.Store`."""


    def outbox_peek(self, sink: str, limit: int) -> list[tuple[int, QuarterHour]]:
        """The sink's oldest ``limit`` pending quarter-hours with their outbox ids, in commit order."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT o.id, {', '.join('q.' + n for n in _COLUMN_NAMES)} FROM outbox o"
                " JOIN quarter_hours q ON q.meter_id = o.meter_id AND q.start = o.start"
                " WHERE o.sink = ? ORDER BY o.id LIMIT ?",
                (sink, int(limit)),
            ).fetchall()
        return [(r[0], decode(r[1:])) for r in rows]

    def outbox_ack(self, sink: str, ids: Sequence[int], *, state: Mapping[str, str] | None = None) -> None:
        """Delete rows the remote side acknowledged; ``state`` is written in the same transaction."""
        with self._transaction() as c:
            for chunk in _chunks(ids):
                c.execute(f"DELETE FROM outbox WHERE sink = ? AND id IN ({','.join('?' * len(chunk))})", (sink, *chunk))
            for key, value in (state or {}).items():
                c.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    def dead_letter(self, sink: str, ids: Sequence[int], reason: str) -> None:
        """Move rows the remote side refused for good out of the outbox, with the reason and time."""
        now = int(datetime.now(timezone.utc).timestamp())
        with self._transaction() as c:
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                c.execute(
                    "INSERT OR REPLACE INTO dead_letters (id, sink, meter_id, start, enqueued_at, reason, dead_at)"
                    f" SELECT id, sink, meter_id, start, enqueued_at, ?, ? FROM outbox WHERE sink = ? AND id IN ({marks})",
                    (reason, now, sink, *chunk),
                )
                c.execute(f"DELETE FROM outbox WHERE sink = ? AND id IN ({marks})", (sink, *chunk))

    def dead_letters(self, sink: str | None = None) -> list[DeadLetter]:
        """Refused quarter-hours (for ``quartier status``), oldest first."""
        sql = (
            f"SELECT d.id, d.sink, d.reason, d.dead_at, d.enqueued_at, {', '.join('q.' + n for n in _COLUMN_NAMES)}"
            " FROM dead_letters d JOIN quarter_hours q ON q.meter_id = d.meter_id AND q.start = d.start"
        )
        args: tuple = ()
        if sink is not None:
            sql += " WHERE d.sink = ?"
            args = (sink,)
        sql += " ORDER BY d.id"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [DeadLetter(r[0], r[1], decode(r[5:]), r[2], _from_seconds(r[3]), _from_seconds(r[4])) for r in rows]

    def requeue_dead_letters(self, sink: str, ids: Sequence[int] | None = None) -> int:
        """Put dead letters back at the end of the sink's outbox (after fixing what the server refused)."""
        now = int(datetime.now(timezone.utc).timestamp())
        with self._transaction() as c:
            if ids is None:
                ids = [r[0] for r in c.execute("SELECT id FROM dead_letters WHERE sink = ? ORDER BY id", (sink,))]
            moved = 0
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                moved += c.execute(
                    "INSERT OR IGNORE INTO outbox (sink, meter_id, start, enqueued_at)"
                    f" SELECT sink, meter_id, start, ? FROM dead_letters WHERE sink = ? AND id IN ({marks}) ORDER BY id",
                    (now, sink, *chunk),
                ).rowcount
                c.execute(f"DELETE FROM dead_letters WHERE sink = ? AND id IN ({marks})", (sink, *chunk))
        return moved

    def discard_dead_letters(self, sink: str, ids: Sequence[int] | None = None) -> int:
        """Forget dead letters (the quarter-hours stay in the store; retention may then remove them)."""
        with self._transaction() as c:
            if ids is None:
                return c.execute("DELETE FROM dead_letters WHERE sink = ?", (sink,)).rowcount
            return sum(
                c.execute(f"DELETE FROM dead_letters WHERE sink = ? AND id IN ({','.join('?' * len(ch))})", (sink, *ch)).rowcount
                for ch in _chunks(ids)
            )

    def enqueue(
        self, sink: str, meter_id: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> int:
        """Queue already committed quarter-hours for a sink again (a new or wiped database); returns
        how many rows were added. Safe because sink writes are idempotent."""
        where, args = _qh_filter(meter_id, start, end)
        where.insert(0, "1")
        now = int(datetime.now(timezone.utc).timestamp())
        with self._transaction() as c:
            return c.execute(
                "INSERT OR IGNORE INTO outbox (sink, meter_id, start, enqueued_at)"
                f" SELECT ?, meter_id, start, ? FROM quarter_hours WHERE {' AND '.join(where)} ORDER BY start, meter_id",
                (sink, now, *args),
            ).rowcount

    def outbox_depth(self, sink: str | None = None) -> int:
        """Pending rows for one sink, or for all sinks together."""
        with self._lock:
            if sink is None:
                return self._conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            return self._conn.execute("SELECT count(*) FROM outbox WHERE sink = ?", (sink,)).fetchone()[0]

    def outbox_depths(self) -> dict[str, int]:
        """Pending rows per sink, including sinks no longer configured (their rows block retention)."""
        with self._lock:
            rows = self._conn.execute("SELECT sink, count(*) FROM outbox GROUP BY sink ORDER BY sink").fetchall()
        return dict(rows)

    def outbox_discard(self, sink: str) -> int:
        """Drop every pending row of a sink that was removed from the configuration."""
        with self._transaction() as c:
            return c.execute("DELETE FROM outbox WHERE sink = ?", (sink,)).rowcount

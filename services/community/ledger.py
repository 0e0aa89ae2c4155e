"""The community server's durable state (SQLite): members' quarter-hours, allocations, presence.

Idempotent on (operation, member, start): a re-sent quarter-hour replaces the stored one, and the
caller learns whether anything changed (a late or corrected value re-runs the allocation). An
allocation row is provisional until a reconciliation import replaces it with the grid operator's
binding figure (``source = 'grid'``); both stay visible for the difference report.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from services.community.roster import MemberFigures, QuarterHourResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS member_qh (
    operation TEXT NOT NULL, member TEXT NOT NULL, start INTEGER NOT NULL,
    import_wh INTEGER NOT NULL, export_wh INTEGER NOT NULL, quality TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (operation, member, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS allocation (
    operation TEXT NOT NULL, member TEXT NOT NULL, start INTEGER NOT NULL,
    received_wh INTEGER NOT NULL, injection_shared_wh INTEGER NOT NULL,
    consumption_wh INTEGER NOT NULL, injection_wh INTEGER NOT NULL,
    estimated INTEGER NOT NULL, runs INTEGER NOT NULL DEFAULT 1, pushed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (operation, member, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grid_allocation (
    operation TEXT NOT NULL, member TEXT NOT NULL, start INTEGER NOT NULL,
    received_wh INTEGER NOT NULL, imported_from TEXT NOT NULL,
    PRIMARY KEY (operation, member, start)
) WITHOUT ROWID;
-- the binding figures' way to the central store: one revision per distinct imported value
CREATE TABLE IF NOT EXISTS grid_binding_push (
    operation TEXT NOT NULL, member TEXT NOT NULL, start INTEGER NOT NULL,
    revision INTEGER NOT NULL, received_wh INTEGER NOT NULL, provisional_wh INTEGER,
    pushed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (operation, member, start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grid_binding_pending ON grid_binding_push (pushed) WHERE pushed = 0;
CREATE TABLE IF NOT EXISTS presence (
    operation TEXT NOT NULL, member TEXT NOT NULL, status TEXT NOT NULL, since REAL NOT NULL,
    last_qh INTEGER, last_qh_received REAL, last_live REAL,
    PRIMARY KEY (operation, member)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS allocation_pending ON allocation (pushed) WHERE pushed = 0;
-- figures refused at the door (services/community/admission.py): never in member_qh, kept for the
-- operator with their reason; the newest DEAD_LETTERS_KEPT rows, and a count per member and reason
-- that is never pruned (a member flooding bad figures cannot fill the disk nor hide its count)
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY, operation TEXT NOT NULL, member TEXT, meter TEXT NOT NULL, topic TEXT NOT NULL,
    kind TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, payload BLOB NOT NULL, received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter_count (
    operation TEXT NOT NULL, meter TEXT NOT NULL, member TEXT, reason TEXT NOT NULL,
    count INTEGER NOT NULL, last_at REAL NOT NULL,
    PRIMARY KEY (operation, meter, reason)
) WITHOUT ROWID;
"""

# added to grid_allocation after its first release: end_s (NULL: start + 15 min) and the producer's
# shared injection from the grid operator's file (NULL: the file had none)
GRID_COLUMNS = ("end_s", "injection_shared_wh")

DEAD_LETTERS_KEPT = 10_000
DEAD_LETTER_PAYLOAD_BYTES = 2048

# Quarter-hours with some figures and no allocation yet, with when their first figure arrived: the
# ticker's deadline runs from that arrival (see CommunityServer.allocate_overdue), and this small
# table spares it a scan of every member's quarter-hours.
PENDING = """
CREATE TABLE pending (
    operation TEXT NOT NULL, start INTEGER NOT NULL, first_received REAL NOT NULL,
    PRIMARY KEY (operation, start)
) WITHOUT ROWID;
INSERT OR IGNORE INTO pending
    SELECT q.operation, q.start, min(q.received_at) FROM member_qh q WHERE NOT EXISTS
    (SELECT 1 FROM allocation a WHERE a.operation = q.operation AND a.start = q.start)
    GROUP BY q.operation, q.start;
"""


def _ts(t: datetime) -> int:
    return int(t.timestamp())


def _dt(s: int) -> datetime:
    return datetime.fromtimestamp(s, timezone.utc)


@dataclass(frozen=True, slots=True)
class Incoming:
    operation: str
    member: str
    start: datetime
    import_wh: int
    export_wh: int
    quality: str
    received_at: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused figure: who sent it (``member`` None for a pseudonym the roster does not know), on
    which topic, why (an :class:`~services.community.admission.Refusal` code and a sentence), and the
    payload as received (truncated)."""

    operation: str
    member: str | None
    meter: str
    topic: str
    kind: str
    reason: str
    detail: str
    payload: bytes
    received_at: float


class Ledger:
    """One SQLite file; safe to share between the server's threads (one lock, short transactions)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='pending'").fetchone() is None:
            self._db.executescript("BEGIN;" + PENDING + "COMMIT;")  # new file, or one from before the table
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(grid_allocation)")}
        for col in GRID_COLUMNS:  # statements (issue 16): a binding row's end, the producers' shared injection
            if col not in cols:
                self._db.execute(f"ALTER TABLE grid_allocation ADD COLUMN {col} INTEGER")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_quarter_hours(self, rows: Sequence[Incoming]) -> list[Incoming]:
        """Store (replace) the rows in one transaction; return those that are new or changed."""
        changed: list[Incoming] = []
        with self._lock:
            c = self._db
            c.execute("BEGIN")
            try:
                for r in rows:
                    old = c.execute(
                        "SELECT import_wh, export_wh, quality FROM member_qh WHERE operation=? AND member=? AND start=?",
                        (r.operation, r.member, _ts(r.start)),
                    ).fetchone()
                    if old == (r.import_wh, r.export_wh, r.quality):
                        continue  # an at-least-once duplicate: nothing to do
                    c.execute(
                        "INSERT OR REPLACE INTO member_qh VALUES (?,?,?,?,?,?,?)",
                        (r.operation, r.member, _ts(r.start), r.import_wh, r.export_wh, r.quality, r.received_at),
                    )
                    c.execute(
                        "INSERT INTO presence (operation, member, status, since, last_qh, last_qh_received) "
                        "VALUES (?,?,?,?,?,?) ON CONFLICT (operation, member) DO UPDATE SET "
                        "last_qh = max(coalesce(last_qh, 0), excluded.last_qh), last_qh_received = excluded.last_qh_received",
                        (r.operation, r.member, "unknown", r.received_at, _ts(r.start), r.received_at),
                    )
                    c.execute(
                        "INSERT OR IGNORE INTO pending SELECT ?,?,? WHERE NOT EXISTS "
                        "(SELECT 1 FROM allocation WHERE operation=? AND start=?)",
                        (r.operation, _ts(r.start), r.received_at, r.operation, _ts(r.start)),
                    )
                    changed.append(r)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return changed

    def add_dead_letters(self, rows: Sequence[DeadLetter]) -> None:
        """File refused figures (one transaction) and count them per member and reason."""
        if not rows:
            return
        with self._lock:
            c = self._db
            c.execute("BEGIN")
            try:
                c.executemany(
                    "INSERT INTO dead_letter (operation, member, meter, topic, kind, reason, detail, payload, received_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?)",
                    [(r.operation, r.member, r.meter, r.topic, r.kind, r.reason, r.detail[:500],
                      r.payload[:DEAD_LETTER_PAYLOAD_BYTES], r.received_at) for r in rows])
                c.executemany(
                    "INSERT INTO dead_letter_count VALUES (?,?,?,?,1,?) ON CONFLICT (operation, meter, reason) "
                    "DO UPDATE SET count=count+1, last_at=max(last_at, excluded.last_at)",
                    [(r.operation, r.meter, r.member, r.reason, r.received_at) for r in rows])
                c.execute("DELETE FROM dead_letter WHERE id <= (SELECT max(id) FROM dead_letter) - ?", (DEAD_LETTERS_KEPT,))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def dead_letter_counts(self, operation: str) -> list[dict[str, object]]:
        """Refused figures per sender and reason: member (None if unknown), meter, reason, count, last."""
        with self._lock:
            rows = self._db.execute(
                "SELECT member, meter, reason, count, last_at FROM dead_letter_count WHERE operation=? "
                "ORDER BY member, meter, reason", (operation,)).fetchall()
        return [{"member": m, "meter": p, "reason": r, "count": n, "last_at": t} for m, p, r, n, t in rows]

    def dead_letters(self, operation: str, limit: int = 100) -> list[dict[str, object]]:
        """The newest refused figures of an operation, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT member, meter, topic, kind, reason, detail, payload, received_at FROM dead_letter "
                "WHERE operation=? ORDER BY id DESC LIMIT ?", (operation, limit)).fetchall()
        return [{"member": m, "meter": p, "topic": t, "kind": k, "reason": r, "detail": d,
                 "payload": bytes(b).decode("utf-8", "replace"), "received_at": at}
                for m, p, t, k, r, d, b, at in rows]

    def figures(self, operation: str, start: datetime) -> dict[str, MemberFigures]:
        with self._lock:
            rows = self._db.execute(
                "SELECT member, import_wh, export_wh FROM member_qh WHERE operation=? AND start=?",
                (operation, _ts(start)),
            ).fetchall()
        return {m: MemberFigures(i, e) for m, i, e in rows}

    def last_known(self, operation: str, before: datetime, members: Iterable[str]) -> dict[str, MemberFigures]:
        out: dict[str, MemberFigures] = {}
        with self._lock:
            for m in members:
                row = self._db.execute(
                    "SELECT import_wh, export_wh FROM member_qh WHERE operation=? AND member=? AND start<? "
                    "ORDER BY start DESC LIMIT 1", (operation, m, _ts(before)),
                ).fetchone()
                if row:
                    out[m] = MemberFigures(row[0], row[1])
        return out

    def save_allocation(self, res: QuarterHourResult) -> None:
        members = set(res.received_wh) | set(res.injection_shared_wh)
        est = set(res.estimated)
        with self._lock:
            c = self._db
            c.execute("BEGIN")
            c.executemany(
                "INSERT INTO allocation VALUES (?,?,?,?,?,?,?,?,1,0) ON CONFLICT (operation, member, start) DO UPDATE SET "
                "received_wh=excluded.received_wh, injection_shared_wh=excluded.injection_shared_wh, "
                "consumption_wh=excluded.consumption_wh, injection_wh=excluded.injection_wh, "
                "estimated=excluded.estimated, runs=runs+1, pushed=0",
                [
                    (res.operation, m, _ts(res.start), res.received_wh.get(m, 0), res.injection_shared_wh.get(m, 0),
                     res.consumption_wh.get(m, 0), res.injection_wh.get(m, 0), int(m in est))
                    for m in sorted(members)
                ],
            )
            c.execute("DELETE FROM pending WHERE operation=? AND start=?", (res.operation, _ts(res.start)))
            c.execute("COMMIT")

    def is_allocated(self, operation: str, start: datetime) -> bool:
        with self._lock:
            return self._db.execute(
                "SELECT 1 FROM allocation WHERE operation=? AND start=? LIMIT 1", (operation, _ts(start))
            ).fetchone() is not None

    def allocated_starts(self, operation: str, since: datetime) -> set[datetime]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT start FROM allocation WHERE operation=? AND start>=?", (operation, _ts(since))
            ).fetchall()
        return {_dt(s) for (s,) in rows}

    def pending_starts(self, operation: str, first_received_before: float) -> list[datetime]:
        """Quarter-hours with data but no allocation yet whose first figure arrived before the given
        epoch second (oldest first)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT start FROM pending WHERE operation=? AND first_received<? ORDER BY start",
                (operation, first_received_before),
            ).fetchall()
        return [_dt(s) for (s,) in rows]

    def unpushed(self, limit: int = 5000) -> list[tuple]:
        with self._lock:
            return self._db.execute(
                "SELECT operation, member, start, received_wh, injection_shared_wh, consumption_wh, injection_wh, "
                "estimated, runs FROM allocation WHERE pushed=0 LIMIT ?", (limit,),
            ).fetchall()

    def mark_pushed(self, keys: Sequence[tuple[str, str, int, int]]) -> None:
        """Mark pushed those rows not re-allocated since (``runs`` still as read)."""
        with self._lock:
            c = self._db
            c.execute("BEGIN")
            c.executemany("UPDATE allocation SET pushed=1 WHERE operation=? AND member=? AND start=? AND runs=?", keys)
            c.execute("COMMIT")

    def set_status(self, operation: str, member: str, status: str, at: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO presence (operation, member, status, since) VALUES (?,?,?,?) "
                "ON CONFLICT (operation, member) DO UPDATE SET status=excluded.status, since=excluded.since",
                (operation, member, status, at),
            )

    def presence(self, operation: str) -> dict[str, tuple]:
        with self._lock:
            rows = self._db.execute(
                "SELECT member, status, since, last_qh, last_qh_received FROM presence WHERE operation=?", (operation,)
            ).fetchall()
        return {r[0]: r[1:] for r in rows}

    def completeness(self, operation: str, start: datetime, end: datetime) -> dict[str, int]:
        """Quarter-hours received per member in [start, end)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT member, count(*) FROM member_qh WHERE operation=? AND start>=? AND start<? GROUP BY member",
                (operation, _ts(start), _ts(end)),
            ).fetchall()
        return dict(rows)

    def allocation_totals(self, operation: str, start: datetime, end: datetime) -> dict[str, dict[str, int]]:
        """Per member over [start, end): provisional received, injection shared, consumption, estimated
        quarter-hours, and (where imported) the grid operator's binding received figure."""
        with self._lock:
            rows = self._db.execute(
                "SELECT member, sum(received_wh), sum(injection_shared_wh), sum(consumption_wh), sum(injection_wh), "
                "sum(estimated), count(*) FROM allocation WHERE operation=? AND start>=? AND start<? GROUP BY member",
                (operation, _ts(start), _ts(end)),
            ).fetchall()
            grid = dict(self._db.execute(
                "SELECT member, sum(received_wh) FROM grid_allocation WHERE operation=? AND start>=? AND start<? "
                "GROUP BY member", (operation, _ts(start), _ts(end)),
            ).fetchall())
        out = {
            m: {"received_wh": r, "injection_shared_wh": s, "consumption_wh": c, "injection_wh": i,
                "estimated_quarter_hours": e, "quarter_hours": n}
            for m, r, s, c, i, e, n in rows
        }
        for m, g in grid.items():
            out.setdefault(m, {})["grid_received_wh"] = g
        return out

    def import_grid(self, operation: str, rows: Sequence[tuple], source: str) -> int:
        """Store the grid operator's binding per-member figures: (member, quarter-hour or month start, Wh
        [, period end [, shared injection Wh or None]]; the end defaults to start + 15 min).

        Each figure also waits in ``grid_binding_push`` for the central store: a new or changed value
        gets the next revision (with the provisional figure it replaces, as of now) and is unpushed; a
        re-import of the same value changes nothing there."""
        with self._lock:
            c = self._db
            self._backfill_binding_push()
            c.execute("BEGIN")
            try:
                for row in rows:
                    member, start, wh = row[0], _ts(row[1]), int(row[2])
                    end = _ts(row[3]) if len(row) > 3 and row[3] is not None else start + 900
                    injection = int(row[4]) if len(row) > 4 and row[4] is not None else None
                    c.execute(
                        "INSERT OR REPLACE INTO grid_allocation (operation, member, start, received_wh, imported_from, "
                        "end_s, injection_shared_wh) VALUES (?,?,?,?,?,?,?)",
                        (operation, member, start, wh, source, end, injection))
                    old = c.execute(
                        "SELECT received_wh FROM grid_binding_push WHERE operation=? AND member=? AND start=?",
                        (operation, member, start)).fetchone()
                    if old is not None and old[0] == wh:
                        continue
                    (prov,) = c.execute(
                        "SELECT sum(received_wh) FROM allocation WHERE operation=? AND member=? AND start>=? AND start<?",
                        (operation, member, start, end)).fetchone()
                    c.execute(
                        "INSERT INTO grid_binding_push VALUES (?,?,?,1,?,?,0) ON CONFLICT (operation, member, start) "
                        "DO UPDATE SET revision=revision+1, received_wh=excluded.received_wh, "
                        "provisional_wh=excluded.provisional_wh, pushed=0",
                        (operation, member, start, wh, prov))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return len(rows)

    # -- binding figures to the central store (reconciliation) ----------------------------------------

    def _backfill_binding_push(self) -> None:
        """Once per open, under the lock: a database from before ``grid_binding_push`` has grid rows that
        never reached the central store; queue them (revision 1, provisional figure unknown)."""
        if getattr(self, "_binding_push_ready", False):
            return
        c = self._db
        if (c.execute("SELECT 1 FROM grid_binding_push LIMIT 1").fetchone() is None
                and c.execute("SELECT 1 FROM grid_allocation LIMIT 1").fetchone() is not None):
            c.execute("INSERT OR IGNORE INTO grid_binding_push (operation, member, start, revision, received_wh, "
                      "provisional_wh, pushed) SELECT operation, member, start, 1, received_wh, NULL, 0 FROM grid_allocation")
        self._binding_push_ready = True

    def unpushed_binding(self, limit: int = 5000) -> list[tuple[str, str, int, int, int, int | None]]:
        """Binding figures not yet in the central store: (operation, member, start_s, revision,
        received_wh, provisional_wh), oldest first."""
        with self._lock:
            self._backfill_binding_push()
            return self._db.execute(
                "SELECT operation, member, start, revision, received_wh, provisional_wh FROM grid_binding_push "
                "WHERE pushed=0 ORDER BY start, operation, member LIMIT ?", (limit,),
            ).fetchall()

    def mark_binding_pushed(self, keys: Sequence[tuple[str, str, int, int]]) -> None:
        """Mark pushed the (operation, member, start_s, revision) still at that revision (a re-import
        meanwhile leaves its newer revision unpushed)."""
        with self._lock:
            c = self._db
            c.execute("BEGIN")
            c.executemany("UPDATE grid_binding_push SET pushed=1 WHERE operation=? AND member=? AND start=? AND revision=?",
                          keys)
            c.execute("COMMIT")

    def member_quarter_hours(self, operation: str, member: str, start: datetime, end: datetime) -> list[tuple[datetime, int, int]]:
        """One member's (or observer's) quarter-hours in [start, end): (start, import Wh, export Wh)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT start, import_wh, export_wh FROM member_qh WHERE operation=? AND member=? AND start>=? AND start<? "
                "ORDER BY start", (operation, member, _ts(start), _ts(end))).fetchall()
        return [(_dt(s), int(i), int(e)) for s, i, e in rows]

    def member_allocations(self, operation: str, member: str, start: datetime, end: datetime) -> list[tuple[datetime, int, int]]:
        """One member's provisional allocation per quarter-hour in [start, end): (start, received Wh, the
        operation's injection nobody used in that quarter-hour, Wh): what the monthly sheet needs."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a.start, a.received_wh, (SELECT sum(b.injection_wh) - sum(b.injection_shared_wh) FROM allocation b "
                "WHERE b.operation = a.operation AND b.start = a.start) FROM allocation a "
                "WHERE a.operation=? AND a.member=? AND a.start>=? AND a.start<? ORDER BY a.start",
                (operation, member, _ts(start), _ts(end))).fetchall()
        return [(_dt(s), int(r), max(0, int(g or 0))) for s, r, g in rows]

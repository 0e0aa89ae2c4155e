"""The durable local store: closed quarter-hours, daily and monthly totals, the sinks' outbox, and
this member's allocations as the community server sent them.

SQLite in WAL mode on the Pi's SD card. A closed quarter-hour is committed here before anything else
is told about it; every sink reads its rows from the outbox and deletes them only after the remote
side acknowledged. One commit is one transaction holding the quarter-hours, the totals and the outbox
rows together, so ``kill -9`` or a power cut at any instant leaves either all of it or none of it.

Durability choice: ``synchronous=FULL``. In WAL mode ``NORMAL`` only syncs at checkpoints, so a
commit that returned can still be rolled back by a power cut (the WAL tail is not on the card yet);
``FULL`` syncs the WAL on every commit. The cost is one fsync per quarter-hour (plus one per sink
acknowledgement), which the SD card does not notice, and a closed quarter-hour is on the card once
:meth:`Store.commit_quarter_hours` returns.

Times are stored as UNIX seconds (UTC); per-tariff dicts and flags as compact JSON, so a
:class:`~gateway.model.QuarterHour` round-trips exactly.
"""

from __future__ import annotations

import json
import math
import logging
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.model import QUARTER, Quality, QuarterHour

log = logging.getLogger("quartier.gateway.store")

SCHEMA_VERSION = 1
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024  # below this much free space on the card: alarm
_QUARTER_S = int(QUARTER.total_seconds())
_CHUNK = 500  # ids per statement, well below SQLite's bound-variable limit

_SCHEMA_V1 = """
CREATE TABLE quarter_hours (
    meter_id TEXT NOT NULL,
    start INTEGER NOT NULL,              -- UNIX seconds, UTC, multiple of 900
    import_wh INTEGER NOT NULL,
    export_wh INTEGER NOT NULL,
    quality TEXT NOT NULL,
    import_by_tariff TEXT NOT NULL,      -- JSON object tariff -> Wh
    export_by_tariff TEXT NOT NULL,
    end_import_register TEXT NOT NULL,   -- JSON object tariff -> cumulative Wh at the end boundary
    end_export_register TEXT NOT NULL,
    flags TEXT NOT NULL,                 -- JSON array
    source TEXT NOT NULL,
    committed_at INTEGER NOT NULL,
    PRIMARY KEY (meter_id, start)
) WITHOUT ROWID;
CREATE INDEX quarter_hours_start ON quarter_hours (start);

CREATE TABLE daily_totals (
    meter_id TEXT NOT NULL,
    day TEXT NOT NULL,                   -- local calendar day, YYYY-MM-DD
    import_wh INTEGER NOT NULL,
    export_wh INTEGER NOT NULL,
    quarter_hours INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    PRIMARY KEY (meter_id, day)
) WITHOUT ROWID;

CREATE TABLE monthly_totals (
    meter_id TEXT NOT NULL,
    month TEXT NOT NULL,                 -- local calendar month, YYYY-MM
    import_wh INTEGER NOT NULL,
    export_wh INTEGER NOT NULL,
    quarter_hours INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    PRIMARY KEY (meter_id, month)
) WITHOUT ROWID;

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the replay order
    sink TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    start INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    UNIQUE (sink, meter_id, start)
);
CREATE INDEX outbox_sink ON outbox (sink, id);
CREATE INDEX outbox_qh ON outbox (meter_id, start);

CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY,              -- the outbox id it had
    sink TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    start INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_at INTEGER NOT NULL
);
CREATE INDEX dead_letters_qh ON dead_letters (meter_id, start);

CREATE TABLE conflicts (                 -- duplicates that disagreed with the stored quarter-hour
    meter_id TEXT NOT NULL,
    start INTEGER NOT NULL,
    offered TEXT NOT NULL,               -- JSON of the rejected quarter-hour's columns
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (meter_id, start, offered)
) WITHOUT ROWID;

CREATE TABLE state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

# Additive tables: created when missing, with no schema version bump. An older Quartier ignores a
# table it does not know, so a rolled-back release still opens the store (a version bump would make it
# refuse the file); a table whose shape changes later gets a versioned migration like any other.
_ADDITIVE = (
    """
CREATE TABLE IF NOT EXISTS allocations (  -- this member's provisional share, one row per quarter-hour
    operation TEXT NOT NULL,
    start INTEGER NOT NULL,              -- UNIX seconds, UTC, multiple of 900
    received_wh INTEGER NOT NULL,        -- shared energy allocated to this member
    injection_shared_wh INTEGER NOT NULL,  -- part of this member's injection that went to others
    pool_wh INTEGER NOT NULL,            -- operation totals of the quarter-hour
    shared_wh INTEGER NOT NULL,
    consumption_wh INTEGER NOT NULL,
    missing INTEGER NOT NULL,            -- members whose quarter-hour the server had to estimate
    provisional INTEGER NOT NULL,
    received_at INTEGER NOT NULL,        -- UNIX seconds when these figures were stored here
    PRIMARY KEY (operation, start)
) WITHOUT ROWID
""",
)
_ALLOCATION_COLUMNS = (
    "operation, start, received_wh, injection_shared_wh, pool_wh, shared_wh, consumption_wh, missing, provisional,"
    " received_at"
)
_ALLOCATION_FIGURES = ("received_wh", "injection_shared_wh", "pool_wh", "shared_wh", "consumption_wh", "missing",
                       "provisional")

Migration = Callable[[sqlite3.Connection], None]
# MIGRATIONS[n] upgrades a database from user_version n to n + 1, inside the opening transaction.
MIGRATIONS: dict[int, Migration] = {}


def _qh_filter(meter_id: str | None, start: datetime | None, end: datetime | None) -> tuple[list[str], list]:
    """WHERE clauses for ``meter_id`` and ``start <= qh.start < end``, with their arguments."""
    where: list[str] = []
    args: list = []
    if meter_id is not None:
        where.append("meter_id = ?")
        args.append(meter_id)
    if start is not None:
        where.append("start >= ?")
        args.append(_bound(start, "start"))
    if end is not None:
        where.append("start < ?")
        args.append(_bound(end, "end"))
    return where, args


class StoreError(Exception):
    """The store cannot be used as asked (e.g. a database written by a newer Quartier)."""


@dataclass(slots=True, frozen=True)
class DailyTotal:
    """A meter's energy over one local calendar day (92, 96 or 100 quarter-hours)."""

    meter_id: str
    day: date
    import_wh: int
    export_wh: int
    quarter_hours: int  # how many quarter-hours were committed for this day
    estimated: int  # how many of them are estimated
    expected: int  # how many quarter-hours the day has in the store's time zone


@dataclass(slots=True, frozen=True)
class MonthlyTotal:
    """A meter's energy over one local calendar month."""

    meter_id: str
    month: str  # YYYY-MM
    import_wh: int
    export_wh: int
    quarter_hours: int
    estimated: int
    expected: int


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """A quarter-hour a sink's server refused for good (a 4xx), kept for ``quartier status``."""

    id: int
    sink: str
    quarter_hour: QuarterHour
    reason: str
    dead_at: datetime
    enqueued_at: datetime


@dataclass(slots=True, frozen=True)
class Conflict:
    """A re-offered quarter-hour that disagreed with the committed one and was kept out."""

    meter_id: str
    start: datetime
    offered: dict[str, object]
    first_seen: datetime


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


@dataclass(slots=True, frozen=True)
class DiskStatus:
    """How much room the store takes and has; ``alarm`` when over the bound or short of free space."""

    path: str
    file_bytes: int  # database + WAL + shared-memory files on disk
    used_bytes: int  # pages holding data (file pages minus the free list)
    free_bytes: int  # free space on the file system holding the database
    max_bytes: int | None
    min_free_bytes: int
    outbox_rows: int
    alarm: bool
    message: str | None


_COLUMNS = (
    "meter_id, start, import_wh, export_wh, quality, import_by_tariff, export_by_tariff,"
    " end_import_register, end_export_register, flags, source"
)
_COLUMN_NAMES = tuple(c.strip() for c in _COLUMNS.split(","))
Row = tuple[str, int, int, int, str, str, str, str, str, str, str]


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _utc_seconds(t: datetime, what: str) -> int:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got naive {t!r}")
    ts = t.timestamp()
    if ts != int(ts):
        raise ValueError(f"{what} has a fraction of a second: {t!r}")
    return int(ts)


def _bound(t: datetime, what: str) -> int:
    """An aware instant as a query bound in whole seconds (rounded up: ``start < bound`` stays exact)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got naive {t!r}")
    return math.ceil(t.timestamp())


def _from_seconds(s: int) -> datetime:
    return datetime.fromtimestamp(s, timezone.utc)


def encode(qh: QuarterHour) -> Row:
    """The row a quarter-hour is stored as; also what two offers of it are compared by."""
    start = _utc_seconds(qh.start, "QuarterHour.start")
    if start % _QUARTER_S:
        raise ValueError(f"QuarterHour.start is not on a quarter-hour boundary: {qh.start.isoformat()}")
    return (
        qh.meter_id,
        start,
        int(qh.import_wh),
        int(qh.export_wh),
        Quality(qh.quality).value,
        _json({str(k): int(v) for k, v in qh.import_by_tariff.items()}),
        _json({str(k): int(v) for k, v in qh.export_by_tariff.items()}),
        _json({str(k): int(v) for k, v in qh.end_import_register.items()}),
        _json({str(k): int(v) for k, v in qh.end_export_register.items()}),
        _json([str(f) for f in qh.flags]),
        qh.source,
    )


def decode(row: Sequence) -> QuarterHour:
    """Inverse of :func:`encode`."""
    return QuarterHour(
        meter_id=row[0],
        start=_from_seconds(row[1]),
        import_wh=row[2],
        export_wh=row[3],
        quality=Quality(row[4]),
        import_by_tariff=json.loads(row[5]),
        export_by_tariff=json.loads(row[6]),
        end_import_register=json.loads(row[7]),
        end_export_register=json.loads(row[8]),
        flags=tuple(json.loads(row[9])),
        source=row[10],
    )


_JSON_COLUMNS = frozenset(_COLUMN_NAMES[5:10])


def _readable(row: Row) -> dict[str, object]:
    """A row as one JSON object (nested, not JSON-in-JSON), for the conflicts table."""
    return {n: json.loads(v) if n in _JSON_COLUMNS else v for n, v in zip(_COLUMN_NAMES, row, strict=True)}


def quarter_hours_in(first: datetime, after_last: datetime) -> int:
    """How many quarter-hours lie between two aware instants (a local day: 92, 96 or 100)."""
    # aware datetimes sharing a tzinfo subtract as wall clocks: go through UTC timestamps
    return int(after_last.timestamp() - first.timestamp()) // _QUARTER_S


class Store:
    """The gateway's SQLite store. Thread-safe: one connection, every call under one lock.

    ``sinks`` names the sinks that get an outbox row for every new quarter-hour; ``timezone`` is the
    community's civil time zone for daily and monthly totals; ``retention_days`` bounds how long
    quarter-hours are kept once every sink has them (``None``: forever; totals are always kept);
    ``max_bytes`` bounds the database's size, beyond which :meth:`disk_status` raises the alarm and
    :meth:`enforce_retention` trims the oldest quarter-hours that every sink already has.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        sinks: Sequence[str] = (),
        timezone: str = "Europe/Brussels",
        retention_days: int | None = None,
        max_bytes: int | None = None,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    ) -> None:
        if retention_days is not None and retention_days < 1:
            raise ValueError(f"retention_days must be at least 1 (or None for no limit), got {retention_days}")
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive (or None for no bound), got {max_bytes}")
        self.path = Path(path)
        self.sinks = tuple(dict.fromkeys(sinks))
        self.tz = ZoneInfo(timezone)
        self.timezone = timezone
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._lock = threading.RLock()
        self._alarm: frozenset[str] = frozenset()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            self._configure()
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # -- opening ---------------------------------------------------------------------------------

    def _configure(self) -> None:
        c = self._conn
        # must precede the first table: lets enforce_retention hand freed pages back to the card
        c.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"cannot put {self.path} in WAL mode (journal_mode stays {mode!r})")
        c.execute("PRAGMA synchronous = FULL")
        c.execute("PRAGMA foreign_keys = OFF")

    def _migrate(self) -> None:
        with self._transaction() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this Quartier's {SCHEMA_VERSION}: upgrade Quartier"
                )
            if version == 0:
                for statement in _SCHEMA_V1.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute("INSERT INTO state (key, value) VALUES ('store.timezone', ?)", (self.timezone,))
                version = 1
                log.info("store.created", extra={"path": str(self.path), "schema": SCHEMA_VERSION})
            while version < SCHEMA_VERSION:
                step = MIGRATIONS.get(version)
                if step is None:
                    raise StoreError(f"no migration from schema version {version} in this Quartier")
                step(c)
                version += 1
                log.info("store.migrated", extra={"path": str(self.path), "schema": version})
            c.execute(f"PRAGMA user_version = {int(version)}")
            for statement in _ADDITIVE:
                c.execute(statement)
            stored_tz = c.execute("SELECT value FROM state WHERE key = 'store.timezone'").fetchone()
        if stored_tz and stored_tz[0] != self.timezone:
            log.warning(
                "store.timezone_changed",
                extra={"path": str(self.path), "stored": stored_tz[0], "configured": self.timezone},
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT under the lock; rolled back on any exception."""
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:  # also after a failed COMMIT (disk full, I/O error)
                    c.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the connection (a checkpoint folds the WAL back into the database)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- committing ------------------------------------------------------------------------------

    def commit_quarter_hours(self, qhs: Sequence[QuarterHour]) -> int:
        """Commit closed quarter-hours in one transaction; return how many were new.

        A quarter-hour already stored identically is a no-op (a restarted daemon may offer it
        again). One that disagrees with the stored one is kept out, logged as a warning and recorded
        in :meth:`conflicts`: a committed quarter-hour is never silently rewritten. Each new one
        updates the local day's and month's totals and gets one outbox row per configured sink.
        Raises ``ValueError`` for a malformed quarter-hour and ``sqlite3.Error`` when the card
        fails; in both cases nothing of the batch is committed.
        """
        rows = [encode(qh) for qh in qhs]
        if not rows:
            return 0
        now = int(datetime.now(timezone.utc).timestamp())
        new = 0
        conflicts: list[tuple[Row, tuple]] = []
        with self._transaction() as c:
            for row in rows:
                cur = c.execute(
                    f"INSERT INTO quarter_hours ({_COLUMNS}, committed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (meter_id, start) DO NOTHING",
                    (*row, now),
                )
                if cur.rowcount == 0:
                    stored = c.execute(
                        f"SELECT {_COLUMNS} FROM quarter_hours WHERE meter_id = ? AND start = ?", row[:2]
                    ).fetchone()
                    if tuple(stored) != row:
                        conflicts.append((row, tuple(stored)))
                        c.execute(
                            "INSERT OR IGNORE INTO conflicts (meter_id, start, offered, first_seen) VALUES (?,?,?,?)",
                            (row[0], row[1], _json(_readable(row)), now),
                        )
                    continue
                new += 1
                self._add_to_totals(c, row)
                for sink in self.sinks:
                    c.execute(
                        "INSERT OR IGNORE INTO outbox (sink, meter_id, start, enqueued_at) VALUES (?,?,?,?)",
                        (sink, row[0], row[1], now),
                    )
        for offered, stored in conflicts:
            differs = [n for n, a, b in zip(_COLUMN_NAMES, offered, stored, strict=True) if a != b]
            log.warning(
                "store.conflicting_duplicate",
                extra={"meter": offered[0], "start": _from_seconds(offered[1]).isoformat(), "fields": ",".join(differs)},
            )
        try:  # committed by now: a failing size check must not make the caller think otherwise
            self._check_disk()
        except (OSError, sqlite3.Error) as exc:
            log.warning("store.disk_check_failed", extra={"path": str(self.path), "error": str(exc)})
        return new

    def _add_to_totals(self, c: sqlite3.Connection, row: Row) -> None:
        local = _from_seconds(row[1]).astimezone(self.tz)
        estimated = 1 if row[4] == Quality.ESTIMATED.value else 0
        for table, key_col, key in (
            ("daily_totals", "day", local.date().isoformat()),
            ("monthly_totals", "month", f"{local.year:04d}-{local.month:02d}"),
        ):
            c.execute(
                f"INSERT INTO {table} (meter_id, {key_col}, import_wh, export_wh, quarter_hours, estimated)"
                " VALUES (?,?,?,?,1,?) ON CONFLICT (meter_id, " + key_col + ") DO UPDATE SET"
                " import_wh = import_wh + excluded.import_wh, export_wh = export_wh + excluded.export_wh,"
                " quarter_hours = quarter_hours + 1, estimated = estimated + excluded.estimated",
                (row[0], key, row[2], row[3], estimated),
            )

    # -- reading ---------------------------------------------------------------------------------

    def last_boundary(self, meter_id: str) -> QuarterHour | None:
        """The latest committed quarter-hour of a meter: its end registers are the restart baseline."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM quarter_hours WHERE meter_id = ? ORDER BY start DESC LIMIT 1", (meter_id,)
            ).fetchone()
        return decode(row) if row else None

    def meters(self) -> list[str]:
        """Every meter that has quarter-hours or totals in the store."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT meter_id FROM quarter_hours GROUP BY meter_id UNION SELECT meter_id FROM daily_totals"
            ).fetchall()
        return sorted(r[0] for r in rows)

    def quarter_hours(
        self, meter_id: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> list[QuarterHour]:
        """Committed quarter-hours with ``start <= qh.start < end``, ordered by start, then meter."""
        where, args = _qh_filter(meter_id, start, end)
        sql = f"SELECT {_COLUMNS} FROM quarter_hours"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start, meter_id"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [decode(r) for r in rows]

    def count_quarter_hours(self, meter_id: str | None = None) -> int:
        with self._lock:
            if meter_id is None:
                return self._conn.execute("SELECT count(*) FROM quarter_hours").fetchone()[0]
            return self._conn.execute("SELECT count(*) FROM quarter_hours WHERE meter_id = ?", (meter_id,)).fetchone()[0]

    def daily_totals(
        self, meter_id: str | None = None, start: date | None = None, end: date | None = None
    ) -> list[DailyTotal]:
        """Per local day, ``start <= day < end``, ordered by day then meter."""
        rows = self._totals("daily_totals", "day", meter_id, start and start.isoformat(), end and end.isoformat())
        out = []
        for m, key, imp, exp, n, est in rows:
            day = date.fromisoformat(key)
            first = datetime(day.year, day.month, day.day, tzinfo=self.tz)
            nxt = day + timedelta(days=1)
            after = datetime(nxt.year, nxt.month, nxt.day, tzinfo=self.tz)
            out.append(DailyTotal(m, day, imp, exp, n, est, quarter_hours_in(first, after)))
        return out

    def monthly_totals(
        self, meter_id: str | None = None, start: str | None = None, end: str | None = None
    ) -> list[MonthlyTotal]:
        """Per local month ("YYYY-MM"), ``start <= month < end``, ordered by month then meter."""
        rows = self._totals("monthly_totals", "month", meter_id, start, end)
        out = []
        for m, key, imp, exp, n, est in rows:
            year, month = int(key[:4]), int(key[5:7])
            first = datetime(year, month, 1, tzinfo=self.tz)
            nxt = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=self.tz)
            out.append(MonthlyTotal(m, key, imp, exp, n, est, quarter_hours_in(first, nxt)))
        return out

    def _totals(self, table: str, key_col: str, meter_id: str | None, start: str | None, end: str | None) -> list:
        where, args = [], []
        if meter_id is not None:
            where.append("meter_id = ?")
            args.append(meter_id)
        if start is not None:
            where.append(f"{key_col} >= ?")
            args.append(start)
        if end is not None:
            where.append(f"{key_col} < ?")
            args.append(end)
        sql = f"SELECT meter_id, {key_col}, import_wh, export_wh, quarter_hours, estimated FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {key_col}, meter_id"
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def conflicts(self) -> list[Conflict]:
        """Duplicates that disagreed with what was committed, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT meter_id, start, offered, first_seen FROM conflicts ORDER BY first_seen, meter_id, start"
            ).fetchall()
        return [Conflict(m, _from_seconds(s), json.loads(o), _from_seconds(f)) for m, s, o, f in rows]

    # -- outbox ----------------------------------------------------------------------------------

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

    # -- allocations from the community server ------------------------------------------------------

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

    # -- small state -----------------------------------------------------------------------------

    def set_state(self, key: str, value: str) -> None:
        with self._transaction() as c:
            c.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, str(value)))

    def get_state(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def states(self, prefix: str = "") -> dict[str, str]:
        """Every state key starting with ``prefix`` (``quartier status`` shows ``influx.*``)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, value FROM state WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)
            ).fetchall()
        return dict(rows)

    # -- retention and disk ----------------------------------------------------------------------

    _DELETABLE = (
        " NOT EXISTS (SELECT 1 FROM outbox o WHERE o.meter_id = q.meter_id AND o.start = q.start)"
        " AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.meter_id = q.meter_id AND d.start = q.start)"
    )
    _NOT_LATEST = "q.start < (SELECT max(l.start) FROM quarter_hours l WHERE l.meter_id = q.meter_id)"

    def enforce_retention(self, now: datetime) -> int:
        """Delete quarter-hours past the retention period, and, while the database is over
        ``max_bytes``, the oldest others; never one still in an outbox or a dead letter, never the
        latest one of a meter (the restart baseline). Totals are kept; allocations older than the
        retention period go too. Returns how many quarter-hours were deleted."""
        deleted = 0
        if self.retention_days is not None:
            cutoff = _bound(now, "now") - self.retention_days * 86400
            with self._transaction() as c:
                deleted += c.execute(
                    f"DELETE FROM quarter_hours AS q WHERE q.start < ? AND {self._DELETABLE} AND {self._NOT_LATEST}",
                    (cutoff,),
                ).rowcount
                # the member's allocations follow the quarter-hours they share (kept as long)
                c.execute("DELETE FROM allocations WHERE start < ?", (cutoff,))
            if deleted:
                log.info("store.retention", extra={"deleted": deleted, "before": _from_seconds(cutoff).isoformat()})
        if self.max_bytes is not None:
            trimmed = 0
            while self._used_bytes() > self.max_bytes:
                with self._transaction() as c:
                    # oldest first, a thousand at a time, measuring again between batches
                    n = c.execute(
                        "DELETE FROM quarter_hours WHERE (meter_id, start) IN (SELECT q.meter_id, q.start"
                        f" FROM quarter_hours q WHERE {self._DELETABLE} AND {self._NOT_LATEST} ORDER BY q.start LIMIT 1000)"
                    ).rowcount
                if n == 0:
                    break
                trimmed += n
            if trimmed:
                log.warning("store.bound_trimmed", extra={"deleted": trimmed, "max_bytes": self.max_bytes})
            deleted += trimmed
        if deleted:
            with self._lock:
                self._conn.execute("PRAGMA incremental_vacuum")
        self._check_disk()
        return deleted

    def _used_bytes(self) -> int:
        with self._lock:
            c = self._conn
            pages = c.execute("PRAGMA page_count").fetchone()[0] - c.execute("PRAGMA freelist_count").fetchone()[0]
            return pages * c.execute("PRAGMA page_size").fetchone()[0]

    def disk_status(self) -> DiskStatus:
        """Sizes, free space and the alarm (logged once when it rises and once when it clears)."""
        return self._check_disk()

    def _check_disk(self) -> DiskStatus:
        file_bytes = sum(p.stat().st_size for p in self._files() if p.exists())
        used = self._used_bytes()
        free = shutil.disk_usage(self.path.parent).free
        problems: dict[str, str] = {}
        if self.max_bytes is not None and used > self.max_bytes:
            problems["over_bound"] = f"store holds {used} bytes, over its bound of {self.max_bytes}"
        if free < self.min_free_bytes:
            problems["low_free_space"] = f"only {free} bytes free on the file system of {self.path}, below {self.min_free_bytes}"
        message = "; ".join(problems.values()) or None
        kinds = frozenset(problems)
        with self._lock:
            previous, self._alarm = self._alarm, kinds
        if kinds and kinds != previous:  # log a change of state once, not every check
            log.warning("store.disk_alarm", extra={"path": str(self.path), "alarms": ",".join(sorted(kinds)), "reason": message})
        elif previous and not kinds:
            log.info("store.disk_ok", extra={"path": str(self.path), "used_bytes": used, "free_bytes": free})
        return DiskStatus(
            path=str(self.path),
            file_bytes=file_bytes,
            used_bytes=used,
            free_bytes=free,
            max_bytes=self.max_bytes,
            min_free_bytes=self.min_free_bytes,
            outbox_rows=self.outbox_depth(),
            alarm=message is not None,
            message=message,
        )

    def _files(self) -> list[Path]:
        return [self.path, self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")]

    def integrity_check(self) -> str:
        """SQLite's own verdict on the file ("ok" when sound)."""
        with self._lock:
            return "; ".join(r[0] for r in self._conn.execute("PRAGMA integrity_check").fetchall())


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    ids = [int(i) for i in ids]
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]

"""The durable local store (:class:`Store`): closed quarter-hours, daily and monthly totals, the sinks' outbox, and
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
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.gas_days import GasDay
from gateway.logs import get_logger
from gateway.model import Quality, QuarterHour
from gateway.store import schema
from gateway.store.allocations import AllocationsMixin
from gateway.store.outbox import OutboxMixin
from gateway.store.retention import DEFAULT_MIN_FREE_BYTES, RetentionMixin
from gateway.store.schema import (
    GAS_DAYS_COLUMNS,
    _ADDITIVE,
    _COLUMN_NAMES,
    _COLUMNS,
    _SCHEMA_V1,
    Row,
    StoreError,
    _from_seconds,
    _json,
    _qh_filter,
    TOTALS,
    _readable,
    _totals_keys,
    add_split,
    decode,
    encode,
    quarter_hours_in,
)

log = get_logger("quartier.gateway.store")


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
    # Wh per meter tariff ("1", "2"; "0" for a total-only meter); None: unknown (the day's quarter-hours
    # were pruned before the store kept the split)
    import_by_tariff: dict[str, int] | None = None
    export_by_tariff: dict[str, int] | None = None


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
    import_by_tariff: dict[str, int] | None = None  # as DailyTotal's
    export_by_tariff: dict[str, int] | None = None


@dataclass(slots=True, frozen=True)
class Conflict:
    """A re-offered quarter-hour that disagreed with the committed one and was kept out."""

    meter_id: str
    start: datetime
    offered: dict[str, object]
    first_seen: datetime


class Store(OutboxMixin, AllocationsMixin, RetentionMixin):
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
            if version > schema.SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this Quartier's {schema.SCHEMA_VERSION}: upgrade Quartier"
                )
            created = version == 0
            if created:  # a new store is built as version 1 and migrated: one path for every store
                for statement in _SCHEMA_V1.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute("INSERT INTO state (key, value) VALUES ('store.timezone', ?)", (self.timezone,))
                version = 1
            while version < schema.SCHEMA_VERSION:
                step = schema.MIGRATIONS.get(version)
                if step is None:
                    raise StoreError(f"no migration from schema version {version} in this Quartier")
                step(c)
                version += 1
                if not created:
                    log.info("store.migrated", extra={"path": str(self.path), "schema": version})
            if created:
                log.info("store.created", extra={"path": str(self.path), "schema": version})
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

    def commit_quarter_hours(self, qhs: Sequence[QuarterHour], gas_days: Sequence[GasDay] = ()) -> int:
        """Commit closed quarter-hours in one transaction; return how many were new. ``gas_days``: the
        gas channels' day records changed since the last commit, upserted in the same transaction.

        A quarter-hour already stored identically is a no-op (a restarted daemon may offer it
        again). One that disagrees with the stored one is kept out, logged as a warning and recorded
        in :meth:`conflicts`: a committed quarter-hour is never silently rewritten. Each new one
        updates the local day's and month's totals and gets one outbox row per configured sink.
        Raises ``ValueError`` for a malformed quarter-hour and ``sqlite3.Error`` when the card
        fails; in both cases nothing of the batch is committed.
        """
        rows = [encode(qh) for qh in qhs]
        if not rows and not gas_days:
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
            for g in gas_days:
                c.execute(f"INSERT OR REPLACE INTO gas_days ({GAS_DAYS_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                          (g.meter_id, g.channel, g.day.isoformat(), g.unit, g.first_m3, int(g.first_time.timestamp()),
                           g.last_m3, int(g.last_time.timestamp()), g.segment_start_m3, g.earlier_m3, g.resets))
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
        """Add one new quarter-hour to its local day's and month's totals, with its per-tariff split."""
        estimated = 1 if row[4] == Quality.ESTIMATED.value else 0
        imp, exp = json.loads(row[5]), json.loads(row[6])
        for (table, key_col), key in zip(TOTALS, _totals_keys(row[1], self.tz), strict=True):
            old = c.execute(
                f"SELECT import_by_tariff, export_by_tariff FROM {table} WHERE meter_id = ? AND {key_col} = ?",
                (row[0], key),
            ).fetchone()
            if old is None:
                split = (row[5], row[6])
            else:  # a row whose split is unknown (pruned before it was kept) stays unknown
                split = tuple(None if o is None else _json(add_split(json.loads(o), d))
                              for o, d in zip(old, (imp, exp), strict=True))
            c.execute(
                f"INSERT INTO {table} (meter_id, {key_col}, import_wh, export_wh, quarter_hours, estimated,"
                " import_by_tariff, export_by_tariff) VALUES (?,?,?,?,1,?,?,?) ON CONFLICT (meter_id, " + key_col + ")"
                " DO UPDATE SET import_wh = import_wh + excluded.import_wh, export_wh = export_wh + excluded.export_wh,"
                " quarter_hours = quarter_hours + 1, estimated = estimated + excluded.estimated,"
                " import_by_tariff = excluded.import_by_tariff, export_by_tariff = excluded.export_by_tariff",
                (row[0], key, row[2], row[3], estimated, *split),
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
        for m, key, imp, exp, n, est, imp_t, exp_t in rows:
            day = date.fromisoformat(key)
            first = datetime(day.year, day.month, day.day, tzinfo=self.tz)
            nxt = day + timedelta(days=1)
            after = datetime(nxt.year, nxt.month, nxt.day, tzinfo=self.tz)
            out.append(DailyTotal(m, day, imp, exp, n, est, quarter_hours_in(first, after), imp_t, exp_t))
        return out

    def monthly_totals(
        self, meter_id: str | None = None, start: str | None = None, end: str | None = None
    ) -> list[MonthlyTotal]:
        """Per local month ("YYYY-MM"), ``start <= month < end``, ordered by month then meter."""
        rows = self._totals("monthly_totals", "month", meter_id, start, end)
        out = []
        for m, key, imp, exp, n, est, imp_t, exp_t in rows:
            year, month = int(key[:4]), int(key[5:7])
            first = datetime(year, month, 1, tzinfo=self.tz)
            nxt = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=self.tz)
            out.append(MonthlyTotal(m, key, imp, exp, n, est, quarter_hours_in(first, nxt), imp_t, exp_t))
        return out

    def _totals(self, table: str, key_col: str, meter_id: str | None, start: str | None, end: str | None) -> list:
        """Rows of a totals table with the per-tariff splits decoded (None where unknown)."""
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
        # a read-only reader (the web service) may meet a store the daemon has not migrated yet
        split = "import_by_tariff, export_by_tariff" if self._has_split(table) else "NULL, NULL"
        sql = f"SELECT meter_id, {key_col}, import_wh, export_wh, quarter_hours, estimated, {split} FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {key_col}, meter_id"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [(*r[:6], *(None if v is None else json.loads(v) for v in r[6:])) for r in rows]

    def _has_split(self, table: str) -> bool:
        with self._lock:
            return any(r[1] == "import_by_tariff" for r in self._conn.execute(f"PRAGMA table_info({table})"))

    def gas_days(self, meter_id: str, start: date, end: date, channel: int | None = None) -> list[GasDay]:
        """A meter's gas day records, local days ``start <= day < end``, by day then channel; none
        from a store the daemon has not migrated yet (the web service reads it as it is)."""
        sql = f"SELECT {GAS_DAYS_COLUMNS} FROM gas_days WHERE meter_id = ? AND day >= ? AND day < ?"
        args: list = [meter_id, start.isoformat(), end.isoformat()]
        if channel is not None:
            sql += " AND channel = ?"
            args.append(channel)
        try:
            with self._lock:
                rows = self._conn.execute(sql + " ORDER BY day, channel", args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return []
        return [GasDay(m, ch, date.fromisoformat(d), u, f, _from_seconds(ft), lm, _from_seconds(lt), seg, early, resets)
                for m, ch, d, u, f, ft, lm, lt, seg, early, resets in rows]

    def last_gas_day(self, meter_id: str, channel: int) -> GasDay | None:
        """A gas channel's latest day record: where a restarted daemon resumes its gate and its day."""
        with self._lock:
            row = self._conn.execute("SELECT day FROM gas_days WHERE meter_id = ? AND channel = ? ORDER BY day DESC"
                                     " LIMIT 1", (meter_id, channel)).fetchone()
        if row is None:
            return None
        day = date.fromisoformat(row[0])
        return self.gas_days(meter_id, day, day + timedelta(days=1), channel)[0]

    def conflicts(self) -> list[Conflict]:
        """Duplicates that disagreed with what was committed, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT meter_id, start, offered, first_seen FROM conflicts ORDER BY first_seen, meter_id, start"
            ).fetchall()
        return [Conflict(m, _from_seconds(s), json.loads(o), _from_seconds(f)) for m, s, o, f in rows]

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

"""The store's tables and row format: the SQLite schema, its migrations, and how a
:class:`~gateway.model.QuarterHour` becomes a row and back (UNIX seconds, compact JSON: exact round trip)."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from gateway.model import QUARTER, Quality, QuarterHour

SCHEMA_VERSION = 3
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

Migration = Callable[[sqlite3.Connection], None]

TOTALS = (("daily_totals", "day"), ("monthly_totals", "month"))


def _totals_keys(start: int, tz: ZoneInfo) -> tuple[str, str]:
    """The local day ("YYYY-MM-DD") and month ("YYYY-MM") a quarter-hour starting at ``start`` counts in."""
    local = _from_seconds(start).astimezone(tz)
    return local.date().isoformat(), f"{local.year:04d}-{local.month:02d}"


def add_split(split: Mapping[str, int] | None, more: Mapping[str, int] | None) -> dict[str, int] | None:
    """Two per-tariff splits (Wh) added up; unknown (None) if either is: a split is never guessed."""
    if split is None or more is None:
        return None
    out = dict(split)
    for tariff, wh in more.items():
        out[tariff] = out.get(tariff, 0) + int(wh)
    return out


def _v2_tariff_split(c: sqlite3.Connection) -> None:
    """Daily and monthly totals get the per-tariff import/export split (JSON, as the quarter-hours).

    Existing rows are recomputed from the quarter-hours still kept, and only where every quarter-hour
    a row counted is still there: where retention pruned some, the split stays NULL (unknown) rather
    than a guess from the rest.
    """
    for table, _key in TOTALS:
        for col in ("import_by_tariff", "export_by_tariff"):
            c.execute(f"ALTER TABLE {table} ADD COLUMN {col} TEXT")  # JSON tariff -> Wh; NULL: unknown
    row = c.execute("SELECT value FROM state WHERE key = 'store.timezone'").fetchone()
    tz = ZoneInfo(row[0] if row else "Europe/Brussels")
    kept: dict[tuple[str, str, str], list] = {}  # (table, meter, key) -> [count, import split, export split]
    for meter, start, imp, exp in c.execute(
        "SELECT meter_id, start, import_by_tariff, export_by_tariff FROM quarter_hours ORDER BY meter_id, start"
    ):
        imp_d, exp_d = json.loads(imp), json.loads(exp)
        for (table, _key), key in zip(TOTALS, _totals_keys(start, tz), strict=True):
            acc = kept.setdefault((table, meter, key), [0, {}, {}])
            acc[0] += 1
            acc[1] = add_split(acc[1], imp_d)
            acc[2] = add_split(acc[2], exp_d)
    for (table, meter, key), (n, imp_d, exp_d) in kept.items():
        key_col = dict(TOTALS)[table]
        c.execute(
            f"UPDATE {table} SET import_by_tariff = ?, export_by_tariff = ? WHERE meter_id = ? AND {key_col} = ?"
            " AND quarter_hours = ?",
            (_json(imp_d), _json(exp_d), meter, key, n),
        )


def _v3_gas_days(c: sqlite3.Connection) -> None:
    """Gas per local day (gateway/gas_days.py): each gas channel's first and last accepted register of
    the day with their MBus capture times, and what a confirmed reset (meter exchange) split off.
    Nothing to recompute: the registers were never stored before, the table fills from now on."""
    c.execute(GAS_DAYS_TABLE)


GAS_DAYS_TABLE = """
CREATE TABLE gas_days (
    meter_id TEXT NOT NULL,              -- the grid meter relaying the MBus channel
    channel INTEGER NOT NULL,            -- MBus channel (0-n:24.2.1: n)
    day TEXT NOT NULL,                   -- local day of the capture time, YYYY-MM-DD
    unit TEXT NOT NULL,
    first_m3 REAL NOT NULL,              -- the day's first accepted register and its capture time
    first_time INTEGER NOT NULL,         -- UNIX seconds, UTC
    last_m3 REAL NOT NULL,               -- the day's last accepted register
    last_time INTEGER NOT NULL,
    segment_start_m3 REAL NOT NULL,      -- first_m3, or the first register after the day's last reset
    earlier_m3 REAL NOT NULL,            -- used in the day's segments a confirmed reset closed
    resets INTEGER NOT NULL,             -- confirmed resets (meter exchanges) in the day
    PRIMARY KEY (meter_id, channel, day)
) WITHOUT ROWID
"""
GAS_DAYS_COLUMNS = ("meter_id, channel, day, unit, first_m3, first_time, last_m3, last_time, segment_start_m3,"
                    " earlier_m3, resets")


# MIGRATIONS[n] upgrades a database from user_version n to n + 1, inside the opening transaction.
MIGRATIONS: dict[int, Migration] = {1: _v2_tariff_split, 2: _v3_gas_days}


class StoreError(Exception):
    """The store cannot be used as asked (e.g. a database written by a newer Quartier)."""


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


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    ids = [int(i) for i in ids]
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]

"""The web service's view of the gateway's SQLite store: read-only, so it can never disturb metering.

The daemon owns the store and commits one transaction per quarter-hour; WAL mode lets this process
read at the same time without blocking it. The connection is opened with ``mode=ro`` and
``query_only``: a bug here cannot write a byte to the card. The store may not exist yet when the web
service starts (a fresh node, the demo starting both processes): :class:`History` opens it on first
use and tries again later.
"""

from __future__ import annotations

import sqlite3
import threading
import urllib.parse
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.gas_days import GasDay
from gateway.logs import get_logger
from gateway.model import QuarterHour
from gateway.store import SCHEMA_VERSION, Allocation, DailyTotal, MonthlyTotal, Store, StoreError

log = get_logger("quartier.services.web")


class ReadOnlyStore(Store):
    """:class:`gateway.store.Store`'s reading methods on a read-only connection (no schema creation,
    no migration, no writes: SQLite refuses them)."""

    def __init__(self, path: str | Path, *, timezone: str = "Europe/Brussels") -> None:  # noqa: D107
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no store at {self.path}")
        self.sinks = ()
        self.retention_days = None
        self.max_bytes = None
        self._lock = threading.RLock()
        self._alarm = frozenset()
        uri = "file:" + urllib.parse.quote(str(self.path.resolve())) + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA query_only = ON")
            # a small page cache: the page reads a day or a month at a time, and the node's memory budget
            # (daemon + web <= 110 MB) has no room for SQLite's default 2 MB per connection
            self._conn.execute("PRAGMA cache_size = -256")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                raise StoreError(f"{self.path} is not initialised yet")
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema version {version}, newer than this Quartier's {SCHEMA_VERSION}")
            row = self._conn.execute("SELECT value FROM state WHERE key = 'store.timezone'").fetchone()
        except BaseException:
            self._conn.close()
            raise
        # the totals were cut into days in the store's own time zone: read them in it
        self.timezone = row[0] if row else timezone
        self.tz = ZoneInfo(self.timezone)


class History:
    """Lazily opened read-only store; every method returns empty results while there is none."""

    def __init__(self, path: str | Path, *, timezone: str = "Europe/Brussels") -> None:
        self.path = Path(path)
        self.timezone = timezone
        self._store: ReadOnlyStore | None = None
        self._lock = threading.Lock()
        self._warned = False

    def store(self) -> ReadOnlyStore | None:
        with self._lock:
            if self._store is None:
                try:
                    self._store = ReadOnlyStore(self.path, timezone=self.timezone)
                    log.info("web.store_opened", extra={"path": str(self.path), "timezone": self._store.timezone})
                except (OSError, sqlite3.Error, StoreError) as exc:
                    if not self._warned:
                        log.warning("web.store_unavailable", extra={"path": str(self.path), "error": str(exc)})
                        self._warned = True
                    return None
            return self._store

    @property
    def tz(self) -> ZoneInfo:
        s = self.store()
        return s.tz if s is not None else ZoneInfo(self.timezone)

    def quarter_hours(self, meter_id: str | None, start: datetime, end: datetime) -> list[QuarterHour]:
        s = self.store()
        return s.quarter_hours(meter_id=meter_id, start=start, end=end) if s is not None else []

    def daily_total(self, meter_id: str, day: date) -> DailyTotal | None:
        s = self.store()
        if s is None:
            return None
        rows = s.daily_totals(meter_id=meter_id, start=day, end=date.fromordinal(day.toordinal() + 1))
        return rows[0] if rows else None

    def monthly_total(self, meter_id: str, month: str) -> MonthlyTotal | None:
        s = self.store()
        if s is None:
            return None
        year, m = int(month[:4]), int(month[5:7])
        nxt = f"{year + m // 12:04d}-{m % 12 + 1:02d}"
        rows = s.monthly_totals(meter_id=meter_id, start=month, end=nxt)
        return rows[0] if rows else None

    def daily_totals(self, meter_id: str, start: date, end: date) -> list[DailyTotal]:
        """Local days ``start <= day < end`` (the history's weeks and months)."""
        s = self.store()
        return s.daily_totals(meter_id=meter_id, start=start, end=end) if s is not None else []

    def monthly_totals(self, meter_id: str, start: str, end: str) -> list[MonthlyTotal]:
        """Local months ``"YYYY-MM"``, ``start <= month < end`` (the history's years)."""
        s = self.store()
        return s.monthly_totals(meter_id=meter_id, start=start, end=end) if s is not None else []

    def gas_days(self, meter_id: str, start: date, end: date) -> list[GasDay]:
        """The grid meter's gas day records, local days ``start <= day < end`` (none before schema 3)."""
        s = self.store()
        return s.gas_days(meter_id, start, end) if s is not None else []

    def allocations(self, operation: str, start: datetime, end: datetime) -> list[Allocation]:
        """This member's allocations in [start, end) as the daemon stored them from the community
        server; none while the daemon has not created the table yet (an older release)."""
        s = self.store()
        if s is None:
            return []
        try:
            return s.allocations(operation=operation, start=start, end=end)
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return []

    def meters(self) -> list[str]:
        s = self.store()
        return s.meters() if s is not None else []

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

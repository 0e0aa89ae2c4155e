"""The server's record of collective alerts, in the ledger's SQLite file (its own table and connection).

Kept apart from :mod:`services.community.ledger` so that alerts stay one small module; it also reads
the members' quarter-hours (``member_qh``) for the effect of each alert, read-only.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from services.community.alerts import AlertRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS collective_alert (
    id TEXT PRIMARY KEY, operation TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL,
    start INTEGER NOT NULL, until INTEGER NOT NULL, created_at REAL NOT NULL, ended_at REAL
);
CREATE INDEX IF NOT EXISTS collective_alert_op ON collective_alert (operation, start);
"""

_COLS = "id, operation, kind, message, start, until, created_at, ended_at"


def _dt(s: float | None) -> datetime | None:
    return None if s is None else datetime.fromtimestamp(s, UTC)


def _row(r: tuple) -> AlertRecord:
    return AlertRecord(id=r[0], operation=r[1], kind=r[2], message=r[3], start=_dt(r[4]), until=_dt(r[5]),  # type: ignore[arg-type]
                       created_at=_dt(r[6]), ended_at=_dt(r[7]))  # type: ignore[arg-type]


class AlertBook:
    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(Path(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def add(self, operation: str, kind: str, message: str, start: datetime, until: datetime, now: datetime) -> AlertRecord:
        rec = AlertRecord(id=f"a{int(now.timestamp())}-{secrets.token_hex(3)}", operation=operation, kind=kind,
                          message=message, start=start, until=until, created_at=now)
        with self._lock:
            self._db.execute(f"INSERT INTO collective_alert ({_COLS}) VALUES (?,?,?,?,?,?,?,NULL)",
                             (rec.id, operation, kind, message, int(start.timestamp()), int(until.timestamp()),
                              now.timestamp()))
        return rec

    def end(self, operation: str, now: datetime, alert_id: str | None = None) -> list[AlertRecord]:
        """End the active alerts (or the one ``alert_id``, active or scheduled); returns those ended."""
        ts = now.timestamp()
        with self._lock:
            if alert_id is None:
                q = (f"SELECT {_COLS} FROM collective_alert WHERE operation=? AND ended_at IS NULL "
                     "AND start <= ? AND until > ?")
                rows = self._db.execute(q, (operation, ts, ts)).fetchall()
            else:
                q = f"SELECT {_COLS} FROM collective_alert WHERE operation=? AND id=? AND ended_at IS NULL AND until > ?"
                rows = self._db.execute(q, (operation, alert_id, ts)).fetchall()
            self._db.executemany("UPDATE collective_alert SET ended_at=? WHERE id=?", [(ts, r[0]) for r in rows])
        return [_row(r[:7] + (ts,)) for r in rows]

    def all(self, operation: str, limit: int = 500) -> list[AlertRecord]:
        """The operation's alerts, newest start first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLS} FROM collective_alert WHERE operation=? ORDER BY start DESC LIMIT ?",
                                    (operation, limit)).fetchall()
        return [_row(r) for r in rows]

    def imports(self, operation: str, start: datetime, end: datetime) -> list[tuple[str, datetime, int]]:
        """(member, quarter-hour start, import Wh) from the ledger's member_qh in [start, end)."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT member, start, import_wh FROM member_qh WHERE operation=? AND start>=? AND start<?",
                    (operation, int(start.timestamp()), int(end.timestamp()))).fetchall()
        except sqlite3.OperationalError:  # a ledger file without quarter-hours yet
            return []
        return [(m, datetime.fromtimestamp(s, UTC), int(w)) for m, s, w in rows]

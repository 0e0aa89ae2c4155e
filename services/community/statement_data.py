"""Read a period's figures for a statement from the server's ledger, read-only.

The ledger is SQLite in WAL mode: a reader never blocks the running server and sees its last commit;
with the server stopped it reads the same file. Nothing here writes, so a statement can be run as any
user who can read the file.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from services.community.statement import Energy

MONTH_S = 32 * 86400  # a binding monthly row may start up to a month before the period's end


class LedgerReadError(Exception):
    """The ledger cannot be read (missing, not a ledger): one line for the user."""


def _dt(s: int) -> datetime:
    return datetime.fromtimestamp(s, timezone.utc)


def read_period(path: str | Path, operation: str, start: datetime, end: datetime
                ) -> tuple[list[Energy], list[Energy], list[Energy]]:
    """(provisional quarter-hours, binding received rows, binding injection rows) of [start, end)."""
    path = Path(path)
    if not path.is_file():
        raise LedgerReadError(f"{path}: no ledger there (server.database; has the server run?)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise LedgerReadError(f"{path}: {exc}") from None
    a, b = int(start.timestamp()), int(end.timestamp())
    try:
        prov = [Energy(m, _dt(s), _dt(s) + timedelta(minutes=15), int(r), int(i)) for m, s, r, i in db.execute(
            "SELECT member, start, received_wh, injection_shared_wh FROM allocation "
            "WHERE operation=? AND start>=? AND start<? ORDER BY start, member", (operation, a, b))]
        cols = {r[1] for r in db.execute("PRAGMA table_info(grid_allocation)")}
        end_col = "end_s" if "end_s" in cols else "NULL"
        inj_col = "injection_shared_wh" if "injection_shared_wh" in cols else "NULL"
        received, injection = [], []
        for m, s, e, r, i in db.execute(
                f"SELECT member, start, {end_col}, received_wh, {inj_col} FROM grid_allocation "
                "WHERE operation=? AND start>=? AND start<? ORDER BY start, member", (operation, a - MONTH_S, b)):
            stop = _dt(e) if e is not None else _dt(s) + timedelta(minutes=15)
            received.append(Energy(m, _dt(s), stop, int(r), 0))
            if i is not None:
                injection.append(Energy(m, _dt(s), stop, 0, int(i)))
    except sqlite3.Error as exc:
        raise LedgerReadError(f"{path}: not a community ledger ({exc})") from None
    finally:
        db.close()
    return prov, received, injection

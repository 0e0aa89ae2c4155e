"""Retention and disk: quarter-hours are deleted only once every sink has them (never a meter's
latest, the restart baseline), and an alarm is raised before the SD card fills up."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.logs import get_logger
from gateway.store.schema import _bound, _from_seconds

log = get_logger("quartier.gateway.store")

DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024  # below this much free space on the card: alarm


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


class RetentionMixin:
    """Retention and disk status of :class:`~gateway.store.Store`."""


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

"""The metering path on one node: telegram → reading → quarter-hours → local store → sinks told.

Shared by the daemon (live, one commit per closed quarter-hour) and ``quartier replay`` (batched
commits). A closed quarter-hour is committed to the local store before anything else hears of it; if
the commit fails (disk full, database locked) it stays in memory and is retried, never dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.from_p1 import NotAReading, to_reading
from gateway.logs import get_logger
from gateway.model import QuarterHour, Reading
from gateway.quarter_hours import LiveQuarter, QuarterHourAggregator

log = get_logger("quartier.gateway.pipeline")


@dataclass(slots=True)
class MeterHealth:
    """Counters one meter's reader and aggregator keep, for ``quartier status`` and the watchdog."""

    telegrams: int = 0
    crc_errors: int = 0
    rejected: int = 0  # framed and CRC-valid, but not a usable reading
    last_telegram_monotonic: float | None = None
    last_reading: Reading | None = None

    @property
    def crc_error_rate(self) -> float | None:
        total = self.telegrams + self.crc_errors
        return self.crc_errors / total if total else None


@dataclass
class Pipeline:
    store: object  # gateway.store.Store (duck-typed: commit_quarter_hours, last_boundary)
    max_gap: timedelta = timedelta(minutes=5)
    meter_id: str | None = None  # override for every telegram (config sources[].meter_id)
    batch: bool = False  # replay: commit in batches instead of once per quarter-hour
    batch_size: int = 2000
    on_commit: Callable[[list[QuarterHour]], None] | None = None
    clock_synced: Callable[[], bool | None] = lambda: True
    aggregators: dict[str, QuarterHourAggregator] = field(default_factory=dict)
    health: dict[str, MeterHealth] = field(default_factory=dict)
    unattributed_crc_errors: int = 0
    committed: int = 0
    _pending: list[QuarterHour] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _commit_failing: bool = False

    # -- inputs ----------------------------------------------------------------------------------

    def feed_telegram(self, telegram) -> list[QuarterHour]:
        """One parsed telegram (p1.Telegram). A failed CRC is counted against the meter, not used."""
        if telegram.crc_ok is False:
            with self._lock:
                # the meter id inside a corrupt telegram cannot be trusted: count it on the only meter
                # this reader serves when that is known
                mid = self.meter_id or (next(iter(self.health)) if len(self.health) == 1 else None)
                if mid is None:
                    self.unattributed_crc_errors += 1
                else:
                    self.health.setdefault(mid, MeterHealth()).crc_errors += 1
            log.warning("telegram.crc_failed", extra={"meter": mid or "?", "header": telegram.header})
            return []
        try:
            reading = to_reading(telegram, meter_id=self.meter_id, clock_synced=bool(self.clock_synced()))
        except NotAReading as exc:
            mid = self.meter_id or "?"
            with self._lock:
                self.health.setdefault(mid, MeterHealth()).rejected += 1
            log.warning("telegram.rejected", extra={"meter": mid, "reason": str(exc)})
            return []
        return self.feed_reading(reading, telegram=True)

    def feed_reading(self, reading: Reading, *, telegram: bool = False) -> list[QuarterHour]:
        with self._lock:
            h = self.health.setdefault(reading.meter_id, MeterHealth())
            if telegram:
                h.telegrams += 1
            h.last_telegram_monotonic = time.monotonic()
            h.last_reading = reading
            agg = self.aggregators.get(reading.meter_id)
            if agg is None:
                baseline = self.store.last_boundary(reading.meter_id)
                agg = QuarterHourAggregator(reading.meter_id, max_gap=self.max_gap, source=reading.source, baseline=baseline)
                self.aggregators[reading.meter_id] = agg
                log.info(
                    "meter.seen",
                    extra={"meter": reading.meter_id, "resume_from": baseline.end.isoformat() if baseline else "none"},
                )
            closed = agg.add(reading)
            if closed:
                self._pending.extend(closed)
            if self._pending and (not self.batch or len(self._pending) >= self.batch_size):
                return self._commit_locked()
            return []

    def count_rejected(self, meter_id: str) -> None:
        """A source's input for this meter that could not be used (a Flukso payload, say)."""
        with self._lock:
            self.health.setdefault(meter_id, MeterHealth()).rejected += 1

    def feed_readings(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            self.feed_reading(r)

    # -- commits ---------------------------------------------------------------------------------

    def flush(self) -> list[QuarterHour]:
        """Commit whatever closed quarter-hours are waiting (end of a replay, retry after a failure)."""
        with self._lock:
            return self._commit_locked() if self._pending else []

    def _commit_locked(self) -> list[QuarterHour]:
        batch = list(self._pending)
        try:
            self.store.commit_quarter_hours(batch)
        except Exception as exc:  # sqlite3 errors, disk full: keep them, retry on the next reading
            if not self._commit_failing:
                log.error("store.commit_failed", extra={"pending": len(batch), "error": str(exc)})
            self._commit_failing = True
            return []
        if self._commit_failing:
            log.info("store.commit_recovered", extra={"committed": len(batch)})
            self._commit_failing = False
        self._pending.clear()
        self.committed += len(batch)
        if not self.batch:
            for qh in batch:
                log.info(
                    "quarter_hour.closed",
                    extra={"meter": qh.meter_id, "start": qh.start.isoformat(), "import_wh": qh.import_wh,
                           "export_wh": qh.export_wh, "quality": qh.quality.value,
                           **({"flags": ",".join(qh.flags)} if qh.flags else {})},
                )
        if self.on_commit is not None:
            self.on_commit(batch)
        return batch

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- live view -------------------------------------------------------------------------------

    def live(self) -> dict[str, LiveQuarter]:
        with self._lock:
            return {mid: lq for mid, agg in self.aggregators.items() if (lq := agg.live()) is not None}

    def last_telegram_age_s(self, now_monotonic: float | None = None) -> float | None:
        now = time.monotonic() if now_monotonic is None else now_monotonic
        ages = [now - h.last_telegram_monotonic for h in self.health.values() if h.last_telegram_monotonic]
        return min(ages) if ages else None


def utc_iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None

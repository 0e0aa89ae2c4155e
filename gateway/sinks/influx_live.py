"""InfluxDB live measurement: each meter's latest reading every ``interval_s``, beside the quarter-hours.

DSMR-reader and Grafana users expect live power, per-phase values, registers and gas next to the
settlement data. These samples are a convenience, not settlement: they never touch the store or its
outbox (the quarter-hours keep their guarantees there), and they are bounded in memory. The reader
thread only swaps a reference (:meth:`LiveInfluxWriter.offer`); this writer's own thread samples,
encodes and writes. While the database is down, at most ``max_points`` lines wait; older ones are
dropped and counted, so a long outage costs a few hundred kB at most, never the daemon's budget.

Points: measurement ``live`` (configurable), tags ``meter_id``, ``source``, ``role``, timestamp the
meter's time in seconds (so a re-write after a retry overwrites, as for the quarter-hours).
Fields (only what the meter gives): ``import_w``, ``export_w``, ``net_w``, ``import_wh``,
``export_wh`` (sums), ``import_t<n>_wh``/``export_t<n>_wh`` (per tariff), ``tariff``,
``l<n>_voltage_v``, ``l<n>_current_a``, ``l<n>_import_w``, ``l<n>_export_w``, ``demand_w``,
``month_peak_w`` and ``<kind>_m3`` (or ``<kind>_<unit>``; ``<kind>_ch<n>_…`` for a second
sub-meter of one kind) for gas, water and heat.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from gateway.logs import get_logger
from gateway.model import Reading
from gateway.sinks import SinkStats, backoff_delay
from gateway.sinks.influx import _KEY_ESCAPES, _MEASUREMENT_ESCAPES, load_influxdb_client

log = get_logger("quartier.gateway.sinks.influx_live")

_UNIT_FIELD = re.compile(r"[^a-z0-9]+")


def _num(v: float) -> str | None:
    return None if v is None or not math.isfinite(v) else repr(float(v))


def live_fields(r: Reading) -> dict[str, str]:
    """The fields of one reading as line-protocol values (floats, integers with ``i``), stable order."""
    out: dict[str, str | None] = {}
    if r.import_w is not None:
        out["import_w"] = _num(r.import_w)
    if r.export_w is not None:
        out["export_w"] = _num(r.export_w)
    if r.import_w is not None and r.export_w is not None:
        out["net_w"] = _num(r.import_w - r.export_w)
    # a sum is only meaningful when every tariff register is known
    if r.import_wh and all(v is not None for v in r.import_wh.values()):
        out["import_wh"] = f"{r.import_total_wh}i"
    if r.export_wh and all(v is not None for v in r.export_wh.values()):
        out["export_wh"] = f"{r.export_total_wh}i"
    for prefix, regs in (("import", r.import_wh), ("export", r.export_wh)):
        if len(regs) > 1 or "0" not in regs:
            for tariff, wh in sorted(regs.items()):
                if wh is not None and tariff.isalnum():
                    out[f"{prefix}_t{tariff}_wh"] = f"{int(wh)}i"
    if r.tariff is not None and r.tariff.isdigit():
        out["tariff"] = f"{int(r.tariff)}i"
    for p in r.phases:
        for name in ("voltage_v", "current_a", "import_w", "export_w"):
            v = getattr(p, name)
            if v is not None:
                out[f"l{p.phase}_{name}"] = _num(v)
    if r.demand_w is not None:
        out["demand_w"] = _num(r.demand_w)
    if r.month_peak_w is not None:
        out["month_peak_w"] = _num(r.month_peak_w)
    seen: dict[str, int] = {}
    for m in r.submeters:
        unit = _UNIT_FIELD.sub("", (m.unit or "").lower().replace("³", "3")) or "value"
        kind = _UNIT_FIELD.sub("_", m.kind.lower()) or "other"
        n = seen[kind] = seen.get(kind, 0) + 1
        out[f"{kind}_{unit}" if n == 1 else f"{kind}_ch{m.channel}_{unit}"] = _num(m.value)
    return {k: v for k, v in out.items() if v is not None}


def live_line(r: Reading, measurement: str = "live", role: str = "grid", at: datetime | None = None) -> str | None:
    """One reading as one line of line protocol (seconds, ``at`` or the reading's time), or None
    when it has no field."""
    f = live_fields(r)
    if not f or not r.meter_id or any(c in r.meter_id for c in "\r\n"):
        return None
    tags = f",meter_id={r.meter_id.translate(_KEY_ESCAPES)}"
    if r.source:
        tags += f",source={r.source.translate(_KEY_ESCAPES)}"
    tags += f",role={role.translate(_KEY_ESCAPES)}"
    body = ",".join(f"{k}={v}" for k, v in f.items())
    return f"{measurement.translate(_MEASUREMENT_ESCAPES)}{tags} {body} {int((at or r.time).timestamp())}"


class LiveInfluxWriter:
    """Samples the latest reading of each meter every ``interval_s`` and writes it, best effort.

    Quacks like an outbox sink for the daemon (``name``, ``stats``, ``run``, ``notify``), so its
    health (last success, last error) shows beside the quarter-hour sink's.
    """

    name = "influx_live"

    def __init__(self, *, url: str, token: str, org: str, bucket: str, measurement: str = "live",
                 interval_s: float = 10.0, max_points: int = 2000, batch_size: int = 500, timeout_s: float = 10,
                 backoff_max_s: float = 60, role_of=None) -> None:
        if interval_s <= 0 or max_points < 1:
            raise ValueError("interval_s must be > 0 and max_points >= 1")
        self.url, self.org, self.bucket, self.measurement = url, org, bucket, measurement
        self.interval_s, self.batch_size, self.backoff_max_s = interval_s, batch_size, backoff_max_s
        self.role_of = role_of or (lambda _mid: "grid")
        self.stats = SinkStats()
        self.written = 0
        self.dropped = 0  # points lost to the bound while the database was down
        self._latest: dict[str, Reading] = {}
        self._sampled: dict[str, tuple[Reading, int]] = {}  # meter -> (last sampled, its second)
        self._pending: deque[str] = deque(maxlen=max_points)
        self._lock = threading.Lock()
        client = load_influxdb_client()
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._client = client.InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout_s * 1000), retries=False)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._precision = client.WritePrecision.S

    # -- the reader threads (never block) ---------------------------------------------------------

    def offer(self, reading: Reading) -> None:
        """The meter's latest accepted reading (or power snapshot); sampled at the next tick."""
        self._latest[reading.meter_id] = reading  # one dict store: atomic under the GIL

    def notify(self) -> None:  # a quarter-hour was committed: nothing to do here
        pass

    # -- its own thread ---------------------------------------------------------------------------

    def sample(self) -> int:
        """Queue one line per meter whose latest reading is newer than the last sampled one."""
        n = 0
        for mid, r in list(self._latest.items()):
            last = self._sampled.get(mid)
            if last is not None and last[0] is r:
                continue
            at = None
            second = int(r.time.timestamp())
            if last is not None and second <= last[1]:
                # a power snapshot between two counter readings (Fluksometer) carries the last
                # reading's time: stamp it with the Pi's clock, the one its power was measured on
                second = max(int(time.time()), last[1] + 1)
                at = datetime.fromtimestamp(second, timezone.utc)
            self._sampled[mid] = (r, second)
            line = live_line(r, self.measurement, self.role_of(mid), at)
            if line is None:
                continue
            with self._lock:
                if len(self._pending) == self._pending.maxlen:
                    self.dropped += 1
                self._pending.append(line)
            n += 1
        return n

    def flush(self) -> int:
        """Write what waits, oldest first; raises on failure (what was not written stays queued)."""
        done = 0
        while True:
            with self._lock:
                batch = [self._pending[i] for i in range(min(self.batch_size, len(self._pending)))]
            if not batch:
                return done
            try:
                self._write_api.write(bucket=self.bucket, org=self.org, record="\n".join(batch),
                                      write_precision=self._precision)
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status is not None and 400 <= int(status) < 500 and int(status) not in (401, 403, 404, 408, 429):
                    with self._lock:  # the data is refused: drop it rather than retry it for ever
                        for _ in batch:
                            if self._pending:
                                self._pending.popleft()
                    self.dropped += len(batch)
                    log.warning("influx_live.refused", extra={"status": status, "points": len(batch)})
                    continue
                raise
            with self._lock:
                for _ in batch:  # the bound may have pushed some out meanwhile: drop from the left
                    if self._pending:
                        self._pending.popleft()
            done += len(batch)
            self.written += len(batch)
            self.stats.pushed += len(batch)
            self.stats.last_success = datetime.now(timezone.utc)

    def run(self, stop: threading.Event) -> None:
        failures = 0
        next_tick = time.monotonic()
        while not stop.is_set():
            self.sample()
            try:
                self.flush()
            except Exception as exc:
                failures += 1
                self.stats.consecutive_failures = failures
                reason = f"{self.url} unavailable: {type(exc).__name__}: {exc}"[:300]
                if failures == 1 or reason != self.stats.last_error:
                    log.warning("influx_live.unavailable", extra={"error": reason, "queued": len(self._pending)})
                self.stats.last_error = reason
                stop.wait(max(self.interval_s, backoff_delay(failures, self.interval_s, self.backoff_max_s)))
                continue
            if failures:
                log.info("influx_live.recovered", extra={"after_failures": failures})
            failures = 0
            self.stats.consecutive_failures = 0
            self.stats.last_error = None
            next_tick += self.interval_s
            stop.wait(max(0.0, next_tick - time.monotonic()))
            if time.monotonic() - next_tick > self.interval_s:
                next_tick = time.monotonic()  # fell behind (a long write): do not burst
        self.close()

    def close(self) -> None:
        try:
            self._write_api.close()
            self._client.close()
        except Exception:
            pass

    def health_fields(self) -> dict[str, Any]:
        return {"queued": len(self._pending), "written": self.written, "dropped": self.dropped,
                "interval_s": self.interval_s}


def lines(readings: Iterable[Reading], measurement: str = "live") -> list[str]:
    """For tests and the bench: the lines of several readings."""
    return [x for r in readings if (x := live_line(r, measurement)) is not None]

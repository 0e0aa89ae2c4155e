"""InfluxDB v2 sink: closed quarter-hours from the outbox to ``/api/v2/write``, synchronously.

Why not influxdb-client's batching WriteApi: it drops a batch once its retry window is over and loses
its buffer on exit. Here the outbox *is* the buffer: a batch is read from SQLite, written with the
synchronous API, and deleted only after a 2xx. A crash between the write and the delete re-sends the
batch, which is harmless because every point is idempotent: same measurement, same tags
(``meter_id``, ``source``), quarter-hour start as the timestamp, so InfluxDB overwrites the point and
VictoriaMetrics (with ``-dedup.minScrapeInterval``) keeps one sample. The quality is a field, never a
tag: a re-write with a better quality would otherwise be a second series, counted twice.

Failure policy (the loop lives in :class:`gateway.sinks.OutboxSink`):
- network error, 5xx, 429, 408: back off (full jitter, forever), honouring Retry-After;
- 401, 403, 404: the server refuses *us* (token, org, bucket), not the data: back off the same way,
  the rows stay in the outbox until the configuration is fixed;
- other 4xx (400, 413, 422, …): the data is refused; the batch is bisected until the refused points
  are alone, and those go to the dead-letter table, so good points never die with a bad one.

``influxdb_client`` is imported when an :class:`InfluxSink` is built, never at module import.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from gateway.logs import get_logger
from gateway.model import Quality, QuarterHour
from gateway.sinks import OutboxSink, SinkUnavailable, parse_retry_after

if TYPE_CHECKING:
    import random

    from gateway.store import Store

log = get_logger("quartier.gateway.sinks.influx")

# the quality as an integer field: VictoriaMetrics drops string fields
QUALITY_CODES: dict[Quality, int] = {Quality.MEASURED: 0, Quality.INTERPOLATED: 1, Quality.ESTIMATED: 2}

_RETRYABLE = frozenset({408, 429})
_REFUSES_US = frozenset({401, 403, 404})  # credentials, org or bucket: not the points' fault
_MAX_REASON = 500

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\\": "\\\\"})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "\\\\"})


class UnencodableQuarterHour(ValueError):
    """A quarter-hour that cannot be written as line protocol (dead-lettered without a request)."""


def _key(text: str, what: str) -> str:
    if not text:
        raise UnencodableQuarterHour(f"empty {what}")
    if "\n" in text or "\r" in text:
        raise UnencodableQuarterHour(f"line break in {what} {text!r}")
    return text.translate(_KEY_ESCAPES)


def fields(qh: QuarterHour) -> dict[str, int]:
    """The integer fields of a quarter-hour's point, in a stable order."""
    out = {"import_wh": int(qh.import_wh), "export_wh": int(qh.export_wh)}
    for tariff, wh in sorted(qh.import_by_tariff.items()):
        out[f"import_t{tariff}_wh"] = int(wh)
    for tariff, wh in sorted(qh.export_by_tariff.items()):
        out[f"export_t{tariff}_wh"] = int(wh)
    out["quality"] = QUALITY_CODES[Quality(qh.quality)]
    out["estimated"] = 1 if qh.quality == Quality.ESTIMATED else 0
    return out


def line_protocol(qh: QuarterHour, measurement: str = "quarter_hour") -> str:
    """One quarter-hour as one line of InfluxDB line protocol, timestamp in seconds (its start)."""
    if not measurement or "\n" in measurement:
        raise UnencodableQuarterHour(f"bad measurement name {measurement!r}")
    tags = f",meter_id={_key(qh.meter_id, 'meter_id')}"
    if qh.source:
        tags += f",source={_key(qh.source, 'source')}"
    body = ",".join(f"{_key(k, 'field key')}={v}i" for k, v in fields(qh).items())
    start = qh.start.timestamp()
    if qh.start.tzinfo is None or start != int(start):
        raise UnencodableQuarterHour(f"start {qh.start!r} is not an aware whole second")
    return f"{measurement.translate(_MEASUREMENT_ESCAPES)}{tags} {body} {int(start)}"


def load_influxdb_client() -> Any:
    """Import influxdb_client, the costly part of this sink (~22 MB RSS on amd64), and return it.

    influxdb_client imports numpy only to recognise numpy scalars in its ``Point`` class, which this
    sink does not use (it writes line protocol). When numpy is not loaded yet, it is hidden during
    the import: that spares ~13 MB of a 45 MB budget. ``import numpy`` works normally afterwards.
    """
    if "influxdb_client" in sys.modules:
        return sys.modules["influxdb_client"]
    hide_numpy = "numpy" not in sys.modules
    if hide_numpy:
        sys.modules["numpy"] = None  # type: ignore[assignment]  # makes `import numpy` fail fast
    try:
        import influxdb_client
        import influxdb_client.client.write_api  # noqa: F401  (SYNCHRONOUS, WritePrecision)
    finally:
        if hide_numpy and "numpy" in sys.modules and sys.modules["numpy"] is None:
            del sys.modules["numpy"]
    return influxdb_client


class _Refused(Exception):
    """The server refused the content of the batch (a 4xx that is not about us)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class InfluxSink(OutboxSink):
    """Pushes the ``influx`` outbox to an InfluxDB v2 write endpoint (or VictoriaMetrics)."""

    name = "influx"

    def __init__(
        self,
        store: Store,
        *,
        url: str,
        token: str,
        org: str,
        bucket: str,
        measurement: str = "quarter_hour",
        batch_size: int = 500,
        timeout_s: float = 10,
        backoff_initial_s: float = 1,
        backoff_max_s: float = 300,
        idle_poll_s: float = 1.0,
        name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            store, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s, idle_poll_s=idle_poll_s, rng=rng
        )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if name:
            self.name = name
        self.url, self.org, self.bucket, self.measurement = url, org, bucket, measurement
        self.batch_size = batch_size
        client = load_influxdb_client()
        import urllib3
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.rest import ApiException

        self._api_exception = ApiException
        # with retries=False urllib3 raises its own errors (NewConnectionError, ProtocolError,
        # ReadTimeoutError: all urllib3.exceptions.HTTPError) or a bare OSError
        self._network_errors: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, OSError)
        self._precision = client.WritePrecision.S
        # retries=False: urllib3 must not retry behind our back; the policy is ours (run loop)
        self._client = client.InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout_s * 1000), retries=False)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def close(self) -> None:
        self._write_api.close()
        self._client.close()

    def push_once(self) -> int:
        """Write the oldest batch; return how many rows left the outbox (acknowledged or dead-lettered).

        0 means the outbox is empty. Raises :class:`SinkUnavailable` when the server could not take
        the batch; what was acknowledged before that (in a bisection) stays acknowledged.
        """
        rows = self.store.outbox_peek(self.name, self.batch_size)
        if not rows:
            return 0
        lines: list[tuple[int, QuarterHour, str]] = []
        settled = 0
        for row_id, qh in rows:
            try:
                lines.append((row_id, qh, line_protocol(qh, self.measurement)))
            except (UnencodableQuarterHour, ValueError, KeyError) as exc:
                self._dead_letter(row_id, qh, None, f"unencodable: {exc}")
                settled += 1
        pending: deque[list[tuple[int, QuarterHour, str]]] = deque([lines] if lines else [])
        while pending:
            chunk = pending.popleft()
            try:
                self._post([line for _, _, line in chunk])
            except _Refused as refused:
                if len(chunk) == 1:
                    self._dead_letter(chunk[0][0], chunk[0][1], refused.status, refused.reason)
                    settled += 1
                else:  # bisect, left half first: the replay order is kept
                    mid = len(chunk) // 2
                    pending.appendleft(chunk[mid:])
                    pending.appendleft(chunk[:mid])
                continue
            now = datetime.now(timezone.utc)
            self.store.outbox_ack(
                self.name, [row_id for row_id, _, _ in chunk], state={f"{self.name}.last_push": now.isoformat()}
            )
            self.stats.last_success = now
            self.stats.pushed += len(chunk)
            settled += len(chunk)
        return settled

    def _post(self, lines: Sequence[str]) -> None:
        """One synchronous write; translate every outcome into return, _Refused or SinkUnavailable."""
        try:
            self._write_api.write(
                bucket=self.bucket, org=self.org, record="\n".join(lines), write_precision=self._precision
            )
        except self._api_exception as exc:
            status = int(exc.status or 0)
            message = _message(exc)
            if 400 <= status < 500 and status not in _RETRYABLE and status not in _REFUSES_US:
                raise _Refused(status, f"HTTP {status}: {message}") from exc
            retry_after = None
            if status in _RETRYABLE or status >= 500:
                retry_after = parse_retry_after(getattr(exc, "retry_after", None) or _header(exc, "Retry-After"))
            what = "refused our credentials, org or bucket" if status in _REFUSES_US else "unavailable"
            raise SinkUnavailable(
                f"{self.url} {what}: HTTP {status}: {message}", status=status, retry_after_s=retry_after
            ) from exc
        except self._network_errors as exc:
            raise SinkUnavailable(f"{self.url} unreachable: {type(exc).__name__}: {exc}"[:_MAX_REASON]) from exc

    def _dead_letter(self, row_id: int, qh: QuarterHour, status: int | None, reason: str) -> None:
        reason = reason[:_MAX_REASON]
        self.store.dead_letter(self.name, [row_id], reason)
        self.stats.dead_lettered += 1
        log.warning(
            "sink.dead_letter",
            extra={"sink": self.name, "meter": qh.meter_id, "start": qh.start.isoformat(), "status": status, "reason": reason},
        )


def _header(exc: Exception, name: str) -> str | None:
    headers = getattr(exc, "headers", None)
    if headers is None:
        return None
    try:
        return headers.get(name)
    except AttributeError:
        return None


def _message(exc: Exception) -> str:
    """The server's own words (InfluxDB answers JSON with a "message"), on one short line."""
    text = getattr(exc, "message", None) or getattr(exc, "body", None) or getattr(exc, "reason", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split())[:_MAX_REASON]

"""Sinks: where closed quarter-hours go after the local store, always read from the store's outbox.

A sink deletes an outbox row only after its remote side acknowledged it, and its writes are
idempotent, so the worst a crash or a lost acknowledgement can do is send a quarter-hour twice, which
the remote side collapses. This module holds what every sink shares: the retry policy (exponential
backoff with full jitter, forever, honouring Retry-After) and the worker loop that applies it. A
concrete sink (``gateway.sinks.influx``) only says how to push one batch. Nothing heavy is imported
here: a sink's client library is loaded only when that sink is enabled.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from gateway.logs import get_logger

if TYPE_CHECKING:
    from gateway.store import Store

log = get_logger("quartier.gateway.sinks")


class SinkUnavailable(Exception):
    """The remote side did not take the batch now (network error, 5xx, 429, 408, refused credentials):
    nothing was lost, the rows stay in the outbox, try again later."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after_s = retry_after_s


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 850 / asctime forms carry no zone: HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def backoff_delay(failures: int, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, initial * 2^(failures-1))].

    Full jitter spreads the retries of many gateways that lost the same server at the same moment,
    so they do not all come back in step when it returns.
    """
    cap = min(max_s, initial_s * 2 ** min(max(failures - 1, 0), 62))
    return (rng or random).uniform(0.0, cap)


@dataclass(slots=True)
class SinkStats:
    """What ``quartier status`` and the health page show about a sink (read from any thread)."""

    last_success: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    pushed: int = 0  # quarter-hours acknowledged by the remote side since start
    dead_lettered: int = 0  # quarter-hours the remote side refused for good since start
    down_since: datetime | None = None


class OutboxSink:
    """Base of every sink: drains the outbox with :meth:`push_once` in :meth:`run`, forever.

    Subclasses set ``name`` and implement :meth:`push_once`, which raises :class:`SinkUnavailable`
    when the batch could not be delivered. ``run`` never dies on an exception: anything unexpected is
    logged and retried like an outage.
    """

    name: str = "sink"

    def __init__(
        self,
        store: Store,
        *,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 300.0,
        idle_poll_s: float = 1.0,
        retry_after_max_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("backoff needs 0 < backoff_initial_s <= backoff_max_s")
        self.store = store
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.idle_poll_s = idle_poll_s
        # a server may ask for a long pause, but a broken header must not park us for days
        self.retry_after_max_s = retry_after_max_s if retry_after_max_s is not None else max(backoff_max_s, 3600.0)
        self.stats = SinkStats()
        self._rng = rng or random.Random()
        self._wake = threading.Event()
        self._saved_error: str | None = None

    def push_once(self) -> int:
        """Push one batch; return how many outbox rows it settled (0: the outbox is empty)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the client (sockets); the sink is not used afterwards."""

    def notify(self) -> None:
        """Wake an idle :meth:`run` at once (the daemon calls this after each commit)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Push until ``stop`` is set: drain the backlog in order, sleep when idle, back off when down."""
        log.info("sink.started", extra={"sink": self.name, "backlog": self._backlog()})
        while not stop.is_set():
            self._wake.clear()  # before looking, so a notify() during the push is not lost
            try:
                settled = self.push_once()
            except SinkUnavailable as exc:
                self._pause(stop, self._failed(exc.reason, exc.retry_after_s))
                continue
            except Exception as exc:  # never die: a bug or a full card is retried like an outage
                log.error("sink.error", extra={"sink": self.name, "error": f"{type(exc).__name__}: {exc}"}, exc_info=True)
                self._pause(stop, self._failed(f"{type(exc).__name__}: {exc}", None))
                continue
            self._succeeded()
            if settled == 0:
                self._wake.wait(self.idle_poll_s)
        log.info("sink.stopped", extra={"sink": self.name, "backlog": self._backlog(), "pushed": self.stats.pushed})

    def _pause(self, stop: threading.Event, delay_s: float) -> None:
        """Wait out a backoff (a sink that knows when its server is back may end it sooner)."""
        stop.wait(delay_s)

    def _failed(self, reason: str, retry_after_s: float | None) -> float:
        """Record a failure, log the transition to down once, and return how long to wait."""
        st = self.stats
        st.consecutive_failures += 1
        st.last_error = reason
        if retry_after_s is not None:
            delay = min(retry_after_s, self.retry_after_max_s)
        else:
            delay = backoff_delay(st.consecutive_failures, self.backoff_initial_s, self.backoff_max_s, self._rng)
        if st.down_since is None:
            st.down_since = datetime.now(timezone.utc)
            log.warning("sink.down", extra={"sink": self.name, "reason": reason, "backlog": self._backlog()})
            self._save_state({f"{self.name}.down_since": st.down_since.isoformat(), f"{self.name}.last_error": reason})
            self._saved_error = reason
        else:
            log.debug(
                "sink.retry",
                extra={"sink": self.name, "reason": reason, "failures": st.consecutive_failures, "wait_s": round(delay, 3)},
            )
            if reason != self._saved_error:  # the card sees a new reason, not every retry
                self._save_state({f"{self.name}.last_error": reason})
                self._saved_error = reason
        return delay

    def _succeeded(self) -> None:
        st = self.stats
        if st.down_since is not None:
            down_for = (datetime.now(timezone.utc) - st.down_since).total_seconds()
            log.info(
                "sink.recovered",
                extra={
                    "sink": self.name,
                    "down_s": round(down_for, 1),
                    "failures": st.consecutive_failures,
                    "backlog": self._backlog(),
                },
            )
            self._save_state({f"{self.name}.down_since": ""})
        st.down_since = None
        st.consecutive_failures = 0

    def _backlog(self) -> int | str:
        try:
            return self.store.outbox_depth(self.name)
        except Exception as exc:  # the log line must not be what kills the loop
            return f"unknown ({type(exc).__name__})"

    def _save_state(self, values: dict[str, str]) -> None:
        try:
            for key, value in values.items():
                self.store.set_state(key, value)
        except Exception as exc:
            log.warning("sink.state_not_saved", extra={"sink": self.name, "error": str(exc)})

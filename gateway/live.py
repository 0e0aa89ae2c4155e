"""The daemon side of the live feed: one small JSON snapshot per reading to local subscribers.

The web service (its own process: the daemon must not carry FastAPI) needs the running quarter-hour
within a fraction of a second of each telegram. The daemon writes newline-delimited JSON to every
client of a Unix domain socket in its runtime dir (``live.sock``):

- ``{"type": "hello", "version": 1, "pid": ...}`` first, then the latest ``reading`` of each meter;
- ``{"type": "reading", "meter_id", "time", "received", "import_w", "export_w", "import_wh_total",
  "export_wh_total", "demand_w", "month_peak_w", "month_peak_time", "tariff", "source",
  "quarter_hour": {"start", "elapsed_s", "import_wh", "export_wh", "projected_demand_w"},
  "role", "serial", "import_by_tariff", "export_by_tariff", "phases": [{"phase", "import_w",
  "export_w", "voltage_v", "current_a"}], "submeters": [{"channel", "kind", "value", "unit", "time"}]}``
  per reading (``time`` is the meter's clock, ``received`` the Pi's wall clock when the reading was
  fed; ``submeters`` are each MBus channel's last reading its plausibility gate accepted
  (gateway/submeter_plausibility.py), never a refused or held value; ``role`` is ``grid``,
  ``production`` or ``consumption`` as the source's configuration says, ``serial`` the meter's
  stable identity or null; registers per tariff in Wh, null when unknown);
- ``{"type": "quarter_hour", "meter_id", "start", "end", "import_wh", "export_wh", "quality",
  "flags"}`` for each closed quarter-hour, once it is committed to the local store.
- with a community uplink, ``{"type": "operation", "received", "totals": {...}}`` with the
  operation's live totals and signal each time the community server sends them (the latest is also
  sent first to a new subscriber), and ``{"type": "allocation", "operation", "start", "received_wh",
  "injection_shared_wh"}`` once the server's share of a quarter-hour is committed to the store. They
  come back on the gateway's one connection to the community broker; and ``{"type": "alerts",
  "received", "alerts": [{"id", "kind", "message", "start", "until"}], "last_result"}`` with the
  operation's collective alerts (active and scheduled; the latest is also sent first to a new subscriber).

Metering never waits for a subscriber: the reader thread only encodes the line and appends it to a
queue; one publisher thread writes to non-blocking sockets and keeps at most ``max_backlog_bytes`` per
subscriber that has not read yet. A subscriber beyond that is dropped (counted and logged), never
waited for; it may reconnect and gets the latest state again.

Only the standard library: the daemon's memory budget is tight.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from gateway.logs import get_logger
from gateway.model import QuarterHour, Reading, utc_iso

log = get_logger("quartier.gateway.live")

PROTOCOL_VERSION = 1
SOCKET_NAME = "live.sock"
_MAX_UNIX_PATH = 107  # sun_path holds 108 bytes including the terminating NUL


@dataclass
class LiveStats:
    published: int = 0  # messages handed to the publisher
    subscribers: int = 0  # connected right now
    connections: int = 0  # ever accepted
    dropped_slow: int = 0  # subscribers dropped because they did not keep up
    queue_overflow: int = 0  # messages lost because the publisher thread itself fell behind


class _Subscriber:
    __slots__ = ("sock", "out", "peer")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.out = bytearray()
        self.peer = peer


class LivePublisher:
    """Newline-delimited JSON over a Unix socket to any number of local subscribers."""

    def __init__(self, path: str | os.PathLike[str], *, max_backlog_bytes: int = 256 * 1024, queue_len: int = 2000) -> None:
        self.path = Path(path)
        self.max_backlog_bytes = max_backlog_bytes
        self.stats = LiveStats()
        self._queue: deque[tuple[str | None, bytes]] = deque(maxlen=queue_len)
        self._latest: dict[str, bytes] = {}  # meter id -> its latest reading line (for new subscribers)
        self._subs: dict[int, _Subscriber] = {}
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._hello = (json.dumps({"type": "hello", "version": PROTOCOL_VERSION, "pid": os.getpid()}) + "\n").encode()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket and start the publisher thread. Raises ``OSError`` when it cannot bind."""
        if len(os.fsencode(self.path)) > _MAX_UNIX_PATH:
            raise OSError(f"socket path too long for a Unix socket ({len(str(self.path))} > {_MAX_UNIX_PATH} bytes): {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # left over by a daemon that was killed
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            os.chmod(self.path, 0o660)
            listener.listen(16)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="live-publisher", daemon=True)
        self._thread.start()
        log.info("live.listening", extra={"path": str(self.path)})

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._wake()
        self._thread.join(timeout=5)
        self._thread = None
        for sub in list(self._subs.values()):
            sub.sock.close()
        self._subs.clear()
        self.stats.subscribers = 0
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.path.unlink(missing_ok=True)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- publishing (any thread, never blocks) ---------------------------------------------------

    def publish(self, message: dict, *, latest_for: str | None = None) -> None:
        """Queue one message for every subscriber; ``latest_for`` (a meter id) also keeps it as that
        meter's latest state, sent first to subscribers that connect later."""
        line = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        if len(self._queue) == self._queue.maxlen:
            self.stats.queue_overflow += 1
        self._queue.append((latest_for, line))
        self.stats.published += 1
        self._wake()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass  # a wake-up is already pending (or we are stopping)

    # -- the publisher thread --------------------------------------------------------------------

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        assert self._listener is not None
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, events in sel.select(timeout=1.0):
                    if key.data == "accept":
                        self._accept(sel)
                    elif key.data == "wake":
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                    else:
                        sub = key.data
                        if events & selectors.EVENT_READ and not self._readable(sub):
                            self._drop(sel, sub, "closed")
                            continue
                        if events & selectors.EVENT_WRITE:
                            self._flush(sel, sub)
                self._drain(sel)
        except Exception:
            log.exception("live.publisher_failed")
        finally:
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            sub = _Subscriber(conn, f"fd{conn.fileno()}")
            self._subs[conn.fileno()] = sub
            sel.register(conn, selectors.EVENT_READ, sub)
            self.stats.connections += 1
            self.stats.subscribers = len(self._subs)
            log.info("live.subscriber_connected", extra={"subscriber": sub.peer, "subscribers": len(self._subs)})
            sub.out += self._hello
            for line in self._latest.values():
                sub.out += line
            self._flush(sel, sub)

    def _readable(self, sub: _Subscriber) -> bool:
        """Subscribers send nothing; readable means closed (or junk, ignored). False when closed."""
        try:
            return bool(sub.sock.recv(4096))
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False

    def _drain(self, sel: selectors.BaseSelector) -> None:
        while self._queue:
            try:
                latest_for, line = self._queue.popleft()
            except IndexError:
                break
            if latest_for is not None:
                self._latest[latest_for] = line
            for sub in list(self._subs.values()):
                sub.out += line
                if len(sub.out) > self.max_backlog_bytes:
                    self.stats.dropped_slow += 1
                    self._drop(sel, sub, "too_slow")
                    continue
                self._flush(sel, sub)

    def _flush(self, sel: selectors.BaseSelector, sub: _Subscriber) -> None:
        if sub.sock.fileno() not in self._subs:
            return
        try:
            while sub.out:
                n = sub.sock.send(sub.out)
                del sub.out[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(sel, sub, "closed")
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if sub.out else 0)
        if sel.get_key(sub.sock).events != want:
            sel.modify(sub.sock, want, sub)

    def _drop(self, sel: selectors.BaseSelector, sub: _Subscriber, why: str) -> None:
        fd = sub.sock.fileno()
        if fd < 0 or fd not in self._subs:
            return
        del self._subs[fd]
        self.stats.subscribers = len(self._subs)
        try:
            sel.unregister(sub.sock)
        except (KeyError, ValueError):
            pass
        sub.sock.close()
        level = logging.WARNING if why == "too_slow" else logging.INFO
        log.log(level, "live.subscriber_dropped",
                extra={"subscriber": sub.peer, "reason": why, "backlog_bytes": len(sub.out), "subscribers": len(self._subs)})


# -- the messages ----------------------------------------------------------------------------------


def reading_message(reading: Reading, live, received: float, role: str = "grid", serial: str | None = None) -> dict:
    """The ``reading`` snapshot: the reading and the running quarter-hour (a ``LiveQuarter``) so far."""
    msg: dict = {
        "type": "reading",
        "meter_id": reading.meter_id,
        "time": utc_iso(reading.time),
        "received": round(received, 3),
        "import_w": reading.import_w,
        "export_w": reading.export_w,
        "import_wh_total": reading.import_total_wh,
        "export_wh_total": reading.export_total_wh,
        "demand_w": reading.demand_w,
        "month_peak_w": reading.month_peak_w,
        "month_peak_time": utc_iso(reading.month_peak_time),
        "tariff": reading.tariff,
        "source": reading.source,
        "clock": reading.clock.value,
        "quarter_hour": None,
        "role": role,
        "serial": serial,
        "import_by_tariff": dict(reading.import_wh),
        "export_by_tariff": dict(reading.export_wh),
        "phases": [{"phase": p.phase, "import_w": p.import_w, "export_w": p.export_w, "voltage_v": p.voltage_v,
                    "current_a": p.current_a} for p in reading.phases],
        "submeters": [{"channel": m.channel, "kind": m.kind, "value": m.value, "unit": m.unit, "time": utc_iso(m.time)}
                      for m in reading.submeters],
    }
    if live is not None:
        demand = live.projected_demand_w()
        msg["quarter_hour"] = {
            "start": utc_iso(live.start),
            "elapsed_s": round(live.elapsed_s, 3),
            "import_wh": live.import_wh,
            "export_wh": live.export_wh,
            "projected_demand_w": None if demand is None else round(demand, 1),
        }
    return msg


def quarter_hour_message(qh: QuarterHour) -> dict:
    return {
        "type": "quarter_hour",
        "meter_id": qh.meter_id,
        "start": utc_iso(qh.start),
        "end": utc_iso(qh.end),
        "import_wh": qh.import_wh,
        "export_wh": qh.export_wh,
        "quality": qh.quality.value,
        "flags": list(qh.flags),
    }


OPERATION_KEY = "operation"  # the latest totals are kept under this key for late subscribers


def operation_message(totals, received: float | None = None) -> dict:
    """``operation``: the sharing operation's live totals and signal as the community server sent
    them (a :class:`gateway.wire.TotalsMsg`), and when this gateway received them."""
    return {"type": "operation", "received": round(time.time() if received is None else received, 3),
            "totals": totals.model_dump(mode="json")}


def allocation_message(alloc) -> dict:
    """``allocation``: the community server allocated one of this member's quarter-hours (an
    :class:`gateway.wire.AllocationMsg`), committed to the store before it is sent."""
    return {"type": "allocation", "operation": alloc.operation, "start": utc_iso(alloc.start),
            "received_wh": alloc.received_wh, "injection_shared_wh": alloc.injection_shared_wh}


ALERTS_KEY = "alerts"  # the latest collective alerts, kept for late subscribers


def alerts_message(alerts, received: float | None = None) -> dict:
    """``alerts``: the operation's collective alerts as the community server sent them (a
    :class:`gateway.wire.AlertsMsg`); the web service decides which one is active on its clock."""
    body = alerts.model_dump(mode="json")
    return {"type": "alerts", "received": round(time.time() if received is None else received, 3),
            "operation": body["operation"], "alerts": body["alerts"], "last_result": body.get("last_result")}

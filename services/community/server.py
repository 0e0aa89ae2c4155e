"""The community server process: MQTT ingest, per-operation allocation, live totals, central store.

Threads: paho's network thread only enqueues messages; one worker drains the queue in batches (one
SQLite transaction per batch, so 1,000 quarter-hours closing together cost one commit) and allocates
every quarter-hour that became complete; a ticker allocates quarter-hours whose deadline passed (with
the missing members estimated), publishes each operation's live totals + signal, and a pusher writes
allocation rows to the central InfluxDB v2 endpoint (tags operation + member; a re-run is a new
revision one second later in the quarter-hour, never an overwrite: services/community/central.py).

Nothing that arrives is trusted (services/community/admission.py): every figure is checked before it
is stored, a refused one goes to the ledger's dead letters with its reason; every MQTT callback, every
quarter-hour's allocation and every operation's totals fail alone (logged and counted), and the
network loop is supervised: restarted if it dies, reported by :meth:`CommunityServer.health`.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from gateway.logs import get_logger
from gateway.model import QUARTER
from services.community import alerts as alert_rules
from services.community.alert_book import AlertBook
from services.community.admission import (
    Limits,
    Refusal,
    Refused,
    check_live,
    check_quarter_hour,
    screen_live,
    screen_quarter_hour,
)
from services.community.ledger import DeadLetter, Incoming, Ledger
from services.community.live_totals import operation_totals
from services.community.roster import (
    QuarterHourResult,
    Roster,
    allocate_operation,
    fill_missing,
)
from gateway.wire import connect_async
from gateway.wire import (
    MAX_ALERTS,
    AlertNotice,
    AlertResult,
    AlertsMsg,
    AllocationMsg,
    LiveMsg,
    QuarterHourMsg,
    ResendMsg,
    WireError,
    decode,
    ingest_filters,
    meter_topic,
    operation_topic,
    parse_meter_topic,
)
from services.signal import SignalTracker

log = get_logger("quartier.community.server")


def _json(payload: bytes) -> object:
    """The payload as JSON (NaN and Infinity included, as Python reads them), or None."""
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        return None


@dataclass
class ServerStats:
    received: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: {"qh": 0, "live": 0, "status": 0})
    rejected: int = 0  # every refused message: malformed, unknown meter, wrong operation, implausible
    refused: dict[str, int] = field(default_factory=dict)  # by reason (admission.Refusal)
    callback_errors: dict[str, int] = field(default_factory=dict)  # exceptions caught in MQTT callbacks
    allocation_errors: int = 0  # quarter-hours whose allocation failed (each retried by the ticker)
    totals_errors: int = 0  # operations whose live totals failed in a round
    loop_restarts: int = 0  # the MQTT network loop died and was started again
    disconnects: int = 0  # connections to the broker lost (a takeover of our client id shows here)
    last_disconnect: str | None = None
    duplicates: int = 0
    allocations: int = 0  # quarter-hour allocations published (re-runs included)
    reruns: int = 0
    resend_requests: int = 0  # quarter-hours asked of a node again (gaps: see request_resends)
    estimated_runs: int = 0
    pushed_rows: int = 0
    push_error: str | None = None
    last_latency_s: float | None = None  # last member's quarter-hour in -> allocation published
    latencies_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class BrokerLink:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    client_id: str = "quartier-community"
    # a persistent MQTT v5 session: while the server is down (a restart, a crash) the broker queues the
    # nodes' QoS 1 quarter-hours for it, and they are acknowledged only once in the ledger. 0: clean.
    session_expiry_s: int = 7 * 86400


class CommunityServer:
    def __init__(
        self,
        roster: Roster,
        ledger: Ledger,
        broker: BrokerLink,
        *,
        deadline_s: float = 300.0,
        totals_interval_s: float = 2.0,
        live_stale_s: float = 30.0,
        share_group: str | None = None,
        influx: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        meter_clock: Callable[[], float] | None = None,
        on_allocated: Callable[[QuarterHourResult], None] | None = None,
        limits: Limits | None = None,
        reloader: Any = None,
    ) -> None:
        """``reloader``: a :class:`~services.community.reload.CommunityFileWatcher` (or anything with
        ``poll() -> Roster | None``) the ticker asks every few seconds for an edited community file.
        ``meter_clock``: the meters' time, on which alert windows are judged (the nodes judge them on
        their meters' time); default ``clock``. Only the demo's fast simulated meters need another."""
        import paho.mqtt.client as mqtt

        self.roster = roster
        self.ledger = ledger
        self.deadline_s = deadline_s
        self.totals_interval_s = totals_interval_s
        self.live_stale_s = live_stale_s
        self.clock = clock
        self.meter_clock = meter_clock or clock
        self.on_allocated = on_allocated
        self.limits = limits or Limits()
        self.reloader = reloader
        self.stats = ServerStats()
        self.live: dict[str, dict[str, tuple[LiveMsg, float]]] = {op: {} for op in roster.operations}
        self.trackers = {op: SignalTracker() for op in roster.operations}
        self._index_roster()
        self.last_totals: dict[str, Any] = {}
        self.alerts = AlertBook(ledger.path)  # collective alerts, in the ledger's file
        self._alerts_published: dict[str, tuple[str, ...]] = {}  # operation -> ids in its retained message
        self._alerts_lock = threading.Lock()
        self._q: queue.Queue[tuple[str, bytes, float, int, int]] = queue.Queue()
        self._asked: set[tuple[str, str, datetime]] = set()  # (operation, member, start) already asked again
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connected = threading.Event()
        self._beats: dict[str, float] = {}  # thread -> time.monotonic() of its last round (health)
        self._failing: set[tuple[str, datetime]] = set()  # quarter-hours whose allocation failed (logged once)
        self._net: threading.Thread | None = None
        self._filters = ingest_filters(roster.community, sorted(roster.operations), share_group)
        self._influx_cfg = influx
        # QoS 1 messages are acknowledged by hand, after the batch that holds them is committed: a
        # crash before the commit means a redelivery, never a quarter-hour acked and lost
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=broker.client_id, protocol=mqtt.MQTTv5,
                        manual_ack=True)
        if broker.username:
            c.username_pw_set(broker.username, broker.password)
        if broker.ca_file:
            c.tls_set(ca_certs=broker.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 30)
        # every callback is guarded (_guard): an exception in one is logged and counted, never the end of
        # paho's network loop; suppress_exceptions is paho's own net for whatever remains
        c.suppress_exceptions = True
        c.on_connect = self._guard("connect", self._on_connect)
        c.on_disconnect = self._guard("disconnect", self._on_disconnect)
        c.on_message = self._guard("message", self._on_message)
        self.client = c
        self.broker = broker

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        b = self.broker
        connect_async(self.client, b.host, b.port, keepalive=30, session_expiry_s=b.session_expiry_s)
        self._net = threading.Thread(target=self._network, name="community-mqtt", daemon=True)
        self._net.start()
        for name, target in (("worker", self._work), ("ticker", self._tick), ("pusher", self._push_loop)):
            if name == "pusher" and not self._influx_cfg:
                continue
            t = threading.Thread(target=target, name=f"community-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self.client.disconnect()
        if self._net is not None:
            self._net.join(10)
        self.alerts.close()

    def health(self, now_monotonic: float | None = None, stale_s: float = 30.0) -> dict[str, Any]:
        """Whether the process still does its job: the network loop runs and the worker and ticker
        went round lately. The operator's ``/health`` and the systemd watchdog read this, so a
        process whose threads died is restarted rather than left up, green and deaf."""
        now = time.monotonic() if now_monotonic is None else now_monotonic
        threads = {"mqtt": self._net is not None and self._net.is_alive()}
        for t in self._threads:
            name = t.name.removeprefix("community-")
            if name == "pusher":
                continue
            beat = self._beats.get(name)
            threads[name] = t.is_alive() and beat is not None and now - beat <= stale_s
        return {"ok": all(threads.values()) and bool(threads), "threads": threads,
                "connected": self._connected.is_set(), "loop_restarts": self.stats.loop_restarts,
                "callback_errors": sum(self.stats.callback_errors.values())}

    # -- MQTT ------------------------------------------------------------------------------------

    def _network(self) -> None:
        """paho's network loop, supervised: if it ever raises, log, count and run it again."""
        while not self._stop.is_set():
            try:
                self.client.loop_forever(retry_first_connection=True)
            except Exception as exc:
                self.stats.loop_restarts += 1
                self._connected.clear()
                log.error("community.network_loop_died", extra={"error": repr(exc)}, exc_info=True)
            if not self._stop.wait(1.0):
                try:  # loop_forever returned or died: connect again (paho left the socket as it was)
                    self.client.reconnect()
                except Exception as exc:  # the loop retries by itself
                    log.warning("community.reconnect_failed", extra={"error": repr(exc)})

    def _guard(self, name: str, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` as a paho callback that never raises into paho's network thread."""

        def guarded(*args: Any, **kwargs: Any) -> None:
            try:
                fn(*args, **kwargs)
            except Exception as exc:
                self.stats.callback_errors[name] = self.stats.callback_errors.get(name, 0) + 1
                log.error("community.callback_failed", extra={"callback": name, "error": repr(exc)}, exc_info=True)

        return guarded

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any = None, props: Any = None) -> None:
        self._connected.clear()
        if self._stop.is_set():
            return
        self.stats.disconnects += 1
        self.stats.last_disconnect = str(rc)
        log.warning("community.disconnected", extra={"reason": str(rc)})

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.error("community.broker_refused", extra={"reason": str(rc)})
            return
        client.subscribe([(f, 1) for f in self._filters])
        self._connected.set()
        self._alerts_published.clear()  # the ticker publishes every operation's alerts again
        resumed = bool(getattr(flags, "session_present", False))
        log.info("community.connected", extra={"filters": len(self._filters), "session_present": resumed})
        if not resumed:
            # the broker kept nothing for us (first start, session expired, broker lost its store):
            # whatever the nodes published meanwhile is gone from the broker, not from their stores
            self.request_resends()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._q.put((msg.topic, msg.payload, self.clock(), msg.mid, msg.qos))

    # -- worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            self._beats["worker"] = time.monotonic()
            try:
                first = self._q.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < 5000:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                self.handle_batch([m[:3] for m in batch])
            except Exception as exc:  # never die: log; not acknowledged, so the broker delivers it again
                log.error("community.batch_failed", extra={"error": repr(exc), "messages": len(batch)}, exc_info=True)
                continue
            for *_, mid, qos in batch:  # in the order received, as MQTT wants
                if qos > 0:
                    self.client.ack(mid, qos)

    def handle_batch(self, batch: list[tuple[str, bytes, float]]) -> None:
        """Check, store and allocate a batch of messages (``received`` is the server's clock).

        Each message is judged alone: a refused one is filed as a dead letter with its reason, the
        others go on; each touched quarter-hour is allocated alone (a failure leaves it pending for
        the ticker, and the next quarter-hour is allocated all the same)."""
        rows: list[Incoming] = []
        dead: list[DeadLetter] = []
        last_in: dict[tuple[str, datetime], float] = {}
        for topic, payload, received in batch:
            self.stats.received += 1
            try:
                row = self._admit(topic, payload, received)
            except Exception as exc:  # a bug meeting an odd payload: that message alone is refused
                log.error("community.admit_failed", extra={"topic": topic, "error": repr(exc)}, exc_info=True)
                row = self._dead(topic, payload, received, Refused(Refusal.MALFORMED, f"could not be read: {exc!r}"[:300]))
            if isinstance(row, DeadLetter):
                dead.append(row)
            elif row is not None:
                rows.append(row)
                key = (row.operation, row.start)
                last_in[key] = max(last_in.get(key, 0.0), received)
        self.ledger.add_dead_letters(dead)
        if not rows:
            return
        changed = self.ledger.add_quarter_hours(rows)
        self.stats.duplicates += len(rows) - len(changed)
        # an observer's figure (the cabin meter) never changes an allocation: only members' rows count.
        # A duplicate counts too: the broker redelivers what a killed server stored but never
        # acknowledged, and if it died before allocating, only the redelivery says "complete now"
        # (else the quarter-hour waits for the deadline although every figure is in)
        new = {(r.operation, r.start) for r in changed}
        touched = sorted({(r.operation, r.start) for r in rows if r.member in self._member_ids[r.operation]})
        for op, start in touched:
            try:
                already = self.ledger.is_allocated(op, start)  # late or corrected data: re-run
                if already and (op, start) not in new:
                    continue  # the same figures again: the allocation stands
                figures = self.ledger.figures(op, start)
                # complete when every member active at that quarter-hour is in (membership over time)
                if already or all(s.member in figures for s in self.roster.members_at(op, start)):
                    self.allocate(op, start, figures, rerun=already, last_in=last_in.get((op, start)))
            except Exception as exc:  # stays pending: the ticker tries again at the deadline
                self._allocation_failed(op, start, exc)

    def _admit(self, topic: str, payload: bytes, received: float) -> Incoming | DeadLetter | None:
        """One message: a quarter-hour row to store, a dead letter, or None (live and status are
        applied here)."""
        try:
            _, op, meter, kind = parse_meter_topic(topic)
        except WireError as exc:
            return self._dead(topic, payload, received, Refused(Refusal.MALFORMED, str(exc)))
        self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
        seat = self.roster.seat(op, meter)
        if seat is None:
            return self._dead(topic, payload, received, Refused(Refusal.UNKNOWN_METER, f"unknown meter {meter} in operation {op}"))
        try:
            if kind in ("qh", "live"):  # the figures first, so that a refusal names what is wrong with them
                raw = _json(payload)
                bad = (screen_quarter_hour(raw, received, seat.max_power_w, self.limits) if kind == "qh"
                       else screen_live(raw, seat.max_power_w))
                if bad is not None:
                    return self._dead(topic, payload, received, bad, seat.member)
            if kind == "qh":
                m = decode(QuarterHourMsg, payload)
                if m.meter != meter or m.operation != op:  # the topic is what the broker authenticated
                    return self._dead(topic, payload, received, Refused(Refusal.IDENTITY, "payload meter/operation differ from the topic"), seat.member)
                bad = check_quarter_hour(m.start, m.import_wh, m.export_wh, received, seat.max_power_w, self.limits)
                if bad is not None:
                    return self._dead(topic, payload, received, bad, seat.member)
                return Incoming(op, seat.member, m.start, m.import_wh, m.export_wh, m.quality, received)
            if kind == "live":
                lm = decode(LiveMsg, payload)
                if lm.meter != meter or lm.operation != op:
                    return self._dead(topic, payload, received, Refused(Refusal.IDENTITY, "payload meter/operation differ from the topic"), seat.member)
                bad = check_live(lm.import_w, lm.export_w, lm.qh_import_wh, lm.qh_export_wh, seat.max_power_w)
                if bad is not None:
                    return self._dead(topic, payload, received, bad, seat.member)
                self.live[op][seat.member] = (lm, received)
            elif kind == "status":
                self.ledger.set_status(op, seat.member, payload.decode("utf-8", "replace")[:16], received)
            else:  # alloc/resend are the server's own topics: a node never publishes there
                return self._dead(topic, payload, received, Refused(Refusal.MALFORMED, f"{kind}: not a node's topic"), seat.member)
        except WireError as exc:
            return self._dead(topic, payload, received, Refused(Refusal.MALFORMED, str(exc)), seat.member)
        return None

    def _dead(self, topic: str, payload: bytes, received: float, why: Refused, member: str | None = None) -> DeadLetter:
        parts = topic.split("/")
        op, meter, kind = (parts[3], parts[5], parts[6]) if len(parts) == 7 else ("", "", "")
        self.stats.rejected += 1
        self.stats.refused[why.reason.value] = self.stats.refused.get(why.reason.value, 0) + 1
        log.warning("community.refused", extra={"topic": topic, "operation": op, "member": member, "meter": meter,
                                                "reason": why.reason.value, "detail": why.detail})
        return DeadLetter(op, member, meter, topic, kind, why.reason.value, why.detail, bytes(payload), received)

    def _allocation_failed(self, op: str, start: datetime, exc: Exception) -> None:
        self.stats.allocation_errors += 1
        first = (op, start) not in self._failing
        if len(self._failing) > 10_000:
            self._failing.clear()
        self._failing.add((op, start))
        # the first failure of a quarter-hour with its traceback; its retries at every tick are counted
        log.log(logging.ERROR if first else logging.DEBUG, "community.allocation_failed",
                extra={"operation": op, "start": start.isoformat(), "error": repr(exc)}, exc_info=first)

    # -- allocation ------------------------------------------------------------------------------

    def allocate(self, op: str, start: datetime, figures: dict | None = None, *, rerun: bool = False,
                 last_in: float | None = None) -> QuarterHourResult:
        """Allocate one quarter-hour (estimating absent members), store and publish it; with the
        members active at that quarter-hour, also when it is re-run long after (membership.py)."""
        seats = self.roster.members_at(op, start)
        have = figures if figures is not None else self.ledger.figures(op, start)
        have = {m: f for m, f in have.items() if m in self._member_ids[op]}
        missing = [s.member for s in seats if s.member not in have]
        last = self.ledger.last_known(op, start, missing) if missing else {}
        full = fill_missing(seats, have, last)
        res = allocate_operation(self.roster.operations[op], start, full)
        self.ledger.save_allocation(res)
        for s in seats:
            msg = AllocationMsg(
                operation=op, start=start, received_wh=res.received_wh.get(s.member, 0),
                injection_shared_wh=res.injection_shared_wh.get(s.member, 0), pool_wh=res.pool_wh,
                shared_wh=res.shared_wh, consumption_wh=res.total_consumption_wh, missing=len(res.estimated),
            )
            self.client.publish(meter_topic(self.roster.community, op, s.pseudonym, "alloc"), msg.to_bytes(), qos=1)
        self.stats.allocations += 1
        self.stats.reruns += int(rerun)
        self.stats.estimated_runs += int(bool(res.estimated))
        if last_in is not None:
            latency = self.clock() - last_in
            self.stats.last_latency_s = latency
            self.stats.latencies_s.append(latency)
        log.info("community.allocated", extra={"operation": op, "start": start.isoformat(), "rerun": rerun,
                                                "estimated": len(res.estimated), "pool_wh": res.pool_wh,
                                                "shared_wh": res.shared_wh})
        if self.on_allocated is not None:
            self.on_allocated(res)
        return res

    def allocate_overdue(self, now_s: float) -> int:
        """Allocate, with estimates, every quarter-hour still incomplete ``deadline_s`` after its first
        figure arrived.

        Why from the first arrival and not from the quarter-hour's end: after an outage every node
        drains its backlog at once, and estimating a member whose backlog is still in flight would
        send everyone a wrong share only to re-run it seconds later; and the server's clock, not the
        members' (a Pi has no RTC), is then the only one that counts. In steady operation the first
        figure arrives right after the quarter-hour ends, so both readings agree.
        """
        done = 0
        for op in self.roster.operations:
            try:
                pending = self.ledger.pending_starts(op, now_s - self.deadline_s + 1e-6)
            except Exception as exc:
                self._allocation_failed(op, datetime.fromtimestamp(0, timezone.utc), exc)
                continue
            for start in pending:  # one at a time: a failing quarter-hour never holds up the next
                try:
                    res = self.allocate(op, start)
                    done += 1
                    self._ask_online(op, start, res.estimated)
                except Exception as exc:
                    self._allocation_failed(op, start, exc)
        return done

    def _ask_online(self, op: str, start: datetime, missing: tuple[str, ...]) -> None:
        """A member estimated while it is online has the figure in its store (the broker dropped it,
        e.g. a full queue): ask it once to send that quarter-hour again; its arrival re-runs it."""
        if not missing:
            return
        presence = self.ledger.presence(op)
        by_member = {s.member: s for s in self.seats_by_op[op]}
        for member in missing:
            p = presence.get(member)
            if p and p[0] == "online" and (op, member, start) not in self._asked:
                if len(self._asked) > 100_000:  # bounded: a forgotten request only means asking twice
                    self._asked.clear()
                self._asked.add((op, member, start))
                self._resend(op, by_member[member].pseudonym, start, start + QUARTER)

    def request_resends(self) -> int:
        """Ask every member we have heard from for its quarter-hours since the last one we hold (QoS 1,
        so a node offline now gets it on its return); duplicates are collapsed on arrival."""
        sent = 0
        now_s = self.clock()
        # what we ask from lies in the window we accept: a ledger holding a start beyond it (written
        # before admission checks existed) must not make the request itself impossible
        oldest, newest = now_s - self.limits.max_age_s, now_s + self.limits.future_tolerance_s
        for op, seats in self.seats_by_op.items():
            presence = self.ledger.presence(op)
            for seat in seats:
                p = presence.get(seat.member)
                if p and p[2]:
                    since = min(max(float(p[2]) + QUARTER.total_seconds(), oldest), newest)
                    try:
                        self._resend(op, seat.pseudonym, datetime.fromtimestamp(since, timezone.utc), None)
                        sent += 1
                    except Exception as exc:
                        log.error("community.resend_failed", extra={"operation": op, "member": seat.member,
                                                                   "error": repr(exc)})
        if sent:
            log.info("community.resend_requested", extra={"members": sent})
        return sent

    def _resend(self, op: str, pseudonym: str, since: datetime, until: datetime | None) -> None:
        msg = ResendMsg(operation=op, since=since, until=until)
        self.client.publish(meter_topic(self.roster.community, op, pseudonym, "resend"), msg.to_bytes(), qos=1)
        self.stats.resend_requests += 1

    # -- membership: the community file edited while running -----------------------------------------

    def _index_roster(self) -> None:
        """Per operation: every seat that reports (observers included) and the members among them."""
        ops = self.roster.operations
        self.seats_by_op = {op: self.roster.members_of(op) for op in ops}  # observers included
        self.allocated_by_op = {op: self.roster.allocated_of(op) for op in ops}  # members only
        self._member_ids = {op: {s.member for s in seats} for op, seats in self.allocated_by_op.items()}

    def reload_roster(self, new: Roster) -> bool:
        """Take a reloaded community file's members (joined, left, shares) without a restart. The
        roster is updated in place, so the operator API sees it too; refused (logged, False) when
        operations were added or removed."""
        try:
            self.roster.update_from(new)
        except ValueError as exc:
            log.error("community.reload_refused", extra={"error": str(exc)})
            return False
        self._index_roster()
        log.info("community.reloaded", extra={"operations": len(self.roster.operations),
                                               "seats": len(self.roster.by_operation or self.roster.seats)})
        return True

    def check_reload(self) -> bool:
        """Ask the reloader whether the community file changed; apply it if so."""
        if self.reloader is None:
            return False
        new = self.reloader.poll()
        return new is not None and self.reload_roster(new)

    # -- ticker: deadlines and live totals ---------------------------------------------------------

    def _tick(self) -> None:
        next_totals = 0.0
        next_deadline = 0.0
        next_alerts = 0.0
        while not self._stop.wait(0.2):
            self._beats["ticker"] = time.monotonic()
            now_s = self.clock()
            try:
                if now_s >= next_deadline:
                    next_deadline = now_s + 5.0
                    self.check_reload()
                    self.allocate_overdue(now_s)
            except Exception as exc:
                log.error("community.tick_failed", extra={"error": repr(exc)}, exc_info=True)
            try:
                if now_s >= next_alerts:
                    next_alerts = now_s + 5.0
                    for op in self.roster.operations:
                        self.publish_alerts(op, force=False)
            except Exception as exc:
                log.error("community.tick_failed", extra={"error": repr(exc)}, exc_info=True)
            try:
                if now_s >= next_totals:
                    next_totals = now_s + self.totals_interval_s
                    self.publish_totals(now_s)
            except Exception as exc:
                log.error("community.tick_failed", extra={"error": repr(exc)}, exc_info=True)

    def publish_totals(self, now_s: float) -> None:
        now = datetime.fromtimestamp(now_s, timezone.utc)
        for op in self.seats_by_op:
            try:
                seats = self.roster.members_at(op, now)  # members only: an observer is not in the totals; one operation's failure leaves the others' going
                msg = operation_totals(op, seats, self.live[op], now, now_s, self.live_stale_s, self.trackers[op])
                self.last_totals[op] = msg
                self.client.publish(operation_topic(self.roster.community, op), msg.to_bytes(), qos=0, retain=True)
            except Exception as exc:
                self.stats.totals_errors += 1
                log.error("community.totals_failed", extra={"operation": op, "error": repr(exc)}, exc_info=True)

    # -- collective alerts ---------------------------------------------------------------------------

    def raise_alert(self, op: str, *, kind: str, message: str, minutes: int,
                    start: datetime | None = None) -> alert_rules.AlertRecord:
        """Record an alert and publish the operation's alerts at once (``AlertInputError`` if refused)."""
        now = datetime.fromtimestamp(self.meter_clock(), timezone.utc)
        begin, until = alert_rules.check_request(start, minutes, now)
        rec = self.alerts.add(op, kind, message, begin, until, now)
        log.info("community.alert_raised", extra={"operation": op, "alert": rec.id, "kind": kind,
                                                  "start": begin.isoformat(), "until": until.isoformat()})
        self.publish_alerts(op)
        return rec

    def end_alert(self, op: str, alert_id: str | None = None) -> list[alert_rules.AlertRecord]:
        now = datetime.fromtimestamp(self.meter_clock(), timezone.utc)
        ended = self.alerts.end(op, now, alert_id)
        log.info("community.alert_ended", extra={"operation": op, "alerts": ",".join(r.id for r in ended)})
        self.publish_alerts(op)
        return ended

    def alert_effect(self, op: str, rec: alert_rules.AlertRecord, records: list[alert_rules.AlertRecord]) -> dict[str, object]:
        """The effect of one alert against its baseline (services/community/alerts.py)."""
        from zoneinfo import ZoneInfo

        tz = ZoneInfo(self.roster.operations[op].timezone)
        lo = alert_rules.shifted(alert_rules.floor_quarter(rec.start), alert_rules.BASELINE_WEEKS, tz)
        rows = self.alerts.imports(op, lo, rec.effective_until)
        members = [s.member for s in self.allocated_by_op[op]]
        observers = [s.member for s in self.seats_by_op[op] if s.observer]
        observer = alert_rules.members_series(rows, observers[:1]) if observers else None
        return alert_rules.effect(rec, alert_rules.members_series(rows, members), observer, tz, records)

    def publish_alerts(self, op: str, *, force: bool = True) -> bool:
        """Publish the operation's alerts (retained, QoS 1) when they changed or ``force``."""
        now = datetime.fromtimestamp(self.meter_clock(), timezone.utc)
        with self._alerts_lock:
            records = self.alerts.all(op)
            live = alert_rules.to_publish(records, now, MAX_ALERTS)
            ids = tuple(r.id for r in live)
            if not force and self._alerts_published.get(op) == ids:
                return False
            last = alert_rules.last_finished(records, now)
            result = None
            if last is not None:
                pct = self.alert_effect(op, last, records)["members_change_pct"]
                result = AlertResult(id=last.id, kind=last.kind, start=last.start, until=last.effective_until,
                                     members_change_pct=None if pct is None else max(-100.0, min(10_000.0, float(pct))))
            msg = AlertsMsg(operation=op, time=now, last_result=result, alerts=[
                AlertNotice(id=r.id, kind=r.kind, message=r.message, start=r.start, until=r.until) for r in live])  # type: ignore[arg-type]
            info = self.client.publish(operation_topic(self.roster.community, op, "alert"), msg.to_bytes(), qos=1, retain=True)
            if info.rc == 0:
                self._alerts_published[op] = ids
            return info.rc == 0

    # -- central store ---------------------------------------------------------------------------

    def _push_loop(self) -> None:
        from gateway.sinks.influx import load_influxdb_client

        cfg = self._influx_cfg or {}
        client_mod = load_influxdb_client()
        from influxdb_client.client.write_api import SYNCHRONOUS

        client = client_mod.InfluxDBClient(url=cfg["url"], token=cfg["token"], org=cfg["org"], timeout=10_000, retries=False)
        write = client.write_api(write_options=SYNCHRONOUS)
        measurement = cfg.get("measurement", "allocation")
        try:
            while not self._stop.wait(1.0):
                self.push_once(write, cfg, measurement, client_mod)
        finally:
            client.close()

    def push_once(self, write: Any, cfg: dict[str, str], measurement: str, client_mod: Any) -> int:
        """One round to the central store: the provisional allocation rows, then the grid operator's
        binding figures imported by ``quartier community reconcile`` (measurement
        ``<measurement>_binding``, see services/community/reconcile.py). Rows stay queued in the ledger
        until a write succeeds; the reconcile command may have pushed the binding ones already."""
        from services.community.central import allocation_lines
        from services.community.reconcile import push_binding

        def send(record: str) -> None:
            write.write(bucket=cfg["bucket"], org=cfg["org"], record=record, write_precision=client_mod.WritePrecision.S)

        done = 0
        try:
            rows = self.ledger.unpushed()
            if rows:
                send("\n".join(allocation_lines(measurement, rows)))  # a re-run is a new revision
                self.ledger.mark_pushed([(op, m, start, runs) for op, m, start, *_, runs in rows])
                done += len(rows)
            done += push_binding(self.ledger, send, measurement)
        except Exception as exc:  # network or server: keep the rows, try again next second
            self.stats.push_error = f"{type(exc).__name__}: {exc}"[:300]
            self.stats.pushed_rows += done
            return done
        self.stats.pushed_rows += done
        self.stats.push_error = None
        return done

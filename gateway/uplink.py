"""Community uplink: this node's closed quarter-hours and live summary to the community broker.

Why an :class:`~gateway.sinks.OutboxSink`: the outbox already gives at-least-once delivery across
crashes and outages. A batch is published with QoS 1 over one MQTT connection and its rows are acked
only once the broker has PUBACKed every message; on a lost link the rows stay and are re-sent in
order when it returns. A re-sent quarter-hour is harmless: the community server keys it on
(pseudonymous meter, start).

The same connection carries the live summary (QoS 0, every few seconds, dropped while offline: only
the latest matters), a retained ``online``/``offline`` status with a last will, and the subscriptions
to the operation's live totals + signal and to this member's allocation, which :class:`UplinkSink`
writes into the store. :func:`node_uplink` wires it as the daemon runs it: totals and allocations are
relayed to the web service over the daemon's live socket, so a gateway holds one connection to its
community, and the web service none.

Allocations are kept durably end to end. The daemon's connection is a persistent MQTT v5 session
(``clean_start`` off, ``SessionExpiryInterval`` = ``uplink.session_expiry_s``, a week by default) under
a stable client id, so the broker queues the QoS 1 allocations published while the node is offline
(a reboot, a lost link) and delivers them when it returns. Each one is acknowledged (PUBACK) only
once it is committed to the store: a power cut between the two means a redelivery, never a loss.

On the wire the meter is its pseudonym (given by provisioning, also the broker username); the EAN
never leaves the node. paho-mqtt is imported when an :class:`Uplink` is built.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from gateway.logs import get_logger
from gateway.model import QuarterHour
from gateway.sinks import OutboxSink, SinkUnavailable
from gateway.wire import connect_async
from gateway.wire import (
    AlertsMsg,
    AllocationMsg,
    LiveMsg,
    QuarterHourMsg,
    ResendMsg,
    TotalsMsg,
    WireError,
    check_segment,
    decode,
    meter_topic,
    operation_topic,
)

if TYPE_CHECKING:
    from gateway.store import Store

log = get_logger("quartier.gateway.uplink")

SINK_NAME = "uplink"
RESEND_HORIZON = timedelta(days=40)
MAX_SESSION_EXPIRY_S = 2**32 - 1  # MQTT v5: a four-byte integer (this value: never expires)


@dataclass(frozen=True)
class UplinkSettings:
    """Where and as whom this node talks to its community (``[uplink]`` in the config)."""

    host: str
    port: int
    community: str
    operation: str
    pseudonym: str  # this meter on the wire and the broker username
    password: str
    ca_file: str | None = None  # the community CA; None: plain TCP (tests and loopback only)
    meter_id: str | None = None  # the local meter this member is; None: every meter in the store
    client_id: str | None = None
    keepalive_s: int = 30
    live_interval_s: float = 5.0
    # how long the broker keeps this client's session (subscriptions + queued QoS 1 messages) after
    # a disconnect; 0: a clean session that ends with the connection
    session_expiry_s: int = 7 * 86400

    def __post_init__(self) -> None:
        if not 0 <= self.session_expiry_s <= MAX_SESSION_EXPIRY_S:
            raise ValueError(f"uplink.session_expiry_s must be 0..{MAX_SESSION_EXPIRY_S}, got {self.session_expiry_s}")
        check_segment(self.community, "uplink.community")
        check_segment(self.operation, "uplink.operation")
        check_segment(self.pseudonym, "uplink.pseudonym")


def quarter_hour_msg(qh: QuarterHour, settings: UplinkSettings) -> QuarterHourMsg:
    return QuarterHourMsg(
        meter=settings.pseudonym,
        operation=settings.operation,
        start=qh.start,
        import_wh=int(qh.import_wh),
        export_wh=int(qh.export_wh),
        quality=str(qh.quality),
    )


class Uplink:
    """One MQTT v5 connection to the community broker (reconnecting by itself in paho's thread).

    It subscribes to the operation's totals when ``on_totals`` is set and to this member's
    allocation when an allocation handler is (``on_allocation`` or :meth:`set_allocation_handler`).
    QoS 1 messages are acknowledged by hand (paho's ``manual_ack``): after the handler returned, or
    at once for a malformed one (a redelivery would not mend it); never when the handler failed
    otherwise (the store could not write), so the broker delivers it again after the next reconnect.
    """

    def __init__(
        self,
        settings: UplinkSettings,
        *,
        on_totals: Callable[[TotalsMsg], None] | None = None,
        on_allocation: Callable[[AllocationMsg], None] | None = None,
        on_alerts: Callable[[AlertsMsg], None] | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.settings = settings
        self.on_totals = on_totals
        self.on_alerts = on_alerts
        self.on_allocation = on_allocation
        self.on_resend: Callable[[ResendMsg], None] | None = None  # set by UplinkSink: it owns the outbox
        self.bad_messages = 0  # malformed payloads on our topics, dropped (each logged with its topic)
        self.session_present: bool | None = None  # the broker resumed our session at the last connect
        self._connected = threading.Event()
        self._subscribe_lock = threading.Lock()
        self._started = False
        s = settings
        self.status_topic = meter_topic(s.community, s.operation, s.pseudonym, "status")
        self.totals_topic = operation_topic(s.community, s.operation)
        self.alert_topic = operation_topic(s.community, s.operation, "alert")
        self.alloc_topic = meter_topic(s.community, s.operation, s.pseudonym, "alloc")
        self.resend_topic = meter_topic(s.community, s.operation, s.pseudonym, "resend")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id or f"gw-{s.pseudonym}",
                        protocol=mqtt.MQTTv5, manual_ack=True)
        c.username_pw_set(s.pseudonym, s.password)
        if s.ca_file:
            c.tls_set(ca_certs=s.ca_file, cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.will_set(self.status_topic, b"offline", qos=1, retain=True)
        # paho doubles the delay from min to max without jitter: after a broker restart a whole fleet
        # would retry in the same instants (1,000 TLS handshakes at once, measured by bench/fleet.py);
        # a per-gateway spread of both bounds desynchronises them
        rnd = random.Random()
        c.reconnect_delay_set(rnd.uniform(0.5, 2.0), rnd.uniform(30.0, 60.0))
        c.max_inflight_messages_set(100)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c
        self._mqtt = mqtt

    def start(self) -> None:
        """Connect in the background; paho reconnects with backoff after every loss. Idempotent.

        With ``session_expiry_s`` > 0 every connect (the first one too: a restarted daemon resumes the
        session its predecessor left) asks to resume the session and keep it that long after a loss.
        """
        if self._started:
            return
        self._started = True
        s = self.settings
        connect_async(self.client, s.host, s.port, keepalive=s.keepalive_s, session_expiry_s=s.session_expiry_s)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly (the session, if persistent, stays on the broker until it expires)."""
        if not self._started:
            return
        self._started = False
        if self._connected.is_set() and self.status_topic:
            self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
        self.client.disconnect()
        try:
            self.client.loop_stop()
        except AttributeError:  # paho 2.x race when its thread ends on its own (eclipse/paho.mqtt.python#872)
            pass

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def set_allocation_handler(self, handler: Callable[[AllocationMsg], None]) -> None:
        """Hand this member's allocations to ``handler``; subscribes now if already connected."""
        with self._subscribe_lock:
            self.on_allocation = handler
            if self._connected.is_set():
                self.client.subscribe(self.alloc_topic, qos=1)

    def set_resend_handler(self, handler: Callable[[ResendMsg], None]) -> None:
        """Hand the server's requests to publish quarter-hours again to ``handler``."""
        with self._subscribe_lock:
            self.on_resend = handler
            if self._connected.is_set():
                self.client.subscribe(self.resend_topic, qos=1)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.warning("uplink.refused", extra={"reason": str(rc), "host": self.settings.host})
            return
        with self._subscribe_lock:
            topics = []
            if self.on_totals is not None:
                topics.append((self.totals_topic, 0))
            if self.on_alerts is not None:  # QoS 1 + retained: an alert raised while we were away arrives now
                topics.append((self.alert_topic, 1))
            if self.on_allocation is not None:
                topics.append((self.alloc_topic, 1))
            if self.on_resend is not None:
                topics.append((self.resend_topic, 1))
            if topics:  # again on a resumed session too: idempotent, and it mends a lost subscription
                client.subscribe(topics)
            if self.status_topic:
                client.publish(self.status_topic, b"online", qos=1, retain=True)
            self.session_present = bool(getattr(flags, "session_present", False))
            self._connected.set()
        log.info("uplink.connected", extra={"host": self.settings.host, "port": self.settings.port,
                                            "session_present": self.session_present,
                                            "session_expiry_s": self.settings.session_expiry_s})

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if self._connected.is_set():
            if self._started:  # lost; after stop() it is what we asked for
                log.warning("uplink.disconnected", extra={"reason": str(rc)})
            else:
                log.info("uplink.closed", extra={"host": self.settings.host})
        self._connected.clear()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        ack = True
        try:
            if msg.topic == self.totals_topic and self.on_totals is not None:
                self.on_totals(decode(TotalsMsg, msg.payload))  # type: ignore[arg-type]
            elif msg.topic == self.alert_topic and self.on_alerts is not None:
                alerts = decode(AlertsMsg, msg.payload)
                if alerts.operation != self.settings.operation:  # type: ignore[attr-defined]
                    raise WireError(f"AlertsMsg: operation {alerts.operation!r} on the alert topic of "  # type: ignore[attr-defined]
                                    f"{self.settings.operation!r}")
                self.on_alerts(alerts)  # type: ignore[arg-type]
            elif msg.topic == self.resend_topic and self.on_resend is not None:
                self.on_resend(decode(ResendMsg, msg.payload))  # type: ignore[arg-type]
            elif msg.topic == self.alloc_topic:
                handler = self.on_allocation
                if handler is None:  # a resumed session delivers before a handler is set: keep it queued
                    ack = False
                    log.info("uplink.allocation_deferred", extra={"topic": msg.topic, "mid": msg.mid})
                else:
                    handler(decode(AllocationMsg, msg.payload))  # type: ignore[arg-type]
        except ValueError as exc:  # WireError, or figures the store refuses: a redelivery would not mend it
            self.bad_messages += 1
            log.warning("uplink.bad_message", extra={"topic": msg.topic, "error": str(exc),
                                                     "bad_messages": self.bad_messages})
        except Exception as exc:  # a callback's failure (the store) must not kill paho's thread
            ack = False  # not acknowledged: the broker delivers it again after the next reconnect
            log.error("uplink.callback_failed", extra={"topic": msg.topic, "error": repr(exc)}, exc_info=True)
        finally:
            if ack and msg.qos > 0:
                client.ack(msg.mid, msg.qos)

    def publish_live(self, msg: LiveMsg) -> bool:
        """QoS 0, only while connected (a stale live summary is worth nothing later)."""
        if not self.connected:
            return False
        s = self.settings
        info = self.client.publish(meter_topic(s.community, s.operation, s.pseudonym, "live"), msg.to_bytes(), qos=0)
        return info.rc == self._mqtt.MQTT_ERR_SUCCESS

    def publish_quarter_hours(self, payloads: list[bytes], timeout_s: float) -> None:
        """Publish QoS 1 in order and return once the broker acknowledged all; else SinkUnavailable."""
        if not self.connected:
            raise SinkUnavailable(f"community broker {self.settings.host}:{self.settings.port} not connected")
        s = self.settings
        topic = meter_topic(s.community, s.operation, s.pseudonym, "qh")
        infos = [self.client.publish(topic, p, qos=1) for p in payloads]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            while not info.is_published():
                if time.monotonic() >= deadline or not self.connected:
                    raise SinkUnavailable("community broker did not acknowledge the quarter-hours (link lost)")
                try:
                    info.wait_for_publish(0.1)
                except (RuntimeError, ValueError) as exc:  # paho: not queued / disconnected
                    raise SinkUnavailable(f"community broker: {exc}") from exc


class UplinkSink(OutboxSink):
    """Drains the ``uplink`` outbox to the community broker and stores this member's allocations
    (see the module docstring).

    Allocations are written from paho's network thread, straight into the store, not queued to this
    sink's thread. That is safe because :class:`gateway.store.Store` is one connection
    (``check_same_thread=False``) with every call under its own lock, already shared by the pipeline
    and the sink threads. It is also what lets the PUBACK follow the commit within the one callback;
    queued, the message would be acknowledged before it is on the card (lost by a power cut) or the
    acknowledgement would have to wait for this thread, which can be blocked for ``ack_timeout_s``
    in a publish or sleeping in its backoff. The cost is one fsync in paho's thread per allocation
    (one per quarter-hour, plus re-runs).

    The sink installs its own allocation handler on the uplink; a handler the uplink already had is
    kept as an observer, called once the allocation is committed (not for a malformed one).
    """

    name = SINK_NAME

    def __init__(self, store: Store, uplink: Uplink, *, batch_size: int = 100, ack_timeout_s: float = 30.0,
                 backoff_initial_s: float = 1.0, backoff_max_s: float = 60.0, idle_poll_s: float = 1.0,
                 live_source: Callable[[], LiveMsg | None] | None = None) -> None:
        super().__init__(store, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s, idle_poll_s=idle_poll_s)
        self.uplink = uplink
        self.live = LiveSummaryPublisher(uplink, live_source, uplink.settings.live_interval_s) if live_source else None
        self.batch_size = batch_size
        self.ack_timeout_s = ack_timeout_s
        self.allocations_stored = 0  # allocations received and committed (re-runs and redeliveries too)
        self._observer = uplink.on_allocation
        uplink.set_allocation_handler(self._on_allocation)
        uplink.set_resend_handler(self.resend)
        self.resent = 0  # quarter-hours queued again at the server's request

    def _on_allocation(self, msg: AllocationMsg) -> None:
        self.store_allocation(msg)
        if self._observer is not None:
            self._observer(msg)

    def store_allocation(self, msg: AllocationMsg) -> None:
        """Commit one allocation (called in paho's thread; the PUBACK follows when this returns).

        ``WireError`` (a ``ValueError``) for one that names another operation than its topic's: the
        uplink counts and logs it as malformed. ``sqlite3.Error`` when the card fails: not
        acknowledged, so the broker delivers it again."""
        from gateway.store import Allocation

        op = self.uplink.settings.operation
        if msg.operation != op:
            raise WireError(f"AllocationMsg: operation {msg.operation!r} on the allocation topic of {op!r}")
        changed = self.store.put_allocation(Allocation(
            operation=msg.operation, start=msg.start, received_wh=msg.received_wh,
            injection_shared_wh=msg.injection_shared_wh, pool_wh=msg.pool_wh, shared_wh=msg.shared_wh,
            consumption_wh=msg.consumption_wh, missing=msg.missing, provisional=msg.provisional))
        self.allocations_stored += 1
        log.info("uplink.allocation_stored", extra={"start": msg.start.isoformat(), "received_wh": msg.received_wh,
                                                    "missing": msg.missing, "changed": changed})

    def resend(self, msg: ResendMsg) -> int:
        """The server asks for this member's quarter-hours from ``since`` again (it lost them, or
        misses one at its deadline): queue them in the outbox again, in order; the server keeps each
        (meter, start) once. Bounded to 40 days back, what a month's reconciliation needs."""
        op = self.uplink.settings.operation
        if msg.operation != op:
            raise WireError(f"ResendMsg: operation {msg.operation!r} on the resend topic of {op!r}")
        since = max(msg.since, datetime.now(timezone.utc) - RESEND_HORIZON)
        n = self.store.enqueue(self.name, meter_id=self.uplink.settings.meter_id, start=since, end=msg.until)
        self.resent += n
        log.info("uplink.resend", extra={"since": since.isoformat(), "until": msg.until.isoformat() if msg.until else None,
                                         "queued": n})
        self.notify()
        return n

    def health_fields(self) -> dict[str, object]:
        """For the daemon's health file: the allocation side of the uplink."""
        return {"connected": self.uplink.connected, "session_present": self.uplink.session_present,
                "resent": self.resent,
                "allocations_stored": self.allocations_stored, "bad_messages": self.uplink.bad_messages}

    def _pause(self, stop: threading.Event, delay_s: float) -> None:
        """Back off, but drain at once when the link comes back: while the broker is away the
        failure is "not connected", and waiting out a backoff of up to a minute after paho has
        reconnected only delays the backlog (bench/fleet.py measured 48-68 s for a 5 s outage)."""
        deadline = time.monotonic() + delay_s
        was_down = not self.uplink.connected
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if was_down:
                if self.uplink.wait_connected(min(0.5, left)):
                    return  # back: drain now
            else:
                stop.wait(min(0.5, left))

    def push_once(self) -> int:
        rows = self.store.outbox_peek(self.name, self.batch_size)
        if not rows:
            return 0
        mine = self.uplink.settings.meter_id
        ids: list[int] = []
        payloads: list[bytes] = []
        for row_id, qh in rows:
            ids.append(row_id)
            if mine is not None and qh.meter_id != mine:
                continue  # another local meter (e.g. a production sub-meter): not this member's data
            payloads.append(quarter_hour_msg(qh, self.uplink.settings).to_bytes())
        if payloads:
            self.uplink.publish_quarter_hours(payloads, self.ack_timeout_s)
        now = datetime.now(timezone.utc)
        self.store.outbox_ack(self.name, ids, state={f"{self.name}.last_push": now.isoformat()})
        self.stats.last_success = now
        self.stats.pushed += len(payloads)
        return len(ids)

    def run(self, stop: threading.Event) -> None:
        """Connect, start the live summary (if a source is set), then drain the outbox until ``stop``."""
        self.uplink.start()
        live_thread = None
        if self.live is not None:
            live_thread = threading.Thread(target=self.live.run, args=(stop,), name="uplink-live", daemon=True)
            live_thread.start()
        try:
            super().run(stop)
        finally:
            self.uplink.stop()

    def close(self) -> None:
        self.uplink.stop()


class LiveSummaryPublisher:
    """Publishes ``source()`` every ``interval_s`` while connected (a thread; stops with ``stop``)."""

    def __init__(self, uplink: Uplink, source: Callable[[], LiveMsg | None], interval_s: float) -> None:
        self.uplink = uplink
        self.source = source
        self.interval_s = interval_s
        self.published = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            try:
                msg = self.source()
                if msg is not None and self.uplink.publish_live(msg):
                    self.published += 1
            except Exception as exc:  # never die: the next tick may work
                log.warning("uplink.live_failed", extra={"error": repr(exc)})


class UplinkConfigError(ValueError):
    """``[uplink]`` is enabled but incomplete: the daemon meters on and keeps the rows in the outbox."""


def settings_from_config(cfg: Any) -> UplinkSettings:
    """From the node's ``[uplink]`` section (:class:`gateway.config.UplinkConfig`)."""
    missing = [f"uplink.{k}" for k in ("community", "operation", "pseudonym") if not getattr(cfg, k)]
    if missing:
        raise UplinkConfigError(f"{', '.join(missing)} not set (quartier community provision writes them)")
    return UplinkSettings(
        host=cfg.host, port=cfg.port, community=cfg.community, operation=cfg.operation, pseudonym=cfg.pseudonym,
        password=cfg.password.get_secret_value(), ca_file=str(cfg.ca_file) if cfg.ca_file else None,
        meter_id=cfg.meter_id, keepalive_s=cfg.keepalive_s, live_interval_s=cfg.live_interval_s,
        session_expiry_s=cfg.session_expiry_s,
    )


def live_source_for(pipelines: Callable[[], list[Any]], settings: UplinkSettings) -> Callable[[], LiveMsg | None]:
    """The live summary from the daemon's pipelines: last reading's power and the running quarter-hour.

    ``pipelines`` returns the daemon's :class:`gateway.pipeline.Pipeline` objects (their ``health``
    holds each meter's last reading, ``aggregators`` its running quarter-hour).
    """

    def source() -> LiveMsg | None:
        for p in pipelines():
            for mid, h in list(p.health.items()):
                if settings.meter_id is not None and mid != settings.meter_id:
                    continue
                r = h.last_reading
                if r is None:
                    continue
                agg = p.aggregators.get(mid)
                live = agg.live() if agg is not None else None
                return LiveMsg(
                    meter=settings.pseudonym, operation=settings.operation, time=r.time,
                    import_w=max(0.0, r.import_w or 0.0), export_w=max(0.0, r.export_w or 0.0),
                    qh_start=live.start if live else None,
                    qh_import_wh=_wh(live.import_wh) if live else None,
                    qh_export_wh=_wh(live.export_wh) if live else None,
                )
        return None

    return source


def _wh(value: float | None) -> float | None:
    return None if value is None else max(0.0, float(value))


def node_uplink(store: Store, settings: UplinkSettings, *, live: Any = None,
                live_source: Callable[[], LiveMsg | None] | None = None, **sink_options: Any) -> UplinkSink:
    """The node's one connection to its community, as the daemon runs it: quarter-hours and the live
    summary out; the operation's totals and this member's allocations (committed to the store first)
    back, relayed to the web service through ``live`` (a :class:`gateway.live.LivePublisher`), and the
    operation's collective alerts (kept as the latest state: a web service that connects later gets them)."""
    on_totals = on_allocation = on_alerts = None
    if live is not None:
        from gateway.live import ALERTS_KEY, OPERATION_KEY, alerts_message, allocation_message, operation_message

        def on_alerts(m: AlertsMsg) -> None:
            log.info("uplink.alerts", extra={"alerts": len(m.alerts), "ids": ",".join(a.id for a in m.alerts)})
            live.publish(alerts_message(m), latest_for=ALERTS_KEY)

        def on_totals(m: TotalsMsg) -> None:
            live.publish(operation_message(m), latest_for=OPERATION_KEY)

        def on_allocation(m: AllocationMsg) -> None:
            live.publish(allocation_message(m))

    uplink = Uplink(settings, on_totals=on_totals, on_allocation=on_allocation, on_alerts=on_alerts)
    return UplinkSink(store, uplink, live_source=live_source, **sink_options)

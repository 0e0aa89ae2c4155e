"""Community uplink: this node's closed quarter-hours and live summary to the community broker.

Why an :class:`~gateway.sinks.OutboxSink`: the outbox already gives at-least-once delivery across
crashes and outages. A batch is published with QoS 1 over one MQTT connection and its rows are acked
only once the broker has PUBACKed every message; on a lost link the rows stay and are re-sent in
order when it returns. A re-sent quarter-hour is harmless: the community server keys it on
(pseudonymous meter, start).

The same connection carries the live summary (QoS 0, every few seconds, dropped while offline: only
the latest matters), a retained ``online``/``offline`` status with a last will, and the subscriptions
to the operation's totals + signal and to this member's allocation, handed to callbacks.

On the wire the meter is its pseudonym (given by provisioning, also the broker username); the EAN
never leaves the node. paho-mqtt is imported when an :class:`Uplink` is built.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from gateway.model import QuarterHour
from gateway.sinks import OutboxSink, SinkUnavailable
from services.community.wire import (
    AllocationMsg,
    LiveMsg,
    QuarterHourMsg,
    TotalsMsg,
    WireError,
    check_segment,
    decode,
    meter_topic,
    operation_topic,
)

if TYPE_CHECKING:
    from gateway.store import Store

log = logging.getLogger("quartier.gateway.uplink")

SINK_NAME = "uplink"


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

    def __post_init__(self) -> None:
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
    """One MQTT v5 connection to the community broker (reconnecting by itself in paho's thread)."""

    def __init__(
        self,
        settings: UplinkSettings,
        *,
        on_totals: Callable[[TotalsMsg], None] | None = None,
        on_allocation: Callable[[AllocationMsg], None] | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.settings = settings
        self.on_totals = on_totals
        self.on_allocation = on_allocation
        self._connected = threading.Event()
        self._started = False
        s = settings
        self.status_topic = meter_topic(s.community, s.operation, s.pseudonym, "status")
        self.totals_topic = operation_topic(s.community, s.operation)
        self.alloc_topic = meter_topic(s.community, s.operation, s.pseudonym, "alloc")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id or f"gw-{s.pseudonym}",
                        protocol=mqtt.MQTTv5)
        c.username_pw_set(s.pseudonym, s.password)
        if s.ca_file:
            c.tls_set(ca_certs=s.ca_file, cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.will_set(self.status_topic, b"offline", qos=1, retain=True)
        c.reconnect_delay_set(1, 60)
        c.max_inflight_messages_set(100)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c
        self._mqtt = mqtt

    def start(self) -> None:
        """Connect in the background; paho reconnects with backoff after every loss. Idempotent."""
        if self._started:
            return
        self._started = True
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._connected.is_set() and self.status_topic:
            self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.warning("uplink.refused", extra={"reason": str(rc), "host": self.settings.host})
            return
        client.subscribe([(self.totals_topic, 0), (self.alloc_topic, 1)])
        if self.status_topic:
            client.publish(self.status_topic, b"online", qos=1, retain=True)
        self._connected.set()
        log.info("uplink.connected", extra={"host": self.settings.host, "port": self.settings.port})

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if self._connected.is_set():
            log.warning("uplink.disconnected", extra={"reason": str(rc)})
        self._connected.clear()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            if msg.topic == self.totals_topic and self.on_totals is not None:
                self.on_totals(decode(TotalsMsg, msg.payload))  # type: ignore[arg-type]
            elif msg.topic == self.alloc_topic and self.on_allocation is not None:
                self.on_allocation(decode(AllocationMsg, msg.payload))  # type: ignore[arg-type]
        except WireError as exc:
            log.warning("uplink.bad_message", extra={"topic": msg.topic, "error": str(exc)})
        except Exception as exc:  # a callback's bug must not kill paho's thread
            log.error("uplink.callback_failed", extra={"topic": msg.topic, "error": repr(exc)}, exc_info=True)

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
        deadline = threading.Event()
        timer = threading.Timer(timeout_s, deadline.set)
        timer.start()
        try:
            for info in infos:
                while not info.is_published():
                    if deadline.is_set() or not self.connected:
                        raise SinkUnavailable("community broker did not acknowledge the quarter-hours (link lost)")
                    try:
                        info.wait_for_publish(0.1)
                    except (RuntimeError, ValueError) as exc:  # paho: not queued / disconnected
                        raise SinkUnavailable(f"community broker: {exc}") from exc
        finally:
            timer.cancel()


class UplinkSink(OutboxSink):
    """Drains the ``uplink`` outbox to the community broker (see the module docstring)."""

    name = SINK_NAME

    def __init__(self, store: Store, uplink: Uplink, *, batch_size: int = 100, ack_timeout_s: float = 30.0,
                 backoff_initial_s: float = 1.0, backoff_max_s: float = 60.0, idle_poll_s: float = 1.0,
                 live_source: Callable[[], LiveMsg | None] | None = None) -> None:
        super().__init__(store, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s, idle_poll_s=idle_poll_s)
        self.uplink = uplink
        self.live = LiveSummaryPublisher(uplink, live_source, uplink.settings.live_interval_s) if live_source else None
        self.batch_size = batch_size
        self.ack_timeout_s = ack_timeout_s

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


def operation_live(msg: TotalsMsg, received_monotonic: float) -> Any:
    """The web service's :class:`services.web.fleet.OperationLive` from the server's totals."""
    from services.web.fleet import OperationLive

    return OperationLive(
        start=msg.qh_start, elapsed_s=msg.elapsed_s, consumption_wh=msg.consumption_wh, pool_wh=msg.pool_wh,
        consumption_w=msg.consumption_w, pool_w=msg.pool_w, as_of=msg.time, received_monotonic=received_monotonic,
        members_reporting=msg.members_reporting, members_total=msg.members_total,
    )


class FleetLink:
    """The web service's side of the uplink: its own subscribe-only connection (same credentials,
    its own client id) that fills a :class:`services.web.fleet.Fleet` with the operation's live totals
    (the page's "operation" figures and the consume-now signal's operation basis) and keeps this
    member's provisional allocation per quarter-hour as the community server computed it."""

    def __init__(self, settings: UplinkSettings, fleet: Any, *, max_quarter_hours: int = 40 * 100,
                 clock: Callable[[], float] | None = None) -> None:
        import time as _time
        from dataclasses import replace

        self.fleet = fleet
        self.allocations: dict[datetime, AllocationMsg] = {}
        self._max = max_quarter_hours
        self._lock = threading.Lock()
        self._clock = clock or _time.monotonic
        web = replace(settings, client_id=f"{settings.client_id or 'gw-' + settings.pseudonym}-web")
        self.uplink = Uplink(web, on_totals=self._totals, on_allocation=self._allocation)
        # the web side must not mark the gateway offline when it stops: no will, no status
        self.uplink.client.will_clear()
        self.uplink.status_topic = ""
        if fleet.setup is None:
            # the node knows its operation and pseudonym, not the other members: the server
            # allocates and sends this member its own share only
            from services.web.fleet import OperationSetup

            fleet.set_setup(OperationSetup(operation_id=settings.operation, member_id=settings.pseudonym,
                                           rounds=(), members=()))

    def _totals(self, msg: TotalsMsg) -> None:
        self.fleet.update_live(operation_live(msg, self._clock()))

    def _allocation(self, msg: AllocationMsg) -> None:
        from services.web.fleet import MemberQuarterHour

        with self._lock:
            self.allocations[msg.start] = msg
            while len(self.allocations) > self._max:
                self.allocations.pop(min(self.allocations))
        self.fleet.add_member_allocations([MemberQuarterHour(
            start=msg.start, received_wh=msg.received_wh, injection_shared_wh=msg.injection_shared_wh,
            pool_wh=msg.pool_wh, shared_wh=msg.shared_wh, consumption_wh=msg.consumption_wh)])

    def start(self) -> None:
        self.uplink.start()

    def stop(self) -> None:
        self.uplink.stop()

    def member_quarter_hours(self, start: datetime, end: datetime) -> dict[datetime, Any]:
        """This member's allocation per quarter-hour in [start, end) as the web service's
        :class:`services.web.fleet.MemberQuarterHour` (what ``Fleet.member_quarter_hours`` returns)."""
        from services.web.fleet import MemberQuarterHour

        with self._lock:
            return {
                s: MemberQuarterHour(start=s, received_wh=a.received_wh, injection_shared_wh=a.injection_shared_wh,
                                     pool_wh=a.pool_wh, shared_wh=a.shared_wh, consumption_wh=a.consumption_wh)
                for s, a in sorted(self.allocations.items()) if start <= s < end
            }

    def received_wh(self, start: datetime, end: datetime) -> int:
        """This member's provisional shared energy over [start, end), from the server's allocations."""
        with self._lock:
            return sum(a.received_wh for s, a in self.allocations.items() if start <= s < end)

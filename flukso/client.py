"""The MQTT edge: a paho-mqtt 2.x client on a Fluksometer's broker, feeding Readings onwards.

Connection: fixed client id, clean session off (a persistent session: the broker keeps the
subscriptions, and QoS 1 messages published while the gateway is away are delivered when it is back),
QoS 1 subscriptions to the mapped sensors' ``gauge`` and ``counter`` topics and to the device's
sensor config. The network loop runs in the caller's thread (:meth:`FluksoClient.run`: the daemon's
reader thread for this source), so a broker that hangs never blocks another source's metering.
Reconnection: exponential backoff with jitter, from ``backoff_min_s`` to ``backoff_max_s``, forever.

Never dies on input: a malformed payload, an unknown unit, a counter that goes backwards or a
timestamp in the future is counted in :attr:`FluksoClient.stats`, logged with its topic and payload,
and skipped. Each kind of trouble on a topic (the reason with its numbers left out) is logged once
as a warning, its repeats only at 10, 100, 1000, ... occurrences (with the count), so a sensor
sending the same garbage every second cannot fill the SD card with log lines. Stale samples (retained leftovers, recognised by their timestamp)
are logged once per sensor.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import paho.mqtt.client as mqtt

from flukso.payload import (
    PayloadError,
    decode_sample,
    parse_config_topic,
    parse_sensor_topic,
    shown,
)
from flukso.readings import (
    LivePower,
    ReadingAssembler,
    Rejected,
    TimePolicy,
    assembler_for,
)
from flukso.sensors import (
    Assignment,
    SensorConfigError,
    SensorInfo,
    check_against_device,
    parse_sensor_config,
)
from gateway.logs import get_logger
from gateway.model import QuarterHour, Reading

log = get_logger("quartier.flukso")

BAD_INPUT = ("malformed", "unknown_unit", "backwards", "future")
QOS = 1


def default_client_id() -> str:
    """Fixed per Pi (the broker keeps a persistent session under this id); a source adds its meter id."""
    return f"quartier-{socket.gethostname()}"[:64]


class _CachedClock:
    """``clock_synchronised()`` at most every few seconds: it is asked for every message."""

    def __init__(self, probe: Callable[[], bool | None], every_s: float = 5.0) -> None:
        self.probe, self.every_s = probe, every_s
        self.value: bool | None = None
        self.at = -1e9

    def __call__(self) -> bool | None:
        now = time.monotonic()
        if now - self.at >= self.every_s:
            self.value, self.at = self.probe(), now
        return self.value


class FluksoClient:
    """Readings from one Fluksometer's broker. ``run(stop)`` blocks until ``stop`` is set or
    :meth:`close` is called; ``on_reading`` is called in that thread for every Reading."""


    def __init__(
        self,
        *,
        host: str,
        assignments: Sequence[Assignment],
        on_reading: Callable[[Reading], object],
        port: int = 1883,
        client_id: str | None = None,
        device: str | None = None,
        username: str | None = None,
        password: str | None = None,
        policy: TimePolicy | None = None,
        baseline: Callable[[str], QuarterHour | None] | None = None,
        clock_synced: Callable[[], bool | None] | None = None,
        now: Callable[[], datetime] | None = None,
        on_rejected: Callable[[str, str, str], object] | None = None,  # (meter id, kind, reason)
        on_power: Callable[[LivePower], object] | None = None,
        keepalive_s: int = 30,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        idle_flush_s: float = 1.5,
    ) -> None:
        self.host = host
        self.broker_port = port
        self.port = f"mqtt://{host}:{port}"  # what health reports as this reader's "port"
        self.client_id = client_id or default_client_id()
        self.device = device
        self.assignments = list(assignments)
        self.assembler: ReadingAssembler = assembler_for(self.assignments, policy, baseline)
        self.on_reading = on_reading
        self.on_rejected = on_rejected
        # gauges refresh live power every second, between the counters' readings
        self.on_power = on_power
        if clock_synced is None:
            from gateway.clock import clock_synchronised

            clock_synced = _CachedClock(clock_synchronised)
        self.clock_synced = clock_synced
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.keepalive_s = keepalive_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.idle_flush_s = idle_flush_s
        self.stats: Counter[str] = Counter()
        self.sensors: dict[str, SensorInfo] = {}  # from the device's sensor config
        self.connected = False
        self.reconnects = 0
        self._subscribed = False
        self._session_worked = False
        self._refusals = 0
        self._closing = False
        self._connects = 0
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_message = time.monotonic()
        self._logged: Counter[tuple[str, str, str]] = Counter()
        self._stale_logged: set[str] = set()
        self._mqtt = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,  # this class owns the retry policy
        )
        if username is not None or password is not None:
            self._mqtt.username_pw_set(username or "", password)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.on_message = self._on_message

    # -- topics ----------------------------------------------------------------------------------

    def topics(self) -> list[tuple[str, int]]:
        """One gauge and one counter topic per mapped sensor, and the sensor config."""
        out = [(f"/sensor/{a.sensor_id}/{kind}", QOS) for a in self.assignments for kind in ("gauge", "counter")]
        out.append((f"/device/{self.device or '+'}/config/sensor", QOS))
        return out

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Connect, read, reconnect with backoff, until ``stop`` is set or :meth:`close` is called."""
        stop = stop or self._closed
        delay = self.backoff_min_s
        failures = 0
        while not self._stopping(stop):
            self._session_worked = False
            try:
                self._mqtt.connect(self.host, self.broker_port, keepalive=self.keepalive_s)
            except (OSError, ValueError) as exc:
                failures += 1
                (log.warning if failures == 1 else log.debug)(
                    "flukso.connect_failed", extra={"broker": self.port, "error": str(exc), "attempt": failures})
            else:
                self._serve(stop)
            if self._stopping(stop):
                break
            if self._session_worked:  # it was up: the next outage starts its backoff afresh
                delay, failures = self.backoff_min_s, 0
            self._sleep(stop, random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.backoff_max_s)
        self._shutdown()

    def _stopping(self, stop: threading.Event) -> bool:
        return stop.is_set() or self._closed.is_set()

    def _sleep(self, stop: threading.Event, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping(stop) and (left := end - time.monotonic()) > 0:
            stop.wait(min(left, 0.2))
            self._tick()  # what was pending when the broker went away is not held back by the outage

    def _serve(self, stop: threading.Event) -> None:
        """The network loop of one connection: until it drops or we are told to stop."""
        while not (stop.is_set() or self._closed.is_set()):
            rc = self._mqtt.loop(timeout=0.2)
            self._tick()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                break

    def _shutdown(self) -> None:
        self._closing = True
        try:
            if self.connected:
                self._mqtt.disconnect()
                self._mqtt.loop(timeout=0.2)
        except (OSError, ValueError) as exc:  # closing anyway: say so, and go on
            log.debug("flukso.disconnect_failed", extra={"broker": self.port, "error": str(exc)})
        self.connected = False

    def start(self) -> threading.Thread:
        """Run in a thread of its own (tests, tools); the daemon calls :meth:`run` in its reader thread."""
        self._thread = threading.Thread(target=self.run, name=f"flukso-{self.client_id}", daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """Stop :meth:`run` (from any thread); returns at once."""
        self._closed.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def live(self) -> dict[str, LivePower]:
        return self.assembler.live()

    # -- paho callbacks (run in the run() thread) ------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:  # bad credentials, client id refused: said once per outage
            self._refusals += 1
            (log.error if self._refusals == 1 else log.debug)(
                "flukso.connect_refused", extra={"broker": self.port, "reason": str(reason_code), "attempt": self._refusals})
            return
        self._refusals = 0
        self.connected = True
        self._session_worked = True
        self._connects += 1
        if self._connects > 1:
            self.reconnects += 1
        session = bool(getattr(flags, "session_present", False))
        log.info("flukso.connected", extra={"broker": self.port, "client_id": self.client_id,
                                            "session_present": session, "reconnects": self.reconnects})
        # a new session has no subscriptions; this process subscribes once anyway, so a changed
        # sensor mapping takes effect and the retained values arrive
        if not session or not self._subscribed:
            client.subscribe(self.topics())
            self._subscribed = True

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected
        self.connected = False
        if was and not self._closing:
            log.warning("flukso.disconnected", extra={"broker": self.port, "reason": str(reason_code)})

    def _on_message(self, client, userdata, msg) -> None:
        try:
            self.handle(msg.topic, msg.payload, retained=bool(msg.retain))
        except Exception:  # a bug must not end the network loop
            self.stats["handler_errors"] += 1
            log.exception("flukso.handler_failed", extra={"topic": msg.topic, "payload": shown(msg.payload)})

    # -- messages --------------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        """One message from the broker (public so tests and tools can feed messages directly)."""
        self.stats["messages"] += 1
        self._last_message = time.monotonic()
        if parse_config_topic(topic) is not None:
            self._sensor_config(topic, payload)
            return
        st = parse_sensor_topic(topic)
        if st is None or not self.assembler.is_mapped(st.sensor_id):
            self.stats["ignored"] += 1
            return
        meter_id = self.assembler.meter_of(st.sensor_id)
        try:
            sample = decode_sample(topic, payload)
        except PayloadError as exc:
            self._bad(exc.kind, topic, payload, exc.reason, meter_id)
            return
        try:
            readings = self.assembler.accept(sample, now=self.now(), synced=self.clock_synced(), retained=retained)
        except Rejected as exc:
            if exc.kind in BAD_INPUT:
                self._bad(exc.kind, topic, payload, exc.reason, exc.meter_id)
            else:
                self.stats[exc.kind] += 1
                if exc.kind == "stale" and st.sensor_id not in self._stale_logged:
                    self._stale_logged.add(st.sensor_id)
                    log.info("flukso.stale_sample", extra={"topic": topic, "payload": shown(payload), "reason": exc.reason})
            return
        self._notes()
        self._deliver(readings)
        if self.on_power is not None and sample.quantity == "power" and meter_id is not None:
            power = self.assembler.live().get(meter_id)
            if power is not None:
                try:
                    self.on_power(power)
                except Exception:
                    self.stats["sink_errors"] += 1
                    log.exception("flukso.power_not_taken", extra={"meter": meter_id})

    def _tick(self) -> None:
        """Between messages: emit what waits for a newer sample once the broker has gone quiet."""
        if self.assembler.has_pending and time.monotonic() - self._last_message >= self.idle_flush_s:
            self._deliver(self.assembler.flush(now=self.now(), synced=self.clock_synced()))
            self._notes()

    def _deliver(self, readings: list[Reading]) -> None:
        for r in readings:
            self.stats["readings"] += 1
            try:
                self.on_reading(r)
            except Exception:
                self.stats["sink_errors"] += 1
                log.exception("flukso.reading_not_taken", extra={"meter": r.meter_id, "time": r.time.isoformat()})

    def _notes(self) -> None:
        while self.assembler.notes:
            event, fields = self.assembler.notes.pop(0)
            log.warning(f"flukso.{event}", extra=fields)

    def _bad(self, kind: str, topic: str, payload: bytes, reason: str, meter_id: str | None) -> None:
        self.stats[kind] += 1
        key = (topic, kind, re.sub(r"\d+", "#", reason))  # the same trouble again: not a new line
        self._logged[key] += 1
        n = self._logged[key]
        if n == 1 or _power_of_ten(n):
            log.warning(
                "flukso.bad_input",
                extra={"kind": kind, "topic": topic, "payload": shown(payload), "reason": reason,
                       **({"repeats": n} if n > 1 else {})},
            )
        meter_id = meter_id or (self.assignments[0].meter_id if self.assignments else None)
        if self.on_rejected is not None and meter_id is not None:
            try:
                self.on_rejected(meter_id, kind, reason)
            except Exception:
                log.exception("flukso.on_rejected_failed")

    def _sensor_config(self, topic: str, payload: bytes) -> None:
        try:
            sensors = parse_sensor_config(payload)
        except SensorConfigError as exc:
            self._bad("malformed", topic, payload, str(exc), None)
            return
        self.sensors.update(sensors)
        mine = self.assignments if self.device else [a for a in self.assignments if a.sensor_id in sensors]
        problems = check_against_device(mine, sensors)  # without a device id, other devices' configs come too
        log.info("flukso.sensor_config", extra={"topic": topic, "sensors": len(sensors),
                                                "enabled": sum(s.enabled for s in sensors.values())})
        for p in problems:
            log.warning("flukso.sensor_mapping", extra={"topic": topic, "problem": p})


def _power_of_ten(n: int) -> bool:
    while n % 10 == 0 and n > 1:
        n //= 10
    return n == 1


def client_for_source(src, *, on_reading: Callable[[Reading], object],
                      baseline: Callable[[str], QuarterHour | None] | None = None,
                      clock_synced: Callable[[], bool | None] | None = None,
                      on_rejected: Callable[[str, str, str], object] | None = None,
                      on_power: Callable[[LivePower], object] | None = None) -> FluksoClient:
    """A client for a ``flukso.source.FluksoSettings`` table."""
    from flukso.sensors import Role

    return FluksoClient(
        host=src.host,
        port=src.port,
        client_id=src.client_id or f"{default_client_id()}-{src.meter_id}"[:64],
        device=src.device,
        username=src.username,
        password=src.password.get_secret_value() if src.password is not None else None,
        assignments=[Assignment(s.id, Role(s.role), s.meter_id or src.meter_id) for s in src.sensors],
        policy=TimePolicy(clock=src.clock, stale_after_s=src.stale_after_s, future_tolerance_s=src.future_tolerance_s),
        on_reading=on_reading,
        baseline=baseline,
        clock_synced=clock_synced,
        on_rejected=on_rejected,
        on_power=on_power,
        keepalive_s=src.keepalive_s,
        backoff_max_s=src.backoff_max_s,
    )

"""A Fluksometer emulator: publishes FLM02 or FLM03 messages to a broker, from a simulated household.

The energy comes from :class:`demo.meter.MeterSimulator`, the model behind the simulated P1
meter: the emulator advances that simulator one second at a time and publishes what a Fluksometer
wired to the same house would, so a Flukso source and a P1 source of the *same* simulator can be
compared quarter-hour by quarter-hour, to the Wh (``on_telegram`` hands out the P1 telegram of every
second for that).

Sensors and their messages (sensor ids derived from the device id, stable across runs):

=========  =====================================================  ===================================
firmware   sensor                                                 messages
=========  =====================================================  ===================================
FLM02      ``net``: P1 port (class cosem), signed                 gauge ``[ts,-1234,"W"]`` (net W,
                                                                  integer), counter ``[ts,5678,"Wh"]``
                                                                  (import − export registers, falls
                                                                  while exporting); retained
FLM02      ``solar``: clamp on the inverter circuit (analog)      gauge/counter, integer, unsigned
FLM03      ``pplus`` / ``pminus``: P1 port (uart)                 ``[ts, 1234.567, "W"]``,
                                                                  ``[ts, 5678.123, "Wh"]``; not retained
FLM03      ``solar``: CT on the inverter circuit, pplus           same format
FLM03      ``vrms``: P1 port voltage (data_type gauge)            ``[ts, 231.456, "V"]`` (never mapped)
=========  =====================================================  ===================================

Cadence (simulated seconds): gauges every ``gauge_interval_s`` (default 1, as both firmwares).
Counters: FLM02 publishes a counter when its whole-Wh value changes (fluksod publishes on every
change, at most once a second); FLM03's counter cadence is not documented publicly — the emulator
assumes every ``counter_interval_s`` = 60 s, on the minute. Quartier does not depend on either: it
interpolates the quarter-hour boundaries between counter samples.

FLM03 counters are the exact integral truncated to the mWh (a counter counts what has fully passed);
their whole-Wh part is exactly the P1 register, so both sources agree to the Wh.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

import paho.mqtt.client as mqtt

from demo.meter import MeterSimulator
from gateway.logs import get_logger

log = get_logger("quartier.flukso.emulator")

Firmware = Literal["flm02", "flm03"]
UTC = timezone.utc
_CHUNK_S = 60  # seconds of the power model computed at once


def sensor_id(device: str, name: str) -> str:
    """A stable 32-hex sensor id for an emulated sensor."""
    return hashlib.md5(f"{device}:{name}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Truth:
    """What the emulated house's registers said at one second (whole Wh)."""

    import_wh: int
    export_wh: int
    production_wh: int


@dataclass(frozen=True, slots=True)
class EmulatedSensor:
    name: str
    sensor_id: str
    number: int
    config: dict
    role: str | None  # the role an installer would give it; None: not an energy sensor


@dataclass
class FluksoEmulator:
    """Publish one emulated Fluksometer; ``step(t)`` for one second, ``run``/``start`` in real time."""

    host: str = "127.0.0.1"
    port: int = 1883
    firmware: Firmware = "flm02"
    device: str = "0123456789abcdef0123456789abcdef"
    simulator: MeterSimulator | None = None
    start_time: datetime | None = None  # default: the simulator's time, else now
    seed: int = 0
    pv_kwp: float = 4.0
    speed: float = 1.0
    gauge_interval_s: int = 1
    counter_interval_s: int | None = None  # None: FLM02 on change, FLM03 every 60 s
    qos: int = 0
    client_id: str | None = None
    production: bool = True
    keep_truth: bool = True
    on_telegram: Callable[[datetime, bytes], object] | None = None
    truth: dict[int, Truth] = field(default_factory=dict)
    published: int = 0
    dropped: int = 0  # QoS 0 messages published while the broker was away (lost, as on a real FLM)
    _next: datetime | None = None
    _pv_exact: float = 0.0
    _last_counter: dict[str, int] = field(default_factory=dict)
    _chunk_start: int | None = None
    _chunk: tuple | None = None
    _client: mqtt.Client | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _connected: threading.Event = field(default_factory=threading.Event)
    sensors: dict[str, EmulatedSensor] = field(init=False)
    _backlog: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.firmware not in ("flm02", "flm03"):
            raise ValueError(f"firmware must be flm02 or flm03, not {self.firmware!r}")
        if self.gauge_interval_s < 1 or (self.counter_interval_s is not None and self.counter_interval_s < 1):
            raise ValueError("gauge_interval_s and counter_interval_s must be at least 1 s")
        if self.simulator is None:
            start = (self.start_time or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
            self.simulator = MeterSimulator(start=start, seed=self.seed, pv_kwp=self.pv_kwp)
        sim_t = self.simulator.time
        first = sim_t.replace(microsecond=0)
        if first < sim_t:
            first += timedelta(seconds=1)
        self._next = first
        if self.counter_interval_s is None and self.firmware == "flm03":
            self.counter_interval_s = 60
        self.sensors = self._sensors()

    # -- sensors ---------------------------------------------------------------------------------

    def _sensors(self) -> dict[str, EmulatedSensor]:
        def s(name: str, number: int, role: str | None, **config) -> EmulatedSensor:
            sid = sensor_id(self.device, name)
            return EmulatedSensor(name, sid, number, {"id": sid, **config}, role)

        if self.firmware == "flm02":
            out = [s("net", 4, "grid_net", **{"class": "cosem", "type": "electricity", "function": "net",
                                              "enable": "1", "port": ["4"]})]
            if self.production:
                out.append(s("solar", 1, "production", **{"class": "analog", "type": "electricity",
                                                         "function": "solar", "enable": "1", "port": ["1"]}))
        else:
            out = [
                s("pplus", 1, "grid_import", type="electricity", subtype="pplus", data_type="counter", enable=1, rid=0, port=[7]),
                s("pminus", 2, "grid_export", type="electricity", subtype="pminus", data_type="counter", enable=1, rid=0, port=[7]),
                s("vrms", 3, None, type="electricity", subtype="vrms", data_type="gauge", enable=1, rid=0, port=[7]),
            ]
            if self.production:
                out.append(s("solar", 4, "production", type="electricity", subtype="pplus", data_type="counter",
                             enable=1, rid=0, port=[1]))
        return {e.name: e for e in out}

    def sensor_config(self) -> bytes:
        """The retained ``/device/<devid>/config/sensor`` payload."""
        body: dict[str, object] = {str(e.number): e.config for e in self.sensors.values()}
        if self.firmware == "flm03":
            body["5"] = {"id": sensor_id(self.device, "unassigned-5")}  # FLM03 lists unassigned ids bare
            body["tmpo"] = {"root": "/flukso/"}
        return json.dumps(body, separators=(",", ":")).encode()

    def config_sensors(self, meter_id: str = "home", production_meter_id: str = "home-pv") -> list[dict]:
        """The ``sources.sensors`` entries a gateway needs for this emulator."""
        out = []
        for e in self.sensors.values():
            if e.role is None:
                continue
            entry = {"id": e.sensor_id, "role": e.role}
            if e.role == "production":
                entry["meter_id"] = production_meter_id
            out.append(entry)
        return out

    # -- broker ----------------------------------------------------------------------------------

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect (the paho network loop runs in its own thread and reconnects by itself)."""
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id or f"flukso-emulator-{self.device[:8]}",
                        clean_session=True, protocol=mqtt.MQTTv311)
        c.reconnect_delay_set(min_delay=0.2, max_delay=2)
        c.max_queued_messages_set(100_000)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self._connected.clear()
        self._client = c
        c.connect_async(self.host, self.port, keepalive=30)
        c.loop_start()
        if not self._connected.wait(timeout_s):
            c.loop_stop()
            self._client = None
            raise ConnectionError(f"emulator: no connection to the broker at {self.host}:{self.port}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("emulator.connect_refused", extra={"reason": str(reason_code)})
            return
        # the device publishes its sensor config retained, as the firmware does at boot
        client.publish(f"/device/{self.device}/config/sensor", self.sensor_config(), qos=1, retain=True)
        self._connected.set()

    def close(self) -> None:
        self.stop()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def publish_raw(self, topic: str, payload: bytes | str, *, retain: bool = False, qos: int | None = None) -> None:
        """Publish anything (fault injection in tests and demos)."""
        assert self._client is not None, "connect() first"
        self._client.publish(topic, payload, qos=self.qos if qos is None else qos, retain=retain)

    def _publish(self, topic: str, payload: str, retain: bool) -> None:
        if self.qos > 0 and (self._backlog or not self._connected.is_set()):
            # QoS 1 while the broker is away: kept, and sent in order once it is back (paho would send
            # new messages before its own backlog, and a subscriber must see each topic in order)
            self._backlog.append((topic, payload, retain))
            self.published += 1
            return
        info = self._client.publish(topic, payload, qos=self.qos, retain=retain)  # type: ignore[union-attr]
        if info.rc == mqtt.MQTT_ERR_SUCCESS or self.qos > 0:
            self.published += 1
        else:
            self.dropped += 1  # QoS 0 into an outage: lost, as on a real Fluksometer

    def _drain(self) -> None:
        """Send the QoS 1 backlog, oldest first, before anything new."""
        while self._backlog and self._connected.is_set():
            topic, payload, retain = self._backlog.popleft()
            self._client.publish(topic, payload, qos=self.qos, retain=retain)  # type: ignore[union-attr]

    # -- the model -------------------------------------------------------------------------------

    @property
    def sim_time(self) -> datetime:
        """The last second published (the next one is one second later)."""
        return self._next - timedelta(seconds=1)  # type: ignore[operator]

    def _power(self, second: int) -> tuple[float, float]:
        """(load W, PV W) during the UTC second starting at ``second``."""
        if self._chunk_start is None or not (self._chunk_start <= second < self._chunk_start + _CHUNK_S):
            self._chunk_start = second
            self._chunk = self.simulator.power_series(datetime.fromtimestamp(second, UTC), _CHUNK_S)  # type: ignore[union-attr]
        load, pv = self._chunk  # type: ignore[misc]
        i = second - self._chunk_start
        return float(load[i]), float(pv[i])

    def step(self) -> datetime:
        """Advance one simulated second and publish what is due at it; return that second."""
        t = self._next
        assert t is not None and self.simulator is not None
        ts = int(t.timestamp())
        load, pv = self._power(ts - 1)  # the second that just ended
        self._pv_exact += pv / 3600.0 if t > self.simulator.time else 0.0
        frame = self.simulator.telegram_at(t)
        if self.on_telegram is not None:
            self.on_telegram(t, frame)
        sim = self.simulator
        imp, exp = sim.true_import_wh, sim.true_export_wh
        pv_wh = math.floor(self._pv_exact)
        if self.keep_truth:
            self.truth[ts] = Truth(imp, exp, pv_wh)
        if self._client is not None:
            self._drain()
            self._publish_second(ts, load - pv, pv, imp, exp, sim.exact_import_wh, sim.exact_export_wh)
        self._next = t + timedelta(seconds=1)
        return t

    def _publish_second(self, ts: int, net_w: float, pv_w: float, imp: int, exp: int,
                        exact_imp: float, exact_exp: float) -> None:
        gauges = ts % self.gauge_interval_s == 0
        sid = {name: e.sensor_id for name, e in self.sensors.items()}
        if self.firmware == "flm02":
            counters = {"net": imp - exp}
            if "solar" in sid:
                counters["solar"] = math.floor(self._pv_exact)
            for name, value in counters.items():
                due = (self._last_counter.get(name) != value) if self.counter_interval_s is None else ts % self.counter_interval_s == 0
                if due:
                    self._last_counter[name] = value
                    self._publish(f"/sensor/{sid[name]}/counter", f'[{ts},{value},"Wh"]', True)
                if gauges:
                    w = round(net_w) if name == "net" else round(max(pv_w, 0.0))
                    self._publish(f"/sensor/{sid[name]}/gauge", f'[{ts},{w},"W"]', True)
            return
        # FLM03
        if self.counter_interval_s is not None and ts % self.counter_interval_s == 0:
            values = {"pplus": _mwh(imp, exact_imp), "pminus": _mwh(exp, exact_exp)}
            if "solar" in sid:
                values["solar"] = _mwh(math.floor(self._pv_exact), self._pv_exact)
            for name, mwh in values.items():
                self._publish(f"/sensor/{sid[name]}/counter", f'[{ts}, {mwh // 1000}.{mwh % 1000:03d}, "Wh"]', False)
        if gauges:
            watts = {"pplus": max(net_w, 0.0), "pminus": max(-net_w, 0.0)}
            if "solar" in sid:
                watts["solar"] = max(pv_w, 0.0)
            for name, w in watts.items():
                self._publish(f"/sensor/{sid[name]}/gauge", f'[{ts}, {w:.3f}, "W"]', False)
            volts = 230.0 + 4.0 * math.sin(ts / 97.0)
            self._publish(f"/sensor/{sid['vrms']}/gauge", f'[{ts}, {volts:.3f}, "V"]', False)

    # -- running ---------------------------------------------------------------------------------

    def skip_to(self, t: datetime) -> None:
        """The Fluksometer was off until ``t``: nothing is published in between (its clamps did not
        count either, so the production counter misses that energy; the house's P1 registers do not)."""
        self._next = max(self._next, t.astimezone(UTC).replace(microsecond=0))  # type: ignore[type-var]

    def run_until(self, end: datetime) -> None:
        """Publish every second up to ``end`` as fast as possible."""
        while self._next <= end:  # type: ignore[operator]
            self.step()

    def run(self) -> None:
        """Publish in real time × ``speed`` until :meth:`stop`."""
        t0 = time.monotonic()
        sim0 = self._next
        assert sim0 is not None
        while not self._stop.is_set():
            target = sim0 + timedelta(seconds=(time.monotonic() - t0) * self.speed)
            while self._next <= target and not self._stop.is_set():  # type: ignore[operator]
                self.step()
            self._stop.wait(min(0.05, 1.0 / self.speed))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="flukso-emulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


def _mwh(whole_wh: int, exact_wh: float) -> int:
    """The register in mWh: whole Wh exactly the P1 register, the fraction from the exact integral."""
    frac = min(999, max(0, int((exact_wh - whole_wh) * 1000)))
    return whole_wh * 1000 + frac

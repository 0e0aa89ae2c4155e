"""The home-automation feed: everything the meters say, the quarter-hours and the consume-now signal
on MQTT, with Home Assistant discovery (paho-mqtt 2.x).

Topic tree (``<base>`` = ``mqtt.base_topic``, default ``quartier``; ``<node>`` = ``mqtt.node_id``, by
default the grid meter's serial, so renaming the Pi orphans nothing and two Pis never share an id).
Plain numbers unless marked JSON; (r) = retained, published when it changes; others at most every
``mqtt.power_interval_s``::

    <base>/<node>/status                           online | offline (r; offline is the last will)
    <base>/<node>/gateway                          online | offline (r): meter data is flowing
    <base>/<node>/power/import_w                   W >= 0, taken from the grid now
    <base>/<node>/power/export_w                   W >= 0, injected now
    <base>/<node>/power/net_w                      W, signed: import - export
    <base>/<node>/energy/import_wh_total           Wh, the meter's import registers summed (r)
    <base>/<node>/energy/export_wh_total           Wh (r)
    <base>/<node>/energy/{import,export}_t<n>_wh   Wh, one register per tariff (r)
    <base>/<node>/tariff                           the active tariff, as the meter numbers it (r)
    <base>/<node>/phase/l<n>/{voltage_v,current_a,import_w,export_w}
    <base>/<node>/{gas,water,heat}/<channel>       m³ (gas, water) or energy, the MBus reading (r)
    <base>/<node>/production/<meter>/energy_wh_total  Wh, a production meter's register (r)
    <base>/<node>/production/<meter>/power_w       W
    <base>/<node>/quarter_hour/running             JSON {start, elapsed_s, import_wh, export_wh, projected_demand_w, time}
    <base>/<node>/quarter_hour/running/import_wh   Wh so far in the running quarter-hour
    <base>/<node>/quarter_hour/running/export_wh
    <base>/<node>/quarter_hour/projected_demand_w  W, the quarter-hour average demand if power holds
    <base>/<node>/quarter_hour/meter_demand_w      W, the meter's own running average (e-MUCS 1-0:1.4.0)
    <base>/<node>/quarter_hour/peak_margin_w       W, month peak - projected demand (< 0: a new peak)
    <base>/<node>/quarter_hour/last                JSON (r) {start, end, import_wh, export_wh, quality}
    <base>/<node>/month_peak_w                     W, this month's highest quarter-hour demand (r)
    <base>/<node>/signal                           JSON (r): the /api/v1/signal object
    <base>/<node>/signal/state                     green | amber | red (r)
    <base>/<node>/signal/headroom_w                W (r)
    <base>/<node>/signal/reason_text               the signal in words, in the node's language (r; the page's wording)
    <base>/<node>/signal/triggered_load/<id>/set   (subscribed) W a load started because of the signal; 0 = stopped
    <base>/<node>/diagnostics/refused              readings the daemon refused, all meters (r)
    <base>/<node>/diagnostics/metering             JSON (r): accepted and refused per meter and reason
    <base>/<node>/diagnostics/outbox               quarter-hours waiting for a sink (r)
    <base>/<node>/diagnostics/last_push            ISO time a sink last delivered (r)
    <base>/<node>/diagnostics/version              this software's version (r)
    <base>/<node>/diagnostics/started              ISO time the daemon started (r)

The grid meter is the meter whose source says ``role = "grid"`` (gateway/sources.py), or
``web.meter_id``; production meters (a Flukso ``production`` sensor, a P1 source with
``role = "production"``) each get an energy and a power entity; never the first meter seen.

Home Assistant: one device-based discovery message at ``<prefix>/device/<node>/config`` (retained;
services/node/ha_discovery.py builds it), sent on every connection, whenever Home Assistant's status
topic says ``online`` and when the set of entities changes (a production meter or a tariff appears).
Stale discovery is cleared: components that our previous message had and this one has not are sent
once as ``{"p": platform}`` (Home Assistant deletes them), and the device an older version published
under the host name is removed with an empty retained message. Entities are available only while both
this service (``status``) and the meter data (``gateway``) are online; diagnostics while the service is.

DSMR-reader's layout (``mqtt.dsmr_reader_topics = true``; ``<p>`` = ``mqtt.dsmr_reader_prefix``, default
``dsmr``), for Home Assistant's built-in DSMR Reader integration, also published for the grid meter;
services/node/dsmr_reader.py builds it (and says what is left out and why). Same rules: (r) on change,
the others at most every ``mqtt.power_interval_s``; a value the meter does not give is not sent::

    <p>/reading/electricity_{delivered,returned}_{1,2}       kWh, 3 decimals: the meter's tariff 1, 2 registers (r)
    <p>/reading/electricity_currently_{delivered,returned}  kW, 3 decimals
    <p>/reading/phase_currently_{delivered,returned}_l<n>   kW
    <p>/reading/phase_voltage_l<n>                          V
    <p>/reading/phase_power_current_l<n>                    A
    <p>/reading/timestamp                                   ISO time of the reading (UTC)
    <p>/reading/extra_device_delivered                      m³, the gas meter (r)
    <p>/consumption/gas/{delivered,read_at}                 m³ and the gas meter's reading time (r)
    <p>/meter-stats/electricity_tariff                      1 | 2, the meter's own number (r)
    <p>/day-consumption/electricity_merged                  kWh imported since local midnight (r)
    <p>/day-consumption/electricity_returned_merged         kWh exported (r); both only when the store has the whole day
    <p>/consumption/quarter-hour-peak-electricity/{average_delivered,read_at_start,read_at_end}
                                                            the last quarter-hour's import as average kW (r)

Home Assistant's integration subscribes to ``dsmr/...`` only: another prefix is for a bridge or another
tool; two nodes on one broker must not both publish under the same prefix.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.logs import get_logger
from services.node.dsmr_reader import Message, dsmr_messages
from services.node.ha_discovery import VERSION, MeterView, T, device_config, meter_view, slug, submeter_of

log = get_logger("quartier.services.mqtt")

ONLINE, OFFLINE = "online", "offline"


@dataclass(frozen=True, slots=True)
class FeedSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str = ""
    base_topic: str = "quartier"
    node_id: str = ""  # empty: from the grid meter's serial, once its first reading arrives
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    keepalive_s: int = 30
    # powers, currents, voltages and the running quarter-hour at most this often; registers, tariff,
    # gas and the month peak whenever they change (HA's recorder keeps every state it is sent)
    min_interval_s: float = 5.0
    diagnostics_interval_s: float = 30.0  # the daemon's refusal counts, from its health file
    signal_repeat_s: float = 60.0  # the signal again even without a change (a light that just woke up)
    configuration_url: str | None = None  # the node's page, linked from Home Assistant's device page
    dsmr_reader_topics: bool = False  # also DSMR-reader's topic layout (services/node/dsmr_reader.py)
    dsmr_reader_prefix: str = "dsmr"

    @classmethod
    def from_config(cls, mqtt, web_port: int | None = None) -> FeedSettings:
        """From a :class:`gateway.config.MqttConfig` (and the web service's port, for the link)."""
        url = mqtt.configuration_url
        if url is None and web_port is not None:
            url = f"http://{socket.gethostname()}.local:{web_port}/"
        return cls(
            host=mqtt.host, port=mqtt.port, username=mqtt.username, password=mqtt.password.get_secret_value(),
            base_topic=mqtt.base_topic, node_id=mqtt.node_id or "", discovery=mqtt.discovery,
            discovery_prefix=mqtt.discovery_prefix, keepalive_s=mqtt.keepalive_s,
            min_interval_s=mqtt.power_interval_s, configuration_url=url,
            dsmr_reader_topics=mqtt.dsmr_reader_topics, dsmr_reader_prefix=mqtt.dsmr_reader_prefix,
        )


def default_node_id() -> str:
    """The host name, reduced to what Home Assistant accepts in discovery ids: what versions before
    the serial-based identity used (its discovery is cleared)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "quartier"


def node_id_from_serial(serial: str) -> str:
    """A discovery id and topic level from a meter serial: stable across host names, unique per meter."""
    return slug(serial.strip(), 64)


class Topics:
    """The documented topic tree of one node."""

    def __init__(self, base: str, node: str, discovery_prefix: str = "homeassistant") -> None:
        self.node = node
        self.root = r = f"{base}/{node}"
        self.status = f"{r}/status"
        self.gateway = f"{r}/gateway"
        self.import_w = f"{r}/{T.import_w}"
        self.export_w = f"{r}/{T.export_w}"
        self.net_w = f"{r}/{T.net_w}"
        self.import_total = f"{r}/{T.import_total}"
        self.export_total = f"{r}/{T.export_total}"
        self.qh_running = f"{r}/quarter_hour/running"
        self.qh_running_import = f"{r}/quarter_hour/running/import_wh"
        self.qh_running_export = f"{r}/quarter_hour/running/export_wh"
        self.projected_demand = f"{r}/{T.projected}"
        self.qh_last = f"{r}/quarter_hour/last"
        self.month_peak = f"{r}/{T.month_peak}"
        self.signal = f"{r}/signal"
        self.signal_state = f"{r}/signal/state"
        self.headroom = f"{r}/signal/headroom_w"
        self.reason_text = f"{r}/signal/reason_text"
        self.triggered_set = f"{r}/signal/triggered_load/+/set"
        self.refused = f"{r}/diagnostics/refused"
        self.metering = f"{r}/diagnostics/metering"
        self.outbox = f"{r}/diagnostics/outbox"
        self.last_push = f"{r}/diagnostics/last_push"
        self.version = f"{r}/diagnostics/version"
        self.started = f"{r}/diagnostics/started"
        self.ha_status = f"{discovery_prefix}/status"
        self.discovery_prefix = discovery_prefix
        self.discovery = f"{discovery_prefix}/device/{node}/config"

    def of(self, path: str) -> str:
        return f"{self.root}/{path}"

    def triggered_id(self, topic: str) -> str | None:
        prefix, suffix = f"{self.root}/signal/triggered_load/", "/set"
        if topic.startswith(prefix) and topic.endswith(suffix):
            load_id = topic[len(prefix):-len(suffix)]
            return load_id if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", load_id) else None
        return None


def _num(x: float | int | None) -> str | None:
    if x is None:
        return None
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _num3(x: float | None) -> str | None:
    return None if x is None else (str(int(x)) if float(x).is_integer() else f"{x:.3f}".rstrip("0"))


def discovery_config(t: Topics, view: MeterView | None = None, *, configuration_url: str | None = None,
                     removed: dict[str, str] | None = None) -> dict:
    """The device-based discovery payload (Home Assistant 2024.12+) for what the meters give."""
    return device_config(t, view or MeterView(), uid=f"quartier_{t.node}", configuration_url=configuration_url,
                         removed=removed)


def live_messages(t: Topics, live: dict) -> list[Message]:
    """Power, registers and the running quarter-hour from the ``/api/v1/live`` object."""
    out: list[Message] = []
    p = live.get("power")
    if p:
        out += [(t.import_w, _num(p["import_w"]), False), (t.export_w, _num(p["export_w"]), False),
                (t.net_w, _num(p["net_w"]), False)]
    reg = live.get("registers") or {}
    if reg.get("import_wh_total") is not None:
        out.append((t.import_total, _num(reg["import_wh_total"]), True))
    if reg.get("export_wh_total") is not None:
        out.append((t.export_total, _num(reg["export_wh_total"]), True))
    q = live.get("quarter_hour")
    if q and q.get("import_wh") is not None:
        running = {k: q.get(k) for k in ("start", "elapsed_s", "import_wh", "export_wh", "projected_demand_w")}
        running["time"] = live.get("time")  # the reading's meter time: how fresh the figures are
        out += [(t.qh_running, json.dumps(running, separators=(",", ":")), False),
                (t.qh_running_import, _num(q["import_wh"]), False),
                (t.qh_running_export, _num(q["export_wh"]), False)]
        if q.get("projected_demand_w") is not None:
            out.append((t.projected_demand, _num(q["projected_demand_w"]), False))
            if live.get("month_peak_w") is not None:
                out.append((t.of(T.peak_margin), _num(float(live["month_peak_w"]) - float(q["projected_demand_w"])), False))
    if live.get("month_peak_w") is not None:
        out.append((t.month_peak, _num(live["month_peak_w"]), True))
    return [m for m in out if m[1] is not None]


def meter_messages(t: Topics, grid: dict | None, producers: dict[str, dict] | None = None) -> list[Message]:
    """What the ``/api/v1/live`` object does not carry, from the daemon's ``reading`` messages: registers
    per tariff, the active tariff, per-phase values, sub-meters, the meter's demand, production."""
    out: list[Message] = []
    if grid is not None:
        for direction in ("import", "export"):
            regs = grid.get(f"{direction}_by_tariff") or {}
            if len(regs) > 1 or "0" not in regs:
                for tariff, wh in regs.items():
                    if wh is not None and re.fullmatch(r"[0-9A-Za-z]{1,4}", tariff):
                        out.append((t.of(T.register(direction, tariff)), _num(wh), True))
        if grid.get("tariff") is not None:
            out.append((t.of(T.tariff), str(grid["tariff"]), True))
        for ph in grid.get("phases") or []:
            n = ph.get("phase")
            if n not in (1, 2, 3):
                continue
            for what in ("voltage_v", "current_a", "import_w", "export_w"):
                if ph.get(what) is not None:
                    out.append((t.of(T.phase(n, what)), _num(ph[what]), False))
        for m in grid.get("submeters") or []:
            s = submeter_of(m)
            if s is not None and m.get("value") is not None:
                out.append((t.of(T.sub(s)), _num3(float(m["value"])), True))
        if grid.get("demand_w") is not None:
            out.append((t.of(T.demand), _num(grid["demand_w"]), False))
    for meter, r in sorted((producers or {}).items()):
        # a production meter's production is its export register (flukso/sensors.py: production role)
        total = r.get("export_wh_total")
        if total is not None:
            out.append((t.of(T.production(meter, "energy_wh_total")), _num(total), True))
        if r.get("export_w") is not None:
            out.append((t.of(T.production(meter, "power_w")), _num(r["export_w"]), False))
    return [m for m in out if m[1] is not None]


def signal_messages(t: Topics, signal: dict) -> list[Message]:
    out = [(t.signal, json.dumps(signal, separators=(",", ":")), True),
           (t.signal_state, signal["state"], True),
           (t.headroom, str(signal["headroom_w"]), True)]
    if signal.get("text"):
        out.append((t.reason_text, signal["text"], True))
    return out


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def diagnostic_messages(t: Topics, metering: dict | None, health: dict | None = None) -> list[Message]:
    """The daemon's refusals (``gateway.health.metering_summary``): a count and its detail; from its
    health file the outbox backlog, the last push of any sink and when it started."""
    out: list[Message] = []
    if metering:
        meters = metering.get("meters") or {}
        total = sum(m.get("refused_total") or 0 for m in meters.values())
        detail = {mid: {"accepted": m.get("accepted"), "refused": m.get("refused") or {}} for mid, m in meters.items()}
        out += [(t.refused, str(total), True), (t.metering, json.dumps(detail, separators=(",", ":")), True)]
    if health:
        if health.get("outbox_depth") is not None:
            out.append((t.outbox, str(int(health["outbox_depth"])), True))
        pushes = [s.get("last_success") for s in (health.get("sinks") or {}).values() if s.get("last_success")]
        if pushes:
            out.append((t.last_push, max(pushes), True))
        try:
            written = datetime.fromisoformat(str(health["time"]).replace("Z", "+00:00"))
            started = written - timedelta(seconds=float(health["uptime_s"]))
            out.append((t.started, _iso(started.replace(microsecond=0)), True))
        except (KeyError, TypeError, ValueError):
            pass
    return out


def quarter_hour_messages(t: Topics, qh: dict) -> list[Message]:
    body = {k: qh.get(k) for k in ("start", "end", "import_wh", "export_wh", "quality")}
    return [(t.qh_last, json.dumps(body, separators=(",", ":")), True)]


class MqttFeed:
    """Publishes the node state to the broker; reconnects forever; never blocks the web service."""

    def __init__(self, settings: FeedSettings) -> None:
        self.settings = settings
        self.node_id: str | None = settings.node_id or None
        self.topics: Topics | None = None
        self.client = None
        self.state = None  # services.node.web.state.NodeState
        self.connected = False
        self.published = 0
        self.announcements = 0
        self.connects = 0
        self.cleared: list[str] = []  # stale discovery topics removed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_live = 0.0
        self._last_signal = 0.0
        self._last_diagnostics = 0.0
        self._sent: dict[str, str] = {}  # retained topic -> last payload (state is sent on change)
        self._view: MeterView | None = None
        self._removed: dict[str, str] = {}  # components to delete, with their platform
        self._started = False
        self._lock = threading.Lock()
        self._unsubscribe = None
        if self.node_id:
            self._make_client()

    def _make_client(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        assert self.node_id
        s = self.settings
        self.topics = Topics(s.base_topic, self.node_id, s.discovery_prefix)
        # the client id follows the identity: two Pis (two meters) never kick each other off
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"quartier-{self.node_id}-feed"[:128])
        if s.username:
            self.client.username_pw_set(s.username, s.password or None)
        self.client.will_set(self.topics.status, OFFLINE, qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # -- wiring ------------------------------------------------------------------------------------

    def attach(self, state) -> None:
        """Listen to the node state (call on the event loop thread)."""
        self.state = state
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._unsubscribe = state.subscribe(self._on_update)

    def start(self) -> None:
        """Connect now when the identity is configured, else once the grid meter's serial is known."""
        self._started = True
        if self.client is None:
            log.info("mqtt.waiting_for_meter", extra={"broker": f"{self.settings.host}:{self.settings.port}"})
            return
        s = self.settings
        self.client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        self.client.loop_start()
        log.info("mqtt.starting", extra={"broker": f"{s.host}:{s.port}", "node": self.node_id, "root": self.topics.root,
                                         "dsmr_reader": s.dsmr_reader_prefix if s.dsmr_reader_topics else None})

    def _identify(self) -> None:
        """The grid meter's first reading: its serial is the node's identity."""
        r = self.state.reading if self.state is not None else None
        if self.client is not None or r is None:
            return
        serial = r.get("serial") or r.get("meter_id")
        if not serial:
            return
        self.node_id = node_id_from_serial(str(serial))
        self._make_client()
        log.info("mqtt.identity", extra={"node": self.node_id, "serial": serial})
        if self._started:
            self.start()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.client is None:
            return
        if self.connected:
            info = self.client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        log.info("mqtt.stopped", extra={"published": self.published})

    def diagnostics_due(self) -> bool:
        return self.connected and time.monotonic() - self._last_diagnostics >= self.settings.diagnostics_interval_s

    def publish_diagnostics(self, metering: dict | None, health: dict | None = None) -> None:
        """Called from the web service's ticker (its event loop), every ``diagnostics_interval_s``."""
        self._last_diagnostics = time.monotonic()
        for topic, payload, retain in diagnostic_messages(self.topics, metering, health):
            self._publish_state(topic, payload)

    def status(self) -> dict:
        s = self.settings
        return {"connected": self.connected, "broker": f"{s.host}:{s.port}",
                "root": self.topics.root if self.topics else None, "node": self.node_id,
                "published": self.published, "announcements": self.announcements, "connects": self.connects}

    # -- paho callbacks (its network thread) -----------------------------------------------------

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt.refused", extra={"reason": str(reason_code)})
            return
        self.connected = True
        self.connects += 1
        log.info("mqtt.connected", extra={"broker": f"{self.settings.host}:{self.settings.port}"})
        subs = [(self.topics.ha_status, 1), (self.topics.triggered_set, 1)]
        if self.settings.discovery:
            # retained: what we (or an older version under the host name) announced before
            subs.append((self.topics.discovery, 1))
            legacy = self._legacy_discovery()
            if legacy is not None:
                subs.append((legacy, 1))
        client.subscribe(subs)
        self._publish(self.topics.status, ONLINE, retain=True)
        self._call_soon(self._announce)

    def _legacy_discovery(self) -> str | None:
        """The device topic versions before the serial-based identity used (the host name)."""
        if self.settings.node_id:
            return None  # an identity the installer chose: nothing was derived, nothing to clear
        old = default_node_id()
        return None if old == self.node_id else f"{self.settings.discovery_prefix}/device/{old}/config"

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if self.connected:
            log.warning("mqtt.disconnected", extra={"reason": str(reason_code)})
        self.connected = False

    def _on_message(self, _client, _userdata, msg) -> None:
        topic = msg.topic
        if topic == self.topics.discovery or topic == self._legacy_discovery():
            self._call_soon(lambda: self._seen_discovery(topic, msg.payload))
            return
        payload = msg.payload.decode("utf-8", "replace").strip()
        if topic == self.topics.ha_status:
            if payload == ONLINE:
                log.info("mqtt.home_assistant_online")
                self._call_soon(self._announce)
            return
        load_id = self.topics.triggered_id(topic)
        if load_id is not None:
            try:
                watts = float(payload)
                if not 0 <= watts <= 100_000:
                    raise ValueError
            except ValueError:
                log.warning("mqtt.bad_triggered_load", extra={"topic": topic, "payload": payload[:40]})
                return
            if self.state is not None:
                self._call_soon(lambda: self.state.set_triggered(load_id, watts))

    def _seen_discovery(self, topic: str, raw: bytes) -> None:
        """A retained discovery message: ours from before (components gone since are deleted), or the
        host-name device of an older version (removed with an empty retained message)."""
        if not raw:
            return
        try:
            old = json.loads(raw)
            cmps = old.get("cmps") or {}
            ours = (old.get("o") or {}).get("name") == "quartier"
        except (ValueError, AttributeError):
            return
        if not ours:
            return
        if topic != self.topics.discovery:
            self._publish(topic, "", retain=True, qos=1)
            self.cleared.append(topic)
            log.info("mqtt.stale_discovery_cleared", extra={"topic": topic})
            return
        current = discovery_config(self.topics, self._current_view())["cmps"]
        gone = {k: str(c.get("p")) for k, c in cmps.items()
                if isinstance(c, dict) and len(c) > 1 and k not in current and c.get("p")}
        if gone and not gone.keys() <= self._removed.keys():
            self._removed.update(gone)
            log.info("mqtt.stale_components", extra={"components": sorted(gone)})
            self._announce()

    def _call_soon(self, fn) -> None:
        """Run ``fn`` on the event loop thread (the node state lives there)."""
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(fn)
        else:
            fn()

    # -- publishing (event loop thread) ----------------------------------------------------------

    def _publish(self, topic: str, payload: str, *, retain: bool = False, qos: int = 0) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == 0:
            self.published += 1

    def _publish_state(self, topic: str, payload: str, *, qos: int = 0) -> None:
        """A retained state: only when it changed (the recorder keeps every state it is sent)."""
        if self._sent.get(topic) == payload:
            return
        self._sent[topic] = payload
        self._publish(topic, payload, retain=True, qos=qos)

    def _current_view(self) -> MeterView:
        st = self.state
        if st is None:
            return MeterView()
        return meter_view(st.reading, self._producers())

    def _producers(self) -> dict[str, dict]:
        meters = getattr(self.state, "meters", None) or {}
        return {mid: r for mid, r in meters.items() if r.get("role") == "production"}

    def _announce(self) -> None:
        """Discovery, availability and the current state: on connect, when Home Assistant restarts and
        when the entity set changes."""
        if not self.connected:
            return
        self.announcements += 1
        self._sent.clear()  # everything again
        self._view = self._current_view()
        if self.settings.discovery:
            cfg = discovery_config(self.topics, self._view, configuration_url=self.settings.configuration_url,
                                   removed=self._removed)
            self._publish(self.topics.discovery, json.dumps(cfg, separators=(",", ":")), retain=True, qos=1)
        self._publish(self.topics.status, ONLINE, retain=True)
        self._publish_state(self.topics.version, VERSION)
        if self.state is not None:
            self._publish(self.topics.gateway, ONLINE if self.state.connected else OFFLINE, retain=True, qos=1)
            self._publish_live(force=True)
            self._publish_signal()
            if self.state.last_quarter_hour is not None:
                for topic, payload, retain in quarter_hour_messages(self.topics, self.state.last_quarter_hour):
                    self._publish(topic, payload, retain=retain)

    def _publish_live(self, *, force: bool = False) -> None:
        """States (retained) whenever they change; powers at most every ``min_interval_s``."""
        now = time.monotonic()
        powers = force or now - self._last_live >= self.settings.min_interval_s
        if powers:
            self._last_live = now
        live = self.state.live()
        msgs = live_messages(self.topics, live) + meter_messages(self.topics, self.state.reading, self._producers())
        if self.settings.dsmr_reader_topics:
            msgs += dsmr_messages(self.settings.dsmr_reader_prefix, self.state.reading, live,
                                  self.state.last_quarter_hour)
        for topic, payload, retain in msgs:
            if retain:
                self._publish_state(topic, payload)
            elif powers:
                self._publish(topic, payload)

    def _publish_signal(self) -> None:
        self._last_signal = time.monotonic()
        for topic, payload, retain in signal_messages(self.topics, self.state.signal_view()):
            self._publish(topic, payload, retain=retain)

    def _on_update(self, update) -> None:
        if self.state is None:
            return
        if self.client is None and update.kind == "reading":
            self._identify()
        if not self.connected:
            return
        now = time.monotonic()
        if update.kind == "gateway":
            self._publish(self.topics.gateway, ONLINE if self.state.connected else OFFLINE, retain=True, qos=1)
        if update.quarter_hour is not None:
            for topic, payload, retain in quarter_hour_messages(self.topics, update.quarter_hour):
                self._publish(topic, payload, retain=retain, qos=1)
        if update.kind == "reading":
            if self.settings.discovery and self._current_view() != self._view:
                self._announce()  # a tariff, phase, sub-meter or producer appeared: new entities
                return
            self._publish_live()
        signal = update.signal_changed or update.kind == "signal" \
            or (update.kind == "reading" and now - self._last_signal >= self.settings.signal_repeat_s)
        if signal:
            self._publish_signal()

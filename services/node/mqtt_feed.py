"""The home-automation feed: live power, quarter-hour energies and the consume-now signal on MQTT,
with Home Assistant discovery (paho-mqtt 2.x).

Topic tree (``<base>`` = ``mqtt.base_topic``, default ``quartier``; ``<node>`` = ``mqtt.node_id``,
default the host name). Plain numbers unless marked JSON; (r) = retained::

    <base>/<node>/status                           online | offline (r; offline is the last will)
    <base>/<node>/gateway                          online | offline (r): meter data is flowing
    <base>/<node>/power/import_w                   W >= 0, taken from the grid now
    <base>/<node>/power/export_w                   W >= 0, injected now
    <base>/<node>/power/net_w                      W, signed: import - export
    <base>/<node>/energy/import_wh_total           Wh, the meter's import register (never falls)
    <base>/<node>/energy/export_wh_total           Wh, the meter's export register (never falls)
    <base>/<node>/quarter_hour/running             JSON {start, elapsed_s, import_wh, export_wh, projected_demand_w, time}
    <base>/<node>/quarter_hour/running/import_wh   Wh so far in the running quarter-hour
    <base>/<node>/quarter_hour/running/export_wh
    <base>/<node>/quarter_hour/projected_demand_w  W, the quarter-hour average demand if power holds
    <base>/<node>/quarter_hour/last                JSON (r) {start, end, import_wh, export_wh, quality}
    <base>/<node>/month_peak_w                     W, this month's highest quarter-hour demand
    <base>/<node>/signal                           JSON (r): the /api/v1/signal object
    <base>/<node>/signal/state                     green | amber | red (r)
    <base>/<node>/signal/headroom_w                W (r)
    <base>/<node>/signal/reason_text               the signal in words, in the node's language (r; the page's wording)
    <base>/<node>/signal/triggered_load/<id>/set   (subscribed) W a load started because of the signal; 0 = stopped
    <base>/<node>/diagnostics/refused              readings the daemon refused, all meters (r)
    <base>/<node>/diagnostics/metering             JSON (r): accepted and refused per meter and reason

Home Assistant: one device-based discovery message at ``<prefix>/device/<node>/config`` (retained),
sent on every connection and again whenever Home Assistant's status topic (``<prefix>/status``)
says ``online``. Power sensors are ``measurement``; the meter's registers are ``total_increasing``
(counters that never fall); quarter-hour energies restart every quarter-hour, so they are ``total``
with ``last_reset`` at the quarter-hour's start, never ``total_increasing``. Entities are available
only while both this service (``status``) and the meter data (``gateway``) are online.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from dataclasses import dataclass

from gateway.logs import get_logger

log = get_logger("quartier.services.mqtt")

VERSION = "0.1.0"
ONLINE, OFFLINE = "online", "offline"


@dataclass(frozen=True, slots=True)
class FeedSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str = ""
    base_topic: str = "quartier"
    node_id: str = ""  # empty: the host name
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    keepalive_s: int = 30
    min_interval_s: float = 0.8  # live values at most this often (a meter sends one telegram a second)
    diagnostics_interval_s: float = 30.0  # the daemon's refusal counts, from its health file
    signal_repeat_s: float = 60.0  # the signal again even without a change (a light that just woke up)

    @classmethod
    def from_config(cls, mqtt) -> FeedSettings:
        """From a :class:`gateway.config.MqttConfig`."""
        return cls(
            host=mqtt.host, port=mqtt.port, username=mqtt.username, password=mqtt.password.get_secret_value(),
            base_topic=mqtt.base_topic, node_id=mqtt.node_id or "", discovery=mqtt.discovery,
            discovery_prefix=mqtt.discovery_prefix, keepalive_s=mqtt.keepalive_s,
        )


def default_node_id() -> str:
    """The host name, reduced to what Home Assistant accepts in discovery ids."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "quartier"


class Topics:
    """The documented topic tree of one node."""

    def __init__(self, base: str, node: str, discovery_prefix: str = "homeassistant") -> None:
        self.node = node
        self.root = r = f"{base}/{node}"
        self.status = f"{r}/status"
        self.gateway = f"{r}/gateway"
        self.import_w = f"{r}/power/import_w"
        self.export_w = f"{r}/power/export_w"
        self.net_w = f"{r}/power/net_w"
        self.import_total = f"{r}/energy/import_wh_total"
        self.export_total = f"{r}/energy/export_wh_total"
        self.qh_running = f"{r}/quarter_hour/running"
        self.qh_running_import = f"{r}/quarter_hour/running/import_wh"
        self.qh_running_export = f"{r}/quarter_hour/running/export_wh"
        self.projected_demand = f"{r}/quarter_hour/projected_demand_w"
        self.qh_last = f"{r}/quarter_hour/last"
        self.month_peak = f"{r}/month_peak_w"
        self.signal = f"{r}/signal"
        self.signal_state = f"{r}/signal/state"
        self.headroom = f"{r}/signal/headroom_w"
        self.reason_text = f"{r}/signal/reason_text"
        self.triggered_set = f"{r}/signal/triggered_load/+/set"
        self.refused = f"{r}/diagnostics/refused"
        self.metering = f"{r}/diagnostics/metering"
        self.ha_status = f"{discovery_prefix}/status"
        self.discovery = f"{discovery_prefix}/device/{node}/config"

    def triggered_id(self, topic: str) -> str | None:
        prefix, suffix = f"{self.root}/signal/triggered_load/", "/set"
        if topic.startswith(prefix) and topic.endswith(suffix):
            load_id = topic[len(prefix):-len(suffix)]
            return load_id if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", load_id) else None
        return None


Message = tuple[str, str, bool]  # topic, payload, retain


def _num(x: float | int | None) -> str | None:
    if x is None:
        return None
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def discovery_config(t: Topics) -> dict:
    """The device-based discovery payload (Home Assistant 2024.11+)."""
    uid = f"quartier_{t.node}"

    def power(name: str, topic: str, **kw) -> dict:
        return {"p": "sensor", "name": name, "unique_id": f"{uid}_{kw.pop('key')}", "state_topic": topic,
                "device_class": "power", "unit_of_measurement": "W", "state_class": "measurement", **kw}

    def energy(name: str, key: str, topic: str, state_class: str, **kw) -> dict:
        return {"p": "sensor", "name": name, "unique_id": f"{uid}_{key}", "state_topic": topic,
                "device_class": "energy", "unit_of_measurement": "Wh", "state_class": state_class, **kw}

    cmps = {
        "import_power": power("Import power", t.import_w, key="import_power"),
        "export_power": power("Export power", t.export_w, key="export_power"),
        "net_power": power("Net power", t.net_w, key="net_power"),
        "import_energy": energy("Import energy", "import_energy", t.import_total, "total_increasing"),
        "export_energy": energy("Export energy", "export_energy", t.export_total, "total_increasing"),
        "quarter_import": energy("Quarter-hour import", "quarter_import", t.qh_running, "total",
                                 value_template="{{ value_json.import_wh }}",
                                 last_reset_value_template="{{ value_json.start }}"),
        "quarter_export": energy("Quarter-hour export", "quarter_export", t.qh_running, "total",
                                 value_template="{{ value_json.export_wh }}",
                                 last_reset_value_template="{{ value_json.start }}"),
        "last_quarter_import": energy("Last quarter-hour import", "last_quarter_import", t.qh_last, "total",
                                      value_template="{{ value_json.import_wh }}",
                                      last_reset_value_template="{{ value_json.start }}"),
        "last_quarter_export": energy("Last quarter-hour export", "last_quarter_export", t.qh_last, "total",
                                      value_template="{{ value_json.export_wh }}",
                                      last_reset_value_template="{{ value_json.start }}"),
        "projected_demand": power("Quarter-hour demand (projected)", t.projected_demand, key="projected_demand"),
        "month_peak": power("Month peak demand", t.month_peak, key="month_peak"),
        "signal": {"p": "sensor", "name": "Consume-now signal", "unique_id": f"{uid}_signal", "state_topic": t.signal_state,
                   "device_class": "enum", "options": ["green", "amber", "red"], "icon": "mdi:traffic-light"},
        "headroom": power("Surplus headroom", t.headroom, key="headroom"),
        # the page's sentence (services/signal_words.py): held or not, the quarter-hour's balance
        "reason_text": {"p": "sensor", "name": "Consume-now signal in words", "unique_id": f"{uid}_reason_text",
                        "state_topic": t.reason_text, "icon": "mdi:message-text"},
        "consume_now": {"p": "binary_sensor", "name": "Consume now", "unique_id": f"{uid}_consume_now",
                        "state_topic": t.signal_state, "value_template": "{{ 'ON' if value == 'green' else 'OFF' }}",
                        "icon": "mdi:solar-power"},
        "reduce_now": {"p": "binary_sensor", "name": "Reduce now", "unique_id": f"{uid}_reduce_now",
                       "state_topic": t.signal, "device_class": "problem",
                       "value_template": "{{ 'ON' if value_json.reason == 'reduce_now' else 'OFF' }}"},
        # readings kept out as damaged or implausible (gateway/plausibility.py); by meter and reason
        # in the attributes
        "refused": {"p": "sensor", "name": "Refused readings", "unique_id": f"{uid}_refused", "state_topic": t.refused,
                    "entity_category": "diagnostic", "icon": "mdi:shield-alert",
                    "json_attributes_topic": t.metering},
        # the community's collective alert: "consume now" as a sensor of its own, and the message as text
        "collective_consume": {"p": "binary_sensor", "name": "Community asks to consume now",
                               "unique_id": f"{uid}_collective_consume", "state_topic": t.signal,
                               "value_template": "{{ 'ON' if value_json.reason == 'collective_consume' else 'OFF' }}",
                               "icon": "mdi:account-group"},
        "alert_message": {"p": "sensor", "name": "Community alert", "unique_id": f"{uid}_alert_message",
                          "state_topic": t.signal, "icon": "mdi:message-alert",
                          "value_template": "{{ value_json.alert.message if value_json.alert else '' }}"},
    }
    return {
        "dev": {"ids": [uid], "name": f"Quartier {t.node}", "mf": "Quartier", "mdl": "P1 metering gateway", "sw": VERSION},
        "o": {"name": "quartier", "sw": VERSION},
        "availability": [{"topic": t.status}, {"topic": t.gateway}],
        "availability_mode": "all",
        "qos": 1,
        "cmps": cmps,
    }


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
        out.append((t.month_peak, _num(live["month_peak_w"]), True))
    return [m for m in out if m[1] is not None]


def signal_messages(t: Topics, signal: dict) -> list[Message]:
    out = [(t.signal, json.dumps(signal, separators=(",", ":")), True),
           (t.signal_state, signal["state"], True),
           (t.headroom, str(signal["headroom_w"]), True)]
    if signal.get("text"):
        out.append((t.reason_text, signal["text"], True))
    return out


def diagnostic_messages(t: Topics, metering: dict | None) -> list[Message]:
    """The daemon's refusals (``gateway.health.metering_summary``): a count and its detail."""
    if not metering:
        return []
    meters = metering.get("meters") or {}
    total = sum(m.get("refused_total") or 0 for m in meters.values())
    detail = {mid: {"accepted": m.get("accepted"), "refused": m.get("refused") or {}} for mid, m in meters.items()}
    return [(t.refused, str(total), True), (t.metering, json.dumps(detail, separators=(",", ":")), True)]


def quarter_hour_messages(t: Topics, qh: dict) -> list[Message]:
    body = {k: qh.get(k) for k in ("start", "end", "import_wh", "export_wh", "quality")}
    return [(t.qh_last, json.dumps(body, separators=(",", ":")), True)]


class MqttFeed:
    """Publishes the node state to the broker; reconnects forever; never blocks the web service."""

    def __init__(self, settings: FeedSettings) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.settings = settings
        self.node_id = settings.node_id or default_node_id()
        self.topics = Topics(settings.base_topic, self.node_id, settings.discovery_prefix)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"quartier-{self.node_id}-feed")
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password or None)
        self.client.will_set(self.topics.status, OFFLINE, qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.state = None  # services.node.web.state.NodeState
        self.connected = False
        self.published = 0
        self.announcements = 0
        self.connects = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_live = 0.0
        self._last_signal = 0.0
        self._last_diagnostics = 0.0
        self._lock = threading.Lock()
        self._unsubscribe = None

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
        s = self.settings
        self.client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        self.client.loop_start()
        log.info("mqtt.starting", extra={"broker": f"{s.host}:{s.port}", "node": self.node_id, "root": self.topics.root})

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
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

    def publish_diagnostics(self, metering: dict | None) -> None:
        """Called from the web service's ticker (its event loop), every ``diagnostics_interval_s``."""
        self._last_diagnostics = time.monotonic()
        for topic, payload, retain in diagnostic_messages(self.topics, metering):
            self._publish(topic, payload, retain=retain)

    def status(self) -> dict:
        s = self.settings
        return {"connected": self.connected, "broker": f"{s.host}:{s.port}", "root": self.topics.root,
                "published": self.published, "announcements": self.announcements, "connects": self.connects}

    # -- paho callbacks (its network thread) -----------------------------------------------------

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt.refused", extra={"reason": str(reason_code)})
            return
        self.connected = True
        self.connects += 1
        log.info("mqtt.connected", extra={"broker": f"{self.settings.host}:{self.settings.port}"})
        client.subscribe([(self.topics.ha_status, 1), (self.topics.triggered_set, 1)])
        self._publish(self.topics.status, ONLINE, retain=True)
        self._call_soon(self._announce)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if self.connected:
            log.warning("mqtt.disconnected", extra={"reason": str(reason_code)})
        self.connected = False

    def _on_message(self, _client, _userdata, msg) -> None:
        topic = msg.topic
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

    def _announce(self) -> None:
        """Discovery, availability and the current state: on connect and when Home Assistant restarts."""
        if not self.connected:
            return
        self.announcements += 1
        if self.settings.discovery:
            self._publish(self.topics.discovery, json.dumps(discovery_config(self.topics), separators=(",", ":")),
                          retain=True, qos=1)
        self._publish(self.topics.status, ONLINE, retain=True)
        if self.state is not None:
            self._publish(self.topics.gateway, ONLINE if self.state.connected else OFFLINE, retain=True, qos=1)
            self._publish_state(live=True, signal=True)
            if self.state.last_quarter_hour is not None:
                for topic, payload, retain in quarter_hour_messages(self.topics, self.state.last_quarter_hour):
                    self._publish(topic, payload, retain=retain)

    def _publish_state(self, *, live: bool, signal: bool) -> None:
        now = time.monotonic()
        if live:
            self._last_live = now
            for topic, payload, retain in live_messages(self.topics, self.state.live()):
                self._publish(topic, payload, retain=retain)
        if signal:
            self._last_signal = now
            for topic, payload, retain in signal_messages(self.topics, self.state.signal_view()):
                self._publish(topic, payload, retain=retain)

    def _on_update(self, update) -> None:
        if not self.connected or self.state is None:
            return
        now = time.monotonic()
        if update.kind == "gateway":
            self._publish(self.topics.gateway, ONLINE if self.state.connected else OFFLINE, retain=True, qos=1)
        if update.quarter_hour is not None:
            for topic, payload, retain in quarter_hour_messages(self.topics, update.quarter_hour):
                self._publish(topic, payload, retain=retain, qos=1)
        live = update.kind == "reading" and now - self._last_live >= self.settings.min_interval_s
        signal = update.signal_changed or (live and now - self._last_signal >= self.settings.signal_repeat_s) \
            or update.kind == "signal"
        if live or signal:
            self._publish_state(live=live, signal=signal)

"""The MQTT feed for home automation (services/node/mqtt_feed.py): the topic tree, Home Assistant
device-based discovery, availability with a retained last will, re-announcement when Home Assistant
comes online; against a real Mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from services.node.mqtt_feed import FeedSettings, MqttFeed, Topics, discovery_config, live_messages
from tests.servers import Mosquitto, free_port
from tests.web_harness import WebRig

NODE = "kitchen"


class Listener:
    """A plain MQTT client recording everything under the given filters."""

    def __init__(self, broker: Mosquitto, *filters: str) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"listener-{time.monotonic_ns()}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([(f, 1) for f in filters])
        assert subscribed.wait(5)

    def _on_message(self, _c, _u, msg) -> None:
        with self.cond:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))
            self.cond.notify_all()

    def wait(self, topic: str, pred=lambda payload: True, timeout: float = 10.0, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, p, _r in self.messages[after:]:
                    if t == topic and pred(p):
                        return p
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({t for t, _, _ in self.messages})
                    raise AssertionError(f"no matching message on {topic} (seen topics: {seen})")
                self.cond.wait(left)

    def count(self, topic: str) -> int:
        with self.cond:
            return sum(1 for t, _, _ in self.messages if t == topic)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def feed_rig(mosquitto: Mosquitto) -> Iterator[tuple[WebRig, MqttFeed]]:
    feed = MqttFeed(FeedSettings(host=mosquitto.host, port=mosquitto.port, node_id=NODE, keepalive_s=5, min_interval_s=0))
    rig = WebRig(mqtt_feed=feed)
    try:
        rig.wait_for(lambda: feed.connected, "the feed's connection")
        # `connected` is set as the CONNACK arrives, before the feed's SUBSCRIBE reaches the broker: a
        # command published in between has no subscriber and is dropped (CI saw it once). The feed
        # announces `status` after subscribing, on the same connection, so the broker has the
        # subscriptions once a listener sees it
        status = Listener(mosquitto, f"quartier/{NODE}/status")
        try:
            status.wait(f"quartier/{NODE}/status", lambda p: p == "online")
        finally:
            status.close()
        yield rig, feed
    finally:
        rig.close()


# -- the payloads (pure) ----------------------------------------------------------------------------


def test_discovery_is_device_based_with_correct_classes():
    t = Topics("quartier", NODE)
    assert t.discovery == "homeassistant/device/kitchen/config"
    cfg = discovery_config(t)
    assert cfg["dev"]["ids"] == ["quartier_kitchen"] and cfg["o"]["name"] == "quartier"
    assert cfg["availability"] == [{"topic": "quartier/kitchen/status"}, {"topic": "quartier/kitchen/gateway"}]
    assert cfg["availability_mode"] == "all"
    cmps = cfg["cmps"]
    ids = [c["unique_id"] for c in cmps.values()]
    assert len(ids) == len(set(ids)) and all(c["p"] in ("sensor", "binary_sensor") for c in cmps.values())
    for key in ("import_power", "export_power", "net_power", "headroom", "projected_demand", "month_peak"):
        c = cmps[key]
        assert (c["device_class"], c["state_class"], c["unit_of_measurement"]) == ("power", "measurement", "W")
    # total_increasing only for the meter's registers, which never fall
    increasing = {k for k, c in cmps.items() if c.get("state_class") == "total_increasing"}
    assert increasing == {"import_energy", "export_energy"}
    assert {cmps[k]["state_topic"] for k in increasing} == {t.import_total, t.export_total}
    # quarter-hour energies restart every quarter-hour: total with a last_reset
    for key in ("quarter_import", "quarter_export", "last_quarter_import", "last_quarter_export"):
        c = cmps[key]
        assert c["device_class"] == "energy" and c["state_class"] == "total" and "last_reset_value_template" in c
    assert cmps["signal"]["device_class"] == "enum" and cmps["signal"]["options"] == ["green", "amber", "red"]


def test_live_messages_split_import_export_and_signed_net():
    t = Topics("quartier", NODE)
    live = {"power": {"import_w": 0.0, "export_w": 1234.5, "net_w": -1234.5},
            "registers": {"import_wh_total": 10, "export_wh_total": 20},
            "quarter_hour": {"start": "2026-06-01T08:00:00Z", "elapsed_s": 60.0, "import_wh": 0, "export_wh": 21,
                             "projected_demand_w": 0.0},
            "month_peak_w": 2500.0}
    msgs = {topic: (payload, retain) for topic, payload, retain in live_messages(t, live)}
    assert msgs[t.import_w] == ("0", False) and msgs[t.export_w] == ("1234.5", False) and msgs[t.net_w] == ("-1234.5", False)
    assert msgs[t.import_total] == ("10", True) and msgs[t.qh_running_export] == ("21", False)
    assert json.loads(msgs[t.qh_running][0])["start"] == "2026-06-01T08:00:00Z"


# -- against Mosquitto --------------------------------------------------------------------------------


def test_feed_publishes_the_topic_tree_and_discovery(feed_rig, mosquitto: Mosquitto):
    rig, feed = feed_rig
    ha = Listener(mosquitto, "quartier/#", "homeassistant/#")
    try:
        disc = json.loads(ha.wait("homeassistant/device/kitchen/config"))
        assert disc["cmps"]["import_power"]["state_topic"] == "quartier/kitchen/power/import_w"
        assert ha.wait("quartier/kitchen/status") == "online"
        rig.feed(0, export_w=2000)
        rig.feed(60, export_w=2000)
        # the gateway's availability may say "offline" until the feed has seen the daemon's data
        ha.wait("quartier/kitchen/gateway", lambda p: p == "online")
        ha.wait("quartier/kitchen/power/export_w", lambda p: p == "2000")
        assert ha.wait("quartier/kitchen/power/import_w") == "0"
        ha.wait("quartier/kitchen/power/net_w", lambda p: p == "-2000")
        ha.wait("quartier/kitchen/signal/state", lambda p: p == "green")
        ha.wait("quartier/kitchen/signal/headroom_w", lambda p: int(p) > 0)
        ha.wait("quartier/kitchen/energy/export_wh_total", lambda p: p == "500033")
        rig.feed(840, export_w=2000)  # closes the quarter-hour
        last = json.loads(ha.wait("quartier/kitchen/quarter_hour/last"))
        assert last == {"start": "2026-06-01T08:00:00Z", "end": "2026-06-01T08:15:00Z", "import_wh": 0,
                        "export_wh": 500, "quality": "measured"}
    finally:
        ha.close()
    # a late subscriber (a light that just woke up) gets the retained state at once
    late = Listener(mosquitto, "quartier/kitchen/signal/state", "quartier/kitchen/quarter_hour/last")
    try:
        assert late.wait("quartier/kitchen/signal/state") == "green"
        assert late.messages[0][2] is True  # retained
    finally:
        late.close()


def test_reannounces_when_home_assistant_comes_online(feed_rig, mosquitto: Mosquitto):
    rig, feed = feed_rig
    ha = Listener(mosquitto, "homeassistant/device/kitchen/config")
    try:
        ha.wait("homeassistant/device/kitchen/config")
        n = ha.count("homeassistant/device/kitchen/config")
        before = feed.announcements
        pub = mqtt.Client(CallbackAPIVersion.VERSION2)
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        pub.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
        ha.wait("homeassistant/device/kitchen/config", after=n)
        assert feed.announcements == before + 1
        pub.publish("homeassistant/status", "offline", qos=1).wait_for_publish(5)
        time.sleep(0.3)
        assert feed.announcements == before + 1  # only "online" re-announces
        pub.loop_stop()
        pub.disconnect()
    finally:
        ha.close()


def test_triggered_load_from_home_automation_reaches_the_signal(feed_rig, mosquitto: Mosquitto):
    rig, _feed = feed_rig
    rig.feed(0, export_w=3000)
    rig.feed(60, export_w=3000)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        pub.publish("quartier/kitchen/signal/triggered_load/boiler/set", "1800", qos=1).wait_for_publish(5)
        rig.wait_for(lambda: rig.get("/api/v1/signal")["triggered_w"] == 1800, "the triggered load")
        pub.publish("quartier/kitchen/signal/triggered_load/boiler/set", "not a number", qos=1).wait_for_publish(5)
        pub.publish("quartier/kitchen/signal/triggered_load/boiler/set", "0", qos=1).wait_for_publish(5)
        rig.wait_for(lambda: rig.get("/api/v1/signal")["triggered_w"] == 0, "the load stopped")
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_gateway_availability_follows_the_live_feed(feed_rig, mosquitto: Mosquitto):
    rig, _feed = feed_rig
    ha = Listener(mosquitto, "quartier/kitchen/gateway")
    try:
        # the gateway's availability may say "offline" until the feed has seen the daemon's data
        ha.wait("quartier/kitchen/gateway", lambda p: p == "online")
        rig.publisher.stop()
        ha.wait("quartier/kitchen/gateway", lambda p: p == "offline")
        rig.publisher.start()
        ha.wait("quartier/kitchen/gateway", lambda p: p == "online", after=2)
    finally:
        ha.close()


def _web_process(tmp: Path, broker: Mosquitto) -> subprocess.Popen:
    cfg = tmp / "q.toml"
    cfg.write_text("\n".join([
        "[store]", f'path = "{tmp / "q.sqlite"}"',
        "[daemon]", f'runtime_dir = "{tmp / "run"}"',
        "[web]", 'host = "127.0.0.1"', f"port = {free_port()}",
        "[mqtt]", "enabled = true", f'host = "{broker.host}"', f"port = {broker.port}", f'node_id = "{NODE}"',
        "keepalive_s = 5",
    ]) + "\n")
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "web", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "web.log", "wb"),
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_last_will_marks_the_node_offline_when_the_service_dies(mosquitto: Mosquitto):
    with tempfile.TemporaryDirectory(prefix="qm") as d:
        tmp = Path(d)
        ha = Listener(mosquitto, "quartier/kitchen/status", "quartier/kitchen/gateway")
        proc = _web_process(tmp, mosquitto)
        try:
            assert ha.wait("quartier/kitchen/status", timeout=30) == "online"
            assert ha.wait("quartier/kitchen/gateway") == "offline"  # no daemon running: no meter data
            n = len(ha.messages)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            ha.wait("quartier/kitchen/status", lambda p: p == "offline", after=n, timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
            ha.close()
        late = Listener(mosquitto, "quartier/kitchen/status")
        try:
            assert late.wait("quartier/kitchen/status") == "offline"  # the will is retained
        finally:
            late.close()


def test_clean_stop_publishes_offline(mosquitto: Mosquitto):
    with tempfile.TemporaryDirectory(prefix="qm") as d:
        tmp = Path(d)
        ha = Listener(mosquitto, "quartier/kitchen/status")
        proc = _web_process(tmp, mosquitto)
        try:
            assert ha.wait("quartier/kitchen/status", timeout=30) == "online"
            n = len(ha.messages)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
            ha.wait("quartier/kitchen/status", lambda p: p == "offline", after=n)
        finally:
            if proc.poll() is None:
                proc.kill()
            ha.close()


def test_feed_without_a_broker_keeps_the_web_service_working():
    port = free_port()  # nobody listens there
    feed = MqttFeed(FeedSettings(host="127.0.0.1", port=port, node_id=NODE))
    rig = WebRig(mqtt_feed=feed)
    try:
        rig.feed(0, export_w=500)
        rig.wait_live(lambda x: x["power"] is not None, "a reading")
        health = rig.get("/api/v1/health")
        assert health["mqtt"]["connected"] is False and health["status"] == "ok"
    finally:
        rig.close()


def test_refused_readings_reach_home_assistant_as_a_diagnostic(mosquitto: Mosquitto):
    """The daemon's refusals (its health file beside the live socket) become a diagnostic entity."""
    feed = MqttFeed(FeedSettings(host=mosquitto.host, port=mosquitto.port, node_id=NODE, keepalive_s=5,
                                 min_interval_s=0, diagnostics_interval_s=0.2))
    rig = WebRig(mqtt_feed=feed)
    ha = Listener(mosquitto, "quartier/kitchen/diagnostics/#", "homeassistant/#")
    try:
        disc = json.loads(ha.wait("homeassistant/device/kitchen/config"))
        refused = disc["cmps"]["refused"]
        # a diagnostic, kept out of long-term statistics: the daemon's counts start again at a restart
        assert refused["entity_category"] == "diagnostic" and "state_class" not in refused
        assert refused["json_attributes_topic"] == "quartier/kitchen/diagnostics/metering"
        (rig.dir / "health.json").write_text(json.dumps({
            "time": "2026-06-01T08:00:00Z", "outbox_depth": 0,
            "meters": {"1SAG1100000292": {"telegrams": 100, "accepted": 97,
                                          "refused": {"no_crc": 2, "register_drop": 1, "time_jump": 0}}}}))
        assert ha.wait("quartier/kitchen/diagnostics/refused", lambda p: p == "3") == "3"
        detail = json.loads(ha.wait("quartier/kitchen/diagnostics/metering"))
        assert detail == {"1SAG1100000292": {"accepted": 97, "refused": {"no_crc": 2, "register_drop": 1}}}
        health = rig.get("/api/v1/health")
        assert health["metering"]["meters"]["1SAG1100000292"]["refused_total"] == 3
    finally:
        ha.close()
        rig.close()


def test_identity_from_the_meter_serial_and_stale_discovery_cleared(mosquitto: Mosquitto, monkeypatch):
    """No node_id: the feed waits for the grid meter, then announces under its serial; the device an
    older version announced under the host name is removed, and components gone since are deleted."""
    import socket

    from services.node.mqtt_feed import node_id_from_serial
    from tests.web_harness import METER

    monkeypatch.setattr(socket, "gethostname", lambda: "raspberrypi")
    node = node_id_from_serial(METER)
    old = mqtt.Client(CallbackAPIVersion.VERSION2)
    old.connect(mosquitto.host, mosquitto.port)
    old.loop_start()
    legacy = {"dev": {"ids": ["quartier_raspberrypi"]}, "o": {"name": "quartier"}, "cmps": {}}
    ours_before = {"dev": {"ids": [f"quartier_{node}"]}, "o": {"name": "quartier"},
                   "cmps": {"production_gone": {"p": "sensor", "name": "Production gone", "state_topic": "x"}}}
    old.publish("homeassistant/device/raspberrypi/config", json.dumps(legacy), qos=1, retain=True).wait_for_publish(5)
    old.publish(f"homeassistant/device/{node}/config", json.dumps(ours_before), qos=1, retain=True).wait_for_publish(5)
    old.loop_stop()
    old.disconnect()
    feed = MqttFeed(FeedSettings(host=mosquitto.host, port=mosquitto.port, keepalive_s=5, min_interval_s=3600))
    ha = Listener(mosquitto, "homeassistant/#", f"quartier/{node}/#")
    rig = WebRig(mqtt_feed=feed)
    try:
        time.sleep(0.5)
        assert feed.client is None and not feed.connected  # no meter yet: no identity, no connection
        rig.feed(0, export_w=2000)
        rig.wait_for(lambda: feed.connected, "the feed's connection")
        assert feed.node_id == node and feed.client._client_id.decode() == f"quartier-{node}-feed"
        ha.wait("homeassistant/device/raspberrypi/config", lambda p: p == "")  # the legacy device removed
        disc = json.loads(ha.wait(f"homeassistant/device/{node}/config",
                                  lambda p: '"production_gone":{"p":"sensor"}' in p))
        assert disc["dev"]["sn"] == METER and "import_energy" in disc["cmps"]
        # registers on change, powers at most every min_interval_s (here: once an hour)
        first = ha.wait(f"quartier/{node}/energy/export_wh_total")
        time.sleep(0.3)  # the re-announcement (with the deletion) publishes every state once more
        after = len(ha.messages)
        n_power = ha.count(f"quartier/{node}/power/export_w")
        for s in (60, 60, 60):
            rig.feed(s, export_w=2000)
        ha.wait(f"quartier/{node}/energy/export_wh_total", lambda p: int(p) == int(first) + 100)
        time.sleep(0.3)
        assert ha.count(f"quartier/{node}/power/export_w") == n_power
        totals = [p for t, p, _r in ha.messages[after:] if t == f"quartier/{node}/energy/export_wh_total"]
        assert len(totals) == len(set(totals))  # never the same register value twice in a row
    finally:
        ha.close()
        rig.close()

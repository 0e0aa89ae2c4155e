"""Issue 14: the collective alert, end to end through the real pieces.

One setup for the module: Mosquitto with the generated TLS + ACL configuration, the community server
and its operator API (uvicorn), two nodes (alice, a consumer; the school, a producer), each with its
daemon side (store, live socket, the uplink over TLS as its own broker user) and its web service
(uvicorn, Home Assistant feed to a local broker); alice's GPIO light on gpiozero's mock pins; Bob is a
member without a node. The operator raises an alert through the API: every node turns red within
5 s, its page shows the message in French, Dutch and English (headless Chromium, screenshots in
artifacts/), its Home Assistant feed says "reduce now" with the message, the light blinks red; the
end turns it back; a node offline during the raise shows the alert when it comes back; a scheduled
alert starts on time; an expired one is never shown; the effect equals a hand-computed baseline.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn

from gateway.config import Config
from gateway.live import LivePublisher
from gateway.store import Store
from gateway.uplink import UplinkSettings, node_uplink
from gateway.wire import AlertNotice, AlertsMsg, LiveMsg, operation_topic, pseudonym
from services.community.api import create_app as operator_app
from services.community.ledger import Incoming, Ledger
from services.community.server import BrokerLink, CommunityServer
from services.node.web.server import build
from services.allocation.model import load_community
from services.community.roster import Roster
from tests.community_fixtures import COMMUNITY_TOML, SECRET
from tests.community_harness import Client, SecureMosquitto, make_broker
from tests.servers import Mosquitto, free_port

TOKEN = "operator-token-for-the-alert-tests"
EAN = {"alice": "541448820000000001", "bob": "541448820000000002", "school": "541448820000000003",
       "cabine": "541448820000000099"}
# the school's roof: the operation is green; the cabin's meter sees the whole street (and is no member)
POWER = {"alice": (600.0, 0.0), "school": (0.0, 4200.0), "cabine": (9000.0, 0.0)}
# the street's low-voltage cabin: an observer meter of op1 (a Flukso on a gateway, docs/fleet.md)
OBSERVER = '''[[operations.members]]
id = "cabine"
role = "observer"
meter = "541448820000000099"
max_power_w = 400000

'''
COMMUNITY = COMMUNITY_TOML.replace('id = "bob"\n', 'id = "bob"\nlanguage = "nl"\n').replace('[[operations]]\nid = "op2"', OBSERVER + '[[operations]]\nid = "op2"')
BXL = ZoneInfo("Europe/Brussels")
ART = Path(__file__).resolve().parents[1] / "artifacts"
LATENCIES: list[tuple[str, str, float]] = []  # (what, node, seconds from the API's answer to the node's signal)


def serve(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           lifespan="on", http="h11", ws="none", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


def until(pred, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Node:
    """The daemon side (store, live socket, uplink) and the web service of one member's Pi."""

    def __init__(self, name: str, tmp: Path, broker: SecureMosquitto, password: str, ha: Mosquitto | None,
                 web: bool = True) -> None:
        self.name = name
        self.p = pseudonym(EAN[name], SECRET)
        self.settings = UplinkSettings(host=broker.host, port=broker.port, community="moulin", operation="op1",
                                       pseudonym=self.p, password=password, ca_file=str(broker.bdir.ca_cert),
                                       live_interval_s=0.2)
        self.run_dir = Path(tempfile.mkdtemp(prefix="qa"))  # a Unix socket path must stay short
        self.pub = LivePublisher(self.run_dir / "live.sock")
        self.pub.start()
        self.store = Store(tmp / f"{name}.sqlite", sinks=("uplink",))
        self.stop_daemon: threading.Event | None = None
        self.thread: threading.Thread | None = None
        self.start_daemon()
        self.http = None
        if not web:  # the cabin's gateway: no page
            return
        cfg = {"store": {"path": str(tmp / f"{name}.sqlite")}, "daemon": {"runtime_dir": str(self.run_dir)},
               "uplink": {"enabled": True, "host": broker.host, "port": broker.port, "community": "moulin",
                          "operation": "op1", "pseudonym": self.p},
               "web": {"signal": {"hold_s": 0}}}
        if ha is not None:
            cfg["mqtt"] = {"enabled": True, "host": ha.host, "port": ha.port, "node_id": name}
        self.url, self.server, self.web_thread = serve(build(Config(**cfg)))
        self.http = httpx.Client(base_url=self.url, timeout=5)

    def start_daemon(self) -> None:
        imp, exp = POWER[self.name]
        self.sink = node_uplink(self.store, self.settings, live=self.pub, idle_poll_s=0.1,
                                live_source=lambda: LiveMsg(meter=self.p, operation="op1", time=datetime.now(UTC),
                                                            import_w=imp, export_w=exp))
        self.stop_daemon = threading.Event()
        self.thread = threading.Thread(target=self.sink.run, args=(self.stop_daemon,), daemon=True)
        self.thread.start()
        assert self.sink.uplink.wait_connected(10), f"{self.name}: uplink did not connect"

    def halt_daemon(self) -> None:
        assert self.stop_daemon is not None and self.thread is not None
        self.stop_daemon.set()
        self.thread.join(10)

    def signal(self) -> dict:
        return self.http.get("/api/v1/signal").json()

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.server.should_exit = True
            self.web_thread.join(10)
        if self.thread is not None and self.thread.is_alive():
            self.halt_daemon()
        self.pub.stop()
        self.store.close()


class HomeAssistant:
    """What Home Assistant would read: every retained and live message on the node's local broker."""

    def __init__(self, broker: Mosquitto) -> None:
        self.last: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha", protocol=mqtt.MQTTv5)
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, *a: c.subscribe([("quartier/#", 0), ("homeassistant/#", 0)])
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.last[msg.topic] = msg.payload

    def get(self, topic: str) -> bytes | None:
        with self.lock:
            return self.last.get(topic)

    def discovery(self) -> dict:
        with self.lock:
            found = [json.loads(v) for k, v in self.last.items() if k.startswith("homeassistant/") and v]
        return next((d for d in found if "cmps" in d), {})

    def binary_sensor(self, component: str) -> bool | None:
        """The state HA gives the binary sensor: its value_template applied to its state topic."""
        cmp = self.discovery().get("cmps", {}).get(component)
        if cmp is None:
            return None
        raw = self.get(cmp["state_topic"])
        if raw is None:
            return None
        reason = {"reduce_now": "reduce_now", "collective_consume": "collective_consume"}[component]
        assert f"value_json.reason == '{reason}'" in cmp["value_template"]
        return json.loads(raw)["reason"] == reason

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from services.node.light import LedLight, LightLoop

    tmp = tmp_path_factory.mktemp("alerts")
    gateways = {pseudonym(e, SECRET): "op1" for e in EAN.values()}
    bdir, passwords = make_broker(tmp, "moulin", gateways)
    broker = SecureMosquitto(tmp / "mosquitto", bdir)
    broker.start()
    ha_broker = Mosquitto(tmp / "ha")
    ha_broker.start()
    ledger = Ledger(tmp / "community.sqlite")
    (tmp / "community.toml").write_text(COMMUNITY)
    srv = CommunityServer(Roster.build(load_community(tmp / "community.toml"), SECRET, ["op1"]), ledger,
                          BrokerLink(broker.host, broker.port, "server", passwords["server"], str(bdir.ca_cert),
                                     client_id="server"), totals_interval_s=0.3)
    srv.start()
    assert srv.wait_connected(10)
    op_url, op_server, op_thread = serve(operator_app(srv.roster, ledger, [TOKEN], server=srv))
    nodes = {n: Node(n, tmp, broker, passwords[pseudonym(EAN[n], SECRET)], ha_broker if n == "alice" else None)
             for n in ("alice", "school")}
    cabin = Node("cabine", tmp, broker, passwords[pseudonym(EAN["cabine"], SECRET)], None, web=False)
    ha = HomeAssistant(ha_broker)
    factory = MockFactory(pin_class=MockPWMPin)
    previous = Device.pin_factory
    Device.pin_factory = factory
    light = LedLight((17, 27, 22))
    stop_light = threading.Event()
    loop = LightLoop(light, nodes["alice"].url + "/api/v1/signal", None, interval_s=0.2)
    light_thread = threading.Thread(target=loop.run, args=(stop_light,), daemon=True)
    light_thread.start()
    api = httpx.Client(base_url=op_url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"})
    box = {"srv": srv, "ledger": ledger, "nodes": nodes, "cabin": cabin, "api": api, "op_url": op_url, "ha": ha, "factory": factory,
           "broker": broker, "passwords": passwords, "bdir": bdir, "tmp": tmp}
    try:
        for n in nodes.values():  # the operation's surplus reaches both nodes: green before any alert
            until(lambda n=n: n.signal()["state"] == "green", f"{n.name}: green on the operation's surplus", 20)
        yield box
    finally:
        stop_light.set()
        light_thread.join(5)
        light.close()
        factory.reset()
        Device.pin_factory = previous
        api.close()
        ha.close()
        for n in nodes.values():
            n.close()
        cabin.close()
        op_server.should_exit = True
        op_thread.join(10)
        srv.stop()
        ledger.close()
        ha_broker.close()
        broker.close()
        if LATENCIES:
            print("\nraise-to-node latencies:", ", ".join(f"{w} {n} {s:.2f} s" for w, n, s in LATENCIES))


def _wait_red(rig, what: str, t0: float, message: str) -> None:
    for name, n in rig["nodes"].items():
        sig = until(lambda n=n: (s := n.signal())["reason"] == "reduce_now" and s, f"{name}: red after {what}", 5.0)
        LATENCIES.append((what, name, time.monotonic() - t0))
        assert sig["state"] == "red" and sig["alert"]["message"] == message


# -- the effect of an alert, on seeded data (first: the nodes then show it as the last result) ---------


def test_effect_equals_a_hand_computed_baseline(rig) -> None:
    srv, ledger = rig["srv"], rig["ledger"]
    day = (datetime.now(BXL) - timedelta(days=1)).replace(hour=18, minute=0, second=0, microsecond=0)
    q0 = day.astimezone(UTC)

    def week(k: int) -> datetime:  # the same weekday and local time k weeks before
        return (day - timedelta(days=7 * k)).astimezone(UTC)

    # (alice, bob, school, cabin) imports in each of the window's two quarter-hours
    data = {0: (200, 100, 0, 1000), 1: (400, 200, 0, 1500), 2: (300, 200, 0, 1300), 3: (100, 100, 0, 900),
            4: (350, 150, 0, 1200)}
    rows = []
    for k, wh in data.items():
        for i in range(2):
            for member, imp in zip(("alice", "bob", "school", "cabine"), wh, strict=True):
                if k == 4 and i == 1 and member == "bob":
                    continue  # week 4 misses one figure: not a baseline week
                rows.append(Incoming("op1", member, week(k) + timedelta(minutes=15 * i), imp, 0, "measured", 0.0))
    ledger.add_quarter_hours(rows)
    t = datetime.now(UTC) - timedelta(days=40)
    alert = srv.alerts.add("op1", "reduce", "pic à la cabine", q0, q0 + timedelta(minutes=30), t)
    srv.alerts.add("op1", "reduce", "an older alert", week(3), week(3) + timedelta(minutes=30), t)  # week 3: excluded
    got = {a["id"]: a for a in rig["api"].get("/api/v1/operations/op1/alerts").json()["alerts"]}
    eff = got[alert.id]["effect"]
    # hand-computed: the window 2 x (200 + 100) = 0.6 kWh; baseline weeks 1 and 2 only (3 had an alert,
    # 4 misses a figure): (2 x 600 + 2 x 500) / 2 = 1.1 kWh; change (0.6 - 1.1) / 1.1 = -45.5 %
    assert (eff["members_kwh"], eff["members_baseline_kwh"], eff["members_change_pct"]) == (0.6, 1.1, -45.5)
    assert eff["baseline_weeks"]["members"] == 2
    # the cabin: 2 x 1000 = 2.0 kWh against weeks 1, 2 and 4 (its week 4 is complete): (3.0 + 2.6 + 2.4) / 3
    # = 2.667 kWh; change (2.0 - 8/3) / (8/3) = -25.0 %
    assert (eff["observer_kwh"], eff["observer_baseline_kwh"], eff["observer_change_pct"]) == (2.0, 2.667, -25.0)
    assert eff["baseline_weeks"]["observer"] == 3
    assert got[alert.id]["status"] == "expired"
    # the members' pages show the last alert's collective result
    srv.publish_alerts("op1")
    for n in rig["nodes"].values():
        until(lambda n=n: (n.http.get("/api/v1/live").json().get("last_alert") or {}).get("members_change_pct") == -45.5,
              f"{n.name}: the last alert's result")


# -- observer meters ------------------------------------------------------------------------------------


def test_an_observer_meter_reports_but_never_enters_an_allocation(rig) -> None:
    srv, ledger, api, nodes, cabin = rig["srv"], rig["ledger"], rig["api"], rig["nodes"], rig["cabin"]
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    figures = {"alice": (300, 0), "bob": (200, 0), "school": (0, 900), "cabine": (2500, 0)}
    bob = pseudonym(EAN["bob"], SECRET)
    bob_client = Client(rig["broker"].host, rig["broker"].port, rig["bdir"].ca_cert, bob, rig["passwords"][bob], client_id=bob)
    try:
        assert bob_client.wait_connected() == 0
        for name, (imp, exp) in figures.items():
            from gateway.wire import QuarterHourMsg, meter_topic

            p = pseudonym(EAN[name], SECRET)
            payload = QuarterHourMsg(meter=p, operation="op1", start=start, import_wh=imp, export_wh=exp).to_bytes()
            if name == "bob":
                bob_client.publish(meter_topic("moulin", "op1", p, "qh"), payload)
            else:
                up = cabin.sink.uplink if name == "cabine" else nodes[name].sink.uplink
                up.publish_quarter_hours([payload], 10)
        until(lambda: ledger.is_allocated("op1", start), "the quarter-hour allocated", 10)
        until(lambda: ledger.member_quarter_hours("op1", "cabine", start, start + timedelta(minutes=15)),
              "the cabin's quarter-hour in the ledger", 10)
    finally:
        bob_client.close()
    # allocated without waiting for the cabin and without it: fixed-equal splits the school's 900 Wh
    # among the three members, capped by demand (alice 300, bob 200 -> 300 + 200 shared)
    month = start.astimezone(BXL).strftime("%Y-%m")
    alloc = api.get(f"/api/v1/operations/op1/allocation?month={month}").json()["members"]
    assert "cabine" not in alloc and alloc["alice"]["received_wh"] >= 300
    # the operation's live totals leave it out (its 9 kW would make the street red)
    totals = srv.last_totals["op1"]
    assert (totals.members_total, totals.consumption_w, totals.pool_w) == (3, 600.0, 4200.0)
    members = {m["id"]: m for m in api.get("/api/v1/operations/op1/members").json()}
    assert members["cabine"]["role"] == "observer" and members["cabine"]["status"] == "online"
    day = start.astimezone(BXL).date().isoformat()
    obs = until(lambda: (o := api.get(f"/api/v1/operations/op1/observers?day={day}").json()) and o[0]["live"] and o,
                "the cabin's live power")
    assert obs[0]["id"] == "cabine" and obs[0]["live"]["import_w"] == 9000.0
    assert [(q["import_wh"]) for q in obs[0]["quarter_hours"] if q["start"] == start.astimezone(BXL).isoformat()] == [2500]


# -- the operator's API refuses what it must -----------------------------------------------------------


@pytest.mark.parametrize("body, status, words", [
    ({"minutes": 0}, 422, "minutes"),
    ({"minutes": 1441}, 422, "minutes"),
    ({"minutes": 10, "message": "x" * 201}, 422, "message"),
    ({"minutes": 10, "kind": "panic"}, 422, "kind"),
    ({"minutes": 10, "start": "2026-06-21T18:00:00"}, 422, "time zone"),
    ({"minutes": 10, "start": "2020-06-21T18:00:00+02:00"}, 422, "already be over"),
    ({"minutes": 10, "start": "tomorrow"}, 422, "start"),
    ({"minutes": 10, "colour": "red"}, 422, "colour"),
    ({"minutes": 10, "start_local": "18:00"}, 422, "start_local"),
    ({"minutes": 10, "start_local": "2027-03-28T02:30"}, 422, "start_local: 2027-03-28T02:30 does not exist in Europe/Brussels"),
    ({"minutes": 10, "start_local": "2027-06-21T18:00", "start": "2027-06-21T18:00:00+02:00"}, 422, "not both"),
    ([1, 2], 422, "body"),
])
def test_bad_alert_requests_get_a_4xx_with_a_message(rig, body, status, words) -> None:
    r = rig["api"].put("/api/v1/operations/op1/alert", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_the_form_s_start_is_the_meters_wall_time_in_the_operation_s_zone(rig) -> None:
    """The operator page sends the wall time typed (start_local): read in the operation's zone on the
    meters' clock, never in the browser's zone; the list says what that clock reads now."""
    listed = rig["api"].get("/api/v1/operations/op1/alerts").json()
    assert listed["timezone"] == "Europe/Brussels"
    now = datetime.fromisoformat(listed["now"])
    assert now.utcoffset() in (timedelta(hours=1), timedelta(hours=2))
    day = (now + timedelta(days=1)).date()
    r = rig["api"].put("/api/v1/operations/op1/alert", json={"minutes": 10, "start_local": f"{day}T18:00"})
    assert r.status_code == 200, r.text
    start = datetime.fromisoformat(r.json()["start"])
    assert start == datetime(day.year, day.month, day.day, 18, 0, tzinfo=BXL)
    assert rig["api"].delete(f"/api/v1/operations/op1/alert?id={r.json()['id']}").status_code == 200


def test_raising_needs_the_operator_token_and_a_known_operation(rig) -> None:
    assert httpx.put(rig["op_url"] + "/api/v1/operations/op1/alert", json={"minutes": 5}).status_code == 401
    r = rig["api"].put("/api/v1/operations/nope/alert", json={"minutes": 5})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert rig["api"].delete("/api/v1/operations/op1/alert?id=a-unknown").status_code == 404


def test_a_member_cannot_publish_an_alert(rig) -> None:
    """The ACL: members read the alert topic, only the server writes it."""
    broker, pw = rig["broker"], rig["passwords"]
    me = pseudonym(EAN["bob"], SECRET)
    forged = AlertsMsg(operation="op1", time=datetime.now(UTC), alerts=[AlertNotice(
        id="forged", message="forged by a member", start=datetime.now(UTC), until=datetime.now(UTC) + timedelta(hours=1))])
    listener = Client(broker.host, broker.port, rig["bdir"].ca_cert, "server", pw["server"], client_id="server-listen")
    bob = Client(broker.host, broker.port, rig["bdir"].ca_cert, me, pw[me], client_id=me)
    try:
        assert listener.wait_connected() == 0 and bob.wait_connected() == 0
        topic = operation_topic("moulin", "op1", "alert")
        assert listener.subscribe(topic)[0] < 0x80
        assert bob.subscribe(topic)[0] < 0x80  # a member may read it
        bob.publish(topic, forged.to_bytes())
        time.sleep(1.0)
        assert not any(b"forged" in p for _, p in listener.received(topic))
        assert all(n.signal()["reason"] != "reduce_now" for n in rig["nodes"].values())
    finally:
        bob.close()
        listener.close()


# -- raise, see it everywhere, end ----------------------------------------------------------------------


def test_raise_turns_every_node_red_within_5_s_and_the_end_turns_it_back(rig) -> None:
    from tests.browser import Browser

    api, nodes, ha, factory = rig["api"], rig["nodes"], rig["ha"], rig["factory"]
    message = "Pic à la cabine : merci de décaler lave-linge et voiture après 20 h."
    t0 = time.monotonic()
    r = api.put("/api/v1/operations/op1/alert", json={"minutes": 30, "message": message})
    assert r.status_code == 200, r.text
    raised = r.json()
    assert raised["status"] == "active" and raised["kind"] == "reduce"
    _wait_red(rig, "raise", t0, message)
    sig = nodes["alice"].signal()
    assert datetime.fromisoformat(sig["alert"]["until"].replace("Z", "+00:00")) == datetime.fromisoformat(raised["until"])
    assert datetime.fromisoformat(sig["alert"]["start"].replace("Z", "+00:00")) == datetime.fromisoformat(raised["start"])
    # Home Assistant: the "reduce now" binary sensor is on, the message is the alert sensor's text
    until(lambda: ha.binary_sensor("reduce_now") is True, "Home Assistant's reduce-now sensor on", 5)
    cmp = ha.discovery()["cmps"]["alert_message"]
    assert json.loads(ha.get(cmp["state_topic"]))["alert"]["message"] == message
    assert "value_json.alert.message" in cmp["value_template"]
    # the light blinks red (gpiozero mock pins): the red pin toggles, green and amber stay off
    red = factory.pin(22)
    until(lambda: len({s.state for s in red.states[-6:]}) == 2 and not factory.pin(17).state, "the red LED blinking", 5)
    # the page, in each language
    browser = Browser(width=412, height=915)
    texts = {"fr": ("Réduisez votre consommation", "Message de la communauté"),
             "nl": ("Verminder nu uw verbruik", "Bericht van de gemeenschap"),
             "en": ("Please reduce your consumption", "Message from the community")}
    try:
        for lang, (sentence, prefix) in texts.items():
            browser.navigate(nodes["alice"].url + f"/?lang={lang}")
            browser.wait_js(f"document.getElementById('sentence').textContent.startsWith({json.dumps(sentence)})",
                            timeout=10, what=f"{lang}: the reduce-now sentence")
            shown = browser.wait_js("!document.getElementById('alert-msg').hidden && "
                                    "document.getElementById('alert-msg').textContent", timeout=10, what=f"{lang}: message")
            assert shown == f"{prefix}: {message}" or shown == f"{prefix} : {message}"
            assert browser.js("document.getElementById('light').className") == "light red"
            result = browser.js("document.getElementById('alert-result').textContent")
            assert "46" in result, result  # the last finished alert's result, seeded above (45.5 % rounded)
            browser.screenshot(ART / f"alert-reduce-{lang}.png")
    finally:
        browser.close()

    t0 = time.monotonic()
    r = api.delete("/api/v1/operations/op1/alert")
    assert r.status_code == 200 and [a["id"] for a in r.json()["ended"]] == [raised["id"]]
    for name, n in nodes.items():
        until(lambda n=n: n.signal()["reason"] != "reduce_now", f"{name}: back after the end", 5.0)
        LATENCIES.append(("end", name, time.monotonic() - t0))
        assert n.signal()["state"] == "green" and n.signal()["alert"] is None
    until(lambda: ha.binary_sensor("reduce_now") is False, "Home Assistant's reduce-now sensor off", 5)
    until(lambda: factory.pin(17).state and not factory.pin(22).state, "the light back to steady green", 5)
    listed = {a["id"]: a for a in api.get("/api/v1/operations/op1/alerts").json()["alerts"]}
    assert listed[raised["id"]]["status"] == "ended"


def test_a_consume_alert_turns_the_nodes_green_with_the_message(rig) -> None:
    from tests.browser import Browser

    api, nodes, ha = rig["api"], rig["nodes"], rig["ha"]
    r = api.put("/api/v1/operations/op1/alert", json={"minutes": 20, "message": "Journée défi : lessives à midi !",
                                                      "kind": "consume"})
    assert r.status_code == 200, r.text
    for name, n in nodes.items():
        sig = until(lambda n=n: (s := n.signal())["reason"] == "collective_consume" and s, f"{name}: consume", 5.0)
        assert sig["state"] == "green" and sig["alert"]["kind"] == "consume"
    until(lambda: ha.binary_sensor("collective_consume") is True, "Home Assistant's consume sensor on", 5)
    browser = Browser(width=412, height=915)
    try:
        browser.navigate(nodes["school"].url + "/?lang=nl")
        browser.wait_js("document.getElementById('sentence').textContent.startsWith('De gemeenschap vraagt')", timeout=10)
        assert "lessives" in browser.js("document.getElementById('alert-msg').textContent")
        browser.screenshot(ART / "alert-consume-nl.png")
    finally:
        browser.close()
    assert api.delete("/api/v1/operations/op1/alert").status_code == 200
    for name, n in nodes.items():
        until(lambda n=n: n.signal()["reason"] != "collective_consume", f"{name}: consume ended", 5.0)


def test_a_node_offline_during_the_raise_shows_it_when_it_returns(rig) -> None:
    api, school = rig["api"], rig["nodes"]["school"]
    school.halt_daemon()  # the school's gateway loses its community link
    r = api.put("/api/v1/operations/op1/alert", json={"minutes": 15, "message": "offline test"})
    assert r.status_code == 200
    until(lambda: rig["nodes"]["alice"].signal()["reason"] == "reduce_now", "alice red", 5)
    time.sleep(0.5)
    assert school.signal()["reason"] != "reduce_now"  # it could not know
    t0 = time.monotonic()
    school.start_daemon()
    until(lambda: school.signal()["reason"] == "reduce_now", "school red after reconnecting", 5)
    LATENCIES.append(("reconnect", "school", time.monotonic() - t0))
    assert school.signal()["alert"]["message"] == "offline test"
    assert api.delete("/api/v1/operations/op1/alert").status_code == 200
    for name, n in rig["nodes"].items():
        until(lambda n=n: n.signal()["reason"] != "reduce_now", f"{name}: back", 5.0)


def test_a_scheduled_alert_starts_on_time(rig) -> None:
    api, nodes = rig["api"], rig["nodes"]
    start = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0) + timedelta(seconds=1)
    r = api.put("/api/v1/operations/op1/alert", json={"minutes": 1, "message": "programmée",
                                                      "start": start.astimezone(BXL).isoformat()})
    assert r.status_code == 200 and r.json()["status"] == "scheduled", r.text
    listed = api.get("/api/v1/operations/op1/alerts").json()["alerts"]
    assert [a["status"] for a in listed if a["id"] == r.json()["id"]] == ["scheduled"]
    time.sleep(1.0)  # the nodes have it by now, and must not show it yet
    for n in nodes.values():
        assert n.signal()["reason"] != "reduce_now"
    for name, n in nodes.items():
        until(lambda n=n: n.signal()["reason"] == "reduce_now", f"{name}: the scheduled alert", 15)
        lag = (datetime.now(UTC) - start).total_seconds()
        assert -1.0 <= lag <= 5.0, f"{name}: the scheduled alert started {lag:.1f} s from its start"
        LATENCIES.append(("scheduled start", name, lag))
    assert api.delete("/api/v1/operations/op1/alert").status_code == 200
    for name, n in nodes.items():
        until(lambda n=n: n.signal()["reason"] != "reduce_now", f"{name}: back", 5.0)


def test_an_expired_alert_is_never_shown(rig) -> None:
    """A stale retained message (the server's own user, as if from long ago) with an expired alert."""
    broker, pw, srv = rig["broker"], rig["passwords"], rig["srv"]
    old = datetime.now(UTC) - timedelta(hours=2)
    stale = AlertsMsg(operation="op1", time=old, alerts=[AlertNotice(
        id="old", message="expired long ago", start=old, until=old + timedelta(minutes=30))])
    c = Client(broker.host, broker.port, rig["bdir"].ca_cert, "server", pw["server"], client_id="server-stale")
    try:
        assert c.wait_connected() == 0
        c.c.publish(operation_topic("moulin", "op1", "alert"), stale.to_bytes(), qos=1, retain=True).wait_for_publish(5)
        school = rig["nodes"]["school"]
        school.halt_daemon()
        school.start_daemon()  # gets the retained message on its subscription
        time.sleep(1.0)
        for n in rig["nodes"].values():
            assert n.signal()["reason"] != "reduce_now"
    finally:
        c.close()
        srv.publish_alerts("op1")  # the server's own message again


def test_the_operator_page_raises_lists_and_ends_alerts_in_three_languages(rig) -> None:
    from tests.browser import Browser

    nodes = rig["nodes"]
    browser = Browser(width=1280, height=900)
    labels = {"fr": ("Alertes collectives", "Lancer l'alerte", "en cours", "terminée", "Heure des compteurs :"),
              "nl": ("Collectieve oproepen", "Oproep versturen", "lopend", "beëindigd", "Tijd van de meters:"),
              "en": ("Collective alerts", "Raise the alert", "active", "ended", "Meters' clock:")}
    try:
        for lang, (title, button, active, ended, clock) in labels.items():
            browser.navigate(rig["op_url"] + f"/?lang={lang}#token={TOKEN}")
            browser.wait_js("!document.getElementById('alerts').hidden && document.getElementById('a-op').value === 'op1'",
                            timeout=15, what=f"{lang}: the alert form")
            assert browser.js("document.querySelector('#alerts h2').textContent") == title
            assert browser.js("document.getElementById('a-raise').textContent") == button
            browser.wait_js(f"document.getElementById('a-now').textContent.startsWith({json.dumps(clock)})",
                            timeout=10, what=f"{lang}: the meters' clock beside the start field")
            browser.js(f"document.getElementById('a-message').value = {json.dumps('page ' + lang)}; "
                       "document.getElementById('a-minutes').value = '10'; document.getElementById('a-raise').click(); true")
            for name, n in nodes.items():
                until(lambda n=n: n.signal()["alert"] and n.signal()["alert"]["message"] == f"page {lang}",
                      f"{name}: the alert raised from the page", 5)
            browser.wait_js(f"[...document.querySelectorAll('#alert-list tr')].some(r => r.textContent.includes('page {lang}') "
                            f"&& r.querySelector('.status').textContent === {json.dumps(active)})", timeout=10,
                            what=f"{lang}: the raised alert listed as active")
            # the seeded alert's effect is on the list (members' figures against the baseline)
            assert "-45.5 %" in browser.js("document.getElementById('alert-list').textContent")
            # the cabin's meter: its live power on the operator's page, apart from the members
            browser.wait_js("document.querySelector('tr[data-observer=cabine] .power') && "
                            "document.querySelector('tr[data-observer=cabine] .power').textContent === '9000'",
                            timeout=15, what="the observer's live power")
            # watched, not a member: no row (and no statement link) in the members' table, no chart bar
            assert browser.js("document.querySelector('tr[data-member=cabine]') === null && "
                              "!document.querySelector('svg.chart').textContent.includes('cabine')")
            browser.screenshot(ART / f"operator-alerts-{lang}.png")
            browser.js("document.getElementById('a-end').click(); true")
            for name, n in nodes.items():
                until(lambda n=n: n.signal()["alert"] is None, f"{name}: ended from the page", 5)
            browser.wait_js(f"[...document.querySelectorAll('#alert-list tr')].some(r => r.textContent.includes('page {lang}') "
                            f"&& r.querySelector('.status').textContent === {json.dumps(ended)})", timeout=10,
                            what=f"{lang}: the alert listed as ended")
    finally:
        browser.close()


# -- sheets for members without a Pi -----------------------------------------------------------------------


def test_sheets_for_members_without_a_pi_hold_their_figures(rig) -> None:
    """Bob has no node: his sheet comes from the server's figures, in his language (Dutch), as a PDF."""
    import shutil
    import subprocess
    import sys

    from services.community.roster import QuarterHourResult

    ledger, tmp = rig["ledger"], rig["tmp"]
    rows, start = [], datetime(2026, 9, 10, 8, 0, tzinfo=UTC)
    for i in range(40):  # 40 quarter-hours: Bob imports 300 Wh in each (12 kWh) and is allocated 450 Wh
        q = start + timedelta(minutes=15 * i)
        rows.append(Incoming("op1", "bob", q, 300, 0, "measured", q.timestamp()))
        ledger.save_allocation(QuarterHourResult(
            operation="op1", start=q, received_wh={"bob": 450}, injection_shared_wh={"school": 450},
            consumption_wh={"bob": 300}, injection_wh={"school": 600}, estimated=(), pool_wh=600, shared_wh=450,
            total_consumption_wh=300))
    ledger.add_quarter_hours(rows)
    (tmp / "server.toml").write_text(f'secrets_file = "server-secrets.toml"\n[server]\ncommunity_file = "community.toml"\n'
                                     f'database = "{ledger.path}"\n')
    secrets = tmp / "server-secrets.toml"
    secrets.write_text(f'[server]\npseudonym_secret = "{SECRET}"\n')
    secrets.chmod(0o600)
    out = tmp / "sheets"
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "community", "sheets", "--config", str(tmp / "server.toml"),
                           "--operation", "op1", "--month", "2026-09", "--out", str(out)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert [x["member"] for x in lines[:-1]] == ["alice", "bob", "school"]  # the cabin is no member
    assert {x["member"]: x["language"] for x in lines[:-1]}["bob"] == "nl"

    def text(path: Path) -> str:
        got = subprocess.run([shutil.which("pdftotext") or "pdftotext", "-layout", str(path), "-"], capture_output=True,
                             text=True, check=True).stdout
        return " ".join(got.replace("\xa0", " ").replace("\u202f", " ").split())

    bob = text(out / "bob.pdf")
    assert "Uw energie in september" in bob and "bob" in bob
    assert "12 kWh" in bob and "18 kWh" in bob  # his import and the (oversized) allocation
    assert "(100%)" in bob and "150" not in bob  # never a percentage above 100 %
    assert "voorlopig" in bob
    alice = text(out / "alice.pdf")
    assert "Pas de chiffres pour ce mois" in alice  # no data that month: the sheet says so
    combined = text(out / "op1-2026-09.pdf")
    assert "12 kWh" in combined and "Pas de chiffres" in combined
    pages = subprocess.run([shutil.which("pdfinfo") or "pdfinfo", str(out / "op1-2026-09.pdf")], capture_output=True, text=True).stdout
    assert re.search(r"Pages:\s+3", pages), pages

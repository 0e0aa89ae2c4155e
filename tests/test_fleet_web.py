"""Two nodes and a community server: each node's web service shows the operation's live surplus, its
consume-now signal computed on the operation's basis, and this member's share of a quarter-hour the
server allocated (fleet sync through a real Mosquitto). Each node has one connection to the
community: its uplink sink writes its own share into the node's store, where the web service reads
it, and relays the operation's totals to the web service over the daemon's live socket."""

from __future__ import annotations

import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

from fastapi.testclient import TestClient

from gateway.config import Config
from gateway.store import Store
from gateway.live import LivePublisher
from gateway.uplink import Uplink, UplinkSettings, node_uplink
from services.community.ledger import Ledger
from services.community.server import BrokerLink, CommunityServer
from gateway.wire import LiveMsg, QuarterHourMsg, pseudonym
from services.node.web.server import build
from tests.community_fixtures import SECRET, recent, roster, wait

NODES = {"alice": ("541448820000000001", 600.0, 0.0), "school": ("541448820000000003", 0.0, 4200.0)}
BOB = "541448820000000002"  # the third member of op1: publishes quarter-hours only, no page
T0 = recent()  # live data: the server refuses starts older than its 40-day horizon
# one closed quarter-hour (Wh): fixed-equal splits the school's 900 Wh three ways, capped by demand
QH = {"541448820000000001": (300, 0), BOB: (200, 0), "541448820000000003": (0, 900)}


def test_two_nodes_show_the_operations_live_surplus_and_signal(tmp_path: Path, mosquitto) -> None:
    ledger = Ledger(tmp_path / "community.sqlite")
    srv = CommunityServer(roster(tmp_path, ["op1"]), ledger, BrokerLink(mosquitto.host, mosquitto.port, client_id="srv"),
                          totals_interval_s=0.2)
    srv.start()
    stop = threading.Event()
    started: list = []
    sink_threads: list[threading.Thread] = []
    stores: list[Store] = []
    publishers: list[LivePublisher] = []
    try:
        apps = {}
        uplinks: dict[str, Uplink] = {}
        for name, (ean, imp_w, exp_w) in NODES.items():
            p = pseudonym(ean, SECRET)
            s = UplinkSettings(host=mosquitto.host, port=mosquitto.port, community="moulin", operation="op1",
                               pseudonym=p, password="", live_interval_s=0.1)
            # the node's daemon side: its store, its live socket and the uplink sink (quarter-hours and
            # live summaries out; this member's allocations into the store, the totals to the socket)
            run_dir = Path(tempfile.mkdtemp(prefix="qf"))  # a Unix socket path must stay short
            pub = LivePublisher(run_dir / "live.sock")
            pub.start()
            publishers.append(pub)
            store = Store(tmp_path / f"{name}.sqlite", sinks=("uplink",))
            stores.append(store)
            sink = node_uplink(store, s, live=pub, idle_poll_s=0.1, live_source=lambda p=p, i=imp_w, e=exp_w: LiveMsg(
                meter=p, operation="op1", time=datetime.now(timezone.utc), import_w=i, export_w=e))
            t = threading.Thread(target=sink.run, args=(stop,), daemon=True)
            t.start()
            sink_threads.append(t)
            uplinks[p] = sink.uplink
            # the node's web side: no connection of its own to the community
            cfg = Config(store={"path": str(tmp_path / f"{name}.sqlite")},
                         daemon={"runtime_dir": str(run_dir)},
                         uplink={"enabled": True, "host": mosquitto.host, "port": mosquitto.port, "community": "moulin",
                                 "operation": "op1", "pseudonym": p},
                         web={"signal": {"hold_s": 0}})  # no hold: the first "no data" red must not linger
            apps[name] = TestClient(build(cfg))
        bob = Uplink(UplinkSettings(host=mosquitto.host, port=mosquitto.port, community="moulin", operation="op1",
                                    pseudonym=pseudonym(BOB, SECRET), password=""))
        bob.start()
        started.append(bob)
        uplinks[bob.settings.pseudonym] = bob
        for ean, (imp, exp) in QH.items():
            p = pseudonym(ean, SECRET)
            assert uplinks[p].wait_connected(10)
            uplinks[p].publish_quarter_hours([QuarterHourMsg(meter=p, operation="op1", start=T0, import_wh=imp,
                                                             export_wh=exp).to_bytes()], 10)
        for name, client in apps.items():
            with client:
                assert wait(lambda c=client: (c.get("/api/v1/live").json().get("operation") or {}).get("members_reporting") == 2), name
                op = client.get("/api/v1/live").json()["operation"]
                assert (op["pool_w"], op["consumption_w"], op["surplus_w"]) == (4200.0, 600.0, 3600.0)
                assert wait(lambda c=client: c.get("/api/v1/signal").json().get("state") == "green"), name
                sig = client.get("/api/v1/signal").json()
                assert sig["basis"] == "operation" and sig["headroom_w"] == 3600  # no meter of its own here
                # the community server allocated the quarter-hour and sent each member its own share
                assert wait(lambda c=client: c.get(f"/api/v1/allocation?period=day&at={T0:%Y-%m-%d}").json()["basis"] == "operation"), name
                alloc = client.get(f"/api/v1/allocation?period=day&at={T0:%Y-%m-%d}").json()
                assert alloc["operation"]["pool_wh"] == 900 and alloc["operation"]["shared_wh"] == 500
                assert alloc["shared_wh"] == {"alice": 300, "school": 0}[name]
                assert alloc["injection_shared_wh"] == {"alice": 0, "school": 500}[name]
        for name, store in zip(NODES, stores, strict=True):  # each node stored its own share only
            assert [(a.operation, a.start, a.received_wh, a.pool_wh, a.shared_wh) for a in store.allocations()] == [
                ("op1", T0, {"alice": 300, "school": 0}[name], 900, 500)]
    finally:
        stop.set()
        for t in sink_threads:
            t.join(10)
        for x in started:
            x.stop()
        srv.stop()
        ledger.close()
        for store in stores:
            store.close()
        for pub in publishers:
            pub.stop()

"""Two nodes and a community server: each node's web service shows the operation's live surplus, its
consume-now signal computed on the operation's basis, and this member's share of a quarter-hour the
server allocated (fleet sync through a real Mosquitto; each node receives only its own share)."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

from fastapi.testclient import TestClient

from gateway.config import Config
from gateway.uplink import FleetLink, LiveSummaryPublisher, Uplink, UplinkSettings
from services.community.ledger import Ledger
from services.community.server import BrokerLink, CommunityServer
from services.community.wire import LiveMsg, QuarterHourMsg, pseudonym
from services.web.fleet import Fleet
from services.web.server import build
from tests.community_fixtures import SECRET, roster, wait

NODES = {"alice": ("541448820000000001", 600.0, 0.0), "school": ("541448820000000003", 0.0, 4200.0)}
BOB = "541448820000000002"  # the third member of op1: publishes quarter-hours only, no page
T0 = datetime(2026, 6, 21, 10, 0, tzinfo=timezone.utc)
# one closed quarter-hour (Wh): fixed-equal splits the school's 900 Wh three ways, capped by demand
QH = {"541448820000000001": (300, 0), BOB: (200, 0), "541448820000000003": (0, 900)}


def test_two_nodes_show_the_operations_live_surplus_and_signal(tmp_path: Path, mosquitto) -> None:
    ledger = Ledger(tmp_path / "community.sqlite")
    srv = CommunityServer(roster(tmp_path, ["op1"]), ledger, BrokerLink(mosquitto.host, mosquitto.port, client_id="srv"),
                          totals_interval_s=0.2)
    srv.start()
    stop = threading.Event()
    started: list = []
    try:
        apps = {}
        for name, (ean, imp_w, exp_w) in NODES.items():
            p = pseudonym(ean, SECRET)
            s = UplinkSettings(host=mosquitto.host, port=mosquitto.port, community="moulin", operation="op1",
                               pseudonym=p, password="", live_interval_s=0.1)
            up = Uplink(s)
            up.start()
            live = LiveSummaryPublisher(up, lambda p=p, i=imp_w, e=exp_w: LiveMsg(
                meter=p, operation="op1", time=datetime.now(timezone.utc), import_w=i, export_w=e), 0.1)
            threading.Thread(target=live.run, args=(stop,), daemon=True).start()
            fleet = Fleet()
            link = FleetLink(s, fleet)
            link.start()
            started += [up, link]
            cfg = Config(store={"path": str(tmp_path / f"{name}.sqlite")},
                         daemon={"runtime_dir": str(tmp_path / f"run-{name}")},
                         web={"signal": {"hold_s": 0}})  # no hold: the first "no data" red must not linger
            apps[name] = TestClient(build(cfg, fleet=fleet))
        uplinks = {p.settings.pseudonym: p for p in started if isinstance(p, Uplink)}
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
                assert wait(lambda c=client: c.get("/api/v1/allocation?period=day&at=2026-06-21").json()["basis"] == "operation"), name
                alloc = client.get("/api/v1/allocation?period=day&at=2026-06-21").json()
                assert alloc["operation"]["pool_wh"] == 900 and alloc["operation"]["shared_wh"] == 500
                assert alloc["shared_wh"] == {"alice": 300, "school": 0}[name]
                assert alloc["injection_shared_wh"] == {"alice": 0, "school": 500}[name]
    finally:
        stop.set()
        for x in started:
            x.stop()
        srv.stop()
        ledger.close()

"""Two nodes and a community server: each node's web service shows the operation's live surplus and
its consume-now signal computed on the operation's basis (fleet sync through a real Mosquitto)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from fastapi.testclient import TestClient

from gateway.config import Config
from gateway.uplink import FleetLink, LiveSummaryPublisher, Uplink, UplinkSettings
from services.community.ledger import Ledger
from services.community.server import BrokerLink, CommunityServer
from services.community.wire import LiveMsg, pseudonym
from services.web.fleet import Fleet
from services.web.server import build
from tests.community_fixtures import SECRET, roster

NODES = {"alice": ("541448820000000001", 600.0, 0.0), "school": ("541448820000000003", 0.0, 4200.0)}


def wait(pred, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


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
        for name, client in apps.items():
            with client:
                assert wait(lambda c=client: (c.get("/api/v1/live").json().get("operation") or {}).get("members_reporting") == 2), name
                op = client.get("/api/v1/live").json()["operation"]
                assert (op["pool_w"], op["consumption_w"], op["surplus_w"]) == (4200.0, 600.0, 3600.0)
                assert wait(lambda c=client: c.get("/api/v1/signal").json().get("state") == "green"), name
                sig = client.get("/api/v1/signal").json()
                assert sig["basis"] == "operation" and sig["headroom_w"] == 3600  # no meter of its own here
    finally:
        stop.set()
        for x in started:
            x.stop()
        srv.stop()
        ledger.close()

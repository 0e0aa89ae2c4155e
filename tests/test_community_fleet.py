"""End to end on loopback: three nodes' uplinks, a real Mosquitto, the community server, and
VictoriaMetrics as the central InfluxDB v2 store."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

from gateway.model import Quality, QuarterHour
from gateway.store import Store
from gateway.uplink import Uplink, UplinkSettings, UplinkSink
from services.community.ledger import Ledger
from services.community.server import BrokerLink, CommunityServer
from gateway.wire import AllocationMsg, LiveMsg, TotalsMsg, pseudonym
from tests.community_fixtures import SECRET, recent, roster, wait

T0 = recent()  # live data: the server refuses starts older than its 40-day horizon
MEMBERS = {"alice": ("541448820000000001", 300, 0), "bob": ("541448820000000002", 100, 0),
           "school": ("541448820000000003", 0, 500)}


def test_three_nodes_and_a_community_server(tmp_path: Path, mosquitto, victoria_metrics) -> None:
    ledger = Ledger(tmp_path / "community.sqlite")
    srv = CommunityServer(
        roster(tmp_path, ["op1"]), ledger, BrokerLink(mosquitto.host, mosquitto.port, client_id="srv"),
        totals_interval_s=0.2,
        influx={"url": victoria_metrics.url, "token": "t", "org": "o", "bucket": "b"},
    )
    srv.start()
    assert srv.wait_connected(10)
    stop = threading.Event()
    nodes = []
    allocs: dict[str, list[AllocationMsg]] = {m: [] for m in MEMBERS}
    totals: dict[str, list[TotalsMsg]] = {m: [] for m in MEMBERS}
    try:
        for member, (ean, imp, exp) in MEMBERS.items():
            store = Store(tmp_path / f"{member}.sqlite", sinks=("uplink",))
            p = pseudonym(ean, SECRET)
            up = Uplink(
                UplinkSettings(host=mosquitto.host, port=mosquitto.port, community="moulin", operation="op1",
                               pseudonym=p, password="", meter_id=ean, live_interval_s=0.1),
                on_allocation=allocs[member].append, on_totals=totals[member].append,
            )
            now = datetime.now(timezone.utc)
            live = LiveMsg(meter=p, operation="op1", time=now, import_w=imp * 4, export_w=exp * 4)
            sink = UplinkSink(store, up, idle_poll_s=0.1, live_source=lambda live=live: live.model_copy(
                update={"time": datetime.now(timezone.utc)}))
            t = threading.Thread(target=sink.run, args=(stop,), daemon=True)
            t.start()
            nodes.append((store, sink, t))
            store.commit_quarter_hours([QuarterHour(ean, T0, imp, exp, Quality.MEASURED)])
            sink.notify()
        assert wait(lambda: all(allocs[m] for m in MEMBERS))
        assert {m: allocs[m][-1].received_wh for m in MEMBERS} == {"alice": 250, "bob": 100, "school": 0}
        assert allocs["school"][-1].injection_shared_wh == 350
        assert all(a[-1].pool_wh == 500 and a[-1].missing == 0 for a in allocs.values())
        # live: the operation's totals and signal come back to every node
        assert wait(lambda: all(totals[m] and totals[m][-1].members_reporting == 3 for m in MEMBERS))
        last = totals["alice"][-1]
        assert (last.consumption_w, last.pool_w) == (1600, 2000)
        # central store: every member's allocation, idempotent on (operation, member, start)
        assert wait(lambda: srv.stats.pushed_rows >= 3)
        pts = victoria_metrics.query_points("allocation_received_wh", operation="op1")
        assert {(s.labels["member"], s.timestamp_s, s.value) for s in pts} == {
            ("alice", int(T0.timestamp()), 250.0), ("bob", int(T0.timestamp()), 100.0),
            ("school", int(T0.timestamp()), 0.0)}
        shared = victoria_metrics.query_points("allocation_injection_shared_wh", operation="op1", member="school")
        assert [s.value for s in shared] == [350.0]
        # the operator's view: who is online, what arrived
        presence = ledger.presence("op1")
        assert {m: presence[m][0] for m in MEMBERS} == {m: "online" for m in MEMBERS}
    finally:
        stop.set()
        for _, _, t in nodes:
            t.join(5)
        srv.stop()
        for store, _, _ in nodes:
            store.close()
        ledger.close()

"""The real `quartier run` daemon with `[uplink]` enabled: simulated meter in, quarter-hours and live
summaries out to the community broker under the pseudonym."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from tests.community_harness import Client
from tests.daemon_harness import make_rig


def test_daemon_publishes_quarter_hours_and_live_summaries(tmp_path: Path, mosquitto) -> None:
    rig = make_rig(tmp_path, start=datetime(2026, 6, 1, 9, 58, tzinfo=timezone.utc), speed=300)
    admin = Client(mosquitto.host, mosquitto.port, None, None, None)
    assert admin.wait_connected() == 0
    admin.subscribe("quartier/moulin/op/+/meter/+/#")
    rig.write_config(extra_daemon="\n".join([
        "[uplink]", "enabled = true", f'host = "{mosquitto.host}"', f"port = {mosquitto.port}",
        'community = "moulin"', 'operation = "op1"', 'pseudonym = "mdaemon"', "live_interval_s = 0.2",
    ]))
    rig.start_daemon()
    try:
        rig.wait_for(lambda: len(admin.received("quartier/moulin/op/op1/meter/mdaemon/qh")) >= 2, 60, "2 quarter-hours")
        rig.wait_for(lambda: admin.received("quartier/moulin/op/op1/meter/mdaemon/live"), 20, "a live summary")
        assert (("quartier/moulin/op/op1/meter/mdaemon/status", b"online") in admin.received())
    finally:
        assert rig.stop() == 0
        rig.meter.stop()
    qhs = [json.loads(p) for _, p in admin.received("quartier/moulin/op/op1/meter/mdaemon/qh")]
    starts = [q["start"] for q in qhs]
    assert starts == sorted(starts) and all(q["meter"] == "mdaemon" for q in qhs)
    assert all(q["import_wh"] >= 0 and q["export_wh"] >= 0 for q in qhs)
    live = json.loads(admin.received("quartier/moulin/op/op1/meter/mdaemon/live")[-1][1])
    assert live["meter"] == "mdaemon" and live["export_w"] >= 0
    assert ("quartier/moulin/op/op1/meter/mdaemon/status", b"offline") in admin.received() or admin.wait_for(
        lambda: ("quartier/moulin/op/op1/meter/mdaemon/status", b"offline") in admin.received(), 5)
    from gateway.store import Store

    with Store(rig.db) as store:
        eans = store.meters()
    assert eans and not any(e.encode() in p for e in eans for _, p in admin.received())  # EAN stays home
    admin.close()


def test_an_incomplete_uplink_section_does_not_stop_metering(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, start=datetime(2026, 6, 1, 9, 58, tzinfo=timezone.utc), speed=300)
    rig.write_config(extra_daemon="[uplink]\nenabled = true\npseudonym = \"m1\"\nport = 1\n")
    rig.start_daemon()
    try:
        rig.wait_for(lambda: "uplink.misconfigured" in rig.log(), 20, "the uplink error in the log")
        rig.wait_for(lambda: (rig.health() or {}).get("meters"), 20, "metering")
    finally:
        assert rig.stop() == 0
        rig.meter.stop()
    assert "uplink.community, uplink.operation not set" in rig.log()



def test_daemon_stores_this_members_allocations_and_gets_those_sent_while_it_was_down(tmp_path: Path, mosquitto) -> None:
    from datetime import timedelta

    from fastapi.testclient import TestClient

    from gateway.config import load_config
    from gateway.store import Store
    from gateway.wire import AllocationMsg
    from services.node.web.server import build

    t0 = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)
    alloc_topic = "quartier/moulin/op/op1/meter/mdaemon/alloc"
    status_topic = "quartier/moulin/op/op1/meter/mdaemon/status"
    rig = make_rig(tmp_path, start=datetime(2026, 6, 1, 9, 58, tzinfo=timezone.utc), speed=300)
    admin = Client(mosquitto.host, mosquitto.port, None, None, None)
    assert admin.wait_connected() == 0
    admin.subscribe(status_topic)
    rig.write_config(extra_daemon="\n".join([
        "[uplink]", "enabled = true", f'host = "{mosquitto.host}"', f"port = {mosquitto.port}",
        'community = "moulin"', 'operation = "op1"', 'pseudonym = "mdaemon"',
    ]))

    def uplink_health() -> dict:  # this run's health only (the file outlives a daemon)
        h = rig.health() or {}
        return h.get("sinks", {}).get("uplink", {}) if rig.proc and h.get("pid") == rig.proc.pid else {}

    def share(start: datetime, received_wh: int) -> bytes:
        return AllocationMsg(operation="op1", start=start, received_wh=received_wh, injection_shared_wh=0, pool_wh=900,
                             shared_wh=500, consumption_wh=700).to_bytes()

    try:
        rig.start_daemon()
        try:
            rig.wait_for(lambda: (status_topic, b"online") in admin.received(), 30, "the uplink online (subscribed)")
            admin.publish(alloc_topic, share(t0, 120))
            rig.wait_for(lambda: uplink_health().get("allocations_stored") == 1, 20, "the allocation stored")
            assert uplink_health()["bad_messages"] == 0
        finally:
            assert rig.stop() == 0
        # the daemon is down (a reboot) while the community server allocates two more quarter-hours
        admin.publish(alloc_topic, share(t0 + timedelta(minutes=15), 80))
        admin.publish(alloc_topic, share(t0 + timedelta(minutes=30), 45))
        rig.start_daemon()
        try:
            rig.wait_for(lambda: uplink_health().get("allocations_stored") == 2, 30, "the queued allocations stored")
            assert uplink_health()["session_present"] is True  # the broker kept the session and its queue
        finally:
            assert rig.stop() == 0
    finally:
        rig.meter.stop()
        admin.close()
    with Store(rig.db) as store:
        assert [(a.start, a.received_wh) for a in store.allocations("op1")] == [
            (t0, 120), (t0 + timedelta(minutes=15), 80), (t0 + timedelta(minutes=30), 45)]
    with TestClient(build(load_config(rig.config))) as web:  # what the member's page shows, from the store
        month = web.get("/api/v1/allocation", params={"period": "month", "at": "2026-06-01"}).json()
    assert (month["basis"], month["shared_wh"], month["quarter_hours_with_fleet_data"]) == ("operation", 245, 3)

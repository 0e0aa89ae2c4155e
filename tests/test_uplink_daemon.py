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

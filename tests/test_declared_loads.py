"""The month's figure for the member's declared loads (services/node/web/declared.py), pure and through
the web service (tests/web_harness.py): energy of triggered loads run while green, kept across a restart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.node.web import declared
from services.node.web.declared import DeclaredTally
from services.node.web.figures import Prices
from services.node.web.service import WebService
from tests.web_harness import WebRig

TZ = ZoneInfo("Europe/Brussels")


def test_only_green_time_counts_at_the_power_that_ran_and_by_local_month(tmp_path):
    t = datetime(2026, 6, 30, 21, 50, tzinfo=UTC)  # 23:50 in Brussels
    tally = DeclaredTally(TZ)
    tally.advance(t, 2000, green=True)
    tally.advance(t + timedelta(seconds=30), 2000, green=False)  # 30 s green at 2 kW: 16.667 Wh in June
    tally.advance(t + timedelta(seconds=60), 2000, green=True)  # 30 s not green: nothing
    tally.advance(t + timedelta(seconds=90), 0, green=True)  # 30 s green at 2 kW: 16.667 Wh
    tally.advance(t + timedelta(seconds=120), 1000, green=True)  # 30 s green, nothing declared running
    tally.advance(t + timedelta(minutes=15), 1000, green=True)  # a 13-minute gap counts at most 60 s at 1 kW
    tally.advance(t + timedelta(minutes=15, seconds=30), 1000, green=True)  # from 00:05 local: July, 8.333 Wh
    assert tally.month_wh("2026-06") == pytest.approx(16.667 * 3, abs=0.01)  # a step counts in the month it starts
    assert tally.month_wh("2026-07") == pytest.approx(8.333, abs=0.01)
    path = tmp_path / declared.FILE_NAME
    declared.save(path, tally)
    assert not tally.dirty and declared.load(path, TZ).months == pytest.approx(tally.months, abs=0.001)
    path.write_text("{not json")
    assert declared.load(path, TZ).months == {}  # unreadable: start from zero (logged)
    tally.advance(t - timedelta(days=180), 1000, green=True)  # the clock went back: nothing counted, restarted
    tally.advance(t - timedelta(days=180) + timedelta(seconds=36), 0, green=True)
    assert tally.month_wh("2026-01") == pytest.approx(10.0)


def test_the_page_shows_the_month_figure_for_declared_loads_and_it_survives_a_restart():
    rig = WebRig(token="s3cret", prices=Prices(0.30, 0.10))
    try:
        ok = {"Authorization": "Bearer s3cret"}
        rig.feed(60, export_w=3000)
        rig.wait_live(lambda x: x["signal"]["state"] == "green", "green")
        live = rig.get("/api/v1/live")
        assert live["declared_loads"] == {"month": "2026-06", "green_kwh": 0.0, "savings_eur": 0.0, "running": 0, "running_w": 0.0}
        r = rig.http.put("/api/v1/signal/triggered-load/boiler", json={"watts": 2000}, headers=ok)
        assert r.status_code == 200
        for _ in range(9):  # nine minutes of meter time, green, the boiler running at 2 kW
            rig.feed(60, export_w=3000)
        live = rig.wait_live(lambda x: x["declared_loads"]["green_kwh"] >= 0.29, "nine minutes counted")
        d = live["declared_loads"]
        # 2,000 W x 9 min = 300 Wh (plus the few real seconds between the PUT and the last reading)
        assert d["month"] == "2026-06" and d["running"] == 1 and d["running_w"] == 2000
        assert 0.29 <= d["green_kwh"] <= 0.32
        assert d["savings_eur"] == round(d["green_kwh"] * 0.20, 2)  # (0.30 - 0.10) EUR per kWh
        page = rig.http.get("/").text
        assert 'id="declared-loads"' in page
        # restart of the web service: stop (writes the file beside the live socket), start a new one
        rig.server.should_exit = True
        rig.thread.join(timeout=10)
        path = rig.socket_path.parent / declared.FILE_NAME
        kept = json.loads(path.read_text())["green_wh_by_month"]["2026-06"]
        assert kept == pytest.approx(d["green_kwh"] * 1000, abs=15)
        again = WebService(rig.settings)
        assert again.state.declared.month_wh("2026-06") == pytest.approx(kept, abs=0.001)
        again.history.close()
    finally:
        rig.close()

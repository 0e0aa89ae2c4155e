"""The node web service's API (services/node/web): live state, signal, history, allocation, health,
server-sent events, tokens and CORS, against a real uvicorn fed by the real live feed."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from services.signal import SignalSettings
from services.node.web.figures import Prices
from services.node.web.fleet import Fleet, FleetQuarterHour, OperationSetup
from tests.web_harness import METER, T0, WebRig, sse_events

# any URL the browser would fetch from elsewhere (an SVG's xmlns is a name, not a fetch)
OUTSIDE = re.compile(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[a-z0-9.-]+\.[a-z]{2,}", re.I)


@pytest.fixture
def rig() -> Iterator[WebRig]:
    r = WebRig(token="s3cret", prices=Prices(grid_eur_kwh=0.32, shared_eur_kwh=0.12))
    try:
        yield r
    finally:
        r.close()


def test_live_before_any_reading_says_so(rig: WebRig):
    live = rig.get("/api/v1/live")
    assert live["gateway"]["connected"] is True and live["power"] is None
    assert live["signal"]["state"] == "red" and live["signal"]["reason"] == "no_data"


def test_live_shows_power_quarter_hour_today_and_signal(rig: WebRig):
    rig.feed(0, export_w=2400)  # 10:00:00 local, on a boundary
    rig.feed(300, export_w=2400)
    live = rig.wait_live(lambda x: x["time"] == "2026-06-01T08:05:00Z", "the reading")
    assert live["gateway"] == {"connected": True, "meter_id": METER, "last_reading_age_s": live["gateway"]["last_reading_age_s"]}
    assert live["power"] == {"import_w": 0.0, "export_w": 2400.0, "net_w": -2400.0}
    q = live["quarter_hour"]
    assert q["start"] == "2026-06-01T08:00:00Z" and q["end"] == "2026-06-01T08:15:00Z"
    assert (q["elapsed_s"], q["remaining_s"], q["import_wh"], q["export_wh"]) == (300.0, 600.0, 0, 200)
    assert live["registers"] == {"import_wh_total": 1_000_000, "export_wh_total": 500_200}
    assert live["month_peak_w"] == 3200.0
    rig.wait_for(lambda: rig.get("/api/v1/live")["today"] is not None, "today's totals")
    assert rig.get("/api/v1/live")["today"] == {"day": "2026-06-01", "import_wh": 0, "export_wh": 200, "closed_quarter_hours": 0}
    sig = rig.get("/api/v1/signal")
    assert sig["state"] == "green" and sig["reason"] == "surplus" and sig["basis"] == "own_meter"
    assert sig["headroom_w"] == 2400 and sig["valid_until"].endswith("Z")


def test_today_adds_closed_quarter_hours_from_the_store(rig: WebRig):
    rig.feed(0)
    rig.feed_quarter_hours(2, import_w=400)  # 100 Wh per quarter-hour
    rig.feed(120, import_w=400)
    # wait for the last reading too: the quarter-hour message that closes 08:15 is sent just before the
    # 08:30 reading that closed it, so for an instant the shown reading is 08:29 in a closed quarter-hour
    live = rig.wait_live(lambda x: x["time"] == "2026-06-01T08:32:00Z" and x["today"]
                         and x["today"]["closed_quarter_hours"] == 2, "two closed quarter-hours and the last reading")
    assert live["quarter_hour"]["start"] == "2026-06-01T08:30:00Z" and live["quarter_hour"]["import_wh"] == 13
    assert live["today"]["import_wh"] == 2 * 100 + 13
    assert live["signal"]["state"] == "red" and live["signal"]["reason"] == "no_surplus"


def test_quarter_hours_endpoint_lists_closed_quarter_hours_with_quality(rig: WebRig):
    rig.feed(0)
    rig.feed_quarter_hours(3, import_w=800, export_w=0)
    rig.wait_live(lambda x: x["time"] == "2026-06-01T08:45:00Z", "the last reading")
    body = rig.get("/api/v1/quarter-hours", params={"from": "2026-06-01", "to": "2026-06-02"})
    assert body["meter_id"] == METER and body["timezone"] == "Europe/Brussels"
    assert body["from"] == "2026-05-31T22:00:00Z" and body["to"] == "2026-06-01T22:00:00Z"
    assert body["basis"] == "own_meter" and body["provisional"] is True
    rows = body["quarter_hours"]
    assert [r["start"] for r in rows] == ["2026-06-01T08:00:00Z", "2026-06-01T08:15:00Z", "2026-06-01T08:30:00Z"]
    assert all(r["quality"] == "measured" and r["import_wh"] == 200 and r["shared_wh"] is None for r in rows)
    # default: today (by the meter's clock), and explicit UTC bounds
    assert rig.get("/api/v1/quarter-hours")["count"] == 3
    part = rig.get("/api/v1/quarter-hours", params={"from": "2026-06-01T08:15:00Z", "to": "2026-06-01T08:30:00+00:00"})
    assert [r["start"] for r in part["quarter_hours"]] == ["2026-06-01T08:15:00Z"]


@pytest.mark.parametrize("params, status, message", [
    ({"from": "yesterday"}, 400, "from: 'yesterday' is not an ISO 8601"),
    ({"from": "2026-06-01T10:00:00"}, 400, "has no UTC offset"),
    ({"from": "2026-06-02", "to": "2026-06-01"}, 400, "to must be after from"),
    ({"from": "2026-01-01", "to": "2026-06-01"}, 400, "at most 31 days"),
    # issue 13: these answered 500 (a day's end or the time zone stepped past year 9999 or before year 1)
    ({"from": "9999-12-31"}, 400, "from: 9999-12-31 is out of range"),
    ({"from": "0001-01-01"}, 400, "from: 0001-01-01 is out of range"),
    ({"from": "2026-06-01", "to": "9999-12-31T23:59:59Z"}, 400, "to: 9999-12-31T23:59:59+00:00 is out of range"),
    ({"from": "0001-01-01T00:00:00+01:00"}, 400, "from: 0001-01-01T00:00:00+01:00 is out of range"),
    ({"from": "2026-02-30"}, 400, "from: '2026-02-30' is not a date"),
])
def test_bad_quarter_hour_requests_get_a_4xx_with_a_message(rig: WebRig, params, status, message):
    r = rig.http.get("/api/v1/quarter-hours", params=params)
    assert r.status_code == status and message in r.json()["detail"]


def test_bad_allocation_period_is_a_422_naming_the_parameter(rig: WebRig):
    r = rig.http.get("/api/v1/allocation", params={"period": "week"})
    assert r.status_code == 422 and r.json()["detail"].startswith("period:")
    r = rig.http.get("/api/v1/allocation", params={"at": "June"})
    assert r.status_code == 422 and r.json()["detail"].startswith("at:")
    for period in ("day", "month"):  # issue 13: these answered 500
        for at in ("9999-12-31", "0001-01-01"):
            r = rig.http.get("/api/v1/allocation", params={"period": period, "at": at})
            assert r.status_code == 422 and r.json()["detail"] == f"at: {at} is out of range (between 1970-01-01 and 9998-12-31)"


def test_allocation_without_fleet_data_is_provisional_and_says_what_it_rests_on(rig: WebRig):
    rig.feed(0)
    rig.feed_quarter_hours(2, import_w=1200, export_w=0)  # 300 Wh per quarter-hour
    rig.wait_live(lambda x: x["today"] and x["today"]["closed_quarter_hours"] == 2, "closed quarter-hours")
    day = rig.get("/api/v1/allocation", params={"period": "day"})
    assert day["provisional"] is True and day["basis"] == "own_meter" and "fleet" in day["note"]
    assert (day["label"], day["import_wh"], day["export_wh"], day["quarter_hours"]) == ("2026-06-01", 600, 0, 2)
    assert day["expected_quarter_hours"] == 96
    assert day["shared_wh"] == 0 and day["self_sufficiency"] == 0.0
    assert day["sharing_rate"] is None  # no injection: undefined, not zero
    assert day["savings_eur"] == 0.0 and day["operation"] is None
    month = rig.get("/api/v1/allocation", params={"period": "month", "at": "2026-06-15"})
    assert month["label"] == "2026-06" and month["import_wh"] == 600 and month["expected_quarter_hours"] == 30 * 96
    empty = rig.get("/api/v1/allocation", params={"period": "month", "at": "2026-05-15"})
    assert empty["import_wh"] == 0 and empty["self_sufficiency"] is None


def test_allocation_with_fleet_data_uses_the_engine_per_quarter_hour():
    fleet = Fleet()
    fleet.set_setup(OperationSetup(operation_id="op1", member_id="me", rounds=("equal", "prorata"), members=("me", "m2")))
    rig = WebRig(fleet=fleet, prices=Prices(grid_eur_kwh=0.30, shared_eur_kwh=0.10))
    try:
        rig.feed(0)
        rig.feed_quarter_hours(2, import_w=1200)  # this member imports 300 Wh per quarter-hour
        rig.wait_live(lambda x: x["today"] and x["today"]["closed_quarter_hours"] == 2, "closed quarter-hours")
        # pool 1000 Wh from producer p1; round 1 equal: 500 each, "me" capped at 300; m2 gets 500;
        # round 2 prorata: the 200 left go to m2 (still short 400) -> me 300, m2 700, to grid 0
        # second quarter-hour: pool 400 -> 200 each; round 2: nobody is left with anything to give
        fleet.add_quarter_hours([
            FleetQuarterHour(T0, {"me": 300, "m2": 900}, {"p1": 1000}),
            FleetQuarterHour(T0 + timedelta(minutes=15), {"me": 300, "m2": 900}, {"p1": 400}),
        ])
        day = rig.get("/api/v1/allocation", params={"period": "day"})
        assert day["basis"] == "operation" and day["member_id"] == "me"
        assert day["shared_wh"] == 300 + 200 and day["grid_import_wh"] == 600 - 500
        assert day["self_sufficiency"] == pytest.approx(500 / 600, abs=1e-6)
        assert day["savings_eur"] == pytest.approx(0.5 * 0.20)
        assert day["operation"] == {"operation_id": "op1", "pool_wh": 1400, "shared_wh": 1000 + 400,
                                    "consumption_wh": 2400, "sharing_rate": 1.0,
                                    "self_sufficiency": pytest.approx(1400 / 2400, abs=1e-6)}
        rows = rig.get("/api/v1/quarter-hours")["quarter_hours"]
        assert [r["shared_wh"] for r in rows] == [300, 200]
    finally:
        rig.close()


def test_operation_live_totals_drive_the_signal_when_fresh():
    import time as _time

    from services.node.web.fleet import OperationLive

    fleet = Fleet()
    rig = WebRig(fleet=fleet)
    try:
        rig.feed(0)
        rig.feed(60, import_w=900)  # this household imports...
        rig.wait_live(lambda x: x["signal"]["state"] == "red", "red on the own meter")
        # ...but the operation as a whole has 4 kW of surplus
        fleet.update_live(OperationLive(start=T0, elapsed_s=60, consumption_wh=50, pool_wh=117, consumption_w=3000,
                                        pool_w=7000, as_of=T0 + timedelta(seconds=60), received_monotonic=_time.monotonic(),
                                        members_reporting=12, members_total=12))
        rig.feed(1, import_w=900)
        live = rig.wait_live(lambda x: x["signal"]["state"] == "green", "green on the operation's surplus")
        assert live["signal"]["basis"] == "operation"
        assert live["operation"]["surplus_w"] == 4000.0 and live["operation"]["members_reporting"] == 12
    finally:
        rig.close()


def test_health_and_gateway_offline_then_back(rig: WebRig):
    rig.feed(0, export_w=100)
    rig.wait_live(lambda x: x["power"] is not None, "a reading")
    h = rig.get("/api/v1/health")
    assert h["status"] == "ok" and h["gateway"]["connected"] and h["store"]["readable"] and h["mqtt"] is None
    assert h["rss_bytes"] > 0
    rig.publisher.stop()  # the daemon went away
    live = rig.wait_live(lambda x: not x["gateway"]["connected"], "gateway offline")
    assert live["signal"]["reason"] == "stale_data" or live["signal"]["held"]
    assert rig.get("/api/v1/health")["status"] == "degraded"
    rig.publisher.start()  # and came back: the client reconnects by itself, gets the latest reading
    rig.wait_live(lambda x: x["gateway"]["connected"], "gateway back")
    rig.feed(5, export_w=100)
    rig.wait_live(lambda x: x["time"] == "2026-06-01T08:00:05Z", "readings again")


def test_stream_sends_each_new_reading_and_closed_quarter_hours(rig: WebRig):
    rig.feed(0, export_w=1000)
    with httpx.Client(base_url=rig.url) as client:
        events = sse_events(client)
        kind, first = next(events)
        assert kind == "live" and set(first) >= {"gateway", "power", "quarter_hour", "today", "signal"}
        rig.feed(60, export_w=1500)
        seen = []
        for kind, data in events:
            seen.append(kind)
            if kind == "live" and data["time"] == "2026-06-01T08:01:00Z":
                assert data["power"]["export_w"] == 1500.0
                break
        # nothing new: the stream still repeats the latest state (one event per interval)
        kind, data = next(events)
        assert kind == "live" and data["time"] == "2026-06-01T08:01:00Z"
        rig.feed(840, export_w=1500)  # closes the quarter-hour
        for kind, data in events:
            if kind == "quarter_hour":
                assert data["start"] == "2026-06-01T08:00:00Z" and data["quality"] == "measured"
                break


def test_a_stalled_stream_client_does_not_hold_up_anyone(rig: WebRig):
    rig.feed(0, export_w=1000)
    stalled = socket.create_connection(("127.0.0.1", rig.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    stalled.sendall(b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
    try:
        rig.wait_for(lambda: rig.service.stream_clients == 1, "the stalled client")
        for i in range(200):
            rig.feed(1, export_w=1000 + i)
        live = rig.wait_live(lambda x: x["power"]["export_w"] == 1199.0, "the latest reading")
        assert live["gateway"]["connected"]
        with httpx.Client(base_url=rig.url) as client:
            for kind, data in sse_events(client):
                if kind == "live":
                    assert data["power"]["export_w"] == 1199.0
                    break
    finally:
        stalled.close()


def test_state_changes_need_the_bearer_token(rig: WebRig):
    rig.feed(0, export_w=3000)
    rig.feed(60, export_w=3000)
    rig.wait_live(lambda x: x["signal"]["state"] == "green", "green")
    body = {"message": "Peak on the feeder", "minutes": 30}
    r = rig.http.put("/api/v1/alert", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = rig.http.put("/api/v1/alert", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    ok = {"Authorization": "Bearer s3cret"}
    r = rig.http.put("/api/v1/alert", json=body, headers=ok)
    assert r.status_code == 200
    sig = r.json()
    assert sig["state"] == "red" and sig["reason"] == "reduce_now" and sig["alert"]["message"] == "Peak on the feeder"
    assert rig.get("/api/v1/signal")["reason"] == "reduce_now"
    r = rig.http.put("/api/v1/alert", json={"minutes": -5}, headers=ok)
    assert r.status_code == 422 and "minutes" in r.json()["detail"]
    assert rig.http.delete("/api/v1/alert", headers=ok).json()["state"] == "green"
    r = rig.http.put("/api/v1/signal/triggered-load/boiler", json={"watts": 2000}, headers=ok)
    assert r.status_code == 200 and r.json()["triggered_w"] == 2000
    assert rig.http.put("/api/v1/signal/triggered-load/bad id!", json={"watts": 1}, headers=ok).status_code == 422


def test_without_a_configured_token_state_changes_are_off():
    rig = WebRig(token="")
    try:
        r = rig.http.put("/api/v1/alert", json={"minutes": 5}, headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "web.token" in r.json()["detail"]
    finally:
        rig.close()


def test_no_cors_by_default_and_only_listed_origins_otherwise(rig: WebRig):
    r = rig.http.get("/api/v1/signal", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    other = WebRig(cors=("http://ha.local:8123",))
    try:
        r = other.http.get("/api/v1/signal", headers={"Origin": "http://ha.local:8123"})
        assert r.headers["access-control-allow-origin"] == "http://ha.local:8123"
        r = other.http.get("/api/v1/signal", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    finally:
        other.close()


def test_openapi_docs_and_the_page_are_served_offline(rig: WebRig):
    spec = rig.get("/api/v1/openapi.json")
    paths = set(spec["paths"])
    assert {"/api/v1/live", "/api/v1/quarter-hours", "/api/v1/signal", "/api/v1/allocation", "/api/v1/health",
            "/api/v1/stream", "/api/v1/alert", "/api/v1/signal/triggered-load/{load_id}"} <= paths
    docs = rig.http.get("/api/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text
    page = rig.http.get("/")
    assert page.status_code == 200 and "<html" in page.text
    total = len(page.content)
    for asset in ("app.css", "app.js", "i18n.js", "icon.svg"):
        r = rig.http.get(f"/static/{asset}")
        assert r.status_code == 200
        total += len(r.content)
        assert not OUTSIDE.search(r.text), asset  # nothing from outside the node
    assert not OUTSIDE.search(page.text)
    assert total < 150_000


def test_signal_hold_time_is_respected_through_the_service():
    rig = WebRig(signal=SignalSettings(hold_s=3600))
    try:
        rig.feed(0, export_w=3000)
        rig.feed(60, export_w=3000)
        rig.wait_live(lambda x: x["signal"]["state"] == "green", "green")
        rig.feed(900, import_w=2000)  # next quarter-hour: importing
        live = rig.wait_live(lambda x: x["time"] == "2026-06-01T08:16:00Z", "the import reading")
        assert live["signal"]["state"] == "green" and live["signal"]["held"] and live["signal"]["pending"] == "red"
    finally:
        rig.close()


def test_the_web_service_cannot_write_to_the_store(rig: WebRig):
    import sqlite3

    rig.feed(0)
    rig.feed_quarter_hours(1, import_w=400)
    rig.wait_for(lambda: rig.service.history.store() is not None, "the store")
    ro = rig.service.history.store()
    assert len(ro.quarter_hours()) == 1  # reads the daemon's commits...
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
        ro.commit_quarter_hours(rig.store.quarter_hours())  # ...and SQLite refuses any write
    with pytest.raises(sqlite3.OperationalError):
        ro._conn.execute("DELETE FROM quarter_hours")
    assert rig.store.count_quarter_hours() == 1


def test_history_prices_grid_energy_per_tariff_from_quarter_hours_and_the_stores_totals():
    """Day 1.2 kWh at 0.34 and night 0.8 kWh at 0.27, through the real pipeline, store and uvicorn:
    the day (quarter-hours) and the week, month and year (the daily and monthly totals) agree."""
    from gateway.model import SubMeterReading

    rig = WebRig(prices=Prices(grid_eur_kwh=0.30, grid_eur_kwh_by_tariff={"1": 0.34, "2": 0.27}), tariffs=("1", "2"),
                 tariff_names={"1": "day", "2": "night"})
    try:
        rig.submeters = (SubMeterReading(1, "gas", 812.035, "m3", T0),)
        rig.feed(0, import_w=1200)
        rig.feed_quarter_hours(4, import_w=1200)  # 10:00-11:00: 1.2 kWh in tariff 1
        rig.tariff = "2"
        rig.feed_quarter_hours(4, import_w=800)  # 11:00-12:00: 0.8 kWh in tariff 2
        rig.feed(60, import_w=800)
        live = rig.wait_live(lambda L: L["today"] and L["today"]["closed_quarter_hours"] == 8, "eight quarter-hours")
        assert live["submeters"] == [{"channel": 1, "kind": "gas", "value": 812.035, "unit": "m3",
                                      "time": "2026-06-01T08:00:00Z"}]
        for period in ("day", "week", "month", "year"):
            h = rig.get(f"/api/v1/history?period={period}&at=2026-06-01")
            tot = h["totals"]
            assert tot["import_by_tariff_wh"] == {"1": 1200, "2": 800}, (period, tot)
            assert tot["grid_import_by_tariff_wh"] == {"1": 1200, "2": 800}
            assert tot["grid_cost_by_tariff_eur"] == {"1": 0.41, "2": 0.22}, period  # 0.408 and 0.216
            assert tot["grid_cost_eur"] == 0.62, period  # 0.624, not 2 kWh x 0.30 = 0.60
            assert h["tariff_names"] == {"1": "day", "2": "night"}
            assert h["prices"]["grid_eur_kwh_by_tariff"] == {"1": 0.34, "2": 0.27}
        day = rig.get("/api/v1/history?period=day&at=2026-06-01")["buckets"]
        assert day[10]["grid_cost_by_tariff_eur"] == {"1": 0.41, "2": 0.0}  # 10:00 local
    finally:
        rig.close()


def test_history_gas_per_day_through_the_pipeline_store_and_uvicorn():
    """Hourly gas captures (DSMR 4) from 31 May 00:00 to 2 June 06:00 (Brussels), 0.25 m3 an hour, fed
    through the real pipeline (the daemon keeps the day records) and read by the real web service:
    31 May has no day before (partial, 23 h x 0.25 = 5.75), 1 June counts from 31 May's last capture
    (24 x 0.25 = 6.00, whole), 2 June 6 x 0.25 + the capture at midnight = 1.75."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from gateway.model import SubMeterReading

    rig = WebRig()
    try:
        rig.t = datetime(2026, 5, 31, 0, 0, tzinfo=ZoneInfo("Europe/Brussels")).astimezone(UTC) - timedelta(hours=1)
        for h in range(55):
            capture = rig.t + timedelta(hours=1)
            rig.submeters = (SubMeterReading(1, "gas", 1000 + 0.25 * h, "m3", capture),
                             SubMeterReading(2, "water", 50 + 0.01 * h, "m3", capture))  # water is not gas
            rig.feed(3600, import_w=400)
        rig.pipeline.flush()
        day = rig.get("/api/v1/history?period=day&at=2026-06-01")
        assert (day["totals"]["gas_m3"], day["totals"]["gas_partial"]) == (6.0, False)
        assert {b["gas_m3"] for b in day["buckets"]} == {None}  # a day by hour: the day's total only
        first = rig.get("/api/v1/history?period=day&at=2026-05-31")["totals"]
        assert (first["gas_m3"], first["gas_partial"]) == (5.75, True)
        week = rig.get("/api/v1/history?period=week&at=2026-06-03")  # Monday 1 June
        assert [b["gas_m3"] for b in week["buckets"]] == [6.0, 1.75, None, None, None, None, None]
        assert (week["totals"]["gas_m3"], week["totals"]["gas_partial"]) == (7.75, False)
        month = rig.get("/api/v1/history?period=month&at=2026-05-10")
        assert month["buckets"][30]["gas_m3"] == 5.75 and month["buckets"][30]["gas_partial"] is True
        assert (month["totals"]["gas_m3"], month["totals"]["gas_partial"]) == (5.75, True)
        year = rig.get("/api/v1/history?period=year&at=2026-06-01")
        assert [b["gas_m3"] for b in year["buckets"]][4:6] == [5.75, 7.75] and year["buckets"][0]["gas_m3"] is None
        assert (year["totals"]["gas_m3"], year["totals"]["gas_partial"]) == (13.5, True)
        empty = rig.get("/api/v1/history?period=week&at=2026-07-01")["totals"]
        assert (empty["gas_m3"], empty["gas_partial"]) == (None, False)
    finally:
        rig.close()

"""The node's community uplink: closed quarter-hours at-least-once and in order, through outages."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.store import Store
from gateway.uplink import LiveSummaryPublisher, Uplink, UplinkSettings, UplinkSink
from gateway.wire import (
    AllocationMsg,
    LiveMsg,
    TotalsMsg,
    meter_topic,
    operation_topic,
)
from tests.community_harness import Client, SecureMosquitto, make_broker

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)
EAN = "541448820000000015"


@pytest.fixture
def ustore(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "node.sqlite", sinks=("uplink",))
    try:
        yield s
    finally:
        s.close()


def settings_for(server, **kw) -> UplinkSettings:
    base = dict(host=server.host, port=server.port, community="moulin", operation="op1", pseudonym="maaa",
                password="", meter_id=EAN)
    return UplinkSettings(**{**base, **kw})


def run_sink(sink: UplinkSink) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    t = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    t.start()
    return stop, t


def starts(client: Client) -> list[str]:
    return [json.loads(p)["start"] for _, p in client.received()]


def test_backlog_is_published_in_order_under_the_pseudonym(mosquitto, ustore, make_quarter_hours) -> None:
    ustore.commit_quarter_hours(make_quarter_hours(EAN, T0, 30) + make_quarter_hours("pv-sub", T0, 3))
    admin = Client(mosquitto.host, mosquitto.port, None, None, None)
    assert admin.wait_connected() == 0
    admin.subscribe("quartier/moulin/op/+/meter/+/qh")
    up = Uplink(settings_for(mosquitto))
    up.start()
    sink = UplinkSink(ustore, up, batch_size=7)
    stop, t = run_sink(sink)
    try:
        assert admin.wait_for(lambda: len(admin.received()) >= 30)
        assert admin.wait_for(lambda: ustore.outbox_depth("uplink") == 0)
    finally:
        stop.set()
        t.join(5)
        sink.close()
        admin.close()
    msgs = admin.received()
    assert {topic for topic, _ in msgs} == {meter_topic("moulin", "op1", "maaa", "qh")}
    assert all(EAN.encode() not in p for _, p in msgs)  # the EAN never leaves the node
    got = [json.loads(p) for _, p in msgs]
    assert [g["start"] for g in got] == [q.start.isoformat().replace("+00:00", "Z") for q in make_quarter_hours(EAN, T0, 30)]
    assert [g["import_wh"] for g in got] == [q.import_wh for q in make_quarter_hours(EAN, T0, 30)]
    assert sink.stats.pushed == 30  # the sub-meter's 3 rows were settled without being sent


def test_outage_keeps_the_rows_and_drains_in_order_when_the_broker_returns(mosquitto, ustore, make_quarter_hours) -> None:
    admin = Client(mosquitto.host, mosquitto.port, None, None, None, client_id="admin-persistent", persistent=True)
    assert admin.wait_connected() == 0
    admin.subscribe("quartier/moulin/op/+/meter/+/qh")
    up = Uplink(settings_for(mosquitto))
    up.start()
    assert up.wait_connected(10)
    sink = UplinkSink(ustore, up, batch_size=5, backoff_initial_s=0.1, backoff_max_s=0.5, idle_poll_s=0.1)
    stop, t = run_sink(sink)
    try:
        qhs = make_quarter_hours(EAN, T0, 40)
        ustore.commit_quarter_hours(qhs[:10])
        sink.notify()
        assert admin.wait_for(lambda: len(set(starts(admin))) >= 10)
        mosquitto.stop()
        ustore.commit_quarter_hours(qhs[10:])  # closed while the community is unreachable
        sink.notify()
        assert admin.wait_for(lambda: sink.stats.down_since is not None)
        assert ustore.outbox_depth("uplink") > 0
        mosquitto.start()
        assert admin.wait_for(lambda: ustore.outbox_depth("uplink") == 0, timeout=30)
        assert admin.wait_for(lambda: len(set(starts(admin))) == 40, timeout=15)
    finally:
        stop.set()
        t.join(5)
        sink.close()
        admin.close()
    seen = starts(admin)
    first_seen = list(dict.fromkeys(seen))  # at-least-once: a re-sent one may repeat, never reorder
    assert first_seen == sorted(first_seen)
    assert len(first_seen) == 40
    assert sink.stats.down_since is None


def test_over_tls_totals_and_allocation_come_back_and_live_goes_out(tmp_path: Path, ustore) -> None:
    bdir, pw = make_broker(tmp_path, "moulin", {"maaa": "op1", "mbbb": "op2"})
    server = SecureMosquitto(tmp_path / "mosq", bdir)
    server.start()
    totals: list[TotalsMsg] = []
    allocs: list[AllocationMsg] = []
    try:
        admin = Client(server.host, server.port, bdir.ca_cert, "server", pw["server"])
        assert admin.wait_connected() == 0
        admin.subscribe("quartier/moulin/op/+/meter/+/live")
        admin.subscribe("quartier/moulin/op/+/meter/+/status")
        up = Uplink(settings_for(server, password=pw["maaa"], ca_file=str(bdir.ca_cert)),
                    on_totals=totals.append, on_allocation=allocs.append)
        up.start()
        assert up.wait_connected(10)
        assert admin.wait_for(lambda: (meter_topic("moulin", "op1", "maaa", "status"), b"online") in admin.received())
        tot = TotalsMsg(operation="op1", time=T0, qh_start=T0, elapsed_s=60, consumption_w=800, pool_w=1500,
                        consumption_wh=13, pool_wh=25, members_reporting=2, members_total=2, signal="green",
                        headroom_w=700, reason="surplus")
        other = tot.model_copy(update={"operation": "op2", "signal": "red"})
        al = AllocationMsg(operation="op1", start=T0, received_wh=40, injection_shared_wh=0, pool_wh=90,
                           shared_wh=80, consumption_wh=100)
        admin.publish(operation_topic("moulin", "op2"), other.to_bytes())  # not this node's operation
        admin.publish(operation_topic("moulin", "op1"), tot.to_bytes())
        admin.publish(meter_topic("moulin", "op1", "maaa", "alloc"), al.to_bytes())
        admin.publish(operation_topic("moulin", "op1"), b'{"v": 9}')  # unknown version: dropped, logged
        assert admin.wait_for(lambda: totals and allocs)
        live = LiveMsg(meter="maaa", operation="op1", time=T0, import_w=0, export_w=2100.5)
        pub = LiveSummaryPublisher(up, lambda: live, interval_s=0.05)
        stop = threading.Event()
        t = threading.Thread(target=pub.run, args=(stop,), daemon=True)
        t.start()
        assert admin.wait_for(lambda: admin.received(meter_topic("moulin", "op1", "maaa", "live")))
        stop.set()
        t.join(5)
        up.stop()
        assert admin.wait_for(lambda: (meter_topic("moulin", "op1", "maaa", "status"), b"offline") in admin.received())
        admin.close()
    finally:
        server.stop()
    assert totals == [tot]
    assert allocs == [al]


def test_totals_and_allocations_come_back_on_the_gateways_one_connection_and_reach_the_web_side(mosquitto, ustore) -> None:
    """The daemon's uplink relays the operation's totals and each stored allocation over the live
    socket; the web service's state takes the totals for its signal and hears of the allocation."""
    import tempfile
    from zoneinfo import ZoneInfo

    from gateway.live import LivePublisher
    from gateway.uplink import node_uplink
    from services.node.web.state import NodeState
    from tests.test_web_live_socket import Subscriber

    with tempfile.TemporaryDirectory(prefix="ql") as d:
        pub = LivePublisher(Path(d) / "live.sock")
        pub.start()
        sink = node_uplink(ustore, settings_for(mosquitto), live=pub, idle_poll_s=0.1)
        stop, t = run_sink(sink)
        admin = Client(mosquitto.host, mosquitto.port, None, None, None)
        try:
            assert admin.wait_connected() == 0 and sink.uplink.wait_connected(10)
            tot = TotalsMsg(operation="op1", time=T0, qh_start=T0, elapsed_s=300, consumption_w=800, pool_w=1500,
                            consumption_wh=70, pool_wh=120, members_reporting=3, members_total=4, signal="green",
                            headroom_w=700, reason="surplus")
            admin.c.publish(operation_topic("moulin", "op1"), tot.to_bytes(), qos=1, retain=True).wait_for_publish(10)
            al = AllocationMsg(operation="op1", start=T0, received_wh=120, injection_shared_wh=0, pool_wh=900,
                               shared_wh=500, consumption_wh=700)
            admin.c.publish(meter_topic("moulin", "op1", "maaa", "alloc"), al.to_bytes(), qos=1).wait_for_publish(10)
            assert admin.wait_for(lambda: len(ustore.allocations()) == 1)
            # a web service connecting now gets the latest totals first, then what follows
            sub = Subscriber(Path(d) / "live.sock")
            got = [sub.next() for _ in range(2)]
            assert got[0]["type"] == "hello" and got[1]["type"] == "operation"
            state = NodeState(tz=ZoneInfo("Europe/Brussels"), clock=lambda: 1000.0)
            kinds = []
            state.subscribe(lambda u: kinds.append(u.kind))
            state.ingest(got[1])
            live = state.fleet.live()
            assert (live.pool_w, live.consumption_w, live.pool_wh, live.members_reporting) == (1500, 800, 120, 3)
            assert 990 < live.received_monotonic <= 1000.0  # its age on arrival, not the time it was relayed
            al2 = al.model_copy(update={"received_wh": 130})  # a re-run: stored, then announced
            admin.c.publish(meter_topic("moulin", "op1", "maaa", "alloc"), al2.to_bytes(), qos=1).wait_for_publish(10)
            msg = sub.next()
            while msg["type"] != "allocation" or msg["received_wh"] != 130:  # the first may still be in flight
                msg = sub.next()
            assert msg == {"type": "allocation", "operation": "op1", "start": "2026-06-01T08:00:00Z", "received_wh": 130,
                           "injection_shared_wh": 0}
            assert [a.received_wh for a in ustore.allocations()] == [130]  # committed before it was announced
            state.ingest(msg)
            state.ingest({"type": "operation", "received": "soon", "totals": {"operation": "op1"}})
            assert kinds == ["operation", "allocation"] and state.bad_messages == 1
            sub.close()
        finally:
            stop.set()
            t.join(10)
            admin.close()
            pub.stop()


def test_uplink_session_settings_come_from_the_config(tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.uplink import settings_from_config

    cfg = tmp_path / "q.toml"
    cfg.write_text('[uplink]\nenabled = true\ncommunity = "moulin"\noperation = "op1"\npseudonym = "m1"\n')
    assert settings_from_config(load_config(cfg).uplink).session_expiry_s == 7 * 86400  # persistent by default
    cfg.write_text(cfg.read_text() + "session_expiry_s = 3600\n")
    assert settings_from_config(load_config(cfg).uplink).session_expiry_s == 3600
    with pytest.raises(ValueError, match="session_expiry_s"):
        settings_for(type("S", (), {"host": "h", "port": 1})(), session_expiry_s=-1)


def test_uplink_config_names_an_incomplete_section_and_refuses_a_password_in_the_main_file(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load_config

    from gateway.uplink import UplinkConfigError, settings_from_config

    cfg = tmp_path / "q.toml"
    cfg.write_text('[uplink]\nenabled = true\ncommunity = "moulin"\noperation = "op1"\n')
    with pytest.raises(UplinkConfigError, match="uplink.pseudonym not set"):
        settings_from_config(load_config(cfg).uplink)
    cfg.write_text('[uplink]\nenabled = true\npassword = "x"\n')
    with pytest.raises(ConfigError, match="uplink.password: secrets do not belong"):
        load_config(cfg)
    cfg.write_text('[uplink]\nenabled = true\ncommunity = "moulin"\noperation = "op/1"\npseudonym = "m1"\n')
    with pytest.raises(ConfigError, match="operation"):
        load_config(cfg)

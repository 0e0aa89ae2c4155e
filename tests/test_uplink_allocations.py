"""This member's allocations kept durably on the node: the daemon's uplink stores every allocation
the community server publishes (acknowledged only once committed), over a persistent MQTT session
that queues them while the node is offline; the web service shows them from the store, restarts or
not. Real Mosquitto throughout (plain, and the secured community broker for the offline case)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.config import Config
from gateway.store import Allocation, Store
from gateway.uplink import Uplink, UplinkSettings, UplinkSink
from gateway.wire import AllocationMsg, meter_topic
from services.node.web.server import build
from tests.community_harness import Client, SecureMosquitto, make_broker

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)  # 10:00 in Brussels, June 1st
Q = timedelta(minutes=15)
ALLOC = meter_topic("moulin", "op1", "maaa", "alloc")
STATUS = meter_topic("moulin", "op1", "maaa", "status")


def msg(start: datetime, received_wh: int, **kw) -> AllocationMsg:
    base = dict(operation="op1", start=start, received_wh=received_wh, injection_shared_wh=0, pool_wh=90,
                shared_wh=80, consumption_wh=100)
    return AllocationMsg(**{**base, **kw})


def settings_for(server, **kw) -> UplinkSettings:
    base = dict(host=server.host, port=server.port, community="moulin", operation="op1", pseudonym="maaa",
                password="", meter_id="541448820000000015")
    return UplinkSettings(**{**base, **kw})


class RunningSink:
    """An UplinkSink running in its own thread as the daemon runs it (its run() connects the uplink)."""

    def __init__(self, store: Store, settings: UplinkSettings) -> None:
        self.sink = UplinkSink(store, Uplink(settings), idle_poll_s=0.1, backoff_initial_s=0.1, backoff_max_s=0.5)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.sink.run, args=(self.stop_event,), daemon=True)
        self.thread.start()

    @property
    def uplink(self) -> Uplink:
        return self.sink.uplink

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.sink.close()


@pytest.fixture
def node_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "node.sqlite", sinks=("uplink",))
    try:
        yield s
    finally:
        s.close()


def web_config(tmp_path: Path, server) -> Config:
    return Config(store={"path": str(tmp_path / "node.sqlite")}, daemon={"runtime_dir": str(tmp_path / "run")},
                  uplink={"enabled": True, "host": server.host, "port": server.port, "community": "moulin",
                          "operation": "op1", "pseudonym": "maaa"})


def month(client: TestClient) -> dict:
    return client.get("/api/v1/allocation", params={"period": "month", "at": "2026-06-15"}).json()


def subscribed(admin: Client, uplink: Uplink) -> bool:
    """The uplink sends SUBSCRIBE before its "online" status: once the status is seen, the broker has
    the subscription (it handles one client's packets in order)."""
    return uplink.connected and admin.wait_for(lambda: (STATUS, b"online") in admin.received())


def test_an_allocation_is_stored_shown_by_the_web_api_and_survives_restarts(tmp_path: Path, mosquitto, node_store) -> None:
    admin = Client(mosquitto.host, mosquitto.port, None, None, None)
    assert admin.wait_connected() == 0
    admin.subscribe(STATUS)
    node = RunningSink(node_store, settings_for(mosquitto))
    try:
        assert node.uplink.wait_connected(10) and subscribed(admin, node.uplink)
        sent = [msg(T0, 40), msg(T0 + Q, 25), msg(T0 + 2 * Q, 10, missing=1),
                msg(T0 - timedelta(days=1), 500)]  # May 31st: another month
        for m in sent:
            admin.publish(ALLOC, m.to_bytes())
        assert admin.wait_for(lambda: len(node_store.allocations()) == 4)
        stored = {a.start: a for a in node_store.allocations()}
        assert [(a.operation, a.received_wh, a.pool_wh, a.shared_wh, a.consumption_wh, a.missing, a.provisional)
                for a in stored.values()] == [("op1", 500, 90, 80, 100, 0, True), ("op1", 40, 90, 80, 100, 0, True),
                                              ("op1", 25, 90, 80, 100, 0, True), ("op1", 10, 90, 80, 100, 1, True)]
        assert all(a.received_at is not None and a.received_at.year >= 2026 for a in stored.values())
        cfg = web_config(tmp_path, mosquitto)
        with TestClient(build(cfg)) as web:
            june = month(web)
            assert june["basis"] == "operation" and june["member_id"] == "maaa"
            assert june["shared_wh"] == 75 and june["quarter_hours_with_fleet_data"] == 3
            assert june["operation"]["pool_wh"] == 270 and june["operation"]["operation_id"] == "op1"
            # a re-run of the first quarter-hour: the server re-publishes a corrected share, which replaces it
            admin.publish(ALLOC, msg(T0, 30, pool_wh=80).to_bytes())
            assert admin.wait_for(lambda: month(web)["shared_wh"] == 65)
            assert month(web)["operation"]["pool_wh"] == 260
            assert [(a.start, a.received_wh) for a in node_store.allocations(start=T0, end=T0 + Q)] == [(T0, 30)]
        assert node.sink.allocations_stored == 5 and node.uplink.bad_messages == 0
    finally:
        node.stop()
        admin.close()
    node_store.close()  # the daemon gone too (a reboot): only the file remains
    with TestClient(build(web_config(tmp_path, mosquitto))) as web:  # the web service restarted
        june = month(web)
        assert (june["shared_wh"], june["quarter_hours_with_fleet_data"], june["basis"]) == (65, 3, "operation")
        may = web.get("/api/v1/allocation", params={"period": "month", "at": "2026-05-20"}).json()
        assert may["shared_wh"] == 500


def test_allocations_published_while_the_node_is_offline_arrive_when_it_reconnects(tmp_path: Path, node_store) -> None:
    bdir, pw = make_broker(tmp_path, "moulin", {"maaa": "op1"})
    server = SecureMosquitto(tmp_path / "mosq", bdir)
    server.start()
    settings = settings_for(server, password=pw["maaa"], ca_file=str(bdir.ca_cert))
    assert settings.session_expiry_s == 7 * 86400  # the default: a persistent session
    admin = Client(server.host, server.port, bdir.ca_cert, "server", pw["server"])
    try:
        assert admin.wait_connected() == 0
        admin.subscribe(STATUS)
        node = RunningSink(node_store, settings)
        assert node.uplink.wait_connected(10) and subscribed(admin, node.uplink)
        assert node.uplink.session_present is False  # the first connect of this client id
        node.stop()  # the node goes offline (its daemon stopped, the Pi rebooting)
        assert admin.wait_for(lambda: (STATUS, b"offline") in admin.received())
        admin.publish(ALLOC, msg(T0, 40).to_bytes())  # QoS 1: acknowledged by the broker, queued for the node
        admin.publish(ALLOC, msg(T0 + Q, 25).to_bytes())
        server.stop()  # the broker restarts meanwhile: the session and its queue are on disk
        server.start()
        assert admin.wait_for(lambda: admin.c.is_connected(), timeout=20)
        admin.publish(ALLOC, msg(T0 + 2 * Q, 10).to_bytes())
        assert node_store.allocations() == []  # nothing reached the node while it was away
        back = RunningSink(node_store, settings)  # same client id: the daemon started again
        try:
            assert admin.wait_for(lambda: len(node_store.allocations()) == 3, timeout=20)
            assert back.uplink.session_present is True
            assert [(a.start, a.received_wh) for a in node_store.allocations()] == [(T0, 40), (T0 + Q, 25), (T0 + 2 * Q, 10)]
            assert back.sink.allocations_stored == 3
        finally:
            back.stop()
    finally:
        admin.close()
        server.stop()


def test_a_malformed_allocation_is_counted_logged_with_its_topic_and_acknowledged(
        tmp_path: Path, mosquitto, node_store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="quartier.gateway.uplink")
    admin = Client(mosquitto.host, mosquitto.port, None, None, None)
    assert admin.wait_connected() == 0
    admin.subscribe(STATUS)
    node = RunningSink(node_store, settings_for(mosquitto))
    try:
        assert node.uplink.wait_connected(10) and subscribed(admin, node.uplink)
        bad = [b"not json", b'{"v": 9}', msg(T0, 40, operation="op2").to_bytes(),  # another operation's figures
               msg(T0, 40).to_bytes().replace(b"08:00:00", b"08:05:00")]  # not a quarter-hour boundary
        for payload in bad:
            admin.publish(ALLOC, payload)
        admin.publish(ALLOC, msg(T0 + Q, 25).to_bytes())  # in order after the bad ones
        assert admin.wait_for(lambda: len(node_store.allocations()) == 1)
        assert node.uplink.bad_messages == len(bad)
        assert node.sink.health_fields() == {"connected": True, "session_present": False, "resent": 0, "allocations_stored": 1,
                                             "bad_messages": 4}
        logged = [r for r in caplog.records if r.getMessage() == "uplink.bad_message"]
        assert len(logged) == 4 and {r.topic for r in logged} == {ALLOC}
        assert "operation 'op2'" in logged[2].error and "quarter-hour boundary" in logged[3].error
    finally:
        node.stop()
    # acknowledged, not left for a redelivery: a restarted node gets only what came after
    back = RunningSink(node_store, settings_for(mosquitto))
    try:
        assert back.uplink.wait_connected(10)
        admin.publish(ALLOC, msg(T0 + 2 * Q, 10).to_bytes())
        assert admin.wait_for(lambda: len(node_store.allocations()) == 2)
        assert back.uplink.bad_messages == 0 and back.sink.allocations_stored == 1
    finally:
        back.stop()
        admin.close()


def test_an_allocation_the_store_could_not_write_is_delivered_again_after_a_reconnect(
        mosquitto, node_store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="quartier.gateway.uplink")
    admin = Client(mosquitto.host, mosquitto.port, None, None, None)
    assert admin.wait_connected() == 0
    admin.subscribe(STATUS)
    failures: list[Allocation] = []

    def card_fails(a: Allocation) -> bool:
        failures.append(a)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(node_store, "put_allocation", card_fails)
    node = RunningSink(node_store, settings_for(mosquitto))
    try:
        assert node.uplink.wait_connected(10) and subscribed(admin, node.uplink)
        admin.publish(ALLOC, msg(T0, 40).to_bytes())
        assert admin.wait_for(lambda: failures)
        assert admin.wait_for(lambda: any(r.getMessage() == "uplink.callback_failed" for r in caplog.records))
        assert node.uplink.bad_messages == 0  # not malformed: no reason to drop it
    finally:
        node.stop()
    monkeypatch.undo()  # the card works again
    back = RunningSink(node_store, settings_for(mosquitto))
    try:
        assert admin.wait_for(lambda: len(node_store.allocations()) == 1, timeout=20)  # never acknowledged: redelivered
        assert [(a.start, a.received_wh) for a in node_store.allocations()] == [(T0, 40)]
    finally:
        back.stop()
        admin.close()

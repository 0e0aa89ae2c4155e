"""A gateway can publish only as its own meter and read only its own data and its operation's totals
(real Mosquitto with the generated TLS + password + ACL configuration)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.community import broker
from gateway.wire import meter_topic, operation_topic
from tests.community_harness import Client, SecureMosquitto, make_broker

C = "moulin"
GATEWAYS = {"maaa": "op1", "mbbb": "op1", "mccc": "op2"}


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[tuple[SecureMosquitto, dict[str, str]]]:
    bdir, passwords = make_broker(tmp_path, C, GATEWAYS)
    server = SecureMosquitto(tmp_path / "mosq", bdir)
    server.start()
    try:
        yield server, passwords
    finally:
        server.stop()


def connect(server: SecureMosquitto, user: str, password: str) -> Client:
    c = Client(server.host, server.port, server.bdir.ca_cert, user, password)
    return c


def test_wrong_password_and_anonymous_are_refused(secure) -> None:
    server, pw = secure
    c = connect(server, "maaa", pw["maaa"] + "x")
    assert c.wait_connected() != 0
    c.close()
    c = connect(server, "nobody", "")
    assert c.wait_connected() != 0
    c.close()


def test_plain_tcp_without_tls_is_refused(secure) -> None:
    import threading

    import paho.mqtt.client as mqtt

    server, pw = secure
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set("maaa", pw["maaa"])
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    try:
        c.connect(server.host, server.port)
        c.loop_start()
        assert not connected.wait(1.0)  # a clear-text CONNECT never gets a CONNACK from the TLS listener
    except OSError:
        pass  # or the listener resets the connection at once: refused either way
    finally:
        c.loop_stop()


def test_gateway_cannot_publish_as_another_meter(secure) -> None:
    server, pw = secure
    admin = connect(server, "server", pw["server"])
    assert admin.wait_connected() == 0
    assert admin.subscribe(f"quartier/{C}/op/+/meter/+/qh") == [1]
    a = connect(server, "maaa", pw["maaa"])
    assert a.wait_connected() == 0
    a.publish(meter_topic(C, "op1", "mbbb", "qh"), b"forged")  # as b: dropped by the broker
    a.publish(meter_topic(C, "op2", "maaa", "qh"), b"wrong operation")  # itself, in another operation
    a.publish(meter_topic(C, "op1", "maaa", "qh"), b"own")
    assert admin.wait_for(lambda: admin.received())
    time.sleep(0.3)  # the forged message was published first: give it every chance to arrive
    assert admin.received() == [(meter_topic(C, "op1", "maaa", "qh"), b"own")]
    a.close()
    admin.close()


def test_gateway_cannot_publish_totals_or_allocations(secure) -> None:
    server, pw = secure
    b = connect(server, "mbbb", pw["mbbb"])
    assert b.wait_connected() == 0
    assert b.subscribe(operation_topic(C, "op1")) == [1]
    assert b.subscribe(meter_topic(C, "op1", "mbbb", "alloc")) == [1]
    a = connect(server, "maaa", pw["maaa"])
    assert a.wait_connected() == 0
    a.publish(operation_topic(C, "op1"), b"fake totals")
    a.publish(meter_topic(C, "op1", "mbbb", "alloc"), b"fake allocation")
    admin = connect(server, "server", pw["server"])
    assert admin.wait_connected() == 0
    admin.publish(meter_topic(C, "op1", "mbbb", "alloc"), b"real")
    assert b.wait_for(lambda: b.received())
    time.sleep(0.3)
    assert b.received() == [(meter_topic(C, "op1", "mbbb", "alloc"), b"real")]
    for c in (a, b, admin):
        c.close()


def test_only_the_server_asks_a_gateway_to_resend_and_only_that_gateway_hears_it(secure) -> None:
    """A fake resend request could make a gateway flood the broker; another's request tells nothing
    but is still its own business: the gateway reads only its own, the server alone writes them."""
    server, pw = secure
    b = connect(server, "mbbb", pw["mbbb"])
    assert b.wait_connected() == 0
    assert b.subscribe(meter_topic(C, "op1", "mbbb", "resend")) == [1]
    a = connect(server, "maaa", pw["maaa"])
    assert a.wait_connected() == 0
    a.subscribe(meter_topic(C, "op1", "mbbb", "resend"))  # granted or not, nothing may arrive
    a.publish(meter_topic(C, "op1", "mbbb", "resend"), b"fake request")
    admin = connect(server, "server", pw["server"])
    assert admin.wait_connected() == 0
    admin.publish(meter_topic(C, "op1", "mbbb", "resend"), b"real request")
    assert b.wait_for(lambda: b.received())
    time.sleep(0.3)
    assert b.received() == [(meter_topic(C, "op1", "mbbb", "resend"), b"real request")]
    assert a.received() == []
    for c in (a, b, admin):
        c.close()


def test_gateway_cannot_read_another_members_data(secure) -> None:
    """Mosquitto 2.0 may grant a SUBACK for a filter and then withhold every message the ACL does
    not allow to be read; what counts is that nothing of another member arrives."""
    server, pw = secure
    a = connect(server, "maaa", pw["maaa"])
    assert a.wait_connected() == 0
    for topic in (meter_topic(C, "op1", "mbbb", "qh"), meter_topic(C, "op1", "mbbb", "alloc"), f"quartier/{C}/op/+/meter/+/live",
                  f"quartier/{C}/#", operation_topic(C, "op2"), "#"):
        codes = a.subscribe(topic)
        assert codes[0] in (0, 1, 0x87), (topic, codes)  # granted (then filtered) or not authorised
    assert a.subscribe(operation_topic(C, "op1")) == [1]  # its own operation
    assert a.subscribe(meter_topic(C, "op1", "maaa", "alloc")) == [1]  # its own allocation
    b = connect(server, "mbbb", pw["mbbb"])
    admin = connect(server, "server", pw["server"])
    assert b.wait_connected() == 0 and admin.wait_connected() == 0
    b.publish(meter_topic(C, "op1", "mbbb", "qh"), b"b-qh")
    b.publish(meter_topic(C, "op1", "mbbb", "live"), b"b-live", qos=0)
    admin.publish(meter_topic(C, "op1", "mbbb", "alloc"), b"b-alloc")
    admin.publish(operation_topic(C, "op2"), b"op2-totals")
    admin.publish(operation_topic(C, "op1"), b"op1-totals")
    admin.publish(meter_topic(C, "op1", "maaa", "alloc"), b"a-alloc")
    assert a.wait_for(lambda: {p for _, p in a.received()} >= {b"op1-totals", b"a-alloc"})
    time.sleep(0.3)
    assert {p for _, p in a.received()} == {b"op1-totals", b"a-alloc"}
    for c in (a, b, admin):
        c.close()


def test_provisioning_later_gateway_takes_effect_on_reload(secure, tmp_path: Path) -> None:
    server, pw = secure
    new = broker.add_gateways(server.bdir, C, {"mddd": "op2"})
    server.proc.send_signal(__import__("signal").SIGHUP)  # what `systemctl reload mosquitto` does
    deadline = time.monotonic() + 10
    while True:
        d = connect(server, "mddd", new["mddd"])
        rc = d.wait_connected()
        if rc == 0 or time.monotonic() > deadline:
            break
        d.close()
        time.sleep(0.2)
    assert rc == 0
    assert d.subscribe(operation_topic(C, "op2")) == [1]
    d.subscribe(operation_topic(C, "op1"))
    admin = connect(server, "server", pw["server"])
    assert admin.wait_connected() == 0
    admin.publish(operation_topic(C, "op1"), b"op1")
    admin.publish(operation_topic(C, "op2"), b"op2")
    assert d.wait_for(lambda: d.received())
    time.sleep(0.3)
    assert [p for _, p in d.received()] == [b"op2"]
    d.close()
    admin.close()
    # the old users are still there
    a = connect(server, "maaa", pw["maaa"])
    assert a.wait_connected() == 0
    a.close()


def test_the_deploy_copy_of_the_broker_config_is_what_provisioning_writes() -> None:
    here = Path(__file__).resolve().parent.parent / "deploy" / "community" / "mosquitto" / "quartier-community.conf"
    shipped = [ln for ln in here.read_text().splitlines() if ln and not ln.startswith("#")]
    generated = broker.conf_text(broker.BrokerDir(Path("/etc/quartier/broker")), port=8883)
    assert shipped == [ln for ln in generated.splitlines() if ln and not ln.startswith("#")]

"""Fluksometer topics, payloads and sensor config: what both firmware generations write, and what no
Fluksometer writes (refused with the topic and the payload in the message)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flukso.payload import (
    TIMESTAMP_MIN,
    PayloadError,
    decode_sample,
    floor_wh,
    parse_config_topic,
    parse_sensor_topic,
    watts,
)
from flukso.sensors import (
    Assignment,
    Role,
    RoleError,
    check_against_device,
    parse_sensor_config,
    plan_meters,
    suggest_roles,
)

SID = "0f" * 16
TS = 1750496400  # 2025-06-21T09:00:00Z
GAUGE = f"/sensor/{SID}/gauge"
COUNTER = f"/sensor/{SID}/counter"

# -- the payload variants of both firmwares ---------------------------------------------------------

VARIANTS = [
    # FLM02: integers, no spaces; the P1 sensor's gauge is signed net power
    (GAUGE, f'[{TS},1234,"W"]', 1234, "power"),
    (GAUGE, f'[{TS},-1234,"W"]', -1234, "power"),
    (GAUGE, f'[{TS},0,"W"]', 0, "power"),
    (COUNTER, f'[{TS},5678,"Wh"]', 5678, "energy"),
    (COUNTER, f'[{TS},-5678,"Wh"]', -5678, "energy"),  # FLM02 net counter below zero (net exporter)
    (GAUGE, f'[{TS},120,"L/day"]', 120, "flow"),  # FLM02 water/gas gauge
    (COUNTER, f'[{TS},43,"L"]', 43, "volume"),
    # FLM03: three decimals, a space after each comma
    (GAUGE, f'[{TS}, 1234.567, "W"]', Decimal("1234.567"), "power"),
    (GAUGE, f'[{TS}, 0.000, "W"]', Decimal("0.000"), "power"),
    (COUNTER, f'[{TS}, 5678.123, "Wh"]', Decimal("5678.123"), "energy"),
    (GAUGE, f'[{TS}, 0.125, "L/s"]', Decimal("0.125"), "flow"),
    (COUNTER, f'[{TS}, 43.500, "L"]', Decimal("43.500"), "volume"),
]


@pytest.mark.parametrize(("topic", "payload", "value", "quantity"), VARIANTS)
def test_both_firmware_formats_decode_exactly(topic, payload, value, quantity):
    s = decode_sample(topic, payload.encode())
    assert (s.sensor_id, s.ts, s.value, s.quantity) == (SID, TS, value, quantity)
    assert s.kind == topic.rsplit("/", 1)[1]


MALFORMED = [
    (GAUGE, b"not json", "not JSON"),
    (GAUGE, b"", "not JSON"),
    (GAUGE, b'{"ts": 1750496400, "value": 1}', "expected a JSON array"),
    (GAUGE, f"[{TS},1]".encode(), "expected a JSON array"),
    (GAUGE, f'[{TS},1,"W",0]'.encode(), "expected a JSON array"),
    (GAUGE, b'["1750496400",1,"W"]', "timestamp is not an integer"),
    (GAUGE, b'[1750496400.0,1,"W"]', "timestamp is not an integer"),
    (GAUGE, b'[true,1,"W"]', "timestamp is not an integer"),
    (GAUGE, b'[1000,1,"W"]', "clock is not set"),
    (GAUGE, f'[{TS},"12","W"]'.encode(), "value is not a number"),
    (GAUGE, f'[{TS},null,"W"]'.encode(), "value is not a number"),
    (GAUGE, f'[{TS},false,"W"]'.encode(), "value is not a number"),
    (GAUGE, f'[{TS},NaN,"W"]'.encode(), "not JSON"),
    (GAUGE, f'[{TS},Infinity,"W"]'.encode(), "not JSON"),
    (GAUGE, f'[{TS},1e400,"W"]'.encode(), "out of range"),
    (GAUGE, f"[{TS},1,null]".encode(), "unit is not a string"),
    (GAUGE, f'[{TS},1,"W"]'.encode("utf-16"), "not UTF-8"),
    (f"/sensor/{SID.upper()}/gauge", f'[{TS},1,"W"]'.encode(), "32 lower-case hex"),
    (f"/sensor/{SID}/power", f'[{TS},1,"W"]'.encode(), "not a /sensor/"),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), MALFORMED)
def test_malformed_payloads_are_refused_naming_topic_and_payload(topic, payload, reason):
    with pytest.raises(PayloadError) as exc:
        decode_sample(topic, payload)
    assert exc.value.kind == "malformed"
    assert reason in exc.value.reason
    assert topic in str(exc.value)
    assert exc.value.payload[:8] in str(exc.value)


@pytest.mark.parametrize(("topic", "payload"), [
    (GAUGE, f'[{TS},1,"kW"]'),
    (GAUGE, f'[{TS},1,"Wh"]'),  # an energy unit on a gauge
    (COUNTER, f'[{TS},1,"W"]'),  # a power unit on a counter
    (COUNTER, f'[{TS}, 1.000, "VARh"]'),  # FLM03 reactive energy: not ours
    (GAUGE, f'[{TS}, 231.456, "V"]'),  # FLM03 vrms
])
def test_unknown_units_are_refused_as_such(topic, payload):
    with pytest.raises(PayloadError) as exc:
        decode_sample(topic, payload.encode())
    assert exc.value.kind == "unknown_unit"
    assert "unknown" in exc.value.reason and payload in str(exc.value)


def test_topics():
    assert parse_sensor_topic(f"/sensor/{SID}/counter").kind == "counter"
    assert parse_sensor_topic(f"/sensor/{SID}/tmpo/0/8/1/gz") is None
    assert parse_sensor_topic("sensor/x/gauge") is None
    assert parse_config_topic("/device/abc/config/sensor") == "abc"
    assert parse_config_topic("/device/abc/config/flx") is None


def test_a_long_or_binary_payload_is_shortened_and_escaped_in_the_error():
    with pytest.raises(PayloadError) as exc:
        decode_sample(GAUGE, b"\x00\x01" + b"x" * 5000)
    msg = str(exc.value)
    assert len(msg) < 400 and "\\x00" in msg and "5002 bytes" in msg


# -- properties ------------------------------------------------------------------------------------

timestamps = st.integers(min_value=TIMESTAMP_MIN, max_value=4_102_444_800)
milli = st.integers(min_value=-10**12, max_value=10**12)


@settings(max_examples=300)
@given(ts=timestamps, mwh=milli, flm03=st.booleans())
def test_any_firmware_counter_round_trips_and_floors_to_the_wh(ts, mwh, flm03):
    if flm03:
        sign = "-" if mwh < 0 else ""
        text = f'[{ts}, {sign}{abs(mwh) // 1000}.{abs(mwh) % 1000:03d}, "Wh"]'
        exact = Decimal(mwh) / 1000
    else:
        text = f'[{ts},{mwh},"Wh"]'
        exact = Decimal(mwh)
    s = decode_sample(COUNTER, text.encode())
    assert (s.ts, s.value) == (ts, exact)
    wh = floor_wh(s)
    assert wh <= exact < wh + 1  # rounded down: a register counts what has fully passed


@settings(max_examples=300)
@given(a=milli, b=milli)
def test_floored_registers_never_make_negative_energy(a, b):
    lo, hi = sorted((a, b))
    flo = floor_wh(decode_sample(COUNTER, f'[{TS}, {lo / 1000:.3f}, "Wh"]'.encode()))
    fhi = floor_wh(decode_sample(COUNTER, f'[{TS}, {hi / 1000:.3f}, "Wh"]'.encode()))
    assert fhi - flo >= 0


@settings(max_examples=400)
@given(payload=st.one_of(
    st.binary(max_size=64),
    st.lists(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
             max_size=5).map(lambda x: json.dumps(x).encode()),
))
def test_nothing_but_payload_error_ever_comes_out(payload):
    try:
        s = decode_sample(GAUGE, payload)
    except PayloadError:
        return
    assert isinstance(watts(s), float)


# -- sensor config (discovery) ---------------------------------------------------------------------

FLM02_CONFIG = json.dumps({
    "1": {"id": "a" * 32, "class": "analog", "type": "electricity", "function": "solar", "enable": "1", "port": ["1"]},
    "2": {"id": "b" * 32, "class": "analog", "type": "electricity", "function": "heatpump", "enable": "0", "port": ["2"]},
    "4": {"id": "c" * 32, "class": "cosem", "type": "electricity", "function": "net", "enable": "1", "port": ["4"]},
    "5": {"id": "d" * 32, "class": "pulse", "type": "water", "enable": "1", "port": ["5"], "constant": "1"},
}).encode()

FLM03_CONFIG = json.dumps({
    "1": {"type": "electricity", "subtype": "pplus", "id": "1" * 32, "enable": 1, "rid": 0, "port": [7], "data_type": "counter"},
    "2": {"type": "electricity", "subtype": "pminus", "id": "2" * 32, "enable": 1, "rid": 0, "port": [7], "data_type": "counter"},
    "3": {"type": "electricity", "subtype": "vrms", "id": "3" * 32, "enable": 1, "rid": 0, "port": [7], "data_type": "gauge"},
    "9": {"id": "9" * 32},  # unassigned: the id only
    "tmpo": {"root": "/flukso/"},
    "mqtt": {"bridge_port": 8883},
}).encode()


def test_flm02_sensor_config_with_uci_strings():
    s = parse_sensor_config(FLM02_CONFIG)
    assert set(s) == {"a" * 32, "b" * 32, "c" * 32, "d" * 32}
    assert s["a" * 32].enabled and not s["b" * 32].enabled
    assert s["c" * 32].sensor_class == "cosem" and s["c" * 32].ports == (4,) and s["c" * 32].name == "net"
    assert s["d" * 32].type == "water"
    assert suggest_roles(s) == {"c" * 32: Role.GRID_NET}


def test_flm03_sensor_config_with_subtypes_and_unassigned_ids():
    s = parse_sensor_config(FLM03_CONFIG)
    assert s["1" * 32].subtype == "pplus" and s["1" * 32].data_type == "counter"
    assert not s["9" * 32].enabled and s["9" * 32].type is None
    assert "tmpo" not in s
    # an FLM03 P1 port is class uart in its flx config; the sensor config alone does not say so
    assert suggest_roles(s) == {}


@pytest.mark.parametrize("payload", [b"[]", b"nope", b'{"1": {"id": "' + b"a" * 32 + b'", "enable": "maybe"}}'])
def test_bad_sensor_config_is_refused(payload):
    with pytest.raises(ValueError):
        parse_sensor_config(payload)


def test_the_mapping_is_checked_against_the_device():
    sensors = parse_sensor_config(FLM02_CONFIG) | parse_sensor_config(FLM03_CONFIG)
    problems = check_against_device([
        Assignment("b" * 32, Role.CONSUMPTION, "hp"),  # disabled
        Assignment("d" * 32, Role.GRID_IMPORT, "home"),  # water
        Assignment("2" * 32, Role.GRID_IMPORT, "home"),  # pminus as import
        Assignment("3" * 32, Role.GRID_EXPORT, "home"),  # gauge only
        Assignment("e" * 32, Role.PRODUCTION, "pv"),  # absent
        Assignment("c" * 32, Role.GRID_NET, "net"),  # fine
    ], sensors)
    text = "\n".join(problems)
    assert len(problems) == 5
    for bit in ("disabled", "measures water", "pminus (export) sensor mapped as grid_import",
                "publishes no counter", "not in the Fluksometer's sensor config"):
        assert bit in text


# -- roles -----------------------------------------------------------------------------------------


def test_roles_make_meters():
    plans = plan_meters([
        Assignment("1" * 32, Role.GRID_IMPORT, "home"),
        Assignment("2" * 32, Role.GRID_EXPORT, "home"),
        Assignment("3" * 32, Role.PRODUCTION, "pv"),
        Assignment("4" * 32, Role.PRODUCTION, "pv"),  # a second string on a second clamp: summed
        Assignment("5" * 32, Role.CONSUMPTION, "heatpump"),
        Assignment("6" * 32, Role.GRID_NET, "flat"),
    ])
    assert plans["home"].import_sensors == ("1" * 32,) and plans["home"].export_sensors == ("2" * 32,)
    assert plans["pv"].export_sensors == ("3" * 32, "4" * 32) and plans["pv"].import_sensors == ()
    assert plans["heatpump"].import_sensors == ("5" * 32,)
    assert plans["flat"].net_sensor == "6" * 32 and plans["flat"].counter_sensors == ("6" * 32,)


@pytest.mark.parametrize(("assignments", "message"), [
    ([("1", Role.GRID_IMPORT, "m"), ("1", Role.GRID_EXPORT, "m")], "mapped twice"),
    ([("1", Role.GRID_NET, "m"), ("2", Role.GRID_IMPORT, "m")], "must be the meter's only sensor"),
    ([("1", Role.GRID_IMPORT, "m"), ("2", Role.PRODUCTION, "m")], "meters of their own"),
    ([("1", Role.CONSUMPTION, "m"), ("2", Role.PRODUCTION, "m")], "meters of their own"),
])
def test_mappings_that_make_no_meter_are_refused(assignments, message):
    with pytest.raises(RoleError, match=message):
        plan_meters(Assignment(sid * 32, role, m) for sid, role, m in assignments)

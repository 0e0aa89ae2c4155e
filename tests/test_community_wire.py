"""The wire format shared by the uplink and the community server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.wire import (
    QuarterHourMsg,
    TotalsMsg,
    WireError,
    decode,
    ingest_filters,
    meter_topic,
    operation_topic,
    parse_meter_topic,
    pseudonym,
)

T0 = datetime(2026, 3, 29, 0, 0, tzinfo=timezone.utc)


@settings(max_examples=300)
@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_pseudonym_is_a_safe_topic_level_and_depends_on_the_secret(meter: str, secret: str) -> None:
    p = pseudonym(meter, secret)
    assert p == pseudonym(meter, secret)
    assert meter not in p or len(meter) < 3
    assert p != pseudonym(meter, secret + "x")
    assert parse_meter_topic(meter_topic("c1", "op", p, "qh")) == ("c1", "op", p, "qh")


def test_pseudonym_refuses_an_empty_secret() -> None:
    with pytest.raises(WireError, match="secret"):
        pseudonym("541448820000000015", "")


@pytest.mark.parametrize("bad", ["+", "#", "a/b", "", "$SYS", "x" * 65])
def test_topics_refuse_levels_that_escape_their_place(bad: str) -> None:
    with pytest.raises(WireError):
        meter_topic("c1", "op", bad, "qh")
    with pytest.raises(WireError):
        operation_topic(bad, "op")


def test_shared_subscriptions_for_sharded_servers() -> None:
    assert ingest_filters("c1", share_group="g") == [
        "$share/g/quartier/c1/op/+/meter/+/qh",
        "$share/g/quartier/c1/op/+/meter/+/live",
        "$share/g/quartier/c1/op/+/meter/+/status",
    ]
    assert ingest_filters("c1", ["a", "b"])[::3] == ["quartier/c1/op/a/meter/+/qh", "quartier/c1/op/b/meter/+/qh"]


@settings(max_examples=200)
@given(st.integers(0, 10_000), st.integers(0, 10**9), st.integers(0, 10**9),
       st.sampled_from(["measured", "interpolated", "estimated"]))
def test_quarter_hour_round_trip(q: int, imp: int, exp: int, quality: str) -> None:
    msg = QuarterHourMsg(meter="mabc", operation="op", start=T0 + timedelta(minutes=15 * q),
                         import_wh=imp, export_wh=exp, quality=quality)
    assert decode(QuarterHourMsg, msg.to_bytes()) == msg


@pytest.mark.parametrize(
    "payload, field",
    [
        (b'{"v":2,"meter":"m","operation":"o","start":"2026-01-01T00:00:00Z","import_wh":1,"export_wh":0}', "v"),
        (b'{"v":1,"meter":"m","operation":"o","start":"2026-01-01T00:07:00Z","import_wh":1,"export_wh":0}', "start"),
        (b'{"v":1,"meter":"m","operation":"o","start":"2026-01-01T00:00:00","import_wh":1,"export_wh":0}', "start"),
        (b'{"v":1,"meter":"m","operation":"o","start":"2026-01-01T00:00:00Z","import_wh":-1,"export_wh":0}', "import_wh"),
        (b"not json", "payload"),
    ],
)
def test_malformed_payloads_are_refused_naming_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(WireError, match=field):
        decode(QuarterHourMsg, payload)


def test_totals_need_a_known_signal_state() -> None:
    body = dict(operation="o", time=T0, qh_start=T0, elapsed_s=1, consumption_w=1, pool_w=1, consumption_wh=None,
                pool_wh=None, members_reporting=1, members_total=2, signal="green", headroom_w=5, reason="surplus")
    assert decode(TotalsMsg, TotalsMsg(**body).to_bytes()).signal == "green"
    with pytest.raises(ValidationError):
        TotalsMsg(**{**body, "signal": "blue"})

"""DSMR-reader's topic layout (services/node/dsmr_reader.py, issue 17): the mapping with hand-computed
values, checked against Home Assistant's own ``dsmr_reader`` integration (tests/ha_dsmr_check.py in
its virtual environment, as tests/test_ha_discovery.py does), and end to end through Mosquitto."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.from_p1 import to_reading
from gateway.live import reading_message
from p1.decode import parse_telegram
from services.node.dsmr_reader import UNITS, day_complete, dsmr_messages, payload
from services.node.mqtt_feed import FeedSettings, MqttFeed
from tests.servers import Mosquitto
from tests.test_ha_discovery import ha_python, ha_run  # noqa: F401  (ha_python: the fixture)
from tests.test_mqtt_feed import NODE, Listener
from tests.web_harness import WebRig

GRID = {
    "type": "reading", "meter_id": "1SAG1100000292", "time": "2026-01-15T11:00:30Z", "tariff": "2",
    "import_w": 2400.0, "export_w": 0.0,
    "import_by_tariff": {"1": 1_234_567, "2": 2_345_678}, "export_by_tariff": {"1": 5, "2": 0},
    "phases": [{"phase": 1, "import_w": 1200.0, "export_w": 0.0, "voltage_v": 231.0, "current_a": 5.27},
               {"phase": 2, "import_w": 1200.0, "export_w": None, "voltage_v": 229.5, "current_a": 2.0}],
    "submeters": [{"channel": 2, "kind": "water", "value": 12.5, "unit": "m3", "time": None},
                  {"channel": 1, "kind": "gas", "value": 1234.5, "unit": "m3", "time": "2026-01-15T11:00:00Z"}],
}
# 12:00:30 in Brussels: 48 quarter-hours since local midnight (23:00 UTC) closed, the 49th running
LIVE = {"timezone": "Europe/Brussels",
        "quarter_hour": {"start": "2026-01-15T11:00:00Z", "import_wh": 20, "export_wh": 0},
        "today": {"day": "2026-01-15", "import_wh": 12_345, "export_wh": 678, "closed_quarter_hours": 48}}
LAST_QH = {"start": "2026-01-15T10:45:00Z", "end": "2026-01-15T11:00:00Z", "import_wh": 300, "export_wh": 0,
           "quality": "measured"}


def by_topic(msgs) -> dict[str, tuple[str, bool]]:
    return {t: (p, r) for t, p, r in msgs}


# -- the mapping (pure) -------------------------------------------------------------------------------


def test_units_and_formats_are_dsmr_readers():
    assert payload("reading/electricity_delivered_1", 1_234_567) == "1234.567"  # Wh -> kWh, exact
    assert payload("reading/electricity_returned_2", 5) == "0.005"
    assert payload("reading/electricity_currently_delivered", 2400.0) == "2.400"  # W -> kW
    assert payload("reading/phase_currently_returned_l3", 57.6) == "0.058"
    assert payload("reading/phase_voltage_l1", 231) == "231.0"
    assert payload("reading/phase_power_current_l1", 2.0) == "2"  # the meter's precision, no more
    assert payload("reading/phase_power_current_l1", 0.27) == "0.27"
    assert payload("consumption/gas/delivered", 1234.5) == "1234.500"


def test_a_p1_meter_gives_every_reading_topic():
    msgs = by_topic(dsmr_messages("dsmr", GRID))
    assert msgs["dsmr/reading/electricity_delivered_1"] == ("1234.567", True)
    assert msgs["dsmr/reading/electricity_delivered_2"] == ("2345.678", True)
    assert msgs["dsmr/reading/electricity_returned_1"] == ("0.005", True)
    assert msgs["dsmr/reading/electricity_returned_2"] == ("0.000", True)
    assert msgs["dsmr/reading/electricity_currently_delivered"] == ("2.400", False)
    assert msgs["dsmr/reading/electricity_currently_returned"] == ("0.000", False)
    assert msgs["dsmr/reading/phase_currently_delivered_l1"] == ("1.200", False)
    assert msgs["dsmr/reading/phase_voltage_l2"] == ("229.5", False)
    assert msgs["dsmr/reading/phase_power_current_l1"] == ("5.27", False)
    assert msgs["dsmr/reading/timestamp"] == ("2026-01-15T11:00:30Z", False)
    assert msgs["dsmr/meter-stats/electricity_tariff"] == ("2", True)  # the meter's own number
    # gas: the gas channel, not the water meter on channel 2
    assert msgs["dsmr/reading/extra_device_delivered"] == ("1234.500", True)
    assert msgs["dsmr/consumption/gas/delivered"] == ("1234.500", True)
    assert msgs["dsmr/consumption/gas/read_at"] == ("2026-01-15T11:00:00Z", True)
    # what the meter does not give is not sent: no L2 export, no L3 at all; no day or quarter-hour
    # figures without the live object and the last quarter-hour
    absent = {p for p in UNITS if p.endswith("_l3") or p.startswith(("day-consumption/", "consumption/quarter-hour"))}
    absent.add("reading/phase_currently_returned_l2")
    assert set(msgs) == {f"dsmr/{p}" for p in UNITS.keys() - absent}


def test_what_the_meter_does_not_give_is_left_out():
    total_only = {"time": "2026-06-01T12:00:00Z",
                  "import_by_tariff": {"0": 1_000_000}, "export_by_tariff": {"0": 2_000_000},
                  "import_w": None, "export_w": 1500.0, "tariff": None, "phases": [], "submeters": []}
    msgs = by_topic(dsmr_messages("home/dsmr", total_only))
    # one register per direction: DSMR-reader's tariff-1 topic, none for tariff 2
    assert msgs["home/dsmr/reading/electricity_delivered_1"] == ("1000.000", True)
    assert msgs["home/dsmr/reading/electricity_returned_1"] == ("2000.000", True)
    assert set(msgs) == {"home/dsmr/reading/electricity_delivered_1", "home/dsmr/reading/electricity_returned_1",
                         "home/dsmr/reading/timestamp", "home/dsmr/reading/electricity_currently_returned"}
    odd = {**GRID, "import_by_tariff": {"1": None, "2": 7, "3": 9}, "tariff": "3",
           "submeters": [{"channel": 1, "kind": "gas", "value": 3.0, "unit": "GJ", "time": None}]}
    msgs = by_topic(dsmr_messages("dsmr", odd))
    assert "dsmr/reading/electricity_delivered_1" not in msgs  # unknown, never zero
    assert msgs["dsmr/reading/electricity_delivered_2"] == ("0.007", True)  # tariff 3 has no topic
    assert "dsmr/meter-stats/electricity_tariff" not in msgs  # Home Assistant would call 3 "high"
    assert not any("gas" in t or "extra_device" in t for t in msgs)  # gas in GJ: not DSMR-reader's m³
    assert dsmr_messages("dsmr", None) == []


def test_day_consumption_only_when_the_store_has_the_whole_day():
    msgs = by_topic(dsmr_messages("dsmr", GRID, LIVE, LAST_QH))
    assert msgs["dsmr/day-consumption/electricity_merged"] == ("12.345", True)
    assert msgs["dsmr/day-consumption/electricity_returned_merged"] == ("0.678", True)
    assert day_complete(LIVE, LAST_QH)
    # a node installed this morning: fewer closed quarter-hours than have passed
    assert not day_complete({**LIVE, "today": {**LIVE["today"], "closed_quarter_hours": 20}}, LAST_QH)
    # the instant between the running quarter-hour's close and the store's new total
    assert not day_complete(LIVE, {**LAST_QH, "start": "2026-01-15T11:00:00Z"})
    # yesterday's totals still loaded after midnight
    assert not day_complete({**LIVE, "today": {**LIVE["today"], "day": "2026-01-14"}}, LAST_QH)
    assert not any("/day-consumption/" in t for t in by_topic(dsmr_messages("dsmr", GRID, {**LIVE, "today": None})))
    # the spring-forward day in Brussels: local midnight is 23:00 UTC, 10:00 UTC is 44 quarter-hours later
    dst = {"timezone": "Europe/Brussels", "quarter_hour": {"start": "2026-03-29T10:00:00Z"},
           "today": {"day": "2026-03-29", "import_wh": 1, "export_wh": 0, "closed_quarter_hours": 44}}
    assert day_complete(dst, None)


def test_the_last_quarter_hour_as_an_average_power():
    msgs = by_topic(dsmr_messages("dsmr", GRID, None, LAST_QH))
    path = "dsmr/consumption/quarter-hour-peak-electricity"
    assert msgs[f"{path}/average_delivered"] == ("1.200", True)  # 300 Wh in 15 min = 1.2 kW
    assert msgs[f"{path}/read_at_start"] == ("2026-01-15T10:45:00Z", True)
    assert msgs[f"{path}/read_at_end"] == ("2026-01-15T11:00:00Z", True)


def test_the_settings_and_their_validation(tmp_path: Path):
    cfg = load_config(None)
    assert cfg.mqtt.dsmr_reader_topics is False and cfg.mqtt.dsmr_reader_prefix == "dsmr"
    p = tmp_path / "q.toml"
    p.write_text('[mqtt]\ndsmr_reader_topics = true\ndsmr_reader_prefix = "meters/dsmr"\n')
    s = FeedSettings.from_config(load_config(p).mqtt)
    assert (s.dsmr_reader_topics, s.dsmr_reader_prefix) == (True, "meters/dsmr")
    for bad in ("dsmr/#", "+/dsmr", "", "dsmr/"):
        p.write_text(f'[mqtt]\ndsmr_reader_prefix = "{bad}"\n')
        with pytest.raises(ConfigError, match="mqtt.dsmr_reader_prefix"):
            load_config(p)


# -- checked with Home Assistant's own integration -----------------------------------------------------


def p1_meter_with_gas() -> dict:
    """A simulated Dutch DSMR 5 meter with gas and registers far from zero, through the real decoder."""
    from demo.meter import MeterSimulator

    start = datetime(2026, 1, 15, 11, 0, tzinfo=UTC)
    sim = MeterSimulator(start=start, seed=3, gas=True, phases=3, dialect="dsmr5", import_wh=(1_234_567, 2_345_678),
                         export_wh=(345_678, 45_678), gas_dm3=1_234_567)
    reading = to_reading(parse_telegram(sim.telegram_at(start + timedelta(seconds=30))))
    return reading_message(reading, None, time.time(), "grid", reading.meter_id)


def test_home_assistant_subscribes_to_every_topic_with_our_units(ha_python: Path):  # noqa: F811
    grid = p1_meter_with_gas()
    msgs = dsmr_messages("dsmr", grid, LIVE, LAST_QH)
    res = ha_run(ha_python, "ha_dsmr_check.py", {"prefix": "dsmr", "messages": msgs, "units": UNITS})
    print(f"\nHome Assistant {res['version']}: {res['checked']} DSMR-reader topics checked")
    assert res["errors"] == []
    assert res["checked"] == len(msgs)
    published = {t for t, _p, _r in msgs}
    # every register and the gas a P1 meter with gas gives: all of Home Assistant's total_increasing
    # energy and gas sensors of a reading, and the registers' values are the meter's
    registers = {k for k, s in res["sensors"].items()
                 if s["state_class"] == "total_increasing" and not k.startswith("dsmr/day-consumption/")}
    assert registers == {*(f"dsmr/reading/electricity_{d}_{n}" for d in ("delivered", "returned") for n in (1, 2)),
                         "dsmr/reading/extra_device_delivered", "dsmr/consumption/gas/delivered"}
    assert registers <= published
    values = by_topic(msgs)
    assert float(values["dsmr/reading/electricity_delivered_2"][0]) * 1000 == grid["import_by_tariff"]["2"]
    assert float(values["dsmr/reading/electricity_returned_1"][0]) * 1000 == grid["export_by_tariff"]["1"]
    assert values["dsmr/consumption/gas/delivered"][0] == f"{grid['submeters'][0]['value']:.3f}"
    assert {"dsmr/reading/phase_voltage_l3", "dsmr/meter-stats/electricity_tariff",
            "dsmr/day-consumption/electricity_merged"} <= published
    # under another prefix the same topics (for a bridge): the check strips it
    other = dsmr_messages("site/a", grid)
    res = ha_run(ha_python, "ha_dsmr_check.py", {"prefix": "site/a", "messages": other, "units": UNITS})
    assert res["errors"] == []


def test_the_check_catches_what_home_assistant_refuses(ha_python: Path):  # noqa: F811
    """Not a rubber stamp: a wrong unit, an unknown topic, a non-number and a time without zone."""
    units = {**UNITS, "reading/electricity_delivered_1": "Wh", "reading/nonsense": None}
    msgs = [("dsmr/reading/electricity_currently_delivered", "2,4", False),
            ("dsmr/reading/timestamp", "2026-01-15T11:00:30", False),
            ("dsmr/reading/extra_device_timestamp", "2026-01-15T11:00:00Z", True),
            ("quartier/x/power", "1", False)]
    res = ha_run(ha_python, "ha_dsmr_check.py", {"prefix": "dsmr", "messages": msgs, "units": units})
    text = "\n".join(res["errors"])
    for needle in ("reading/electricity_delivered_1: unit 'Wh', Home Assistant expects 'kWh'",
                   "reading/nonsense: Home Assistant's integration has no such topic",
                   "dsmr/reading/electricity_currently_delivered: '2,4' is not a number",
                   "dsmr/reading/timestamp: '2026-01-15T11:00:30' is not a time with its zone",
                   "does not subscribe to dsmr/reading/extra_device_timestamp",
                   "quartier/x/power: not under the prefix 'dsmr'"):
        assert needle in text, text


# -- against Mosquitto ---------------------------------------------------------------------------------


def _rig(broker: Mosquitto, on: bool) -> tuple[WebRig, MqttFeed]:
    feed = MqttFeed(FeedSettings(host=broker.host, port=broker.port, node_id=NODE, keepalive_s=5, min_interval_s=0,
                                 discovery=False, dsmr_reader_topics=on))
    rig = WebRig(mqtt_feed=feed)
    rig.wait_for(lambda: feed.connected, "the feed's connection")
    return rig, feed


def test_the_topics_arrive_through_mosquitto_when_on(mosquitto: Mosquitto):
    ha = Listener(mosquitto, "dsmr/#")
    rig, _feed = _rig(mosquitto, True)
    try:
        rig.feed(0, import_w=1200)
        rig.feed(60, import_w=1200)
        ha.wait("dsmr/reading/electricity_delivered_1", lambda p: p == "1000.020")  # 1,000,000 Wh + 20 Wh
        ha.wait("dsmr/reading/electricity_returned_1", lambda p: p == "500.000")
        ha.wait("dsmr/reading/electricity_currently_delivered", lambda p: p == "1.200")
        ha.wait("dsmr/reading/timestamp", lambda p: p == "2026-06-01T08:01:00Z")
        rig.feed(840, import_w=1200)  # closes 08:00-08:15: 300 Wh
        assert ha.wait("dsmr/consumption/quarter-hour-peak-electricity/average_delivered") == "1.200"
        assert ha.wait("dsmr/consumption/quarter-hour-peak-electricity/read_at_start") == "2026-06-01T08:00:00Z"
        # registers and the peak retained, powers not (like the rest of the feed): what a late subscriber gets
        late = Listener(mosquitto, "dsmr/#")
        try:
            assert late.wait("dsmr/reading/electricity_delivered_1") == "1000.300"
            late.wait("dsmr/consumption/quarter-hour-peak-electricity/read_at_end")
            assert all(r for _t, _p, r in late.messages)
            assert not any("currently" in t or t.endswith("timestamp") for t, _p, _r in late.messages)
        finally:
            late.close()
        # the store has no quarter-hour before 10:00 local (the rig starts then): no day figures
        rig.feed(60, import_w=1200)
        ha.wait("dsmr/reading/timestamp", lambda p: p == "2026-06-01T08:16:00Z")
        assert not any("/day-consumption/" in t for t, _p, _r in ha.messages)
    finally:
        ha.close()
        rig.close()


def test_day_consumption_arrives_once_the_store_has_the_day(mosquitto: Mosquitto):
    """From local midnight (22:00 UTC in June): the day's import since midnight, in kWh."""
    ha = Listener(mosquitto, "dsmr/day-consumption/#")
    rig, _feed = _rig(mosquitto, True)
    try:
        rig.t = datetime(2026, 5, 31, 21, 45, tzinfo=UTC)  # the first reading at local midnight
        rig.feed_quarter_hours(9, import_w=1200, step_s=900)  # 02:00 local, 8 quarter-hours of 300 Wh closed
        rig.wait_live(lambda x: (x["today"] or {}).get("closed_quarter_hours") == 8, "the day's totals")
        rig.feed(60, import_w=1200)
        ha.wait("dsmr/day-consumption/electricity_merged", lambda p: p == "2.420")  # 8 x 300 Wh + 20 Wh running
        assert ha.wait("dsmr/day-consumption/electricity_returned_merged") == "0.000"
        # every figure sent was the whole day so far: it never falls (Home Assistant would see a reset)
        sent = [float(p) for t, p, _r in ha.messages if t == "dsmr/day-consumption/electricity_merged"]
        assert sent == sorted(sent), sent
    finally:
        ha.close()
        rig.close()


def test_no_dsmr_reader_topic_when_off(mosquitto: Mosquitto):
    ha = Listener(mosquitto, "dsmr/#", f"quartier/{NODE}/#")
    rig, _feed = _rig(mosquitto, False)
    try:
        rig.feed(0, import_w=1200)
        rig.feed(900, import_w=1200)
        ha.wait(f"quartier/{NODE}/energy/import_wh_total", lambda p: p == "1000300")
        ha.wait(f"quartier/{NODE}/quarter_hour/last")
        time.sleep(0.3)
        assert not [t for t, _p, _r in ha.messages if t.startswith("dsmr/")]
    finally:
        ha.close()
        rig.close()

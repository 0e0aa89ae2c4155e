"""The InfluxDB live measurement (gateway/sinks/influx_live.py) against a real VictoriaMetrics: every
value the meter gives, sampled at an interval, bounded in memory while the database is down, and never
through the store's outbox."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

from gateway.model import PhasePower, Reading, SubMeterReading
from gateway.sinks.influx_live import LiveInfluxWriter, live_fields
from tests.servers import VictoriaMetrics, free_port

UTC = timezone.utc
T0 = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)


def p1_reading(i: int = 0, meter: str = "4530303433303036393938343134") -> Reading:
    return Reading(
        meter_id=meter, time=T0 + timedelta(seconds=i),
        import_wh={"1": 1_000_000 + i, "2": 2_000_000}, export_wh={"1": 300_000, "2": 400_000 + i},
        import_w=812.0, export_w=0.0, tariff="1",
        phases=(PhasePower(1, 500.0, 0.0, 231.2, 2.3), PhasePower(2, 312.0, 0.0, 229.8, 1.4), PhasePower(3, 0.0, 0.0, 232.0, 0.0)),
        submeters=(SubMeterReading(1, "gas", 1234.567, "m3", T0), SubMeterReading(2, "water", 88.1, "m3", T0)),
        demand_w=1500.0, month_peak_w=4200.0,
    )


def writer(url: str, **kw) -> LiveInfluxWriter:
    return LiveInfluxWriter(url=url, token="t", org="quartier", bucket="live", **kw)


def test_fields_cover_everything_the_meter_gives() -> None:
    f = live_fields(p1_reading())
    assert {"import_w", "export_w", "net_w", "import_wh", "export_wh", "import_t1_wh", "import_t2_wh", "export_t1_wh",
            "export_t2_wh", "tariff", "demand_w", "month_peak_w", "gas_m3", "water_m3"} <= set(f)
    assert {f"l{n}_{k}" for n in (1, 2, 3) for k in ("voltage_v", "current_a", "import_w", "export_w")} <= set(f)
    assert f["import_wh"] == "3000000i" and f["gas_m3"] == "1234.567"
    # an unknown register is left out, and so is the sum it would falsify
    r = p1_reading()
    unknown = Reading(r.meter_id, r.time, {"1": 5, "2": None}, {"1": 1}, 10.0, 0.0)
    assert "import_wh" not in live_fields(unknown) and "import_t2_wh" not in live_fields(unknown)


def test_live_points_read_back_from_victoria_metrics(victoria_metrics: VictoriaMetrics) -> None:
    w = writer(victoria_metrics.url, interval_s=0.2)
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    t.start()
    try:
        for i in range(3):
            w.offer(p1_reading(i))
            time.sleep(0.35)
        deadline = time.monotonic() + 10
        while w.written < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(5)
    assert w.written == 3 and w.dropped == 0
    meter = "4530303433303036393938343134"
    volts = victoria_metrics.query_points("live_l1_voltage_v", meter_id=meter)
    assert [s.value for s in volts] == [231.2] * 3 and volts[0].labels["role"] == "grid"
    assert [s.timestamp_s for s in volts] == [int((T0 + timedelta(seconds=i)).timestamp()) for i in range(3)]
    assert [s.value for s in victoria_metrics.query_points("live_import_t1_wh", meter_id=meter)] == [1e6, 1e6 + 1, 1e6 + 2]
    assert victoria_metrics.query_points("live_gas_m3")[0].value == 1234.567
    assert victoria_metrics.query_points("live_tariff")[0].value == 1


def test_one_sample_per_interval_not_per_reading(victoria_metrics: VictoriaMetrics) -> None:
    w = writer(victoria_metrics.url, interval_s=1)
    for i in range(10):  # ten telegrams between two samples: one point, the latest
        w.offer(p1_reading(i))
    assert w.sample() == 1 and w.sample() == 0
    assert w.flush() == 1
    samples = victoria_metrics.query_points("live_import_t1_wh")
    assert [(s.timestamp_s, s.value) for s in samples] == [(int((T0 + timedelta(seconds=9)).timestamp()), 1e6 + 9)]


def test_bounded_while_the_database_is_down_then_catches_up(victoria_metrics: VictoriaMetrics) -> None:
    down = writer(f"http://127.0.0.1:{free_port()}", interval_s=1, max_points=50, timeout_s=1)
    for i in range(200):
        down.offer(p1_reading(i))
        down.sample()
    assert len(down._pending) == 50 and down.dropped == 150
    try:
        down.flush()
    except Exception:
        pass
    else:
        raise AssertionError("a closed port must fail")
    assert len(down._pending) == 50  # kept for the next try
    down.url = victoria_metrics.url  # the database is back (same queue, a client on the live URL)
    up = writer(victoria_metrics.url, interval_s=1, max_points=50)
    up._pending = down._pending
    assert up.flush() == 50 and not up._pending
    ts = [s.timestamp_s for s in victoria_metrics.query_points("live_import_w")]
    assert ts == [int((T0 + timedelta(seconds=i)).timestamp()) for i in range(150, 200)]  # the newest were kept


def test_power_snapshots_between_counter_readings_get_their_own_second(victoria_metrics: VictoriaMetrics) -> None:
    """A Fluksometer's gauge every second between counters once a minute: same reading time, new power."""
    import dataclasses

    w = writer(victoria_metrics.url, interval_s=1)
    base = dataclasses.replace(p1_reading(), time=datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30))
    w.offer(base)
    w.sample()
    w.offer(dataclasses.replace(base, import_w=1999.0))
    w.sample()
    w.flush()
    samples = victoria_metrics.query_points("live_import_w")
    assert [s.value for s in samples] == [812.0, 1999.0] and samples[1].timestamp_s > samples[0].timestamp_s

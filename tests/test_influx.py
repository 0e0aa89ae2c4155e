"""The InfluxDB sink against a real server speaking the InfluxDB v2 write API (VictoriaMetrics).

VictoriaMetrics stores field ``f`` of measurement ``m`` as metric ``m_f`` with the tags as labels, and
keeps one sample per series and timestamp (``-dedup.minScrapeInterval=1ms``), as InfluxDB keeps one
point per series and timestamp.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from gateway.model import QUARTER, Quality, QuarterHour
from gateway.sinks.influx import QUALITY_CODES, InfluxSink
from gateway.store import Store
from tests.servers import VictoriaMetrics

UTC = timezone.utc
# recent (VictoriaMetrics refuses samples from the future) and well inside its -retentionPeriod
FIRST = (datetime.now(UTC) - timedelta(days=40)).replace(hour=0, minute=0, second=0, microsecond=0)


def make_sink(store: Store, vm: VictoriaMetrics, **kw) -> InfluxSink:
    options = dict(backoff_initial_s=0.05, backoff_max_s=0.4, idle_poll_s=0.05, timeout_s=5)
    options.update(kw)
    return InfluxSink(store, url=vm.url, token="test-token", org="quartier", bucket="quarter_hours", **options)


def drain(sink: InfluxSink) -> int:
    total = 0
    while n := sink.push_once():
        total += n
    return total


def stored(vm: VictoriaMetrics, field: str, measurement: str = "quarter_hour") -> dict[tuple[str, int], list[float]]:
    """(meter_id, start in seconds) -> every sample found for it, across all series of the metric."""
    found: dict[tuple[str, int], list[float]] = {}
    for s in vm.query_points(f"{measurement}_{field}"):
        found.setdefault((s.labels["meter_id"], s.timestamp_s), []).append(s.value)
    return found


def test_pushed_quarter_hours_read_back_exactly(store: Store, victoria_metrics: VictoriaMetrics, make_quarter_hours) -> None:
    meters = ("541448820044112233", "E0043 007,unit=2")  # the second one needs line-protocol escaping
    qhs = [q for m in meters for q in make_quarter_hours(m, FIRST, 12)]
    qhs[3] = dataclasses.replace(qhs[3], quality=Quality.ESTIMATED)
    qhs[4] = dataclasses.replace(qhs[4], quality=Quality.INTERPOLATED)
    store.commit_quarter_hours(qhs)
    sink = make_sink(store, victoria_metrics)
    try:
        assert drain(sink) == len(qhs)
    finally:
        sink.close()
    assert store.outbox_depth("influx") == 0
    assert sink.stats.pushed == len(qhs) and sink.stats.last_success is not None
    assert store.get_state("influx.last_push") == sink.stats.last_success.isoformat()

    def key(q: QuarterHour) -> tuple[str, int]:
        return q.meter_id, int(q.start.timestamp())

    assert stored(victoria_metrics, "import_wh") == {key(q): [q.import_wh] for q in qhs}
    assert stored(victoria_metrics, "export_wh") == {key(q): [q.export_wh] for q in qhs}
    for tariff in ("1", "2"):
        assert stored(victoria_metrics, f"import_t{tariff}_wh") == {key(q): [q.import_by_tariff[tariff]] for q in qhs}
        assert stored(victoria_metrics, f"export_t{tariff}_wh") == {key(q): [q.export_by_tariff[tariff]] for q in qhs}
    assert stored(victoria_metrics, "quality") == {key(q): [QUALITY_CODES[q.quality]] for q in qhs}
    assert stored(victoria_metrics, "estimated") == {key(q): [int(q.quality == Quality.ESTIMATED)] for q in qhs}
    labels = {tuple(sorted(s.labels.items())) for s in victoria_metrics.query_points("quarter_hour_import_wh")}
    assert labels == {(("meter_id", m), ("source", "p1")) for m in meters}  # no quality tag, no extra series


def test_writing_the_same_quarter_hours_twice_leaves_one_sample_each(
    store: Store, victoria_metrics: VictoriaMetrics, make_quarter_hours
) -> None:
    qhs = make_quarter_hours("m1", FIRST, 8) + make_quarter_hours("m2", FIRST, 8)
    store.commit_quarter_hours(qhs)
    sink = make_sink(store, victoria_metrics, batch_size=5)
    try:
        assert drain(sink) == 16
        assert store.enqueue("influx") == 16  # as if every acknowledgement had been lost
        assert drain(sink) == 16
    finally:
        sink.close()
    found = stored(victoria_metrics, "import_wh")
    assert len(found) == 16 and all(len(v) == 1 for v in found.values())
    assert sink.stats.pushed == 32


def test_outage_loses_and_duplicates_nothing_and_replays_in_order(
    tmp_path, victoria_metrics: VictoriaMetrics, make_quarter_hours
) -> None:
    meters = [f"meter-{i}" for i in range(6)]
    store = Store(tmp_path / "outage.sqlite", sinks=("influx",))
    acked_ids: list[int] = []
    real_ack = store.outbox_ack

    def spying_ack(sink, ids, **kw):
        real_ack(sink, ids, **kw)
        acked_ids.extend(ids)

    store.outbox_ack = spying_ack  # type: ignore[method-assign]
    sink = make_sink(store, victoria_metrics, batch_size=7)
    stop = threading.Event()
    worker = threading.Thread(target=sink.run, args=(stop,), name="influx-sink")
    worker.start()
    sent: list[QuarterHour] = []

    def commit_quarters(first: datetime, n: int) -> None:
        """Commit ``n`` quarter-hours for every meter, one quarter-hour (all meters) per commit."""
        batches = [make_quarter_hours(m, first, n) for m in meters]
        for i in range(n):
            batch = [b[i] for b in batches]
            store.commit_quarter_hours(batch)
            sent.extend(batch)
            sink.notify()

    def wait_for(condition, what: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    try:
        commit_quarters(FIRST, 4)  # the first hour, while the server is up
        wait_for(lambda: store.outbox_depth("influx") == 0, "the first hour to be pushed")
        victoria_metrics.stop()
        commit_quarters(FIRST + 4 * QUARTER, 6)  # an hour and a half while the server is down
        wait_for(lambda: sink.stats.consecutive_failures >= 3, "the sink to fail and back off")
        assert sink.stats.down_since is not None and "unreachable" in (sink.stats.last_error or "")
        commit_quarters(FIRST + 10 * QUARTER, 4)  # two and a half hours down in all
        backlog = store.outbox_depth("influx")
        assert backlog == 10 * len(meters)
        victoria_metrics.start()
        commit_quarters(FIRST + 14 * QUARTER, 1)  # committed while the backlog is being replayed
        wait_for(lambda: store.outbox_depth("influx") == 0, "the backlog to drain")
        victoria_metrics.stop()  # a second, shorter outage: stopped and restarted mid-run
        commit_quarters(FIRST + 15 * QUARTER, 2)
        wait_for(lambda: sink.stats.consecutive_failures >= 1, "the sink to notice the second outage")
        victoria_metrics.start()
        wait_for(lambda: store.outbox_depth("influx") == 0, "the second backlog to drain")
        assert sink.stats.down_since is None and sink.stats.consecutive_failures == 0
    finally:
        stop.set()
        sink.notify()
        worker.join(timeout=30)
        sink.close()
    assert not worker.is_alive()

    found = stored(victoria_metrics, "import_wh")
    expected = {(q.meter_id, int(q.start.timestamp())): q.import_wh for q in sent}
    duplicates = sum(len(v) - 1 for v in found.values())
    lost = len(set(expected) - set(found))
    unexpected = len(set(found) - set(expected))
    resent = sink.stats.pushed - len(sent)
    print(
        f"\ninflux outage: sent={len(sent)} acknowledged={sink.stats.pushed} stored={len(found)}"
        f" duplicates={duplicates} lost={lost} unexpected={unexpected} resent_after_lost_ack={resent}"
        f" backlog_at_restart={backlog}"
    )
    assert (duplicates, lost, unexpected) == (0, 0, 0)
    assert {k: v[0] for k, v in found.items()} == expected  # every value exact
    assert len(acked_ids) == len(set(acked_ids)) == len(sent)
    assert acked_ids == sorted(acked_ids)  # the backlog was replayed in commit order
    assert store.dead_letters() == []
    store.close()


def test_a_sink_that_starts_with_the_server_down_waits_and_then_delivers(
    store: Store, victoria_metrics: VictoriaMetrics, make_quarter_hours
) -> None:
    victoria_metrics.stop()
    store.commit_quarter_hours(make_quarter_hours("m1", FIRST, 5))
    sink = make_sink(store, victoria_metrics)
    try:
        with pytest.raises(Exception) as failure:
            sink.push_once()
        assert type(failure.value).__name__ == "SinkUnavailable"
        assert store.outbox_depth("influx") == 5
        victoria_metrics.start()
        assert drain(sink) == 5
    finally:
        sink.close()
    assert len(stored(victoria_metrics, "import_wh")) == 5


def test_quality_is_a_field_so_a_better_rewrite_replaces_the_point(
    store: Store, victoria_metrics: VictoriaMetrics, make_quarter_hours
) -> None:
    """The same quarter-hour estimated first, measured later (another store, e.g. after a repair):
    still one series and one sample, with the latest quality."""
    [estimated] = make_quarter_hours("m1", FIRST, 1, quality=Quality.ESTIMATED)
    store.commit_quarter_hours([estimated])
    sink = make_sink(store, victoria_metrics)
    drain(sink)
    sink.close()
    with Store(store.path.with_name("other.sqlite"), sinks=("influx",)) as other:
        other.commit_quarter_hours([dataclasses.replace(estimated, quality=Quality.MEASURED)])
        sink = make_sink(other, victoria_metrics)
        drain(sink)
        sink.close()
    assert stored(victoria_metrics, "quality") == {("m1", int(FIRST.timestamp())): [QUALITY_CODES[Quality.MEASURED]]}
    assert len(victoria_metrics.query_points("quarter_hour_import_wh")) == 1


def test_influxdb_client_is_not_imported_by_the_sinks_package() -> None:
    """The daemon's RSS budget: the client library (~25 MB) loads only when the sink is built."""
    import subprocess
    import sys

    code = (
        "import sys, gateway.sinks, gateway.sinks.influx, gateway.store;"
        "print('influxdb_client' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    code = (
        "import sys; from gateway.sinks.influx import load_influxdb_client; load_influxdb_client();"
        "import numpy; print('influxdb_client' in sys.modules, numpy.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "numpy"]  # numpy, hidden while influxdb_client loaded, still imports afterwards


RSS_CHILD = """
import sys
from datetime import datetime, timedelta, timezone
def rss_kb(key="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
from gateway.model import QUARTER, Quality, QuarterHour
from gateway.store import Store
store = Store(sys.argv[1], sinks=("influx",))
t0 = datetime.fromisoformat(sys.argv[3])
store.commit_quarter_hours([
    QuarterHour(f"m{m}", t0 + i * QUARTER, i % 300, i % 50, Quality.MEASURED, {"1": i % 300}, {"1": i % 50}, {"1": i}, {"1": i})
    for m in range(4) for i in range(250)
])
base = rss_kb()
from gateway.sinks.influx import InfluxSink
sink = InfluxSink(store, url=sys.argv[2], token="t", org="o", bucket="b")
imported = rss_kb()
while sink.push_once():
    pass
print(base, imported - base, rss_kb() - base, rss_kb("VmHWM"), sink.stats.pushed, "numpy" in sys.modules)
"""


def test_rss_cost_of_the_influx_sink(tmp_path, victoria_metrics: VictoriaMetrics) -> None:
    """Prints what enabling the sink costs a daemon (run with -s); the budget is 45 MB in all."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(tmp_path / "rss.sqlite"), victoria_metrics.url, FIRST.isoformat()],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    base, imported, after_push, peak, pushed = map(int, out[:5])
    print(
        f"\ninflux sink RSS: process_before={base} kB import_and_client=+{imported} kB"
        f" after_pushing_{pushed}=+{after_push} kB peak={peak} kB numpy_loaded={out[5]}"
    )
    assert pushed == 1000 and out[5] == "False"
    assert after_push < 32 * 1024  # regression guard: without numpy hidden it would be ~+38 MB


def test_timestamps_are_quarter_hour_starts_in_seconds(
    store: Store, victoria_metrics: VictoriaMetrics, make_quarter_hours
) -> None:
    qhs = make_quarter_hours("m1", FIRST + timedelta(days=20, minutes=45), 3)
    store.commit_quarter_hours(qhs)
    sink = make_sink(store, victoria_metrics)
    drain(sink)
    sink.close()
    samples = victoria_metrics.query_points("quarter_hour_export_wh", meter_id="m1")
    assert [s.timestamp_s for s in samples] == [int(q.start.timestamp()) for q in qhs]
    assert Counter(s.timestamp_s % 900 for s in samples) == {0: 3}

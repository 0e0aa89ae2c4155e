"""The daemon's live feed (gateway/live.py): snapshots to local subscribers over a Unix socket,
never waiting for a subscriber that does not keep up."""

from __future__ import annotations

import json
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.live import LivePublisher
from gateway.live_pipeline import LivePipeline
from gateway.model import ClockQuality, Reading
from gateway.plausibility import Limits
from gateway.store import Store


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # a short path: a Unix socket's path is limited to 107 bytes, pytest's tmp_path can be longer
    with tempfile.TemporaryDirectory(prefix="ql") as d:
        yield Path(d)


@pytest.fixture
def publisher(sock_dir: Path) -> Iterator[LivePublisher]:
    pub = LivePublisher(sock_dir / "live.sock", max_backlog_bytes=64 * 1024)
    pub.start()
    try:
        yield pub
    finally:
        pub.stop()


class Subscriber:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(5)
        self.buf = b""

    def next(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("publisher closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()


def wait_until(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_subscriber_gets_hello_latest_state_then_every_message(publisher: LivePublisher):
    publisher.publish({"type": "reading", "meter_id": "m1", "n": 0}, latest_for="m1")
    publisher.publish({"type": "reading", "meter_id": "m1", "n": 1}, latest_for="m1")
    time.sleep(0.1)  # let the publisher thread take them before anyone connects
    sub = Subscriber(publisher.path)
    try:
        hello = sub.next()
        assert hello["type"] == "hello" and hello["version"] == 1
        assert sub.next() == {"type": "reading", "meter_id": "m1", "n": 1}  # only the latest, not history
        for n in range(2, 50):
            publisher.publish({"type": "reading", "meter_id": "m1", "n": n}, latest_for="m1")
        assert [sub.next()["n"] for _ in range(2, 50)] == list(range(2, 50))
        assert publisher.stats.subscribers == 1
    finally:
        sub.close()
    wait_until(lambda: publisher.stats.subscribers == 0)


def test_a_subscriber_that_does_not_read_is_dropped_and_never_blocks_publishing(publisher: LivePublisher):
    fast = Subscriber(publisher.path)
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(str(publisher.path))
    try:
        assert fast.next()["type"] == "hello"
        wait_until(lambda: publisher.stats.subscribers == 2)
        payload = "x" * 900
        received = []
        # ~2.7 MB while `slow` never reads: far beyond the socket buffers and the 64 KB backlog; were
        # publish() to wait for a subscriber, this loop would hang (and the test time out)
        for n in range(3000):
            publisher.publish({"type": "reading", "meter_id": "m1", "n": n, "pad": payload})
            if n % 100 == 99:  # the fast subscriber keeps up
                while len(received) < n - 50:
                    received.append(fast.next()["n"])
        while len(received) < 3000:
            received.append(fast.next()["n"])
        assert received == list(range(3000))  # the fast one lost nothing
        wait_until(lambda: publisher.stats.dropped_slow == 1)
        assert publisher.stats.subscribers == 1
        assert publisher.stats.queue_overflow == 0
        # the slow subscriber's connection was closed by the publisher
        slow.settimeout(5)
        data = b""
        while True:
            chunk = slow.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b'{"type":"hello"') or data.startswith(b'{"type": "hello"')
    finally:
        fast.close()
        slow.close()


def test_stale_socket_file_is_replaced_and_removed_on_stop(sock_dir: Path):
    path = sock_dir / "live.sock"
    path.write_text("left over by a killed daemon")
    pub = LivePublisher(path)
    pub.start()
    assert path.is_socket()
    pub.stop()
    assert not path.exists()


def test_too_long_a_path_is_a_clear_error(sock_dir: Path):
    pub = LivePublisher(sock_dir / ("d" * 120) / "live.sock")
    with pytest.raises(OSError, match="too long"):
        pub.start()


# these readings come minutes apart, not a meter's second: the gate believes such gaps at once
MINUTES_APART = Limits(clock_tolerance_s=None, max_jump_s=3600, cadence_factor=None)


def _reading(t: datetime, imp: int, exp: int, import_w: float, export_w: float) -> Reading:
    return Reading(meter_id="m1", time=t, import_wh={"1": imp}, export_wh={"1": exp}, import_w=import_w,
                   export_w=export_w, clock=ClockQuality.METER, month_peak_w=2500.0)


def test_live_pipeline_publishes_readings_and_committed_quarter_hours(publisher: LivePublisher, sock_dir: Path):
    store = Store(sock_dir / "s.sqlite")
    pipeline = LivePipeline(store, publisher=publisher, limits=MINUTES_APART)
    sub = Subscriber(publisher.path)
    try:
        assert sub.next()["type"] == "hello"
        t0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
        pipeline.feed_reading(_reading(t0, 1000, 500, 0.0, 2000.0))
        first = sub.next()
        assert first["type"] == "reading" and first["meter_id"] == "m1" and first["time"] == "2026-06-01T10:00:00Z"
        assert first["export_w"] == 2000.0 and first["month_peak_w"] == 2500.0
        assert first["quarter_hour"] == {"start": "2026-06-01T10:00:00Z", "elapsed_s": 0.0, "import_wh": 0,
                                         "export_wh": 0, "projected_demand_w": 0.0}
        pipeline.feed_reading(_reading(t0 + timedelta(minutes=5), 1000, 667, 0.0, 2000.0))
        mid = sub.next()
        assert mid["quarter_hour"]["export_wh"] == 167 and mid["quarter_hour"]["elapsed_s"] == 300.0
        assert mid["export_wh_total"] == 667
        pipeline.feed_reading(_reading(t0 + timedelta(minutes=15), 1100, 800, 400.0, 0.0))
        closed = sub.next()
        # the closed quarter-hour comes first, and only once it is in the store
        assert closed["type"] == "quarter_hour" and closed["start"] == "2026-06-01T10:00:00Z"
        assert (closed["import_wh"], closed["export_wh"], closed["quality"]) == (100, 300, "measured")
        assert len(store.quarter_hours(meter_id="m1")) == 1
        nxt = sub.next()
        assert nxt["type"] == "reading" and nxt["quarter_hour"]["start"] == "2026-06-01T10:15:00Z"
        assert nxt["quarter_hour"]["import_wh"] == 0
    finally:
        sub.close()
        store.close()


def test_a_broken_publisher_never_reaches_metering(sock_dir: Path):
    class Broken:
        def publish(self, *_a, **_k):
            raise RuntimeError("boom")

    store = Store(sock_dir / "s.sqlite")
    try:
        pipeline = LivePipeline(store, publisher=Broken(), limits=MINUTES_APART)  # type: ignore[arg-type]
        t0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
        pipeline.feed_reading(_reading(t0, 0, 0, 0.0, 0.0))
        committed = pipeline.feed_reading(_reading(t0 + timedelta(minutes=15), 50, 10, 0.0, 0.0))
        assert [q.import_wh for q in committed] == [50]
        assert store.count_quarter_hours() == 1
    finally:
        store.close()

"""The sink's failure policy, driven precisely by a scripted HTTP server.

VictoriaMetrics accepts anything, so it cannot answer 400, 429 or 503 on demand; this small server
can. It tests *our* policy (what is retried, what is dead-lettered, what Retry-After does), not the
database, which ``test_influx.py`` covers with a real one.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import QUARTER, Quality, QuarterHour
from gateway.sinks import SinkUnavailable, backoff_delay, parse_retry_after
from gateway.sinks.influx import InfluxSink, UnencodableQuarterHour, line_protocol
from gateway.store import Store
from tests.servers import free_port

UTC = timezone.utc
FIRST = datetime(2026, 5, 4, tzinfo=UTC)
Answer = tuple[int, dict[str, str], bytes]


class ScriptedInflux:
    """An HTTP server whose answer to each write is decided by ``respond(lines)``; records requests."""

    def __init__(self, respond: Callable[[list[str]], Answer]) -> None:
        self.respond = respond
        self.requests: list[list[str]] = []
        self.delay_s = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                lines = self.rfile.read(length).decode().split("\n")
                outer.requests.append(lines)
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                status, headers, body = outer.respond(lines)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first (on purpose)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def written(self) -> list[str]:
        return [line for lines in self.requests for line in lines]


NO_CONTENT: Answer = (204, {}, b"")


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, f'{{"code":"invalid","message":"{message}"}}'.encode()


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[list[str]], Answer]], ScriptedInflux]]:
    servers: list[ScriptedInflux] = []

    def start(respond: Callable[[list[str]], Answer]) -> ScriptedInflux:
        servers.append(ScriptedInflux(respond))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def sink_for(store: Store, url: str, **kw) -> InfluxSink:
    options = dict(backoff_initial_s=0.01, backoff_max_s=0.05, idle_poll_s=0.02, timeout_s=2, rng=random.Random(1))
    options.update(kw)
    return InfluxSink(store, url=url, token="t", org="o", bucket="b", **options)


def meters(store: Store, make_quarter_hours, names: list[str], n: int = 1) -> list[QuarterHour]:
    qhs = [q for m in names for q in make_quarter_hours(m, FIRST, n)]
    store.commit_quarter_hours(qhs)
    return qhs


# -- 4xx: bisect, dead-letter only the refused point ----------------------------------------------------


def test_a_400_dead_letters_only_the_bad_point(store: Store, scripted, make_quarter_hours) -> None:
    def bad_inside(lines: list[str]) -> bool:
        return any("meter_id=bad" in line for line in lines)

    server = scripted(lambda lines: json_error(400, "unable to parse meter_id=bad") if bad_inside(lines) else NO_CONTENT)
    names = [f"good{i}" for i in range(5)] + ["bad"] + [f"good{i}" for i in range(5, 9)]
    qhs = meters(store, make_quarter_hours, names)
    sink = sink_for(store, server.url)
    assert sink.push_once() == 10
    sink.close()
    [dead] = store.dead_letters("influx")
    assert dead.quarter_hour.meter_id == "bad"
    assert dead.reason.startswith("HTTP 400") and "unable to parse" in dead.reason
    assert store.outbox_depth("influx") == 0
    assert sink.stats.pushed == 9 and sink.stats.dead_lettered == 1
    good_lines = [line_protocol(q) for q in qhs if q.meter_id != "bad"]
    accepted = [lines for lines in server.requests if not bad_inside(lines)]
    assert sorted(line for lines in accepted for line in lines) == sorted(good_lines)  # each good point written once
    assert len(server.requests) <= 2 * 4 + 1  # a bisection, not one request per point


def test_a_413_splits_the_batch_until_it_fits(store: Store, scripted, make_quarter_hours) -> None:
    server = scripted(lambda lines: (413, {}, b"request too large") if len(lines) > 3 else NO_CONTENT)
    qhs = meters(store, make_quarter_hours, ["m1"], n=13)
    sink = sink_for(store, server.url)
    assert sink.push_once() == 13
    sink.close()
    assert store.dead_letters() == [] and store.outbox_depth() == 0
    accepted = [lines for lines in server.requests if len(lines) <= 3]
    assert [line for lines in accepted for line in lines] == [line_protocol(q) for q in qhs]  # in order


def test_a_point_refused_alone_with_413_is_dead_lettered(store: Store, scripted, make_quarter_hours) -> None:
    server = scripted(lambda lines: (413, {}, b"too large"))
    meters(store, make_quarter_hours, ["m1"], n=2)
    sink = sink_for(store, server.url)
    assert sink.push_once() == 2
    sink.close()
    assert [d.reason for d in store.dead_letters()] == ["HTTP 413: too large"] * 2


def test_an_unencodable_quarter_hour_is_dead_lettered_without_a_request(store: Store, scripted, make_quarter_hours) -> None:
    server = scripted(lambda lines: NO_CONTENT)
    meters(store, make_quarter_hours, ["line\nbreak", "fine"])
    sink = sink_for(store, server.url)
    assert sink.push_once() == 2
    sink.close()
    [dead] = store.dead_letters()
    assert dead.quarter_hour.meter_id == "line\nbreak" and dead.reason.startswith("unencodable")
    assert server.written == [line_protocol(store.quarter_hours("fine")[0])]
    with pytest.raises(UnencodableQuarterHour):
        line_protocol(dead.quarter_hour)


# -- retried: 5xx, 429, 408, credentials, network ---------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_transient_answers_keep_the_batch_in_the_outbox(store: Store, scripted, make_quarter_hours, status: int) -> None:
    server = scripted(lambda lines: json_error(status, "busy"))
    meters(store, make_quarter_hours, ["m1", "m2"])
    sink = sink_for(store, server.url)
    with pytest.raises(SinkUnavailable) as failure:
        sink.push_once()
    sink.close()
    assert failure.value.status == status and f"HTTP {status}" in failure.value.reason
    assert store.outbox_depth("influx") == 2 and store.dead_letters() == []
    assert len(server.requests) == 1  # urllib3 did not retry behind our back


@pytest.mark.parametrize("status", [401, 403, 404])
def test_refused_credentials_org_or_bucket_never_dead_letter_the_data(
    store: Store, scripted, make_quarter_hours, status: int
) -> None:
    server = scripted(lambda lines: json_error(status, "unauthorized access"))
    meters(store, make_quarter_hours, ["m1", "m2", "m3"])
    sink = sink_for(store, server.url)
    with pytest.raises(SinkUnavailable, match="credentials, org or bucket"):
        sink.push_once()
    sink.close()
    assert store.outbox_depth("influx") == 3 and store.dead_letters() == []


def test_retry_after_in_seconds_and_as_an_http_date(store: Store, scripted, make_quarter_hours) -> None:
    in_two_minutes = datetime.now(UTC) + timedelta(seconds=120)
    answers = iter(
        [
            json_error(429, "slow down", {"Retry-After": "7"}),
            json_error(503, "maintenance", {"Retry-After": format_datetime(in_two_minutes, usegmt=True)}),
            json_error(503, "no header"),
        ]
    )
    server = scripted(lambda lines: next(answers))
    meters(store, make_quarter_hours, ["m1"])
    sink = sink_for(store, server.url, backoff_max_s=5)
    waits = []
    for _ in range(3):
        with pytest.raises(SinkUnavailable) as failure:
            sink.push_once()
        waits.append((failure.value.retry_after_s, sink._failed(failure.value.reason, failure.value.retry_after_s)))
    sink.close()
    assert waits[0] == (7.0, 7.0)  # honoured as given, even above backoff_max_s
    assert 100 < waits[1][0] <= 120 and waits[1][1] == waits[1][0]
    assert waits[2][0] is None and 0 <= waits[2][1] <= min(5, 0.01 * 2**2)  # third failure: full jitter


def test_connection_refused_and_timeouts_are_outages(store: Store, scripted, make_quarter_hours) -> None:
    meters(store, make_quarter_hours, ["m1"])
    closed = sink_for(store, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SinkUnavailable, match="unreachable"):
        closed.push_once()
    closed.close()
    server = scripted(lambda lines: NO_CONTENT)
    server.delay_s = 1.0
    slow = sink_for(store, server.url, timeout_s=0.2)
    with pytest.raises(SinkUnavailable, match="unreachable"):
        slow.push_once()
    slow.close()
    assert store.outbox_depth("influx") == 1


# -- the run loop ----------------------------------------------------------------------------------------


def run_until(sink: InfluxSink, condition: Callable[[], bool], timeout_s: float = 20) -> None:
    stop = threading.Event()
    worker = threading.Thread(target=sink.run, args=(stop,))
    worker.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(timeout=10)
    assert not worker.is_alive()
    assert condition(), "condition not reached"


def test_run_backs_off_through_failures_and_logs_each_state_change_once(
    store: Store, scripted, make_quarter_hours, caplog
) -> None:
    answers = iter([json_error(503, "down")] * 4 + [json_error(429, "busy", {"Retry-After": "0"})])
    server = scripted(lambda lines: next(answers, NO_CONTENT))
    meters(store, make_quarter_hours, ["m1", "m2"], n=3)
    sink = sink_for(store, server.url)
    with caplog.at_level(logging.DEBUG, logger="quartier.gateway.sinks"):
        run_until(sink, lambda: store.outbox_depth("influx") == 0)
    sink.close()
    assert len(server.requests) == 6
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("sink.down") == 1 and messages.count("sink.recovered") == 1
    assert messages.count("sink.retry") == 4
    recovered = next(r for r in caplog.records if r.getMessage() == "sink.recovered")
    assert recovered.failures == 5 and recovered.backlog == 0  # type: ignore[attr-defined]
    assert sink.stats.consecutive_failures == 0 and sink.stats.pushed == 6
    assert store.get_state("influx.down_since") == "" and "HTTP 429" in (store.get_state("influx.last_error") or "")


def test_run_never_dies_on_an_unexpected_exception(store: Store, scripted, make_quarter_hours, caplog) -> None:
    server = scripted(lambda lines: NO_CONTENT)
    meters(store, make_quarter_hours, ["m1"])
    sink = sink_for(store, server.url)
    real_peek, calls = store.outbox_peek, []

    def flaky_peek(sink_name: str, limit: int):
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("disk I/O error (simulated)")
        return real_peek(sink_name, limit)

    store.outbox_peek = flaky_peek  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="quartier.gateway.sinks"):
        run_until(sink, lambda: store.outbox_depth("influx") == 0)
    sink.close()
    assert [r.getMessage() for r in caplog.records].count("sink.error") == 2
    assert sink.stats.pushed == 1


def test_notify_wakes_an_idle_sink(store: Store, scripted, make_quarter_hours) -> None:
    server = scripted(lambda lines: NO_CONTENT)
    sink = sink_for(store, server.url, idle_poll_s=3600)  # without notify() it would sleep an hour
    stop = threading.Event()
    worker = threading.Thread(target=sink.run, args=(stop,))
    worker.start()
    try:
        time.sleep(0.1)  # let it find the outbox empty and go idle
        meters(store, make_quarter_hours, ["m1"])
        sink.notify()
        deadline = time.monotonic() + 10
        while store.outbox_depth("influx") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.outbox_depth("influx") == 0
    finally:
        stop.set()
        sink.notify()
        worker.join(timeout=10)
        sink.close()
    assert not worker.is_alive()


# -- pure helpers -----------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    failures=st.integers(0, 200),
    initial=st.floats(0.001, 10),
    factor=st.floats(1, 1000),
    seed=st.integers(0, 2**32),
)
def test_backoff_is_full_jitter_under_an_exponential_cap(failures: int, initial: float, factor: float, seed: int) -> None:
    maximum = initial * factor
    delay = backoff_delay(failures, initial, maximum, random.Random(seed))
    assert 0 <= delay <= min(maximum, initial * 2 ** max(failures - 1, 0))


def test_parse_retry_after() -> None:
    now = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 0 ", now) == 0
    assert parse_retry_after("Mon, 04 May 2026 12:01:30 GMT", now) == 90
    assert parse_retry_after("Monday, 04-May-26 12:00:10 GMT", now) == 10  # RFC 850, obsolete but allowed
    assert parse_retry_after("Mon, 04 May 2026 11:00:00 GMT", now) == 0  # in the past: now
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None and parse_retry_after("", now) is None


def test_line_protocol_escapes_and_types() -> None:
    qh = QuarterHour(
        meter_id="E 1,a=b",
        start=FIRST + QUARTER,
        import_wh=5,
        export_wh=0,
        quality=Quality.INTERPOLATED,
        import_by_tariff={"2": 5, "1": 0},
        export_by_tariff={"1": 0},
        source="flukso",
    )
    assert line_protocol(qh, "qh data") == (
        r"qh\ data,meter_id=E\ 1\,a\=b,source=flukso "
        "import_wh=5i,export_wh=0i,import_t1_wh=0i,import_t2_wh=5i,export_t1_wh=0i,quality=1i,estimated=0i "
        f"{int((FIRST + QUARTER).timestamp())}"
    )

"""Worker of ``bench/fleet.py`` (default mode): many real gateway nodes in one process.

Each simulated gateway runs the node's own uplink path, assembled as ``gateway/daemon.py`` does it:
a :class:`gateway.store.Store` (its own SQLite file, WAL, ``synchronous=FULL``) with the ``uplink``
outbox, a :class:`gateway.pipeline.Pipeline` whose ``on_commit`` wakes the sink, an
:class:`gateway.uplink.UplinkSink` draining that outbox over an :class:`gateway.uplink.Uplink`
(MQTT v5, status + will, allocation subscription; where the sink stores allocations, its handler
wrapped to count them), and the live summary from
:func:`gateway.uplink.live_source_for` published by the sink's ``LiveSummaryPublisher``.

The meter is simulated by feeding each pipeline readings with exact registers: one at every
quarter-hour boundary (which closes the quarter-hour, so the store commits it and creates the outbox
row, and the pipeline notifies the sink) and four inside each quarter-hour (what the live summary
reports). Quarter-hours are therefore ``measured``, as from a healthy P1 port.

Commands from the coordinator (a ``multiprocessing`` queue), answers on ``out``:
``("close", q, wait)`` -> ``("closed", q, committed_at, committed, acked_or_None, acked_at)``;
``("depth",)`` -> ``("depth", rows still in the outboxes)``; ``("stop",)`` -> ``("done", figures)``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from gateway.logs import get_logger

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SECRET = "bench-secret"
COMMUNITY = "bench"
OP = "op-big"
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)
READINGS_PER_QUARTER = 5  # every 3 simulated minutes, the last one on the boundary
# paho's network loop uses select(), which refuses a descriptor >= 1024 (FD_SETSIZE) and paho then
# treats it as a lost connection and retries forever, silently. A node holds 6 descriptors (SQLite
# database, WAL and shared memory; paho's socket and its wake-up socket pair), so one process can run
# about 160 nodes; the coordinator keeps it at 125.
FDS_PER_NODE = 6
MAX_NODES_PER_PROC = 125


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def member_figures(i: int, q: int) -> tuple[int, int]:
    """Member ``i``'s import and export in quarter-hour ``q`` (Wh): 10 % producers, 10 % both."""
    if i % 10 == 0:
        return 0, 2000 + (i * 7 + q * 13) % 1500
    if i % 10 == 1:
        return (i * 3 + q) % 80, 300 + (i + q) % 200
    return 100 + (i * 37 + q * 11) % 400, 0


def ean_of(i: int) -> str:
    return f"5414{i:014d}"


def proc_status() -> dict[str, int]:
    """VmRSS/VmHWM (kB) and the thread count of this process, from /proc."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Monitor:
    """Samples the thread count every 50 ms (the peak shows the per-batch timer threads)."""

    def __init__(self) -> None:
        self.peak_threads = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_threads = max(self.peak_threads, proc_status()["Threads"])

    def stop(self) -> None:
        self._stop.set()
        self._t.join(1)


@dataclass
class Node:
    """One simulated gateway: its store, pipeline, uplink and sink, and what it received."""

    i: int
    ean: str
    store: Any
    pipeline: Any
    sink: Any
    registers: tuple[int, int] = (1_000_000, 250_000)
    committed: int = 0
    allocations: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    connects: list[float] = field(default_factory=list)  # when each CONNACK (accepted) arrived
    connect_failures: int = 0  # attempts that did not reach a CONNACK (refused, timed out, reset)
    disconnects: int = 0
    thread: threading.Thread | None = None


class Fleet:
    def __init__(self, index: list[int], host: str, port: int, live_interval: float, ca: str | None,
                 passwords: dict[str, str] | None, store_dir: Path, sink_options: dict[str, float]) -> None:
        from gateway.pipeline import Pipeline
        from gateway.store import Store
        from gateway.uplink import Uplink, UplinkSettings, UplinkSink, live_source_for
        from gateway.wire import pseudonym

        self.lock = threading.Lock()
        self.alloc_last: dict[str, float] = {}
        self.alloc_first: dict[str, list[float]] = {}  # per quarter-hour: when each node first held it
        self.stop_event = threading.Event()
        self.nodes: list[Node] = []
        store_dir.mkdir(parents=True, exist_ok=True)
        for i in index:
            ean = ean_of(i)
            p = pseudonym(ean, SECRET)
            settings = UplinkSettings(host=host, port=port, community=COMMUNITY, operation=OP, pseudonym=p,
                                      password=passwords[p] if passwords else "", ca_file=ca, meter_id=ean,
                                      live_interval_s=live_interval)
            store = Store(store_dir / f"gw-{i:04d}.sqlite", sinks=("uplink",))
            node = Node(i, ean, store, None, None)
            uplink = Uplink(settings, on_allocation=lambda msg, n=node: self._allocation(n, msg))
            # as the daemon: the pipeline's commit wakes the sinks (Daemon._notify_sinks)
            node.pipeline = Pipeline(store, on_commit=lambda _batch, n=node: n.sink.notify())
            node.sink = UplinkSink(store, uplink, live_source=live_source_for(lambda pl=node.pipeline: [pl], settings),
                                   **sink_options)
            if hasattr(node.sink, "store_allocation"):
                # the node stores its allocations (the sink's handler, in paho's thread, PUBACK after the
                # commit); count each one once that handler has returned
                def handler(msg: Any, n: Node = node, real: Any = node.sink.store_allocation) -> None:
                    real(msg)
                    self._allocation(n, msg)

                uplink.set_allocation_handler(handler)
            self._watch(node, uplink.client)
            self.nodes.append(node)

    def _watch(self, node: Node, client: Any) -> None:
        """Count the connection's life around the Uplink's own callbacks (which still run first)."""
        on_connect, on_disconnect = client.on_connect, client.on_disconnect

        def connected(c: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            on_connect(c, userdata, flags, rc, props)
            if not rc.is_failure:
                node.connects.append(time.time())
            else:
                node.connect_failures += 1

        def disconnected(c: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            on_disconnect(c, userdata, flags, rc, props)
            node.disconnects += 1

        def failed(c: Any, userdata: Any) -> None:
            node.connect_failures += 1

        client.on_connect, client.on_disconnect, client.on_connect_fail = connected, disconnected, failed

    def reconnects_since(self, t: float) -> dict[str, Any]:
        """When the nodes connected again after ``t`` (first CONNACK of each), and the failures."""
        firsts = sorted(min(x for x in n.connects if x >= t) - t for n in self.nodes if any(x >= t for x in n.connects))
        return {"after_s": firsts, "failures": sum(n.connect_failures for n in self.nodes),
                "disconnects": sum(n.disconnects for n in self.nodes)}

    def _allocation(self, node: Node, msg: Any) -> None:
        key = msg.start.isoformat()
        now = time.time()
        with self.lock:
            if not node.allocations.get(key):  # the first receipt of each quarter-hour's allocation
                self.alloc_first.setdefault(key, []).append(now)
            node.allocations[key] += 1
            self.alloc_last[key] = now

    # -- the simulated meter -------------------------------------------------------------------------

    def _reading(self, node: Node, t: datetime, q: int, frac: float) -> Any:
        from gateway.model import Reading

        imp, exp = member_figures(node.i, q)
        ri, re_ = node.registers
        return Reading(node.ean, t, {"1": ri + int(imp * frac)}, {"1": re_ + int(exp * frac)},
                       import_w=float(imp * 4), export_w=float(exp * 4))

    def feed_inside(self, q: int) -> None:
        """Readings inside quarter-hour ``q`` (after its start boundary, before its end)."""
        start = T0 + timedelta(minutes=15 * q)
        for node in self.nodes:
            for k in range(1, READINGS_PER_QUARTER):
                node.pipeline.feed_reading(self._reading(node, start + timedelta(minutes=3 * k), q, k / READINGS_PER_QUARTER))

    def feed_boundary(self, q: int) -> int:
        """The reading on quarter-hour ``q``'s end boundary: closes it, the store commits it (and its
        outbox row), the pipeline notifies the sink. Returns how many quarter-hours were committed."""
        end = T0 + timedelta(minutes=15 * (q + 1))
        n = 0
        for node in self.nodes:
            r = self._reading(node, end, q, 1.0)
            closed = node.pipeline.feed_reading(r)
            node.registers = (r.import_wh["1"], r.export_wh["1"])
            node.committed += len(closed)
            n += len(closed)
        return n

    def baseline(self) -> None:
        """First reading on T0's boundary, then the readings inside quarter-hour 0."""
        for node in self.nodes:
            node.pipeline.feed_reading(self._reading(node, T0, 0, 0.0))
        self.feed_inside(0)

    # -- lifecycle ---------------------------------------------------------------------------------

    def connect(self, timeout: float, batch: int = 10) -> int:
        """Start the uplinks ``batch`` at a time, each batch once the previous one is connected: nodes
        booting over a minute, not 1,000 TLS handshakes in the same instant (that storm is what the
        outage phase shows; here it would only measure Mosquitto's listen backlog)."""
        deadline = time.monotonic() + timeout
        for k in range(0, len(self.nodes), batch):
            group = self.nodes[k : k + batch]
            for node in group:
                node.sink.uplink.start()
            for node in group:
                node.sink.uplink.wait_connected(max(0.0, deadline - time.monotonic()))
        return sum(1 for n in self.nodes if n.sink.uplink.connected)

    def start_sinks(self, spread_s: float) -> None:
        """Start each node's sink thread (outbox drain + live publisher), spread over ``spread_s`` as
        nodes that booted at different moments (their 5 s live ticks are not in step)."""
        t0 = time.monotonic()
        n = len(self.nodes)
        for j, node in enumerate(self.nodes):
            delay = t0 + spread_s * j / n - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            node.thread = threading.Thread(target=node.sink.run, args=(self.stop_event,), name=f"sink-{node.i}",
                                           daemon=True)
            node.thread.start()

    def pushed(self) -> int:
        return sum(n.sink.stats.pushed for n in self.nodes)

    def committed(self) -> int:
        return sum(n.committed for n in self.nodes)

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        for node in self.nodes:
            node.sink.notify()
        for node in self.nodes:
            if node.thread is not None:
                node.thread.join(10)
        time.sleep(0.5)  # the last allocations and PUBACKs
        with self.lock:
            got = sum(len(n.allocations) for n in self.nodes)
            got_total = sum(sum(n.allocations.values()) for n in self.nodes)
            alloc_last = dict(self.alloc_last)
            alloc_first = {k: list(v) for k, v in self.alloc_first.items()}
        figures = {
            "committed": sum(n.store.count_quarter_hours() for n in self.nodes),
            "outbox_left": sum(n.store.outbox_depth("uplink") for n in self.nodes),
            "pushed": self.pushed(),
            "live_sent": sum(n.sink.live.published for n in self.nodes if n.sink.live is not None),
            "alloc_distinct": got,
            "alloc_total": got_total,
            "alloc_per_start": {k: sum(1 for n in self.nodes if n.allocations.get(k)) for k in alloc_last},
            "alloc_last": alloc_last,
            "alloc_first": alloc_first,
            "sink_failures": sum(1 for n in self.nodes if n.sink.stats.last_error),
            # what the nodes' stores hold at the end (None: this Store does not keep allocations)
            "alloc_in_stores": (sum(len(n.store.allocations(OP)) for n in self.nodes)
                                if hasattr(self.nodes[0].store, "allocations") else None),
            "session_present_after_outage": sum(1 for n in self.nodes
                                                if getattr(n.sink.uplink, "session_present", None)),
        }
        for node in self.nodes:
            node.store.close()
        return figures


def node_proc(index: list[int], host: str, port: int, live_interval: float, cmd: mp.Queue, out: mp.Queue,
              ca: str | None, passwords: dict[str, str] | None, store_dir: str,
              sink_options: dict[str, float] | None = None) -> None:
    """One worker process running ``len(index)`` gateway nodes."""
    raise_fd_limit()
    logging.basicConfig(level=logging.WARNING)
    # a broker outage makes every node log uplink.disconnected and sink.down: 1,000 lines of noise
    get_logger("quartier").setLevel(logging.ERROR)
    # imported before the first figure: they count in the process's base, not per gateway
    import paho.mqtt.client  # noqa: F401

    import gateway.store
    import gateway.uplink  # noqa: F401

    base = proc_status()
    mon = Monitor()
    fleet = Fleet(index, host, port, live_interval, ca, passwords, Path(store_dir), sink_options or {})
    built = proc_status()
    connected = fleet.connect(120)
    fleet.baseline()
    fleet.start_sinks(live_interval)
    ready = proc_status()
    out.put(("ready", connected, {"base": base, "built": built, "ready": ready, "pid": os.getpid(),
                                  "cpu_s": cpu_s(), "t": time.time()}))
    while True:
        msg = cmd.get()
        if msg[0] == "close":
            q, wait = msg[1], msg[2]
            pushed_before = fleet.pushed()
            n = fleet.feed_boundary(q)
            committed_at = time.time()
            target = fleet.committed()  # the whole backlog, not only this quarter-hour
            acked = acked_at = None
            if wait:
                deadline = time.monotonic() + 60
                while fleet.pushed() < target and time.monotonic() < deadline:
                    time.sleep(0.005)
                acked_at = time.time()
                acked = fleet.pushed() - pushed_before
            fleet.feed_inside(q + 1)
            out.put(("closed", q, committed_at, n, acked, acked_at))
        elif msg[0] == "reconnects":
            out.put(("reconnects", fleet.reconnects_since(msg[1])))
        elif msg[0] == "depth":
            out.put(("depth", fleet.committed() - fleet.pushed()))
        elif msg[0] == "usage":
            out.put(("usage", {"pid": os.getpid(), "cpu_s": cpu_s(), "t": time.time(), **proc_status()}))
        elif msg[0] == "stop":
            usage = {"cpu_s": cpu_s(), "peak_threads": mon.peak_threads, **proc_status()}
            figures = fleet.stop()
            mon.stop()
            out.put(("done", {**figures, "usage": usage, "gateways": len(index)}))
            return

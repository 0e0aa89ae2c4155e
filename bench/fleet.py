"""Fleet load test on loopback: N simulated gateways, a real Mosquitto, one community server.

    python bench/fleet.py [--gateways 1000] [--procs N] [--quarter-hours 3] [--live-interval 5] [--gap 6]
                          [--outage 5] [--raw] [--plain] [--store-dir /dev/shm] [--sink-backoff I,M]
                          [--json FILE]

Default: every simulated gateway runs the node's real uplink path (``bench/fleet_nodes.py``): its
own SQLite store with the ``uplink`` outbox, a pipeline fed simulated meter readings whose boundary
reading closes the quarter-hour (the store commits it and creates the outbox row, the pipeline wakes
the sink), the ``UplinkSink`` thread publishing it QoS 1 and acking the row after the PUBACK, the
``Uplink`` connection (status + will, allocation subscription) and the live summary from the
pipeline every ``--live-interval`` seconds. ``--raw`` replaces each gateway by a bare paho client
publishing hand-made messages (the bench before the uplink existed), for comparison. Worker
processes: 4 with ``--raw``; else one per 125 nodes (a node holds 6 file descriptors and paho's
select() loop breaks, silently, on a descriptor >= 1024).

Phases: connect; quarter-hours closing together for all gateways every ``--gap`` seconds; then (with
``--outage S``) Mosquitto is stopped, a quarter-hour closes while it is down, it is restarted after S
seconds and the backlog must drain; then one more quarter-hour. The community server (this process)
allocates the 1,000-member operation when the last member's quarter-hour is in.

Printed: messages per second into the server (run average and during each quarter-hour burst),
loss counted end to end (each committed quarter-hour received exactly once per (meter, start), every
outbox row acked, every gateway's allocation received by its callback, live summaries sent vs
received), the allocation latency after the last member's quarter-hour arrived (p50/p95/max), the
time from "close" to the allocation being published, and each process's RSS and threads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_nodes import (
    COMMUNITY,
    FDS_PER_NODE,
    MAX_NODES_PER_PROC,
    OP,
    SECRET,
    T0,
    cpu_s,
    ean_of,
    member_figures,
    node_proc,
    proc_status,
    raise_fd_limit,
)
from gateway.logs import get_logger


def community_toml(n: int) -> str:
    lines = [f'[community]\nid = "{COMMUNITY}"\n', f'[[operations]]\nid = "{OP}"\npreset = "aubange"\n']
    for i in range(n):
        role = "producer" if i % 10 == 0 else ("both" if i % 10 == 1 else "consumer")
        lines.append(f'[[operations.members]]\nid = "m{i:04d}"\nrole = "{role}"\nmeter = "{ean_of(i)}"\n')
    return "\n".join(lines)


def start_key(q: int) -> str:
    return (T0 + timedelta(minutes=15 * q)).isoformat()


# -- --raw: bare paho clients ------------------------------------------------------------------------


def raw_proc(index: list[int], host: str, port: int, live_interval: float, cmd: mp.Queue, out: mp.Queue,
             ca: str | None = None, passwords: dict[str, str] | None = None, store_dir: str = "") -> None:
    """One process running many bare paho clients publishing hand-made messages (no store, no outbox:
    a QoS 1 message not yet acknowledged lives only in paho's memory)."""
    import paho.mqtt.client as mqtt
    from fleet_nodes import Monitor

    from gateway.wire import LiveMsg, QuarterHourMsg, meter_topic, pseudonym

    raise_fd_limit()
    base = proc_status()
    mon = Monitor()
    clients = []
    acks: list[set[int]] = []
    allocs: dict[int, Counter[str]] = {i: Counter() for i in index}
    alloc_last: dict[str, float] = {}
    lock = threading.Lock()
    for i in index:
        p = pseudonym(ean_of(i), SECRET)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gw-{i}", protocol=mqtt.MQTTv5)
        if passwords is not None:
            c.username_pw_set(p, passwords[p])
        if ca is not None:
            import ssl

            c.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
        alloc_topic = meter_topic(COMMUNITY, OP, p, "alloc")

        def on_connect(client, userdata, flags, rc, props=None, t=alloc_topic):
            client.subscribe(t, 1)

        def on_message(client, userdata, msg, i=i):
            start = json.loads(msg.payload)["start"]
            key = datetime.fromisoformat(start).isoformat()
            with lock:
                allocs[i][key] += 1
                alloc_last[key] = time.time()

        c.on_connect = on_connect
        c.on_message = on_message
        acked_mids: set[int] = set()
        # PUBACKs by mid: MQTTMessageInfo.is_published() raises for a message published while offline
        c.on_publish = lambda client, userdata, mid, rc, props, s=acked_mids: s.add(mid)
        c.max_inflight_messages_set(50)
        c.reconnect_delay_set(1, 60)
        c.connect(host, port, keepalive=60)
        c.loop_start()
        clients.append((i, p, c))
        acks.append(acked_mids)
    built = proc_status()
    while not all(c.is_connected() for _, _, c in clients):
        time.sleep(0.05)
    stop = threading.Event()
    live_sent = [0]
    t_start = time.monotonic()

    def live_loop() -> None:
        k = 0
        n = len(clients)
        while not stop.is_set():
            for j, (i, p, c) in enumerate(clients):  # spread evenly over the interval
                if stop.is_set():
                    break
                target = k * live_interval + live_interval * j / n
                while time.monotonic() - t_start < target and not stop.is_set():
                    time.sleep(min(0.01, max(0.0, target - (time.monotonic() - t_start))))
                if not c.is_connected():
                    continue
                imp, exp = member_figures(i, k)
                m = LiveMsg(meter=p, operation=OP, time=datetime.now(timezone.utc), import_w=imp * 4, export_w=exp * 4)
                if c.publish(meter_topic(COMMUNITY, OP, p, "live"), m.to_bytes(), qos=0).rc == 0:
                    live_sent[0] += 1
            k += 1

    lt = threading.Thread(target=live_loop, daemon=True)
    lt.start()
    ready = proc_status()
    out.put(("ready", len(clients), {"base": base, "built": built, "ready": ready, "pid": os.getpid(),
                                     "cpu_s": cpu_s(), "t": time.time()}))
    pending: list[tuple[int, int]] = []  # (client index, mid) not yet acknowledged by the broker
    published = 0

    def unacked(items: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(j, mid) for j, mid in items if mid not in acks[j]]

    while True:
        msg = cmd.get()
        if msg[0] == "close":
            q, wait = msg[1], msg[2]
            start = T0 + timedelta(minutes=15 * q)
            sent = []
            for j, (i, p, c) in enumerate(clients):
                imp, exp = member_figures(i, q)
                qm = QuarterHourMsg(meter=p, operation=OP, start=start, import_wh=imp, export_wh=exp)
                sent.append((j, c.publish(meter_topic(COMMUNITY, OP, p, "qh"), qm.to_bytes(), qos=1).mid))
            sent_at = time.time()
            acked = acked_at = None
            if wait:
                deadline = time.monotonic() + 60
                while unacked(sent) and time.monotonic() < deadline:
                    time.sleep(0.005)
                acked_at = time.time()
                acked = len(sent) - len(unacked(sent))
            pending += sent
            published += len(sent)
            out.put(("closed", q, sent_at, len(sent), acked, acked_at))
        elif msg[0] == "depth":
            pending = unacked(pending)
            out.put(("depth", len(pending)))
        elif msg[0] == "usage":
            out.put(("usage", {"pid": os.getpid(), "cpu_s": cpu_s(), "t": time.time(), **proc_status()}))
        elif msg[0] == "stop":
            usage = {"cpu_s": cpu_s(), "peak_threads": mon.peak_threads, **proc_status()}
            stop.set()
            lt.join(5)
            time.sleep(0.5)
            pending = unacked(pending)
            with lock:
                figures = {
                    "committed": published, "outbox_left": len(pending), "pushed": published - len(pending),
                    "live_sent": live_sent[0], "alloc_distinct": sum(len(a) for a in allocs.values()),
                    "alloc_total": sum(sum(a.values()) for a in allocs.values()),
                    "alloc_per_start": {k: sum(1 for a in allocs.values() if a.get(k)) for k in alloc_last},
                    "alloc_last": dict(alloc_last), "sink_failures": 0,
                }
            mon.stop()
            out.put(("done", {**figures, "usage": usage, "gateways": len(index)}))
            for _, _, c in clients:
                c.disconnect()
                c.loop_stop()
            return


# -- the coordinator ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def rss_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Workers:
    """The worker processes and their command queues (every command is answered by every worker)."""

    def __init__(self, procs: list[Any], cmds: list[mp.Queue], out: mp.Queue) -> None:
        self.procs, self.cmds, self.out = procs, cmds, out

    def ask(self, msg: tuple, kind: str, timeout: float = 120) -> list[tuple]:
        for cq in self.cmds:
            cq.put(msg)
        answers = []
        for _ in self.procs:
            a = self.out.get(timeout=timeout)
            if a[0] != kind:
                raise RuntimeError(f"worker answered {a[0]!r} to {msg[0]!r}")
            answers.append(a)
        return answers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateways", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=None,
                    help="worker processes (default: 4 with --raw; else one per 125 gateways, see fleet_nodes.py)")
    ap.add_argument("--quarter-hours", type=int, default=3, help="quarter-hours closing before the outage")
    ap.add_argument("--live-interval", type=float, default=5.0)
    ap.add_argument("--gap", type=float, default=6.0, help="seconds between quarter-hour closings")
    ap.add_argument("--outage", type=float, default=5.0,
                    help="seconds Mosquitto is down while a quarter-hour closes (0: no outage phase)")
    ap.add_argument("--raw", action="store_true",
                    help="bare paho clients publishing hand-made messages instead of the node's store + uplink")
    ap.add_argument("--plain", action="store_true",
                    help="anonymous plain TCP instead of the community setup (TLS, per-gateway users, ACL)")
    ap.add_argument("--store-dir", default="/dev/shm",
                    help="where the gateways' SQLite files go (default /dev/shm: 1,000 nodes have 1,000 cards, "
                         "not one shared disk)")
    ap.add_argument("--sink-backoff", default=None, metavar="INITIAL,MAX",
                    help="UplinkSink backoff in seconds (default: the daemon's, the sink's own defaults)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    raise_fd_limit()
    import logging

    logging.basicConfig(level=logging.WARNING)
    get_logger("quartier.community").setLevel(logging.ERROR)  # an outage is expected here
    from services.allocation.model import load_community
    from services.community.ledger import Ledger
    from services.community.roster import Roster
    from services.community.server import BrokerLink, CommunityServer
    from tests.servers import Mosquitto

    class CountingServer(CommunityServer):
        """The community server, counting every quarter-hour message per (meter, start) as it arrives
        (the ledger collapses duplicates; this shows them) and when."""

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.qh_seen: Counter[tuple[str, str]] = Counter()
            self.qh_arrivals: dict[str, list[float]] = {}

        def handle_batch(self, batch: list[tuple[str, bytes, float]]) -> None:
            for topic, payload, received in batch:
                if topic.endswith("/qh"):
                    try:
                        start = json.loads(payload)["start"]
                    except (ValueError, KeyError):
                        continue
                    key = datetime.fromisoformat(start).isoformat()
                    self.qh_seen[(topic.split("/")[-2], key)] += 1
                    self.qh_arrivals.setdefault(key, []).append(received)
            super().handle_batch(batch)

    mode = "raw" if args.raw else "uplink"
    if args.procs is None:
        args.procs = 4 if args.raw else max(1, -(-args.gateways // MAX_NODES_PER_PROC))
    per_proc = -(-args.gateways // args.procs)
    if not args.raw and per_proc * FDS_PER_NODE + 64 > 1024:
        raise SystemExit(f"fleet.py: {per_proc} gateway nodes per process need about {per_proc * FDS_PER_NODE} file "
                         "descriptors, and paho's select() loop fails silently on one >= 1024: use --procs "
                         f"{-(-args.gateways // MAX_NODES_PER_PROC)} or more")
    sink_options: dict[str, float] = {}
    if args.sink_backoff:
        try:
            initial, maximum = (float(x) for x in args.sink_backoff.split(","))
        except ValueError:
            raise SystemExit("fleet.py: --sink-backoff takes INITIAL,MAX in seconds, e.g. 0.1,1") from None
        sink_options = {"backoff_initial_s": initial, "backoff_max_s": maximum}
    work = Path(tempfile.mkdtemp(prefix="quartier-fleet-"))
    store_dir = Path(tempfile.mkdtemp(prefix="quartier-fleet-stores-", dir=args.store_dir))
    (work / "community.toml").write_text(community_toml(args.gateways))
    roster = Roster.build(load_community(work / "community.toml"), SECRET)
    ca = passwords = None
    link = BrokerLink("127.0.0.1", 0, client_id="community")
    if args.plain:
        broker = Mosquitto(work / "mosquitto", extra_conf="max_queued_messages 100000\nmax_inflight_messages 0\n")
    else:  # the deployed setup: TLS with the community CA, one user per gateway, the generated ACL
        from services.community import broker as sec
        from tests.community_harness import SecureMosquitto

        t = time.time()
        bdir = sec.BrokerDir(work / "broker")
        sec.make_ca(bdir, COMMUNITY)
        sec.issue_server_cert(bdir, ["127.0.0.1"])
        passwords = sec.add_gateways(bdir, COMMUNITY, {s.pseudonym: s.operation for s in roster.seats.values()})
        server_pw = sec.add_server_user(bdir, COMMUNITY, "community")
        print(f"provisioned {len(passwords)} gateways (CA, certificate, passwords, ACL) in {time.time() - t:.1f} s")
        broker = SecureMosquitto(work / "mosquitto", bdir)
        ca = str(bdir.ca_cert)
        link = BrokerLink("127.0.0.1", 0, "community", server_pw, ca, "community")
    broker.start()
    link = BrokerLink(broker.host, broker.port, link.username, link.password, link.ca_file, link.client_id)
    ledger = Ledger(work / "community.sqlite")
    alloc_times: dict[str, list[float]] = {}
    srv = CountingServer(roster, ledger, link, deadline_s=3600, totals_interval_s=2.0,
                         on_allocated=lambda res: alloc_times.setdefault(res.start.isoformat(), []).append(time.time()))
    srv.start()
    assert srv.wait_connected(10)
    procs: list[Any] = []
    ctx = mp.get_context("spawn")  # clean workers: their RSS is theirs, not a copy of this process
    out: mp.Queue = ctx.Queue()
    cmds: list[mp.Queue] = []
    try:
        target = raw_proc if args.raw else node_proc
        chunks = [list(range(args.gateways))[k :: args.procs] for k in range(args.procs)]
        t_spawn = time.time()
        for chunk in chunks:
            cq: mp.Queue = ctx.Queue()
            extra = () if args.raw else (sink_options,)
            pr = ctx.Process(target=target, args=(chunk, broker.host, broker.port, args.live_interval, cq, out,
                                                  ca, passwords, str(store_dir), *extra))
            pr.start()
            procs.append(pr)
            cmds.append(cq)
        w = Workers(procs, cmds, out)
        ready = [out.get(timeout=600) for _ in procs]
        connected = sum(r[1] for r in ready)
        transport = "plain TCP, anonymous" if args.plain else "TLS, per-gateway users + ACL"
        what = "bare paho clients" if args.raw else "Store + Pipeline + UplinkSink + Uplink + live summary each"
        print(f"mode {mode}: {connected}/{args.gateways} gateways connected ({transport}; {what}) in "
              f"{max(r[2]['t'] for r in ready) - t_spawn:.1f} s, {args.procs} worker processes")
        t_begin = time.time()
        received_begin = srv.stats.received
        usage0 = {a[1]["pid"]: a[1] for a in w.ask(("usage",), "usage")}
        per_q: list[dict[str, Any]] = []
        closed_qs: list[int] = []

        def wait_allocation(key: str, timeout: float) -> float | None:
            deadline = time.time() + timeout
            while key not in alloc_times and time.time() < deadline:
                time.sleep(0.005)
            return alloc_times[key][0] if key in alloc_times else None

        def close(q: int, label: str) -> dict[str, Any]:
            t_close = time.time()
            answers = w.ask(("close", q, True), "closed")
            key = start_key(q)
            t_alloc = wait_allocation(key, 30)
            return row(q, label, t_close, answers, t_alloc)

        def row(q: int, label: str, t_close: float, answers: list[tuple], t_alloc: float | None,
                **extra: Any) -> dict[str, Any]:
            key = start_key(q)
            arr = sorted(srv.qh_arrivals.get(key, []))
            r: dict[str, Any] = {
                "q": q, "phase": label, "committed": sum(a[3] for a in answers),
                "acked": sum(a[4] for a in answers) if answers[0][4] is not None else None,
                "close_to_committed_s": round(max(a[2] for a in answers) - t_close, 3),
                "close_to_all_acked_s": round(max(a[5] for a in answers) - t_close, 3) if answers[0][5] else None,
                "qh_arrived": len(arr),
                "close_to_last_qh_arrived_s": round(arr[-1] - t_close, 3) if arr else None,
                "burst_msgs_per_s": round(len(arr) / max(arr[-1] - arr[0], 1e-3), 0) if arr else None,
                "last_qh_to_allocation_published_s": round(t_alloc - arr[-1], 3) if t_alloc and arr else None,
                "close_to_allocation_published_s": round(t_alloc - t_close, 3) if t_alloc else None,
                **extra,
            }
            closed_qs.append(q)
            per_q.append(r)
            print(f"quarter-hour {q} ({label}): {r['committed']} committed"
                  + (f", {r['acked']} acked by the broker {r['close_to_all_acked_s']} s after close" if r['acked'] is not None else "")
                  + f"; {len(arr)} arrived at the server (burst {r['burst_msgs_per_s']} msg/s); allocation published "
                  f"{r['last_qh_to_allocation_published_s']} s after the last member's quarter-hour, "
                  f"{r['close_to_allocation_published_s']} s after close"
                  + "".join(f"; {k} {v}" for k, v in extra.items()))
            return r

        q = 0
        usage1: dict[float, Any] = {}
        usage_q0: dict[float, Any] = {}
        for q in range(args.quarter_hours):
            time.sleep(args.gap)
            if q == 0:
                usage1 = {a[1]["pid"]: a[1] for a in w.ask(("usage",), "usage")}
            close(q, "normal")
            if q == 0:  # CPU the workers spent on one closing: commit, publish, PUBACK, ack, allocation
                usage_q0 = {a[1]["pid"]: a[1] for a in w.ask(("usage",), "usage")}
        outage: dict[str, Any] | None = None
        if args.outage > 0:
            q += 1
            time.sleep(args.gap)
            t_close = time.time()
            broker.stop()
            t_down = time.time()
            answers = w.ask(("close", q, False), "closed")
            time.sleep(max(0.0, t_down + args.outage - time.time()))
            backlog = sum(a[1] for a in w.ask(("depth",), "depth"))
            broker.start()
            t_up = time.time()
            drained = None
            deadline = t_up + 180
            while time.time() < deadline:
                if sum(a[1] for a in w.ask(("depth",), "depth")) == 0:
                    drained = time.time()
                    break
                time.sleep(0.25)
            # drained but not allocated: a quarter-hour was lost on the way; don't wait for the deadline
            t_alloc = wait_allocation(start_key(q), 30.0 if drained else max(1.0, deadline - time.time()))
            rec = [a[1] for a in w.ask(("reconnects", t_up), "reconnects")] if not args.raw else []
            back = sorted(x for r in rec for x in r["after_s"])
            outage = {"down_s": round(t_up - t_down, 2), "backlog_when_restarted": backlog,
                      "restart_to_outboxes_drained_s": round(drained - t_up, 2) if drained else None,
                      "restart_to_allocation_published_s": round(t_alloc - t_up, 2) if t_alloc else None,
                      "server_reconnected": srv.wait_connected(0)}
            if rec:
                outage.update({
                    "gateways_reconnected": len(back),
                    "restart_to_gateway_reconnected_s": {"p50": round(pct(back, 0.5), 2), "p95": round(pct(back, 0.95), 2),
                                                         "max": round(back[-1], 2)} if back else None,
                    "connect_attempts_failed": sum(r["failures"] for r in rec),
                    "disconnects": sum(r["disconnects"] for r in rec),
                })
            row(q, "outage", t_close, answers, t_alloc, **outage)
            q += 1
            time.sleep(args.gap)
            close(q, "after outage")
        time.sleep(2)
        usage2 = {a[1]["pid"]: a[1] for a in w.ask(("usage",), "usage")}
        done = [a[1] for a in w.ask(("stop",), "done", timeout=120)]
        elapsed = time.time() - t_begin
        deadline = time.time() + 10  # let the server's worker drain its queue
        while srv._q.qsize() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)

        # -- loss, end to end ------------------------------------------------------------------------
        from gateway.wire import pseudonym

        committed = sum(d["committed"] for d in done)
        expected_keys = {(pseudonym(ean_of(i), SECRET), start_key(k)) for i in range(args.gateways) for k in closed_qs}
        seen = srv.qh_seen
        qh_lost = sum(1 for k in expected_keys if seen.get(k, 0) == 0)
        qh_dupes = sum(max(0, seen.get(k, 0) - 1) for k in expected_keys)
        stored = sum(ledger.completeness(OP, T0, T0 + timedelta(days=1)).values())
        allocated = [k for k in (start_key(x) for x in closed_qs) if k in alloc_times]
        alloc_expected = args.gateways * len(allocated)
        alloc_got = sum(d["alloc_distinct"] for d in done)
        live_sent = sum(d["live_sent"] for d in done)
        live_received = srv.stats.by_kind["live"]
        received = srv.stats.received - received_begin
        lat = srv.stats.latencies_s
        # the last gateway holding its allocation (its Uplink's on_allocation callback ran)
        for r in per_q:
            held = [d["alloc_last"].get(start_key(r["q"])) for d in done]
            held = [h for h in held if h]
            r["allocation_published_to_last_gateway_holding_it_s"] = (
                round(max(held) - alloc_times[start_key(r["q"])][0], 3) if held and start_key(r["q"]) in alloc_times else None)
            firsts = sorted(x for d in done for x in d.get("alloc_first", {}).get(start_key(r["q"]), []))
            if firsts and start_key(r["q"]) in alloc_times:
                t_pub = alloc_times[start_key(r["q"])][0]
                delays = [x - t_pub for x in firsts]
                r["allocation_published_to_gateway_holding_it_s"] = {
                    "p50": round(pct(delays, 0.5), 3), "p99": round(pct(delays, 0.99), 3), "max": round(delays[-1], 3),
                    "over_1s": sum(1 for x in delays if x > 1.0)}
        procs_fig = []
        for d, rd in zip(done, ready):
            m = rd[2]
            pid = m["pid"]
            procs_fig.append({
                "pid": pid, "gateways": d["gateways"],
                "rss_mb_after_imports": round(m["base"]["VmRSS"] / 1024, 1),
                "rss_mb_ready": round(m["ready"]["VmRSS"] / 1024, 1),
                "rss_mb_end": round(d["usage"]["VmRSS"] / 1024, 1),
                "rss_mb_peak": round(d["usage"]["VmHWM"] / 1024, 1),
                "kb_per_gateway": round((d["usage"]["VmRSS"] - m["base"]["VmRSS"]) / d["gateways"], 1),
                "threads_ready": m["ready"]["Threads"], "threads_peak": d["usage"]["peak_threads"],
                "cpu_s_total": round(d["usage"]["cpu_s"], 1),
            })
        # CPU of the workers while idle (live summaries + polling), between ready and the first close
        idle_cpu = None
        if usage0 and usage1:
            a0 = sorted(usage0.values(), key=lambda u: u["t"])
            a1 = sorted(usage1.values(), key=lambda u: u["t"])
            dt = max(u["t"] for u in a1) - min(u["t"] for u in a0)
            idle_cpu = round(100 * (sum(u["cpu_s"] for u in a1) - sum(u["cpu_s"] for u in a0)) / dt, 1)
        report = {
            "mode": mode,
            "gateways": args.gateways,
            "transport": "plain" if args.plain else "tls+acl",
            "worker_processes": args.procs,
            "sink_backoff_s": args.sink_backoff or "daemon default",
            "quarter_hours": len(closed_qs),
            "elapsed_s": round(elapsed, 1),
            "messages_per_s_into_server": round(received / elapsed, 1),
            "allocation_messages_per_s_out_of_server": round(sum(d["alloc_total"] for d in done) / elapsed, 1),
            "burst_msgs_per_s": [r["burst_msgs_per_s"] for r in per_q],
            "quarter_hours_committed": committed,
            "quarter_hours_lost": qh_lost,
            "quarter_hours_duplicated_on_the_wire": qh_dupes,
            "quarter_hours_in_server_ledger": stored,
            "outbox_rows_not_acked": sum(d["outbox_left"] for d in done),
            "allocations_published": len(allocated),
            "allocations_lost": alloc_expected - alloc_got + args.gateways * (len(closed_qs) - len(allocated)),
            "allocation_messages_received_incl_reruns": sum(d["alloc_total"] for d in done),
            "allocations_in_gateway_stores": (sum(d["alloc_in_stores"] for d in done)
                                              if done[0].get("alloc_in_stores") is not None else None),
            "sessions_resumed_at_last_connect": (sum(d["session_present_after_outage"] for d in done)
                                                 if "session_present_after_outage" in done[0] else None),
            "live_sent": live_sent,
            "live_received": live_received,
            "live_lost": live_sent - live_received,
            "allocation_latency_s": {"p50": round(pct(lat, 0.5), 4), "p95": round(pct(lat, 0.95), 4),
                                     "max": round(max(lat), 4)} if lat else None,
            "close_to_allocation_published_s": [r["close_to_allocation_published_s"] for r in per_q],
            "per_quarter_hour": per_q,
            "outage": outage,
            "worker_cpu_percent_idle_phase": idle_cpu,
            "worker_cpu_ms_per_gateway_first_closing": round(1000 * sum(
                usage_q0[k]["cpu_s"] - usage1[k]["cpu_s"] for k in usage_q0) / args.gateways, 2) if usage_q0 else None,
            "worker_cpu_percent_whole_run": round(100 * sum(
                u["cpu_s"] for u in usage2.values()) / max(1e-3, time.time() - t_spawn), 1),
            "processes": procs_fig,
            "main_process_rss_mb": round(proc_status()["VmRSS"] / 1024, 1),
            "main_process_cpu_s": round(cpu_s(), 1),
            "mosquitto_rss_mb": round((rss_of(broker.proc.pid) or 0) / 1024, 1) if broker.proc else None,
        }
        print(json.dumps(report, indent=1))
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
        ok = (report["quarter_hours_lost"] == 0 and report["allocations_lost"] == 0
              and report["outbox_rows_not_acked"] == 0 and bool(lat) and max(lat) < 2.0)
        print("TARGET MET" if ok else "TARGET MISSED")
        return 0 if ok else 1
    finally:
        for pr in procs:  # after "stop" they have returned; after an error they are ended here
            pr.join(5)
            if pr.is_alive():
                pr.kill()
        srv.stop()
        ledger.close()
        broker.stop()
        import shutil

        shutil.rmtree(store_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

"""Fleet load test on loopback: N simulated gateways, a real Mosquitto, one community server.

    python bench/fleet.py [--gateways 1000] [--procs 4] [--quarter-hours 3] [--live-interval 5]

Each gateway is a paho MQTT v5 client (spread over ``--procs`` processes) that publishes a live
summary every ``--live-interval`` seconds (QoS 0) and, when the coordinator says a quarter-hour
closed, its quarter-hour (QoS 1) at once, all gateways together. The community server (in this
process) runs the 1,000-member operation's allocation when the last member's quarter-hour is in and
publishes each member's share. Printed: messages per second through the server, messages lost
(quarter-hours and allocations must be 0; live QoS 0 is counted too), and the latency from the last
member's quarter-hour arriving at the server to the allocation being published (p50/p95/max), plus
the end-to-end time from the coordinator's "close" to the last gateway holding its allocation.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SECRET = "bench-secret"
COMMUNITY = "bench"
OP = "op-big"
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def community_toml(n: int) -> str:
    lines = [f'[community]\nid = "{COMMUNITY}"\n', f'[[operations]]\nid = "{OP}"\npreset = "aubange"\n']
    for i in range(n):
        role = "producer" if i % 10 == 0 else ("both" if i % 10 == 1 else "consumer")
        lines.append(f'[[operations.members]]\nid = "m{i:04d}"\nrole = "{role}"\nmeter = "5414{i:014d}"\n')
    return "\n".join(lines)


def member_figures(i: int, q: int) -> tuple[int, int]:
    if i % 10 == 0:
        return 0, 2000 + (i * 7 + q * 13) % 1500
    if i % 10 == 1:
        return (i * 3 + q) % 80, 300 + (i + q) % 200
    return 100 + (i * 37 + q * 11) % 400, 0


def gateway_proc(index: list[int], host: str, port: int, live_interval: float, cmd: mp.Queue, out: mp.Queue,
                 ca: str | None = None, passwords: dict[str, str] | None = None) -> None:
    """One process running many simulated gateways (paho threads)."""
    import paho.mqtt.client as mqtt

    from services.community.wire import LiveMsg, QuarterHourMsg, meter_topic, pseudonym

    raise_fd_limit()
    clients = []
    allocs = {i: 0 for i in index}
    alloc_last = [0.0]
    lock = threading.Lock()
    for i in index:
        p = pseudonym(f"5414{i:014d}", SECRET)
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
            with lock:
                allocs[i] += 1
                alloc_last[0] = time.time()

        c.on_connect = on_connect
        c.on_message = on_message
        c.max_inflight_messages_set(50)
        c.connect(host, port, keepalive=60)
        c.loop_start()
        clients.append((i, p, c))
    while not all(c.is_connected() for _, _, c in clients):
        time.sleep(0.05)
    out.put(("ready", len(clients)))
    stop = threading.Event()
    live_sent = [0]

    def live_loop() -> None:
        k = 0
        n = len(clients)
        while not stop.is_set():
            # spread the live summaries evenly over the interval
            for j, (i, p, c) in enumerate(clients):
                if stop.is_set():
                    break
                target = k * live_interval + live_interval * j / n
                while time.monotonic() - t_start < target and not stop.is_set():
                    time.sleep(min(0.01, max(0.0, target - (time.monotonic() - t_start))))
                imp, exp = member_figures(i, k)
                m = LiveMsg(meter=p, operation=OP, time=datetime.now(timezone.utc), import_w=imp * 4, export_w=exp * 4)
                if c.publish(meter_topic(COMMUNITY, OP, p, "live"), m.to_bytes(), qos=0).rc == 0:
                    live_sent[0] += 1
            k += 1

    t_start = time.monotonic()
    lt = threading.Thread(target=live_loop, daemon=True)
    lt.start()
    while True:
        msg = cmd.get()
        if msg[0] == "close":
            q = msg[1]
            start = T0 + timedelta(minutes=15 * q)
            infos = []
            for i, p, c in clients:
                imp, exp = member_figures(i, q)
                qm = QuarterHourMsg(meter=p, operation=OP, start=start, import_wh=imp, export_wh=exp)
                infos.append(c.publish(meter_topic(COMMUNITY, OP, p, "qh"), qm.to_bytes(), qos=1))
            sent_at = time.time()
            for info in infos:
                info.wait_for_publish(30)
            out.put(("closed", q, sent_at, sum(1 for x in infos if x.is_published())))
        elif msg[0] == "stop":
            stop.set()
            lt.join(5)
            time.sleep(0.5)
            with lock:
                out.put(("done", live_sent[0], sum(allocs.values()), alloc_last[0]))
            for _, _, c in clients:
                c.disconnect()
                c.loop_stop()
            return


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateways", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--quarter-hours", type=int, default=3)
    ap.add_argument("--live-interval", type=float, default=5.0)
    ap.add_argument("--gap", type=float, default=6.0, help="seconds between quarter-hour closings")
    ap.add_argument("--plain", action="store_true",
                    help="anonymous plain TCP instead of the community setup (TLS, per-gateway users, ACL)")
    args = ap.parse_args()
    raise_fd_limit()
    import logging

    logging.basicConfig(level=logging.WARNING)
    from services.allocation.model import load_community
    from services.community.ledger import Ledger
    from services.community.roster import Roster
    from services.community.server import BrokerLink, CommunityServer
    from tests.servers import Mosquitto

    work = Path(tempfile.mkdtemp(prefix="quartier-fleet-"))
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
    srv = CommunityServer(roster, ledger, link, deadline_s=3600, totals_interval_s=2.0)
    srv.start()
    assert srv.wait_connected(10)
    procs = []
    out: mp.Queue = mp.Queue()
    cmds = []
    try:
        ctx = mp.get_context("fork")
        chunks = [list(range(args.gateways))[k :: args.procs] for k in range(args.procs)]
        for chunk in chunks:
            cq: mp.Queue = ctx.Queue()
            pr = ctx.Process(target=gateway_proc, args=(chunk, broker.host, broker.port, args.live_interval, cq, out,
                                                        ca, passwords))
            pr.start()
            procs.append(pr)
            cmds.append(cq)
        ready = sum(out.get(timeout=120)[1] for _ in procs)
        print(f"gateways connected: {ready} ({'plain TCP, anonymous' if args.plain else 'TLS, per-gateway users + ACL'})")
        t_begin = time.time()
        received_begin = srv.stats.received
        e2e = []
        for q in range(args.quarter_hours):
            time.sleep(args.gap)
            t_close = time.time()
            n_alloc_before = srv.stats.allocations
            for cq in cmds:
                cq.put(("close", q))
            acked = 0
            for _ in procs:
                msg = out.get(timeout=60)
                acked += msg[3]
            deadline = time.time() + 30
            while srv.stats.allocations <= n_alloc_before and time.time() < deadline:
                time.sleep(0.01)
            e2e.append(time.time() - t_close)
            print(f"quarter-hour {q}: {acked} acknowledged by the broker, allocation published "
                  f"{srv.stats.last_latency_s:.3f} s after the last member's quarter-hour arrived")
        time.sleep(2)
        for cq in cmds:
            cq.put(("stop",))
        live_sent = allocs_got = 0
        for _ in procs:
            msg = out.get(timeout=60)
            live_sent += msg[1]
            allocs_got += msg[2]
        elapsed = time.time() - t_begin
        received = srv.stats.received - received_begin
        qh_stored = sum(ledger.completeness(OP, T0, T0 + timedelta(days=1)).values())
        qh_expected = args.gateways * args.quarter_hours
        deadline = time.time() + 10  # let the server's worker drain its queue
        while srv._q.qsize() and time.time() < deadline:
            time.sleep(0.05)
        live_received = srv.stats.by_kind["live"]
        lat = srv.stats.latencies_s
        report = {
            "gateways": args.gateways,
            "transport": "plain" if args.plain else "tls+acl",
            "quarter_hours": args.quarter_hours,
            "messages_per_s_into_server": round(received / elapsed, 1),
            "allocation_messages_per_s_out_of_server": round(allocs_got / elapsed, 1),
            "quarter_hours_lost": qh_expected - qh_stored,
            "allocations_lost": args.gateways * args.quarter_hours - allocs_got,
            "live_lost": live_sent - live_received,
            "live_sent": live_sent,
            "allocation_latency_s": {"p50": round(pct(lat, 0.5), 4), "p95": round(pct(lat, 0.95), 4),
                                     "max": round(max(lat), 4)} if lat else None,
            "close_to_allocation_published_s": [round(x, 3) for x in e2e],
        }
        print(json.dumps(report, indent=1))
        ok = report["quarter_hours_lost"] == 0 and report["allocations_lost"] == 0 and lat and max(lat) < 2.0
        print("TARGET MET" if ok else "TARGET MISSED")
        return 0 if ok else 1
    finally:
        for pr in procs:
            pr.join(10)
            if pr.is_alive():
                pr.kill()
        srv.stop()
        ledger.close()
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())

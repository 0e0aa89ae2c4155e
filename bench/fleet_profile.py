"""Where a node's CPU goes when a quarter-hour closes on the uplink path (what ``bench/fleet.py``
multiplies by 1,000 on two cores).

    python bench/fleet_profile.py [--nodes 100] [--tls]

Builds ``--nodes`` gateway nodes as ``bench/fleet_nodes.py`` does, against a real Mosquitto, and runs
each step of one closing for every node in this thread, one step at a time, timing it with this
thread's CPU clock: the boundary reading (the store commits the quarter-hour and its outbox row),
``UplinkSink.push_once`` (peek, publish QoS 1, wait for the PUBACK, ack the row) and, when the sink
stores allocations, ``store_allocation`` (one committed row). Then a cProfile of ``push_once``.
paho's network threads also work for each publish; their share shows as the process CPU beyond this
thread's.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_nodes import COMMUNITY, OP, SECRET, T0, Fleet, raise_fd_limit
from gateway.logs import get_logger


def process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def step(name: str, fn, nodes: list) -> None:
    t_thread, t_proc, t_wall = time.thread_time(), process_cpu(), time.perf_counter()
    for node in nodes:
        fn(node)
    n = len(nodes)
    print(f"{name:<44} {1000 * (time.thread_time() - t_thread) / n:7.3f} ms CPU this thread, "
          f"{1000 * (process_cpu() - t_proc) / n:7.3f} ms CPU process, {1000 * (time.perf_counter() - t_wall) / n:7.3f} ms wall"
          " per node")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--tls", action="store_true", help="the community setup (TLS, users, ACL) instead of plain TCP")
    args = ap.parse_args()
    if args.nodes > 150:
        raise SystemExit("fleet_profile.py: at most 150 nodes in one process (paho's select() and 1,024 descriptors)")
    raise_fd_limit()
    import logging

    logging.basicConfig(level=logging.WARNING)
    get_logger("quartier").setLevel(logging.ERROR)  # each stop logs uplink.disconnected
    from gateway.wire import AllocationMsg, pseudonym
    from tests.servers import Mosquitto

    work = Path(tempfile.mkdtemp(prefix="quartier-fleet-profile-"))
    ca = passwords = None
    if args.tls:
        from services.community import broker as sec
        from tests.community_harness import SecureMosquitto

        bdir = sec.BrokerDir(work / "broker")
        sec.make_ca(bdir, COMMUNITY)
        sec.issue_server_cert(bdir, ["127.0.0.1"])
        passwords = sec.add_gateways(bdir, COMMUNITY, {pseudonym(f"5414{i:014d}", SECRET): OP for i in range(args.nodes)})
        broker = SecureMosquitto(work / "mosquitto", bdir)
        ca = str(bdir.ca_cert)
    else:
        broker = Mosquitto(work / "mosquitto")
    broker.start()
    store_dir = Path(tempfile.mkdtemp(prefix="quartier-fleet-profile-", dir="/dev/shm"))
    try:
        fleet = Fleet(list(range(args.nodes)), broker.host, broker.port, 5.0, ca, passwords, store_dir, {})
        # no sink threads: every step runs here, in order, so each one's cost can be read apart
        for node in fleet.nodes:
            node.pipeline.on_commit = None
        print(f"{fleet.connect(60)}/{args.nodes} nodes connected ({'TLS' if args.tls else 'plain TCP'})")
        fleet.baseline()
        nodes = fleet.nodes
        end = T0 + timedelta(minutes=15)

        def close(node) -> None:
            r = fleet._reading(node, end, 0, 1.0)
            assert node.pipeline.feed_reading(r), "the boundary reading did not close the quarter-hour"
            node.registers = (r.import_wh["1"], r.export_wh["1"])

        step("boundary reading -> commit + outbox row", close, nodes)
        step("UplinkSink.push_once (publish, PUBACK, ack)", lambda n: n.sink.push_once(), nodes)
        alloc = AllocationMsg(operation=OP, start=T0, received_wh=40, injection_shared_wh=0, pool_wh=90, shared_wh=80,
                              consumption_wh=100)
        if hasattr(nodes[0].sink, "store_allocation"):
            step("UplinkSink.store_allocation (one row)", lambda n: n.sink.store_allocation(alloc), nodes)
        # a second closing under cProfile: where push_once spends this thread's time
        fleet.feed_inside(1)
        assert fleet.feed_boundary(1) == len(nodes)
        prof = cProfile.Profile()
        prof.enable()
        for node in nodes:
            node.sink.push_once()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        print(buf.getvalue())
        for node in nodes:
            node.sink.uplink.stop()
            node.store.close()
    finally:
        broker.stop()
        import shutil

        shutil.rmtree(store_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

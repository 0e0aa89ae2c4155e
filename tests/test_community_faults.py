"""The community server killed -9 while nodes keep publishing: nothing the broker acknowledged to a
node is lost. The server's persistent session makes the broker queue the quarter-hours while it is
down, and it acknowledges each one only after its ledger commit, so a kill between the broker's
delivery and the commit means a redelivery (collapsed as a duplicate), never a loss."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gateway.wire import QuarterHourMsg, meter_topic, pseudonym
from tests.community_fixtures import SECRET, recent, wait, write_community
from tests.community_harness import Client

T0 = recent(hour=6)  # live data: the server refuses starts older than its 40-day horizon
MEMBERS = {"alice": ("541448820000000001", 1), "bob": ("541448820000000002", 2), "school": ("541448820000000003", 3)}
N = 60  # quarter-hours per member


def figures(member: str, i: int) -> tuple[int, int]:
    """Deterministic figures: what each member sends for quarter-hour i."""
    k = MEMBERS[member][1]
    return (0, 300 + 7 * i) if member == "school" else (50 + k * 13 * (i % 9), 0)


def start_server(cfg: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "community", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))  # noqa: SIM115


def test_kill_9_of_the_community_server_loses_no_quarter_hour(tmp_path: Path, mosquitto) -> None:
    write_community(tmp_path)
    db = tmp_path / "community.sqlite"
    (tmp_path / "server.toml").write_text(
        'secrets_file = "secrets.toml"\n[server]\ncommunity_file = "community.toml"\noperations = ["op1"]\n'
        f'database = "{db}"\ndeadline_s = 86400\n[broker]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n'
        'client_id = "srv-faults"\n[api]\nenabled = false\n')
    (tmp_path / "secrets.toml").write_text(f'[server]\npseudonym_secret = "{SECRET}"\n')
    os.chmod(tmp_path / "secrets.toml", 0o600)
    log = tmp_path / "server.log"
    proc = start_server(tmp_path / "server.toml", log)
    nodes = {m: Client(mosquitto.host, mosquitto.port, None, None, None, f"node-{m}") for m in MEMBERS}
    kills = 0
    try:
        assert wait(lambda: db.exists() and "community.connected" in log.read_text(), 20), log.read_text()
        acked = []

        def publish_all() -> None:
            for i in range(N):
                for m, (ean, _) in MEMBERS.items():
                    p = pseudonym(ean, SECRET)
                    imp, exp = figures(m, i)
                    msg = QuarterHourMsg(meter=p, operation="op1", start=T0 + timedelta(minutes=15 * i),
                                         import_wh=imp, export_wh=exp)
                    nodes[m].c.publish(meter_topic("moulin", "op1", p, "qh"), msg.to_bytes(), qos=1).wait_for_publish(10)
                    acked.append((m, i))  # the broker has it: from here on, the community must not lose it
                time.sleep(0.03)

        sender = threading.Thread(target=publish_all)
        sender.start()
        rng = random.Random(7)
        for threshold in (20, 60, 100, 140):  # kill -9 at these points of the stream, whatever it is doing
            while len(acked) < threshold + rng.randrange(10) and sender.is_alive():
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            time.sleep(rng.uniform(0.1, 0.6))  # down a while: the broker queues for the session
            proc = start_server(tmp_path / "server.toml", log)
        sender.join(60)
        assert len(acked) == 3 * N and kills == 4

        def ledger() -> tuple[int, int, int]:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                qh = c.execute("SELECT count(*) FROM member_qh WHERE operation='op1'").fetchone()[0]
                al = c.execute("SELECT count(DISTINCT start) FROM allocation WHERE operation='op1'").fetchone()[0]
                est = c.execute("SELECT count(*) FROM allocation WHERE estimated=1").fetchone()[0]
            return qh, al, est

        assert wait(lambda: ledger()[:2] == (3 * N, N), 60), ledger()
        assert ledger()[2] == 0  # every quarter-hour allocated on real figures, none estimated
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
            rows = c.execute("SELECT member, start, import_wh, export_wh FROM member_qh").fetchall()
            alloc = c.execute("SELECT start, sum(received_wh), sum(injection_shared_wh) FROM allocation GROUP BY start").fetchall()
        got = {(m, int((datetime.fromtimestamp(s, timezone.utc) - T0).total_seconds() // 900)): (i, e) for m, s, i, e in rows}
        assert got == {(m, i): figures(m, i) for m in MEMBERS for i in range(N)}  # each once, with its value
        assert all(r == s > 0 for _, r, s in alloc)  # conserved: received = injection shared
        print(f"\nkill -9 x{kills} during {3 * N} quarter-hours: ledger {len(rows)}, allocated {len(alloc)}, lost 0")
    finally:
        for n in nodes.values():
            n.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)


def test_a_server_the_broker_kept_nothing_for_asks_the_nodes_to_send_again(tmp_path: Path, mosquitto) -> None:
    """The worst case of a server outage: the broker kept nothing for it (session expired, queue full,
    broker store lost). On reconnecting without a session the server asks every member it knows for
    its quarter-hours since the last one it holds; the nodes queue them again from their stores."""
    from gateway.model import Quality, QuarterHour
    from gateway.store import Store
    from gateway.uplink import UplinkSettings, node_uplink
    from services.community.ledger import Ledger
    from services.community.server import BrokerLink, CommunityServer
    from tests.community_fixtures import roster

    def server() -> tuple[CommunityServer, Ledger]:
        ledger = Ledger(tmp_path / "community.sqlite")
        srv = CommunityServer(roster(tmp_path, ["op1"]), ledger, deadline_s=86400, broker=BrokerLink(
            mosquitto.host, mosquitto.port, client_id="srv-gap", session_expiry_s=0))  # a clean session: nothing kept
        srv.start()
        assert srv.wait_connected(10)
        return srv, ledger

    # recent quarter-hours: a node sends again at most 40 days back (gateway.uplink.RESEND_HORIZON)
    T1 = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    stop = threading.Event()
    nodes: dict[str, tuple[Store, object, threading.Thread]] = {}
    srv, ledger = server()
    try:
        for m, (ean, _) in MEMBERS.items():
            store = Store(tmp_path / f"{m}.sqlite", sinks=("uplink",))
            sink = node_uplink(store, UplinkSettings(host=mosquitto.host, port=mosquitto.port, community="moulin",
                                                     operation="op1", pseudonym=pseudonym(ean, SECRET), password="",
                                                     meter_id=ean), idle_poll_s=0.1)
            t = threading.Thread(target=sink.run, args=(stop,), daemon=True)
            t.start()
            nodes[m] = (store, sink, t)

        def close(i: int) -> None:
            for m, (store, sink, _) in nodes.items():
                imp, exp = figures(m, i)
                store.commit_quarter_hours([QuarterHour(MEMBERS[m][0], T1 + timedelta(minutes=15 * i), imp, exp,
                                                        Quality.MEASURED)])
                sink.notify()

        for i in range(2):
            close(i)
        assert wait(lambda: srv.stats.allocations == 2, 20)
        srv.stop()
        ledger.close()
        for i in range(2, 6):  # published and acknowledged by the broker while no server listens: dropped
            close(i)
        assert wait(lambda: all(s.outbox_depth("uplink") == 0 for s, _, _ in nodes.values()), 20)
        srv, ledger = server()
        assert wait(lambda: len(ledger.allocated_starts("op1", T1)) == 6, 30), ledger.allocated_starts("op1", T1)
        assert srv.stats.resend_requests == 3
        assert {m: sink.resent for m, (_, sink, _) in nodes.items()} == {m: 4 for m in MEMBERS}
        got = {(m, s): f for s in (T1 + timedelta(minutes=15 * i) for i in range(6))
               for m, f in ledger.figures("op1", s).items()}
        got = {k: (f.import_wh, f.export_wh) for k, f in got.items()}
        assert got == {(m, T1 + timedelta(minutes=15 * i)): figures(m, i) for m in MEMBERS for i in range(6)}
    finally:
        stop.set()
        for store, _, t in nodes.values():
            t.join(10)
            store.close()
        srv.stop()
        ledger.close()

"""Operations spread over community-server processes by rendezvous hashing (docs/fleet.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from services.community.roster import shard_of, shard_operations
from gateway.wire import QuarterHourMsg, meter_topic, pseudonym
from tests.community_fixtures import SECRET, recent, wait, write_community
from tests.community_harness import Client
from tests.servers import free_port, port_open

TOKEN = "operator-token"
T0 = recent()  # live data: the server refuses starts older than its 40-day horizon

names = st.lists(st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True), min_size=1, max_size=60, unique=True)


@settings(max_examples=300, deadline=None)
@given(names, st.integers(1, 12))
def test_every_operation_has_exactly_one_owner(ops: list[str], n: int) -> None:
    owned = [shard_operations("moulin", ops, k, n) for k in range(n)]
    assert sorted(o for part in owned for o in part) == sorted(ops)  # covering and disjoint
    assert all(0 <= shard_of("moulin", o, n) < n for o in ops)


@settings(max_examples=300, deadline=None)
@given(names, st.integers(1, 12))
def test_adding_a_process_moves_only_what_the_new_one_takes(ops: list[str], n: int) -> None:
    for o in ops:
        before, after = shard_of("moulin", o, n), shard_of("moulin", o, n + 1)
        assert after in (before, n)


def test_the_spread_is_even_enough_and_the_same_in_every_process() -> None:
    ops = [f"op{i}" for i in range(3000)]
    sizes = [len(shard_operations("coord", ops, k, 6)) for k in range(6)]
    assert min(sizes) > 400 and max(sizes) < 600  # 500 each on average
    assert shard_operations("coord", ops, 2, 6) == shard_operations("coord", list(ops), 2, 6)
    assert shard_operations("other", ops, 2, 6) != shard_operations("coord", ops, 2, 6)  # per community


def _server(tmp: Path, name: str, broker_port: int, api_port: int, extra: str) -> Path:
    d = tmp / name
    d.mkdir()
    write_community(d)
    (d / "server.toml").write_text(
        'secrets_file = "secrets.toml"\n[server]\ncommunity_file = "community.toml"\n'
        f'database = "{d / "community.sqlite"}"\n{extra}\n[broker]\nhost = "127.0.0.1"\nport = {broker_port}\n'
        f'client_id = "srv-{name}"\n[api]\nhost = "127.0.0.1"\nport = {api_port}\n')
    (d / "secrets.toml").write_text(f'[server]\npseudonym_secret = "{SECRET}"\n[api]\ntokens = ["{TOKEN}"]\n')
    os.chmod(d / "secrets.toml", 0o600)
    return d / "server.toml"


def _api(port: int, path: str):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_two_server_processes_share_the_community_by_hash_and_each_allocates_only_its_own(tmp_path: Path, mosquitto) -> None:
    assert shard_operations("moulin", ["op1", "op2"], 0, 2) == ["op1"]  # the fixture community splits in two
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([sys.executable, "-m", "gateway.cli", "community", "--config",
                               str(_server(tmp_path, f"s{k}", mosquitto.port, ports[k], f'shard = "{k + 1}/2"'))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for k in range(2)]
    client = None
    try:
        for proc, port in zip(procs, ports, strict=True):
            assert wait(lambda p=port, pr=proc: port_open("127.0.0.1", p) or pr.poll() is not None, 20)
            assert proc.poll() is None, proc.stderr.read().decode()
        assert [o["id"] for o in _api(ports[0], "/api/v1/operations")] == ["op1"]
        assert [o["id"] for o in _api(ports[1], "/api/v1/operations")] == ["op2"]
        assert wait(lambda: all(_api(p, "/api/v1/stats").get("received", 0) >= 0 for p in ports))
        client = Client(mosquitto.host, mosquitto.port, None, None, None, "shard-test")
        time.sleep(1.0)  # both servers subscribed (they connected before their API answered)
        for member, ean, op, imp, exp in (("alice", "541448820000000001", "op1", 300, 0),
                                          ("bob", "541448820000000002", "op1", 100, 0),
                                          ("school", "541448820000000003", "op1", 0, 500),
                                          ("carol", "541448820000000004", "op2", 200, 600)):
            p = pseudonym(ean, SECRET)
            msg = QuarterHourMsg(meter=p, operation=op, start=T0, import_wh=imp, export_wh=exp)
            client.c.publish(meter_topic("moulin", op, p, "qh"), msg.to_bytes(), qos=1).wait_for_publish(5)
        assert wait(lambda: all(_api(p, "/api/v1/stats")["allocations"] == 1 for p in ports)), \
            [_api(p, "/api/v1/stats") for p in ports]
        s0, s1 = (_api(p, "/api/v1/stats") for p in ports)
        # each process took its operation's messages and ignored nothing it owns, refused nothing
        assert (s0["by_kind"]["qh"], s1["by_kind"]["qh"]) == (3, 1) and s0["rejected"] == s1["rejected"] == 0
        a0 = _api(ports[0], f"/api/v1/operations/op1/allocation?month={T0:%Y-%m}")["members"]
        a1 = _api(ports[1], f"/api/v1/operations/op2/allocation?month={T0:%Y-%m}")["members"]
        assert set(a0) == {"alice", "bob", "school"} and set(a1) == {"carol"}
        assert a0["school"]["injection_shared_wh"] == a0["alice"]["received_wh"] + a0["bob"]["received_wh"] > 0
    finally:
        if client is not None:
            client.close()
        for proc in procs:
            proc.terminate()
            assert proc.wait(15) == 0


def test_shard_settings_are_checked_with_the_key_named(tmp_path: Path) -> None:
    for extra, needle in (('shard = "3/2"', 'server.shard'), ('shard = "x"', "server.shard"),
                          ('shard = "1/2"\noperations = ["op1"]', "server.shard and server.operations"),
                          ('shard = "3/3"', "is empty")):
        cfg = _server(tmp_path, f"bad{abs(hash(extra))}", 1883, 1, extra)
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "community", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=30)
        # a configuration error: EX_CONFIG (issue 17)
        assert done.returncode == 78 and needle in done.stderr and "Traceback" not in done.stderr, (extra, done.stderr)

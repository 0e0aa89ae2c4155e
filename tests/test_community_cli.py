"""`quartier community provision` / `reconcile` and the operator API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.config import load_config
from gateway.uplink import Uplink, settings_from_config
from services.community.api import create_app
from gateway.wire import QuarterHourMsg, meter_topic, pseudonym
from tests.community_fixtures import SECRET, seeded, write_community
from tests.community_harness import Client, SecureMosquitto

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=timezone.utc)
TOKEN = "operator-token-1"


def server_config(tmp: Path) -> Path:
    write_community(tmp)
    (tmp / "server.toml").write_text(
        'secrets_file = "secrets.toml"\n[server]\ncommunity_file = "community.toml"\n'
        f'database = "{tmp / "community.sqlite"}"\n[broker]\nhost = "127.0.0.1"\nport = 8883\nusername = "srv"\n'
    )
    secrets = tmp / "secrets.toml"
    secrets.write_text(f'[server]\npseudonym_secret = "{SECRET}"\n[api]\ntokens = ["{TOKEN}"]\n')
    os.chmod(secrets, 0o600)
    return tmp / "server.toml"


def quartier(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60)


def test_provisioned_gateway_connects_with_its_files_and_nothing_else(tmp_path: Path) -> None:
    cfg = server_config(tmp_path)
    bdir = tmp_path / "broker"
    done = quartier("community", "provision", "--config", str(cfg), "--broker-dir", str(bdir),
                    "--init-broker", "127.0.0.1", "--member", "alice", "--out", str(tmp_path / "gw"))
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.splitlines()[1])
    assert info["pseudonym"] == pseudonym("541448820000000001", SECRET)
    gw = tmp_path / "gw" / "alice"
    assert oct((gw / "uplink-secrets.toml").stat().st_mode & 0o777) == "0o600"
    # the gateway's config: the generated section, the CA where it says, the password from secrets
    text = (gw / "uplink.toml").read_text().replace("/etc/quartier/community-ca.crt", str(gw / "community-ca.crt"))
    (gw / "quartier.toml").write_text(text + f'[daemon]\nsecrets_file = "{gw / "uplink-secrets.toml"}"\n')
    node = load_config(gw / "quartier.toml")
    assert node.uplink.enabled and node.uplink.pseudonym == info["pseudonym"]
    from services.community import broker

    server = SecureMosquitto(tmp_path / "mosq", broker.BrokerDir(bdir))
    server.start()
    try:
        settings = settings_from_config(node.uplink.model_copy(update={"port": server.port}))
        up = Uplink(settings)
        up.start()
        assert up.wait_connected(10)
        srv_pw = (bdir / "server-secrets.toml").read_text().split('"')[1]
        admin = Client(server.host, server.port, bdir / "ca.crt", "srv", srv_pw)
        assert admin.wait_connected() == 0
        admin.subscribe("quartier/moulin/op/+/meter/+/qh")
        up.publish_quarter_hours([QuarterHourMsg(meter=settings.pseudonym, operation="op1", start=T0,
                                                 import_wh=5, export_wh=0).to_bytes()], 10)
        assert admin.wait_for(lambda: admin.received())
        assert admin.received()[0][0] == meter_topic("moulin", "op1", settings.pseudonym, "qh")
        up.stop()
        admin.close()
    finally:
        server.stop()


def test_each_server_process_gets_its_own_user_and_no_one_takes_its_client_id(tmp_path: Path) -> None:
    """Two shards with their own users (``--server-user``) and the same configured client id run side
    by side; a gateway's credentials with a shard's client id do not disconnect it (the broker makes
    the username the client id)."""
    cfg = server_config(tmp_path)
    bdir = tmp_path / "broker"
    done = quartier("community", "provision", "--config", str(cfg), "--broker-dir", str(bdir), "--init-broker",
                    "127.0.0.1", "--server-user", "srv-1of2", "--server-user", "srv-2of2", "--member", "alice",
                    "--out", str(tmp_path / "gw"))
    assert done.returncode == 0, done.stderr
    pw = {u: (bdir / f"{u}-secrets.toml").read_text().split('"')[1] for u in ("srv-1of2", "srv-2of2")}
    assert oct((bdir / "srv-1of2-secrets.toml").stat().st_mode & 0o777) == "0o600"
    alice = pseudonym("541448820000000001", SECRET)
    alice_pw = (tmp_path / "gw" / "alice" / "uplink-secrets.toml").read_text().split('"')[1]
    from services.community import broker

    server = SecureMosquitto(tmp_path / "mosq", broker.BrokerDir(bdir))
    server.start()
    clients = []
    try:
        shards = [Client(server.host, server.port, bdir / "ca.crt", u, pw[u], "quartier-community") for u in pw]
        clients += shards
        assert [c.wait_connected() for c in shards] == [0, 0]
        assert all(c.subscribe("quartier/moulin/op/+/meter/+/qh") == [1] for c in shards)
        thief = Client(server.host, server.port, bdir / "ca.crt", alice, alice_pw, "quartier-community")
        clients.append(thief)
        assert thief.wait_connected() == 0
        time.sleep(1.0)
        assert all(c.c.is_connected() for c in shards)  # nobody was kicked
    finally:
        for c in clients:
            c.close()
        server.stop()


def test_provision_refuses_unknown_members(tmp_path: Path) -> None:
    cfg = server_config(tmp_path)
    done = quartier("community", "provision", "--config", str(cfg), "--broker-dir", str(tmp_path / "b"),
                    "--init-broker", "127.0.0.1", "--member", "mallory")
    assert done.returncode == 2 and "--member mallory: not in" in done.stderr
    assert "Traceback" not in done.stderr


def test_reconcile_imports_the_grid_file_and_reports_differences(tmp_path: Path) -> None:
    cfg = server_config(tmp_path)
    _, ledger = seeded(tmp_path, T0)  # provisional: alice 4 x 250, bob 4 x 100
    ledger.close()
    csv = tmp_path / "grid.csv"
    rows = ["ean;start;received_kwh"]
    for i in range(4):
        local = (T0 + timedelta(minutes=15 * i)).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Brussels"))
        rows.append(f"541448820000000001;{local:%Y-%m-%d %H:%M};0,245")
        rows.append(f"541448820000000002;{local:%Y-%m-%d %H:%M};0,1")
    rows.append("541448820000009999;2026-05-01 12:00;1,0")
    csv.write_text("\n".join(rows) + "\n")
    done = quartier("community", "reconcile", "--config", str(cfg), "--operation", "op1", "--file", str(csv))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    by = {r["member"]: r for r in report["members"]}
    assert by["alice"] == {"member": "alice", "provisional_wh": 1000, "grid_wh": 980, "difference_wh": 20}
    assert by["bob"]["difference_wh"] == 0
    assert report["unknown_eans"] == ["541448820000009999"]
    bad = tmp_path / "bad.csv"
    bad.write_text("ean;start;received_kwh\n541448820000000001;01/05/2026;1\n")
    done = quartier("community", "reconcile", "--config", str(cfg), "--operation", "op1", "--file", str(bad))
    assert done.returncode == 2 and "line 2: start" in done.stderr


def test_operator_api_needs_a_token_and_shows_members_completeness_and_allocation(tmp_path: Path) -> None:
    srv, ledger = seeded(tmp_path, T0)
    ledger.set_status("op1", "alice", "online", T0.timestamp())
    client = TestClient(create_app(srv.roster, ledger, [TOKEN], srv))
    assert client.get("/api/v1/operations").status_code == 401
    assert client.get("/api/v1/operations", headers={"Authorization": "Bearer wrong"}).status_code == 401
    h = {"Authorization": f"Bearer {TOKEN}"}
    ops = client.get("/api/v1/operations", headers=h).json()
    assert [(o["id"], o["key"]) for o in ops] == [("op1", "fixed-equal"), ("op2", "prorata")]
    members = {m["id"]: m for m in client.get("/api/v1/operations/op1/members", headers=h).json()}
    assert members["alice"]["status"] == "online" and members["bob"]["status"] == "unknown"
    comp = client.get("/api/v1/operations/op1/completeness?day=2026-05-01", headers=h).json()
    assert comp["expected"] == 96 and comp["members"]["alice"]["received"] == 4
    alloc = client.get("/api/v1/operations/op1/allocation?month=2026-05", headers=h).json()
    assert alloc["members"]["alice"]["received_wh"] == 1000 and alloc["members"]["school"]["injection_shared_wh"] == 1400
    assert client.get("/api/v1/operations/nope/members", headers=h).status_code == 404
    assert "Quartier community" in client.get("/").text
    ledger.close()


@pytest.mark.parametrize("path, field", [
    ("completeness?day=9999-12-31", "day"), ("completeness?day=0001-01-01", "day"),
    ("allocation?month=9999-12", "month"), ("allocation?month=0000-01", "month"), ("allocation?month=0001-01", "month"),
    ("allocation?month=2026-13", "month"),
])
def test_operator_api_refuses_out_of_range_dates_naming_the_field(tmp_path: Path, path: str, field: str) -> None:
    """Issue 13: an out-of-range day or month answered 500."""
    srv, ledger = seeded(tmp_path, T0)
    client = TestClient(create_app(srv.roster, ledger, [TOKEN], srv), raise_server_exceptions=False)
    r = client.get(f"/api/v1/operations/op1/{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    ledger.close()
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}: "), r.text


def test_server_config_keeps_secrets_out_of_the_main_file(tmp_path: Path) -> None:
    from services.community.config import ConfigError, load_server_config

    cfg = server_config(tmp_path)
    loaded = load_server_config(cfg)
    assert loaded.server.pseudonym_secret.get_secret_value() == SECRET
    assert loaded.server.community_file == tmp_path / "community.toml"
    leaky = tmp_path / "leaky.toml"
    leaky.write_text('[server]\ncommunity_file = "community.toml"\npseudonym_secret = "x"\n')
    with pytest.raises(ConfigError, match="server.pseudonym_secret: secrets do not belong"):
        load_server_config(leaky)
    os.chmod(tmp_path / "secrets.toml", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_server_config(cfg)


def test_server_config_errors_name_key_and_value_but_never_a_secret(tmp_path: Path) -> None:
    from services.community.config import ConfigError, load_server_config

    cfg = server_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("port = 8883", "port = 99999"))
    (tmp_path / "secrets.toml").write_text('[server]\npseudonym_secret = "s"\n[api]\ntokens = "op3rator-t0ken"\n')
    with pytest.raises(ConfigError) as exc:
        load_server_config(cfg)
    assert "broker.port = 99999:" in str(exc.value)
    assert "api.tokens = '***'" in str(exc.value) and "op3rator-t0ken" not in str(exc.value)
    (tmp_path / "secrets.toml").unlink()
    with pytest.raises(ConfigError, match="secrets file .*secrets.toml: file not found"):
        load_server_config(cfg)


def test_server_config_refuses_what_it_cannot_trust(tmp_path: Path) -> None:
    """Issue 13: non-UTF-8, a directory, inf/nan and settings in the secrets file, named by file and key."""
    from services.community.config import ConfigError, load_server_config

    cfg = server_config(tmp_path)
    good = cfg.read_text()
    with pytest.raises(ConfigError, match=f"config {tmp_path}: is a directory"):
        load_server_config(tmp_path)
    cfg.write_bytes(good.replace('username = "srv"', 'username = "s\xe9rv"').encode("latin-1"))
    with pytest.raises(ConfigError, match=f"config {cfg}: not UTF-8 text"):
        load_server_config(cfg)
    cfg.write_text(good.replace("[broker]", "deadline_s = inf\n[broker]"))
    with pytest.raises(ConfigError, match=r"server.deadline_s = inf: Input should be a finite number"):
        load_server_config(cfg)
    cfg.write_text(good)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(secrets.read_text() + '[broker]\nhost = "evil.example"\n')
    with pytest.raises(ConfigError, match=f"secrets file {secrets}: broker.host is not a secret; it belongs in the config file"):
        load_server_config(cfg)
    done = quartier("community", "reconcile", "--config", str(cfg), "--operation", "op1", "--file", str(cfg))
    # a configuration error: EX_CONFIG, which the units do not restart on (issue 17)
    assert done.returncode == 78 and "broker.host is not a secret" in done.stderr and "Traceback" not in done.stderr


def test_quartier_community_runs_the_server_and_its_api(tmp_path: Path, mosquitto) -> None:
    import urllib.request

    from tests.servers import free_port, port_open

    cfg = server_config(tmp_path)
    port = free_port()
    text = cfg.read_text().replace('port = 8883\nusername = "srv"\n', f"port = {mosquitto.port}\n")
    cfg.write_text(text + f'[api]\nhost = "127.0.0.1"\nport = {port}\n')
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "community", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.1)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/operations",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert [o["id"] for o in json.loads(resp.read())] == ["op1", "op2"]
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


def test_imported_grid_figures_replace_the_provisional_ones_in_the_operator_view(tmp_path: Path) -> None:
    srv, ledger = seeded(tmp_path, T0)
    client = TestClient(create_app(srv.roster, ledger, [TOKEN], srv))
    h = {"Authorization": f"Bearer {TOKEN}"}
    before = client.get("/api/v1/operations/op1/allocation?month=2026-05", headers=h).json()
    assert before["provisional"] and before["members"]["alice"]["source"] == "provisional"
    ledger.import_grid("op1", [("alice", T0, 900)], "grid.csv")
    after = client.get("/api/v1/operations/op1/allocation?month=2026-05", headers=h).json()
    a = after["members"]["alice"]
    assert not after["provisional"]
    assert (a["received_wh"], a["provisional_received_wh"], a["difference_wh"], a["source"]) == (900, 1000, 100, "grid")
    ledger.close()


def test_an_unknown_operation_is_one_line_naming_the_known_ones(tmp_path: Path) -> None:
    cfg = server_config(tmp_path)
    for args, prefix in ((["statement", "--period", "2026-05"], "quartier community statement"),
                         (["sheets", "--month", "2026-05", "--out", str(tmp_path / "s")], "quartier community"),
                         (["reconcile", "--file", str(tmp_path / "none.csv")], "quartier community")):
        r = quartier("community", *args, "--operation", "nope", "--config", str(cfg))
        assert (r.returncode, r.stderr) == (2, f"{prefix}: --operation: no operation 'nope' (have: op1, op2)\n"), args

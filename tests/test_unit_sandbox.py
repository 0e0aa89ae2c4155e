"""The units' kernel-enforced settings on the real commands (issue 17): each service runs under its
unit's SystemCallFilter, RestrictAddressFamilies, MemoryDenyWriteExecute and NoNewPrivileges
(tests/unit_sandbox.py; no systemd is PID 1 here, so the units themselves cannot be started)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = ROOT / "tests" / "unit_sandbox.py"
DEPLOY = ROOT / "deploy"
UNITS = ["quartier.service", "quartier-web.service", "quartier-light.service", "community/quartier-community.service"]


def sandboxed(unit: str, *command: str, **kw) -> list[str]:
    return [sys.executable, str(SANDBOX), str(DEPLOY / unit), "--", *command]


def run_py(unit: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sandboxed(unit, sys.executable, "-c", code), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("unit", UNITS)
def test_the_sandbox_enforces_the_unit(unit: str) -> None:
    """The checks below would prove nothing if the settings were not in force: they are."""
    r = run_py(unit, """
import ctypes, mmap, os, socket
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    raise SystemExit("a W+X mapping was allowed")
except PermissionError:
    pass
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)  # plain data memory is fine
libc = ctypes.CDLL(None, use_errno=True)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
assert libc.mprotect(ctypes.c_void_p(addr), 4096, mmap.PROT_READ | mmap.PROT_EXEC) == -1, "mprotect +X allowed"
for call in (lambda: os.chroot("/"), lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)):
    try:
        call()
        raise SystemExit("a filtered system call went through")
    except PermissionError:
        pass
socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
print("enforced")
""")
    assert r.returncode == 0 and r.stdout.strip() == "enforced", r.stdout + r.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_compiled_code_loads_under_memory_deny_write_execute(unit: str) -> None:
    """CPython, numpy, pydantic-core, crcmod's C extension and cffi need no writable+executable memory."""
    r = run_py(unit, "import numpy, pydantic, cffi, fastapi, paho.mqtt.client, serial; from p1.crc import compiled, crc16; "
                     "assert compiled() and crc16(b'123456789') == 0xBB3D; print(numpy.arange(4).sum())")
    assert r.returncode == 0 and r.stdout.strip() == "6", r.stdout + r.stderr


def test_the_daemon_and_its_page_run_under_the_daemon_unit(tmp_path: Path) -> None:
    """`quartier demo` under quartier.service's settings: the meter on a pty (pyserial), the store, the
    health file, the clock question (adjtimex), the web service (a child: same filter) and SIGTERM."""
    port = free_port()
    d = tmp_path / "demo"
    proc = subprocess.Popen(sandboxed("quartier.service", sys.executable, "-m", "gateway.cli", "demo", "--dir", str(d),
                                      "--port", str(port), "--duration", "120"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        health = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                health = json.loads((d / "health.json").read_text())
            except (OSError, ValueError):
                health = {}
            if health.get("meters") and any(m["accepted"] for m in health["meters"].values()):
                break
            time.sleep(0.3)
        assert any(m["accepted"] and not m["crc_errors"] for m in health["meters"].values()), health
        assert health["clock_synchronised"] is not None, "adjtimex refused: see the unit's SystemCallFilter"
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/live", timeout=5) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the page did not answer"
                time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads((d / "health.json").read_text())["state"] == "stopped"
    log = (d / "web.log").read_text()
    assert "Traceback" not in log and "Operation not permitted" not in log, log


def test_the_light_runs_under_its_unit(tmp_path: Path) -> None:
    """gpiozero (mock pins here: no GPIO chip on this machine) under quartier-light.service's settings."""
    proc = subprocess.Popen(sandboxed("quartier-light.service", sys.executable, "-m", "gateway.cli", "light", "--mock",
                                      "--url", "http://127.0.0.1:9/", "--runtime-dir", str(tmp_path)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(3)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"amber" in proc.stdout.read() if proc.stdout else False


def test_the_community_server_runs_under_its_unit(tmp_path: Path, mosquitto) -> None:
    """`quartier community` under quartier-community.service's settings: the broker (TCP), the ledger,
    the operator API, systemd's notify socket (AF_UNIX) and a clean stop on SIGTERM."""
    import socket as _socket

    from tests.community_fixtures import SECRET, write_community

    write_community(tmp_path)
    port = free_port()
    (tmp_path / "server.toml").write_text(
        'secrets_file = "secrets.toml"\n[server]\ncommunity_file = "community.toml"\n'
        f'database = "{tmp_path / "ledger.sqlite"}"\n[broker]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        f'[api]\nhost = "127.0.0.1"\nport = {port}\n')
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[server]\npseudonym_secret = "{SECRET}"\n[api]\ntokens = ["op-token"]\n')
    secrets.chmod(0o600)
    notify = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    env = {**__import__("os").environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen(sandboxed("community/quartier-community.service", sys.executable, "-m", "gateway.cli",
                                      "community", "--config", str(tmp_path / "server.toml")),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        said = notify.recv(4096).decode()
        assert "READY=1" in said, said
        assert "WATCHDOG=1" in notify.recv(4096).decode()  # its threads are alive: the watchdog is fed
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/operations",
                                     headers={"Authorization": "Bearer op-token"})
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    assert [o["id"] for o in json.loads(resp.read())] == ["op1", "op2"]
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "Traceback" not in err and "Operation not permitted" not in err, err

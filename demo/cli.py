"""``quartier demo``: the gateway on a simulated e-MUCS meter into a local SQLite store, with its page.

The first command of the README: no meter, no server. The node runs as on a Pi — the daemon reads
a pseudo-terminal through pyserial (demo/source.py) and the web service runs in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.cli import CommandError
from gateway.commands import load_checked


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the gateway on a simulated e-MUCS meter into a local SQLite store")
    p.add_argument("--dir", type=Path, default=Path("quartier-demo"), help="where the store and health file go")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (60: a quarter-hour every 15 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", help="simulated start time, ISO 8601 (default: today 10:00 local)")
    p.add_argument("--origin", help="the real time (ISO 8601) at which the simulated clock read --start "
                   "(default: when the meter starts): meters started at different moments then keep one clock")
    p.add_argument("--duration", type=float, default=None, help="stop after this many real seconds")
    p.add_argument("--port", type=int, default=None,
                   help="serve the page and the API on 127.0.0.1:PORT (default 8080, or a free port when 8080 is taken)")
    p.add_argument("--pv-kwp", type=float, default=4.0, help="rooftop solar of the simulated household, kWp (0: none)")
    p.add_argument("--join", type=Path, metavar="DIR",
                   help="join a community: the files `quartier community provision --out` wrote for this member "
                        "(uplink.toml, uplink-secrets.toml, community-ca.crt)")
    p.set_defaults(func=cmd_demo)



def cmd_demo(args) -> int:
    import threading
    from datetime import datetime

    from gateway.daemon import Daemon

    if args.port is None:  # the first command of the README must work whatever else runs on 8080
        args.port = DEMO_PORT if port_free("127.0.0.1", DEMO_PORT) else free_port("127.0.0.1")
    elif not 1 <= args.port <= 65535:
        raise CommandError(f"--port {args.port}: not a TCP port (1-65535)")
    elif not port_free("127.0.0.1", args.port):
        raise CommandError(f"--port {args.port}: cannot serve on 127.0.0.1:{args.port} (in use); choose another with --port")
    if args.origin:
        try:
            datetime.fromisoformat(args.origin)
        except ValueError:
            raise CommandError(f"--origin {args.origin!r}: not an ISO 8601 time") from None
    if not 0 <= args.pv_kwp <= 100:
        raise CommandError(f"--pv-kwp {args.pv_kwp:g}: between 0 and 100 kWp")
    uplink = _read_join(args.join) if args.join else None
    d = args.dir.resolve()
    d.mkdir(parents=True, exist_ok=True)
    config_path, token = _write_demo_config(d, args, uplink)
    cfg = load_checked(config_path)
    daemon = Daemon(cfg)
    qh_s = 900 / args.speed
    url = f"http://127.0.0.1:{args.port}/"
    print(
        f"Quartier demo: a simulated Belgian e-MUCS meter ({_household(args.pv_kwp)}) at {args.speed:g}x,\n"
        f"read through pyserial on a pseudo-terminal, aggregated into quarter-hours (one every {qh_s:.0f} s).\n"
        f"  page and API:     {url}   (API docs: {url}api/docs)\n"
        f"  store (SQLite):   {d / 'quartier.sqlite'}\n"
        f"  live health:      {d / 'health.json'}\n"
        f"  configuration:    {config_path}   (web service log: {d / 'web.log'})\n"
        f"  quarter-hours:    quartier export quarter-hours --db {d / 'quartier.sqlite'}\n"
        f"  status:           quartier status --db {d / 'quartier.sqlite'} --runtime-dir {d}\n"
        f"  reduce-now alert: curl -X PUT -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n"
        f"                         -d '{{\"message\": \"Peak on the feeder\", \"minutes\": 60}}' {url}api/v1/alert\n"
        + (f"  community:        operation {uplink['operation']!r} of {uplink['community']!r} through "
           f"{uplink['host']}:{uplink['port']} as {uplink['pseudonym']}\n" if uplink else "")
        + "Stop with Ctrl-C.",
        flush=True,
    )
    web = _start_demo_web(config_path, args.port, d)
    # a daemon thread, cancelled at the end: a SIGTERM (systemctl stop, a test harness) stops the demo
    # at once; a non-daemon Timer kept the process alive until --duration was over
    timer = threading.Timer(args.duration, daemon.stop_event.set) if args.duration else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        return daemon.run()
    finally:
        if timer is not None:
            timer.cancel()
        _stop_child(web)


DEMO_PORT = 8080


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (the demos pick their ports with it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A port the kernel has free on ``host`` right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _household(pv_kwp: float) -> str:
    return f"household + {pv_kwp:g} kWp rooftop solar" if pv_kwp else "household without solar panels"


def _read_join(join: Path) -> dict:
    """The ``[uplink]`` table of a provisioned member (``quartier community provision --out``), with the
    CA file where provisioning left it and the password from its secrets file."""
    import tomllib

    d = join.resolve()
    tables = {}
    for name in ("uplink.toml", "uplink-secrets.toml"):
        try:
            tables[name] = tomllib.loads((d / name).read_text()).get("uplink")
        except FileNotFoundError:
            raise CommandError(f"--join {join}: no {name} there (write it with `quartier community provision --out`)") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CommandError(f"--join {join}: {name}: {exc}") from None
        if not isinstance(tables[name], dict):
            raise CommandError(f"--join {join}: {name} has no [uplink] table")
    uplink = dict(tables["uplink.toml"])
    if "password" not in tables["uplink-secrets.toml"]:
        raise CommandError(f"--join {join}: uplink-secrets.toml: uplink.password missing")
    uplink["password"] = tables["uplink-secrets.toml"]["password"]
    if (d / "community-ca.crt").exists():
        uplink["ca_file"] = str(d / "community-ca.crt")
    uplink.pop("meter_id", None)  # the simulated meter is this member, whatever its serial number
    for key in ("community", "operation", "pseudonym", "host", "port"):
        if key not in uplink:
            raise CommandError(f"--join {join}: uplink.toml: uplink.{key} missing")
    return uplink


def _write_demo_config(d: Path, args, uplink: dict | None = None) -> tuple[Path, str]:
    """The demo node's configuration file (and a secrets file with a bearer token for the API)."""
    import os
    import secrets
    import tomllib

    secrets_path = d / "secrets.toml"
    token = None
    if secrets_path.exists():
        try:
            token = tomllib.loads(secrets_path.read_text()).get("web", {}).get("token")
        except (OSError, tomllib.TOMLDecodeError):
            token = None
    if not token:
        token = secrets.token_urlsafe(18)
    fd = os.open(secrets_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f'[web]\ntoken = "{token}"\n')
        if uplink:
            fh.write(f"[uplink]\npassword = {json.dumps(uplink['password'])}\n")
    os.chmod(secrets_path, 0o600)
    lines = [
        "# written by `quartier demo`: the demo node (a simulated meter), usable with `quartier web --config`",
        "[[sources]]",
        'type = "simulated"',
        f"speed = {args.speed!r}",
        f"seed = {args.seed}",
        f"pv_kwp = {float(args.pv_kwp)!r}",
    ]
    if args.start:
        lines.append(f"start = {json.dumps(args.start)}")
    if getattr(args, "origin", None):
        lines.append(f"origin = {json.dumps(args.origin)}")
    lines += [
        "[store]",
        f"path = {json.dumps(str(d / 'quartier.sqlite'))}",
        "[daemon]",
        f"runtime_dir = {json.dumps(str(d))}",
        "health_interval_s = 2",
        f"secrets_file = {json.dumps(str(secrets_path))}",
        "[web]",
        'host = "127.0.0.1"',
        f"port = {args.port}",
    ]
    if uplink:
        lines += ["[uplink]", "enabled = true", "live_interval_s = 2"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in uplink.items() if k not in ("password", "enabled", "live_interval_s")]
    path = d / "quartier.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, token


def _start_demo_web(config_path: Path, port: int, d: Path):
    """The web service in a process of its own (``quartier web``), as on a node."""
    import subprocess

    log = open(d / "web.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "web", "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )


def _stop_child(proc) -> None:
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

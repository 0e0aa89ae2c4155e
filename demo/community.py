"""``quartier community demo``: a whole energy community on this machine, from real parts.

A Mosquitto broker configured as in production (TLS with a fresh community CA, one user per gateway,
the generated ACL), the community server (``quartier community``) with its operator page, and two or
more nodes, each a ``quartier demo`` (simulated meter on a pseudo-terminal, daemon, web page) that
joins with the files provisioning wrote for it. The street's cabin meter is one more such node, an
observer (reports, never allocated). The simulated meters share one clock (start, speed and the real
instant it read the start), so their quarter-hours close together and the server allocates each as
soon as all are in; the server judges collective alerts on that clock too, so the one scripted alert
(reduce now, at a fixed simulated time) turns every node red when the meters reach it.

Everything lives under ``--dir``; a second run reuses the CA, the pseudonym secret and the stores.
Children run in their own sessions so that Ctrl-C stops them in order: nodes first (their daemons
flush), then the server, then the broker.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

from demo.cli import free_port, port_free

COMMUNITY = "quartier-demo"
OPERATION = "rue-du-moulin"
MOSQUITTO_FALLBACK = "/usr/sbin/mosquitto"  # Debian installs it outside a user's PATH


@dataclass(frozen=True)
class DemoMember:
    id: str
    role: str  # the allocation model's role: consumer, producer or both
    pv_kwp: float
    seed: int
    ean: str
    what: str


MEMBERS = (
    DemoMember("soleil", "both", 8.0, 1, "541448820000001001", "household with 8 kWp on its roof"),
    DemoMember("voisin", "consumer", 0.0, 2, "541448820000001002", "household without solar panels"),
    DemoMember("atelier", "consumer", 0.0, 3, "541448820000001003", "workshop without solar panels"),
    DemoMember("ecole", "both", 12.0, 4, "541448820000001004", "school with 12 kWp"),
)
# the street's low-voltage cabin: watched, never a member (a simulated meter like the others; a real
# one sees the whole street, a Flukso on a gateway)
CABIN = DemoMember("cabine", "observer", 0.0, 9, "541448820000001099", "street cabin meter (observer)")

# the scripted collective alert: reduce now, from the first quarter-hour ALERT_AFTER after the meters'
# start (later if the meters are already past it), for ALERT_MINUTES simulated minutes
ALERT_AFTER = timedelta(minutes=30)
ALERT_LEAD = timedelta(minutes=10)  # simulated: the least notice the running nodes get
ALERT_MINUTES = 30
# as a Belgian operator writes to a bilingual street: the message is the operator's words, shown as
# typed in every member's page (the headline and reason around it are in the member's language)
ALERT_MESSAGE = ("Pointe à la cabine de la rue : réduisez maintenant (démo). "
                 "Piek aan de straatcabine: verbruik nu minder (demo).")


class DemoError(Exception):
    """Something the user can fix (a missing program, a port in use); one line, no traceback."""


def register(sub: argparse._SubParsersAction) -> None:
    pd = sub.add_parser("demo", help="a community on this machine: broker, community server and simulated nodes",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pd.add_argument("--dir", type=Path, default=Path("quartier-community-demo"), help="where everything goes")
    pd.add_argument("--nodes", type=int, default=2, help=f"simulated members, 2 to {len(MEMBERS)} (default 2)")
    pd.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (60: a quarter-hour every 15 s)")
    pd.add_argument("--start", help="simulated start time of every meter, ISO 8601 (default: today 10:00 local)")
    pd.add_argument("--port", type=int, default=8080, help="the first node's page; the others take the next ports")
    pd.add_argument("--operator-port", type=int, default=8090, help="the community server's operator page and API")
    pd.add_argument("--duration", type=float, default=None, help="stop after this many real seconds")
    pd.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return Demo(args).run()
    except DemoError as exc:
        print(f"quartier community demo: {exc}", file=sys.stderr)
        return 2


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        if not 2 <= args.nodes <= len(MEMBERS):
            raise DemoError(f"--nodes {args.nodes}: between 2 and {len(MEMBERS)}")
        if not 0 < args.speed <= 3600:
            raise DemoError(f"--speed {args.speed:g}: between 0 (exclusive) and 3600")
        if args.start:
            try:
                datetime.fromisoformat(args.start)
            except ValueError:
                raise DemoError(f"--start {args.start!r}: not an ISO 8601 time") from None
        for name in ("port", "operator_port"):
            if not 1 <= getattr(args, name) <= 65535:
                raise DemoError(f"--{name.replace('_', '-')} {getattr(args, name)}: not a TCP port (1-65535)")
        self.args = args
        self.dir = args.dir.resolve()
        self.members = MEMBERS[: args.nodes]
        self.meters = (*self.members, CABIN)  # everything that reports: the members and the cabin
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stop = threading.Event()

    # -- set-up ------------------------------------------------------------------------------------

    def _secrets(self) -> dict:
        path = self.dir / "server-secrets.toml"
        if path.exists():
            try:
                return tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError):
                pass
        return {}

    def prepare(self) -> dict:
        """Community file, broker security files, server config; returns what ``run`` prints."""
        from services.community import broker
        from services.community.provision import GatewayFiles, write_gateway_files, write_secret
        from gateway.wire import pseudonym

        mosquitto = shutil.which("mosquitto") or (MOSQUITTO_FALLBACK if os.access(MOSQUITTO_FALLBACK, os.X_OK) else None)
        if mosquitto is None:
            raise DemoError("Mosquitto is needed for the community broker: sudo apt-get install mosquitto")
        self.dir.mkdir(parents=True, exist_ok=True)
        old = self._secrets()
        secret = (old.get("server") or {}).get("pseudonym_secret") or secrets.token_urlsafe(24)
        token = ((old.get("api") or {}).get("tokens") or [secrets.token_urlsafe(18)])[0]
        (self.dir / "community.toml").write_text(community_toml(self.meters, self._start()))

        bdir = broker.BrokerDir(self.dir / "broker")
        try:
            broker.make_ca(bdir, COMMUNITY)  # kept if it exists
            if not bdir.server_cert.exists():
                broker.issue_server_cert(bdir, ["127.0.0.1", "localhost"])
            server_password = broker.add_server_user(bdir, COMMUNITY, "community-server")
            pseudonyms = {m.id: pseudonym(m.ean, secret) for m in self.meters}
            passwords = broker.add_gateways(bdir, COMMUNITY, {p: OPERATION for p in pseudonyms.values()})
        except broker.BrokerSetupError as exc:
            raise DemoError(str(exc)) from None
        self.broker_port = free_port("127.0.0.1")
        data = bdir.root / "data"
        data.mkdir(exist_ok=True)
        bdir.conf.write_text(broker.conf_text(bdir, port=self.broker_port, bind="127.0.0.1", persistence_dir=data,
                                              run_as=getpass.getuser()))
        self.mosquitto = mosquitto
        self.ca_cert = bdir.ca_cert

        self.operator_port = self.args.operator_port if port_free("127.0.0.1", self.args.operator_port) else free_port("127.0.0.1")
        qh_s = 900 / self.args.speed
        start = self._start()
        # the simulated meters' one clock: it reads `start` now, and every meter and the server keep it
        self.origin = datetime.now(timezone.utc)
        (self.dir / "server.toml").write_text(
            "# written by `quartier community demo`: the community server\n"
            'secrets_file = "server-secrets.toml"\n'
            f'[server]\ncommunity_file = "community.toml"\ndatabase = {json.dumps(str(self.dir / "community.sqlite"))}\n'
            # the meters run at --speed: give late members a few of their quarter-hours, not five real minutes
            f"deadline_s = {max(10.0, 2 * qh_s):g}\ntotals_interval_s = 1\nlive_stale_s = 15\n"
            # the simulated meters start at --start and run --speed times faster than the server's clock:
            # its admission window follows them (a month of running), or it would refuse honest figures
            f"max_age_s = {_demo_max_age_s(start):.0f}\nfuture_tolerance_s = {_demo_tolerance_s(start, self.args.speed):.0f}\n"
            # collective alerts are judged on the meters' clock, as the nodes judge them
            f"[server.meter_clock]\nstart = {json.dumps(start.isoformat())}\norigin = {json.dumps(self.origin.isoformat())}\n"
            f"speed = {self.args.speed!r}\n"
            f'[broker]\nhost = "127.0.0.1"\nport = {self.broker_port}\nca_file = {json.dumps(str(bdir.ca_cert))}\n'
            'username = "community-server"\nclient_id = "quartier-community-demo"\n'
            f'[api]\nhost = "127.0.0.1"\nport = {self.operator_port}\n')
        write_secret(self.dir / "server-secrets.toml",
                     f"[server]\npseudonym_secret = {json.dumps(secret)}\n[broker]\npassword = {json.dumps(server_password)}\n"
                     f"[api]\ntokens = [{json.dumps(token)}]\n")

        self.nodes = []
        port = self.args.port
        for m in self.meters:
            join = write_gateway_files(self.dir / m.id / "join", GatewayFiles(
                member=m.id, community=COMMUNITY, operation=OPERATION, pseudonym=pseudonyms[m.id], meter=m.ean,
                host="127.0.0.1", port=self.broker_port, password=passwords[pseudonyms[m.id]]), bdir.ca_cert)
            while not port_free("127.0.0.1", port) or port == self.operator_port:
                port = port + 1 if port < 65535 else free_port("127.0.0.1")
            self.nodes.append((m, join, port))
            port += 1
        self.start = start.isoformat()
        return {"token": token}

    def _start(self) -> datetime:
        """The simulated meters' common start time."""
        start = datetime.fromisoformat(self.args.start) if self.args.start else \
            datetime.now().astimezone().replace(hour=10, minute=0, second=0, microsecond=0)
        if start.tzinfo is None:
            start = start.astimezone()
        # run again in the same directory: every meter goes on from where the furthest one stopped, so
        # their quarter-hours stay aligned (each daemon would otherwise resume from its own store)
        ahead = [t for m in self.meters if (t := _store_end(self.dir / m.id / "quartier.sqlite")) is not None]
        if ahead and max(ahead) > start:
            start = max(ahead).astimezone(start.tzinfo)
        return start

    # -- processes ---------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], log: Path) -> subprocess.Popen:
        fh = open(log, "ab")  # noqa: SIM115 - the child owns it; closed when we exit
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, start_new_session=True)
        fh.close()
        self.children.append((name, proc))
        return proc

    def _wait_port(self, name: str, port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DemoError(f"{name} exited with status {proc.returncode}; its log: {log}\n{_tail(log)}")
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise DemoError(f"{name} does not listen on 127.0.0.1:{port} after {timeout:g} s; its log: {log}")

    def run(self) -> int:
        info = self.prepare()
        py = [sys.executable, "-m", "gateway.cli"]
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop.set())
        try:
            log = self.dir / "broker" / "mosquitto.log"
            p = self._spawn("broker", [self.mosquitto, "-c", str(self.dir / "broker" / "mosquitto.conf")], log)
            self._wait_port("the broker (mosquitto)", self.broker_port, p, log)
            log = self.dir / "community.log"
            p = self._spawn("community server", [*py, "community", "--config", str(self.dir / "server.toml")], log)
            self._wait_port("the community server", self.operator_port, p, log)
            for m, join, port in self.nodes:
                log = self.dir / m.id / "demo.log"
                p = self._spawn(f"node {m.id}", [
                    *py, "demo", "--dir", str(self.dir / m.id), "--port", str(port), "--speed", f"{self.args.speed:g}",
                    "--seed", str(m.seed), "--pv-kwp", f"{m.pv_kwp:g}", "--start", self.start,
                    "--origin", self.origin.isoformat(), "--join", str(join),
                ], log)
            for (m, _, port), (name, p) in zip(self.nodes, self.children[2:], strict=True):
                self._wait_port(name, port, p, self.dir / m.id / "demo.log")
            alert = self._scripted_alert(info["token"])
            self._banner(info["token"], alert)
            return self._supervise()
        finally:
            self._stop_all()

    def _clock(self):
        from gateway.simulated_time import SimulatedTime

        return SimulatedTime(datetime.fromisoformat(self.start), self.origin, self.args.speed)

    def _scripted_alert(self, token: str) -> datetime | None:
        """Schedule the demo's reduce-now alert through the operator API, as an operator would; its
        start, or None (said on stderr) when the server refused it."""
        clock = self._clock()
        start = datetime.fromisoformat(self.start)
        at = max(_ceil_quarter(start + ALERT_AFTER), _ceil_quarter(clock.now() + ALERT_LEAD))
        api = f"http://127.0.0.1:{self.operator_port}/api/v1/operations/{OPERATION}"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = json.dumps({"kind": "reduce", "minutes": ALERT_MINUTES, "message": ALERT_MESSAGE,
                           "start": at.isoformat()}).encode()
        try:
            # run again in the same directory: the meters go on before the last run's alert, still
            # ahead on their clock; announce that one rather than raise a second beside it
            with urllib.request.urlopen(urllib.request.Request(f"{api}/alerts", headers=headers), timeout=15) as resp:
                ahead = [datetime.fromisoformat(a["start"]) for a in json.loads(resp.read())["alerts"]
                         if a["status"] in ("scheduled", "active") and a["message"] == ALERT_MESSAGE]
            if ahead:
                return min(ahead)
            with urllib.request.urlopen(urllib.request.Request(f"{api}/alert", data=body, method="PUT", headers=headers),
                                        timeout=15) as resp:
                resp.read()
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            detail = exc.read().decode(errors="replace")[:200] if isinstance(exc, urllib.error.HTTPError) else str(exc)
            print(f"quartier community demo: the scripted alert was not raised: {detail}", file=sys.stderr)
            return None
        return at

    def _banner(self, token: str, alert: datetime | None = None) -> None:
        qh_s = 900 / self.args.speed
        rows = "\n".join(f"  {m.id:<9} {m.what:<34} http://127.0.0.1:{port}/" for m, _, port in self.nodes)
        if alert is not None:
            in_s = max(0.0, (alert - self._clock().now()).total_seconds() / self.args.speed)
            local = alert.astimezone(datetime.fromisoformat(self.start).tzinfo)
            rows += (f"\n  scripted alert  the community asks every home to reduce at {local:%H:%M} simulated time, "
                     f"in about {in_s:.0f} s,\n                  for {ALERT_MINUTES} simulated minutes "
                     f"({ALERT_MINUTES * 60 / self.args.speed:.0f} s): every node turns red; once it is over, its\n"
                     f"                  measured effect shows on the operator page")
        print(
            f"Quartier community demo: sharing operation {OPERATION!r} of community {COMMUNITY!r}, simulated meters\n"
            f"from {self.start} at {self.args.speed:g}x (a quarter-hour every {qh_s:.0f} s), all on this machine.\n"
            f"Each node's page shows the operation's live surplus, its consume-now signal and the member's own\n"
            f"share of every quarter-hour the community server allocated (the cabin's meter is watched, not shared):\n{rows}\n"
            f"  operator page   http://127.0.0.1:{self.operator_port}/#token={token}\n"
            f"  broker          mqtts://127.0.0.1:{self.broker_port}  (TLS, community CA {self.ca_cert})\n"
            f"  logs            {self.dir}/community.log, {self.dir}/<member>/demo.log, {self.dir}/broker/mosquitto.log\n"
            f"Stop with Ctrl-C.",
            flush=True,
        )

    def _supervise(self) -> int:
        end = None if self.args.duration is None else time.monotonic() + self.args.duration
        while not self.stop.wait(0.5):
            if end is not None and time.monotonic() >= end:
                return 0
            for name, proc in self.children:
                if proc.poll() is not None:
                    print(f"quartier community demo: {name} stopped (status {proc.returncode}); stopping the others",
                          file=sys.stderr)
                    return 1
        return 0

    def _stop_all(self) -> None:
        # nodes first (their daemons flush the running quarter-hour), then the server, then the broker
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


# Example prices: the Aubange report's figures (design.md, field facts). The shared-energy price is 0.00
# EUR/kWh excl. VAT the first year and 0.02 the next (decided now, it applies from the next billing
# period); the community collects about 4.94 c/kWh excl. VAT of levies for a residential customer,
# split here into its two named parts (the split is ours); VAT 21 %; one billing period a year; an
# annual advance of 30 EUR. Suppliers' sharing fees per meter and year incl. VAT: Engie 121, Eneco 74.20.
SUPPLIERS = {"soleil": ("0.15", "121.00"), "voisin": ("0.15", "74.20"), "atelier": ("0.15", None), "ecole": ("0.15", None)}


def community_toml(members: tuple[DemoMember, ...] | list[DemoMember], start: datetime) -> str:
    """The demo's community file: its members, and example prices and settlement terms."""
    year = start.year
    lines = [f'[community]\nid = "{COMMUNITY}"\nname = "Communauté d\'énergie de la rue du Moulin (demo)"\n'
             'address = "Rue du Moulin 1, 6790 Aubange"\ncompany_number = "BE 0000.000.000 (demo)"\n',
             f'[[operations]]\nid = "{OPERATION}"\nname = "Rue du Moulin"\npreset = "prorata"\n',
             f"[operations.billing]\nperiod_months = 12\nfirst_period_start = {year}-01-01\n"
             'price_changes = "next_period"\n']
    for valid_from, shared in ((f"{year}-01-01", "0.00"), (f"{year}-06-01", "0.02")):
        lines.append(f'[[operations.prices]]\nvalid_from = {valid_from}\nshared_eur_kwh = {shared}\n'
                     'producer_eur_kwh = 0.00\nvat = 0.21\n'
                     'levies = [{name = "excise", eur_kwh = 0.0475}, {name = "energy contribution", eur_kwh = 0.0019}]\n')
    for m in members:
        line = f'[[operations.members]]\nid = "{m.id}"\nname = "{m.what}"\nrole = "{m.role}"\nmeter = "{m.ean}"\n'
        if m.role == "observer":  # watched, not a member: nothing to settle
            lines.append(line)
            continue
        price, fee = SUPPLIERS.get(m.id, ("0.15", None))
        line += f"supplier_energy_eur_kwh = {price}\n"
        if fee is not None:
            line += f"supplier_sharing_fee_eur_year = {fee}\n"
        line += f'advances = [{{date = {start.date().isoformat()}, eur = 30}}]\n'
        lines.append(line)
    return "# written by `quartier community demo`\n" + "\n".join(lines)


DEMO_RUN_S = 30 * 86400  # how long a demo may run with its simulated figures still accepted


def _demo_max_age_s(start: datetime) -> float:
    """The server's ``max_age_s`` for simulated meters starting at ``start`` (maybe long ago)."""
    return max(40 * 86400.0, time.time() - start.timestamp() + 2 * 86400)


def _demo_tolerance_s(start: datetime, speed: float) -> float:
    """The server's ``future_tolerance_s``: the simulated clock gains ``speed - 1`` seconds every
    second, from wherever ``start`` put it."""
    return max(0.0, start.timestamp() - time.time()) + speed * DEMO_RUN_S + 900


def _ceil_quarter(t: datetime) -> datetime:
    """The first quarter-hour boundary at or after ``t``."""
    down = t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)
    return down if down == t else down + timedelta(minutes=15)


def _store_end(path: Path) -> datetime | None:
    """The end of the newest quarter-hour in a node's store (read-only), if there is one."""
    import sqlite3
    from datetime import timezone

    if not path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            (last,) = db.execute("SELECT max(start) FROM quarter_hours").fetchone()
    except sqlite3.Error:
        return None
    return None if last is None else datetime.fromtimestamp(last + 900, timezone.utc)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

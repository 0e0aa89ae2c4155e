"""``quartier community``: run the community server; ``provision`` a gateway; ``reconcile`` a month;
``sheets``: every member's monthly sheet as PDF, for members without a Pi or a screen.

    quartier community --config community-server.toml
    quartier community check --config community-server.toml    # what the server would refuse, then exit
    quartier community provision --config community-server.toml --broker-dir /etc/quartier/broker \\
        --member alice --out ./alice            # credentials + config files for a new gateway
    quartier community provision --config ... --broker-dir ... --init-broker broker.example.org
    quartier community reconcile --config ... --operation op1 --file grid-2026-05.csv [--mapping generic]
    quartier community statement --config ... --operation op1 --period 2026-05 --format json|csv|pdf
    quartier community sheets --config ... --operation op1 --month 2026-05 --out ./sheets [--language fr]

Handlers import their modules lazily; user errors are one line on stderr and exit status 2, a wrong
configuration or community file exit status 78 (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

USER_ERROR = 2


def _fail(message: str) -> int:
    print(f"quartier community: {message}", file=sys.stderr)
    return USER_ERROR


def _config_fail(message: str) -> int:
    """A setting the server cannot run with: 78 (EX_CONFIG), which a unit does not restart on."""
    from gateway.cli import EX_CONFIG

    _fail(message)
    return EX_CONFIG


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("community", help="the community server (fleet sync, allocation, operator API)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="community-server TOML file")
    common.add_argument("--secrets", default=argparse.SUPPRESS, help="secrets file (default: secrets_file in the config)")
    p.add_argument("--config", help="community-server TOML file")
    p.add_argument("--secrets", help="secrets file (default: secrets_file in the config)")
    p.set_defaults(func=_run)
    sub = p.add_subparsers(dest="community_command")
    pp = sub.add_parser("provision", parents=[common], help="credentials and a config file for a new gateway")
    pp.add_argument("--broker-dir", required=True, type=Path, help="the broker's security files (CA, passwd, acl)")
    pp.add_argument("--member", action="append", default=[], help="member id from the community file (repeatable)")
    pp.add_argument("--out", type=Path, default=Path("."), help="where the gateway files go")
    pp.add_argument("--init-broker", metavar="HOST[,HOST...]",
                    help="first run: create the community CA, the broker certificate for HOST and the server's user")
    pp.add_argument("--server-user", action="append", default=[], metavar="NAME",
                    help="add a community-server user (repeatable): each server process, each shard, needs its "
                         "own, since the broker ties client ids to usernames; its password goes to "
                         "BROKER_DIR/NAME-secrets.toml")
    pp.set_defaults(func=_provision)
    pc = sub.add_parser("check", parents=[common],
                        help="check the configuration, its secrets and the community file, then exit (78 if wrong)")
    pc.set_defaults(func=_check)
    from demo.community import register as register_demo  # demo tooling: only its arguments here

    register_demo(sub)
    ps = sub.add_parser("sheets", parents=[common], help="print every member's monthly sheet (PDF) from the server's figures")
    ps.add_argument("--operation", required=True)
    ps.add_argument("--month", required=True, help="YYYY-MM")
    ps.add_argument("--out", required=True, type=Path, help="directory for one PDF per member and one with them all")
    ps.add_argument("--language", choices=("fr", "nl", "en"), default="fr",
                    help="for members without a language in the community file (default: fr)")
    ps.add_argument("--html", action="store_true", help="write HTML instead of PDF (no Chromium needed)")
    ps.set_defaults(func=_sheets)

    pr = sub.add_parser("reconcile", parents=[common], help="import the grid operator's monthly allocation file")
    pr.add_argument("--operation")
    pr.add_argument("--file", type=Path, help="CSV file from the grid operator")
    pr.add_argument("--inspect", type=Path, metavar="FILE",
                    help="show a grid operator's CSV (columns, first rows) and propose the mapping for the config")
    pr.add_argument("--mapping", default="generic",
                    help="column mapping: [reconcile.mappings.NAME] in the config, else a preset "
                         "(services/community/reconcile.py)")
    pr.set_defaults(func=_reconcile)
    from services.community.statement_cli import register as register_statement

    register_statement(sub, common)


def _load(args: argparse.Namespace):
    from services.allocation.errors import AllocationInputError
    from services.allocation.model import load_community
    from services.community.config import ConfigError, load_server_config

    if not getattr(args, "config", None):
        raise SystemExit(_fail("--config FILE is required (the community-server TOML file)"))
    try:
        cfg = load_server_config(args.config, getattr(args, "secrets", None))
        community = load_community(cfg.server.community_file)
    except (ConfigError, AllocationInputError) as exc:  # the server's config or its community file
        raise SystemExit(_config_fail(str(exc))) from None
    except OSError as exc:
        raise SystemExit(_fail(f"{exc.strerror or exc}: {exc.filename}")) from None
    return cfg, community


def _checked(args: argparse.Namespace):
    """The configuration, the community file and this process's roster, or SystemExit(78) naming what
    is wrong: what the server refuses to start with, ``quartier community check`` says beforehand."""
    cfg, community = _load(args)
    from services.community.roster import Roster

    try:
        only = cfg.server.operation_ids(community.id, [op.id for op in community.operations])
        roster = Roster.build(community, cfg.server.pseudonym_secret.get_secret_value(), only,
                              default_max_power_w=cfg.server.default_max_power_w)
    except ValueError as exc:
        raise SystemExit(_config_fail(f"server.{exc}")) from None
    if only == []:
        raise SystemExit(_config_fail(f"server.shard = {cfg.server.shard!r}: this share of the community's "
                                      f"{len(community.operations)} operation(s) is empty; run fewer server processes"))
    tokens = [t.get_secret_value() for t in cfg.api.tokens]
    if cfg.api.enabled and not tokens:
        raise SystemExit(_config_fail("api.tokens: at least one operator token in the secrets file (or api.enabled = false)"))
    return cfg, community, only, roster, tokens


def _check(args: argparse.Namespace) -> int:
    """``quartier community check``: the install script runs it before switching to a new release."""
    cfg, community, only, _roster, _tokens = _checked(args)
    ops = [op for op in community.operations if only is None or op.id in only]
    members = {m.id for op in ops for m in op.members}
    print(f"{args.config}: OK (community {community.id}, {len(ops)} operation(s) served by this process, "
          f"{len(members)} member(s), broker {cfg.broker.host}:{cfg.broker.port})")
    return 0


def _operation(community, name: str | None, fail=_fail):
    """The operation ``--operation`` names (or the file's only one), else SystemExit(2) with one line
    (``fail``: the command's own way of saying it)."""
    from services.allocation.errors import AllocationInputError

    try:
        return community.operation(name)
    except AllocationInputError as exc:
        raise SystemExit(fail(f"--operation: {exc.reason}")) from None


def _run(args: argparse.Namespace) -> int:
    cfg, community, only, roster, tokens = _checked(args)
    from services.community.admission import Limits
    from services.community.api import create_app
    from services.community.ledger import Ledger
    from services.community.roster import Roster
    from services.community.server import BrokerLink, CommunityServer
    b = cfg.broker
    # one persistent session per process: shards started from one configuration must not take over
    # each other's session (the broker would disconnect the older one, back and forth)
    client_id = b.client_id if not cfg.server.shard else f"{b.client_id}-{cfg.server.shard.replace('/', 'of')}"
    if b.username:
        # the broker replaces any client id with the username (use_username_as_clientid): say so, so
        # that the session the server asks to resume is the one the broker keeps
        client_id = b.username
    ledger = Ledger(cfg.server.database)
    influx = None
    if cfg.influx.enabled:
        influx = {"url": cfg.influx.url, "token": cfg.influx.token.get_secret_value(), "org": cfg.influx.org,
                  "bucket": cfg.influx.bucket, "measurement": cfg.influx.measurement}
    from services.community.reload import CommunityFileWatcher

    def build(c: object) -> Roster:
        return Roster.build(c, cfg.server.pseudonym_secret.get_secret_value(), only,  # type: ignore[arg-type]
                            default_max_power_w=cfg.server.default_max_power_w)

    # joining or leaving is a file edit: the ticker sees the new file (or SIGHUP asks for it)
    watcher = CommunityFileWatcher(cfg.server.community_file, build)
    meter_clock = None
    if cfg.server.meter_clock is not None:  # the demo's simulated meters: alert windows on their time
        from gateway.simulated_time import SimulatedTime

        mc = cfg.server.meter_clock
        meter_clock = SimulatedTime(mc.start, mc.origin, mc.speed).clock()
    server = CommunityServer(
        roster, ledger,
        BrokerLink(b.host, b.port, b.username, b.password.get_secret_value() or None,
                   str(b.ca_file) if b.ca_file else None, client_id, session_expiry_s=b.session_expiry_s),
        deadline_s=cfg.server.deadline_s, totals_interval_s=cfg.server.totals_interval_s,
        live_stale_s=cfg.server.live_stale_s, share_group=cfg.server.share_group, influx=influx,
        limits=Limits(max_age_s=cfg.server.max_age_s, future_tolerance_s=cfg.server.future_tolerance_s,
                      default_max_power_w=cfg.server.default_max_power_w),
        reloader=watcher, meter_clock=meter_clock,
    )
    import signal as _signal

    _signal.signal(_signal.SIGHUP, lambda *_: watcher.request())
    server.start()
    _watchdog(server)
    try:
        if cfg.api.enabled:
            import signal

            import uvicorn

            config = uvicorn.Config(create_app(roster, ledger, tokens, server, community), host=cfg.api.host,
                                    port=cfg.api.port, log_config=None, access_log=False, lifespan="off")
            uv = uvicorn.Server(config)
            # uvicorn re-raises SIGTERM after its graceful shutdown: make that a clean exit (status 0)
            signal.signal(signal.SIGTERM, _exit_cleanly)
            uv.run()
        else:
            import signal
            import threading

            done = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: done.set())
            signal.signal(signal.SIGINT, lambda *_: done.set())
            done.wait()
    finally:
        server.stop()
        ledger.close()
    return 0


def _watchdog(server: object) -> None:
    """systemd (Type=notify): READY once started, then WATCHDOG=1 only while the server's health holds
    (network loop, worker and ticker alive), so a process that lost them is restarted."""
    import threading

    from gateway import systemd

    systemd.notify("READY=1\nSTATUS=community server running")
    period = systemd.watchdog_interval_s()
    if period is None:
        return

    def feed() -> None:
        import time

        from gateway.logs import get_logger

        log = get_logger("quartier.community.server")
        while True:
            time.sleep(period)
            h = server.health()  # type: ignore[attr-defined]
            if h["ok"]:
                systemd.notify("WATCHDOG=1\nSTATUS=" + ("connected" if h["connected"] else "broker unreachable"))
            else:
                log.error("community.unhealthy", extra={"threads": h["threads"]})
                systemd.notify("STATUS=unhealthy: " + ", ".join(k for k, v in h["threads"].items() if not v))

    threading.Thread(target=feed, name="community-watchdog", daemon=True).start()


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _provision(args: argparse.Namespace) -> int:
    cfg, community = _load(args)
    from services.community import broker
    from gateway.wire import pseudonym

    secret = cfg.server.pseudonym_secret.get_secret_value()
    bdir = broker.BrokerDir(args.broker_dir)
    try:
        if args.init_broker:
            broker.make_ca(bdir, community.id)
            broker.issue_server_cert(bdir, [h.strip() for h in args.init_broker.split(",") if h.strip()])
            user = cfg.broker.username or "community-server"
            password = broker.add_server_user(bdir, community.id, user)
            from services.community.provision import write_secret

            write_secret(bdir.root / "server-secrets.toml", f'[broker]\npassword = "{password}"\n')
            bdir.conf.write_text(broker.conf_text(bdir, port=cfg.broker.port))
            print(f"broker files in {bdir.root}; server user {user!r}, its password in {bdir.root / 'server-secrets.toml'}")
        if not bdir.ca_cert.exists():
            return _fail(f"{bdir.ca_cert} missing: run provision with --init-broker HOST first")
        for user in args.server_user:
            from services.community.provision import write_secret

            password = broker.add_server_user(bdir, community.id, user)
            write_secret(bdir.root / f"{user}-secrets.toml", f'[broker]\npassword = "{password}"\n')
            print(f"server user {user!r}, its password in {bdir.root / (user + '-secrets.toml')}")
        by_member = {m.id: (op.id, m.meter) for op in community.operations for m in op.members}
        todo = {}
        for member in args.member:
            if member not in by_member:
                return _fail(f"--member {member}: not in {cfg.server.community_file}")
            op, meter = by_member[member]
            if meter is None:
                return _fail(f"--member {member}: has no meter (EAN) in the community file")
            todo[pseudonym(meter, secret)] = (member, op, meter)
        passwords = broker.add_gateways(bdir, community.id, {p: v[1] for p, v in todo.items()})
    except broker.BrokerSetupError as exc:
        return _fail(str(exc))
    from services.community.provision import GatewayFiles, write_gateway_files

    for p, (member, op, meter) in todo.items():
        out = write_gateway_files(args.out / member, GatewayFiles(
            member=member, community=community.id, operation=op, pseudonym=p, meter=meter,
            host=cfg.broker.host, port=cfg.broker.port, password=passwords[p]), bdir.ca_cert)
        print(json.dumps({"member": member, "operation": op, "pseudonym": p, "files": str(out)}))
    if todo:
        print("reload the broker to let them in: systemctl reload mosquitto (or kill -HUP its pid)")
    return 0


from typing import TYPE_CHECKING  # for the annotations of the reconcile helpers below

if TYPE_CHECKING:
    from services.community.config import ServerConfig
    from services.community.ledger import Ledger


def _inspect(path: Path) -> int:
    from services.community.reconcile_inspect import inspect

    try:
        found = inspect(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeError) as exc:
        return _fail(f"--inspect {path}: {exc}")
    print(f"{path}: separator {found['delimiter']!r}, {len(found['columns'])} columns")
    print("columns: " + " | ".join(found["columns"]))
    for row in found["rows"]:
        print("  " + " | ".join(row))
    print("\nproposed mapping (check it, paste it into the server's config, then reconcile --mapping mine):\n")
    print(found["toml"])


def _sheets(args: argparse.Namespace) -> int:
    """``quartier community sheets``: services/community/sheets.py."""
    from gateway.dates import DateInputError, parse_month
    from services.community.ledger import Ledger
    from services.community.sheets import member_sheets, write_sheets
    from services.pdf import PdfError

    try:
        parse_month(args.month, "--month")
    except DateInputError as exc:
        return _fail(str(exc))
    cfg, community = _load(args)
    op = _operation(community, args.operation)
    if not cfg.server.database.exists():
        return _fail(f"{cfg.server.database}: no ledger (has the server run?)")
    ledger = Ledger(cfg.server.database)
    try:
        sheets = member_sheets(ledger, op, args.month, community=getattr(community, "name", None) or community.id,
                               default_lang=args.language)
    finally:
        ledger.close()
    try:
        paths = write_sheets(sheets, args.out, f"{op.id}-{args.month}", pdf=not args.html)
    except PdfError as exc:  # Chromium missing or failing
        return _fail(str(exc))
    for s, path in zip(sheets, paths, strict=False):
        print(json.dumps({"member": s.member, "language": s.lang, "binding": s.binding, "file": str(path)}))
    if paths:
        print(json.dumps({"all": str(paths[-1]), "members": len(sheets)}))
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    if getattr(args, "inspect", None) is not None:
        return _inspect(args.inspect)  # needs no config: a community starts from its own file
    if not args.operation or not args.file:
        return _fail("reconcile: --operation and --file are required (or --inspect FILE)")
    cfg, community = _load(args)
    from services.community.ledger import Ledger
    from services.community.reconcile import (
        MAPPINGS,
        ReconcileError,
        differences,
        parse_grid_file,
        to_members,
    )

    available = {**MAPPINGS, **cfg.reconcile.resolved()}  # the config's own mappings first
    mapping = available.get(args.mapping)
    if mapping is None:
        mine = sorted(cfg.reconcile.mappings)
        return _fail(f"--mapping {args.mapping}: unknown (config: {', '.join(mine) or 'none'}; "
                     f"presets: {', '.join(sorted(MAPPINGS))})")
    op = _operation(community, args.operation)
    try:
        rows = parse_grid_file(args.file.read_text(encoding="utf-8-sig"), mapping)
    except (OSError, UnicodeError) as exc:
        return _fail(f"--file {args.file}: {exc}")
    except ReconcileError as exc:
        return _fail(f"{args.file} (mapping {args.mapping}): {exc}")
    if not rows:
        return _fail(f"{args.file}: no rows (mapping {args.mapping})")
    meters = {m.meter: m.id for m in op.members if m.meter}
    known, unknown = to_members(rows, meters)
    ledger = Ledger(cfg.server.database)
    try:
        ledger.import_grid(op.id, known, args.file.name)
        first = min(r.start for r in rows)
        last = max(r.stop for r in rows)
        report = differences(ledger.allocation_totals(op.id, first, last))
        pushed = _push_binding(cfg, ledger) if cfg.influx.enabled else None
    finally:
        ledger.close()
    out: dict[str, object] = {"operation": op.id, "file": args.file.name, "mapping": args.mapping, "rows": len(known),
                              "unknown_eans": unknown, "from": first.isoformat(), "to": last.isoformat(),
                              "members": report}
    if pushed is not None:
        out["central_store"] = pushed
        if pushed.get("error"):
            print(f"quartier community: reconcile: imported, but the central store refused the binding figures "
                  f"({pushed['error']}); the server's pusher or the next run retries", file=sys.stderr)
    print(json.dumps(out, indent=1))
    return 0


def _push_binding(cfg: ServerConfig, ledger: Ledger) -> dict[str, object]:
    """Write the ledger's unpushed binding figures to the central store now (the server's pusher does the
    same when it runs: whoever comes first marks them pushed)."""
    from gateway.sinks.influx import load_influxdb_client
    from services.community.reconcile import push_binding

    mod = load_influxdb_client()
    from influxdb_client.client.write_api import SYNCHRONOUS

    i = cfg.influx
    client = mod.InfluxDBClient(url=i.url, token=i.token.get_secret_value(), org=i.org, timeout=10_000, retries=False)
    try:
        api = client.write_api(write_options=SYNCHRONOUS)

        def write(lines: str) -> None:
            api.write(bucket=i.bucket, org=i.org, record=lines, write_precision=mod.WritePrecision.S)

        try:
            return {"pushed": push_binding(ledger, write, i.measurement), "measurement": f"{i.measurement}_binding"}
        except Exception as exc:  # network or server: the rows stay unpushed
            return {"pushed": 0, "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        client.close()

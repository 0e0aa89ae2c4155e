"""``quartier community``: run the community server; ``provision`` a gateway; ``reconcile`` a month.

    quartier community --config community-server.toml
    quartier community provision --config community-server.toml --broker-dir /etc/quartier/broker \\
        --member alice --out ./alice            # credentials + config files for a new gateway
    quartier community provision --config ... --broker-dir ... --init-broker broker.example.org
    quartier community reconcile --config ... --operation op1 --file grid-2026-05.csv [--mapping generic]

Handlers import their modules lazily; user errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

USER_ERROR = 2


def _fail(message: str) -> int:
    print(f"quartier community: {message}", file=sys.stderr)
    return USER_ERROR


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
    pp.set_defaults(func=_provision)
    pr = sub.add_parser("reconcile", parents=[common], help="import the grid operator's monthly allocation file")
    pr.add_argument("--operation", required=True)
    pr.add_argument("--file", required=True, type=Path, help="CSV file from the grid operator")
    pr.add_argument("--mapping", default="generic", help="column mapping (services/community/reconcile.py)")
    pr.set_defaults(func=_reconcile)


def _load(args: argparse.Namespace):
    from services.allocation.errors import AllocationInputError
    from services.allocation.model import load_community
    from services.community.config import ConfigError, load_server_config

    if not getattr(args, "config", None):
        raise SystemExit("quartier community: --config FILE is required (the community-server TOML file)")
    try:
        cfg = load_server_config(args.config, getattr(args, "secrets", None))
        community = load_community(cfg.server.community_file)
    except (ConfigError, AllocationInputError) as exc:
        raise SystemExit(f"quartier community: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"quartier community: {exc.strerror or exc}: {exc.filename}") from None
    return cfg, community


def _run(args: argparse.Namespace) -> int:
    cfg, community = _load(args)
    from services.community.api import create_app
    from services.community.ledger import Ledger
    from services.community.roster import Roster
    from services.community.server import BrokerLink, CommunityServer

    try:
        roster = Roster.build(community, cfg.server.pseudonym_secret.get_secret_value(), cfg.server.operations or None)
    except ValueError as exc:
        return _fail(f"server.{exc}")
    tokens = [t.get_secret_value() for t in cfg.api.tokens]
    if cfg.api.enabled and not tokens:
        return _fail("api.tokens: at least one operator token in the secrets file (or api.enabled = false)")
    b = cfg.broker
    ledger = Ledger(cfg.server.database)
    influx = None
    if cfg.influx.enabled:
        influx = {"url": cfg.influx.url, "token": cfg.influx.token.get_secret_value(), "org": cfg.influx.org,
                  "bucket": cfg.influx.bucket, "measurement": cfg.influx.measurement}
    server = CommunityServer(
        roster, ledger,
        BrokerLink(b.host, b.port, b.username, b.password.get_secret_value() or None,
                   str(b.ca_file) if b.ca_file else None, b.client_id),
        deadline_s=cfg.server.deadline_s, totals_interval_s=cfg.server.totals_interval_s,
        live_stale_s=cfg.server.live_stale_s, share_group=cfg.server.share_group, influx=influx,
    )
    server.start()
    try:
        if cfg.api.enabled:
            import signal

            import uvicorn

            config = uvicorn.Config(create_app(roster, ledger, tokens, server), host=cfg.api.host,
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


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _provision(args: argparse.Namespace) -> int:
    cfg, community = _load(args)
    from services.community import broker
    from services.community.wire import pseudonym

    secret = cfg.server.pseudonym_secret.get_secret_value()
    bdir = broker.BrokerDir(args.broker_dir)
    try:
        if args.init_broker:
            broker.make_ca(bdir, community.id)
            broker.issue_server_cert(bdir, [h.strip() for h in args.init_broker.split(",") if h.strip()])
            user = cfg.broker.username or "community-server"
            password = broker.add_server_user(bdir, community.id, user)
            _write_secret(bdir.root / "server-secrets.toml", f'[broker]\npassword = "{password}"\n')
            bdir.conf.write_text(broker.conf_text(bdir, port=cfg.broker.port))
            print(f"broker files in {bdir.root}; server user {user!r}, its password in {bdir.root / 'server-secrets.toml'}")
        if not bdir.ca_cert.exists():
            return _fail(f"{bdir.ca_cert} missing: run provision with --init-broker HOST first")
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
    for p, (member, op, meter) in todo.items():
        out = args.out / member
        out.mkdir(parents=True, exist_ok=True)
        (out / "community-ca.crt").write_bytes(bdir.ca_cert.read_bytes())
        (out / "uplink.toml").write_text(
            f"# add to /etc/quartier/quartier.toml: the community uplink of member {member}\n"
            f"[uplink]\nenabled = true\nhost = \"{cfg.broker.host}\"\nport = {cfg.broker.port}\n"
            f"ca_file = \"/etc/quartier/community-ca.crt\"\ncommunity = \"{community.id}\"\noperation = \"{op}\"\n"
            f"pseudonym = \"{p}\"\nmeter_id = \"{meter}\"\n")
        _write_secret(out / "uplink-secrets.toml",
                      f"# add to the gateway's secrets file (mode 0600)\n[uplink]\npassword = \"{passwords[p]}\"\n")
        print(json.dumps({"member": member, "operation": op, "pseudonym": p, "files": str(out)}))
    if todo:
        print("reload the broker to let them in: systemctl reload mosquitto (or kill -HUP its pid)")
    return 0


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _reconcile(args: argparse.Namespace) -> int:
    cfg, community = _load(args)
    from services.community.ledger import Ledger
    from services.community.reconcile import (
        MAPPINGS,
        ReconcileError,
        differences,
        parse_grid_file,
        to_members,
    )

    mapping = MAPPINGS.get(args.mapping)
    if mapping is None:
        return _fail(f"--mapping {args.mapping}: unknown (have: {', '.join(sorted(MAPPINGS))})")
    from services.allocation.errors import AllocationInputError

    try:
        op = community.operation(args.operation)
    except AllocationInputError as exc:
        return _fail(f"--operation: {exc}")
    try:
        rows = parse_grid_file(args.file.read_text(encoding="utf-8-sig"), mapping)
    except (OSError, UnicodeError) as exc:
        return _fail(f"--file {args.file}: {exc}")
    except ReconcileError as exc:
        return _fail(f"{args.file}: {exc}")
    if not rows:
        return _fail(f"{args.file}: no rows")
    meters = {m.meter: m.id for m in op.members if m.meter}
    known, unknown = to_members(rows, meters)
    ledger = Ledger(cfg.server.database)
    try:
        ledger.import_grid(op.id, known, args.file.name)
        first = min(r.start for r in rows)
        last = max(r.start for r in rows)
        from datetime import timedelta

        report = differences(ledger.allocation_totals(op.id, first, last + timedelta(minutes=15)))
    finally:
        ledger.close()
    print(json.dumps({"operation": op.id, "file": args.file.name, "rows": len(known), "unknown_eans": unknown,
                      "from": first.isoformat(), "to": last.isoformat(), "members": report}, indent=1))
    return 0

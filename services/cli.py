"""Subcommands of the ``services`` package: ``quartier allocate``, ``quartier simulate``, ``quartier web``.

``register`` only declares arguments; each handler imports what it needs (numpy, the engine,
matplotlib for a chart) when it runs. Input errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from gateway.cli import EX_CONFIG
from gateway.logs import get_logger

if TYPE_CHECKING:
    from services.allocation import Operation
    from services.community.simulate import MeterData

USER_ERROR = 2
log = get_logger("quartier.services")


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_allocate(subparsers)
    _register_simulate(subparsers)
    _register_web(subparsers)
    # `community` (the community server's commands) is services/community/cli.py's, registered by gateway.cli


def _fail(command: str, message: str) -> int:
    print(f"quartier {command}: {message}", file=sys.stderr)
    return USER_ERROR


# --- allocate ----------------------------------------------------------------------------------


def _register_allocate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "allocate",
        help="allocate shared energy per quarter-hour (JSON in, JSON out)",
        description="Allocate each quarter-hour's pooled injection among the participants. Reads the JSON request "
        "(rounds or preset, shares, quarter_hours) from FILE or stdin and writes the allocation as JSON to stdout. "
        "See services/allocation/README.md for the contract.",
    )
    p.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="request file, '-' for stdin (default)")
    p.add_argument("--pretty", action="store_true", help="indent the JSON output")
    p.set_defaults(func=_allocate)


def _allocate(args: argparse.Namespace) -> int:
    import json

    from services.allocation import AllocationInputError, handle_request

    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        return _fail("allocate", f"cannot read {args.file}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        return _fail("allocate", f"{args.file}: not UTF-8 text")
    try:
        request = json.loads(text)
    except json.JSONDecodeError as exc:
        return _fail("allocate", f"input is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    try:
        response = handle_request(request)
    except AllocationInputError as exc:
        return _fail("allocate", str(exc))
    json.dump(response, sys.stdout, indent=2 if args.pretty else None, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


# --- simulate ----------------------------------------------------------------------------------


def _register_simulate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="compare allocation keys over a year of quarter-hour data (sizing simulation)",
        description="Run several allocation keys over quarter-hour data (one CSV column per member) and compare "
        "monthly and whole-period sharing rate and self-sufficiency, for the operation and each member. Prints a "
        "table; --csv and --chart write the figures and a PNG for a community meeting.",
    )
    p.add_argument("--operation", metavar="FILE", help="community TOML file with the operation and its members")
    p.add_argument("--op", metavar="ID", help="which operation of the file (when it has several)")
    p.add_argument("--data", metavar="FILE.csv", help="quarter-hour data, one column per member")
    p.add_argument("--unit", choices=("Wh", "kWh"), default="Wh", help="unit of the data file (default Wh)")
    p.add_argument(
        "--keys",
        nargs="+",
        metavar="KEY",
        help="keys to compare: preset names (fixed-equal, fixed-specific, prorata, cascade, hybrid, aubange) or keys "
        "joined by commas (equal,prorata); default: the operation's key and every preset",
    )
    p.add_argument("--csv", metavar="FILE", help="write every figure as CSV ('-' for stdout instead of the table)")
    p.add_argument("--chart", metavar="FILE.png", help="write a chart (needs matplotlib: the 'charts' extra)")
    p.add_argument("--member-months", action="store_true", help="also print each member's self-sufficiency per month")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar on stderr")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    p.add_argument(
        "--generate-example",
        metavar="DIR",
        help="write the example 20-member operation (operation.toml) and a generated year of data (year.csv) to DIR",
    )
    p.add_argument("--seed", type=int, default=2025, help="random seed of --generate-example (default 2025)")
    p.add_argument(
        "--flexible",
        action="store_true",
        help="instead of comparing keys: what following the consume-now signal is worth — the members' flexible "
        "loads (the operation file's 'flexible' member setting) at their usual time (the data as it is) and moved by "
        "the signal, allocated with the operation's key; --chart then draws this comparison",
    )
    p.add_argument("--price", type=float, metavar="EUR_KWH",
                   help="with --flexible: the value of one more shared kWh (grid energy price minus the community's "
                   "shared price); default from the operation's prices, else 0.15 - 0.08")
    p.add_argument("--grid-price", type=float, metavar="EUR_KWH",
                   help="with --flexible: grid energy price for members without supplier_energy_eur_kwh (default 0.15)")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from services.allocation import AllocationInputError, load_community, parse_key_spec

    if args.generate_example:
        from demo.example_year import write_example

        try:
            toml_path, csv_path = write_example(args.generate_example, seed=args.seed)
        except OSError as exc:
            return _fail("simulate", f"cannot write to {args.generate_example}: {exc.strerror or exc}")
        print(f"wrote {toml_path} and {csv_path}", file=sys.stderr)
        if not args.operation and not args.data:
            print(f"next: quartier simulate --operation {toml_path} --data {csv_path} --chart keys.png", file=sys.stderr)
            return 0
    if not args.operation or not args.data:
        return _fail("simulate", "--operation FILE and --data FILE.csv are required (or --generate-example DIR)")

    from services.community import simulate as sim

    if args.chart and not sim.charts_available():
        return _fail("simulate", sim.CHART_HINT)
    try:
        operation = load_community(args.operation).operation(args.op)
        keys = [parse_key_spec(k) for k in args.keys] if args.keys else sim.default_keys(operation)
        for label, rounds in keys:
            if "specific" in rounds and operation.shares is None:
                raise AllocationInputError("--keys", f"{label!r} uses the specific key but no member of {operation.id!r} has a share")
        data = sim.read_data(args.data, operation, unit=args.unit)
    except AllocationInputError as exc:
        return _fail("simulate", str(exc))
    except OSError as exc:
        return _fail("simulate", f"cannot read {exc.filename}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        return _fail("simulate", f"{args.data}: not UTF-8 text")

    if args.flexible:
        return _simulate_flexible(args, operation, data)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    bar = sim.ProgressBar(sys.stderr) if show else None
    try:
        result = sim.simulate(operation, data, keys, progress=bar)
    except AllocationInputError as exc:
        return _fail("simulate", str(exc))
    finally:
        if bar is not None:
            bar.close()

    if args.csv == "-":
        sim.write_csv(result, sys.stdout)
    else:
        sys.stdout.write(sim.format_report(result, member_months=args.member_months))
        if args.csv:
            try:
                with open(args.csv, "w", encoding="utf-8", newline="") as fh:
                    sim.write_csv(result, fh)
            except OSError as exc:
                return _fail("simulate", f"cannot write {args.csv}: {exc.strerror or exc}")
    if args.chart:
        try:
            sim.write_chart(result, args.chart)
        except sim.ChartUnavailable as exc:
            return _fail("simulate", str(exc))
        except OSError as exc:
            return _fail("simulate", f"cannot write {args.chart}: {exc.strerror or exc}")
    for path in (p for p in (args.csv, args.chart) if p and p != "-"):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _simulate_flexible(args: argparse.Namespace, operation: Operation, data: MeterData) -> int:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from services.allocation import AllocationInputError
    from services.community import flexible_sim as fs
    from services.community import simulate as sim

    for name in ("price", "grid_price"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 10:
            return _fail("simulate", f"--{name.replace('_', '-')} {value}: expected EUR per kWh between 0 and 10")
    if not any(m.flexible for m in operation.members):
        return _fail("simulate", f"--flexible: no member of {operation.id!r} declares flexible loads "
                     "(add flexible = [{kind = \"dishwasher\"}] to a member; see services/allocation/README.md)")
    last = datetime.fromtimestamp(int(data.epoch[-1]), ZoneInfo(operation.timezone)).date()
    prices = fs.choose_prices(operation, last, grid=args.grid_price, value=args.price)
    try:
        result = fs.worth(operation, data, prices)
    except AllocationInputError as exc:
        return _fail("simulate", str(exc))
    sys.stdout.write(fs.format_worth(result))
    if args.chart:
        try:
            fs.write_worth_chart(result, args.chart)
        except sim.ChartUnavailable as exc:
            return _fail("simulate", str(exc))
        except OSError as exc:
            return _fail("simulate", f"cannot write {args.chart}: {exc.strerror or exc}")
        print(f"wrote {args.chart}", file=sys.stderr)
    return 0


# --- web ---------------------------------------------------------------------------------------


def _register_web(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "web",
        help="run the node's web service: page, API, live stream, consume-now signal, MQTT feed",
        description="Serve the local page and the API (GET /api/v1/live, /signal, /quarter-hours, /allocation, "
        "/health, /stream; docs at /api/docs). Reads the daemon's live socket (daemon.runtime_dir/live.sock) and "
        "its SQLite store read-only, in a process of its own: it cannot disturb metering. Publishes the MQTT "
        "feed when [mqtt] enabled = true.",
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="the node's TOML configuration (as for quartier run)")
    p.add_argument("--host", help="bind address (default web.host)")
    p.add_argument("--port", type=int, help="port (default web.port)")
    p.set_defaults(func=_web)


def _web(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        _fail("web", str(exc))
        return EX_CONFIG  # the unit does not restart on it (RestartPreventExitStatus=78)
    if args.port is not None and not 0 <= args.port <= 65535:
        return _fail("web", f"--port {args.port}: not a TCP port (0-65535)")
    import socket

    host = args.host or cfg.web.host
    port = cfg.web.port if args.port is None else args.port
    try:  # a clear message now rather than uvicorn's after start-up
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
            s.bind((host, port))
    except OSError as exc:
        return _fail("web", f"cannot serve on {host}:{port}: {exc.strerror or exc} (web.host, web.port or --host/--port)")
    from services.node.web.server import serve

    # with a community uplink, the operation's live totals arrive through the daemon's live socket and
    # this member's allocations through the store: the web service needs no connection of its own
    try:
        serve(cfg, host=host, port=port)
    except OSError as exc:
        return _fail("web", f"cannot serve: {exc.strerror or exc}")
    return 0

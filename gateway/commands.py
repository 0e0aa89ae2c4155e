"""Gateway subcommands: run, replay, export, status, config."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from gateway.cli import CommandError, ConfigurationError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the gateway daemon (systemd Type=notify)")
    p.add_argument("--config", "-c", required=True, type=Path, help="TOML configuration file")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("replay", help="run a raw P1 capture through the pipeline into a store, as fast as it goes")
    p.add_argument("file", help="raw byte capture ('-' for stdin)")
    p.add_argument("--db", required=True, type=Path)
    p.add_argument("--meter-id", help="override the meter id announced in the telegrams")
    p.add_argument("--max-gap", type=float, default=300, help="seconds between readings above which quarter-hours are estimated")
    p.add_argument("--timezone", default="Europe/Brussels")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("export", help="print data from a store")
    esub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    e = esub.add_parser("quarter-hours", help="closed quarter-hours, one JSON object per line or CSV")
    e.add_argument("--db", required=True, type=Path)
    e.add_argument("--format", choices=["json", "csv"], default="json")
    e.add_argument("--meter")
    e.add_argument("--from", dest="start", help="ISO 8601, inclusive")
    e.add_argument("--to", dest="end", help="ISO 8601, exclusive")
    e.set_defaults(func=cmd_export_quarter_hours)

    p = sub.add_parser("status", help="health of a gateway: store, outbox, dead letters, live health")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", "-c", type=Path)
    g.add_argument("--db", type=Path)
    p.add_argument("--runtime-dir", type=Path, help="where the daemon writes health.json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("config", help="check or print a configuration")
    csub = p.add_subparsers(dest="what", required=True, metavar="ACTION")
    c = csub.add_parser("check", help="validate a configuration file; names each bad key")
    c.add_argument("file", type=Path)
    c.set_defaults(func=cmd_config_check)
    c = csub.add_parser("example", help="print a commented example configuration")
    c.set_defaults(func=lambda a: print(_example(), end="") or 0)


def _example() -> str:
    from gateway.config import EXAMPLE

    return EXAMPLE


def load_checked(path: Path):
    from gateway.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise ConfigurationError(str(exc)) from None


def cmd_config_check(args) -> int:
    cfg = load_checked(args.file)
    srcs = ", ".join(s.describe() for s in cfg.sources)
    print(f"{args.file}: OK (sources: {srcs}; store: {cfg.store.path}; influx: {'on' if cfg.influx.enabled else 'off'})")
    return 0


def cmd_run(args) -> int:
    from gateway.daemon import Daemon

    cfg = load_checked(args.config)
    try:
        return Daemon(cfg).run()
    except OSError as exc:
        raise CommandError(f"cannot start: {exc}") from None


def cmd_replay(args) -> int:
    import time
    from datetime import timedelta

    from gateway.pipeline import Pipeline
    from gateway.store import Store
    from p1 import Framer, parse_telegram

    t0 = time.process_time()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    store = Store(args.db, timezone=args.timezone)
    pipeline = Pipeline(store, max_gap=timedelta(seconds=args.max_gap), meter_id=args.meter_id, batch=True)
    framer = Framer()
    frames = 0
    try:
        src = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror}") from None
    with src:
        while chunk := src.read(1 << 16):
            for frame in framer.feed(chunk):
                frames += 1
                pipeline.feed_telegram(parse_telegram(frame))
    pipeline.flush()
    store.close()
    cpu = time.process_time() - t0
    summary = {
        "telegrams": frames,
        "crc_errors": sum(h.crc_errors for h in pipeline.health.values()) + pipeline.unattributed_crc_errors,
        "rejected": sum(h.rejected for h in pipeline.health.values()),
        "refused": _refused_totals(pipeline),
        "discarded_bytes": framer.discarded_bytes,
        "quarter_hours": pipeline.committed,
        "estimated": sum(a.stats.estimated for a in pipeline.aggregators.values()),
        "meters": sorted(pipeline.aggregators),
        "cpu_s": round(cpu, 3),
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0


def _refused_totals(pipeline) -> dict[str, int]:
    """Refused readings by reason over every meter (and frames no meter could be told for)."""
    from collections import Counter

    total: Counter = Counter(pipeline.unattributed)
    for h in pipeline.health.values():
        total.update(h.refused)
    return dict(sorted(total.items()))


def _parse_time(value: str | None, name: str) -> datetime | None:
    """ISO 8601 (naive = UTC), in range: one line naming the option, never a traceback."""
    from gateway.dates import DateInputError, check_instant

    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--{name} {value!r}: not an ISO 8601 date/time") from None
    try:  # 0001-01-01 or 9999-12-31 would overflow the store's UTC conversion
        return check_instant(t if t.tzinfo else t.replace(tzinfo=timezone.utc), f"--{name}")
    except DateInputError as exc:
        raise CommandError(str(exc)) from None


def _open_store(db: Path):
    from gateway.store import Store

    if not db.exists():
        raise CommandError(f"{db}: no such store (run the daemon, the demo or a replay first)")
    return Store(db)


def qh_record(qh) -> dict:
    """The export contract: one flat object per closed quarter-hour."""
    rec = {
        "meter_id": qh.meter_id,
        "start": qh.start.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
        "end": qh.end.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
        "import_wh": qh.import_wh,
        "export_wh": qh.export_wh,
        "quality": qh.quality.value,
    }
    for t, v in sorted(qh.import_by_tariff.items()):
        rec[f"import_t{t}_wh"] = v
    for t, v in sorted(qh.export_by_tariff.items()):
        rec[f"export_t{t}_wh"] = v
    if qh.flags:
        rec["flags"] = list(qh.flags)
    return rec


def cmd_export_quarter_hours(args) -> int:
    store = _open_store(args.db)
    rows = store.quarter_hours(meter_id=args.meter, start=_parse_time(args.start, "from"), end=_parse_time(args.end, "to"))
    store.close()
    out = sys.stdout
    if args.format == "json":
        for qh in rows:
            out.write(json.dumps(qh_record(qh)) + "\n")
    else:
        recs = [qh_record(qh) for qh in rows]
        fields = ["meter_id", "start", "end", "import_wh", "export_wh", "quality"]
        extra = sorted({k for r in recs for k in r if k not in fields and k != "flags"})
        w = csv.DictWriter(out, fieldnames=fields + extra + ["flags"], lineterminator="\n")
        w.writeheader()
        for r in recs:
            r["flags"] = ";".join(r.get("flags", []))
            w.writerow(r)
    return 0


def cmd_status(args) -> int:
    from gateway.health import read_health

    runtime_dir = args.runtime_dir
    health_interval_s = 5.0  # the default daemon.health_interval_s, when only --db is given
    if args.config:
        cfg = load_checked(args.config)
        db = cfg.store.path
        runtime_dir = runtime_dir or cfg.daemon.runtime_dir
        health_interval_s = cfg.daemon.health_interval_s
    else:
        db = args.db
    store = _open_store(db)
    try:
        report = {
            "store": str(db),
            "quarter_hours": store.count_quarter_hours() if hasattr(store, "count_quarter_hours") else len(store.quarter_hours()),
            "outbox_depth": store.outbox_depth(),
            "dead_letters": [_dead(d) for d in store.dead_letters()],
            "last_push": store.get_state("influx.last_push"),
            "disk": _as_dict(store.disk_status()),
        }
    finally:
        store.close()
    health = read_health(runtime_dir) if runtime_dir else None
    report["daemon"] = health
    report["daemon_state"] = daemon_state(health, health_interval_s)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
        return 0
    print(f"store          {report['store']}")
    print(f"quarter-hours  {report['quarter_hours']} closed")
    print(f"outbox         {report['outbox_depth']} waiting")
    print(f"last push      {report['last_push'] or 'never'}")
    disk = report["disk"]
    if disk.get("alarm"):
        print(f"DISK ALARM     {disk.get('message')}")
    print(f"dead letters   {len(report['dead_letters'])}")
    for d in report["dead_letters"][:20]:
        print(f"  {d}")
    if health is None:
        print("daemon         no health file (not running, or another --runtime-dir)")
    else:
        state = report["daemon_state"]
        since = state["health_age_s"] or 0.0  # the health file's ages were true when it was written

        def ago(value) -> str:
            return "never" if value is None else f"{float(value) + since:.0f} s ago"

        print(f"daemon         {state['state'].upper()}: {state['detail']}")
        print(f"last telegram  {ago(health.get('last_telegram_age_s'))}")
        print(f"clock synced   {health.get('clock_synchronised')}")
        print(f"last accepted  {ago(health.get('last_accepted_age_s'))}")
        for mid, m in health.get("meters", {}).items():
            rate = m.get("crc_error_rate")
            print(f"meter {mid}: {m['telegrams']} telegrams, {m.get('accepted', '-')} accepted, CRC errors {m['crc_errors']}"
                  f" ({'-' if rate is None else f'{rate:.2%}'}), import {m.get('import_w')} W, export {m.get('export_w')} W")
            refused = {k: v for k, v in (m.get("refused") or {}).items() if v}
            if refused:
                print(f"  refused: {', '.join(f'{k} {v}' for k, v in refused.items())}")
        for name, r in health.get("readers", {}).items():
            unattributed = {k: v for k, v in (r.get("unattributed") or {}).items() if v}
            if unattributed:
                print(f"reader {name}: refused before its meter was known: {', '.join(f'{k} {v}' for k, v in unattributed.items())}")
        for name, s in health.get("sinks", {}).items():
            print(f"sink {name}: last success {s.get('last_success') or 'never'}, last error {s.get('last_error') or 'none'}")
    return 0


def daemon_state(health: dict | None, health_interval_s: float) -> dict:
    """Running, stopped or stuck, from the health file's age and whether its process lives.

    The daemon rewrites health.json every ``health_interval_s`` and once more when it stops (with
    ``"state": "stopped"``); the file stays in /run after a stop or a crash, so its ages alone would
    show a dead daemon as live ("last telegram 0.0 s ago")."""
    from gateway.doctor.judges import HEALTH_FRESH_MIN_S
    from gateway.doctor.probes import health_age_s, pid_alive

    if health is None:
        return {"state": "stopped", "pid_alive": None, "health_age_s": None, "detail": "no health file"}
    now = datetime.now(timezone.utc)
    age = health_age_s(health, now)
    pid = health.get("pid")
    alive = pid_alive(pid)
    fresh_s = max(HEALTH_FRESH_MIN_S, 3 * health_interval_s)  # as the doctor judges it
    written = f"health file written {health.get('time')}" + (f", {age:.0f} s ago" if age is not None else "")
    if health.get("state") == "stopped" or alive is False:
        how = "stopped cleanly" if health.get("state") == "stopped" else "is gone (crashed or killed)"
        state, detail = "stopped", f"process {pid} {how}; {written}"
    elif age is not None and age <= fresh_s:
        state, detail = "running", f"process {pid}, up {health.get('uptime_s')} s; {written}"
    else:
        state, detail = "stuck", f"process {pid} is there but has not written its health file for more than {fresh_s:.0f} s; {written}"
    return {"state": state, "pid_alive": alive, "health_age_s": None if age is None else round(age, 1), "detail": detail}


def _as_dict(obj) -> dict:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    return {"value": str(obj)}


def _dead(d) -> str:
    if isinstance(d, dict):
        return ", ".join(f"{k}={v}" for k, v in d.items())
    if hasattr(d, "__dataclass_fields__"):
        from dataclasses import asdict

        return ", ".join(f"{k}={v}" for k, v in asdict(d).items() if k != "payload")
    return str(d)

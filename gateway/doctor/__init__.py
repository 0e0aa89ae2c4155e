"""``quartier doctor``: check an installation and say what to fix, in words a volunteer understands.

Each check gathers facts at the edge (a file's mode, a TCP connection, the daemon's health file) and
hands them to a pure ``judge_*`` function that returns a :class:`Finding`: ok, warn, fail or skip,
what it found, and what to do. The judges are the specification of the messages; the tests feed them
facts and also run the whole command against a running demo and against a broken setup.

Modules: ``judges`` (pure: facts in, findings out), ``probes`` (facts gathered at the edges); this
module runs them in order and is the command.

The doctor never writes to the store, never takes the serial port from a running daemon (it opens the
port only when the daemon is not running) and never needs the network beyond the configured broker,
InfluxDB and the local web service.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gateway.doctor.judges import (
    CRC_FAIL,
    CRC_MIN_TELEGRAMS,
    CRC_WARN,
    DEFAULT_CONFIG,
    HEALTH_FRESH_MIN_S,
    SERVICE_GROUP,
    TELEGRAM_OK_S,
    DiskFacts,
    Finding,
    Level,
    PortFacts,
    ProbeResult,
    Reach,
    judge_broker,
    judge_clock,
    judge_config,
    judge_crc,
    judge_crc_extension,
    judge_daemon,
    judge_disk,
    judge_influx,
    judge_port,
    judge_refused,
    judge_telegrams,
    judge_web,
)
from gateway.doctor.probes import (
    disk_facts,
    health_age_s,
    http_reach,
    influx_reach,
    mqtt_connect_packet,
    mqtt_reach,
    pid_alive,
    port_facts,
    probe_port,
)
from gateway.logs import get_logger

__all__ = [  # the judges and probes, for the tests and for other commands
    "CRC_FAIL",
    "CRC_MIN_TELEGRAMS",
    "CRC_WARN",
    "DEFAULT_CONFIG",
    "HEALTH_FRESH_MIN_S",
    "SERVICE_GROUP",
    "TELEGRAM_OK_S",
    "DiskFacts",
    "Finding",
    "Level",
    "PortFacts",
    "ProbeResult",
    "Reach",
    "judge_broker",
    "judge_clock",
    "judge_config",
    "judge_crc",
    "judge_crc_extension",
    "judge_daemon",
    "judge_disk",
    "judge_influx",
    "judge_port",
    "judge_refused",
    "judge_telegrams",
    "judge_web",
    "disk_facts",
    "health_age_s",
    "http_reach",
    "influx_reach",
    "mqtt_connect_packet",
    "mqtt_reach",
    "pid_alive",
    "port_facts",
    "probe_port",
    "cmd_doctor", "exit_status", "load_setup", "register", "render", "run_checks", "Setup",
]

log = get_logger("quartier.gateway.doctor")



# -- the whole run ---------------------------------------------------------------------------------


@dataclass
class Setup:
    """What the checks look at: from a configuration file, or the demo's directory."""

    config_path: Path | None
    config: Any | None  # gateway.config.Config
    config_error: str | None
    runtime_dir: Path | None
    demo: bool = False


def load_setup(config_path: Path | None, demo_dir: Path | None) -> Setup:
    """From a configuration file, or from a demo's directory: the configuration ``quartier demo``
    writes there (``quartier.toml``), or, for a demo without one, the demo's built-in settings."""
    from gateway.config import (
        Config,
        ConfigError,
        DaemonConfig,
        StoreConfig,
        load_config,
    )

    if demo_dir is not None:
        d = demo_dir.resolve()
        written = d / "quartier.toml"
        if written.exists():
            try:
                return Setup(written, load_config(written), None, d, demo=True)
            except ConfigError as exc:
                return Setup(written, None, str(exc), None, demo=True)
        cfg = Config(sources=[{"type": "simulated"}], store=StoreConfig(path=d / "quartier.sqlite"),
                     daemon=DaemonConfig(runtime_dir=d, health_interval_s=2))
        return Setup(None, cfg, None, d, demo=True)
    path = config_path or DEFAULT_CONFIG
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return Setup(path, None, str(exc), None)
    return Setup(path, cfg, None, cfg.daemon.runtime_dir)


def run_checks(setup: Setup, *, probe_seconds: float = 12.0, now: datetime | None = None,
               runtime_dir: Path | None = None) -> list[Finding]:
    """Every check, in the order a volunteer would look: configuration, cable, gateway, meter, ..."""
    from gateway.clock import clock_synchronised
    from gateway.health import read_health

    now = now or datetime.now(timezone.utc)
    from p1.crc import compiled as crc_compiled

    findings = [judge_config(setup.config_path, setup.config_error), judge_crc_extension(crc_compiled())]
    cfg = setup.config
    if cfg is None:
        findings.append(judge_clock(clock_synchronised(), uses_pi_clock=False))
        return findings
    rdir = runtime_dir or setup.runtime_dir
    health = read_health(rdir) if rdir is not None else None
    age = health_age_s(health, now)
    fresh_s = max(HEALTH_FRESH_MIN_S, 3 * cfg.daemon.health_interval_s)
    if health is None and rdir is not None and rdir.exists() and not os.access(rdir, os.R_OK | os.X_OK):
        findings.append(Finding("Gateway running", Level.FAIL, f"This user may not read the gateway's health file in {rdir}.",
                                "Run the doctor with sudo: sudo quartier doctor"))
        return findings
    # a daemon that stopped cleanly says so in its last health file (its pid may already be reused)
    alive = (False if health.get("state") == "stopped" else pid_alive(health.get("pid"))) if health else None
    # fresh, and its process still there (a daemon that stopped cleanly wrote a last health file)
    running = health is not None and age is not None and age <= fresh_s and alive is not False

    p1_ports = [s.port for s in cfg.sources if s.type == "p1"]
    for port in p1_ports:
        findings.append(judge_port(port_facts(port)))
    if not p1_ports and any(s.type == "simulated" for s in cfg.sources):
        findings.append(Finding("P1 cable", Level.SKIP, "Simulated meter (demo): no cable to check."))

    findings.append(judge_daemon(health, age, alive, fresh_s, demo=setup.demo))
    probe = None
    probe_port_name = p1_ports[0] if p1_ports else None
    # listen on the port only when no gateway holds it (a stuck one still does)
    if not running and not alive and probe_port_name and Path(probe_port_name).exists():
        probe = probe_port(probe_port_name, probe_seconds)
    findings.append(judge_telegrams(health, running, probe, probe_port_name))
    findings.append(judge_crc(health, running))
    findings.append(judge_refused(health, running))

    flukso = [s for s in cfg.sources if s.type == "flukso"]
    findings.append(judge_clock(clock_synchronised(), uses_pi_clock=any(s.clock == "pi" for s in flukso)))

    if cfg.mqtt.enabled:
        m = cfg.mqtt
        r = mqtt_reach(m.host, m.port, username=m.username, password=m.password.get_secret_value() or None)
        findings.append(judge_broker("Home Assistant feed", r, local=m.host in ("127.0.0.1", "localhost", "::1")))
    for s in flukso:
        r = mqtt_reach(s.host, s.port, username=s.username,
                       password=s.password.get_secret_value() if s.password else None)
        findings.append(judge_broker(f"Fluksometer {s.meter_id}", r, local=False))
    uplink = getattr(cfg, "uplink", None)
    if uplink is not None and uplink.enabled:
        r = mqtt_reach(uplink.host, uplink.port, username=uplink.pseudonym,
                       password=uplink.password.get_secret_value() or None, ca_file=uplink.ca_file)
        findings.append(judge_broker("community uplink", r, local=False, uplink=True))
    if not cfg.mqtt.enabled and not flukso and not (uplink is not None and uplink.enabled):
        findings.append(Finding("MQTT broker", Level.SKIP, "Not used (mqtt.enabled = false, no Fluksometer, no uplink)."))

    if cfg.influx.enabled:
        sink = (health or {}).get("sinks", {}).get("influx") if running else None
        findings.append(judge_influx(influx_reach(cfg.influx.url), sink, (health or {}).get("outbox_depth")))
    else:
        findings.append(Finding("InfluxDB", Level.SKIP, "Not used (influx.enabled = false): quarter-hours stay on the Pi."))

    findings.append(judge_disk(disk_facts(cfg.store.path, cfg.store.max_mb * 1024 * 1024), running=running))

    if setup.demo and setup.config_path is None:
        findings.append(judge_web(None, ""))
    else:
        everywhere = cfg.web.host in ("0.0.0.0", "::", "")
        host = "127.0.0.1" if everywhere else cfg.web.host
        # the address members type: the Pi's name on the home network when the page is open to it
        page = f"http://{socket.gethostname() + '.local' if everywhere else host}:{cfg.web.port}/"
        findings.append(judge_web(http_reach(f"http://{host}:{cfg.web.port}/api/v1/health"), page))
    return findings


def exit_status(findings: Sequence[Finding]) -> int:
    """1 when something must be fixed; warnings alone leave it 0."""
    return 1 if any(f.level is Level.FAIL for f in findings) else 0


_LABEL = {Level.OK: "OK", Level.WARN: "WARN", Level.FAIL: "FAIL", Level.SKIP: "--"}


def render(findings: Sequence[Finding], width: int = 100) -> str:
    """The report: one block per check, what to do indented under it, a summary line at the end."""
    lines = []
    for f in findings:
        lines += textwrap.wrap(f"{f.check}: {f.found}", width, initial_indent=f"{_LABEL[f.level]:<6}",
                               subsequent_indent=" " * 6, break_on_hyphens=False, break_long_words=False)
        if f.fix and f.level is not Level.OK:
            lines += textwrap.wrap("What to do: " + f.fix, width, initial_indent=" " * 6 + "-> ",
                                   subsequent_indent=" " * 9, break_on_hyphens=False, break_long_words=False)
    fails = sum(f.level is Level.FAIL for f in findings)
    warns = sum(f.level is Level.WARN for f in findings)
    if fails:
        summary = f"{fails} problem{'s' if fails > 1 else ''} to fix" + (f", {warns} warning{'s' if warns > 1 else ''}" if warns else "") + "."
    elif warns:
        summary = f"Everything needed works; {warns} warning{'s' if warns > 1 else ''}."
    else:
        summary = "Everything works."
    return "\n".join([*lines, "", summary])


# -- the command -----------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the installation and say what to fix, in plain words",
                       description="Checks the configuration, the P1 cable, the gateway, the meter's telegrams, "
                       "damaged telegrams, the clock, the MQTT broker, InfluxDB, the disk and the web page, and "
                       "says what to do about each problem. Exit status 1 when something must be fixed.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--config", "-c", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
    g.add_argument("--demo", type=Path, metavar="DIR", help="check a running `quartier demo --dir DIR` instead")
    p.add_argument("--runtime-dir", type=Path, help="where the daemon writes health.json (default daemon.runtime_dir)")
    p.add_argument("--probe-seconds", type=float, default=12.0,
                   help="how long to listen on the port when the gateway is not running (default 12)")
    p.add_argument("--json", action="store_true", help="the findings as JSON")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.probe_seconds <= 0:
        raise SystemExit("quartier doctor: --probe-seconds must be more than 0")
    if args.log_level != "DEBUG":  # the report speaks for itself; the reader's retries would clutter it
        get_logger("quartier").setLevel(logging.CRITICAL)
    setup = load_setup(args.config, args.demo)
    findings = run_checks(setup, probe_seconds=args.probe_seconds, runtime_dir=args.runtime_dir)
    if args.json:
        print(json.dumps([{**asdict(f), "level": f.level.value} for f in findings], indent=1))
    else:
        where = f"demo in {args.demo}" if args.demo else str(setup.config_path)
        print(f"Quartier doctor ({where})\n")
        # wrapped to the terminal; one line per finding when piped (grep, mail, a file)
        width = min(100, shutil.get_terminal_size((100, 24)).columns) if sys.stdout.isatty() else 100_000
        print(render(findings, width=width))
    sys.stdout.flush()
    return exit_status(findings)

"""``quartier doctor``: check an installation and say what to fix, in words a volunteer understands.

Each check gathers facts at the edge (a file's mode, a TCP connection, the daemon's health file) and
hands them to a pure ``judge_*`` function that returns a :class:`Finding`: ok, warn, fail or skip,
what it found, and what to do. The judges are the specification of the messages; the tests feed them
facts and also run the whole command against a running demo and against a broken setup.

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
import stat
import struct
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger("quartier.gateway.doctor")

DEFAULT_CONFIG = Path("/etc/quartier/quartier.toml")
SERVICE_GROUP = "dialout"  # deploy/quartier.service: SupplementaryGroups=dialout
CRC_WARN = 0.01  # above 1 % damaged telegrams: look at the cable
CRC_FAIL = 0.10  # above 10 %: quarter-hours will be estimated
CRC_MIN_TELEGRAMS = 20  # fewer than this say nothing about a rate
TELEGRAM_OK_S = 30.0  # DSMR 4 meters send every 10 s, DSMR 5 and e-MUCS every second
HEALTH_FRESH_MIN_S = 15.0  # the health file is rewritten every daemon.health_interval_s


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"  # not used in this setup, or cannot be told


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's verdict: ``found`` says what is, ``fix`` what to do about it ('' when nothing)."""

    check: str
    level: Level
    found: str
    fix: str = ""


# -- facts gathered at the edges -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortFacts:
    path: str
    exists: bool
    target: str | None = None  # what a symlink such as /dev/p1 points at
    is_char_device: bool = False
    group: str | None = None
    group_rw: bool = False
    accessible: bool = False  # by the user running the doctor
    usb_serial: tuple[str, ...] = ()  # /dev/serial/by-id entries: the USB serial cables plugged in


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What reading the port for a few seconds gave (only done when the daemon is not running)."""

    seconds: float
    telegrams: int = 0
    valid: int = 0
    crc_errors: int = 0
    stray_bytes: int = 0  # bytes that were not part of a telegram (wrong speed, signal not inverted)
    error: str | None = None  # the port could not be opened


@dataclass(frozen=True, slots=True)
class Reach:
    """A network service's answer: ``answered`` (TCP connected), ``code`` (HTTP status or MQTT
    CONNACK return code) and ``error`` (why it could not be reached)."""

    target: str
    answered: bool
    code: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DiskFacts:
    path: str
    exists: bool
    file_bytes: int = 0
    free_bytes: int = 0
    max_bytes: int | None = None
    min_free_bytes: int = 64 * 1024 * 1024
    outbox_rows: int | None = None


# -- the judges (pure) -----------------------------------------------------------------------------


def judge_config(path: Path | None, error: str | None) -> Finding:
    """``error`` is :class:`gateway.config.ConfigError`'s text (it names the file, key and reason)."""
    if path is None:
        return Finding("Configuration", Level.OK, "The built-in configuration of `quartier demo`.")
    if error is None:
        return Finding("Configuration", Level.OK, f"{path} is valid.")
    if error.startswith(f"config {path}: file not found"):
        return Finding("Configuration", Level.FAIL, f"There is no configuration file at {path}.",
                       "Install Quartier with deploy/install.sh (it writes one), or name the right file: "
                       "quartier doctor --config FILE.")
    if "permission denied" in error:
        return Finding("Configuration", Level.FAIL, f"This user may not read a file the configuration needs ({error}).",
                       "Run the doctor with sudo: sudo quartier doctor")
    problems = "; ".join(line.strip() for line in error.removeprefix("invalid configuration:").splitlines() if line.strip())
    return Finding("Configuration", Level.FAIL, f"{path} has a mistake: {problems}.",
                   f"Correct what is named above in {path}, then check it with: sudo quartier config check {path}")


def judge_port(p: PortFacts) -> Finding:
    name = "P1 cable"
    if not p.exists:
        seen = ", ".join(p.usb_serial)
        if seen:
            found = (f"{p.path} does not exist, but the Pi sees these USB serial devices: {seen}. "
                     "The cable is there, but it did not get the name " + p.path + ".")
            fix = ("The cable's chip is probably not in the udev rule /etc/udev/rules.d/99-quartier-p1.rules: "
                   "see 'Which cable' in hardware/README.md. Quick fix: set port = \"/dev/serial/by-id/"
                   f"{p.usb_serial[0]}\" under [[sources]] in the configuration and restart quartier.")
        else:
            found = f"{p.path} does not exist: the Pi does not see a P1 cable."
            fix = ("Check that the cable is plugged into a USB port of the Pi and into the meter's P1 port "
                   "(the RJ12 socket behind the meter's flap). Unplug it and plug it in again, then run: "
                   "ls -l /dev/p1 /dev/serial/by-id/")
        return Finding(name, Level.FAIL, found, fix)
    shown = f"{p.path} (-> {p.target})" if p.target else p.path
    if not p.is_char_device:
        return Finding(name, Level.FAIL, f"{shown} exists but is not a serial device.",
                       "The configuration's [[sources]] port must name the cable, e.g. /dev/p1 or /dev/ttyUSB0.")
    if p.group != SERVICE_GROUP or not p.group_rw:
        return Finding(name, Level.WARN,
                       f"{shown} exists but belongs to group {p.group or '?'} "
                       f"({'read-write' if p.group_rw else 'not writable'} for the group): the service, which "
                       f"runs in group {SERVICE_GROUP}, may not open it.",
                       "Install the udev rule (sudo deploy/install.sh does), then unplug and plug in the cable.")
    extra = "" if p.accessible else " (this user may not open it, the service may: run the doctor with sudo to test reading)"
    return Finding(name, Level.OK, f"Found {shown}, usable by the service (group {SERVICE_GROUP}){extra}.")


def judge_daemon(health: dict[str, Any] | None, health_age_s: float | None, pid_alive: bool | None,
                 fresh_s: float, *, demo: bool = False) -> Finding:
    name = "Gateway running"
    start = "Start the demo again: quartier demo" if demo else "Start it: sudo systemctl restart quartier"
    logs = "" if demo else " If it stops again, sudo journalctl -u quartier -n 50 shows why."
    if health is None:
        return Finding(name, Level.FAIL, "The gateway is not running (no health file).", start + "." + logs)
    if health_age_s is not None and health_age_s <= fresh_s and pid_alive is not False:
        up = health.get("uptime_s")
        up_text = f", running for {_duration(up)}" if isinstance(up, int | float) else ""
        return Finding(name, Level.OK, f"The gateway is running (process {health.get('pid')}{up_text}).")
    ago = _duration(health_age_s) if health_age_s is not None else "an unknown time"
    if pid_alive:
        return Finding(name, Level.FAIL, f"The gateway process {health.get('pid')} is there but has not reported "
                       f"for {ago}: it is stuck.", ("Restart the demo." if demo else "Restart it: sudo systemctl restart quartier.") + logs)
    return Finding(name, Level.FAIL, f"The gateway is not running: it stopped {ago} ago.", start + "." + logs)


_METER_FIX = ("Check that the cable sits firmly in the meter's P1 port. In Belgium the port is closed until "
              "you ask your grid operator to open it (Fluvius: 'poort activeren' on mijn.fluvius.be; ORES and "
              "Sibelga: ask for it by phone or on their website): see hardware/README.md. "
              "Dutch meters send only while their P1 port is powered: the cable must connect the data-request pin.")


def judge_telegrams(health: dict[str, Any] | None, running: bool, probe: ProbeResult | None,
                    port: str | None) -> Finding:
    name = "Meter telegrams"
    if running and health is not None:
        age = health.get("last_telegram_age_s")
        total = sum(int(m.get("telegrams") or 0) for m in (health.get("meters") or {}).values())
        if age is None:
            up = health.get("uptime_s")
            since = f" since the gateway started {_duration(up)} ago" if isinstance(up, int | float) else ""
            return Finding(name, Level.FAIL, f"No telegram from the meter{since}.", _METER_FIX)
        if age <= TELEGRAM_OK_S:
            return Finding(name, Level.OK, f"The meter is talking: last telegram {age:.0f} s ago ({total} so far).")
        return Finding(name, Level.FAIL, f"The meter has been silent for {_duration(age)} "
                       f"(after {total} telegrams): the cable may have come loose.",
                       "Check both ends of the cable; unplug it and plug it in again. " + _METER_FIX)
    if probe is None:
        return Finding(name, Level.SKIP, "Cannot tell: the gateway is not running"
                       + ("." if port is None else f" and {port} could not be tried."))
    if probe.error is not None:
        return Finding(name, Level.FAIL, f"Could not open {port} to listen to the meter: {probe.error}.",
                       "If another program uses the port, stop it; with permission denied, run the doctor with sudo.")
    if probe.valid:
        return Finding(name, Level.OK, f"The meter is talking: {probe.valid} good telegram(s) read from {port} in "
                       f"{probe.seconds:.0f} s (the gateway itself is not running).")
    if probe.telegrams or probe.stray_bytes:
        return Finding(name, Level.FAIL, f"Data arrives on {port} but no telegram can be read "
                       f"({probe.telegrams} damaged, {probe.stray_bytes} stray bytes in {probe.seconds:.0f} s).",
                       "The signal is probably not inverted: P1 sends an inverted signal, and a plain USB-serial "
                       "cable does not turn it back. Use a P1 cable (hardware/README.md, 'Which cable').")
    return Finding(name, Level.FAIL, f"Nothing received on {port} in {probe.seconds:.0f} s.", _METER_FIX)


_REFUSAL_WORDS = {
    "unknown_register": "a register missing or unreadable",
    "implausible_step": "a register step larger than the connection can carry",
    "register_drop": "a register that went down and came back",
    "time_jump": "a meter time that jumped away from its neighbours",
    "future": "a meter time ahead of the Pi's clock",
}


def judge_refused(health: dict[str, Any] | None, running: bool) -> Finding:
    """Readings refused as implausible (not damage: that is judge_crc), per meter and reason."""
    name = "Implausible readings"
    if not running or health is None:
        return Finding(name, Level.SKIP, "Cannot tell: the gateway is not running.")
    parts = []
    for mid, m in (health.get("meters") or {}).items():
        for reason, n in sorted((m.get("refused") or {}).items()):
            if n and reason in _REFUSAL_WORDS:
                parts.append(f"meter {mid}: {n} × {_REFUSAL_WORDS[reason]} ({reason})")
    if not parts:
        return Finding(name, Level.OK, "No reading was refused as implausible.")
    return Finding(name, Level.WARN, "Refused, never counted as energy: " + "; ".join(parts) + ".",
                   "Occasional refusals are glitches the gateway kept out. Many, or ones that do not stop, mean the "
                   "meter's clock or registers changed for good (a meter exchange is accepted once it persists), or "
                   "that sources.max_power_w is below what this connection really carries.")


def judge_crc(health: dict[str, Any] | None, running: bool) -> Finding:
    name = "Damaged telegrams"
    if not running or health is None:
        return Finding(name, Level.SKIP, "Cannot tell: the gateway is not running.")
    meters = (health.get("meters") or {}).values()
    good = sum(int(m.get("telegrams") or 0) for m in meters) - sum(int(m.get("crc_errors") or 0) for m in meters)
    bad = sum(int(m.get("crc_errors") or 0) for m in meters)
    bad += sum(int(r.get("unattributed_crc_errors") or 0) for r in (health.get("readers") or {}).values())
    total = max(good, 0) + bad
    if total < CRC_MIN_TELEGRAMS:
        return Finding(name, Level.SKIP, f"Too few telegrams so far ({total}) to tell.")
    rate = bad / total
    found = f"{bad} of {total} telegrams arrived damaged (CRC check failed): {rate:.1%}."
    fix = ("A damaged telegram is thrown away; the meter's counters make up for it, but many of them mean a "
           "bad contact. Push the RJ12 plug in until it clicks, keep the cable short (under 3 m) and away from "
           "power cables; a cable with a proper inverter helps (hardware/README.md).")
    if rate > CRC_FAIL:
        return Finding(name, Level.FAIL, found, fix)
    if rate > CRC_WARN:
        return Finding(name, Level.WARN, found, fix)
    return Finding(name, Level.OK, found)


def judge_clock(synchronised: bool | None, uses_pi_clock: bool) -> Finding:
    name = "Clock"
    if synchronised is None:
        return Finding(name, Level.SKIP, "Cannot ask this system whether its clock is synchronised.")
    if synchronised:
        return Finding(name, Level.OK, "The Pi's clock is synchronised with the internet.")
    why = ("Fluksometer readings are stamped with the Pi's clock, so they may land in the wrong quarter-hour."
           if uses_pi_clock else
           "Meter data uses the meter's own clock and is not affected; logs and the page's times may be off.")
    return Finding(name, Level.FAIL if uses_pi_clock else Level.WARN,
                   f"The Pi's clock is not synchronised. {why}",
                   "Check the network connection; `timedatectl` should say 'System clock synchronized: yes'. "
                   "Then: sudo systemctl restart systemd-timesyncd")


_CONNACK = {
    1: "it does not speak this MQTT version",
    2: "it refused our client id",
    3: "the broker is unavailable",
    4: "the user name or password is wrong",
    5: "it wants a user name and password",
}


def judge_broker(label: str, r: Reach, *, local: bool, uplink: bool = False) -> Finding:
    name = f"MQTT broker ({label})"
    if not r.answered:
        if local:
            fix = "Is Mosquitto running? sudo systemctl status mosquitto (install it: sudo apt-get install mosquitto)."
        elif uplink:
            fix = ("Check the Pi's internet connection and [uplink] host and port in the configuration; ask the "
                   "community's operator whether the community server is up. Metering goes on meanwhile.")
        else:
            fix = "Is the device on and on the network? Check the address in the configuration."
        return Finding(name, Level.FAIL, f"Nothing answers at {r.target}: {r.error}.", fix)
    if r.code == 0:
        return Finding(name, Level.OK, f"The broker at {r.target} accepts connections.")
    if r.code is None:
        if r.error and r.error.startswith("TLS"):
            return Finding(name, Level.FAIL, f"The secure connection to {r.target} failed ({r.error}).",
                           "Check uplink.ca_file: it must be the community's CA certificate, as given by its operator.")
        return Finding(name, Level.FAIL, f"Something answers at {r.target} but it is not an MQTT broker ({r.error}).",
                       "Check the host and port in the configuration"
                       + (" (the community server wants TLS: set uplink.ca_file)." if uplink else "."))
    reason = _CONNACK.get(r.code, f"it refused the connection (code {r.code})")
    if uplink:
        return Finding(name, Level.FAIL, f"The community server at {r.target} answers, but {reason}.",
                       "Check uplink.pseudonym in the configuration and [uplink] password in the secrets file "
                       "(/etc/quartier/secrets.toml) with the community's operator, then: sudo systemctl restart quartier")
    return Finding(name, Level.FAIL, f"The broker at {r.target} answers, but {reason}.",
                   "Put the user name in the configuration and the password in the secrets file "
                   "(/etc/quartier/secrets.toml), then restart quartier-web.")


def judge_influx(r: Reach, sink: dict[str, Any] | None, outbox: int | None) -> Finding:
    name = "InfluxDB"
    if not r.answered:
        return Finding(name, Level.FAIL, f"Nothing answers at {r.target}: {r.error}. Quarter-hours wait safely "
                       f"on the Pi{f' ({outbox} waiting)' if outbox else ''} and are sent when it answers again.",
                       "Check the Pi's network connection and influx.url in the configuration; ask the community's "
                       "operator whether the server is up.")
    if r.code is not None and r.code >= 500:
        return Finding(name, Level.FAIL, f"The server at {r.target} answers with an error ({r.code}).",
                       "Tell the community's operator: the database server has a problem.")
    failures = int((sink or {}).get("consecutive_failures") or 0)
    if failures:
        err = (sink or {}).get("last_error") or "unknown error"
        return Finding(name, Level.FAIL, f"The server answers, but the last {failures} sends failed: {err}.",
                       "Check the token ([influx] token in /etc/quartier/secrets.toml), org and bucket with the "
                       "community's operator, then: sudo systemctl restart quartier")
    waiting = f"; {outbox} quarter-hours waiting to be sent" if outbox else ""
    return Finding(name, Level.OK, f"The server at {r.target} answers{waiting}.")


def judge_disk(d: DiskFacts, *, running: bool) -> Finding:
    name = "Disk and store"
    if not d.exists:
        if running:
            return Finding(name, Level.OK, f"No quarter-hour stored yet at {d.path} (the first one closes within "
                           f"15 minutes); {_size(d.free_bytes)} free.")
        return Finding(name, Level.WARN, f"There is no store at {d.path} yet: the gateway has never stored a quarter-hour.",
                       "Start the gateway and let it run for a quarter of an hour.")
    found = f"The store takes {_size(d.file_bytes)}"
    found += f" of its {_size(d.max_bytes)} limit" if d.max_bytes else ""
    found += f"; {_size(d.free_bytes)} free on the card."
    if d.free_bytes < d.min_free_bytes:
        return Finding(name, Level.FAIL, f"The SD card is almost full: only {_size(d.free_bytes)} free. {found}",
                       "Free space: sudo apt-get clean; sudo journalctl --vacuum-size=20M; remove files you put on "
                       "the card yourself. A larger card (16 GB or more) avoids this.")
    if d.max_bytes and d.file_bytes > d.max_bytes:
        return Finding(name, Level.WARN, f"{found} The store is over its limit: the oldest quarter-hours that were "
                       "already sent are being removed.",
                       "If quarter-hours are waiting to be sent, fix InfluxDB first; otherwise raise store.max_mb.")
    return Finding(name, Level.OK, found)


def judge_web(r: Reach | None, url: str) -> Finding:
    name = "Web page"
    if r is None:
        return Finding(name, Level.SKIP, "This demo has no web service.")
    if r.answered and r.code == 200:
        return Finding(name, Level.OK, f"The page and the consume-now signal answer at {url}.")
    why = r.error if not r.answered else f"it answers with an error ({r.code})"
    return Finding(name, Level.WARN, f"The web service does not answer at {url}: {why}. Metering goes on, but "
                   "members cannot see the page, and the light has to work from the gateway's health file.",
                   "sudo systemctl restart quartier-web; if it stops again: sudo journalctl -u quartier-web -n 50")


# -- gathering facts (I/O) -------------------------------------------------------------------------


def port_facts(path: str) -> PortFacts:
    by_id = Path("/dev/serial/by-id")
    try:
        usb = tuple(sorted(p.name for p in by_id.iterdir()))
    except OSError:
        usb = ()
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return PortFacts(path, exists=False, usb_serial=usb)
    target = os.path.realpath(path) if p.is_symlink() else None
    try:
        import grp

        group = grp.getgrgid(st.st_gid).gr_name
    except (KeyError, ImportError):
        group = str(st.st_gid)
    return PortFacts(
        path, exists=True, target=target, is_char_device=stat.S_ISCHR(st.st_mode), group=group,
        group_rw=bool(st.st_mode & stat.S_IRGRP and st.st_mode & stat.S_IWGRP),
        accessible=os.access(path, os.R_OK | os.W_OK), usb_serial=usb,
    )


def probe_port(port: str, seconds: float) -> ProbeResult:
    """Listen on the port for up to ``seconds`` (both line speeds), stopping after 3 good telegrams."""
    from p1.serial_reader import SerialReader, is_valid

    try:
        import serial

        serial.Serial(port).close()  # fail fast with the reason (permission denied, busy, gone)
    except (OSError, ValueError) as exc:
        return ProbeResult(seconds, error=str(getattr(exc, "strerror", None) or exc))
    reader = SerialReader(port, baudrate=None, detect_timeout=max(1.0, seconds / 2), reconnect_delay=0.2,
                          max_reconnect_delay=1.0, read_timeout=0.2)
    counts = {"telegrams": 0, "valid": 0, "crc": 0}

    def listen() -> None:
        for t in reader:
            counts["telegrams"] += 1
            counts["crc"] += t.crc_ok is False
            if is_valid(t):
                counts["valid"] += 1
                if counts["valid"] >= 3:
                    break

    started = time.monotonic()
    thread = threading.Thread(target=listen, name="doctor-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    reader.close()
    thread.join(2.0)
    stray = reader.framer.discarded_bytes + reader.framer.buffered
    return ProbeResult(round(time.monotonic() - started, 1), counts["telegrams"], counts["valid"], counts["crc"], stray)


def mqtt_reach(host: str, port: int, *, username: str | None = None, password: str | None = None,
               ca_file: str | Path | None = None, timeout: float = 3.0) -> Reach:
    """TCP connect (TLS with the given CA), then an MQTT 3.1.1 CONNECT: the CONNACK's return code
    says whether we are welcome."""
    import ssl

    target = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Reach(target, False, error=exc.strerror or str(exc))
    if ca_file is not None:
        try:
            ctx = ssl.create_default_context(cafile=str(ca_file))
            sock = ctx.wrap_socket(sock, server_hostname=host)
        except ssl.SSLError as exc:
            sock.close()
            return Reach(target, True, error=f"TLS: {exc.reason or exc}")
        except OSError as exc:  # the CA file itself, or the connection dropped during the handshake
            sock.close()
            return Reach(target, True, error=f"TLS: {exc.strerror or exc}")
    with sock:
        try:
            sock.sendall(mqtt_connect_packet(f"quartier-doctor-{os.getpid()}", username, password))
            head = _recv_exact(sock, 4)
        except OSError as exc:
            return Reach(target, True, error=f"no MQTT answer: {exc.strerror or exc}")
        if head is None or head[0] != 0x20 or head[1] != 2:
            return Reach(target, True, error="no MQTT answer")
        try:
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        except OSError:
            pass
        return Reach(target, True, code=head[3])


def mqtt_connect_packet(client_id: str, username: str | None = None, password: str | None = None) -> bytes:
    """An MQTT 3.1.1 CONNECT packet (clean session, 10 s keep-alive)."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("!H", len(raw)) + raw

    flags = 0x02 | (0x80 if username else 0) | (0x40 if username and password else 0)
    body = s("MQTT") + bytes([4, flags]) + struct.pack("!H", 10) + s(client_id)
    if username:
        body += s(username)
        if password:
            body += s(password)
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x10]) + bytes(encoded) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def http_reach(url: str, timeout: float = 3.0) -> Reach:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return Reach(url, True, code=resp.status)
    except urllib.error.HTTPError as exc:
        return Reach(url, True, code=exc.code)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Reach(url, False, error=getattr(reason, "strerror", None) or str(reason))


def influx_reach(base_url: str, timeout: float = 3.0) -> Reach:
    """InfluxDB 2 answers ``/health``; servers speaking only the write API answer ``/ping``."""
    r = http_reach(base_url + "/health", timeout)
    if r.answered and r.code == 404:
        ping = http_reach(base_url + "/ping", timeout)
        if ping.answered:
            return Reach(base_url, True, code=200 if ping.code in (200, 204) else ping.code)
    return Reach(base_url, r.answered, r.code, r.error)


def disk_facts(path: Path, max_bytes: int | None) -> DiskFacts:
    """Sizes by stat; through :meth:`gateway.store.Store.disk_status` when this user owns the store
    (opening it as another user, e.g. root, could leave files the service cannot write)."""
    from gateway.store import DEFAULT_MIN_FREE_BYTES

    parent = path.parent if path.parent.exists() else Path("/")
    free = shutil.disk_usage(parent).free
    if not path.exists():
        return DiskFacts(str(path), False, free_bytes=free, max_bytes=max_bytes, min_free_bytes=DEFAULT_MIN_FREE_BYTES)
    if path.stat().st_uid == os.geteuid():
        import sqlite3

        from gateway.store import Store, StoreError

        try:
            with Store(path, max_bytes=max_bytes) as store:
                d = store.disk_status()
            return DiskFacts(str(path), True, d.file_bytes, d.free_bytes, d.max_bytes, d.min_free_bytes, d.outbox_rows)
        except (OSError, sqlite3.Error, StoreError) as exc:  # a damaged store: the sizes below still tell
            log.debug("doctor.store_unreadable", extra={"error": str(exc)})
    size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
               if p.exists())
    return DiskFacts(str(path), True, size, free, max_bytes, DEFAULT_MIN_FREE_BYTES)


def pid_alive(pid: object) -> bool | None:
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def health_age_s(health: dict[str, Any] | None, now: datetime) -> float | None:
    if not health or not isinstance(health.get("time"), str):
        return None
    try:
        t = datetime.fromisoformat(health["time"].replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (now - t).total_seconds())


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
        SimulatedSource,
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
        cfg = Config(sources=[SimulatedSource()], store=StoreConfig(path=d / "quartier.sqlite"),
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
    from gateway.daemon import read_health

    now = now or datetime.now(timezone.utc)
    findings = [judge_config(setup.config_path, setup.config_error)]
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
    alive = pid_alive(health.get("pid")) if health else None
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


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


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
        logging.getLogger("quartier").setLevel(logging.CRITICAL)
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

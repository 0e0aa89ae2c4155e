"""The doctor's judges (pure): facts in, a :class:`Finding` out — ok, warn, fail or skip, what was
found and what to do. They are the specification of the messages a volunteer reads."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

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
    if error.startswith("invalid configuration"):  # "invalid configuration in FILE:" then one line per problem
        error = error.partition("\n")[2]
    problems = "; ".join(line.strip() for line in error.splitlines() if line.strip())
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


_SUBMETER_KINDS = ("gas", "water", "heat", "cold", "other")
_SUBMETER_WORDS = {**_REFUSAL_WORDS, "implausible_step": "a register step larger than the meter's maximum flow",
                   "time_jump": "a capture time that went backwards", "invalid_value": "a negative or unreadable value",
                   "unit_change": "a unit or device type that changed"}


def judge_refused(health: dict[str, Any] | None, running: bool) -> Finding:
    """Readings refused as implausible (not damage: that is judge_crc), per meter and reason."""
    name = "Implausible readings"
    if not running or health is None:
        return Finding(name, Level.SKIP, "Cannot tell: the gateway is not running.")
    parts = []
    for mid, m in (health.get("meters") or {}).items():
        for reason, n in sorted((m.get("refused") or {}).items()):
            kind, _, sub = reason.partition("_")  # an MBus channel's: gas_register_drop
            if n and reason in _REFUSAL_WORDS:
                parts.append(f"meter {mid}: {n} × {_REFUSAL_WORDS[reason]} ({reason})")
            elif n and kind in _SUBMETER_KINDS and sub in _SUBMETER_WORDS:
                parts.append(f"meter {mid}: {n} × {kind}: {_SUBMETER_WORDS[sub]} ({reason})")
    if not parts:
        return Finding(name, Level.OK, "No reading was refused as implausible.")
    return Finding(name, Level.WARN, "Refused, never counted as energy: " + "; ".join(parts) + ".",
                   "Occasional refusals are glitches the gateway kept out. Many, or ones that do not stop, mean the "
                   "meter's clock or registers changed for good (a meter exchange is accepted once it persists), or "
                   "that sources.max_power_w (sources.max_flow for gas and water) is below what the connection or meter really carries.")


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


def judge_crc_extension(compiled: bool) -> Finding:
    name = "CRC check"
    if compiled:
        return Finding(name, Level.OK, "Telegrams are checked by crcmod's compiled extension.")
    return Finding(name, Level.WARN, "crcmod runs without its compiled extension: every telegram's CRC is computed in "
                   "pure Python, about 1,000 times slower (a busy Pi may fall behind the meter).",
                   "Reinstall with the pinned versions: sudo deploy/install.sh --force (crcmod-plus comes as a "
                   "ready-built wheel; where none exists pip needs a compiler: sudo apt-get install build-essential python3-dev).")


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

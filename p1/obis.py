"""What the OBIS references in P1 telegrams are, and how their values are written.

Keys are the value group "C.D.E" of a reference "A-B:C.D.E": it names the quantity, while A-B
names the medium and channel (1-0 electricity, 0-n MBus channel n). References whose form cannot be
told from the value itself need a kind here (identifiers that look like numbers, versions that look
like hex, logs), and the common numeric ones are listed so that damage on them is reported rather
than read as text; anything else is decoded by its shape.
"""

from __future__ import annotations

from enum import Enum


class Kind(Enum):
    """How the value groups of a line are to be read."""

    NUMBER = "number"  # (value*unit) or (value): a register, power, voltage, count, code
    VERSION = "version"  # text, never hex-decoded: "50", "50217"
    TEXT = "text"  # identifier or message, hex-decoded when that gives printable text
    TIMESTAMP = "timestamp"  # (YYMMDDhhmmssX)
    TIMED = "timed"  # (YYMMDDhhmmssX)(value*unit): MBus reading, monthly peak
    LEGACY_MBUS = "legacy_mbus"  # DSMR 2.2/3 0-n:24.3.0, value possibly on the next line
    LOG = "log"  # (count)(ref...)(entries...): power failures 99.97.0, peak history 98.1.0


# the quantities every P1 dialect writes as a plain number: anything else on these lines is damage
_NUMBERS = ["1.8.0", "1.8.1", "1.8.2", "1.8.3", "1.8.4", "2.8.0", "2.8.1", "2.8.2", "2.8.3", "2.8.4", "3.8.0", "4.8.0", "1.7.0", "2.7.0", "3.7.0", "4.7.0", "1.4.0", "21.7.0", "41.7.0", "61.7.0", "22.7.0", "42.7.0", "62.7.0", "32.7.0", "52.7.0", "72.7.0", "31.7.0", "51.7.0", "71.7.0", "96.14.0", "17.0.0", "31.4.0", "96.3.10", "96.7.21", "96.7.9", "32.32.0", "52.32.0", "72.32.0", "32.36.0", "52.36.0", "72.36.0", "24.1.0", "24.4.0"]

KINDS: dict[str, Kind] = {
    **{ref: Kind.NUMBER for ref in _NUMBERS},
    "0.2.8": Kind.VERSION,
    "96.1.4": Kind.VERSION,
    "1.0.0": Kind.TIMESTAMP,
    "96.1.0": Kind.TEXT,
    "96.1.1": Kind.TEXT,
    "42.0.0": Kind.TEXT,
    "96.13.0": Kind.TEXT,
    "96.13.1": Kind.TEXT,
    "96.13.2": Kind.TEXT,
    "96.13.3": Kind.TEXT,
    "96.13.4": Kind.TEXT,
    "96.13.5": Kind.TEXT,
    "24.2.1": Kind.TIMED,
    "24.2.2": Kind.TIMED,
    "24.2.3": Kind.TIMED,
    "1.6.0": Kind.TIMED,
    "2.6.0": Kind.TIMED,
    "24.3.0": Kind.LEGACY_MBUS,
    "99.97.0": Kind.LOG,
    "98.1.0": Kind.LOG,
}

# Human names, for `quartier p1 read` (installers reading a meter on site).
NAMES: dict[str, str] = {
    "0.2.8": "P1 version",
    "96.1.4": "e-MUCS version",
    "1.0.0": "meter time",
    "96.1.0": "equipment id",
    "96.1.1": "equipment id",
    "42.0.0": "logical device name",
    "1.8.0": "imported energy, total",
    "1.8.1": "imported energy, tariff 1",
    "1.8.2": "imported energy, tariff 2",
    "1.8.3": "imported energy, tariff 3",
    "1.8.4": "imported energy, tariff 4",
    "2.8.0": "exported energy, total",
    "2.8.1": "exported energy, tariff 1",
    "2.8.2": "exported energy, tariff 2",
    "2.8.3": "exported energy, tariff 3",
    "2.8.4": "exported energy, tariff 4",
    "3.8.0": "reactive energy imported",
    "4.8.0": "reactive energy exported",
    "15.8.0": "absolute active energy",
    "96.14.0": "tariff in use",
    "1.7.0": "power imported",
    "2.7.0": "power exported",
    "3.7.0": "reactive power imported",
    "4.7.0": "reactive power exported",
    "1.4.0": "quarter-hour average demand",
    "1.6.0": "peak demand this month",
    "98.1.0": "peak demand history",
    "17.0.0": "power limit",
    "31.4.0": "current limit",
    "96.3.10": "breaker state",
    "96.7.21": "power failures",
    "96.7.9": "long power failures",
    "99.97.0": "power failure log",
    "32.32.0": "voltage sags L1",
    "52.32.0": "voltage sags L2",
    "72.32.0": "voltage sags L3",
    "32.36.0": "voltage swells L1",
    "52.36.0": "voltage swells L2",
    "72.36.0": "voltage swells L3",
    "96.13.0": "text message",
    "96.13.1": "text message code",
    "32.7.0": "voltage L1",
    "52.7.0": "voltage L2",
    "72.7.0": "voltage L3",
    "31.7.0": "current L1",
    "51.7.0": "current L2",
    "71.7.0": "current L3",
    "21.7.0": "power imported L1",
    "41.7.0": "power imported L2",
    "61.7.0": "power imported L3",
    "22.7.0": "power exported L1",
    "42.7.0": "power exported L2",
    "62.7.0": "power exported L3",
    "13.7.0": "power factor",
    "14.7.0": "frequency",
    "24.1.0": "MBus device type",
    "24.4.0": "MBus valve state",
    "24.2.1": "MBus reading",
    "24.2.3": "MBus reading (not temperature-corrected)",
    "24.3.0": "MBus reading (DSMR 2.2/3)",
}


def suffix(ref: str) -> str:
    """The "C.D.E" part of "A-B:C.D.E"."""
    return ref[ref.find(":") + 1 :]


def name(ref: str) -> str:
    """A short English name for a reference, or "" when it is not one we know."""
    return NAMES.get(suffix(ref), "")

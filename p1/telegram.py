"""The decoded telegram: what one P1 frame says, with nothing guessed.

Plain slotted dataclasses: one telegram a second on a Raspberry Pi, so objects stay cheap and carry
no validation machinery. Numbers are ``Decimal`` (or ``int`` for counters and codes), never float:
a register read as 009087.306 kWh must come out as exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum


class Dialect(Enum):
    """The flavour of P1 a telegram is written in, detected from the telegram itself.

    The version string the meter announced (1-3:0.2.8 or 0-0:96.1.4) is kept in
    ``Telegram.version``; the enum only says which family of rules applies.
    """

    DSMR22 = "DSMR 2.2"
    DSMR30 = "DSMR 3.0"
    DSMR40 = "DSMR 4.0"
    DSMR42 = "DSMR 4.2"
    DSMR50 = "DSMR 5.0"
    EMUCS = "e-MUCS H"  # Belgium: Fluvius, Sibelga, ORES
    SMARTY = "Smarty"  # Luxembourg (decrypted plaintext)
    OTHER = "other"  # a P1-like telegram outside these specifications (Swedish, Hungarian, ...)
    UNKNOWN = "unknown"  # contents not trusted (CRC failed), so not looked at


Number = Decimal | int


@dataclass(slots=True)
class Entry:
    """One row of a log carried in a single line: a power failure (99.97.0) or a monthly peak (98.1.0).

    ``time`` is when the event or peak happened; ``period_end`` is, for the e-MUCS peak history
    (historique des pointes / piekhistoriek), the stamp that closes the month the peak belongs to.
    """

    time: datetime | None
    value: Number | None
    unit: str | None
    period_end: datetime | None = None
    invalid: str | None = None


@dataclass(slots=True)
class ObisValue:
    """One OBIS line, decoded as far as its form allows; ``raw`` keeps the line as written.

    ``invalid`` names the reason when the meter wrote one of the field's known placeholders
    (a clock default such as 632525252525W, a dead MBus channel's (00000000)): the placeholder is
    then *not* turned into a number or a time.
    """

    value: Number | None = None
    unit: str | None = None
    time: datetime | None = None
    text: str | None = None
    entries: list[Entry] | None = None
    invalid: str | None = None
    raw: str = ""


@dataclass(slots=True, frozen=True)
class MBusDevice:
    """A sub-meter on MBus channel 1..4 (gas, water, heat), gathered from its 0-n:* lines."""

    channel: int
    device_type: int | None
    equipment_id: str | None
    value: Number | None
    unit: str | None
    time: datetime | None
    invalid: str | None


# MBus device types (EN 13757-3, 0-n:24.1.0) -> what the sub-meter measures
MBUS_KINDS = {
    3: "gas",
    4: "heat",  # heat, outlet
    6: "water",  # warm water
    7: "water",
    10: "cold",  # cooling, outlet
    11: "cold",  # cooling, inlet
    12: "heat",  # heat, inlet
    13: "heat",  # heat / cooling
    21: "water",  # hot water
    22: "water",  # cold water
}


@dataclass(slots=True)
class Telegram:
    """A framed telegram and what could be read from it.

    ``crc_ok`` is True/False when the telegram carries a CRC, None when it carries none (DSMR 2.2/3).
    When the CRC fails, ``values`` is empty: the bytes are known to be damaged, so nothing in them
    is trusted. ``errors`` lists every line that could not be read; a telegram never raises.
    """

    raw: bytes
    header: str
    crc_ok: bool | None
    dialect: Dialect
    values: dict[str, ObisValue]
    errors: list[str] = field(default_factory=list)
    version: str | None = None

    @property
    def timestamp(self) -> datetime | None:
        """The meter's clock (0-0:1.0.0), aware, or None when absent or a clock default."""
        v = self.values.get("0-0:1.0.0")
        return v.time if v is not None else None

    @property
    def equipment_id(self) -> str | None:
        """The electricity meter's identifier (0-0:96.1.1, or 0-0:96.1.0 on some variants)."""
        for ref in ("0-0:96.1.1", "0-0:96.1.0", "0-0:42.0.0"):
            v = self.values.get(ref)
            if v is not None and v.text:
                return v.text
        return None

    def value(self, ref: str) -> Number | None:
        """The number on line ``ref`` (e.g. "1-0:1.8.1"), None if absent, not numeric or invalid."""
        v = self.values.get(ref)
        return v.value if v is not None else None

    def mbus_devices(self) -> list[MBusDevice]:
        """The MBus channels present, each with its device type, id and latest reading."""
        devices = []
        for channel in range(1, 5):
            prefix = f"0-{channel}:"
            kind = self.values.get(prefix + "24.1.0")
            reading = None
            for suffix in ("24.2.1", "24.2.3", "24.2.2", "24.3.0"):
                reading = self.values.get(prefix + suffix)
                if reading is not None:
                    break
            ident = self.values.get(prefix + "96.1.0") or self.values.get(prefix + "96.1.1")
            if kind is None and reading is None and ident is None:
                continue
            devices.append(
                MBusDevice(
                    channel=channel,
                    device_type=kind.value if kind is not None and isinstance(kind.value, int) else None,
                    equipment_id=ident.text if ident is not None else None,
                    value=reading.value if reading is not None else None,
                    unit=reading.unit if reading is not None else None,
                    time=reading.time if reading is not None else None,
                    invalid=reading.invalid if reading is not None else None,
                )
            )
        return devices

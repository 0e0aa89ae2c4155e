"""Telegrams as text: one JSON object per line (``quartier p1 decode``) or a readable listing
(``quartier p1 read``).

JSON numbers are written from the Decimal's own digits (``1234.567``, never ``1234.5670000001``
nor a quoted string), which the standard ``json`` module cannot do, hence the small writer here.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

from p1.obis import name
from p1.telegram import Entry, ObisValue, Telegram

_str = json.dumps  # strings only: escapes control characters, keeps the output ASCII


def _num(value: Decimal | int) -> str:
    if isinstance(value, int):
        return str(value)
    return format(value, "f")


def _time(value: datetime) -> str:
    return _str(value.isoformat())


def _entry_json(e: Entry) -> str:
    parts = [f'"time": {_time(e.time) if e.time is not None else "null"}']
    parts.append(f'"value": {_num(e.value) if e.value is not None else "null"}')
    parts.append(f'"unit": {_str(e.unit) if e.unit is not None else "null"}')
    if e.period_end is not None:
        parts.append(f'"period_end": {_time(e.period_end)}')
    if e.invalid is not None:
        parts.append(f'"invalid": {_str(e.invalid)}')
    return "{" + ", ".join(parts) + "}"


def value_json(v: ObisValue) -> str:
    """The object for one OBIS reference: only the keys that apply; "raw" when nothing was decoded."""
    parts = []
    if v.value is not None:
        parts.append(f'"value": {_num(v.value)}')
    if v.unit is not None:
        parts.append(f'"unit": {_str(v.unit)}')
    if v.time is not None:
        parts.append(f'"time": {_time(v.time)}')
    if v.text is not None:
        parts.append(f'"text": {_str(v.text)}')
    if v.entries is not None:
        parts.append('"entries": [' + ", ".join(_entry_json(e) for e in v.entries) + "]")
    if v.invalid is not None:
        parts.append(f'"invalid": {_str(v.invalid)}')
    if not parts:
        parts.append(f'"raw": {_str(v.raw)}')
    return "{" + ", ".join(parts) + "}"


def telegram_json(t: Telegram) -> str:
    """One line: {"crc_ok", "header", "dialect", "version", "values", "errors"}."""
    crc = "null" if t.crc_ok is None else ("true" if t.crc_ok else "false")
    values = ", ".join(f"{_str(ref)}: {value_json(v)}" for ref, v in t.values.items())
    return (
        f'{{"crc_ok": {crc}, "header": {_str(t.header)}, "dialect": {_str(t.dialect.value)}, '
        f'"version": {_str(t.version) if t.version is not None else "null"}, '
        f'"values": {{{values}}}, "errors": {json.dumps(t.errors)}}}'
    )


def _plain(v: ObisValue) -> str:
    bits = []
    if v.value is not None:
        bits.append(_num(v.value) + (f" {v.unit}" if v.unit else ""))
    if v.text is not None:
        bits.append(repr(v.text) if v.text else "(empty)")
    if v.time is not None:
        bits.append(("at " if bits else "") + v.time.isoformat())
    if v.entries is not None and v.value is None:
        bits.append(f"{len(v.entries)} entries")
    if v.invalid is not None:
        bits.append(f"INVALID: {v.invalid}")
    return "  ".join(bits) if bits else f"raw {v.raw}"


def telegram_text(t: Telegram) -> str:
    """A readable block for an installer at the meter: verdict line, then one line per reference."""
    crc = {True: "CRC ok", False: "CRC FAILED", None: "no CRC"}[t.crc_ok]
    when = t.timestamp.isoformat() if t.timestamp else "no meter time"
    version = f" {t.version}" if t.version else ""
    lines = [f"{when}  {t.header}  {t.dialect.value}{version}  {crc}"]
    for ref, v in t.values.items():
        lines.append(f"  {ref:<13} {name(ref):<42} {_plain(v)}")
        for e in v.entries or ():
            when_e = e.time.isoformat() if e.time else "-"
            val = (_num(e.value) + (f" {e.unit}" if e.unit else "")) if e.value is not None else "-"
            note = f"  INVALID: {e.invalid}" if e.invalid else ""
            lines.append(f"  {'':<13} {'':<42}   {when_e}  {val}{note}")
    for err in t.errors:
        lines.append(f"  ! {err}")
    return "\n".join(lines)

"""From a framed telegram to a ``Telegram``: CRC verdict, dialect, one typed value per OBIS line.

The hot path (one telegram a second on a Pi, but also months of captures replayed) is: CRC with
the C extension, one regex pass that splits the body into lines, references and plain numbers (the
regex engine validates them, in C), a cached lookup of the reference's kind, and small pure
functions for the lines that are not plain numbers. Nothing raises on content: whatever cannot be
read is reported in ``Telegram.errors`` and the line stays available raw.
"""

from __future__ import annotations

import re
from decimal import Decimal

from p1.crc import crc16
from p1.obis import KINDS, Kind
from p1.telegram import Dialect, Entry, ObisValue, Telegram
from p1.timestamps import parse_timestamp

# One match per line: (whole OBIS line, reference, plain number, its unit, anything else).
# "anything else" is a line that is not "ref(...)": empty, a DSMR 2.2/3 continuation "(...)", noise.
_REF_RE = r"[0-9]++-[0-9]++:[0-9]++\.[0-9]++\.[0-9]++(?:\*[0-9]++)?"
_NUM_RE = r"-?[0-9]++(?:\.[0-9]++)?"
_LINES = re.compile(  # possessive quantifiers: no backtracking into digits, ~25% faster
    rf"^(?:(({_REF_RE})\((?:({_NUM_RE})(?:\*([^()*\r\n]++))?|[^\r\n]*)\))|([^\r\n]*?))\r?$",
    re.MULTILINE,
).findall
_REF = re.compile(_REF_RE).fullmatch
_NUMBER = re.compile(_NUM_RE).fullmatch
_CRC_DIGITS = re.compile(r"[0-9A-Fa-f]{1,4}").fullmatch
_HEXTEXT = re.compile(r"(?:[0-9A-Fa-f]{2})+").fullmatch
_LAYOUT = {ord("\r"): None, ord("\n"): None, ord("\t"): None}  # allowed in messages, not printable

# reference -> its Kind (None: decode by shape); bounded, since noise can invent references
_kind_cache: dict[str, Kind | None] = {}
_MAX_CACHED_REFS = 4096

# a power-failure duration of 2**31-1 s or more is the "never set" value of a 32-bit register
_MAX_DURATION = 2**31 - 1

_NUMBER_KIND, _TEXT_KIND, _VERSION_KIND, _LEGACY_KIND = Kind.NUMBER, Kind.TEXT, Kind.VERSION, Kind.LEGACY_MBUS
_UNSEEN = object()

# dialects that always send a CRC: a telegram of theirs without one is damaged (its digits lost)
CRC_DIALECTS = frozenset({Dialect.DSMR40, Dialect.DSMR42, Dialect.DSMR50, Dialect.EMUCS, Dialect.SMARTY})
_CRC_DIALECTS = CRC_DIALECTS


def parse_telegram(frame: bytes) -> Telegram:
    """Decode one frame ('/' … '!' CRC CRLF). Never raises on content; see ``Telegram``.

    A failing CRC gives ``crc_ok=False`` and no values: the bytes are damaged, so none is trusted.
    The only exception raised is TypeError, when ``frame`` is not bytes.
    """
    if not isinstance(frame, (bytes, bytearray)):
        raise TypeError(f"parse_telegram() needs bytes, not {type(frame).__name__}")
    text = frame.decode("latin-1")  # byte offsets stay char offsets; any byte decodes
    start = text.find("/")
    if start < 0:
        return Telegram(frame, "", False, Dialect.UNKNOWN, {}, ["no '/' header: not a telegram"])
    eol = text.find("\n", start)
    header = (text[start:eol] if eol >= 0 else text[start:]).rstrip("\r")
    bang = text.rfind("!")
    if bang < start:
        return Telegram(frame, header, False, Dialect.UNKNOWN, {}, ["no '!' end of telegram"])
    written = text[bang + 1 :].strip("\r\n\x00")
    if written:
        if _CRC_DIGITS(written) is None or int(written, 16) != crc16(frame[start : bang + 1]):
            return Telegram(frame, header, False, Dialect.UNKNOWN, {}, [f"CRC mismatch: telegram says {written!r}"])
        crc_ok: bool | None = True
    else:
        crc_ok = None
    errors: list[str] = [f"{start} bytes before the '/' header ignored"] if start else []
    values = decode_body(text[eol + 1 : bang] if 0 <= eol < bang else "", errors)
    dialect, version = detect_dialect(header, values, crc_ok)
    if crc_ok is None and dialect in _CRC_DIALECTS:
        errors.append(f"{dialect.value} telegram (version {version}) carries no CRC")
    return Telegram(frame, header, crc_ok, dialect, values, errors, version)


def detect_dialect(header: str, values: dict[str, ObisValue], crc_ok: bool | None = None) -> tuple[Dialect, str | None]:
    """Which specification the telegram follows, from its own lines: 96.1.4, then 0.2.8, then header.

    Returns (dialect, the version string the meter announced, or None).
    """
    emucs = values.get("0-0:96.1.4")
    if emucs is not None:
        return Dialect.EMUCS, emucs.text
    maker = header[1:4].upper()
    if maker == "FLU":  # Fluvius meters before e-MUCS 1.4 announced no version
        return Dialect.EMUCS, None
    p1 = values.get("1-3:0.2.8")
    version = p1.text if p1 is not None else None
    if maker == "LUX":
        return Dialect.SMARTY, version
    if version:
        if version == "42":
            return Dialect.DSMR42, version
        if version[0] == "4":
            return Dialect.DSMR40, version
        if version[0] == "5":
            return Dialect.DSMR50, version
        return Dialect.OTHER, version
    # DSMR 2.2/3: no CRC, no version line, no meter clock, tariff registers 1.8.1/1.8.2
    if crc_ok is None and "0-0:1.0.0" not in values and ("1-0:1.8.1" in values or "1-0:1.8.2" in values):
        return _dsmr2_or_3(values), None
    return Dialect.OTHER, None


def _dsmr2_or_3(values: dict[str, ObisValue]) -> Dialect:
    """DSMR 3.0 states its power limit in A and hex-encodes its identifiers; 2.2 uses kW and
    plain digits."""
    limit = values.get("0-0:17.0.0")
    if limit is not None and limit.unit:
        return Dialect.DSMR30 if limit.unit == "A" else Dialect.DSMR22
    ident = values.get("0-0:96.1.1")
    if ident is not None and ident.text is not None and ident.text not in ident.raw:
        return Dialect.DSMR30  # the identifier was hex-encoded text
    return Dialect.DSMR22


def _kind_of(ref: str) -> Kind | None:
    kind = KINDS.get(ref[ref.find(":") + 1 :])
    if len(_kind_cache) < _MAX_CACHED_REFS:
        _kind_cache[ref] = kind
    return kind


def decode_body(body: str, errors: list[str]) -> dict[str, ObisValue]:
    """Decode the lines between the header and '!' into {reference: value}; problems go to errors."""
    values: dict[str, ObisValue] = {}
    kinds = _kind_cache
    last_ref: str | None = None
    pending: tuple[str, str] | None = None  # a DSMR 2.2/3 MBus line waiting for its value line
    for lineno, (line, ref, num, unit, other) in enumerate(_LINES(body), 2):
        if not line:
            if not other:
                continue  # empty line
            if other[0] == "(":  # continuation: DSMR 2.2/3 put the gas reading on its own line
                if pending is not None:
                    value = _decode(pending[0], _LEGACY_KIND, pending[1] + other, errors)
                    value.raw = pending[1] + "\r\n" + other  # both lines, as written
                    values[pending[0]] = value
                    pending = None
                elif last_ref is not None:
                    errors.append(f"line {lineno}: value line {_short(other)} follows {last_ref}, which takes none")
                else:
                    errors.append(f"line {lineno}: value line {_short(other)} without a reference")
            else:
                errors.append(f"line {lineno}: not an OBIS line: {_short(other)}")
                last_ref = None
            continue
        if pending is not None:  # the legacy line had no value line after all
            values[pending[0]] = _decode(pending[0], _LEGACY_KIND, pending[1], errors)
            pending = None
        if ref in values:
            errors.append(f"line {lineno}: {ref} repeated, first occurrence kept")
            continue
        last_ref = ref
        kind = kinds.get(ref, _UNSEEN)
        if kind is _UNSEEN:
            kind = _kind_of(ref)
        if num and (kind is None or kind is _NUMBER_KIND):  # the common case: register, power, count
            if unit:
                values[ref] = ObisValue(Decimal(num), unit, None, None, None, None, line)
            else:
                values[ref] = ObisValue(Decimal(num) if "." in num else int(num), None, None, None, None, None, line)
            continue
        if kind is _TEXT_KIND or kind is _VERSION_KIND:  # identifiers and messages: one group
            payload = line[len(ref) + 1 : -1]
            if ")(" not in payload:
                values[ref] = ObisValue(None, None, None, hex_text(payload) if kind is _TEXT_KIND else payload, None, None, line)
                continue
        elif kind is _LEGACY_KIND and line.count(")(") == 5:
            pending = (ref, line)
            continue
        values[ref] = _decode(ref, kind, line, errors)
    if pending is not None:
        values[pending[0]] = _decode(pending[0], _LEGACY_KIND, pending[1], errors)
    return values


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


class _Malformed(Exception):
    """A value that does not have the form its line requires (reported, never raised out)."""


def _decode(ref: str, kind: Kind | None, line: str, errors: list[str]) -> ObisValue:
    """Decode one line (its continuation already appended) by the reference's kind or its shape."""
    groups = line[len(ref) + 1 : -1].split(")(")
    try:
        if kind is None:
            return _by_shape(groups, line)
        if kind is Kind.NUMBER:
            if len(groups) != 1:
                raise _Malformed("one value expected")
            value, unit = _number(groups[0])
            return ObisValue(value, unit, None, None, None, None, line)
        if kind is Kind.TEXT:
            if len(groups) != 1:
                raise _Malformed("one value expected")
            return ObisValue(None, None, None, hex_text(groups[0]), None, None, line)
        if kind is Kind.VERSION:
            if len(groups) != 1:
                raise _Malformed("one value expected")
            return ObisValue(None, None, None, groups[0], None, None, line)
        if kind is Kind.TIMESTAMP:
            if len(groups) != 1:
                raise _Malformed("one timestamp expected")
            time, invalid = parse_timestamp(groups[0])
            return ObisValue(None, None, time, None, None, invalid, line)
        if kind is Kind.TIMED:
            if len(groups) != 2:
                raise _Malformed("(time)(value*unit) expected")
            return _timed(groups[0], groups[1], None, line)
        if kind is Kind.LEGACY_MBUS:
            # (time)(00)(60)(1)(0-n:24.2.1)(unit), then (value) on the same or the next line
            if len(groups) != 7:
                raise _Malformed("(time)(..)(..)(..)(ref)(unit)(value) expected")
            return _timed(groups[0], groups[6], groups[5], line)
        return _log(groups, line)
    except _Malformed as exc:
        errors.append(f"{ref}: {exc}: {_short(line)}")
        return ObisValue(raw=line)


def _number(text: str) -> tuple[Decimal | int, str | None]:
    """'000244.844*kWh' -> (Decimal('244.844'), 'kWh'); '0001' -> (1, None). Raises _Malformed."""
    star = text.find("*")
    if star >= 0:
        digits, unit = text[:star], text[star + 1 :]
        if not unit:
            raise _Malformed(f"empty unit in {text!r}")
    else:
        digits, unit = text, None
    if _NUMBER(digits) is None:
        raise _Malformed(f"{text!r} is not a number")
    if unit is None and "." not in digits:
        return int(digits), None
    return Decimal(digits), unit


def hex_text(text: str) -> str:
    """Decode a hex-encoded identifier or message when it is text; keep it as written otherwise."""
    if len(text) >= 2 and _HEXTEXT(text):
        decoded = bytes.fromhex(text)
        if decoded.isascii():
            s = decoded.decode("ascii")
            if s.isprintable() or s.translate(_LAYOUT).isprintable():
                return s
    return text


def _timed(stamp: str, reading: str, unit_group: str | None, line: str) -> ObisValue:
    """(time)(value*unit): an MBus reading or a peak, stamped with its own capture time."""
    time, invalid = parse_timestamp(stamp)
    value, unit = _number(reading)
    if unit is None and unit_group:  # DSMR 2.2/3: unit in its own group, value bare
        unit = unit_group
        value = Decimal(value)
    if unit is None:
        # a reading without unit is what a dead MBus channel sends: (700101010000W)(00000000)
        reason = f"reading {reading!r} without unit (no device or no data)"
        return ObisValue(None, None, time, None, None, f"{invalid}; {reason}" if invalid else reason, line)
    return ObisValue(value, unit, time, None, None, invalid, line)


def _looks_like_stamp(g: str) -> bool:
    return len(g) in (12, 13) and g[:12].isdigit()


def _log(groups: list[str], line: str) -> ObisValue:
    """99.97.0 / 98.1.0: (count)(captured ref)…(entry groups)…, or a billing snapshot (time)(values)…"""
    first = groups[0]
    n = len(groups)
    if first == "" and n == 1:
        return ObisValue(0, None, None, None, [], None, line)
    if first.isdigit() and first.isascii() and (n == 1 or _REF(groups[1])):
        count = int(first)
        i = 2
        while i < n and ":" in groups[i]:  # further captured-object references
            if _REF(groups[i]) is None:
                raise _Malformed(f"{groups[i]!r} is not an OBIS reference")
            i += 1
        rest = groups[i:]
        if count == 0:
            if rest:
                raise _Malformed(f"0 entries announced, {len(rest)} values follow")
            return ObisValue(0, None, None, None, [], None, line)
        if len(rest) == 2 * count:  # power failures: (end time)(duration*s)
            entries = [_entry(None, rest[j], rest[j + 1]) for j in range(0, len(rest), 2)]
        elif len(rest) == 3 * count:  # monthly peaks: (period end)(peak time)(peak*kW)
            entries = [_entry(rest[j], rest[j + 1], rest[j + 2]) for j in range(0, len(rest), 3)]
        else:
            raise _Malformed(f"{count} entries announced, {len(rest)} values follow")
        return ObisValue(count, None, None, None, entries, None, line)
    # a snapshot (E.ON Hungary billing data): one stamp, then registers
    if not _looks_like_stamp(first):
        raise _Malformed("neither (count)(ref)… nor (time)(value)…")
    time, invalid = parse_timestamp(first)
    entries = []
    for g in groups[1:]:
        value, unit = _number(g)
        entries.append(Entry(time, value, unit, None, invalid))
    return ObisValue(len(entries), None, time, None, entries, invalid, line)


def _entry(period: str | None, stamp: str, reading: str) -> Entry:
    """One log row; ``period`` is the month-closing stamp of a peak-history row."""
    time, invalid = parse_timestamp(stamp)
    value, unit = _number(reading)
    if unit == "s" and value >= _MAX_DURATION:
        reason = f"duration {reading!r} is an unset register"
        invalid = f"{invalid}; {reason}" if invalid else reason
        value = None
    period_end = None
    if period is not None:
        period_end, bad_period = parse_timestamp(period)
        if bad_period:
            invalid = f"{invalid}; {bad_period}" if invalid else bad_period
    return Entry(time, value, unit, period_end, invalid)


def _by_shape(groups: list[str], line: str) -> ObisValue:
    """A reference not in the table: a number, a time, a timed reading, or text; else kept raw."""
    if len(groups) == 1:
        g = groups[0]
        star = g.find("*")
        if _NUMBER(g[:star] if star >= 0 else g):
            value, unit = _number(g)
            return ObisValue(value, unit, None, None, None, None, line)
        if len(g) == 13 and _looks_like_stamp(g):
            time, invalid = parse_timestamp(g)
            return ObisValue(None, None, time, None, None, invalid, line)
        return ObisValue(None, None, None, hex_text(g), None, None, line)
    if len(groups) == 2 and _looks_like_stamp(groups[0]):
        return _timed(groups[0], groups[1], None, line)
    return ObisValue(raw=line)

"""Single-telegram glitches, as a meter, a cable or a P1 dongle produce them, applied to a real frame.

Each function takes a framed telegram ('/' … '!' CRC CRLF) and returns the damaged frame. ``crc``
says what becomes of the CRC line: "keep" (the original digits: the CRC catches the change), "none"
('!' alone: the digits lost on the line), "fix" (recomputed: the meter itself wrote a wrong value,
or a dialect without CRC).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from p1.crc import crc16

KINDS = ("flip_keep_crc", "flip_no_crc", "flip_up", "flip_down", "zero", "missing_line", "unreadable",
         "day_ahead", "ten_years_ahead", "hour_back", "no_crc", "gas_spike")


def _reframe(body: bytes, crc: str) -> bytes:
    """``body`` is '/' … '!' inclusive."""
    if crc == "none":
        return body + b"\r\n"
    return body + f"{crc16(body):04X}\r\n".encode()


def _split(frame: bytes) -> tuple[bytes, bytes]:
    bang = frame.rindex(b"!")
    return frame[: bang + 1], frame[bang + 1 :]


def _sub_value(body: bytes, ref: bytes, fn) -> bytes:
    m = re.search(re.escape(ref) + rb"\(([0-9.]+)\*kWh\)", body)
    assert m, ref
    return body[: m.start(1)] + fn(m.group(1)) + body[m.end(1) :]


def _flip(value: bytes, up: bool) -> bytes:
    """Change the leading digit of the integer part that can move the way asked (a large step)."""
    digits = bytearray(value)
    for i, c in enumerate(digits[: value.index(b".")]):
        if up and c < ord("9"):
            digits[i] = c + 1
            return bytes(digits)
        if not up and c > ord("0"):
            digits[i] = c - 1
            return bytes(digits)
    raise ValueError(f"no digit to flip in {value!r}")


def _restamp(body: bytes, delta: timedelta) -> bytes:
    m = re.search(rb"0-0:1\.0\.0\((\d{12})([SW])\)", body)
    assert m
    t = datetime.strptime(m.group(1).decode(), "%y%m%d%H%M%S") + delta
    return body[: m.start(1)] + t.strftime("%y%m%d%H%M%S").encode() + body[m.end(1) :]


def glitch(frame: bytes, kind: str) -> bytes:
    body, tail = _split(frame)
    if kind == "flip_keep_crc":
        return _sub_value(body, b"1-0:1.8.1", lambda v: _flip(v, True)) + tail
    if kind == "flip_no_crc":
        return _reframe(_sub_value(body, b"1-0:1.8.1", lambda v: _flip(v, True)), "none")
    if kind == "flip_up":
        return _reframe(_sub_value(body, b"1-0:1.8.1", lambda v: _flip(v, True)), "fix")
    if kind == "flip_down":
        return _reframe(_sub_value(body, b"1-0:1.8.1", lambda v: _flip(v, False)), "fix")
    if kind == "zero":
        return _reframe(_sub_value(body, b"1-0:1.8.1", lambda v: re.sub(rb"\d", b"0", v)), "fix")
    if kind == "missing_line":
        return _reframe(re.sub(rb"1-0:1\.8\.2\([^)]*\)\r\n", b"", body), "fix")
    if kind == "unreadable":
        return _reframe(_sub_value(body, b"1-0:1.8.2", lambda v: v[:2] + b"?" + v[3:]), "fix")
    if kind == "day_ahead":
        return _reframe(_restamp(body, timedelta(days=1)), "fix")
    if kind == "ten_years_ahead":
        return _reframe(_restamp(body, timedelta(days=3652)), "fix")
    if kind == "hour_back":
        return _reframe(_restamp(body, timedelta(hours=-1)), "fix")
    if kind == "no_crc":
        return _reframe(body, "none")
    if kind == "gas_spike":  # the MBus gas register read as 99999.999 m3 (the meter's CRC is right)
        new, n = re.subn(rb"(0-\d:24\.2\.[13]\(\d{12}[SW]\)\()[0-9.]+(\*m3\))", rb"\g<1>99999.999\g<2>", body)
        assert n == 1, "no MBus gas line"
        return _reframe(new, "fix")
    raise ValueError(kind)

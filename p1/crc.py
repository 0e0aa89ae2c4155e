"""CRC16/ARC of a P1 telegram, computed by crcmod's C extension.

The CRC covers every byte from '/' through '!' inclusive and is written after '!' in hex
(normally 4 upper-case digits; some meters drop the leading zero, e.g. "!B9F"). A pure-Python
table loop costs about 2 ms per Belgian telegram on a Raspberry Pi; the extension about 2 µs.
"""

from __future__ import annotations

import importlib.util
import re

import crcmod

# CRC-16/ARC: polynomial x^16 + x^15 + x^2 + 1 (0x8005, reflected 0xA001), init 0, no final xor
crc16 = crcmod.mkCrcFun(0x18005, rev=True, initCrc=0, xorOut=0)
crc16.__doc__ = "CRC16/ARC of ``data`` as an int (0..0xFFFF)."



def compiled() -> bool:
    """Whether crcmod runs its C extension (``crcmod._crcfunext``). crcmod falls back to pure Python
    without a word when the extension is missing (crcmod 1.7 was source-only: no compiler, no
    extension), about 1,000 times slower: checked at the daemon's start and by ``quartier doctor``."""
    try:
        return importlib.util.find_spec("crcmod._crcfunext") is not None and bool(crcmod.crcmod._usingExtension)
    except (ImportError, AttributeError):
        return False


_DIGITS = re.compile(rb"[0-9A-Fa-f]{1,4}").fullmatch


def split_crc(frame: bytes) -> tuple[int, bytes | None]:
    """Return (index of the final '!', the CRC digits written after it, or None when there are none).

    Raises ValueError when the frame holds no '!' at all: it is not a framed telegram.
    """
    bang = frame.rfind(b"!")
    if bang < 0:
        raise ValueError("no '!' in frame: not a complete telegram")
    digits = frame[bang + 1 :].strip(b"\r\n\x00")
    return bang, digits or None


def check(frame: bytes) -> bool | None:
    """True if the CRC matches, False if it does not (or is not 1-4 hex digits), None if the
    telegram carries none. A frame without '/' before its '!' is not a telegram: False."""
    try:
        bang, digits = split_crc(frame)
    except ValueError:
        return False
    if digits is None:
        return None
    start = frame.find(b"/")
    if _DIGITS(digits) is None or start < 0 or start > bang:
        return False
    return int(digits, 16) == crc16(frame[start : bang + 1])

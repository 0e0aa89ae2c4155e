"""Is the Pi's clock synchronised? Asked of the kernel, as ``timedatectl`` does.

Readings stamped with the Pi's clock (Flukso, DSMR 2.2 without a meter time) are only as good as that
clock; after a power cut a Pi without RTC boots in the past until NTP answers.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_TIME_ERROR = 5  # adjtimex() result while the kernel clock is flagged unsynchronised


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 256)]


def clock_synchronised() -> bool | None:
    """True/False from adjtimex(2); None where it cannot be asked (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        tx.modes = 0  # read only
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR

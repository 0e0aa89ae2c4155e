"""P1 telegram engine: framing, CRC16 and OBIS decoding for DSMR 2.2-5.0 and Belgian e-MUCS H.

Importing ``p1`` loads nothing yet: each name below is imported from its module on first use
(PEP 562), so a process that only needs ``p1.source``'s settings — the web service reading the
node's configuration — does not carry the parser and crcmod (1.5 MB of a node's memory budget).
The serial reader (pyserial) lives in ``p1.serial_reader`` and is imported only by code that opens a
port.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p1.crc import check, crc16
    from p1.decode import parse_telegram
    from p1.framing import Framer
    from p1.telegram import Dialect, Entry, MBusDevice, ObisValue, Telegram

_HOME = {
    "check": "p1.crc", "crc16": "p1.crc", "parse_telegram": "p1.decode", "Framer": "p1.framing",
    "Dialect": "p1.telegram", "Entry": "p1.telegram", "MBusDevice": "p1.telegram", "ObisValue": "p1.telegram",
    "Telegram": "p1.telegram",
}

__all__ = [
    "Dialect",
    "Entry",
    "Framer",
    "MBusDevice",
    "ObisValue",
    "Telegram",
    "check",
    "crc16",
    "iter_telegrams",
    "parse_telegram",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'p1' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once imported, an ordinary module attribute
    return value


def iter_telegrams(stream: Iterable[bytes], max_buffer: int | None = None) -> Iterator[Telegram]:
    """Frame and decode a byte stream given in chunks of any size (a file, a socket, a capture).

    At the end of the stream a last telegram whose CRC line was cut off is still yielded (its CRC
    verdict says whether it can be trusted).
    """
    from p1.decode import parse_telegram
    from p1.framing import Framer

    framer = Framer() if max_buffer is None else Framer(max_buffer)
    for chunk in stream:
        for frame in framer.feed(chunk):
            yield parse_telegram(frame)
    for frame in framer.flush():
        yield parse_telegram(frame)

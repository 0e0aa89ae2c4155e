"""P1 telegram engine: framing, CRC16 and OBIS decoding for DSMR 2.2-5.0 and Belgian e-MUCS H.

Importing ``p1`` loads only the standard library and crcmod; the serial reader (pyserial) lives in
``p1.serial_reader`` and is imported only by code that opens a port.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from p1.crc import check, crc16
from p1.decode import parse_telegram
from p1.framing import Framer
from p1.telegram import Dialect, Entry, MBusDevice, ObisValue, Telegram

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


def iter_telegrams(stream: Iterable[bytes], max_buffer: int | None = None) -> Iterator[Telegram]:
    """Frame and decode a byte stream given in chunks of any size (a file, a socket, a capture).

    At the end of the stream a last telegram whose CRC line was cut off is still yielded (its CRC
    verdict says whether it can be trusted).
    """
    framer = Framer() if max_buffer is None else Framer(max_buffer)
    for chunk in stream:
        for frame in framer.feed(chunk):
            yield parse_telegram(frame)
    for frame in framer.flush():
        yield parse_telegram(frame)

"""Cutting a P1 byte stream into telegrams, whatever the chunking and whatever the line noise.

A serial port hands over bytes in arbitrary pieces: half a line, three telegrams at once, a burst
of garbage when the cable is plugged in. A telegram starts with '/' and ends with '!' followed by
its CRC line (4 hex digits, sometimes 3, none on DSMR 2.2/3) and CRLF. The framer keeps only the
bytes that can still become a telegram, so memory stays bounded on any input.

Rules, chosen so that the result does not depend on how the stream is split:
- bytes before a '/' are discarded;
- a '/' met before the '!' restarts the telegram there (the previous one was cut short);
- after '!', up to 4 hex digits, then an optional CR and LF; anything else (e.g. the next
  telegram's '/' glued to the CRC) ends the frame without its CRLF;
- a telegram whose '/'…'!' span exceeds ``max_buffer`` bytes is dropped (``overflows``).
"""

from __future__ import annotations

from gateway.logs import get_logger

log = get_logger("quartier.p1")

_SLASH = 0x2F
_CR = 0x0D
_LF = 0x0A
_HEX = frozenset(b"0123456789abcdefABCDEF")

DEFAULT_MAX_BUFFER = 16 * 1024  # the longest real telegram (e-MUCS, 13-month history) is ~1.4 KiB


class Framer:
    """Incremental framer: ``feed(chunk)`` returns the telegrams the chunk completed.

    Frames are returned as raw bytes from '/' through the CRC line's CRLF (or through "!" CRLF
    for telegrams without CRC). ``discarded_bytes`` counts bytes thrown away as garbage or as part
    of a cut-short or oversized telegram; ``overflows`` counts telegrams dropped for size.
    """

    __slots__ = ("_buf", "_scanned", "discarded_bytes", "frames", "max_buffer", "overflows")

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        if max_buffer < 16:
            raise ValueError(f"max_buffer must be at least 16 bytes, got {max_buffer}")
        self.max_buffer = max_buffer
        self.discarded_bytes = 0
        self.overflows = 0
        self.frames = 0
        self._buf = bytearray()
        # bytes 1.._scanned-1 of _buf are known to hold neither '/' nor '!'
        self._scanned = 1

    @property
    def buffered(self) -> int:
        """Bytes currently held waiting for the end of a telegram."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial telegram (after a reconnect, the old bytes cannot continue)."""
        self.discarded_bytes += len(self._buf)
        self._buf.clear()
        self._scanned = 1

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes from the stream; return the complete frames they finished, in order.

        Never raises on content; TypeError if ``data`` is not bytes-like.
        """
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while buf:
            if buf[0] != _SLASH:
                start = buf.find(b"/")
                if start < 0:
                    self.discarded_bytes += len(buf)
                    buf.clear()
                    break
                self.discarded_bytes += start
                del buf[:start]
                self._scanned = 1
            bang = buf.find(b"!", self._scanned)
            end_scan = bang if bang >= 0 else len(buf)
            restart = buf.rfind(b"/", self._scanned, end_scan)
            if restart > 0:  # a new header before the end: the telegram before it was cut short
                self.discarded_bytes += restart
                del buf[:restart]
                self._scanned = 1
                continue
            if bang < 0:
                self._scanned = len(buf)
                if len(buf) > self.max_buffer:
                    self._overflow(len(buf))
                break
            if bang + 1 > self.max_buffer:
                self._overflow(bang + 1)
                continue
            end = self._crc_line_end(buf, bang)
            if end < 0:  # the CRC line is not complete yet
                self._scanned = bang
                break
            out.append(bytes(buf[:end]))
            del buf[:end]
            self._scanned = 1
        self.frames += len(out)
        return out

    def flush(self) -> list[bytes]:
        """At the end of a finite stream: return a last frame whose CRC line was cut off, if any."""
        buf = self._buf
        out: list[bytes] = []
        if buf and buf[0] == _SLASH:
            bang = buf.find(b"!", 1)
            if 0 < bang < self.max_buffer:
                out.append(bytes(buf))
                buf.clear()
        self.reset()
        self.frames += len(out)
        return out

    def _overflow(self, size: int) -> None:
        """Drop the oversized telegram at the head of the buffer (through its '!' if seen)."""
        self.overflows += 1
        self.discarded_bytes += size
        del self._buf[:size]
        self._scanned = 1
        log.warning("telegram.overflow", extra={"bytes": size, "max_buffer": self.max_buffer})

    @staticmethod
    def _crc_line_end(buf: bytearray, bang: int) -> int:
        """Index just past the CRC line that follows '!' at ``bang``, or -1 if more bytes are needed."""
        n = len(buf)
        k = bang + 1
        stop = min(n, k + 4)
        while k < stop and buf[k] in _HEX:
            k += 1
        if k == n:
            return -1
        c = buf[k]
        if c == _CR:
            if k + 1 == n:
                return -1
            return k + 2 if buf[k + 1] == _LF else k + 1
        if c == _LF:
            return k + 1
        return k

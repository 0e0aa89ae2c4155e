"""Reading telegrams from the meter's P1 port, through unplugged cables and unknown line settings.

DSMR 4/5 and e-MUCS H meters talk 115200 baud 8N1, DSMR 2.2/3 meters 9600 baud 7E1. Without a
configured baud rate the reader listens with each setting in turn until a telegram passes its
check, then stays there. A USB P1 cable that is pulled out makes reads fail; the reader then closes
the port, retries with a growing delay (capped) forever, and says so in the log
(``serial.disconnected`` / ``serial.reconnected``), so a daemon thread can simply iterate.

This is the only module of ``p1`` that imports pyserial.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import serial

try:  # pyserial lets termios.error (not an OSError) through when the kernel refuses a setting
    from termios import error as _TermiosError

    _LINE_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, _TermiosError)
except ImportError:  # pragma: no cover - non-POSIX
    _LINE_ERRORS = (serial.SerialException, OSError)

from typing import Self

from gateway.logs import get_logger
from p1.decode import parse_telegram
from p1.framing import DEFAULT_MAX_BUFFER, Framer
from p1.telegram import Telegram

log = get_logger("quartier.p1")


@dataclass(frozen=True, slots=True)
class LineSettings:
    """Baud rate and character framing of the serial line."""

    baudrate: int
    bytesize: int
    parity: str
    stopbits: int

    def __str__(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


DSMR4_SETTINGS = LineSettings(115200, serial.EIGHTBITS, serial.PARITY_NONE, serial.STOPBITS_ONE)
DSMR2_SETTINGS = LineSettings(9600, serial.SEVENBITS, serial.PARITY_EVEN, serial.STOPBITS_ONE)
AUTO_ORDER = (DSMR4_SETTINGS, DSMR2_SETTINGS)


def settings_for(baudrate: int) -> LineSettings:
    """The P1 settings that go with a baud rate: 9600 is DSMR 2.2/3 (7E1), anything else 8N1."""
    if baudrate == 9600:
        return DSMR2_SETTINGS
    return LineSettings(baudrate, serial.EIGHTBITS, serial.PARITY_NONE, serial.STOPBITS_ONE)


def is_valid(t: Telegram) -> bool:
    """A telegram that proves the line settings are right: CRC ok, or no CRC but clean content."""
    return t.crc_ok is True or (t.crc_ok is None and bool(t.values) and not t.errors)


class SerialReader:
    """Blocking iterator of telegrams from a serial port, reconnecting forever until ``close()``.

    ``baudrate=None`` auto-detects between 115200 8N1 and 9600 7E1: each is tried for
    ``detect_timeout`` seconds (a DSMR 4 meter sends only every 10 s). Counters ``telegrams``,
    ``crc_errors``, ``disconnects`` and ``reconnects`` may be read from any thread.
    """

    def __init__(
        self,
        port: str,
        baudrate: int | None = None,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        detect_timeout: float = 11.0,
        read_timeout: float = 0.5,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        if reconnect_delay <= 0 or max_reconnect_delay < reconnect_delay:
            raise ValueError("reconnect_delay must be > 0 and <= max_reconnect_delay")
        self.port = port
        self.auto = baudrate is None
        self.settings: LineSettings = AUTO_ORDER[0] if baudrate is None else settings_for(baudrate)
        self.locked = not self.auto  # settings known good (configured, or detected)
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.detect_timeout = detect_timeout
        self.read_timeout = read_timeout
        self.framer = Framer(max_buffer)
        self.telegrams = 0
        self.crc_errors = 0
        self.disconnects = 0
        self.reconnects = 0
        self._stop = threading.Event()
        self._serial: serial.Serial | None = None
        self._port_lock = threading.Lock()  # close() must not cancel a read on a port being closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """``close()`` was called: the iteration has ended or is about to."""
        return self._stop.is_set()

    @property
    def connected(self) -> bool:
        """The port is open right now (False while waiting to reconnect)."""
        return self._serial is not None

    def close(self) -> None:
        """Stop the iteration (from any thread): a blocked read is cancelled, the port closed."""
        self._stop.set()
        with self._port_lock:
            ser = self._serial
            if ser is not None:
                try:
                    ser.cancel_read()
                except (*_LINE_ERRORS, AttributeError):
                    pass

    def __iter__(self) -> Iterator[Telegram]:
        delay = self.reconnect_delay
        lost_at: float | None = None  # monotonic time the port was lost, while it stays lost
        attempts = 0
        ever_opened = False
        while not self._stop.is_set():
            try:
                ser = self._open()
            except (*_LINE_ERRORS, ValueError) as exc:
                attempts += 1
                log.warning(
                    "serial.open_failed",
                    extra={"port": self.port, "error": str(exc), "attempt": attempts, "retry_in_s": round(delay, 1)},
                )
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
                continue
            if lost_at is not None:
                self.reconnects += 1
                log.info(
                    "serial.reconnected",
                    extra={"port": self.port, "after_s": round(time.monotonic() - lost_at, 1), "attempts": attempts, "settings": str(self.settings)},
                )
                lost_at = None
            elif not ever_opened:
                log.info("serial.opened", extra={"port": self.port, "settings": str(self.settings), "auto": self.auto})
            ever_opened = True
            delay = self.reconnect_delay
            attempts = 0
            switch = False
            try:
                switch = yield from self._read(ser)
            except _LINE_ERRORS as exc:
                self.disconnects += 1
                lost_at = time.monotonic()
                log.warning("serial.disconnected", extra={"port": self.port, "error": str(exc)})
            finally:
                with self._port_lock:
                    self._serial = None
                self.framer.reset()  # a telegram cut by a disconnect or a settings change cannot go on
                try:
                    ser.close()
                except _LINE_ERRORS:
                    pass
            if switch:
                self._next_settings()  # and reopen at once with them
            elif lost_at is not None:
                self._stop.wait(delay)
        log.info("serial.closed", extra={"port": self.port, "telegrams": self.telegrams})

    def _open(self) -> serial.Serial:
        s = self.settings
        ser = serial.Serial(
            self.port,
            baudrate=s.baudrate,
            bytesize=s.bytesize,
            parity=s.parity,
            stopbits=s.stopbits,
            timeout=self.read_timeout,
            xonxoff=False,
            rtscts=False,
        )
        with self._port_lock:
            self._serial = ser
        if self._stop.is_set():  # close() raced with the open: make sure the read returns at once
            ser.cancel_read()
        return ser

    def _read(self, ser: serial.Serial) -> Generator[Telegram, None, bool]:
        """Yield telegrams until closed (returns False) or, when detecting, until the line has been
        silent for too long with these settings (returns True: try the next ones)."""
        last_valid = time.monotonic()
        while not self._stop.is_set():
            data = ser.read(ser.in_waiting or 1)
            if data:
                waiting = ser.in_waiting
                if waiting:
                    data += ser.read(waiting)
                for frame in self.framer.feed(data):
                    t = parse_telegram(frame)
                    self.telegrams += 1
                    if t.crc_ok is False:
                        self.crc_errors += 1
                        log.info("telegram.crc_failed", extra={"port": self.port, "crc_errors": self.crc_errors})
                    if is_valid(t):
                        last_valid = time.monotonic()
                        if not self.locked:
                            self.locked = True
                            log.info("serial.detected", extra={"port": self.port, "settings": str(self.settings)})
                    yield t
            if self.auto and time.monotonic() - last_valid > self._silence_limit():
                return True
        return False

    def _silence_limit(self) -> float:
        # once detected, only a long silence (meter swapped?) makes the reader search again
        return self.detect_timeout if not self.locked else 5 * self.detect_timeout

    def _next_settings(self) -> None:
        """No valid telegram for too long: listen with the next candidate settings.

        The port is reopened rather than reconfigured in place: pyserial applies a change one
        attribute at a time, and a kernel may refuse the intermediate 7N1 or 8E1.
        """
        index = AUTO_ORDER.index(self.settings) if self.settings in AUTO_ORDER else -1
        new = AUTO_ORDER[(index + 1) % len(AUTO_ORDER)]
        log.info("serial.settings_switch", extra={"port": self.port, "from": str(self.settings), "to": str(new), "was_detected": self.locked})
        self.settings = new
        self.locked = False

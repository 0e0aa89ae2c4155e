"""SerialReader through the real pyserial code path, on a pty pair standing in for the P1 cable.

The cable is reached through a symlink (like /dev/p1 from a udev rule); "unplugging" closes the
pty pair and removes the link, "plugging in" makes a new pair and points the link at it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import pytest

from p1 import Telegram
from p1.serial_reader import DSMR2_SETTINGS, DSMR4_SETTINGS, SerialReader

FIXTURES = Path(__file__).parent / "fixtures" / "p1"
EMUCS = (FIXTURES / "be_emucs_fluvius_v171_gas_water.txt").read_bytes()
DSMR22 = (FIXTURES / "nl_dsmr22_iskra_mt382_no_crc.txt").read_bytes()

pytestmark = pytest.mark.timeout(60)


class PtyCable:
    """A pty pair behind a symlink, with a thread sending ``telegram`` every ``interval`` seconds."""

    def __init__(self, link: Path, telegram: bytes = EMUCS, interval: float = 0.05) -> None:
        self.link = link
        self.telegram = telegram
        self.interval = interval
        self.sending = True
        self.garbled: Callable[[], bool] = lambda: False  # True: the reader's line settings are wrong
        self.sent = 0
        self._lock = threading.Lock()  # the writer must never write to a closed (reused) fd
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no CR/LF translation or echo before the reader configures the line
        os.set_blocking(master, False)  # a full pty drops bytes, as a serial line would
        with self._lock:
            self._master, self._slave = master, slave
            tmp = self.link.with_suffix(".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(os.ttyname(slave))
            tmp.replace(self.link)

    def unplug(self) -> None:
        with self._lock:
            self.link.unlink(missing_ok=True)
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None

    def line_settings(self) -> list:
        """The termios attributes of the pty as the reader left them (shared by all its fds)."""
        with self._lock:
            assert self._slave is not None
            return termios.tcgetattr(self._slave)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._master is None or not self.sending:
                    continue
                # at the wrong speed or framing a UART delivers junk: here every byte with its top
                # bit set, as 7E1 data read as 8N1 looks, so never a '/' the framer could use
                data = bytes(b | 0x80 for b in self.telegram) if self.garbled() else self.telegram
                try:
                    os.write(self._master, data)
                    self.sent += 1
                except (BlockingIOError, OSError):
                    pass

    def __enter__(self) -> Self:
        self.plug()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.unplug()


class ReaderThread:
    """Iterates a SerialReader in a daemon thread, as the gateway does."""

    def __init__(self, reader: SerialReader) -> None:
        self.reader = reader
        self.telegrams: queue.Queue[Telegram] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for t in self.reader:
            self.telegrams.put(t)

    def take(self, n: int, timeout: float = 10.0) -> list[Telegram]:
        return [self.telegrams.get(timeout=timeout) for _ in range(n)]

    def stop(self) -> None:
        self.reader.close()
        self.thread.join(5)
        assert not self.thread.is_alive(), "close() did not stop the iteration"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def cable(tmp_path: Path) -> Iterator[PtyCable]:
    with PtyCable(tmp_path / "p1") as c:
        yield c


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "quartier.p1" and r.getMessage() == name]


def test_reads_telegrams_at_a_fixed_baud_rate(cable: PtyCable) -> None:
    reader = SerialReader(str(cable.link), baudrate=115200, read_timeout=0.1)
    rt = ReaderThread(reader)
    try:
        got = rt.take(3)
    finally:
        rt.stop()
    assert all(t.crc_ok is True and t.raw == EMUCS for t in got)
    assert reader.telegrams >= 3 and reader.crc_errors == 0
    assert reader.settings == DSMR4_SETTINGS


def test_survives_the_cable_being_unplugged_and_plugged_back(cable: PtyCable, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="quartier.p1")
    reader = SerialReader(str(cable.link), baudrate=115200, reconnect_delay=0.05, max_reconnect_delay=0.2, read_timeout=0.1)
    rt = ReaderThread(reader)
    try:
        rt.take(2)
        cable.unplug()
        wait_for(lambda: reader.disconnects == 1)
        wait_for(lambda: len(events(caplog, "serial.open_failed")) >= 2)  # the link is gone: retrying
        while not rt.telegrams.empty():
            rt.telegrams.get_nowait()
        cable.plug()
        after = rt.take(3)  # and telegrams flow again
        assert all(t.crc_ok is True for t in after)
        assert reader.reconnects == 1
    finally:
        rt.stop()
    (lost,) = events(caplog, "serial.disconnected")
    assert lost.port == str(cable.link) and lost.levelno == logging.WARNING
    (back,) = events(caplog, "serial.reconnected")
    assert back.port == str(cable.link) and back.after_s >= 0


def test_auto_detection_falls_back_to_9600_7e1(cable: PtyCable, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="quartier.p1")
    cable.telegram = DSMR22  # a DSMR 2.2 meter: 9600 7E1, heard as junk at 115200 8N1
    reader = SerialReader(str(cable.link), baudrate=None, detect_timeout=0.5, read_timeout=0.05)
    cable.garbled = lambda: reader.settings != DSMR2_SETTINGS
    rt = ReaderThread(reader)
    try:
        (t,) = rt.take(1)
        assert t.crc_ok is None and t.values["1-0:1.8.1"].unit == "kWh"
        wait_for(lambda: reader.locked)
        # the line really was reconfigured: the kernel reports 9600 baud on the pty (a pty keeps
        # the speed but not the character size, so 7E1 is checked on the pyserial port object)
        ispeed, ospeed = cable.line_settings()[4:6]
        assert (ispeed, ospeed) == (termios.B9600, termios.B9600)
        port = reader._serial
        assert port is not None and (port.bytesize, port.parity, port.stopbits) == (7, "E", 1)
    finally:
        rt.stop()
    switch = events(caplog, "serial.settings_switch")[0]
    assert (getattr(switch, "from"), switch.to) == ("115200 8N1", "9600 7E1")
    assert reader.framer.discarded_bytes > 0  # the junk heard at 115200 8N1 was thrown away
    assert events(caplog, "serial.detected")[0].settings == "9600 7E1"


def test_auto_detection_keeps_115200_when_telegrams_pass(cable: PtyCable) -> None:
    reader = SerialReader(str(cable.link), baudrate=None, detect_timeout=5, read_timeout=0.05)
    rt = ReaderThread(reader)
    try:
        rt.take(2)
        assert reader.locked and reader.settings == DSMR4_SETTINGS
        assert cable.line_settings()[4:6] == [termios.B115200, termios.B115200]
    finally:
        rt.stop()


def test_close_from_another_thread_while_the_port_is_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="quartier.p1")
    reader = SerialReader(str(tmp_path / "nothing-here"), reconnect_delay=5, max_reconnect_delay=5)
    rt = ReaderThread(reader)
    wait_for(lambda: bool(events(caplog, "serial.open_failed")))
    started = time.monotonic()
    rt.stop()  # asserts the thread ended
    assert time.monotonic() - started < 4  # did not sit out the 5 s retry delay
    assert reader.closed and reader.telegrams == 0


def test_close_interrupts_a_blocked_read(cable: PtyCable) -> None:
    cable.sending = False
    reader = SerialReader(str(cable.link), baudrate=115200, read_timeout=30)  # a read that would block 30 s
    rt = ReaderThread(reader)
    wait_for(lambda: reader.connected)
    time.sleep(0.1)
    started = time.monotonic()
    rt.stop()
    assert time.monotonic() - started < 4


def test_crc_errors_are_counted_and_yielded(cable: PtyCable) -> None:
    cable.telegram = EMUCS.replace(b"1-0:1.8.1(000000.034", b"1-0:1.8.1(000000.035")
    reader = SerialReader(str(cable.link), baudrate=115200, read_timeout=0.1)
    rt = ReaderThread(reader)
    try:
        got = rt.take(2)
    finally:
        rt.stop()
    assert [t.crc_ok for t in got] == [False, False] and all(t.values == {} for t in got)
    assert reader.crc_errors >= 2


def test_cli_read_prints_live_telegrams(cable: PtyCable) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    text = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "p1", "read", "--port", str(cable.link), "--count", "2"],
        check=False, capture_output=True, text=True, timeout=30, env=env,
    )
    assert text.returncode == 0, text.stderr
    assert text.stdout.count("CRC ok") == 2
    assert "1-0:1.8.1     imported energy, tariff 1" in text.stdout and "0.034 kWh" in text.stdout
    assert "serial.opened" in text.stderr
    as_json = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "p1", "read", "--port", str(cable.link), "--baudrate", "115200", "--json", "--count", "1"],
        check=False, capture_output=True, text=True, timeout=30, env=env,
    )
    assert as_json.returncode == 0, as_json.stderr
    (line,) = as_json.stdout.splitlines()
    obj = json.loads(line)
    assert obj["crc_ok"] is True and obj["values"]["1-0:1.8.1"] == {"value": 0.034, "unit": "kWh"}

"""A simulated meter behind a pseudo-terminal: the daemon opens it like the real P1 serial port.

``PtyMeter`` owns a pty pair and a writer thread that sends ``MeterSimulator`` telegrams to the
master side; the reader opens the slave (or a stable symlink to it) with pyserial at 115200 baud.
It behaves like a meter's P1 port, not like a pipe:

- it keeps sending whether anyone reads or not. The slave's input queue holds 4 KB (Linux n_tty);
  a telegram that would not fit is dropped whole and counted in :attr:`PtyMeter.dropped`, so a
  reader that comes late gets at most a few stale telegrams, never a blocked meter;
- :meth:`PtyMeter.unplug` closes the pair and removes the symlink (an open reader gets an error, the
  device vanishes); :meth:`PtyMeter.replug` creates a new pair and re-points the symlink. The meter
  keeps metering while unplugged: the next telegram integrates the whole gap.

Pacing: simulated time runs ``speed`` times faster than real time. One telegram is written per
``step_s`` simulated seconds, where ``step_s`` is the smallest divisor of 900 with
``speed / step_s <= max_rate``; telegram times are multiples of ``step_s`` (UTC), so every
quarter-hour boundary gets a telegram stamped exactly on it. Examples with ``max_rate=20``:
speed 1 -> 1 s steps, 1 telegram/s; speed 60 -> 3 s steps, 20/s; speed 900 -> 45 s steps, 20/s;
speed 3600 -> 180 s steps, 20/s. Above speed 18000 the step stays at 900 s and the rate exceeds
``max_rate``. If the writer falls behind by more than a second of real time (a suspended machine),
it re-anchors instead of bursting: simulated time then runs slower than ``speed`` for that while.
"""

from __future__ import annotations

import array
import fcntl
import os
import termios
import threading
import time
import tty
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Self

from demo.meter import MeterSimulator
from gateway.logs import get_logger

log = get_logger("quartier.gateway")

_TTY_QUEUE = 4095  # Linux N_TTY_BUF_SIZE - 1: what the slave's input queue holds
_QUARTER_S = 900
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def step_for(speed: float, max_rate: float = 20.0) -> int:
    """Simulated seconds per telegram: the smallest divisor of 900 keeping the rate <= max_rate."""
    if speed <= 0 or max_rate <= 0:
        raise ValueError("speed and max_rate must be > 0")
    for step in (d for d in range(1, _QUARTER_S + 1) if _QUARTER_S % d == 0):
        if speed / step <= max_rate:
            return step
    return _QUARTER_S


def _ceil_to_step(t: datetime, step_s: int) -> datetime:
    us = (t - _EPOCH) // timedelta(microseconds=1)
    step_us = step_s * 1_000_000
    return _EPOCH + timedelta(microseconds=-(-us // step_us) * step_us)


class PtyMeter:
    """A simulated P1 port: a pty pair fed by a thread, with unplug/replug for fault tests.

    Use as a context manager (``with PtyMeter(sim, speed=60, link=tmp/"p1") as meter:``) or call
    :meth:`start` and :meth:`stop`. While running, the writer thread is the simulator's only driver;
    faults (``corrupt_next``, ``replace_meter``, ``clock_offset``) may be injected on the simulator
    from any thread.
    """

    def __init__(
        self,
        simulator: MeterSimulator,
        *,
        speed: float = 1.0,
        max_rate: float = 20.0,
        link: str | os.PathLike[str] | None = None,
    ) -> None:
        self.simulator = simulator
        self.speed = float(speed)
        self.step_s = step_for(speed, max_rate)
        self.link = Path(link) if link is not None else None
        self.written = 0  # telegrams delivered to the pty
        self.dropped = 0  # telegrams lost because nobody read (queue full) or the write failed
        self.error: BaseException | None = None  # what stopped the writer thread, if anything
        self._sim_time = _ceil_to_step(simulator.time, self.step_s)
        self._fds_lock = threading.Lock()  # fds are swapped by unplug/replug while the thread writes
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._full = False  # inside a run of dropped telegrams (log once per run)
        self._open_pair()

    # ------------------------------------------------------------------ public surface
    @property
    def path(self) -> str:
        """What to pass to pyserial: the symlink if one was asked for, else the slave device."""
        return str(self.link) if self.link is not None else self._slave_name

    @property
    def device(self) -> str:
        """The current slave device (a new pair at every replug; the kernel may reuse the number)."""
        return self._slave_name

    @property
    def plugged(self) -> bool:
        return self._master is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def sim_time(self) -> datetime:
        """Simulated time of the last telegram tick (or of the first one, before it is written)."""
        return self._sim_time

    def start(self) -> PtyMeter:
        if self._thread is not None:
            raise RuntimeError("PtyMeter already started")
        self._thread = threading.Thread(target=self._run, name="pty-meter", daemon=True)
        self._thread.start()
        log.info("pty_meter.started", extra={"path": self.path, "speed": self.speed, "step_s": self.step_s})
        return self

    def stop(self) -> None:
        """Stop the writer, close the pair and remove the symlink. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._close_pair()
        log.info("pty_meter.stopped", extra={"written": self.written, "dropped": self.dropped})

    def unplug(self) -> None:
        """Pull the cable: close the pty pair and remove the symlink. No-op when already unplugged."""
        if self._close_pair():
            log.info("pty_meter.unplugged", extra={"path": self.path})

    def replug(self) -> None:
        """Plug back in: a new pty pair (a new device name) and the symlink re-pointed to it."""
        if not self.plugged:
            self._open_pair()
            log.info("pty_meter.replugged", extra={"path": self.path, "device": self._slave_name})

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ pty plumbing
    def _open_pair(self) -> None:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            attrs = termios.tcgetattr(slave)
            attrs[4] = attrs[5] = termios.B115200  # ispeed, ospeed: what a P1 port runs at
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
            os.set_blocking(master, False)
            name = os.ttyname(slave)
            if self.link is not None:
                tmp = self.link.with_name(self.link.name + ".tmp")
                tmp.unlink(missing_ok=True)
                os.symlink(name, tmp)
                os.replace(tmp, self.link)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        with self._fds_lock:
            self._master, self._slave, self._slave_name = master, slave, name

    def _close_pair(self) -> bool:
        with self._fds_lock:
            master, slave = self._master, self._slave
            self._master = self._slave = None
        if master is None:
            return False
        if self.link is not None:
            self.link.unlink(missing_ok=True)
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
        return True

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a crashed meter must say why, once
            self.error = exc
            log.exception("pty_meter.failed", extra={"error": repr(exc)})

    def _loop(self) -> None:
        step = timedelta(seconds=self.step_s)
        anchor_real, anchor_sim, k = time.monotonic(), self._sim_time, 0
        while not self._stop.is_set():
            delay = anchor_real + k * self.step_s / self.speed - time.monotonic()
            if delay > 0:
                if self._stop.wait(delay):
                    break
            elif delay < -1.0:  # fell behind (suspended, overloaded): re-anchor rather than burst
                anchor_real, anchor_sim, k = time.monotonic(), anchor_sim + k * step, 0
            self._sim_time = anchor_sim + k * step
            self._emit(self._sim_time)
            k += 1

    def _emit(self, sim_time: datetime) -> None:
        with self._fds_lock:
            if self._master is None:
                return  # unplugged: the meter keeps metering, the next telegram covers the gap
            telegram = self.simulator.telegram_at(sim_time)
            queued = array.array("i", [0])
            fcntl.ioctl(self._slave, termios.FIONREAD, queued)
            if queued[0] + len(telegram) > _TTY_QUEUE:
                self._drop("queue_full")
                return
            try:
                n = os.write(self._master, telegram)
            except (BlockingIOError, OSError):
                self._drop("write_failed")
                return
        if n < len(telegram):  # torn telegram: the reader's framing will discard it
            self._drop("partial_write")
            return
        self.written += 1
        if self._full:
            self._full = False
            log.info("pty_meter.reader_back", extra={"dropped": self.dropped})

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        if not self._full:
            self._full = True
            log.info("pty_meter.dropping", extra={"reason": reason, "path": self.path})

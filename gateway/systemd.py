"""systemd service notifications (sd_notify), without libsystemd.

``Type=notify`` units wait for ``READY=1``; ``WatchdogSec=`` restarts the daemon unless ``WATCHDOG=1``
keeps arriving. The daemon feeds the watchdog only while telegrams arrive, so a meter that fell
silent (or a wedged reader thread) gets the service restarted instead of a green light forever.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send one notification; a no-op (False) outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), addr)
        return True
    except OSError:
        return False


def watchdog_interval_s() -> float | None:
    """Half the unit's WatchdogSec, the usual feeding period; None when no watchdog applies to us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None

"""Reload the community file while the server runs: joining or leaving is a file edit, not a restart.

The server's ticker asks :meth:`CommunityFileWatcher.poll` every few seconds; it reads the file again
when its modification time or size changed, or when ``SIGHUP`` asked for it (``systemctl reload``).
A file that does not load (a typo, a meter in two operations) is logged with the key named and the
running roster is kept: a bad edit never stops allocation.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from gateway.logs import get_logger
from services.allocation.errors import AllocationInputError
from services.allocation.model import Community, load_community
from services.community.roster import Roster

log = get_logger("quartier.community.reload")


class CommunityFileWatcher:
    """Loads ``path`` again when it changed; ``build`` turns a community into the server's roster."""

    def __init__(self, path: str | Path, build: Callable[[Community], Roster]) -> None:
        self.path = Path(path)
        self.build = build
        self._stamp = self._stat()
        self._asked = threading.Event()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def request(self) -> None:
        """Reload at the next poll whatever the file's time says (the SIGHUP handler calls this)."""
        self._asked.set()

    def poll(self) -> Roster | None:
        """A new roster if the file changed and loads, else None (the error is logged)."""
        stamp = self._stat()
        if stamp == self._stamp and not self._asked.is_set():
            return None
        self._asked.clear()
        self._stamp = stamp
        try:
            return self.build(load_community(self.path))
        except (AllocationInputError, ValueError, OSError) as exc:
            log.error("community.reload_refused", extra={"file": str(self.path), "error": str(exc)})
            return None

"""The web service's end of the daemon's live feed (gateway/live.py): a Unix socket client that
reconnects forever.

The daemon may start after the web service, restart, or drop this client when it falls behind; each
time the client connects again and the daemon sends the latest reading of each meter first. While the
socket is gone the state says so (the page shows "gateway offline", the signal turns uncertain).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from gateway.logs import get_logger

log = get_logger("quartier.services.web")

MAX_LINE = 64 * 1024


class LiveClient:
    """Reads newline-delimited JSON from ``path`` and hands each object to ``on_message``."""

    def __init__(
        self,
        path: str | Path,
        on_message: Callable[[dict], None],
        on_connected: Callable[[bool], None],
        *,
        retry_s: float = 0.5,
        retry_max_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.on_message = on_message
        self.on_connected = on_connected
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.connects = 0
        self.messages = 0
        self.bad_lines = 0

    async def run(self) -> None:
        """Forever (until cancelled): connect, read, and on any loss wait a little and connect again."""
        delay = self.retry_s
        announced_down = False
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path), limit=MAX_LINE)
            except (OSError, ValueError) as exc:
                if not announced_down:
                    log.warning("web.gateway_unreachable", extra={"path": str(self.path), "error": str(exc)})
                    announced_down = True
                    self.on_connected(False)
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)
                continue
            self.connects += 1
            delay = self.retry_s
            announced_down = False
            log.info("web.gateway_connected", extra={"path": str(self.path)})
            self.on_connected(True)
            try:
                await self._read(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                log.warning("web.gateway_lost", extra={"error": str(exc) or type(exc).__name__})
            finally:
                writer.close()
            log.warning("web.gateway_disconnected", extra={"path": str(self.path)})
            announced_down = True
            self.on_connected(False)
            await asyncio.sleep(self.retry_s)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return  # the daemon closed the connection (stopped, or dropped us)
            try:
                msg = json.loads(line)
            except ValueError:
                self.bad_lines += 1
                continue
            if isinstance(msg, dict):
                self.messages += 1
                self.on_message(msg)

"""Structured logging: one line per event, ``key=value`` fields after the message.

Library code logs with ``logger.info("telegram.crc_failed", extra={"meter": mid, "count": n})``;
the event name stays grep-able and the fields say what happened to which meter.

Every project logger comes from :func:`get_logger`: a field named like a ``LogRecord`` attribute
(``message``, ``name``, ``args``...) would make ``logging`` raise inside the call and lose the event
(issue 13: the alert endpoint answered 500), so such a field is renamed ``<key>_`` instead.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
RESERVED: frozenset[str] = frozenset(_STANDARD)
"""Keys ``Logger.makeRecord`` refuses in ``extra`` (or that would shadow a record attribute)."""


def safe_extra(extra: Mapping[str, object] | None) -> dict[str, object]:
    """``extra`` with every reserved key renamed ``<key>_`` (``message`` -> ``message_``): the field is
    kept and shown, the logging call can never raise."""
    if not extra:
        return {}
    out: dict[str, object] = {}
    for key, value in extra.items():
        while key in RESERVED or key in out:
            key = f"{key}_"
        out[key] = value
    return out


class StructuredLogger(logging.LoggerAdapter):
    """A ``Logger`` whose ``extra`` can never collide with ``LogRecord`` attributes.

    ``logging.LoggerAdapter`` in Python 3.11 replaces a call's ``extra`` by its own; this one keeps
    the call's fields and renames reserved keys (:func:`safe_extra`)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def process(self, msg: object, kwargs: MutableMapping[str, Any]) -> tuple[object, MutableMapping[str, Any]]:
        if "extra" in kwargs:
            kwargs["extra"] = safe_extra(kwargs["extra"])
        return msg, kwargs

    def __repr__(self) -> str:
        return f"<StructuredLogger {self.logger.name}>"


def get_logger(name: str) -> StructuredLogger:
    """The project's only way to get a logger (a static test checks the sources for ``getLogger``)."""
    return StructuredLogger(logging.getLogger(name))


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    """``2026-11-23T12:00:00Z INFO quartier.p1 serial.reconnected port=/dev/p1 after_s=3.0``."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        parts = [ts, record.levelname, record.name, record.getMessage()]
        for key, value in _fields(record).items():
            text = str(value)
            if not text or any(c in text for c in ' ="'):
                text = json.dumps(text, ensure_ascii=False)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info and record.levelno >= logging.ERROR and logging.getLogger().isEnabledFor(logging.DEBUG):
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald/Loki shippers."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        obj.update({k: v if isinstance(v, (int, float, bool, type(None))) else str(v) for k, v in _fields(record).items()})
        return json.dumps(obj, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text", stream=None) -> None:
    """Configure the root logger once for a command-line process (never called by library code)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # third-party chatter stays at WARNING unless we debug
    for noisy in ("urllib3", "influxdb_client", "asyncio", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG)

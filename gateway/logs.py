"""Structured logging: one line per event, ``key=value`` fields after the message.

Library code logs with ``logger.info("telegram.crc_failed", extra={"meter": mid, "count": n})``;
the event name stays grep-able and the fields say what happened to which meter.

Every project logger comes from :func:`get_logger`: a field named like a ``LogRecord`` attribute
(``message``, ``name``, ``args``...) would make ``logging`` raise inside the call and lose the event
(issue 13: the alert endpoint answered 500), so such a field is renamed ``<key>_`` instead.

Under systemd, stderr is a journald stream (``JOURNAL_STREAM`` names it): each line then starts with
its syslog priority (``<4>`` for a warning), so ``journalctl -p warning`` finds warnings and errors,
and carries no timestamp of its own (journald stamps every line). No line ever carries a terminal
colour code: uvicorn's ``color_message`` field is dropped and escape sequences are removed.
"""

from __future__ import annotations

import json
import logging
import os
import re
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


# fields third-party libraries add for their own console output: uvicorn's ``color_message`` is the
# message again with ANSI colour codes, which journald would store as escape bytes
_DROPPED = frozenset({"color_message"})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

# syslog priorities (sd-daemon(3)): what journald reads from a ``<N>`` line prefix
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (custom levels round down to the nearest known one)."""
    for threshold in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= threshold:
            return _PRIORITY[threshold]
    return _PRIORITY[logging.DEBUG]


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", text) if "\x1b" in text else text


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items()
            if k not in _STANDARD and k not in _DROPPED and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    """``2026-11-23T12:00:00Z INFO quartier.p1 serial.reconnected port=/dev/p1 after_s=3.0``.

    ``timestamps=False`` leaves the time out: journald records it, a second one only takes room."""

    converter = time.gmtime

    def __init__(self, *, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        parts = [record.levelname, record.name, strip_ansi(record.getMessage())]
        if self.timestamps:
            parts.insert(0, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)))
        for key, value in _fields(record).items():
            text = strip_ansi(str(value))
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
            "event": strip_ansi(record.getMessage()),
        }
        obj.update({k: v if isinstance(v, (int, float, bool, type(None))) else strip_ansi(str(v))
                    for k, v in _fields(record).items()})
        return json.dumps(obj, ensure_ascii=False)


class JournalPriorityFormatter(logging.Formatter):
    """Wraps a formatter for a journald stream: every line of a record (a traceback is several)
    starts with ``<N>``, the record's syslog priority, which journald strips and stores as PRIORITY."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def is_journal_stream(stream) -> bool:
    """Whether ``stream`` is the journald stream systemd connected this service to: ``JOURNAL_STREAM``
    is ``<device>:<inode>`` of that stream (systemd.exec(5)). A child that redirects its stderr to a
    file inherits the variable but not the stream, hence the comparison."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (AttributeError, OSError, ValueError):  # io.StringIO, a closed stream, a malformed variable
        return False


def setup_logging(level: str = "INFO", fmt: str = "text", stream=None) -> None:
    """Configure the root logger once for a command-line process (never called by library code)."""
    stream = stream or sys.stderr
    journal = is_journal_stream(stream)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else KeyValueFormatter(timestamps=not journal)
    if journal:
        formatter = JournalPriorityFormatter(formatter)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # third-party chatter stays at WARNING unless we debug
    for noisy in ("urllib3", "influxdb_client", "asyncio", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG)
    # uvicorn's own loggers go through this handler only (uvicorn is always run with log_config=None)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers[:] = []
        uv.propagate = True

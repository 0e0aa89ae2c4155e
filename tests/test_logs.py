"""Structured logging cannot lose an event to a field name: every logger comes from
``gateway.logs.get_logger``, reserved ``LogRecord`` names are renamed, and no source passes one."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
from pathlib import Path

import pytest

from gateway.logs import RESERVED, JsonFormatter, KeyValueFormatter, get_logger, safe_extra

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "p1", "flukso", "services", "demo", "bench", "tests")


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _record(fields: dict) -> logging.LogRecord:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    log = get_logger("quartier.test.logs")
    log.logger.addHandler(handler)
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    try:
        log.info("test.event", extra=fields)
    finally:
        log.logger.removeHandler(handler)
    (record,) = records
    return record


@pytest.mark.parametrize("key", ["message", "msg", "args", "name", "module", "filename", "lineno", "created",
                                 "levelname", "process", "thread", "asctime", "exc_info", "stack_info", "taskName"])
def test_a_reserved_field_name_is_renamed_and_still_shown(key: str):
    record = _record({key: "x1", "meter": "m1"})
    assert record.getMessage() == "test.event" and getattr(record, f"{key}_") == "x1" and record.meter == "m1"
    assert "x1" in KeyValueFormatter().format(record).split("test.event", 1)[1]
    assert json.loads(JsonFormatter().format(record))[f"{key}_"] == "x1"


def test_safe_extra_keeps_ordinary_fields_and_never_overwrites_one():
    assert safe_extra({"meter": "m", "count": 3}) == {"meter": "m", "count": 3}
    assert safe_extra({"message_": 1, "message": 2}) == {"message_": 1, "message__": 2}
    assert not set(safe_extra({k: 0 for k in RESERVED})) & RESERVED


def test_exception_and_level_calls_go_through_the_helper(caplog):
    log = get_logger("quartier.test.logs")
    with caplog.at_level(logging.DEBUG, logger="quartier.test.logs"):
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("test.failed", extra={"message": "m"})
        log.log(logging.WARNING, "test.logged", extra={"name": "n"})
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("ERROR", "test.failed"), ("WARNING", "test.logged")]
    assert caplog.records[0].exc_info and caplog.records[0].funcName == "test_exception_and_level_calls_go_through_the_helper"


def test_no_source_takes_a_logger_from_logging_directly():
    pattern = re.compile(r"""logging\.getLogger\(\s*["']quartier""")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in _sources() if p.name != "test_logs.py"
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"use gateway.logs.get_logger: {offenders}"


def test_no_logging_call_passes_a_reserved_key_in_extra():
    """The second line of defence: a literal ``extra={...}`` (or ``extra=dict(...)``) never names a
    ``LogRecord`` attribute, even though get_logger would rename it."""
    offenders = []
    for path in _sources():
        if path.name == "test_logs.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg != "extra":
                    continue
                keys: list[str] = []
                if isinstance(kw.value, ast.Dict):
                    keys = [k.value for k in kw.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
                elif isinstance(kw.value, ast.Call) and getattr(kw.value.func, "id", None) == "dict":
                    keys = [k.arg for k in kw.value.keywords if k.arg]
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {k!r}" for k in keys if k in RESERVED]
    assert not offenders, f"reserved LogRecord attributes in extra=: {offenders}"


# -- journald: priorities, one timestamp, no terminal colours (issue 17) ---------------------------


def _log_through_setup(path: Path, journal_stream: str | None, monkeypatch, fmt: str = "text") -> list[str]:
    """Log a few records through setup_logging into the file ``path`` and return its lines."""
    from gateway.logs import setup_logging

    if journal_stream is None:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    else:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream)
    with open(path, "w", encoding="utf-8") as stream:
        setup_logging("INFO", fmt, stream=stream)
        log = get_logger("quartier.test.journal")
        log.info("test.info", extra={"meter": "m1"})
        log.warning("test.warning")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("test.error")
        # what uvicorn does at start: the message, and the same with ANSI colours in an extra field
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 42,
                                                extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
        log.info("test.\x1b[1mbold\x1b[0m", extra={"who": "\x1b[31mred\x1b[0m"})
        for handler in logging.getLogger().handlers:
            handler.flush()
    return path.read_text(encoding="utf-8").splitlines()


def _stream_id(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def test_under_journald_every_line_has_its_syslog_priority_and_no_timestamp(tmp_path, monkeypatch):
    out = tmp_path / "journal"
    out.touch()
    lines = _log_through_setup(out, _stream_id(out), monkeypatch)
    assert all(re.match(r"<[0-7]>", line) for line in lines), lines  # a traceback's lines too
    assert lines[0] == "<6>INFO quartier.test.journal test.info meter=m1"
    assert lines[1] == "<4>WARNING quartier.test.journal test.warning"
    assert lines[2] == "<3>ERROR quartier.test.journal test.error"
    assert "<6>INFO uvicorn.error Started server process [42]" in lines
    text = "\n".join(lines)
    assert "\x1b" not in text and "color_message" not in text
    assert "<6>INFO quartier.test.journal test.bold who=red" in lines
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text)  # journald stamps the lines itself


def test_on_a_terminal_or_a_file_lines_keep_their_timestamp_and_no_prefix(tmp_path, monkeypatch):
    out = tmp_path / "file.log"
    lines = _log_through_setup(out, None, monkeypatch)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO quartier.test.journal test.info meter=m1", lines[0])
    assert not any(line.startswith("<") for line in lines)
    assert "\x1b" not in "\n".join(lines) and "color_message" not in "\n".join(lines)
    # JOURNAL_STREAM inherited by a process whose stderr is a file (the demo's web.log): not the journal
    other = tmp_path / "other"
    other.touch()
    lines = _log_through_setup(out, _stream_id(other), monkeypatch)
    assert not any(line.startswith("<") for line in lines) and re.match(r"\d{4}-", lines[0])


def test_json_lines_under_journald_carry_the_priority_prefix(tmp_path, monkeypatch):
    out = tmp_path / "journal"
    out.touch()
    lines = _log_through_setup(out, _stream_id(out), monkeypatch, fmt="json")
    first = lines[0]
    assert first.startswith("<6>{")
    assert json.loads(first[3:])["event"] == "test.info"
    assert any(line.startswith("<4>{") and json.loads(line[3:])["event"] == "test.warning" for line in lines)
    assert "\x1b" not in "\n".join(lines) and "color_message" not in "\n".join(lines)


def test_syslog_priorities():
    from gateway.logs import syslog_priority

    assert [syslog_priority(n) for n in (5, 10, 20, 25, 30, 40, 50)] == [7, 7, 6, 6, 4, 3, 2]


def test_each_line_of_a_traceback_keeps_the_priority():
    from gateway.logs import JournalPriorityFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("quartier.x", logging.ERROR, __file__, 1, "x.failed", None, sys.exc_info())
    logging.getLogger().setLevel(logging.DEBUG)  # tracebacks are shown at DEBUG
    lines = JournalPriorityFormatter(KeyValueFormatter(timestamps=False)).format(record).split("\n")
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines) and "ValueError: boom" in lines[-1]

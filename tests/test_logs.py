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

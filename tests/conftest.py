"""Shared fixtures. Sections: logging, real servers (started per test on free loopback ports), the store.

Server fixtures fail, never skip, when a binary is missing: `.ci/run` installs the Debian packages,
and a CI run that silently skipped the database tests would prove nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.logs import get_logger, setup_logging
from gateway.model import QUARTER, Quality, QuarterHour
from gateway.store import Store
from tests.servers import Mosquitto, ServerProcess, ServerUnavailable, VictoriaMetrics

# -- logging ----------------------------------------------------------------------------------------


class _Discard:
    """A stream that drops what it is given: the records are formatted (that is the check), not kept."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass


LOGGING_ERRORS: list[str] = []


def _strict_handle_error(record: logging.LogRecord) -> None:
    """Called by a handler inside ``except``: note the failure for the test and re-raise it."""
    LOGGING_ERRORS.append(f"{record.name} {record.msg!r}")
    raise  # noqa: PLE0704 - re-raises the exception being handled


@pytest.fixture(autouse=True)
def strict_logging() -> Iterator[None]:
    """Every test logs at DEBUG through the project's own setup (JSON formatter, every record
    formatted), and a logging error fails it: production logs at INFO, and a record that cannot be
    made or formatted there is a lost event or a 500 (issue 13). Applied again per test because
    commands run in-process reconfigure the root logger."""
    logging.raiseExceptions = True
    setup_logging("DEBUG", "json", stream=_Discard())
    for handler in logging.getLogger().handlers:
        handler.handleError = _strict_handle_error  # type: ignore[method-assign]
    get_logger("quartier").setLevel(logging.DEBUG)
    LOGGING_ERRORS.clear()
    yield
    errors, LOGGING_ERRORS[:] = list(LOGGING_ERRORS), []
    if errors:
        pytest.fail(f"logging errors (a record that could not be formatted): {errors}", pytrace=False)


# -- real servers -----------------------------------------------------------------------------------


S = TypeVar("S", bound=ServerProcess)


def _started(make: Callable[[], S]) -> S:
    """Build and start a server; a missing binary or a failed start fails the test (never skips)."""
    problem = None
    try:
        server = make()
        server.start()
        return server
    except ServerUnavailable as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A running VictoriaMetrics (InfluxDB v2 write API at ``.url``); ``.stop()``/``.start()`` for outages."""
    server = _started(lambda: VictoriaMetrics(tmp_path / "victoria-metrics"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running Mosquitto broker at ``.host``:``.port`` with persistence; ``.stop()``/``.start()`` for outages."""
    server = _started(lambda: Mosquitto(tmp_path / "mosquitto"))
    try:
        yield server
    finally:
        server.close()


# -- the store --------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store with an ``influx`` outbox, Europe/Brussels totals."""
    s = Store(tmp_path / "quartier.sqlite", sinks=("influx",))
    try:
        yield s
    finally:
        s.close()


QuarterHourFactory = Callable[..., list[QuarterHour]]


@pytest.fixture
def make_quarter_hours() -> QuarterHourFactory:
    """``make_quarter_hours("m1", start, n)``: consecutive two-tariff quarter-hours whose registers
    chain (each one's end registers are the next one's start), with varied whole-Wh energies."""

    def make(
        meter_id: str,
        start: datetime,
        n: int,
        *,
        quality: Quality = Quality.MEASURED,
        source: str = "p1",
        base_register: int = 1_000_000,
    ) -> list[QuarterHour]:
        out = []
        reg_imp = {"1": base_register, "2": base_register // 2}
        reg_exp = {"1": base_register // 4, "2": base_register // 8}
        first = datetime.fromtimestamp(start.timestamp(), timezone.utc)
        for i in range(n):
            t = first + i * QUARTER
            k = int(t.timestamp()) // 900
            tariff = "1" if (k // 4) % 24 in range(7, 21) else "2"  # day tariff 07:00-21:00 UTC
            imp = {"1": 0, "2": 0}
            exp = {"1": 0, "2": 0}
            imp[tariff] = (k * 37 + len(meter_id) * 11) % 400
            exp[tariff] = (k * 53) % 150 if tariff == "1" else 0
            reg_imp = {t_: reg_imp[t_] + imp[t_] for t_ in reg_imp}
            reg_exp = {t_: reg_exp[t_] + exp[t_] for t_ in reg_exp}
            out.append(
                QuarterHour(
                    meter_id=meter_id,
                    start=t,
                    import_wh=sum(imp.values()),
                    export_wh=sum(exp.values()),
                    quality=quality,
                    import_by_tariff=imp,
                    export_by_tariff=exp,
                    end_import_register=dict(reg_imp),
                    end_export_register=dict(reg_exp),
                    flags=(),
                    source=source,
                )
            )
        return out

    return make

"""Dates, months and instants typed by a person or a client: parsed and range-checked in one place.

Python's ``date`` goes from year 1 to 9999, but a day's end, a month's end or a UTC offset steps past
either edge (``9999-12-31`` + 1 day is an ``OverflowError``); issue 13 found such inputs answering 500.
Every date parameter of the web API, the operator API and the CLI goes through here and is refused
with the field's name instead. The range is wider than any meter's life, so no real query is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, tzinfo

FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)  # leaves room for a following day, month or time zone offset
RANGE = f"between {FIRST_DAY.isoformat()} and {LAST_DAY.isoformat()}"


class DateInputError(ValueError):
    """A bad date input; the message starts with the field's name (``from: ...``)."""


def check_day(day: date, field: str) -> date:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise DateInputError(f"{field}: {day.isoformat()} is out of range ({RANGE})")
    return day


def check_instant(t: datetime, field: str) -> datetime:
    """An aware datetime whose UTC day is in range (a naive one is taken as UTC for the check)."""
    utc = t.replace(tzinfo=UTC) if t.tzinfo is None else t
    try:
        day: date | None = utc.astimezone(UTC).date()
    except OverflowError:
        day = None
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        raise DateInputError(f"{field}: {t.isoformat()} is out of range ({RANGE})")
    return t


def parse_day(value: str, field: str) -> date:
    """``YYYY-MM-DD``, in range."""
    try:
        day = date.fromisoformat(value) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) else None
    except ValueError:
        day = None
    if day is None:
        raise DateInputError(f"{field}: {value!r} is not a date (YYYY-MM-DD)")
    return check_day(day, field)


def parse_month(value: str, field: str) -> tuple[int, int]:
    """``YYYY-MM``, in range: (year, month)."""
    m = re.fullmatch(r"(\d{4})-(\d{2})", value)
    if m is None or not 1 <= int(m.group(2)) <= 12:
        raise DateInputError(f"{field}: {value!r} is not a month (YYYY-MM, e.g. 2026-06)")
    year, month = int(m.group(1)), int(m.group(2))
    if not FIRST_DAY.year <= year <= LAST_DAY.year:
        raise DateInputError(f"{field}: {value!r} is out of range ({RANGE})")
    return year, month


def parse_instant(value: str, field: str, *, naive: tzinfo | None = None) -> datetime:
    """ISO 8601 date-time (``Z`` or an offset); a naive one gets ``naive`` or is refused."""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DateInputError(f"{field}: {value!r} is not an ISO 8601 date or date-time") from None
    if t.tzinfo is None:
        if naive is None:
            raise DateInputError(f"{field}: {value!r} has no UTC offset (add Z or +01:00)")
        t = t.replace(tzinfo=naive)
    return check_instant(t, field)

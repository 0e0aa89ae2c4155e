"""Meter timestamps (YYMMDDhhmmssX) as aware datetimes.

The flag X says which offset the meter's clock is on: S (summer, zomertijd/heure d'été) is
UTC+02:00, W (winter) is UTC+01:00; every P1 country here is on Central European Time. DSMR 2.2/3
MBus stamps carry no flag: the offset then follows the EU rule (summer time from the last Sunday of
March 01:00 UTC to the last Sunday of October 01:00 UTC), computed here so no tz database is needed.

Meters also write placeholders: an impossible date (632525252525W on a Fluvius meter with no peak
yet), or their clock's reset value (000101000001W, 700101010000W). Those come back as a reason,
never as a datetime.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

SUMMER = timezone(timedelta(hours=2))
WINTER = timezone(timedelta(hours=1))

# no P1 meter existed before this year: an earlier stamp is a clock reset value
EARLIEST_YEAR = 2005

_FLAGS = {"S": SUMMER, "s": SUMMER, "W": WINTER, "w": WINTER}
# two-digit fields by table lookup: twice as fast as int() and rejects anything but 00..99
_TWO = {f"{i:02d}": i for i in range(100)}
# two-digit years: 00-69 are 20xx, 70-99 are 19xx (700101... is the Unix epoch a dead clock sends)
_YEAR = {f"{i:02d}": (2000 + i if i < 70 else 1900 + i) for i in range(100)}


def _last_sunday(year: int, month: int) -> int:
    """Day of the month of the last Sunday of March or October (both have 31 days)."""
    weekday = datetime(year, month, 31).weekday()  # Monday=0 .. Sunday=6
    return 31 - (weekday + 1) % 7


def eu_offset(local: datetime) -> timezone:
    """CET/CEST offset of a naive local time by the EU rule (an ambiguous hour counts as summer)."""
    year = local.year
    start = datetime(year, 3, _last_sunday(year, 3), 2)  # 02:00 CET jumps to 03:00 CEST
    end = datetime(year, 10, _last_sunday(year, 10), 3)  # 03:00 CEST falls back to 02:00 CET
    return SUMMER if start <= local < end else WINTER


# Stamps repeat verbatim from one telegram to the next (peak history, MBus capture times, the
# monthly peak): a small memo saves most of the work on a live stream. Bounded: cleared when full.
_memo: dict[str, tuple[datetime | None, str | None]] = {}
_MEMO_SIZE = 512


def parse_timestamp(text: str) -> tuple[datetime | None, str | None]:
    """Decode a meter timestamp: (aware datetime, None) or (None, reason it is not a usable time)."""
    result = _memo.get(text)
    if result is None:
        result = _parse(text)
        if len(_memo) >= _MEMO_SIZE:
            _memo.clear()
        _memo[text] = result
    return result


def _parse(text: str) -> tuple[datetime | None, str | None]:
    n = len(text)
    if n == 13:
        tz = _FLAGS.get(text[12])
        if tz is None:
            return None, f"timestamp {text!r} has no S/W flag"
    elif n == 12:
        tz = None
    else:
        return None, f"timestamp {text!r} is not YYMMDDhhmmss[S|W]"
    two = _TWO
    try:
        year = _YEAR[text[0:2]]
        stamp = datetime(year, two[text[2:4]], two[text[4:6]], two[text[6:8]], two[text[8:10]], two[text[10:12]], 0, tz)
    except KeyError:
        return None, f"timestamp {text!r} is not YYMMDDhhmmss[S|W]"
    except ValueError:
        return None, f"timestamp {text!r} is not a date (meter placeholder)"
    if year < EARLIEST_YEAR:
        return None, f"timestamp {text!r} is before {EARLIEST_YEAR}: the meter's clock was not set"
    if tz is None:
        return stamp.replace(tzinfo=eu_offset(stamp)), None
    return stamp, None

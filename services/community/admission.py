"""What a member's figure must pass before the community server stores or uses it. Pure.

A member's payload is a claim by that member (docs: design.md, "Trust"): the broker vouches for
*who* sent it (its username is its pseudonym), nothing vouches for *what* it says. A figure outside
what a residential connection can physically do, or a quarter-hour outside the window the server can
still settle, is refused with a reason; the caller files it as a dead letter, it never reaches the
ledger, the allocation or the signal.

Bounds:
- a quarter-hour's start lies on a 15-minute boundary (UTC) and within
  ``[now - max_age_s, now + future_tolerance_s]`` on the server's clock: older than the resend
  horizon (40 days, ``gateway.uplink.RESEND_HORIZON``) nobody can send it again anyway; later than a
  small tolerance it has not happened yet (a meter clock a few minutes ahead is tolerated);
- an energy is a whole, non-negative number of Wh at most the member's maximum power x 15 min;
- a live power (and the running quarter-hour's energy) is finite, non-negative and bounded the same
  way.

The default maximum power is a large residential connection: three-phase 400 V, 63 A per phase
(sqrt(3) x 400 V x 63 A = 43.6 kW, so 10.9 kWh in a quarter-hour). A bigger member (a school, a
workshop) gets its own ``max_power_w`` in the community file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum

DEFAULT_MAX_POWER_W = 43_648  # 3-phase 400 V x 63 A: sqrt(3) * 400 * 63 = 43,647.6 W
QUARTER_S = 900
DEFAULT_MAX_AGE_S = 40 * 86400  # the nodes' resend horizon (gateway.uplink.RESEND_HORIZON)
DEFAULT_FUTURE_TOLERANCE_S = 900  # a meter clock ahead of the server's by up to a quarter-hour


class Refusal(StrEnum):
    """Why a figure was refused: a stable, countable code (the operator page groups by it)."""

    MALFORMED = "malformed"  # not the wire format (bad JSON, a field missing, negative, misaligned start)
    UNKNOWN_METER = "unknown_meter"  # a pseudonym the roster does not hold in that operation
    IDENTITY = "identity"  # the payload names another meter or operation than its topic
    MISALIGNED = "misaligned"  # a start not on a quarter-hour boundary
    TOO_OLD = "too_old"  # a start before the resend horizon
    FUTURE = "future"  # a start later than now + the tolerance
    NEGATIVE = "negative"
    NOT_FINITE = "not_finite"  # NaN or infinity
    ABOVE_MAX_POWER = "above_max_power"  # more than the connection can carry


@dataclass(frozen=True, slots=True)
class Limits:
    """The server's admission bounds (``[server]`` settings; the demo widens the time window)."""

    max_age_s: float = DEFAULT_MAX_AGE_S
    future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S
    default_max_power_w: float = DEFAULT_MAX_POWER_W


@dataclass(frozen=True, slots=True)
class Refused:
    """One refused figure: a code and a sentence for the log and the operator."""

    reason: Refusal
    detail: str


def max_quarter_hour_wh(max_power_w: float) -> int:
    """The most energy a connection of ``max_power_w`` can carry in one quarter-hour (Wh)."""
    return math.ceil(max_power_w * QUARTER_S / 3600)


def check_start(start: datetime, now_s: float, limits: Limits) -> Refused | None:
    """A quarter-hour start: aligned, and inside the window the server settles."""
    if start.tzinfo is None:
        return Refused(Refusal.MALFORMED, "start has no zone")
    utc = start.astimezone(timezone.utc)
    if utc.minute % 15 or utc.second or utc.microsecond:
        return Refused(Refusal.MISALIGNED, f"start {utc.isoformat()} is not on a quarter-hour boundary")
    try:
        start_s = utc.timestamp()
    except (OverflowError, ValueError, OSError):  # pragma: no cover - aware datetimes always convert
        return Refused(Refusal.FUTURE, f"start {utc.isoformat()} is out of range")
    if start_s < now_s - limits.max_age_s:
        days = limits.max_age_s / 86400
        return Refused(Refusal.TOO_OLD, f"start {utc.isoformat()} is more than {days:g} days old")
    if start_s > now_s + limits.future_tolerance_s:
        return Refused(Refusal.FUTURE, f"start {utc.isoformat()} is {start_s - now_s:.0f} s ahead of the server's clock")
    return None


def check_energy(what: str, wh: float, max_power_w: float) -> Refused | None:
    """One quarter-hour energy (Wh): finite, non-negative, at most max power x 15 min."""
    if not math.isfinite(wh):
        return Refused(Refusal.NOT_FINITE, f"{what} is {wh!r}")
    if wh < 0:
        return Refused(Refusal.NEGATIVE, f"{what} {wh:g} Wh is negative")
    cap = max_quarter_hour_wh(max_power_w)
    if wh > cap:
        return Refused(Refusal.ABOVE_MAX_POWER, f"{what} {wh:g} Wh is above {cap} Wh ({max_power_w:g} W x 15 min)")
    return None


def check_power(what: str, w: float, max_power_w: float) -> Refused | None:
    """One live power (W): finite, non-negative, at most the member's maximum power."""
    if not math.isfinite(w):
        return Refused(Refusal.NOT_FINITE, f"{what} is {w!r}")
    if w < 0:
        return Refused(Refusal.NEGATIVE, f"{what} {w:g} W is negative")
    if w > max_power_w:
        return Refused(Refusal.ABOVE_MAX_POWER, f"{what} {w:g} W is above {max_power_w:g} W")
    return None


def check_quarter_hour(start: datetime, import_wh: float, export_wh: float, now_s: float, max_power_w: float,
                       limits: Limits) -> Refused | None:
    """A closed quarter-hour of one member; ``None`` if it may be stored."""
    return (check_start(start, now_s, limits) or check_energy("import_wh", import_wh, max_power_w)
            or check_energy("export_wh", export_wh, max_power_w))


def check_live(import_w: float, export_w: float, qh_import_wh: float | None, qh_export_wh: float | None,
               max_power_w: float) -> Refused | None:
    """A live summary: its powers, and the running quarter-hour's energies when given.

    Its time is not checked: live totals run on the server's clock (services/community/live_totals.py),
    so a member's clock that is off cannot make its summary count longer or shorter."""
    for what, w in (("import_w", import_w), ("export_w", export_w)):
        if (bad := check_power(what, w, max_power_w)) is not None:
            return bad
    for what, wh in (("qh_import_wh", qh_import_wh), ("qh_export_wh", qh_export_wh)):
        if wh is not None and (bad := check_energy(what, wh, max_power_w)) is not None:
            return bad
    return None


def horizon_start(now_s: float, limits: Limits) -> datetime:
    """The oldest quarter-hour start the server accepts now (what a resend request may ask from)."""
    return datetime.fromtimestamp(now_s - limits.max_age_s, timezone.utc)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _start_of(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def screen_quarter_hour(raw: object, now_s: float, max_power_w: float, limits: Limits) -> Refused | None:
    """The same checks on a quarter-hour payload as parsed JSON, before the wire format is applied:
    a figure the format refuses too (a negative, a misaligned start, NaN) is named for what it is,
    not just "malformed". What cannot be read here is left to the wire format."""
    if not isinstance(raw, dict):
        return None
    start = _start_of(raw.get("start"))
    if start is not None and (bad := check_start(start, now_s, limits)) is not None:
        return bad
    for what in ("import_wh", "export_wh"):
        wh = _number(raw.get(what))
        if wh is not None and (bad := check_energy(what, wh, max_power_w)) is not None:
            return bad
    return None


def screen_live(raw: object, max_power_w: float) -> Refused | None:
    """:func:`check_live` on a live payload as parsed JSON (see :func:`screen_quarter_hour`)."""
    if not isinstance(raw, dict):
        return None
    for what in ("import_w", "export_w"):
        w = _number(raw.get(what))
        if w is not None and (bad := check_power(what, w, max_power_w)) is not None:
            return bad
    for what in ("qh_import_wh", "qh_export_wh"):
        wh = _number(raw.get(what))
        if wh is not None and (bad := check_energy(what, wh, max_power_w)) is not None:
            return bad
    return None

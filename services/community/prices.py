"""Which price is in force on a given day, and the billing periods. Pure.

The conventions (Aubange) say a price decided by the general assembly applies from the *next billing
period*: a version whose ``valid_from`` falls inside a period starts at the next period's start
(``billing.price_changes = "next_period"``, the default). A community that decided otherwise sets
``price_changes = "on_date"`` and a version applies from its ``valid_from``. The first version has
nothing to replace and applies from its ``valid_from`` either way.
"""

from __future__ import annotations

from datetime import date

from services.allocation.model import Operation
from services.allocation.terms import Billing, PriceVersion


class PriceError(ValueError):
    """No price for a day that needs one (the message names the day and the operation)."""


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    return date(d.year + y, m + 1, 1)


def period_start(billing: Billing, day: date) -> date:
    """The start of the billing period holding ``day`` (periods tile the calendar from
    ``first_period_start``'s month, every ``period_months`` months)."""
    anchor = billing.first_period_start.replace(day=1)
    months = (day.year - anchor.year) * 12 + day.month - anchor.month
    start = _add_months(anchor, (months // billing.period_months) * billing.period_months)
    return start


def effective_from(billing: Billing, version: PriceVersion, first: bool) -> date:
    """The first day a price version is charged."""
    if first or billing.price_changes == "on_date":
        return version.valid_from
    start = period_start(billing, version.valid_from)
    return start if start == version.valid_from else _add_months(start, billing.period_months)


def schedule(op: Operation) -> list[tuple[date, PriceVersion]]:
    """(first day charged, version), oldest first; a version overtaken before it starts is dropped."""
    out: list[tuple[date, PriceVersion]] = []
    for i, v in enumerate(op.prices):
        start = effective_from(op.billing, v, i == 0)
        while out and out[-1][0] >= start:
            out.pop()  # two decisions in one period: the later one is what the next period gets
        out.append((start, v))
    return out


def price_on(op: Operation, day: date, plan: list[tuple[date, PriceVersion]] | None = None) -> PriceVersion:
    """The version in force on ``day``; :class:`PriceError` if none is yet."""
    current = None
    for start, v in plan if plan is not None else schedule(op):
        if start <= day:
            current = v
        else:
            break
    if current is None:
        if not op.prices:
            raise PriceError(f"operation {op.id}: no [[operations.prices]] in the community file")
        raise PriceError(f"operation {op.id}: no price in force on {day} (the first one applies from "
                         f"{op.prices[0].valid_from})")
    return current

"""What a community agreed with its members beyond the key: prices with a history, billing, advances.

Part of the community file (``services/allocation/model.py``) so that one file describes an operation;
the allocation engine ignores all of it. The statement (décompte / afrekening) is computed from it in
``services/community/statement.py``. Money is ``Decimal`` (a TOML float is read through its shortest
decimal form, ``0.0494`` stays ``0.0494``; a string such as ``"0.0494"`` is accepted too). Example::

    [operations.billing]
    period_months = 12                 # billed once a year...
    first_period_start = 2026-01-01    # ...over periods starting on this date (the members' choice)
    price_changes = "next_period"      # a price applies from the next billing period (or "on_date")

    [[operations.prices]]
    valid_from = 2026-01-01
    shared_eur_kwh = 0.00              # the shared-energy price set by the general assembly, excl. VAT
    producer_eur_kwh = 0.00            # what a producer is paid per shared kWh
    vat = 0.21                         # or "exempt" (small-business exemption)
    levies = [{name = "excise", eur_kwh = 0.0475}, {name = "energy contribution", eur_kwh = 0.0019}]
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from .errors import AllocationInputError

MAX_PRICE = Decimal(10)  # EUR per kWh: anything above is a typo (c€ written as €, or Wh for kWh)
VAT_HINT = 'a fraction (0.21 for 21 %) or "exempt"'


def vat_setting(v: object) -> Decimal | str:
    """A VAT setting as written: ``"exempt"`` (any case) or a rate as a fraction, 0 <= rate < 1.

    One parser for the community's rate and a producer's, so both refuse ``21`` (a percentage) and
    ``nan`` with the same one-line reason and a path without pydantic's union branch in it."""
    if isinstance(v, str) and v.strip().lower() == "exempt":
        return "exempt"
    rate = None
    if isinstance(v, (int, float, str, Decimal)) and not isinstance(v, bool):
        try:
            rate = Decimal(str(v).strip())  # a TOML float through its shortest decimal form: 0.21 stays 0.21
        except InvalidOperation:
            pass
    if rate is None or not rate.is_finite() or not Decimal(0) <= rate < Decimal(1):
        raise ValueError(VAT_HINT)
    return rate


VatSetting = Annotated[Decimal | Literal["exempt"], BeforeValidator(vat_setting)]


def vat_rate(setting: Decimal | str) -> Decimal:
    """The rate charged: 0 when exempt."""
    return Decimal(0) if setting == "exempt" else Decimal(setting)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Levy(_Strict):
    """A per-kWh charge the community collects on shared energy (excise / accijnzen, energy contribution)."""

    name: str = Field(min_length=1, max_length=80)
    eur_kwh: Decimal = Field(ge=0, le=MAX_PRICE)


class PriceVersion(_Strict):
    """The prices from ``valid_from`` on (excl. VAT); the next version ends it."""

    valid_from: date
    shared_eur_kwh: Decimal = Field(ge=0, le=MAX_PRICE)
    producer_eur_kwh: Decimal = Field(Decimal(0), ge=0, le=MAX_PRICE)
    levies: tuple[Levy, ...] = ()
    vat: VatSetting = Decimal("0.21")

    @model_validator(mode="after")
    def _levy_names(self) -> PriceVersion:
        names = [lv.name for lv in self.levies]
        if len(names) != len(set(names)):
            raise ValueError(f"levies: a name given twice ({', '.join(names)})")
        return self

    @property
    def vat_rate(self) -> Decimal:
        """The VAT rate charged on members' lines: 0 when the community is exempt."""
        return vat_rate(self.vat)


class Billing(_Strict):
    """How often members are billed and when a new price starts to apply."""

    period_months: int = Field(12, ge=1, le=12)
    first_period_start: date = date(2000, 1, 1)
    price_changes: Literal["next_period", "on_date"] = "next_period"

    @field_validator("period_months")
    @classmethod
    def _divides_year(cls, v: int) -> int:
        if 12 % v:
            raise ValueError("1, 2, 3, 4, 6 or 12 (periods must tile the year)")
        return v


class Advance(_Strict):
    """An advance (acompte / voorschot) the member paid, settled against the statement of its date."""

    date: date
    eur: Decimal = Field(ge=0, le=Decimal(1_000_000))


def check_prices(prices: tuple[PriceVersion, ...]) -> None:
    """Versions in strictly increasing ``valid_from`` order (the file reads as a history)."""
    for i in range(1, len(prices)):
        if prices[i].valid_from <= prices[i - 1].valid_from:
            raise AllocationInputError(f"prices[{i}].valid_from",
                                       f"{prices[i].valid_from} is not after prices[{i - 1}].valid_from "
                                       f"({prices[i - 1].valid_from}): list the versions oldest first")

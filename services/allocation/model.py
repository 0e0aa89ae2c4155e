"""The community model: coordinator → community → sharing operation → members, from a TOML file.

One file describes one community (and the coordinator it belongs to) with its sharing operations
(opérations de partage, deelinitiatieven); allocation happens per operation. Example::

    [coordinator]
    id = "energie-commune"

    [community]
    id = "moulin"
    name = "CER du Moulin"
    kind = "CER"                     # ES, CER, CEC, REC, ... (free text)

    [[operations]]
    id = "moulin-ecole"
    preset = "aubange"               # or rounds = ["equal", "equal", "prorata"]
    timezone = "Europe/Brussels"     # months of the sizing simulation are local months
    [operations.settings]            # optional, see settings.Settings
    prorata_basis = "remaining"

    [[operations.members]]
    id = "m01"
    role = "consumer"                # consumer | producer | both | observer
    meter = "541448820000000017"     # EAN of the access point
    share = 0.05                     # agreed share for the specific/mixed key (fraction of the pool)
    # round_shares = [0.7, 0.3]      # optional: a share per round, when shares differ per round
    max_power_w = 43648              # optional: the connection's maximum power (W); default 3 x 400 V x 63 A
    # producer_vat = 0.21            # optional, a producer's: VAT on its credit (default "exempt")
    joined = 2026-03-15              # optional: member from this local day (default: from the beginning)
    left = 2026-10-01                # optional: no longer a member from this local day on (exclusive)
    shares = [{from = 2026-06-01, share = 0.08}]   # optional: agreed shares changed by decision
    flexible = [{kind = "dishwasher"}, {kind = "ev", energy_kwh = 10}]   # optional: loads for the simulation

Membership over time: a quarter-hour is allocated with the members active on its local day (in the
operation's time zone) and their shares of that day, also when it is re-run weeks later. One meter
in two operations on the same day is refused, naming both. Prices, billing and advances:
``services/allocation/terms.py``.

Validation (pydantic) names the offending entry as it appears in the file
(``operations[0].members[3].share: ...``).
"""

from __future__ import annotations

import math
import tomllib
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import AllocationInputError
from .flexible import FlexibleLoadSetting
from .presets import resolve_rounds
from .settings import SHARE_TOLERANCE, Settings
from .terms import Advance, Billing, PriceVersion, check_prices, vat_rate, vat_setting

# an observer is a meter watched without being a member (« compteur d'observation », the cabin or feeder
# meter): provisioned and reporting like a member, never in an allocation
Role = Literal["consumer", "producer", "both", "observer"]
_ID = r"^[^\s,;\"]+$"  # ids become CSV column names and JSON keys: no blanks, separators or quotes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShareChange(_Strict):
    """An agreed share (specific key) decided to apply from a local day on."""

    from_: date = Field(alias="from")
    share: float = Field(ge=0, le=1)


class Member(_Strict):
    """A member's access point. A producer shares only its net injection (after self-consumption)."""

    id: str = Field(min_length=1, max_length=64, pattern=_ID)
    name: str = ""
    role: Role = "consumer"
    meter: str | None = Field(None, min_length=1, description="EAN of the access point (meter id)")
    share: float | None = Field(None, ge=0, le=1, description="agreed share for the specific and mixed keys")
    round_shares: list[Annotated[float, Field(ge=0, le=1)] | None] | None = Field(
        None,
        max_length=3,
        description="agreed share per round when shares differ per round (one entry per round; "
        "null: the member's share); under the mixed key a member without a share is pro rata",
    )
    # the connection's maximum power (W): the community server refuses a quarter-hour above it x 15 min
    # or a live power above it; unset, a large residential connection (services/community/admission.py)
    max_power_w: float | None = Field(None, gt=0, le=100_000_000, description="connection's maximum power (W)")
    joined: date | None = None  # first local day as a member; None: from the beginning
    left: date | None = None  # first local day no longer a member (exclusive); None: still one
    shares: tuple[ShareChange, ...] = ()  # share changes, oldest first; ``share`` holds before the first
    # honest savings (statement, sheet): the member's supplier's *energy* price (EUR/kWh incl. VAT) and
    # the fee it charges a sharing participant per meter and year (Engie 121, Eneco 74.20, ...), incl. VAT
    supplier_energy_eur_kwh: Decimal | None = Field(None, ge=0, le=10)
    supplier_sharing_fee_eur_year: Decimal | None = Field(None, ge=0, le=10_000)
    advances: tuple[Advance, ...] = ()  # advances paid (acompte / voorschot), settled on the statement
    # VAT on a producer's credit (statement): a household producer charges none ("exempt"), a
    # VAT-registered one (a company, a cooperative) invoices the community its rate (0.21)
    producer_vat: Decimal | Literal["exempt"] = "exempt"
    # flexible loads for ``quartier simulate`` (what following the signal is worth): allocation/flexible.py
    flexible: tuple[FlexibleLoadSetting, ...] = ()

    @field_validator("producer_vat", mode="before")
    @classmethod
    def _producer_vat(cls, v: object, info: ValidationInfo) -> Decimal | str:
        try:
            return vat_setting(v)
        except ValueError as exc:  # the path gives the member's place in the file; say which member too
            raise ValueError(f"member {info.data.get('id', '?')!r}: {exc}") from None

    @property
    def producer_vat_rate(self) -> Decimal:
        """The VAT rate on this producer's credit: 0 when exempt."""
        return vat_rate(self.producer_vat)

    def active_on(self, day: date) -> bool:
        """Whether this is a member on that local day."""
        return (self.joined is None or self.joined <= day) and (self.left is None or day < self.left)

    def share_on(self, day: date) -> float | None:
        """The agreed share in force on that local day."""
        current = self.share
        for change in self.shares:
            if change.from_ <= day:
                current = change.share
        return current

    def overlaps(self, other: Member) -> bool:
        """Whether the two memberships have a day in common."""
        starts_before_other_ends = other.left is None or self.joined is None or self.joined < other.left
        ends_after_other_starts = self.left is None or other.joined is None or other.joined < self.left
        return starts_before_other_ends and ends_after_other_starts
    # the member's language for what the community prints (``quartier community sheets``); None: the default
    language: Literal["fr", "nl", "en"] | None = None

    @property
    def receives(self) -> bool:
        return self.role in ("consumer", "both")

    @property
    def produces(self) -> bool:
        return self.role in ("producer", "both")

    @property
    def observer(self) -> bool:
        return self.role == "observer"


class Operation(_Strict):
    """A sharing operation: its members and how its pool is allocated."""

    id: str = Field(min_length=1, pattern=_ID)
    name: str = ""
    rounds: list[str] | None = None
    preset: str | None = None
    settings: Settings = Settings()
    timezone: str = "Europe/Brussels"
    members: list[Member] = Field(min_length=1)
    prices: tuple[PriceVersion, ...] = ()  # the price history (terms.py); empty: no statement possible
    billing: Billing = Billing()

    @model_validator(mode="after")
    def _coherent(self) -> Operation:
        check_operation(self)
        return self

    @property
    def key_rounds(self) -> tuple[str, ...]:
        """The rounds, from the explicit list or the preset."""
        return resolve_rounds(self.rounds, self.preset)

    @property
    def key_label(self) -> str:
        return self.preset if self.preset is not None else ",".join(self.key_rounds)

    @property
    def participants(self) -> list[str]:
        """Members that can receive (consumers and producer-consumers), in file order."""
        return [m.id for m in self.members if m.receives]

    @property
    def producers(self) -> list[str]:
        return [m.id for m in self.members if m.produces]

    @property
    def shares(self) -> dict[str, float] | None:
        """Agreed shares of the participants, or None when nobody has one."""
        found = {m.id: m.share for m in self.members if m.receives and m.share is not None}
        return found or None

    @property
    def round_shares(self) -> list[dict[str, float]] | None:
        """The shares of each round when some member's differ per round (``round_shares``), else None."""
        if not any(m.round_shares for m in self.members):
            return None
        out: list[dict[str, float]] = []
        for i in range(len(self.key_rounds)):
            found: dict[str, float] = {}
            for m in self.members:
                own = m.round_shares[i] if m.round_shares and i < len(m.round_shares) else None
                value = own if own is not None else m.share
                if m.receives and value is not None:
                    found[m.id] = value
            out.append(found)
        return out

    def member(self, member_id: str) -> Member:
        for m in self.members:
            if m.id == member_id:
                return m
        raise KeyError(member_id)


def check_operation(op: Operation) -> None:
    """Rules across fields; raises ``AllocationInputError`` with a field path inside the operation."""
    rounds = resolve_rounds(op.rounds, op.preset)
    try:
        ZoneInfo(op.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise AllocationInputError("timezone", f"unknown time zone {op.timezone!r} (e.g. Europe/Brussels)") from None
    seen: dict[str, int] = {}
    meters: dict[str, int] = {}
    for i, m in enumerate(op.members):
        if m.id in seen:
            raise AllocationInputError(f"members[{i}].id", f"duplicate member id {m.id!r} (also members[{seen[m.id]}])")
        seen[m.id] = i
        if m.meter is not None:
            if m.meter in meters:
                raise AllocationInputError(f"members[{i}].meter", f"meter {m.meter} is already members[{meters[m.meter]}]'s")
            meters[m.meter] = i
        if not m.receives and (m.share is not None or m.shares or m.round_shares is not None):
            field = "round_shares" if m.share is None and not m.shares else "share"
            who = "a producer-only member" if m.role == "producer" else "an observer meter"
            raise AllocationInputError(f"members[{i}].{field}", f"{who} receives nothing: remove its share")
        if not m.produces and "producer_vat" in m.model_fields_set:
            raise AllocationInputError(f"members[{i}].producer_vat", f"member {m.id!r} ({m.role}) shares no "
                                       "production, remove producer_vat")
        if m.round_shares is not None and len(m.round_shares) != len(rounds):
            raise AllocationInputError(f"members[{i}].round_shares", f"{len(m.round_shares)} entries for {len(rounds)} rounds")
        if m.joined is not None and m.left is not None and m.left <= m.joined:
            raise AllocationInputError(f"members[{i}].left", f"{m.left} is not after joined ({m.joined})")
        for j in range(1, len(m.shares)):
            if m.shares[j].from_ <= m.shares[j - 1].from_:
                raise AllocationInputError(f"members[{i}].shares[{j}].from", "share changes must be listed oldest first")
        # a share from the member's first day: `share`, or a dated share from its joining day on
        share_from_start = m.share is not None or (
            bool(m.shares) and m.joined is not None and m.shares[0].from_ <= m.joined)
        for r, key in enumerate(rounds):
            own = m.round_shares[r] if m.round_shares is not None else None
            if key == "specific" and m.receives and own is None and not share_from_start:
                where = "share" if m.round_shares is None else f"round_shares[{r}]"
                raise AllocationInputError(f"members[{i}].{where}", "missing (the specific key needs a share for every consumer)")
    check_prices(op.prices)
    # the agreed shares must fit in 100 % on every day, in every round: check each day something changes
    days = {date.min} | {d for m in op.members for d in (m.joined, m.left) if d is not None}
    days |= {c.from_ for m in op.members for c in m.shares}
    for day in sorted(days):
        active = [m for m in op.members if m.active_on(day)]
        when = "" if day == date.min else f" from {day}"
        total = math.fsum(m.share_on(day) or 0.0 for m in active)
        if total > 1 + SHARE_TOLERANCE:
            raise AllocationInputError("members[*].share", f"shares sum to {total:.6g} = {total:.4%}{when}, more than 100%")
        if any(m.round_shares for m in active):
            for r in range(len(rounds)):
                total = math.fsum(
                    (m.round_shares[r] if m.round_shares and m.round_shares[r] is not None else m.share_on(day)) or 0.0
                    for m in active
                )
                if total > 1 + SHARE_TOLERANCE:
                    raise AllocationInputError(f"members[*].round_shares[{r}]",
                                               f"shares of round {r + 1} sum to {total:.4%}{when}, more than 100%")
    fractions = op.settings.pool_fractions
    if fractions is not None and len(fractions) != len(rounds):
        raise AllocationInputError("settings.pool_fractions", f"{len(fractions)} fractions for {len(rounds)} rounds (one per round)")
    if not op.participants:
        raise AllocationInputError("members", "no consumer: an operation needs at least one member that receives")


def check_meters_across_operations(community: Community) -> None:
    """A meter belongs to one operation's pool at a time: the grid operator would count it once, so a
    meter in two operations on the same day is refused, naming both (it used to leave the first
    operation's pool silently). Successive memberships (moving from one operation to another) are fine."""
    where: dict[str, list[tuple[int, int, Member]]] = {}
    for i, op in enumerate(community.operations):
        for j, m in enumerate(op.members):
            if m.meter is None:
                continue
            for oi, oj, other in where.get(m.meter, []):
                if oi != i and m.overlaps(other):
                    first = community.operations[oi]
                    raise AllocationInputError(
                        f"operations[{i}].members[{j}].meter",
                        f"meter {m.meter} is in two operations at the same time: {first.id!r} (member {other.id!r}) "
                        f"and {op.id!r} (member {m.id!r}); give one a left date and the other a joined date")
            where.setdefault(m.meter, []).append((i, j, m))


class Coordinator(_Strict):
    """The body above several communities (e.g. a national or regional federation)."""

    id: str = Field(min_length=1)
    name: str = ""


class Community(_Strict):
    """An energy community (ES, CER, CEC, energiegemeenschap) and its sharing operations."""

    id: str = Field(min_length=1)
    name: str = ""
    kind: str = ""
    # printed on statements: where the community is, its company number, how to pay it
    address: str = ""
    company_number: str = ""  # numéro d'entreprise / ondernemingsnummer
    iban: str = ""
    email: str = ""
    coordinator: Coordinator | None = None
    operations: list[Operation] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_operations(self) -> Community:
        seen: set[str] = set()
        for i, op in enumerate(self.operations):
            if op.id in seen:
                raise AllocationInputError(f"operations[{i}].id", f"duplicate operation id {op.id!r}")
            seen.add(op.id)
        check_meters_across_operations(self)
        return self

    def operation(self, op_id: str | None = None) -> Operation:
        """The operation with this id; without an id, the only one (refused when there are several)."""
        if op_id is None:
            if len(self.operations) > 1:
                ids = ", ".join(op.id for op in self.operations)
                raise AllocationInputError("operations", f"the file has several operations ({ids}): choose one")
            return self.operations[0]
        for op in self.operations:
            if op.id == op_id:
                return op
        raise AllocationInputError("operations", f"no operation {op_id!r} (have: {', '.join(o.id for o in self.operations)})")


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _first_error(exc: ValidationError) -> AllocationInputError:
    """The first pydantic error as one line naming the field (cross-field errors keep their path)."""
    err = exc.errors()[0]
    where = _loc(tuple(err["loc"]))
    inner = err.get("ctx", {}).get("error")
    if isinstance(inner, AllocationInputError):
        field = f"{where}.{inner.field}" if where and inner.field else (where or inner.field)
        return AllocationInputError(field, inner.reason)
    msg = err["msg"]
    if err["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "string_pattern_mismatch":
        msg = f"{err['input']!r} is not a valid id (no blanks, commas, semicolons or quotes)"
    return AllocationInputError(where, msg)


def parse_community(data: dict[str, object]) -> Community:
    """A community from the TOML structure (``[coordinator]``, ``[community]``, ``[[operations]]``)."""
    data = dict(data)
    body = data.pop("community", None)
    if body is None:
        raise AllocationInputError("community", "missing [community] table")
    if not isinstance(body, dict):
        raise AllocationInputError("community", "expected a table")
    fields = dict(body)
    for key in ("coordinator", "operations"):
        if key in data:
            if key in fields:
                raise AllocationInputError(key, "given twice (top level and inside [community])")
            fields[key] = data.pop(key)
    if data:
        raise AllocationInputError(sorted(data)[0], "unknown table (expected coordinator, community, operations)")
    try:
        community = Community.model_validate(fields)
    except ValidationError as exc:
        raise _first_error(exc) from None
    return community


def load_community(path: str | Path) -> Community:
    """Read and validate a community TOML file; errors name the file and the field."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise AllocationInputError(str(path), f"not valid TOML: {exc}") from None
    try:
        return parse_community(data)
    except AllocationInputError as exc:
        raise AllocationInputError(f"{path}: {exc.field}", exc.reason) from None

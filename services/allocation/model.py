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
    share = 0.05                     # agreed share for the specific key (fraction of the pool)
    max_power_w = 43648              # optional: the connection's maximum power (W); default 3 x 400 V x 63 A

Validation (pydantic) names the offending entry as it appears in the file
(``operations[0].members[3].share: ...``).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import AllocationInputError
from .presets import resolve_rounds
from .settings import SHARE_TOLERANCE, Settings

# an observer is a meter watched without being a member (« compteur d'observation », the cabin or feeder
# meter): provisioned and reporting like a member, never in an allocation
Role = Literal["consumer", "producer", "both", "observer"]
_ID = r"^[^\s,;\"]+$"  # ids become CSV column names and JSON keys: no blanks, separators or quotes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Member(_Strict):
    """A member's access point. A producer shares only its net injection (after self-consumption)."""

    id: str = Field(min_length=1, max_length=64, pattern=_ID)
    name: str = ""
    role: Role = "consumer"
    meter: str | None = Field(None, min_length=1, description="EAN of the access point (meter id)")
    share: float | None = Field(None, ge=0, le=1, description="agreed share for the specific key")
    # the connection's maximum power (W): the community server refuses a quarter-hour above it x 15 min
    # or a live power above it; unset, a large residential connection (services/community/admission.py)
    max_power_w: float | None = Field(None, gt=0, le=100_000_000, description="connection's maximum power (W)")
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
        if not m.receives and m.share is not None:
            who = "a producer-only member" if m.role == "producer" else "an observer meter"
            raise AllocationInputError(f"members[{i}].share", f"{who} receives nothing: remove its share")
        if "specific" in rounds and m.receives and m.share is None:
            raise AllocationInputError(f"members[{i}].share", "missing (the specific key needs a share for every consumer)")
    total = math.fsum(m.share or 0.0 for m in op.members)
    if total > 1 + SHARE_TOLERANCE:
        raise AllocationInputError("members[*].share", f"shares sum to {total:.6g} = {total:.4%}, more than 100%")
    if not op.participants:
        raise AllocationInputError("members", "no consumer: an operation needs at least one member that receives")


class Coordinator(_Strict):
    """The body above several communities (e.g. a national or regional federation)."""

    id: str = Field(min_length=1)
    name: str = ""


class Community(_Strict):
    """An energy community (ES, CER, CEC, energiegemeenschap) and its sharing operations."""

    id: str = Field(min_length=1)
    name: str = ""
    kind: str = ""
    coordinator: Coordinator | None = None
    operations: list[Operation] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_operations(self) -> Community:
        seen: set[str] = set()
        for i, op in enumerate(self.operations):
            if op.id in seen:
                raise AllocationInputError(f"operations[{i}].id", f"duplicate operation id {op.id!r}")
            seen.add(op.id)
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

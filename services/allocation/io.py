"""The JSON contract of ``quartier allocate`` (the web service's allocation endpoint speaks it too).

Request::

    {"rounds": ["equal", "equal", "prorata"],        # or "preset": "aubange"
     "shares": {"m01": 0.5, ...},                    # agreed shares, for the specific and mixed keys
     "round_shares": [null, {"m01": 0.7, ...}],      # optional: shares per round (null: "shares")
     "settings": {"prorata_basis": "original"},      # optional, see settings.Settings
     "members": ["m01", "m02", ...],                 # optional: every participant
     "quarter_hours": [{"start": "2025-06-01T12:00:00+02:00",
                        "production_wh": {"m09": 3100},
                        "consumption_wh": {"m01": 200, ...}}]}

``production_wh`` is each producer's net injection in the quarter-hour (export register), and
``consumption_wh`` each participant's net import (import register), whole Wh. The participants are
``members`` if given, else every id that appears in any ``consumption_wh`` or in ``shares``: one
missing from a quarter-hour consumed 0 there (and still takes part in a fixed key's round 1).

Response: per quarter-hour ``start`` (as given), ``allocated_wh`` (every participant, sorted by id),
``to_grid_wh``, ``by_producer`` (``{"shared_wh", "to_grid_wh"}`` per producer, attributed in
proportion to injection, whole Wh, summing exactly to the shared and returned volumes), ``pool_wh``,
``shared_wh``, ``sharing_rate`` (shared / pool) and ``self_sufficiency`` (shared / consumption),
``null`` where the denominator is 0, rounded to 6 decimals; ``totals`` has the same keys over the
period (rates from the summed volumes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from pydantic import ValidationError

from .engine import AllocationResult, allocate, slot_of
from .errors import AllocationInputError
from .presets import resolve_rounds
from .settings import MAX_ENERGY_WH, Settings

REQUEST_FIELDS = ("rounds", "preset", "shares", "round_shares", "settings", "members", "quarter_hours")
QUARTER_HOUR_FIELDS = ("start", "production_wh", "consumption_wh")
RATE_DECIMALS = 6


@dataclass(frozen=True)
class AllocationRequest:
    """A validated request, as arrays ready for the engine."""

    rounds: tuple[str, ...]
    shares: dict[str, float] | None
    settings: Settings
    starts: list[str]
    slots: np.ndarray
    member_ids: tuple[str, ...]
    producer_ids: tuple[str, ...]
    consumption: np.ndarray
    production: np.ndarray
    round_shares: list[dict[str, float] | None] | None = None


def _wh(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AllocationInputError(field, f"expected a whole number of Wh, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != math.floor(value):
            raise AllocationInputError(field, f"expected a whole number of Wh, got {value!r}")
        value = int(value)
    if value < 0:
        raise AllocationInputError(field, f"negative energy ({value} Wh)")
    if value > MAX_ENERGY_WH:
        raise AllocationInputError(field, f"{value} Wh is above the limit of {MAX_ENERGY_WH} Wh per quarter-hour")
    return value


def _object(value: object, field: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise AllocationInputError(field, f"expected an object, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str) or not key:
            raise AllocationInputError(field, f"invalid id {key!r}")
    return value


def _start(value: object, field: str) -> int:
    if not isinstance(value, str):
        raise AllocationInputError(field, f"expected an ISO 8601 time, got {value!r}")
    try:
        return slot_of(datetime.fromisoformat(value))
    except ValueError:
        raise AllocationInputError(field, f"not an ISO 8601 time: {value!r}") from None


def _settings(value: object) -> Settings:
    if value is None:
        return Settings()
    _object(value, "settings")
    try:
        return Settings.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        raise AllocationInputError(f"settings.{where}", msg) from None


def parse_request(obj: object) -> AllocationRequest:
    """Validate a decoded JSON request; ``AllocationInputError`` names the first bad field."""
    req = _object(obj, "request")
    for key in req:
        if key not in REQUEST_FIELDS:
            raise AllocationInputError(key, f"unknown field (expected {', '.join(REQUEST_FIELDS)})")
    rounds = resolve_rounds(req.get("rounds"), req.get("preset"))
    settings = _settings(req.get("settings"))
    shares: dict[str, float] | None = None
    if req.get("shares") is not None:
        shares = dict(_object(req["shares"], "shares"))  # values checked by the engine, by field
    round_shares: list[dict[str, float] | None] | None = None
    if req.get("round_shares") is not None:
        raw_rs = req["round_shares"]
        if not isinstance(raw_rs, list) or len(raw_rs) != len(rounds):
            raise AllocationInputError("round_shares", f"expected a list with one entry (shares or null) for each of the {len(rounds)} rounds")
        round_shares = [None if e is None else dict(_object(e, f"round_shares[{i}]")) for i, e in enumerate(raw_rs)]
    if settings.pool_fractions is not None and len(settings.pool_fractions) != len(rounds):
        raise AllocationInputError("settings.pool_fractions", f"{len(settings.pool_fractions)} fractions for {len(rounds)} rounds (one per round)")
    members: list[str] | None = None
    if req.get("members") is not None:
        raw = req["members"]
        if not isinstance(raw, list) or not all(isinstance(m, str) and m for m in raw):
            raise AllocationInputError("members", "expected a list of member ids")
        if len(set(raw)) != len(raw):
            raise AllocationInputError("members", f"duplicate id {next(m for m in raw if raw.count(m) > 1)!r}")
        members = list(raw)
        for where, given in [("shares", shares)] + [(f"round_shares[{i}]", e) for i, e in enumerate(round_shares or [])]:
            for mid in given or ():
                if mid not in raw:
                    raise AllocationInputError(f"{where}.{mid}", "not in members")
    qhs = req.get("quarter_hours")
    if not isinstance(qhs, list):
        raise AllocationInputError("quarter_hours", "missing or not a list")

    starts: list[str] = []
    slots: list[int] = []
    prods: list[Mapping[str, int]] = []
    conss: list[Mapping[str, int]] = []
    producer_set: dict[str, None] = {}
    consumer_set: dict[str, None] = {}
    for t, qh in enumerate(qhs):
        where = f"quarter_hours[{t}]"
        qh = _object(qh, where)
        for key in qh:
            if key not in QUARTER_HOUR_FIELDS:
                raise AllocationInputError(f"{where}.{key}", f"unknown field (expected {', '.join(QUARTER_HOUR_FIELDS)})")
        for key in QUARTER_HOUR_FIELDS:
            if key not in qh:
                raise AllocationInputError(f"{where}.{key}", "missing")
        slots.append(_start(qh["start"], f"{where}.start"))
        starts.append(qh["start"])  # type: ignore[arg-type]
        prod = {k: _wh(v, f"{where}.production_wh.{k}") for k, v in _object(qh["production_wh"], f"{where}.production_wh").items()}
        cons = {k: _wh(v, f"{where}.consumption_wh.{k}") for k, v in _object(qh["consumption_wh"], f"{where}.consumption_wh").items()}
        if members is not None:
            for k in cons:
                if k not in members:
                    raise AllocationInputError(f"{where}.consumption_wh.{k}", "not in members")
        producer_set.update(dict.fromkeys(prod))
        consumer_set.update(dict.fromkeys(cons))
        prods.append(prod)
        conss.append(cons)

    share_ids = set(shares or ()).union(*(e or () for e in round_shares or ()))
    member_ids = tuple(members) if members is not None else tuple(sorted(set(consumer_set) | share_ids))
    producer_ids = tuple(sorted(producer_set))
    consumption = _matrix(conss, member_ids)
    production = _matrix(prods, producer_ids)
    return AllocationRequest(
        rounds, shares, settings, starts, np.array(slots, dtype=np.int64), member_ids, producer_ids, consumption, production,
        round_shares,
    )


def _matrix(rows: Sequence[Mapping[str, int]], ids: Sequence[str]) -> np.ndarray:
    index = {mid: j for j, mid in enumerate(ids)}
    out = np.zeros((len(rows), len(ids)), dtype=np.int64)
    for t, row in enumerate(rows):
        for mid, v in row.items():
            out[t, index[mid]] = v
    return out


def run_request(req: AllocationRequest) -> AllocationResult:
    return allocate(
        req.consumption,
        req.production,
        req.rounds,
        member_ids=req.member_ids,
        producer_ids=req.producer_ids,
        shares=req.shares,
        settings=req.settings,
        slots=req.slots,
        round_shares=req.round_shares,
    )


def _rate(num: int, den: int) -> float | None:
    return round(num / den, RATE_DECIMALS) if den else None


def _block(
    alloc: Sequence[int],
    pshared: Sequence[int],
    pprod: Sequence[int],
    member_ids: Sequence[str],
    producer_ids: Sequence[str],
    consumption: int,
) -> dict[str, object]:
    pool = sum(pprod)
    shared = sum(alloc)
    order = sorted(range(len(member_ids)), key=member_ids.__getitem__)
    porder = sorted(range(len(producer_ids)), key=producer_ids.__getitem__)
    return {
        "allocated_wh": {member_ids[j]: alloc[j] for j in order},
        "to_grid_wh": pool - shared,
        "by_producer": {producer_ids[k]: {"shared_wh": pshared[k], "to_grid_wh": pprod[k] - pshared[k]} for k in porder},
        "pool_wh": pool,
        "shared_wh": shared,
        "sharing_rate": _rate(shared, pool),
        "self_sufficiency": _rate(shared, consumption),
    }


def result_to_json(res: AllocationResult, starts: Sequence[str]) -> dict[str, object]:
    """The response object for a period's result (see the module docstring)."""
    alloc = res.allocated.tolist()
    pshared = res.producer_shared.tolist()
    pprod = res.production.tolist()
    cons = res.total_consumption.tolist()
    out = []
    for t, start in enumerate(starts):
        block = _block(alloc[t], pshared[t], pprod[t], res.member_ids, res.producer_ids, cons[t])
        out.append({"start": start, **block})
    totals = _block(
        res.allocated.sum(axis=0).tolist(),
        res.producer_shared.sum(axis=0).tolist(),
        res.production.sum(axis=0).tolist(),
        res.member_ids,
        res.producer_ids,
        int(res.consumption.sum()),
    )
    return {"quarter_hours": out, "totals": totals}


def handle_request(obj: object) -> dict[str, object]:
    """Decoded JSON request in, decoded JSON response out."""
    req = parse_request(obj)
    return result_to_json(run_request(req), req.starts)

"""The allocation engine: who receives how much of the pooled injection, per quarter-hour.

Pure and vectorised: arrays of shape ``[quarter_hours, participants]`` in, arrays out, no I/O. A year
(35,040 quarter-hours) is processed in blocks of rows so that the working set stays in cache; a
single live quarter-hour is the same computation on one row (``allocate_quarter_hour``).

What the numbers mean (design.md, "Allocation semantics"):

- ``production[t, k]`` is producer k's *net injection* in quarter-hour t (the export register's
  difference): its own consumption behind the meter has already been served, only what it
  injects is pooled and shared.
- ``consumption[t, j]`` is participant j's *net import* (the import register's difference): the
  demand the pool can cover. A member that is both producer and consumer appears in both lists under
  the same id; both volumes can be non-zero in one quarter-hour (it imported for five minutes and
  exported for ten). By default it receives for its import like anyone; with
  ``Settings(own_injection="excluded")`` it can receive at most the other producers' injection.
- Pool = sum of injections. Up to three rounds split what is available by the round's key, each part
  capped at the participant's remaining demand; what is left after the last round goes to the grid.
- Whole Wh and exact conservation in every quarter-hour: ``allocated.sum() + to_grid == pool`` and
  ``0 <= allocated <= consumption``. The shared and returned volumes are attributed back to each
  producer in proportion to its injection, also in whole Wh with exact sums.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np

from .errors import AllocationInputError
from .keys import RoundShares, allocate_rounds
from .presets import check_rounds
from .rounding import apportion, id_order
from .settings import (
    DEFAULT_SETTINGS,
    MAX_ENERGY_WH,
    MAX_TOTAL_WH,
    SHARE_DENOMINATOR,
    SHARE_EXACT,
    SHARE_SCALE,
    SHARE_TOLERANCE,
    Settings,
)

QUARTER_S = 900
DEFAULT_BLOCK_ROWS = 256

Progress = Callable[[int, int], None]
"""Called after each block with (quarter-hours done, quarter-hours in total)."""


def slot_of(start: datetime) -> int:
    """Quarter-hour number since 1970-01-01T00:00Z (naive times are taken as UTC).

    Used only to rotate the tie-break, so it needs the start of the quarter-hour, nothing else.
    """
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return math.floor(start.timestamp() / QUARTER_S)


@dataclass(frozen=True)
class AllocationResult:
    """Allocation of a period: input volumes and what was allocated, all int64 Wh."""

    member_ids: tuple[str, ...]
    producer_ids: tuple[str, ...]
    consumption: np.ndarray  # [T, M] net import of each participant
    production: np.ndarray  # [T, K] net injection of each producer
    allocated: np.ndarray  # [T, M] shared energy received
    producer_shared: np.ndarray  # [T, K] part of each producer's injection that was shared

    @property
    def pool(self) -> np.ndarray:
        return self.production.sum(axis=1)

    @property
    def shared(self) -> np.ndarray:
        return self.allocated.sum(axis=1)

    @property
    def to_grid(self) -> np.ndarray:
        return self.pool - self.shared

    @property
    def producer_to_grid(self) -> np.ndarray:
        return self.production - self.producer_shared

    @property
    def total_consumption(self) -> np.ndarray:
        return self.consumption.sum(axis=1)

    def sharing_rate(self) -> np.ndarray:
        """shared / pool per quarter-hour; NaN where the pool is 0."""
        return ratio(self.shared, self.pool)

    def self_sufficiency(self) -> np.ndarray:
        """shared / consumption per quarter-hour; NaN where nobody consumed."""
        return ratio(self.shared, self.total_consumption)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float, NaN where ``den == 0`` (undefined, not zero)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _share_values(
    shares: Mapping[str, float] | Sequence[float], member_ids: Sequence[str], needed: bool, field: str
) -> tuple[list[float], list[bool]]:
    """Shares aligned with ``member_ids`` (0 where absent) and whether each member has one; validated."""
    m = len(member_ids)
    if isinstance(shares, Mapping):
        unknown = sorted(set(shares) - set(member_ids))
        if unknown:
            raise AllocationInputError(f"{field}.{unknown[0]}", "not a participant")
        values: list[float] = []
        for mid in member_ids:
            if mid in shares:
                values.append(shares[mid])
            elif needed:
                raise AllocationInputError(f"{field}.{mid}", "missing (the specific key needs a share for every participant)")
            else:
                values.append(0.0)
        names = [f"{field}.{mid}" for mid in member_ids]
        has = [mid in shares for mid in member_ids]
    else:
        values = list(shares)
        if len(values) != m:
            raise AllocationInputError(field, f"{len(values)} shares for {m} participants")
        names = [f"{field}[{i}]" for i in range(m)]
        has = [True] * m
    for name, v in zip(names, values, strict=True):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise AllocationInputError(name, f"expected a number between 0 and 1, got {v!r}")
        if not 0 <= v <= 1:
            raise AllocationInputError(name, f"share {v} is outside [0, 1]")
    total = math.fsum(values)
    if total > 1 + SHARE_TOLERANCE:
        raise AllocationInputError(field, f"shares sum to {total:.6g} = {total:.4%}, more than 100%")
    return values, has


def share_units(shares: Mapping[str, float] | Sequence[float] | None, member_ids: Sequence[str], needed: bool) -> np.ndarray:
    """Agreed shares as integers in units of 10^-9, aligned with ``member_ids``; validated.

    Kept for callers of the former API; the engine itself uses ``exact_shares``.
    """
    if shares is None:
        if needed:
            raise AllocationInputError("shares", "required by the specific key (one share per participant)")
        return np.zeros(len(member_ids), dtype=np.int64)
    values, _ = _share_values(shares, member_ids, needed, "shares")
    return np.array([round(v * SHARE_SCALE) for v in values], dtype=np.int64)


def exact_shares(values: Sequence[float], has: Sequence[bool]) -> RoundShares:
    """Shares as integers over a common denominator, exact where they are simple fractions.

    A share written as a float (1/3, 0.05) is taken as the fraction with denominator up to 10^6 it
    stands for, when the common denominator stays at most 10^9; otherwise to the nearest 10^-9.
    Shares summing to 1 within ``SHARE_TOLERANCE`` per share are treated as summing to exactly 1 (a
    round then splits the whole offer): agreed shares are written with a few decimals, so 1/3 + 1/3 +
    1/3 written out falls short of 1 by a hair, and that hair would otherwise go to the grid.
    """
    fracs = [Fraction(v).limit_denominator(SHARE_DENOMINATOR) for v in values]
    exact = all(abs(f - Fraction(v)) <= SHARE_EXACT for f, v in zip(fracs, values, strict=True))
    scale = math.lcm(*(f.denominator for f in fracs)) if fracs else 1
    if not exact or scale > SHARE_SCALE:
        scale = SHARE_SCALE
        units = [round(v * SHARE_SCALE) for v in values]
    else:
        units = [int(f * scale) for f in fracs]
    count = max(1, sum(1 for v in values if v > 0))
    whole = abs(math.fsum(values) - 1) <= SHARE_TOLERANCE * count and sum(units) > 0
    return RoundShares(np.array(units, dtype=np.int64), scale, whole, np.array(has, dtype=bool))


def round_share_specs(
    shares: Mapping[str, float] | Sequence[float] | None,
    round_shares: Sequence[Mapping[str, float] | Sequence[float] | None] | None,
    rounds: Sequence[str],
    member_ids: Sequence[str],
) -> list[RoundShares | None]:
    """The shares each round uses: its entry of ``round_shares`` if given, else ``shares``; validated."""
    if round_shares is not None:
        if isinstance(round_shares, (str, Mapping)) or not isinstance(round_shares, Sequence):
            raise AllocationInputError("round_shares", "expected a list with one entry (shares or null) per round")
        if len(round_shares) != len(rounds):
            raise AllocationInputError("round_shares", f"{len(round_shares)} entries for {len(rounds)} rounds")
    if shares is not None:
        _share_values(shares, member_ids, False, "shares")
    out: list[RoundShares | None] = []
    for i, key in enumerate(rounds):
        own = None if round_shares is None else round_shares[i]
        given, field = (own, f"round_shares[{i}]") if own is not None else (shares, "shares")
        if key not in ("specific", "mixed"):
            if own is not None:
                _share_values(own, member_ids, False, field)  # still validated
            out.append(None)
            continue
        if given is None:
            raise AllocationInputError(field, f"required by the {key} key of round {i + 1} (one share per participant)")
        values, has = _share_values(given, member_ids, key == "specific", field)
        out.append(exact_shares(values, has))
    return out


def pool_fractions(settings: Settings, rounds: Sequence[str]) -> list[Fraction | None]:
    """``settings.pool_fractions`` as exact fractions, one per round (None: the round offers all)."""
    if settings.pool_fractions is None:
        return [None] * len(rounds)
    if len(settings.pool_fractions) != len(rounds):
        raise AllocationInputError(
            "settings.pool_fractions", f"{len(settings.pool_fractions)} fractions for {len(rounds)} rounds (one per round)"
        )
    return [Fraction(f).limit_denominator(SHARE_DENOMINATOR) for f in settings.pool_fractions]


def _check_energy(a: np.ndarray, ids: Sequence[str], what: str) -> None:
    if a.size == 0:
        return
    if a.min() < 0:
        t, j = np.argwhere(a < 0)[0]
        raise AllocationInputError(f"{what}.{ids[j]}", f"negative energy {a[t, j]} Wh in quarter-hour {t}")
    if a.max() > MAX_ENERGY_WH:
        t, j = np.argwhere(a > MAX_ENERGY_WH)[0]
        raise AllocationInputError(f"{what}.{ids[j]}", f"{a[t, j]} Wh in quarter-hour {t} is above the limit of {MAX_ENERGY_WH} Wh")
    totals = a.sum(axis=1)
    if totals.max() > MAX_TOTAL_WH:
        t = int(np.argmax(totals))
        raise AllocationInputError(what, f"total {totals[t]} Wh in quarter-hour {t} is above the limit of {MAX_TOTAL_WH} Wh")


def _as_energy(values: object, rows: int | None, cols: int, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.floor(a)):
            raise AllocationInputError(what, "energies must be whole Wh")
    elif a.dtype.kind not in "iub":
        raise AllocationInputError(what, f"energies must be whole Wh, got {a.dtype}")
    if a.ndim != 2 or a.shape[1] != cols or (rows is not None and a.shape[0] != rows):
        raise AllocationInputError(what, f"expected shape [quarter-hours, {cols}], got {list(a.shape)}")
    return a.astype(np.int64, copy=False)


def allocate(
    consumption: np.ndarray,
    production: np.ndarray,
    rounds: Sequence[str],
    *,
    member_ids: Sequence[str],
    producer_ids: Sequence[str],
    shares: Mapping[str, float] | Sequence[float] | None = None,
    settings: Settings = DEFAULT_SETTINGS,
    slots: np.ndarray | Sequence[int] | None = None,
    progress: Progress | None = None,
    round_shares: Sequence[Mapping[str, float] | Sequence[float] | None] | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> AllocationResult:
    """Allocate every quarter-hour of a period.

    ``consumption``: int Wh ``[T, len(member_ids)]``, the participants' net import.
    ``production``: int Wh ``[T, len(producer_ids)]``, the producers' net injection.
    ``rounds``: 1 to 3 keys (``presets.PRESETS`` has the named ones).
    ``shares``: agreed shares for the specific and mixed keys (mapping by member id, or aligned sequence).
    ``round_shares``: one entry per round (shares, or None for ``shares``) when shares differ per round.
    ``slots``: quarter-hour numbers (``slot_of(start)``) for the rotating tie-break; zeros if omitted.
    ``progress``: called after each block of ``block_rows`` quarter-hours (for a progress bar).
    Raises ``AllocationInputError`` for input the semantics do not cover.
    """
    rounds = check_rounds(list(rounds))
    member_ids = tuple(member_ids)
    producer_ids = tuple(producer_ids)
    for what, ids in (("member_ids", member_ids), ("producer_ids", producer_ids)):
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise AllocationInputError(what, f"duplicate id {dup!r}")
    cons = _as_energy(consumption, None, len(member_ids), "consumption")
    t_rows = cons.shape[0]
    prod = _as_energy(production, t_rows, len(producer_ids), "production")
    _check_energy(cons, member_ids, "consumption")
    _check_energy(prod, producer_ids, "production")
    specs = round_share_specs(shares, round_shares, rounds, member_ids)
    fractions = pool_fractions(settings, rounds)
    slot_arr = np.zeros(t_rows, dtype=np.int64) if slots is None else np.asarray(slots, dtype=np.int64)
    if slot_arr.shape != (t_rows,):
        raise AllocationInputError("slots", f"expected {t_rows} quarter-hour numbers, got shape {list(slot_arr.shape)}")
    if settings.tie_break == "member_id":
        slot_arr = np.zeros(t_rows, dtype=np.int64)

    m, k = len(member_ids), len(producer_ids)
    allocated = np.zeros((t_rows, m), dtype=np.int64)
    producer_shared = np.zeros((t_rows, k), dtype=np.int64)
    if m and k:
        # work in sorted-id column order: the tie-break then depends on ids only (see rounding)
        morder, porder = id_order(member_ids), id_order(producer_ids)
        msorted = bool(np.all(morder == np.arange(m)))
        psorted = bool(np.all(porder == np.arange(k)))
        pindex = {producer_ids[p]: i for i, p in enumerate(porder)}
        own = np.array([pindex.get(member_ids[j], -1) for j in morder], dtype=np.int64)
        specs_sorted = [None if sp is None else RoundShares(sp.units[morder], sp.scale, sp.whole, sp.has[morder]) for sp in specs]
        offsets_m = slot_arr % m
        offsets_p = slot_arr % k
        step = max(1, int(block_rows))
        for lo in range(0, t_rows, step):
            hi = min(t_rows, lo + step)
            c = cons[lo:hi] if msorted else cons[lo:hi, morder]
            g = prod[lo:hi] if psorted else prod[lo:hi, porder]
            got, shared = _allocate_block(c, g, rounds, specs_sorted, fractions, settings, offsets_m[lo:hi], offsets_p[lo:hi], own)
            if msorted:
                allocated[lo:hi] = got
            else:
                allocated[lo:hi, morder] = got
            if psorted:
                producer_shared[lo:hi] = shared
            else:
                producer_shared[lo:hi, porder] = shared
            if progress is not None:
                progress(hi, t_rows)
    elif progress is not None:
        progress(t_rows, t_rows)
    return AllocationResult(member_ids, producer_ids, cons, prod, allocated, producer_shared)


def _allocate_block(
    cons: np.ndarray,
    prod: np.ndarray,
    rounds: tuple[str, ...],
    specs: list[RoundShares | None],
    fractions: list[Fraction | None],
    settings: Settings,
    offsets_m: np.ndarray,
    offsets_p: np.ndarray,
    own: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Allocate a block of rows, columns in sorted-id order; rows without injection are skipped.

    ``own[j]`` is the producer column of participant j when it is also a producer, else -1.
    """
    pool_all = prod.sum(axis=1)
    act = np.flatnonzero(pool_all > 0)
    if act.size == 0:
        return np.zeros(cons.shape, dtype=np.int64), np.zeros(prod.shape, dtype=np.int64)
    whole = act.size == pool_all.size
    c = cons if whole else cons[act]
    g = prod if whole else prod[act]
    pool = pool_all if whole else pool_all[act]
    off_m = offsets_m if whole else offsets_m[act]
    off_p = offsets_p if whole else offsets_p[act]
    demand = c
    if settings.own_injection == "excluded" and np.any(own >= 0):
        is_prod = own >= 0
        others = pool[:, None] - g[:, np.where(is_prod, own, 0)]
        demand = np.where(is_prod[None, :], np.minimum(c, others), c)
    got = allocate_rounds(demand, pool, rounds, specs, fractions, settings, off_m)
    shared = apportion(got.sum(axis=1), g, off_p)
    if whole:
        return got, shared
    allocated = np.zeros(cons.shape, dtype=np.int64)
    producer_shared = np.zeros(prod.shape, dtype=np.int64)
    allocated[act] = got
    producer_shared[act] = shared
    return allocated, producer_shared


@dataclass(frozen=True)
class QuarterHourAllocation:
    """One quarter-hour's allocation, keyed by id: what the live path and the JSON contract return."""

    allocated_wh: dict[str, int]
    to_grid_wh: int
    by_producer: dict[str, dict[str, int]]  # producer -> {"shared_wh": ..., "to_grid_wh": ...}
    pool_wh: int
    shared_wh: int
    consumption_wh: int
    sharing_rate: float | None
    self_sufficiency: float | None


def allocate_quarter_hour(
    consumption_wh: Mapping[str, int],
    production_wh: Mapping[str, int],
    rounds: Sequence[str],
    *,
    shares: Mapping[str, float] | None = None,
    settings: Settings = DEFAULT_SETTINGS,
    start: datetime | None = None,
    members: Sequence[str] | None = None,
    round_shares: Sequence[Mapping[str, float] | None] | None = None,
) -> QuarterHourAllocation:
    """The live path: one quarter-hour, volumes keyed by member id.

    ``members`` lists every participant of the operation (one absent from ``consumption_wh``
    consumed 0 and still counts for a fixed key); by default the ids in ``consumption_wh`` and
    ``shares``. ``start`` sets the rotating tie-break (``slot_of``).
    """
    if members is None:
        members = sorted(set(consumption_wh) | set(shares or ()) | {m for rs in round_shares or () for m in rs or ()})
    else:
        unknown = set(consumption_wh) - set(members)
        if unknown:
            raise AllocationInputError(f"consumption_wh.{min(unknown)}", "not a participant of the operation")
    producers = list(production_wh)
    cons = np.fromiter((consumption_wh.get(mid, 0) for mid in members), dtype=np.int64, count=len(members))[None, :]
    prod = np.fromiter((production_wh[pid] for pid in producers), dtype=np.int64, count=len(producers))[None, :]
    slots = None if start is None else [slot_of(start)]
    res = allocate(
        cons, prod, rounds, member_ids=members, producer_ids=producers, shares=shares, settings=settings, slots=slots,
        round_shares=round_shares,
    )
    return quarter_hour_view(res, 0)


def quarter_hour_view(res: AllocationResult, t: int) -> QuarterHourAllocation:
    """Row ``t`` of a period's result as a ``QuarterHourAllocation`` (plain ints and floats)."""
    alloc = res.allocated[t].tolist()
    pshared = res.producer_shared[t].tolist()
    pprod = res.production[t].tolist()
    pool = int(sum(pprod))
    shared = int(sum(alloc))
    consumption = int(res.consumption[t].sum())
    return QuarterHourAllocation(
        allocated_wh=dict(zip(res.member_ids, alloc, strict=True)),
        to_grid_wh=pool - shared,
        by_producer={pid: {"shared_wh": s, "to_grid_wh": p - s} for pid, s, p in zip(res.producer_ids, pshared, pprod, strict=True)},
        pool_wh=pool,
        shared_wh=shared,
        consumption_wh=consumption,
        sharing_rate=shared / pool if pool else None,
        self_sufficiency=shared / consumption if consumption else None,
    )

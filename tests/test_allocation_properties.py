"""Property tests of the allocation engine, and a plainly written reference it must agree with.

The reference below is the semantics of design.md spelled out with exact fractions, one quarter-hour
at a time, with nothing shared with the engine's code: every round offers ``avail × weight / total``
(at most ``pool_fractions[i]`` of the pool) to the participants taking part, capped at their
remaining demand, all in exact fractions; the exact allocations are then rounded down once and the
whole Wh in the sum of their fractions handed out by largest remainder, ties in tie-break order
(sorted ids, starting at quarter-hour number mod n).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.allocation import KEYS, QuarterHourAllocation, Settings, allocate, allocate_quarter_hour, slot_of

SCALE = 10**9
Row = tuple[dict[str, int], dict[str, int], int]  # consumption, production, quarter-hour number
Op = tuple[list[str], list[str], dict[str, float], list[Row]]  # members, producers, shares, rows


def largest_remainder(parts: dict[str, Fraction], whole: int, order: list[str]) -> dict[str, int]:
    """Round ``parts`` down, then hand ``whole - sum(floors)`` units to the largest fractions."""
    out = {k: math.floor(v) for k, v in parts.items()}
    left = whole - sum(out.values())
    ranked = sorted((k for k in parts if parts[k] != out[k]), key=lambda k: (-(parts[k] - out[k]), order.index(k)))
    for k in ranked[:left]:
        out[k] += 1
    return out


def tie_order(ids: list[str], slot: int) -> list[str]:
    s = sorted(ids)
    off = slot % len(s)
    return s[off:] + s[:off]


def exact_units(shares: dict[str, float] | None, members: list[str]) -> tuple[dict[str, Fraction], bool]:
    """Shares as exact fractions, the way the README says the engine reads them: the simple fraction
    (denominator up to 10^6) a float stands for, else the nearest 10^-9; and whether they sum to 1."""
    given = shares or {}
    vals = {m: given.get(m, 0.0) for m in members}
    fr = {m: Fraction(v).limit_denominator(10**6) for m, v in vals.items()}
    if not all(abs(fr[m] - Fraction(v)) <= Fraction(1, 10**12) for m, v in vals.items()) or math.lcm(
        *(f.denominator for f in fr.values())
    ) > SCALE:
        fr = {m: Fraction(round(v * SCALE), SCALE) for m, v in vals.items()}
    count = max(1, sum(1 for v in vals.values() if v > 0))
    whole = abs(math.fsum(vals.values()) - 1) <= 1e-9 * count and sum(fr.values()) > 0
    return fr, whole


def exact_reference(
    cons: dict[str, int],
    prod: dict[str, int],
    rounds: Sequence[str],
    shares: dict[str, float] | None,
    cfg: Settings,
    members: list[str],
    round_shares: list[dict[str, float] | None] | None = None,
) -> dict[str, Fraction]:
    """The exact (unrounded) allocation of one quarter-hour, by the book, in fractions."""
    pool = sum(prod.values())
    demand = {m: cons.get(m, 0) for m in members}
    if cfg.own_injection == "excluded":
        demand = {m: min(d, pool - prod[m]) if m in prod else d for m, d in demand.items()}
    rem: dict[str, Fraction] = {m: Fraction(d) for m, d in demand.items()}
    avail = Fraction(pool)
    fractions = cfg.pool_fractions or [1.0] * len(rounds)
    for i, key in enumerate(rounds):
        own = round_shares[i] if round_shares is not None and round_shares[i] is not None else shares
        units, whole = exact_units(own, members)
        has = {m: m in (own or {}) for m in members}
        everyone = (cfg.later_rounds if i else cfg.first_round) == "all"
        part = [m for m in members if everyone or rem[m] > 0]
        base = rem if cfg.prorata_basis == "remaining" else {m: Fraction(d) for m, d in demand.items()}
        if key == "equal":
            weight = {m: Fraction(1) for m in part}
            total = Fraction(len(part))
        elif key == "prorata":
            weight = {m: base[m] for m in part}
            total = sum(weight.values(), Fraction(0))
        elif key == "specific":
            weight = {m: units[m] for m in part}
            if i and cfg.specific_later_rounds == "renormalise":
                total = sum(weight.values(), Fraction(0))
            else:
                s = sum(units.values(), Fraction(0))
                total = s if whole else max(Fraction(1), s)
        else:  # mixed: a share for who has one, the rest pro rata among the others
            fixed = sum((units[m] for m in members if has[m]), Fraction(0))
            scale = fixed if whole else max(Fraction(1), fixed)
            pr = [m for m in part if not has[m]]
            bsum = sum((base[m] for m in pr), Fraction(0))
            weight = {m: units[m] / scale for m in part if has[m]}
            if bsum:
                weight.update({m: (1 - fixed / scale) * base[m] / bsum for m in pr})
            total = Fraction(1)
        offer = min(avail, Fraction(fractions[i]).limit_denominator(10**6) * pool)
        if total == 0 or offer == 0:
            continue
        for m in part:
            x = min(rem[m], offer * weight.get(m, Fraction(0)) / total)
            rem[m] -= x
            avail -= x
    return {m: demand[m] - rem[m] for m in members}


def reference(
    cons: dict[str, int],
    prod: dict[str, int],
    rounds: Sequence[str],
    shares: dict[str, float] | None,
    cfg: Settings,
    slot: int,
    members: list[str],
    round_shares: list[dict[str, float] | None] | None = None,
) -> tuple[dict[str, int], dict[str, int]]:
    """Allocation and shared volume per producer of one quarter-hour: the exact allocation, made whole
    once by largest remainder (ties in tie-break order)."""
    if cfg.tie_break == "member_id":
        slot = 0
    pool = sum(prod.values())
    exact = exact_reference(cons, prod, rounds, shares, cfg, members, round_shares)
    got = largest_remainder(exact, math.floor(sum(exact.values(), Fraction(0))), tie_order(members, slot))
    shared = sum(got.values())
    producers = list(prod)
    if not producers:
        return got, {}
    parts = {p: Fraction(shared * prod[p], pool) if pool else Fraction(0) for p in producers}
    by_prod = largest_remainder(parts, shared, tie_order(producers, slot))
    return got, by_prod


# --- strategies -------------------------------------------------------------------------------

IDS = ["a", "b", "c", "d", "e", "f", "g", "h", "ab", "m10", "m2", "Z"]
energy = st.one_of(st.just(0), st.integers(0, 40), st.integers(0, 5000))
settings_st = st.builds(
    Settings,
    first_round=st.sampled_from(["all", "short"]),
    later_rounds=st.sampled_from(["short", "all"]),
    prorata_basis=st.sampled_from(["remaining", "original"]),
    specific_later_rounds=st.sampled_from(["renormalise", "fixed"]),
    own_injection=st.sampled_from(["allowed", "excluded"]),
    tie_break=st.sampled_from(["rotate", "member_id"]),
)
rounds_st = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3)


@st.composite
def operation(draw: st.DrawFn, max_rows: int = 1) -> Op:
    members = draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=8, unique=True))
    own = draw(st.lists(st.sampled_from(members), max_size=3, unique=True))  # producer-consumers
    extra = draw(st.lists(st.sampled_from(["p1", "p2", "p3"]), min_size=0 if own else 1, max_size=3, unique=True))
    producers = own + extra
    raw = draw(st.lists(st.integers(0, 100), min_size=len(members), max_size=len(members)))
    scale = draw(st.sampled_from([0.0, 0.5, 1.0, 1.0]))
    shares = {m: (r / sum(raw)) * scale if sum(raw) else 0.0 for m, r in zip(members, raw, strict=True)}
    rows = draw(st.integers(1, max_rows))
    data = [
        (
            {m: draw(energy) for m in members},
            {p: draw(st.one_of(energy, st.integers(0, 20000))) for p in producers},
            draw(st.integers(0, 10**7)),
        )
        for _ in range(rows)
    ]
    return members, producers, shares, data


def start_of(slot: int) -> datetime:
    return datetime.fromtimestamp(slot * 900, UTC)


def run_one(
    members: list[str],
    cons: dict[str, int],
    prod: dict[str, int],
    rounds: Sequence[str],
    shares: dict[str, float] | None,
    cfg: Settings,
    slot: int,
) -> QuarterHourAllocation:
    return allocate_quarter_hour(cons, prod, rounds, shares=shares, settings=cfg, start=start_of(slot), members=members)


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op=operation(), rounds=rounds_st, cfg=settings_st)
def test_matches_the_reference(op: Op, rounds: list[str], cfg: Settings) -> None:
    members, _, shares, data = op
    cons, prod, slot = data[0]
    r = run_one(members, cons, prod, rounds, shares, cfg, slot)
    got, by_prod = reference(cons, prod, rounds, shares, cfg, slot, members)
    assert r.allocated_wh == got
    assert {p: v["shared_wh"] for p, v in r.by_producer.items()} == by_prod


@settings(max_examples=400, deadline=None)
@given(op=operation(), rounds=rounds_st, cfg=settings_st)
def test_conservation_caps_and_signs(op: Op, rounds: list[str], cfg: Settings) -> None:
    members, _, shares, data = op
    cons, prod, slot = data[0]
    r = run_one(members, cons, prod, rounds, shares, cfg, slot)
    pool = sum(prod.values())
    assert all(isinstance(v, int) for v in r.allocated_wh.values())
    assert sum(r.allocated_wh.values()) + r.to_grid_wh == pool == r.pool_wh
    assert r.to_grid_wh >= 0
    for m, x in r.allocated_wh.items():
        assert 0 <= x <= cons[m]
        if cfg.own_injection == "excluded" and m in prod:
            assert x <= pool - prod[m]
    assert sum(v["shared_wh"] for v in r.by_producer.values()) == r.shared_wh
    assert sum(v["to_grid_wh"] for v in r.by_producer.values()) == r.to_grid_wh
    for p, v in r.by_producer.items():
        assert 0 <= v["shared_wh"] <= prod[p] and v["shared_wh"] + v["to_grid_wh"] == prod[p]
    if r.sharing_rate is not None:
        assert 0 <= r.sharing_rate <= 1
    if r.self_sufficiency is not None:
        assert 0 <= r.self_sufficiency <= 1


@settings(max_examples=300, deadline=None)
@given(op=operation(), rounds=rounds_st, cfg=settings_st, seed=st.integers(0, 2**32 - 1))
def test_permuting_members_changes_nothing(op: Op, rounds: list[str], cfg: Settings, seed: int) -> None:
    members, _, shares, data = op
    cons, prod, slot = data[0]
    rng = random.Random(seed)
    shuffled = list(members)
    rng.shuffle(shuffled)
    cons2 = {m: cons[m] for m in shuffled}
    prod_ids = list(prod)
    rng.shuffle(prod_ids)
    prod2 = {p: prod[p] for p in prod_ids}
    shares2 = {m: shares[m] for m in shuffled}
    a = run_one(members, cons, prod, rounds, shares, cfg, slot)
    b = run_one(shuffled, cons2, prod2, rounds, shares2, cfg, slot)
    assert a == b


@settings(max_examples=400, deadline=None)
@given(op=operation(), data=st.data())
def test_prorata_allocation_never_falls_when_own_consumption_rises(op: Op, data: st.DataObject) -> None:
    members, _, _, rows = op
    cons, prod, slot = rows[0]
    who = data.draw(st.sampled_from(members))
    more = dict(cons)
    more[who] += data.draw(st.integers(1, 3000))
    before = run_one(members, cons, prod, ["prorata"], None, Settings(), slot).allocated_wh[who]
    after = run_one(members, more, prod, ["prorata"], None, Settings(), slot).allocated_wh[who]
    assert after >= before


@settings(max_examples=250, deadline=None)
@given(op=operation(max_rows=8), rounds=rounds_st, cfg=settings_st, block=st.integers(1, 5))
def test_vectorised_period_equals_the_single_quarter_hour_path(op: Op, rounds: list[str], cfg: Settings, block: int) -> None:
    members, producers, shares, data = op
    cons = np.array([[c[m] for m in members] for c, _, _ in data], dtype=np.int64)
    prod = np.array([[p[k] for k in producers] for _, p, _ in data], dtype=np.int64)
    slots = np.array([s for _, _, s in data])
    res = allocate(
        cons, prod, rounds, member_ids=members, producer_ids=producers, shares=shares, settings=cfg, slots=slots, block_rows=block
    )
    for t, (c, p, s) in enumerate(data):
        one = run_one(members, c, p, rounds, shares, cfg, s)
        assert res.allocated[t].tolist() == [one.allocated_wh[m] for m in members]
        assert res.producer_shared[t].tolist() == [one.by_producer[k]["shared_wh"] for k in producers]
        assert int(res.to_grid[t]) == one.to_grid_wh


@settings(max_examples=60, deadline=None)
@given(
    members=st.integers(1, 6),
    rounds=rounds_st,
    cfg=settings_st,
    data=st.data(),
)
def test_exact_at_the_size_limits(members: int, rounds: list[str], cfg: Settings, data: st.DataObject) -> None:
    """Volumes near the accepted limits (1 GWh per value, 9 GWh per quarter-hour) stay exact."""
    ids = [f"m{i}" for i in range(members)]
    big = st.integers(0, 10**9)
    per = 9 * 10**9 // max(members, 3)
    cons = {m: data.draw(st.integers(0, min(per, 10**9))) for m in ids}
    prod = {"p1": data.draw(big), "p2": data.draw(big), "p3": data.draw(big)}
    shares = {m: 1 / members for m in ids}
    slot = data.draw(st.integers(0, 10**7))
    r = run_one(ids, cons, prod, rounds, shares, cfg, slot)
    got, by_prod = reference(cons, prod, rounds, shares, cfg, slot, ids)
    assert r.allocated_wh == got
    assert {p: v["shared_wh"] for p, v in r.by_producer.items()} == by_prod
    assert sum(got.values()) + r.to_grid_wh == sum(prod.values())


def test_reference_agrees_on_the_hand_computed_aubange_case() -> None:
    # a guard on the reference itself (see test_allocation_presets.test_aubange)
    cons = {"a": 100, "b": 300, "c": 0, "d": 500, "e": 1000, "f": 2000}
    slot = slot_of(datetime.fromisoformat("2025-06-01T12:00:00+02:00"))
    got, by_prod = reference(cons, {"p1": 1800, "p2": 600}, ["equal", "equal", "prorata"], None, Settings(), slot, sorted(cons))
    assert got == {"a": 100, "b": 300, "c": 0, "d": 500, "e": 700, "f": 800}
    assert by_prod == {"p1": 1800, "p2": 600}


# --- exact to the Wh (issue 15) --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(op=operation(), rounds=rounds_st, cfg=settings_st)
def test_every_member_within_1_wh_of_the_exact_allocation(op: Op, rounds: list[str], cfg: Settings) -> None:
    members, _, shares, data = op
    cons, prod, slot = data[0]
    r = run_one(members, cons, prod, rounds, shares, cfg, slot)
    exact = exact_reference(cons, prod, rounds, shares, cfg, members)
    for m in members:
        assert abs(r.allocated_wh[m] - exact[m]) < 1, (m, r.allocated_wh[m], exact[m])
    assert abs(r.shared_wh - sum(exact.values(), Fraction(0))) < 1


@settings(max_examples=200, deadline=None)
@given(op=operation(), rounds=rounds_st, cfg=settings_st, data=st.data())
def test_identical_entitlement_within_1_wh_of_each_other(op: Op, rounds: list[str], cfg: Settings, data: st.DataObject) -> None:
    members, producers, shares, rows = op
    if len(members) < 2:
        return
    a, b = data.draw(st.lists(st.sampled_from(members), min_size=2, max_size=2, unique=True))
    cons, prod, slot = rows[0]
    cons = dict(cons)
    cons[b] = cons[a]  # same demand, same share, same role: the same entitlement
    low = min(shares[a], shares[b])
    shares = {**shares, a: low, b: low}
    if (a in prod) != (b in prod) or (a in prod and prod[a] != prod[b]):
        cfg = cfg.model_copy(update={"own_injection": "allowed"})
    r = run_one(members, cons, prod, rounds, shares, cfg, slot)
    assert abs(r.allocated_wh[a] - r.allocated_wh[b]) <= 1


@settings(max_examples=150, deadline=None)
@given(
    raw=st.lists(st.integers(1, 1000), min_size=1, max_size=9),
    pool=st.integers(0, 100_000),
    later=st.sampled_from([[], ["specific"], ["prorata"], ["equal"]]),
    slot=st.integers(0, 10**7),
)
def test_shares_summing_to_1_allocate_the_whole_pool_when_nobody_is_capped(raw: list[int], pool: int, later: list[str], slot: int) -> None:
    ids = [f"m{i}" for i in range(len(raw))]
    shares = {m: r / sum(raw) for m, r in zip(ids, raw, strict=True)}  # floats: their sum may miss 1 by a hair
    cons = dict.fromkeys(ids, pool + 1)  # everybody wants more than the whole pool
    r = run_one(ids, cons, {"p": pool}, ["specific", *later], shares, Settings(), slot)
    assert r.shared_wh == pool and r.to_grid_wh == 0
    # the same with shares written to 9 decimals (sum below 1 by up to n × 10^-9)
    nine = {m: round(v, 9) for m, v in shares.items()}
    if math.fsum(nine.values()) <= 1 + 1e-9:
        r = run_one(ids, cons, {"p": pool}, ["specific"], nine, Settings(), slot)
        assert r.shared_wh == pool


@settings(max_examples=150, deadline=None)
@given(op=operation(), rounds=rounds_st, cfg=settings_st, data=st.data())
def test_pool_fractions_and_round_shares_match_the_reference(op: Op, rounds: list[str], cfg: Settings, data: st.DataObject) -> None:
    members, _, shares, rows = op
    cons, prod, slot = rows[0]
    fractions = tuple(data.draw(st.sampled_from([0.25, 0.5, 1 / 3, 0.7, 1.0])) for _ in rounds)
    cfg = cfg.model_copy(update={"pool_fractions": fractions})
    round_shares: list[dict[str, float] | None] = []
    for _ in rounds:
        raw = data.draw(st.lists(st.integers(0, 10), min_size=len(members), max_size=len(members)))
        keep = data.draw(st.lists(st.booleans(), min_size=len(members), max_size=len(members)))
        total = max(1, sum(raw))
        round_shares.append(
            None if data.draw(st.booleans()) else {m: r / total for m, r, k in zip(members, raw, keep, strict=True) if k or "specific" in rounds}
        )
    r = allocate_quarter_hour(cons, prod, rounds, shares=shares, settings=cfg, start=start_of(slot), members=members, round_shares=round_shares)
    got, by_prod = reference(cons, prod, rounds, shares, cfg, slot, members, round_shares)
    assert r.allocated_wh == got
    assert {p: v["shared_wh"] for p, v in r.by_producer.items()} == by_prod


@settings(max_examples=80, deadline=None)
@given(op=operation(), rounds=rounds_st, cfg=settings_st)
def test_python_integer_path_matches_the_reference(op: Op, rounds: list[str], cfg: Settings) -> None:
    """Quarter-hours whose denominators outgrow 64 bits are redone in Python integers: force it."""
    from services.allocation import keys

    members, _, shares, data = op
    cons, prod, slot = data[0]
    saved = keys.DEN_LIMIT
    keys.DEN_LIMIT = 1.0  # every quarter-hour with a round to compute takes the wide path
    try:
        r = run_one(members, cons, prod, rounds, shares, cfg, slot)
    finally:
        keys.DEN_LIMIT = saved
    got, _ = reference(cons, prod, rounds, shares, cfg, slot, members)
    assert r.allocated_wh == got

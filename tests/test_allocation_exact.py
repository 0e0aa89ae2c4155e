"""Issue 15, hand-computed: exact rounds made whole once, shares summing to 1, and the keys OptimCE's
allocation-key simulator can express (a fraction of the pool per round, shares per round, fixed and
pro-rata participants in one round), through the Python API, the JSON request and the TOML file."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.allocation import AllocationInputError, Settings, allocate_quarter_hour, handle_request, parse_community

NOON = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)


def test_thirds_allocate_the_whole_pool() -> None:
    # shares 1/3 x 3, pool 3000, demand 5000 each: 1000 each (was 999/1000/1000 with shares to 1e-9)
    cons = {"a": 5000, "b": 5000, "c": 5000}
    r = allocate_quarter_hour(cons, {"p": 3000}, ["specific"], shares=dict.fromkeys(cons, 1 / 3), start=NOON)
    assert r.allocated_wh == {"a": 1000, "b": 1000, "c": 1000} and r.to_grid_wh == 0
    # written to 9 decimals (sum 0.999999999): taken as summing to 1
    r = allocate_quarter_hour(cons, {"p": 3000}, ["specific"], shares=dict.fromkeys(cons, 0.333333333), start=NOON)
    assert r.allocated_wh == {"a": 1000, "b": 1000, "c": 1000}
    # shares that really leave a part unassigned still send it to the grid: 0.3 x 3 = 0.9
    r = allocate_quarter_hour(cons, {"p": 3000}, ["specific"], shares=dict.fromkeys(cons, 0.3), start=NOON)
    assert r.allocated_wh == {"a": 900, "b": 900, "c": 900} and r.to_grid_wh == 300


def test_identical_entitlement_gets_the_same_wh() -> None:
    # cascade, pool 2100 among a (100) and b, c, d (1000 each):
    # round 1: 525 each → a 100, b c d 525 (1675 given, 425 left);
    # round 2 among b, c, d: 141 2/3 each; b = c = d = 666 2/3 exactly; sum of fractions 2 → 2 Wh by
    # tie-break, so two get 667 and one 666 — never 665/668 as with per-round rounding.
    r = allocate_quarter_hour({"a": 100, "b": 1000, "c": 1000, "d": 1000}, {"p": 2100}, ["equal", "equal"], start=NOON)
    vals = sorted(r.allocated_wh[m] for m in "bcd")
    assert vals == [666, 667, 667] and r.allocated_wh["a"] == 100 and r.to_grid_wh == 0


# --- a fraction of the pool per round -----------------------------------------------------------


def test_pool_fractions_half_then_half() -> None:
    # pool 1000; a wants 100, b 1000; equal, equal with pool_fractions [0.5, 0.5]:
    # round 1 offers 500: 250 each → a 100 (capped), b 250; 650 left.
    # round 2 offers min(650, 500) = 500 to the short b: b + 500 = 750.
    # The 150 round 1 left unused is beyond round 2's half: to the grid.
    cons = {"a": 100, "b": 1000}
    r = allocate_quarter_hour(cons, {"p": 1000}, ["equal", "equal"], settings=Settings(pool_fractions=(0.5, 0.5)), start=NOON)
    assert r.allocated_wh == {"a": 100, "b": 750} and r.to_grid_wh == 150
    # [0.5, 1]: round 2 may offer all that is left (650): b = 250 + 650 = 900
    r = allocate_quarter_hour(cons, {"p": 1000}, ["equal", "equal"], settings=Settings(pool_fractions=(0.5, 1)), start=NOON)
    assert r.allocated_wh == {"a": 100, "b": 900} and r.to_grid_wh == 0


def test_pool_fractions_exact_with_an_odd_pool() -> None:
    # pool 1001, a 100, b and c 1000, equal, equal, [0.5, 0.5]:
    # round 1 offers 500.5: 166 5/6 each → a 100, b c 166 5/6 (433 2/3 given, 567 1/3 left)
    # round 2 offers min(567 1/3, 500.5) = 500.5 to b and c: 250.25 each → b = c = 417 1/12
    # exact total 934 1/6 → 934 Wh: a 100, b 417, c 417; to the grid 1001 - 934 = 67.
    r = allocate_quarter_hour(
        {"a": 100, "b": 1000, "c": 1000}, {"p": 1001}, ["equal", "equal"], settings=Settings(pool_fractions=(0.5, 0.5)), start=NOON
    )
    assert r.allocated_wh == {"a": 100, "b": 417, "c": 417} and r.to_grid_wh == 67


# --- shares that differ per round ---------------------------------------------------------------


def test_round_shares_70_30_in_round_2() -> None:
    # pool 2000; a 300, b 1000, c 1000; specific, specific.
    # round 1 shares a .2, b .4, c .4: a 400 → 300 (capped), b 800, c 800; 100 left.
    # round 2 shares b .7, c .3 (renormalised over the short b, c: .7 + .3 = 1): b 70, c 30.
    cons = {"a": 300, "b": 1000, "c": 1000}
    r1 = {"a": 0.2, "b": 0.4, "c": 0.4}
    r = allocate_quarter_hour(cons, {"p": 2000}, ["specific", "specific"], round_shares=[r1, {"a": 0.0, "b": 0.7, "c": 0.3}], start=NOON)
    assert r.allocated_wh == {"a": 300, "b": 870, "c": 830} and r.to_grid_wh == 0
    # the same shares in both rounds: round 2 renormalises b .4, c .4 → 50 each
    r = allocate_quarter_hour(cons, {"p": 2000}, ["specific", "specific"], shares=r1, start=NOON)
    assert r.allocated_wh == {"a": 300, "b": 850, "c": 850}
    # a null entry means "the shares": same as above
    r = allocate_quarter_hour(cons, {"p": 2000}, ["specific", "specific"], shares=r1, round_shares=[None, None], start=NOON)
    assert r.allocated_wh == {"a": 300, "b": 850, "c": 850}


# --- fixed and pro-rata participants in one round ------------------------------------------------


def test_mixed_key_fixed_share_and_prorata_of_the_rest() -> None:
    # a has an agreed 30 %; b and c have none and share the other 70 % pro rata of demand.
    # pool 1000; a 500, b 200, c 600: a 300; 700 × 200/800 = 175 to b, 700 × 600/800 = 525 to c.
    r = allocate_quarter_hour({"a": 500, "b": 200, "c": 600}, {"p": 1000}, ["mixed"], shares={"a": 0.3}, start=NOON)
    assert r.allocated_wh == {"a": 300, "b": 175, "c": 525} and r.to_grid_wh == 0
    # c wants 400: b 700 × 200/600 = 233 1/3 → capped at 200; c 466 2/3 → capped at 400; 100 to grid
    r = allocate_quarter_hour({"a": 500, "b": 200, "c": 400}, {"p": 1000}, ["mixed"], shares={"a": 0.3}, start=NOON)
    assert r.allocated_wh == {"a": 300, "b": 200, "c": 400} and r.to_grid_wh == 100
    # and a pro-rata round after it gives those 100 to the only one short, a: 400
    r = allocate_quarter_hour({"a": 500, "b": 200, "c": 400}, {"p": 1000}, ["mixed", "prorata"], shares={"a": 0.3}, start=NOON)
    assert r.allocated_wh == {"a": 400, "b": 200, "c": 400} and r.to_grid_wh == 0


def test_mixed_key_odd_wh() -> None:
    # pool 100; a 1/3 fixed, b and c pro rata with demand 1000 and 2000:
    # a 33 1/3; the other 66 2/3: b 22 2/9, c 44 4/9. Floors 33 + 22 + 44 = 99, fractions sum to 1:
    # the Wh goes to the largest fraction, c (4/9 > 1/3 > 2/9) → a 33, b 22, c 45.
    r = allocate_quarter_hour({"a": 1000, "b": 1000, "c": 2000}, {"p": 100}, ["mixed"], shares={"a": 1 / 3}, start=NOON)
    assert r.allocated_wh == {"a": 33, "b": 22, "c": 45}


# --- the JSON request and the TOML file ----------------------------------------------------------


def _request(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "rounds": ["specific", "specific"],
        "shares": {"a": 0.2, "b": 0.4, "c": 0.4},
        "quarter_hours": [{"start": "2025-06-01T12:00:00+02:00", "production_wh": {"p": 2000}, "consumption_wh": {"a": 300, "b": 1000, "c": 1000}}],
    }
    base.update(kw)
    return base


def test_json_request_with_the_new_settings() -> None:
    out = handle_request(_request(round_shares=[None, {"a": 0.0, "b": 0.7, "c": 0.3}]))
    assert out["quarter_hours"][0]["allocated_wh"] == {"a": 300, "b": 870, "c": 830}
    out = handle_request(
        _request(rounds=["equal", "equal"], shares=None, settings={"pool_fractions": [0.5, 0.5]},
                 quarter_hours=[{"start": "2025-06-01T12:00:00+02:00", "production_wh": {"p": 1000}, "consumption_wh": {"a": 100, "b": 1000}}])
    )
    assert out["quarter_hours"][0]["allocated_wh"] == {"a": 100, "b": 750}
    out = handle_request(
        _request(rounds=["mixed"], shares={"a": 0.3},
                 quarter_hours=[{"start": "2025-06-01T12:00:00+02:00", "production_wh": {"p": 1000}, "consumption_wh": {"a": 500, "b": 200, "c": 600}}])
    )
    assert out["quarter_hours"][0]["allocated_wh"] == {"a": 300, "b": 175, "c": 525}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_request(round_shares=[None]), "round_shares"),
        (_request(round_shares=[None, {"a": 0.7, "b": 0.7, "c": 0.0}]), "round_shares[1]"),
        (_request(round_shares=[None, {"a": 0.5, "b": 0.5}]), "round_shares[1].c"),
        (_request(round_shares=[None, {"z": 0.5}], members=["a", "b", "c"]), "round_shares[1].z"),
        (_request(settings={"pool_fractions": [0.5]}), "settings.pool_fractions"),
        (_request(settings={"pool_fractions": [0.0, 1.0]}), "settings.pool_fractions.0"),
        (_request(settings={"pool_fractions": [0.5, 1.5]}), "settings.pool_fractions.1"),
        (_request(rounds=["mixed"], shares=None), "shares"),
    ],
)
def test_json_refusals_name_the_field(request_: dict[str, object], field: str) -> None:
    with pytest.raises(AllocationInputError) as exc:
        handle_request(request_)
    assert exc.value.field == field


def _community(members: str, rounds: str = '["specific", "specific"]', settings: str = "") -> dict[str, object]:
    import tomllib

    return tomllib.loads(f"""
[community]
id = "c"
[[operations]]
id = "op"
rounds = {rounds}
{settings}
{members}
""")


MEMBERS = """
[[operations.members]]
id = "pv"
role = "producer"
[[operations.members]]
id = "a"
share = 0.2
round_shares = [0.2, 0.0]
[[operations.members]]
id = "b"
share = 0.4
round_shares = [0.4, 0.7]
[[operations.members]]
id = "c"
share = 0.4
round_shares = [0.4, 0.3]
"""


def test_toml_round_shares_and_pool_fractions() -> None:
    op = parse_community(_community(MEMBERS, settings="[operations.settings]\npool_fractions = [1.0, 1.0]")).operation()
    assert op.round_shares == [{"a": 0.2, "b": 0.4, "c": 0.4}, {"a": 0.0, "b": 0.7, "c": 0.3}]
    assert op.settings.pool_fractions == (1.0, 1.0)
    r = allocate_quarter_hour(
        {"a": 300, "b": 1000, "c": 1000}, {"pv": 2000}, op.key_rounds, shares=op.shares, round_shares=op.round_shares,
        settings=op.settings, members=op.participants, start=NOON,
    )
    assert r.allocated_wh == {"a": 300, "b": 870, "c": 830}


@pytest.mark.parametrize(
    ("members", "settings", "field"),
    [
        (MEMBERS.replace("[0.2, 0.0]", "[0.2]"), "", "operations[0].members[1].round_shares"),
        (MEMBERS.replace("[0.4, 0.7]", "[0.4, 0.8]"), "", "operations[0].members[*].round_shares[1]"),
        (MEMBERS.replace("[0.4, 0.7]", "[0.4, 1.7]"), "", "operations[0].members[2].round_shares[1]"),
        (MEMBERS, "[operations.settings]\npool_fractions = [0.5]", "operations[0].settings.pool_fractions"),
    ],
)
def test_toml_refusals_name_the_field(members: str, settings: str, field: str) -> None:
    with pytest.raises(AllocationInputError) as exc:
        parse_community(_community(members, settings=settings))
    assert exc.value.field == field

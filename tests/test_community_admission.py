"""What a member's figure must pass before the community server stores it (pure checks), and the
server's isolation of what got in before those checks existed (a real SQLite ledger, no broker)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.community.admission import (
    DEFAULT_MAX_POWER_W,
    Limits,
    Refusal,
    check_live,
    check_quarter_hour,
    max_quarter_hour_wh,
    screen_live,
    screen_quarter_hour,
)
from services.community.ledger import Incoming, Ledger
from services.community.server import BrokerLink, CommunityServer
from tests.community_fixtures import roster

NOW = datetime(2026, 12, 5, 9, 20, tzinfo=timezone.utc)
NOW_S = NOW.timestamp()
L = Limits()
P = DEFAULT_MAX_POWER_W
Q = timedelta(minutes=15)
LAST = datetime(2026, 12, 5, 9, 0, tzinfo=timezone.utc)  # the last closed quarter-hour


def reason(refused):
    return None if refused is None else refused.reason


def test_the_residential_default_is_three_phase_400_v_63_a() -> None:
    assert abs(DEFAULT_MAX_POWER_W - math.sqrt(3) * 400 * 63) < 1
    assert max_quarter_hour_wh(P) == 10_912  # 43.6 kW for a quarter-hour


@pytest.mark.parametrize(("start", "imp", "exp", "why"), [
    (LAST, 300, 0, None),
    (LAST - timedelta(days=39), 300, 0, None),
    (LAST + Q, 0, 0, None),  # 09:15 closed early: a meter clock a little ahead is tolerated
    (datetime(9999, 12, 31, 23, 45, tzinfo=timezone.utc), 300, 0, Refusal.FUTURE),
    (LAST + timedelta(days=1), 300, 0, Refusal.FUTURE),
    (LAST - timedelta(days=41), 300, 0, Refusal.TOO_OLD),
    (datetime(1970, 1, 1, tzinfo=timezone.utc), 300, 0, Refusal.TOO_OLD),
    (LAST + timedelta(minutes=7), 300, 0, Refusal.MISALIGNED),
    (LAST + timedelta(seconds=1), 300, 0, Refusal.MISALIGNED),
    (LAST, 10_000_000_000, 0, Refusal.ABOVE_MAX_POWER),  # 10 GWh
    (LAST, 0, 10_913, Refusal.ABOVE_MAX_POWER),
    (LAST, 0, 10_912, None),
    (LAST, -1, 0, Refusal.NEGATIVE),
    (LAST, math.nan, 0, Refusal.NOT_FINITE),
    (LAST, 0, math.inf, Refusal.NOT_FINITE),
])
def test_quarter_hours(start, imp, exp, why) -> None:
    assert reason(check_quarter_hour(start, imp, exp, NOW_S, P, L)) == why


def test_a_member_with_its_own_maximum_power() -> None:
    school = 250_000  # a school with a 250 kW connection: 62.5 kWh a quarter-hour
    assert check_quarter_hour(LAST, 0, 60_000, NOW_S, school, L) is None
    assert reason(check_quarter_hour(LAST, 0, 70_000, NOW_S, school, L)) == Refusal.ABOVE_MAX_POWER


@pytest.mark.parametrize(("imp", "exp", "qi", "qe", "why"), [
    (400.0, 0.0, 50.0, None, None),
    (0.0, 1e300, None, None, Refusal.ABOVE_MAX_POWER),
    (0.0, math.inf, None, None, Refusal.NOT_FINITE),
    (math.nan, 0.0, None, None, Refusal.NOT_FINITE),
    (-5.0, 0.0, None, None, Refusal.NEGATIVE),
    (0.0, 0.0, None, 1e12, Refusal.ABOVE_MAX_POWER),
    (P + 1, 0.0, None, None, Refusal.ABOVE_MAX_POWER),
])
def test_live_summaries(imp, exp, qi, qe, why) -> None:
    assert reason(check_live(imp, exp, qi, qe, P)) == why


def test_raw_payloads_are_named_for_what_is_wrong_before_the_wire_format_refuses_them() -> None:
    import json

    def raw(text: str):
        return json.loads(text)

    assert reason(screen_quarter_hour(raw('{"start": "2026-12-05T09:07:00Z", "import_wh": 1}'), NOW_S, P, L)) \
        == Refusal.MISALIGNED
    assert reason(screen_quarter_hour(raw('{"start": "9999-12-31T23:45:00Z"}'), NOW_S, P, L)) == Refusal.FUTURE
    assert reason(screen_quarter_hour(raw('{"start": "2026-12-05T09:00:00Z", "export_wh": -3}'), NOW_S, P, L)) \
        == Refusal.NEGATIVE
    assert reason(screen_live(raw('{"import_w": NaN}'), P)) == Refusal.NOT_FINITE
    assert reason(screen_live(raw('{"export_w": Infinity}'), P)) == Refusal.NOT_FINITE
    assert screen_quarter_hour(raw('{"start": "not a time", "import_wh": "x"}'), NOW_S, P, L) is None  # the wire's job
    assert screen_quarter_hour([1, 2], NOW_S, P, L) is None


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_an_admitted_live_power_is_finite_and_bounded(imp: float, exp: float) -> None:
    if check_live(imp, exp, None, None, P) is None:
        assert all(math.isfinite(w) and 0 <= w <= P for w in (imp, exp))


# -- isolation: figures that reached a ledger before the checks existed ------------------------------


def test_a_poisoned_quarter_hour_in_the_ledger_never_holds_up_the_others(tmp_path: Path) -> None:
    """A ledger written before admission holds a 10 GWh quarter-hour: its allocation fails (the engine
    refuses it) at every tick, and the honest, incomplete quarter-hours behind it are estimated all
    the same; a resend request after a session loss is still possible with a year-9999 start."""
    ledger = Ledger(tmp_path / "c.sqlite")
    srv = CommunityServer(roster(tmp_path, ["op1"]), ledger, BrokerLink("127.0.0.1", 1), deadline_s=300,
                          clock=lambda: NOW_S)
    try:
        bad = LAST - 4 * Q
        ledger.add_quarter_hours([Incoming("op1", "alice", bad, 10_000_000_000, 0, "measured", NOW_S - 3600)])
        ledger.add_quarter_hours([Incoming("op1", m, LAST - k * Q, 100, 0 if m != "school" else 400, "measured",
                                           NOW_S - 3600) for k in (1, 2, 3) for m in ("alice", "school")])
        assert srv.allocate_overdue(NOW_S) == 3  # bob estimated in each; the poisoned one failed alone
        assert srv.stats.allocation_errors == 1
        assert ledger.allocated_starts("op1", LAST - 5 * Q) == {LAST - k * Q for k in (1, 2, 3)}
        assert srv.allocate_overdue(NOW_S + 5) == 0 and srv.stats.allocation_errors == 2  # retried, alone
        far = datetime(9999, 12, 31, 23, 45, tzinfo=timezone.utc)
        ledger.add_quarter_hours([Incoming("op1", "bob", far, 1, 0, "measured", NOW_S)])
        assert srv.request_resends() == 3  # no OverflowError: the request asks from inside the window
    finally:
        ledger.close()

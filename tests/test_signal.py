"""The consume-now signal: worked examples of each rule (services/signal.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from services.signal import (
    Alert,
    Basis,
    QuarterSoFar,
    Reason,
    SignalInputs,
    SignalSettings,
    SignalTracker,
    State,
    next_signal,
    projected_balance_w,
)
from tests.signal_scenarios import T0, inputs_for


def run(steps, settings=None, **kw):
    tracker = SignalTracker(settings or SignalSettings())
    return [tracker.update(i) for i in inputs_for(steps, **kw)]


def test_steady_export_is_green_with_its_power_as_headroom():
    sigs = run([(10, 2000.0)] * 30)
    last = sigs[-1]
    assert last.state is State.GREEN and last.reason is Reason.SURPLUS
    assert last.headroom_w == 2000
    assert last.basis is Basis.OWN_METER
    d = last.as_dict()
    assert d["state"] == "green" and d["headroom_w"] == 2000 and d["reason"] == "surplus"
    assert d["valid_until"].endswith("Z") and "2000 W" in d["detail"]


def test_steady_import_is_red_with_no_headroom():
    last = run([(10, -800.0)] * 10)[-1]
    assert last.state is State.RED and last.reason is Reason.NO_SURPLUS
    assert last.headroom_w == 0 and last.balance_w == pytest.approx(-800)


def test_small_surplus_is_amber():
    last = run([(10, 300.0)] * 10)[-1]
    assert last.state is State.AMBER and last.reason is Reason.SMALL_SURPLUS and last.headroom_w == 300


def test_projection_blends_banked_energy_with_current_power():
    # 10 minutes at 3 kW export banked 500 Wh; now importing 600 W for the last 5 minutes:
    # projected = 500 - 600 * 300 / 3600 = 450 Wh over the quarter-hour = 1800 W average
    q = QuarterSoFar(start=T0, elapsed_s=600, imported_wh=0, exported_wh=500, import_w=600, export_w=0)
    assert projected_balance_w(q) == pytest.approx(1800)
    # at the very start of a quarter-hour the projection is the current power
    q0 = replace(q, elapsed_s=0, exported_wh=0)
    assert projected_balance_w(q0) == pytest.approx(-600)
    # start boundary unknown (just restarted): current power only
    assert projected_balance_w(replace(q, imported_wh=None, exported_wh=None)) == pytest.approx(-600)


def test_a_passing_cloud_late_in_the_quarter_hour_does_not_flip_it():
    # no hold time at all: only the running quarter-hour keeps it green
    s = SignalSettings(hold_s=0)
    sigs = run([(10, 2500.0)] * 60 + [(10, -400.0)] * 6 + [(10, 2500.0)] * 5, settings=s)
    assert {sig.state for sig in sigs[5:]} == {State.GREEN}


def test_instantaneous_dip_would_flip_a_naive_signal_but_not_this_one():
    # the same cloud at the start of a quarter-hour does turn it (nothing is banked yet), after the hold
    s = SignalSettings(hold_s=0)
    sigs = run([(450, 2500.0), (450, 2500.0), (30, -400.0)], settings=s)
    assert sigs[1].state is State.GREEN and sigs[2].state is State.RED


def test_hysteresis_keeps_green_between_exit_and_enter_thresholds():
    s = SignalSettings(hold_s=0)
    sigs = run([(900, 600.0), (900, 300.0), (900, 200.0)], settings=s)
    assert [x.state for x in sigs] == [State.GREEN, State.GREEN, State.AMBER]
    # coming from amber, 300 W is not enough for green
    sigs = run([(900, 200.0), (900, 300.0), (900, 600.0)], settings=s)
    assert [x.state for x in sigs] == [State.AMBER, State.AMBER, State.GREEN]
    # leaving red needs red_exit_w
    sigs = run([(900, -100.0), (900, 100.0), (900, 160.0)], settings=s)
    assert [x.state for x in sigs] == [State.RED, State.RED, State.AMBER]


def test_minimum_hold_time_keeps_a_state_and_says_what_is_pending():
    s = SignalSettings(hold_s=120)
    # green for 900 s, then a new quarter-hour of import: held green for 120 s, then red
    sigs = run([(900, 2000.0)] + [(10, -1500.0)] * 20, settings=s)
    assert sigs[0].state is State.GREEN
    held = [x for x in sigs[1:] if x.held]
    assert held and all(x.state is State.GREEN and x.pending is State.RED for x in held)
    first_red = next(x for x in sigs if x.state is State.RED)
    assert first_red.computed_at - sigs[0].since >= timedelta(seconds=120)
    assert "flapping" in held[0].detail


def test_valid_until_covers_the_hold_and_the_quarter_hour():
    s = SignalSettings(hold_s=120)
    sig = run([(60, 2000.0)], settings=s)[0]
    assert sig.valid_until >= sig.since + timedelta(seconds=120)
    # steady power: the next quarter-hour starts in the same state, so one more quarter-hour
    assert sig.valid_until == T0 + timedelta(minutes=30)
    # power now below what the state needs at the next quarter-hour: until this one ends
    q = QuarterSoFar(start=T0, elapsed_s=600, imported_wh=0, exported_wh=500, import_w=600, export_w=0)
    sig2 = next_signal(sig, SignalInputs(now=T0 + timedelta(seconds=600), own=q), s)
    assert sig2.state is State.GREEN and sig2.valid_until == T0 + timedelta(minutes=15)


def test_stale_data_is_never_green():
    inputs = inputs_for([(60, 3000.0)])[0]
    stale = replace(inputs, own=replace(inputs.own, age_s=45))
    sig = next_signal(None, stale)
    assert sig.state is State.AMBER and sig.reason is Reason.STALE_DATA


def test_no_data_is_red():
    sig = next_signal(None, SignalInputs(now=T0))
    assert sig.state is State.RED and sig.reason is Reason.NO_DATA and sig.basis is Basis.NONE
    assert sig.balance_w is None and sig.headroom_w == 0


def test_operation_totals_win_over_the_own_meter_while_fresh():
    own = inputs_for([(60, -500.0)])[0]  # this household imports
    op = QuarterSoFar(start=T0, elapsed_s=60, imported_wh=50, exported_wh=150, import_w=3000, export_w=9000)
    sig = next_signal(None, replace(own, operation=op))
    assert sig.basis is Basis.OPERATION and sig.state is State.GREEN
    # the fleet link went quiet: fall back to the own meter
    sig = next_signal(None, replace(own, operation=replace(op, age_s=600)))
    assert sig.basis is Basis.OWN_METER and sig.state is State.RED


def test_reduce_now_alert_overrides_hold_and_ends_with_the_alert():
    s = SignalSettings(hold_s=600)
    inputs = inputs_for([(10, 3000.0)] * 40)
    alert = Alert(start=inputs[10].now, until=inputs[20].now, message="Peak on the feeder.")
    tracker = SignalTracker(s)
    sigs = [tracker.update(replace(i, alert=alert)) for i in inputs]
    assert sigs[9].state is State.GREEN
    assert all(x.state is State.RED and x.reason is Reason.REDUCE_NOW for x in sigs[10:20])
    assert sigs[10].valid_until == alert.until and "Peak on the feeder." in sigs[10].detail
    assert sigs[10].as_dict()["alert"]["message"] == "Peak on the feeder."
    assert sigs[20].state is State.GREEN and sigs[20].reason is Reason.SURPLUS


def test_declared_triggered_load_is_added_back():
    # 2 kW surplus; a 1.9 kW heat-pump boiler started by the signal after 5 minutes
    steps = [(60, 2000.0)] * 20
    undeclared = run(steps, load_w=1900.0, load_from_step=5, settings=SignalSettings(hold_s=0))
    declared = run(steps, load_w=1900.0, load_from_step=5, declare=True, settings=SignalSettings(hold_s=0))
    plain = run(steps, settings=SignalSettings(hold_s=0))
    assert undeclared[-1].state is State.AMBER  # the load ate the surplus: a naive signal flips
    assert [x.state for x in declared] == [x.state for x in plain] == [State.GREEN] * 20
    assert declared[-1].headroom_w == plain[-1].headroom_w == 2000
    assert declared[-1].triggered_w == 1900


def test_settings_are_validated():
    with pytest.raises(ValueError):
        SignalSettings(green_enter_w=100, green_exit_w=200)
    with pytest.raises(ValueError):
        SignalSettings(red_enter_w=200, red_exit_w=100)
    with pytest.raises(ValueError):
        SignalSettings(hold_s=-1)

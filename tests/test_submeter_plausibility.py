"""MBus sub-meter plausibility (gateway/submeter_plausibility.py): the gas and water registers a P1
telegram relays are gated per meter and channel before the live feed, Home Assistant or InfluxDB
see them. Hand-made cases first, then properties over any sequence, then the pipeline."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import Reading, SubMeterReading
from gateway.pipeline import Pipeline
from gateway.submeter_plausibility import ChannelGate, FlowLimits, SubReason

UTC = timezone.utc
T0 = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
FIVE_MIN = 300


def gas(s: float, value: float, unit: str = "m3", channel: int = 1, kind: str = "gas") -> SubMeterReading:
    return SubMeterReading(channel, kind, value, unit, T0 + timedelta(seconds=s))


def check(g: ChannelGate, m: SubMeterReading, now: datetime | None = None):
    return g.check(m, reading_time=m.time or T0, now=now)


def honest_gate(kind: str = "gas", **kw) -> ChannelGate:
    g = ChannelGate("E1", 1, kind, FlowLimits(**kw))
    for i in range(3):
        assert check(g, gas(i * FIVE_MIN, 1000.0 + i * 0.1, kind=kind)).accepted
    return g  # last: 1000.2 m3 at 600 s


def test_the_same_capture_again_is_no_news_and_no_error():
    g = honest_gate()
    for _ in range(5):  # telegrams every second repeat the 5-minute capture
        d = check(g, gas(600, 1000.2))
        assert not d.accepted and not d.refused and not d.held
    assert g.last == gas(600, 1000.2)


def test_a_glitched_value_is_held_then_refused_and_never_accepted():
    g = honest_gate()
    d = check(g, gas(900, 99999.999))
    assert d.held and not d.accepted and not d.refused
    assert g.last.value == 1000.2  # what the caller publishes meanwhile
    assert not check(g, gas(900, 99999.999)).refused  # its repeats are the same held reading
    d = check(g, gas(1200, 1000.35))
    assert [m.value for m in d.accepted] == [1000.35]
    assert [(r.reason, r.reading.value) for r in d.refused] == [(SubReason.IMPLAUSIBLE_STEP, 99999.999)]


def test_the_same_capture_time_with_another_value_is_refused_at_once():
    g = honest_gate()
    d = check(g, gas(600, 1234.5))
    assert [r.reason for r in d.refused] == [SubReason.IMPLAUSIBLE_STEP] and not d.held
    d = check(g, gas(600, 12.5))
    assert [r.reason for r in d.refused] == [SubReason.REGISTER_DROP]
    assert g.last.value == 1000.2


def test_a_drop_is_held_and_a_meter_exchange_is_believed_once_it_persists():
    g = honest_gate(confirm=3)
    d1 = check(g, gas(900, 0.01))
    d2 = check(g, gas(1200, 0.05))
    assert d1.held and d2.held and not d1.refused and not d2.refused and g.last.value == 1000.2
    d3 = check(g, gas(1500, 0.12))
    assert d3.reset and [m.value for m in d3.accepted] == [0.01, 0.05, 0.12]
    assert g.last.value == 0.12


def test_a_drop_that_does_not_persist_is_refused_as_a_drop():
    g = honest_gate()
    assert check(g, gas(900, 1.0)).held
    d = check(g, gas(1200, 1000.3))
    assert [r.reason for r in d.refused] == [SubReason.REGISTER_DROP] and [m.value for m in d.accepted] == [1000.3]


@pytest.mark.parametrize("kind, dt, step, ok", [
    ("gas", 300, 1.0, True),      # 12 m3/h for 5 min: within 10 m3/h + 25 % margin + 1 s + 1 dm3
    ("gas", 300, 1.1, False),     # 13.2 m3/h
    ("gas", 3600, 12.0, True),    # DSMR 4: hourly captures
    ("gas", 3600, 13.0, False),
    ("water", 300, 0.5, True),    # 6 m3/h: within 5 m3/h + margin
    ("water", 300, 0.6, False),   # 7.2 m3/h
    ("heat", 300, 500.0, True),   # heat (GJ): no bound unless configured
])
def test_a_step_is_bounded_by_the_maximum_flow_over_the_time_between_captures(kind, dt, step, ok):
    g = honest_gate(kind)
    d = check(g, gas(600 + dt, 1000.2 + step, kind=kind))
    assert bool(d.accepted) is ok and d.held is not ok


def test_a_configured_flow_replaces_the_default():
    g = honest_gate(max_flow={"gas": 25.0})  # a G16 meter
    assert check(g, gas(900, 1000.2 + 2.5)).accepted


def test_a_capture_time_ahead_of_the_pi_clock_is_refused_and_one_behind_is_not():
    g = honest_gate(clock_tolerance_s=900)
    now = T0 + timedelta(seconds=700)
    d = check(g, gas(900 + 86400, 1000.3), now=now)
    assert [r.reason for r in d.refused] == [SubReason.FUTURE] and not d.held
    # a lost radio link: the last capture keeps coming, hours behind the Pi clock, and is fine
    d = check(g, gas(600, 1000.2), now=now + timedelta(hours=6))
    assert not d.refused


def test_a_capture_time_going_backwards_is_held_and_refused_unless_it_persists():
    g = honest_gate()
    assert check(g, gas(300, 1000.25)).held
    d = check(g, gas(900, 1000.3))
    assert [r.reason for r in d.refused] == [SubReason.TIME_JUMP] and [m.value for m in d.accepted] == [1000.3]
    # the clock corrected an hour back for good: believed once three captures continue it
    held = [check(g, gas(900 - 3600 + k * FIVE_MIN, 1000.35 + k * 0.05)) for k in range(3)]
    assert held[0].held and held[1].held and held[2].clock_step and not held[2].reset
    assert [m.value for m in held[2].accepted] == [1000.35, 1000.4, 1000.45]


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_nan_infinite_and_negative_values_are_refused(value):
    g = honest_gate()
    d = check(g, gas(900, value))
    assert [r.reason for r in d.refused] == [SubReason.INVALID_VALUE] and not d.held and g.last.value == 1000.2


def test_a_unit_change_is_refused_and_believed_only_once_it_persists():
    g = honest_gate(confirm=3)
    assert [r.reason for r in check(g, gas(900, 3.2, unit="GJ")).refused] == [SubReason.UNIT_CHANGE]
    assert not check(g, gas(1200, 1000.3)).refused  # the m3 register goes on
    assert [r.reason for r in check(g, gas(1500, 3.2, unit="GJ")).refused] == [SubReason.UNIT_CHANGE]
    assert [r.reason for r in check(g, gas(1800, 3.3, unit="GJ")).refused] == [SubReason.UNIT_CHANGE]
    d = check(g, gas(2100, 3.4, unit="GJ"))
    assert d.reset and [m.unit for m in d.accepted] == ["GJ"]
    assert check(g, gas(2400, 3.5, unit="GJ")).accepted


def test_a_restarted_gate_judges_its_first_reading_against_the_stored_one():
    g = ChannelGate.resume("E1", FlowLimits(), gas(600, 1000.2))
    assert check(g, gas(900, 99999.999)).held
    assert check(g, gas(900 + 300, 1000.3)).accepted


def test_flow_limits_are_finite():
    for bad in (math.nan, math.inf, 0, -1):
        with pytest.raises(ValueError):
            FlowLimits(max_flow={"gas": bad})


# -- properties: whatever the sequence ---------------------------------------------------------------

MAX_FLOW = 10.0  # m3/h, the gas default
MARGIN = 1.25


def _allowed(dt_s: float) -> float:
    """The most an accepted step may be (m3): flow × margin × (elapsed + 1 s) + 1 dm3."""
    return MAX_FLOW * MARGIN * (dt_s + 1) / 3600 + 0.001 + 1e-9


events = st.lists(st.tuples(
    st.sampled_from([0, 1, 300, 300, 300, 3600, -300, 86400]),  # seconds from the previous capture
    st.one_of(st.floats(0, 1.5), st.sampled_from([99999.999, -1000.0, 0.0, math.nan, math.inf])),
    st.sampled_from(["m3", "m3", "m3", "m3", "GJ"]),
), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(events)
def test_the_accepted_register_never_falls_nor_runs_faster_than_the_meter_can(seq):
    """Any sequence of captures (repeats, glitches, drops, clocks going back, unit changes): between two
    accepted readings that are not a confirmed reset, the register never falls and grows at most by
    the maximum flow over the time between their own capture times; their capture times only go back
    at a confirmed clock correction."""
    g = ChannelGate("E1", 1, "gas", FlowLimits())
    t, v = 0, 5000.0
    prev: SubMeterReading | None = None
    for dt, dv, unit in seq:
        t += dt
        # registers as the meter writes them: m3 with 3 decimals (judged to the dm3)
        value = dv if dv in (99999.999, 0.0) or not math.isfinite(dv) or dv < 0 else round(v + dv, 3)
        if math.isfinite(value) and value >= 0 and value != 99999.999:
            v = value
        d = check(g, gas(t, value, unit=unit))
        for i, m in enumerate(d.accepted):
            if prev is not None and not (d.reset and i == 0):
                dt_s = (m.time - prev.time).total_seconds()
                assert (dt_s > 0 or (d.clock_step and i == 0)) and m.unit == prev.unit
                assert 0 <= m.value - prev.value <= (_allowed(dt_s) if dt_s > 0 else math.inf), (prev, m)
            prev = m
        assert g.last == prev


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.8), st.booleans()), min_size=3, max_size=60),
       st.sampled_from([99999.999, 0.0, 1e9, 12.345]))
def test_isolated_glitches_never_reach_what_is_published(steps, glitch):
    """An honest 5-minute gas stream with glitched captures, never ``confirm`` in a row: every value
    published (the channel's last accepted) is an honest one, and each glitch is counted once."""
    g = ChannelGate("E1", 1, "gas", FlowLimits(confirm=3))
    t, v = 0, 1000.0
    honest, glitches, refused, run = set(), 0, 0, 0
    for i, (dv, bad) in enumerate(steps):
        t += FIVE_MIN
        bad = bad and i > 0 and run < 2  # the first reading is taken as it is: make it honest
        run = run + 1 if bad else 0
        if bad:
            glitches += 1
            d = check(g, gas(t, glitch))
        else:
            v = round(v + dv, 3)
            honest.add(v)
            d = check(g, gas(t, v))
        refused += len(d.refused)
        assert g.last is not None and g.last.value in honest
    assert refused + len(g.gate.held) == glitches


# -- through the pipeline: counted per meter and reason, logged once, never passed on ----------------


class _NoStore:
    def last_boundary(self, _mid):
        return None

    def commit_quarter_hours(self, _batch):
        pass


def _reading(s: int, gas_value: float, gas_s: int) -> Reading:
    return Reading("E1", T0 + timedelta(seconds=s), {"1": 1_000_000 + s}, {"1": 0},
                   submeters=(SubMeterReading(1, "gas", gas_value, "m3", T0 + timedelta(seconds=gas_s)),))


def test_the_pipeline_drops_a_glitched_gas_value_counts_it_and_logs_it_once(caplog):
    p = Pipeline(_NoStore())
    published = []
    caplog.set_level(logging.INFO, logger="quartier.gateway.pipeline")
    for s in range(0, 1500):
        capture = s - s % FIVE_MIN
        value = 1000.0 + capture / 3000
        if 600 <= s < 900:  # the 10:10 capture, glitched, repeated in every telegram for 5 minutes
            value = 99999.999
        _, accepted = p._feed(_reading(s, value, capture), telegram=True)
        published.append(accepted.submeters[0].value)
    h = p.health["E1"]
    assert max(published) < 1001 and h.accepted == 1500  # electricity untouched
    assert dict(h.refused) == {"gas_implausible_step": 1}
    refused = [r for r in caplog.records if r.getMessage() == "submeter.refused"]
    ended = [r for r in caplog.records if r.getMessage() == "submeter.refusals_ended"]
    assert len(refused) == 1 and len(ended) == 1
    assert (refused[0].meter, refused[0].channel, refused[0].kind, refused[0].reason) == ("E1", 1, "gas", "implausible_step")


def test_a_glitch_on_a_new_capture_gives_way_to_the_honest_value_of_the_same_capture():
    g = honest_gate()
    assert check(g, gas(900, 99999.999)).held  # the first telegram of the 10:15 capture, glitched
    d = check(g, gas(900, 1000.3))  # the next telegrams carry the honest value of that capture
    assert [m.value for m in d.accepted] == [1000.3]
    assert [(r.reason, r.reading.value) for r in d.refused] == [(SubReason.IMPLAUSIBLE_STEP, 99999.999)]
    assert not check(g, gas(900, 1000.3)).refused


def test_max_flow_is_a_p1_source_setting_merged_over_the_defaults(tmp_path):
    from gateway.config import ConfigError, load_config
    from gateway.daemon import Daemon

    path = tmp_path / "q.toml"
    path.write_text(f'[[sources]]\ntype = "p1"\nmax_flow = {{ gas = 16 }}\n[store]\npath = "{tmp_path / "s.sqlite"}"\n')
    cfg = load_config(path)
    assert cfg.sources[0].max_flow == {"gas": 16.0}
    d = Daemon(cfg)
    d.store = _NoStore()
    runner = d._make_runner(0, cfg.sources[0])
    assert dict(runner.pipeline.flow_limits.max_flow) == {"gas": 16.0, "water": 5.0}
    for bad in ("{ gas = 0 }", "{ steam = 3 }", '{ gas = "lots" }'):
        path.write_text(f'[[sources]]\ntype = "p1"\nmax_flow = {bad}\n')
        with pytest.raises(ConfigError):
            load_config(path)

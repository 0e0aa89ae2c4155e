"""Flexible loads moved by the signal (services/community/flexible.py), checked by hand on a small day."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from services.allocation import allocate
from services.community.flexible import FlexibleLoad, green_quarters, local_quarter, runs

TZ = ZoneInfo("Europe/Brussels")


def _day() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One local day: the pool is 2 kWh a quarter-hour (8 kW) from 12:00 to 12:30, else nothing; one
    consumer uses 100 Wh every quarter-hour."""
    t0 = int(datetime(2026, 6, 21, tzinfo=TZ).timestamp())
    epoch = t0 + 900 * np.arange(96, dtype=np.int64)
    pool = np.zeros(96, dtype=np.int64)
    pool[48:50] = 2000
    cons = np.full(96, 100, dtype=np.int64)
    return epoch, pool, cons


def test_a_dishwasher_moved_by_the_signal_by_hand():
    epoch, pool, cons = _day()
    green = green_quarters(epoch, pool, cons)
    # no foresight: the signal sees 12:00's surplus (1900 Wh = 7.6 kW) only from 12:15 on, until 12:45
    assert np.flatnonzero(green).tolist() == [49, 50]
    dishwasher = FlexibleLoad("c", "dishwasher", energy_wh=1000, duration_q=1, usual=local_quarter("08:00"),
                              earliest=local_quarter("08:00"), deadline=local_quarter("18:00"))
    usual, moved = runs(dishwasher, epoch, TZ, green)
    assert np.flatnonzero(usual).tolist() == [32] and np.flatnonzero(moved).tolist() == [49]
    received = {}
    for name, extra in (("usual", usual), ("moved", moved)):
        res = allocate((cons + extra)[:, None], pool[:, None], ("equal",), member_ids=("c",), producer_ids=("pv",),
                       slots=epoch // 900)
        received[name] = int(res.allocated.sum())
    # usual: 100 + 100 Wh shared at 12:00 and 12:15; moved: 12:15 takes 1,100 Wh of its 2,000 Wh: 1,000 Wh more
    assert received == {"usual": 200, "moved": 1200}


def test_a_run_that_never_sees_green_starts_at_the_latest_start_and_an_overnight_window():
    epoch, pool, cons = _day()
    green = np.zeros(96, dtype=bool)
    boiler = FlexibleLoad("c", "boiler", energy_wh=2000, duration_q=8, usual=local_quarter("06:00"),
                          earliest=local_quarter("06:00"), deadline=local_quarter("16:00"))
    _, moved = runs(boiler, epoch, TZ, green)
    assert np.flatnonzero(moved).tolist() == list(range(56, 64)) and moved.sum() == 2000
    with pytest.raises(ValueError):
        FlexibleLoad("c", "ev", energy_wh=7000, duration_q=12, usual=0, earliest=local_quarter("22:00"),
                     deadline=local_quarter("23:00"))


# --- quartier simulate --flexible: the moved year through the operation's key, by hand ----------------

from services.allocation import parse_community  # noqa: E402
from services.community.flexible_sim import move_loads, worth  # noqa: E402
from services.community.simulate import MeterData  # noqa: E402


def _hand_case(b_loads: str = "") -> tuple:
    """One day, pro rata key. pv (producer) injects 2,000 Wh at 12:00 and 12:15 (q48, q49). a (consumer)
    uses 100 Wh every quarter-hour, and its dishwasher (1.2 kWh over 2 h = 150 Wh x 8, usual 19:30:
    q78-q85) is in the data there (250 Wh). b (consumer) uses 100 Wh, nothing from 12:30 to 16:00
    (q50-q63). c (both) has only its boiler (2.4 kWh over 2 h = 300 Wh x 8, usual 01:00: q4-q11, window from 01:00, so the
    same day's run; the preset's 08:00 would make the usual run the next night's) and a
    panel injecting 500 Wh from 12:15 to 14:15 (q49-q56)."""
    toml = f"""
[community]
id = "h"
[[operations]]
id = "h"
preset = "prorata"
[[operations.members]]
id = "pv"
role = "producer"
[[operations.members]]
id = "a"
flexible = [{{kind = "dishwasher"}}]
[[operations.members]]
id = "b"
{b_loads}
[[operations.members]]
id = "c"
role = "both"
flexible = [{{kind = "boiler", energy_kwh = 2.4, duration_h = 2, earliest = "01:00"}}]
"""
    import tomllib

    op = parse_community(tomllib.loads(toml)).operation()
    epoch, _, _ = _day()
    a = np.full(96, 100, dtype=np.int64)
    a[78:86] += 150
    b = np.full(96, 100, dtype=np.int64)
    b[50:64] = 0
    c = np.zeros(96, dtype=np.int64)
    c[4:12] = 300
    pv = np.zeros(96, dtype=np.int64)
    pv[48:50] = 2000
    c_inj = np.zeros(96, dtype=np.int64)
    c_inj[49:57] = 500
    data = MeterData("hand", epoch, ("a", "b", "c"), ("pv", "c"), np.stack([a, b, c], axis=1),
                     np.stack([pv, c_inj], axis=1), 0)
    return op, data


def test_simulate_flexible_against_a_hand_computed_day():
    op, data = _hand_case()
    w = worth(op, data)
    # The signal from the data's totals, no foresight: q48 ends with 2,000 + 0 - 200 = 1,800 Wh (7.2 kW):
    # green from q49; q49: 2,500 - 200; q50-q56: 500 - 100 = 400 Wh (1.6 kW, above the 250 W to stay
    # green); q57: 0 - 100 -> red at q58. Green q49-q57.
    assert np.flatnonzero(w.shift.green).tolist() == list(range(49, 58))
    # Both runs start at the first green quarter-hour of their window 08:00-19:30 / 01:00-20:00: q49.
    moved_cons = w.shift.data.consumption
    assert moved_cons[78:86, 0].tolist() == [100] * 8 and moved_cons[49:57, 0].tolist() == [250] * 8
    # c's boiler now runs on its own panel: 500 - 300 = 200 Wh injected at q49-q56, no import at all.
    assert moved_cons[:, 2].sum() == 0 and w.shift.data.production[49:57, 1].tolist() == [200] * 8
    # Usual year (pro rata): q48 pool 2,000: a 100, b 100; q49 pool 2,500: a 100, b 100; q50-q56 pool 500,
    # only a asks: 100 x 7. a 900, b 200, c 0: 1,100 Wh shared.
    # Moved year: q48 a 100, b 100; q49 pool 2,200, a asks 250, b 100: both served; q50-q56 pool 200,
    # only a asks (250): 200 x 7 = 1,400. a 100 + 250 + 1,400 = 1,750, b 200: 1,950 Wh, 850 Wh more.
    assert (w.shared_wh(0), w.shared_wh(1)) == (1100, 1950)
    by = {m.id: m for m in w.members}
    assert by["a"].received_wh == (900, 1750) and by["a"].extra_shared_wh == 850
    assert by["c"].received_wh == (0, 0) and by["c"].consumption_wh == (2400, 0)
    assert [m.id for m in w.others] == ["b", "pv"] and w.others[0].received_wh == (200, 200)
    # Consumption: a 96 x 100 + 8 x 150 = 10,800 both years; b 82 x 100 = 8,200; c 2,400 then 0.
    # Self-sufficiency: operation 1,100 / 21,400 = 5.1 % -> 1,950 / 19,000 = 10.3 %; a 8.3 % -> 16.2 %.
    assert (w.consumption_wh(0), w.consumption_wh(1)) == (21400, 19000)
    assert round(by["a"].self_sufficiency(0), 4) == 0.0833 and round(by["a"].self_sufficiency(1), 4) == 0.162
    # Euros (defaults: grid energy 0.15, shared 0.08 EUR/kWh): a 0.850 kWh x (0.15 - 0.08) = 0.0595 -> 0.06;
    # c 2.4 kWh no longer imported x 0.15 = 0.36; b and pv nothing; the operation 0.42.
    assert (by["a"].eur, by["c"].eur, w.eur) == (0.06, 0.36, 0.42)


def test_a_run_the_data_cannot_hold_is_moved_only_as_far_as_it_is_there():
    # b's washing machine (1.0 kWh over 2 h = 125 Wh x 8, usual 18:00: q72-q79) but b's data holds only
    # 100 Wh there: 800 Wh are taken out and moved, b's consumption is unchanged.
    op, data = _hand_case('flexible = [{kind = "washing_machine"}]')
    m = move_loads(op, data)
    assert (m.declared_wh["b"], m.moved_wh["b"]) == (1000, 800)
    b = m.data.consumption[:, 1]
    assert b[72:80].tolist() == [0] * 8 and b[49:57].tolist() == [100 + 100] + [100] * 7
    assert b.sum() == data.consumption[:, 1].sum()


def test_flexible_member_setting_presets_overrides_and_refusals():
    from services.allocation import AllocationInputError

    def member(flexible: str):
        import tomllib

        text = f'[community]\nid = "h"\n[[operations]]\nid = "h"\npreset = "prorata"\n[[operations.members]]\nid = "a"\nflexible = {flexible}\n'
        return parse_community(tomllib.loads(text)).operation().members[0]

    ev, dw = member('[{kind = "ev"}, {kind = "dishwasher", energy_kwh = 0.9, usual = "21:00"}]').flexible
    assert (ev.energy_kwh, ev.duration_h, ev.power_kw, f"{ev.earliest:%H:%M}", f"{ev.deadline:%H:%M}") == (7.0, 4.0, 3.7, "12:00", "07:00")
    assert (dw.energy_kwh, dw.duration_q, f"{dw.usual:%H:%M}") == (0.9, 8, "21:00")
    for flexible, words in [
        ('[{kind = "ev", energy_kwh = 20}]', "flexible[0].energy_kwh: 20.0 kWh does not fit in 4.0 h at 3.7 kW"),
        ('[{kind = "dishwasher", usual = "19:10"}]', "flexible[0].usual: 19:10:00 is not on a quarter-hour"),
        ('[{kind = "boiler", deadline = "09:00"}]', "flexible[0].deadline: the window 08:00-09:00 is shorter than the run"),
        ('[{kind = "other", duration_h = 1}]', "flexible[0].energy_kwh: Field required"),
        ('[{kind = "dishwasher", colour = "red"}]', "flexible[0].colour: unknown field"),
    ]:
        with pytest.raises(AllocationInputError) as err:
            member(flexible)
        assert words in str(err.value)


def test_quartier_simulate_flexible_prints_the_figures_and_a_chart(tmp_path, capsys):
    import argparse

    from services import cli

    op, data = _hand_case()
    toml = tmp_path / "op.toml"
    toml.write_text('[community]\nid = "h"\n[[operations]]\nid = "h"\npreset = "prorata"\n'
                    '[[operations.members]]\nid = "pv"\nrole = "producer"\n'
                    '[[operations.members]]\nid = "a"\nflexible = [{kind = "dishwasher"}]\n'
                    '[[operations.members]]\nid = "b"\n'
                    '[[operations.members]]\nid = "c"\nrole = "both"\n'
                    'flexible = [{kind = "boiler", energy_kwh = 2.4, duration_h = 2, earliest = "01:00"}]\n')
    rows = ["start,pv,a,b,c"]
    for i, ts in enumerate(data.epoch.tolist()):
        c = data.consumption[i, 2] - data.production[i, 1]
        rows.append(f"{datetime.fromtimestamp(ts, TZ).isoformat()},{data.production[i, 0]},"
                    f"{data.consumption[i, 0]},{data.consumption[i, 1]},{c}")
    csv_path = tmp_path / "day.csv"
    csv_path.write_text("\n".join(rows) + "\n")

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="quartier")
        cli.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["simulate", "--operation", str(toml), "--data", str(csv_path), *argv])
        return args.func(args)

    chart = tmp_path / "worth.png"
    assert run("--flexible", "--price", "0.10", "--chart", str(chart)) == 0
    out = capsys.readouterr().out
    # the hand-computed day read back from CSV: 1,100 -> 1,950 Wh (850 Wh printed to 0.1 kWh); with --price
    # 0.10: a 0.85 x 0.10 = 0.085 -> 0.09 EUR, c 2.4 x 0.15 = 0.36 EUR, the operation 0.45 EUR
    assert "shared 1.1 -> 1.9 kWh (+0.8 kWh), self-sufficiency 5.1% -> 10.3%, 0.45 EUR" in out
    assert "--price 0.1 EUR per shared kWh" in out
    assert chart.read_bytes()[:4] == b"\x89PNG"
    toml.write_text(toml.read_text().replace('flexible = [{kind = "dishwasher"}]\n', "").replace(
        'flexible = [{kind = "boiler", energy_kwh = 2.4, duration_h = 2, earliest = "01:00"}]\n', ""))
    assert run("--flexible") == 2
    assert "--flexible: no member of 'h' declares flexible loads" in capsys.readouterr().err

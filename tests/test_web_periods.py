"""The history's euros per meter tariff (services/node/web/periods.py), pure and hand-computed: grid
import per tariff at its own price (the single price for a tariff without one), shared energy taken
off the tariff it was received in, nothing guessed where the store lost the split."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.node.web.figures import Prices
from services.node.web.periods import Energy, history_view, shared_by_tariff, span

TZ = ZoneInfo("Europe/Brussels")
DAY_NIGHT = Prices(grid_eur_kwh=0.30, shared_eur_kwh=0.10, grid_eur_kwh_by_tariff={"1": 0.34, "2": 0.27})


def view(period: str, at: date, energy: list[Energy], prices: Prices = DAY_NIGHT, shared=None, qh_tariffs=None) -> dict:
    return history_view(span(period, at, TZ), tz=TZ, meter_id="m", energy=energy, shared=shared or {},
                        production=None, prices=prices, basis="own_meter", qh_tariffs=qh_tariffs,
                        tariff_names={"1": "day", "2": "night"})


def test_a_month_of_days_is_priced_per_tariff():
    june = [Energy(datetime(2026, 6, 1, tzinfo=TZ), 20_000, 0, 0, {"1": 12_300, "2": 7_700}, {"1": 0, "2": 0}),
            Energy(datetime(2026, 6, 2, tzinfo=TZ), 10_000, 500, 0, {"1": 2_000, "2": 8_000}, {"1": 500})]
    v = view("month", date(2026, 6, 15), june)
    d1 = v["buckets"][0]
    assert d1["import_by_tariff_wh"] == {"1": 12_300, "2": 7_700}
    assert d1["grid_cost_by_tariff_eur"] == {"1": 4.18, "2": 2.08}  # 12.3 x 0.34 = 4.182; 7.7 x 0.27 = 2.079
    assert d1["grid_cost_eur"] == 6.26  # 4.182 + 2.079 = 6.261
    tot = v["totals"]
    assert tot["import_by_tariff_wh"] == {"1": 14_300, "2": 15_700}
    assert tot["export_by_tariff_wh"] == {"1": 500, "2": 0}
    assert tot["grid_cost_by_tariff_eur"] == {"1": 4.86, "2": 4.24}  # 14.3 x 0.34 = 4.862; 15.7 x 0.27 = 4.239
    assert tot["grid_cost_eur"] == 9.10  # 4.862 + 4.239 = 9.101
    assert v["prices"]["grid_eur_kwh_by_tariff"] == {"1": 0.34, "2": 0.27} and v["tariff_names"]["2"] == "night"
    assert v["buckets"][5]["grid_cost_eur"] == 0.0 and v["buckets"][5]["import_by_tariff_wh"] == {}


def test_a_tariff_without_its_own_price_takes_the_single_one_and_without_any_has_no_euros():
    e = [Energy(datetime(2026, 6, 1, tzinfo=TZ), 3_000, 0, 0, {"1": 1_000, "3": 2_000})]
    tot = view("week", date(2026, 6, 1), e)["totals"]
    assert tot["grid_cost_by_tariff_eur"] == {"1": 0.34, "3": 0.60}  # tariff 3 at the single 0.30
    assert tot["grid_cost_eur"] == 0.94
    only_tariffs = Prices(grid_eur_kwh_by_tariff={"1": 0.34})
    tot = view("week", date(2026, 6, 1), e, only_tariffs)["totals"]
    assert tot["grid_cost_by_tariff_eur"] == {"1": 0.34, "3": None} and tot["grid_cost_eur"] is None
    # no per-tariff prices: the single price per tariff, the same total as before
    tot = view("week", date(2026, 6, 1), e, Prices(0.30, 0.10))["totals"]
    assert tot["grid_cost_by_tariff_eur"] == {"1": 0.30, "3": 0.60} and tot["grid_cost_eur"] == 0.90


def test_an_unknown_split_is_never_guessed_and_falls_back_to_the_single_price():
    year = [Energy(datetime(2026, 1, 1, tzinfo=TZ), 100_000, 0, 0, None),  # pruned before the split was kept
            Energy(datetime(2026, 2, 1, tzinfo=TZ), 50_000, 0, 0, {"1": 30_000, "2": 20_000})]
    v = view("year", date(2026, 3, 3), year)
    jan, feb, tot = v["buckets"][0], v["buckets"][1], v["totals"]
    assert jan["import_by_tariff_wh"] is None and jan["grid_cost_by_tariff_eur"] is None
    assert jan["grid_cost_eur"] == 30.0  # 100 kWh x 0.30
    assert feb["grid_cost_eur"] == 15.6  # 30 x 0.34 + 20 x 0.27 = 10.2 + 5.4
    assert tot["import_by_tariff_wh"] is None and tot["grid_cost_by_tariff_eur"] is None
    assert tot["grid_cost_eur"] == 45.6  # each month as well as its data allows
    no_single = Prices(grid_eur_kwh_by_tariff={"1": 0.34, "2": 0.27})
    v = view("year", date(2026, 3, 3), year, no_single)
    assert v["buckets"][0]["grid_cost_eur"] is None and v["totals"]["grid_cost_eur"] is None
    assert v["buckets"][1]["grid_cost_eur"] == 15.6


def test_shared_energy_comes_off_the_tariff_it_was_received_in():
    t0 = datetime(2026, 6, 1, 12, 0, tzinfo=TZ)
    qhs = [Energy(t0, 1_000, 0, 0, {"1": 1_000, "2": 0}), Energy(t0 + timedelta(minutes=15), 800, 0, 0, {"2": 800})]
    shared = {t0: 400, t0 + timedelta(minutes=15): 100}
    v = view("day", date(2026, 6, 1), qhs, shared=shared, qh_tariffs={q.start: q.import_by_tariff for q in qhs})
    noon = v["buckets"][12]
    assert noon["shared_wh"] == 500 and noon["grid_import_wh"] == 1_300
    assert noon["grid_cost_by_tariff_eur"] == {"1": 0.20, "2": 0.19}  # 0.6 kWh x 0.34 = 0.204; 0.7 x 0.27 = 0.189
    assert noon["grid_cost_eur"] == 0.39 and noon["shared_cost_eur"] == 0.05
    # the quarter-hours of a shared one are gone: its tariff is unknown, the split is not guessed
    v = view("day", date(2026, 6, 1), qhs, shared=shared, qh_tariffs={})
    assert v["buckets"][12]["grid_cost_by_tariff_eur"] is None
    assert v["buckets"][12]["grid_cost_eur"] == pytest.approx(0.39)  # 1.3 kWh x 0.30 = 0.39


def test_shared_energy_of_a_quarter_hour_across_a_tariff_switch_adds_up():
    assert shared_by_tariff(100, {"1": 300, "2": 0}) == {"1": 100}
    assert shared_by_tariff(100, {"1": 100, "2": 200}) == {"1": 33, "2": 67}
    assert shared_by_tariff(10, {"1": 1, "2": 1, "3": 1}) == {"1": 1, "2": 1, "3": 1}  # never more than the import
    assert sum(shared_by_tariff(7, {"1": 5, "2": 5}).values()) == 7
    assert shared_by_tariff(0, {"1": 5}) == {}

"""Statements (décompte / afrekening): totals equal hand computation on seeded data, a member who joined
mid-period, a price change applied from the next billing period, a VAT-exempt community, a producer's
credit, an advance, binding figures replacing provisional ones, and the command itself."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tomllib
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from services.allocation.model import parse_community
from services.community.ledger import Ledger
from services.community.prices import price_on
from services.community.roster import QuarterHourResult
from services.community.statement import compute
from services.community.statement_cli import parse_period
from services.community.statement_data import read_period
from services.community.statement import local_bounds

COMMUNITY = """
[community]
id = "moulin"
name = "CER du Moulin"
address = "Rue du Moulin 1, 6790 Aubange"
company_number = "BE 0123.456.789"

[[operations]]
id = "op1"
preset = "prorata"

[operations.billing]
period_months = 1
first_period_start = 2026-01-01

[[operations.prices]]
valid_from = 2026-01-01
shared_eur_kwh = 0.00
producer_eur_kwh = 0.01
vat = {vat}
levies = [{{name = "excise", eur_kwh = 0.0475}}, {{name = "energy contribution", eur_kwh = 0.0019}}]

[[operations.prices]]
valid_from = 2026-06-10          # decided mid-June: applies from the next billing period, July
shared_eur_kwh = 0.02
producer_eur_kwh = 0.015
vat = {vat}
levies = [{{name = "excise", eur_kwh = 0.0475}}, {{name = "energy contribution", eur_kwh = 0.0019}}]

[[operations.members]]
id = "alice"
meter = "541448820000000001"
supplier_energy_eur_kwh = 0.15
supplier_sharing_fee_eur_year = 121
advances = [{{date = 2026-06-15, eur = 30}}, {{date = 2026-01-15, eur = 30}}]

[[operations.members]]
id = "bob"
meter = "541448820000000002"
joined = 2026-06-16

[[operations.members]]
id = "school"
role = "producer"
meter = "541448820000000003"
"""
UTC = timezone.utc
# (start, alice Wh, bob Wh): the school shares what they receive
SEED = [(datetime(2026, 6, 5, 10, 0, tzinfo=UTC), 150_000, 0),
        (datetime(2026, 6, 20, 10, 0, tzinfo=UTC), 0, 70_000),
        (datetime(2026, 7, 2, 10, 0, tzinfo=UTC), 200_000, 100_000)]


def community(vat: str = "0.21"):
    return parse_community(tomllib.loads(COMMUNITY.format(vat=vat)))


def seed(path: Path) -> None:
    ledger = Ledger(path)
    try:
        for start, a, b in SEED:
            received = {"alice": a, "bob": b} if start.date() >= date(2026, 6, 16) else {"alice": a}
            ledger.save_allocation(QuarterHourResult(
                "op1", start, received, {"school": a + b}, {k: v + 5 for k, v in received.items()},
                {"school": a + b + 10}, (), a + b + 10, a + b, a + b + 10))
    finally:
        ledger.close()


def statement(tmp: Path, first: date, last: date, vat: str = "0.21"):
    op = community(vat).operation("op1")
    seed(tmp / "c.sqlite")
    start, end = local_bounds(first, last, op.timezone)
    return compute(op, first, last, *read_period(tmp / "c.sqlite", "op1", start, end))


def amounts(ms) -> list[tuple[str, Decimal, Decimal]]:
    return [(ln.label, ln.amount_excl_vat_eur, ln.vat_eur) for ln in ms.lines]


def test_a_price_decided_mid_period_applies_from_the_next_billing_period() -> None:
    op = community().operation("op1")
    assert price_on(op, date(2026, 6, 30)).shared_eur_kwh == 0
    assert price_on(op, date(2026, 7, 1)).shared_eur_kwh == Decimal("0.02")
    on_date = op.model_copy(update={"billing": op.billing.model_copy(update={"price_changes": "on_date"})})
    assert price_on(on_date, date(2026, 6, 10)).shared_eur_kwh == Decimal("0.02")


def test_totals_equal_hand_computation(tmp_path: Path) -> None:
    st = statement(tmp_path, date(2026, 6, 1), date(2026, 7, 31))
    alice, bob, school = st.members["alice"], st.members["bob"], st.members["school"]
    # alice: 150 kWh in June (first price), 200 kWh in July (second price); each line rounded once
    assert amounts(alice) == [
        ("Shared energy (from 2026-01-01)", Decimal("0.00"), Decimal("0.00")),
        ("excise (from 2026-01-01)", Decimal("7.13"), Decimal("1.50")),  # 7.125 -> 7.13; 1.4973 -> 1.50
        ("energy contribution (from 2026-01-01)", Decimal("0.29"), Decimal("0.06")),  # 0.285; 0.0609
        ("Shared energy (from 2026-07-01)", Decimal("4.00"), Decimal("0.84")),
        ("excise (from 2026-07-01)", Decimal("9.50"), Decimal("2.00")),  # 1.995 -> 2.00
        ("energy contribution (from 2026-07-01)", Decimal("0.38"), Decimal("0.08")),
    ]
    assert (alice.total_excl_vat_eur, alice.vat_eur, alice.total_eur) == (Decimal("21.30"), Decimal("4.48"), Decimal("25.78"))
    assert alice.advances_eur == 30 and alice.balance_eur == Decimal("-4.22")  # the January advance is not in the period
    # bob joined on 16 June: 70 kWh then, 100 kWh in July; a member for 15 + 31 days
    assert (bob.total_excl_vat_eur, bob.vat_eur, bob.total_eur) == (Decimal("10.40"), Decimal("2.19"), Decimal("12.59"))
    assert bob.days == 46 and alice.days == 61
    # the school's credit: 220 kWh at 0.01 and 300 kWh at 0.015, no VAT, negative (owed to it)
    assert amounts(school) == [("Shared injection (producer) (from 2026-01-01)", Decimal("-2.20"), Decimal("0.00")),
                               ("Shared injection (producer) (from 2026-07-01)", Decimal("-4.50"), Decimal("0.00"))]
    assert school.balance_eur == Decimal("-6.70")
    # honest savings: 350 kWh x 0.15 = 52.50, minus 25.78 charged, minus 121 x 61 / 365 = 20.22
    assert alice.savings["net_eur"] == Decimal("6.50") and alice.savings["loses_money"] is False
    assert st.basis == "provisional" and {m.basis for m in st.members.values()} == {"provisional"}


def test_received_equals_shared_injection_for_every_period(tmp_path: Path) -> None:
    seed(tmp_path / "c.sqlite")
    op = community().operation("op1")
    for first, last in [(date(2026, 6, 1), date(2026, 6, 30)), (date(2026, 7, 1), date(2026, 7, 31)),
                        (date(2026, 1, 1), date(2026, 12, 31)), (date(2026, 6, 5), date(2026, 6, 20))]:
        start, end = local_bounds(first, last, op.timezone)
        st = compute(op, first, last, *read_period(tmp_path / "c.sqlite", "op1", start, end))
        assert st.received_wh == st.injection_wh, (first, last)


def test_a_vat_exempt_community_and_a_member_who_loses_money(tmp_path: Path) -> None:
    st = statement(tmp_path, date(2026, 6, 1), date(2026, 6, 30), vat='"exempt"')
    alice = st.members["alice"]
    assert all(ln.vat_rate == 0 and ln.vat_eur == 0 for ln in alice.lines)
    assert alice.total_eur == alice.total_excl_vat_eur == Decimal("7.42")  # 7.13 + 0.29
    # 150 kWh x 0.15 = 22.50 - 7.42 - 121 x 30 / 365 (9.95) = 5.13; the Aubange year with Engie loses money:
    assert alice.savings["net_eur"] == Decimal("5.13")
    year = community('"exempt"').operation("op1")
    # 500 kWh x (15 - 5.55) c = 47.25 EUR, minus Engie's 121 EUR: a loss of 73.75 EUR
    op = year.model_copy(update={"prices": (year.prices[0].model_copy(update={
        "levies": (year.prices[0].levies[0].model_copy(update={"name": "levies", "eur_kwh": Decimal("0.0555")}),),
        "producer_eur_kwh": Decimal(0)}),)})
    from services.community.statement import Energy

    qh = Energy("alice", datetime(2026, 5, 1, 10, tzinfo=UTC), datetime(2026, 5, 1, 10, 15, tzinfo=UTC), 500_000, 0)
    s = compute(op, date(2026, 1, 1), date(2026, 12, 31), [qh]).members["alice"]
    assert s.savings["net_eur"] == Decimal("-73.75") and s.savings["loses_money"] is True


def test_binding_figures_replace_provisional_ones_and_the_basis_says_so(tmp_path: Path) -> None:
    seed(tmp_path / "c.sqlite")
    ledger = Ledger(tmp_path / "c.sqlite")
    june = datetime(2026, 6, 1, tzinfo=timezone(timedelta(hours=2)))
    july = datetime(2026, 7, 1, tzinfo=timezone(timedelta(hours=2)))
    try:  # the grid operator's monthly file for June: both sides (received and the school's injection)
        ledger.import_grid("op1", [("alice", june, 140_000, july, None), ("bob", june, 70_000, july, None),
                                   ("school", june, 0, july, 210_000)], "grid-2026-06.csv")
    finally:
        ledger.close()
    op = community().operation("op1")
    first, last = date(2026, 6, 1), date(2026, 6, 30)
    st = compute(op, first, last, *read_period(tmp_path / "c.sqlite", "op1", *local_bounds(first, last, op.timezone)))
    assert st.members["alice"].received_wh == 140_000 and st.members["alice"].basis == "binding"
    assert st.basis == "binding" and st.received_wh == st.injection_wh == 210_000
    first, last = date(2026, 6, 1), date(2026, 7, 31)
    st = compute(op, first, last, *read_period(tmp_path / "c.sqlite", "op1", *local_bounds(first, last, op.timezone)))
    assert st.members["alice"].basis == "mixed" and st.basis == "mixed"
    assert st.received_wh == st.injection_wh == 210_000 + 300_000


def test_parse_period() -> None:
    assert parse_period("2026-02") == (date(2026, 2, 1), date(2026, 2, 28))
    assert parse_period("2026") == (date(2026, 1, 1), date(2026, 12, 31))
    assert parse_period("2026-03-15..2026-04-02") == (date(2026, 3, 15), date(2026, 4, 2))
    for bad in ("2026-13", "26", "2026-04-02..2026-03-15", "yesterday"):
        with pytest.raises(ValueError, match="--period"):
            parse_period(bad)


def _config(tmp: Path) -> Path:
    (tmp / "community.toml").write_text(COMMUNITY.format(vat="0.21"))
    (tmp / "server.toml").write_text('secrets_file = "secrets.toml"\n[server]\ncommunity_file = "community.toml"\n'
                                     f'database = "{tmp / "c.sqlite"}"\n')
    (tmp / "secrets.toml").write_text('[server]\npseudonym_secret = "s"\n')
    os.chmod(tmp / "secrets.toml", 0o600)
    return tmp / "server.toml"


def quartier(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "community", "statement", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_command_json_and_csv_and_its_errors(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    seed(tmp_path / "c.sqlite")
    r = quartier("--config", str(cfg), "--operation", "op1", "--period", "2026-06-01..2026-07-31",
                 "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["period"] == {"from": "2026-06-01", "to": "2026-07-31"} and out["basis"] == "provisional"
    a = out["members"]["alice"]
    assert (a["received_kwh"], a["total_excl_vat_eur"], a["vat_eur"], a["total_eur"], a["advances_eur"],
            a["balance_eur"], a["basis"]) == (350, 21.3, 4.48, 25.78, 30, -4.22, "provisional")
    assert a["lines"][1] == {"label": "excise (from 2026-01-01)", "component": "levy", "price_from": "2026-01-01",
                             "kwh": 150, "unit_price_eur": 0.0475, "vat_rate": 0.21, "amount_excl_vat_eur": 7.13,
                             "vat_eur": 1.5}
    assert out["totals"]["received_kwh"] == out["totals"]["shared_injection_kwh"] == 520
    r = quartier("--config", str(cfg), "--operation", "op1", "--period", "2026-06", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [x["amount_excl_vat_eur"] for x in rows if x["member"] == "alice" and x["row"] == "line"] == ["0.00", "7.13", "0.29"]
    assert [x["amount_incl_vat_eur"] for x in rows if x["member"] == "alice" and x["row"] == "balance"] == ["-21.02"]  # 7.42 + 1.56 VAT - 30
    for args, needle in ((("--period", "2026-14"), "--period '2026-14'"), (("--format", "xml"), "--format 'xml'"),
                         (("--operation", "nope"), "--operation")):
        base = {"--operation": "op1", "--period": "2026-06", "--format": "json"}
        base[args[0]] = args[1]
        r = quartier("--config", str(cfg), *[x for kv in base.items() for x in kv])
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1

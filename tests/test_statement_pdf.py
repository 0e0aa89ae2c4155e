"""Statements as printed pages (fr, nl, en, numbered and dated, through the sheet's Chromium path), the
operator API's statement with its link on the page, and the demo's example prices."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from demo.community import MEMBERS, community_toml
from services.allocation.model import parse_community
from services.community.api import create_app
from services.community.ledger import Ledger
from services.community.roster import Roster
from services.community.statement import Energy, compute
from services.community.statement_pdf import number, render_member
from tests.test_statement import _config, community, quartier, seed


def test_the_page_in_three_languages_is_numbered_dated_with_the_community_details(tmp_path: Path) -> None:
    op = community().operation("op1")
    c = community()
    st = compute(op, date(2026, 6, 1), date(2026, 7, 31), [
        Energy("alice", datetime(2026, 6, 5, 10, tzinfo=timezone.utc), datetime(2026, 6, 5, 10, 15, tzinfo=timezone.utc),
               150_000, 0)])
    pages = {lang: render_member(st, st.members["alice"], c, op, lang, date(2026, 8, 3)) for lang in ("fr", "nl", "en")}
    assert number(st, "alice") == "op1-20260601-001"
    for lang, words in (("fr", ("Décompte n°", "Solde en votre faveur", "Acomptes versés", "provisoires")),
                        ("nl", ("Afrekening nr.", "Saldo in uw voordeel", "Betaalde voorschotten", "Voorlopige")),
                        ("en", ("Statement no.", "Balance in your favour", "Advances paid", "Provisional"))):
        page = pages[lang]
        assert "op1-20260601-001" in page and "2026-08-03" in page and "BE 0123.456.789" in page
        assert all(w in page for w in words), lang
    assert "7,13" in pages["fr"] and "7.13" in pages["en"]  # the excise line, in each language's notation


def test_the_command_prints_a_pdf_per_member(tmp_path: Path) -> None:
    if shutil.which("chromium") is None or shutil.which("pdftotext") is None:
        pytest.fail("chromium and poppler-utils are needed: .ci/run installs them", pytrace=False)
    cfg = _config(tmp_path)
    seed(tmp_path / "c.sqlite")
    r = quartier("--config", str(cfg), "--operation", "op1", "--period", "2026-06-01..2026-07-31", "--format", "pdf",
                 "--out", str(tmp_path / "out"), "--lang", "fr", "--member", "alice")
    assert r.returncode == 0, r.stderr
    pdf = tmp_path / "out" / "statement-op1-20260601-001-alice-fr.pdf"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "Décompte n°" in text and "op1-20260601-001" in text and "CER du Moulin" in text
    assert "25,78" in text and "Solde en votre faveur: 4,22" in text  # total incl. VAT, 30 EUR advance
    r = quartier("--config", str(cfg), "--operation", "op1", "--period", "2026-06", "--format", "pdf")
    assert r.returncode == 2 and "--out" in r.stderr


def test_the_operator_api_gives_each_members_statement_and_the_page_links_it(tmp_path: Path) -> None:
    seed(tmp_path / "c.sqlite")
    c = community()
    ledger = Ledger(tmp_path / "c.sqlite")
    try:
        client = TestClient(create_app(Roster.build(c, "s"), ledger, ["tok"], None, c))
        h = {"Authorization": "Bearer tok"}
        got = client.get("/api/v1/operations/op1/statement?period=2026-07&member=bob", headers=h).json()
        assert got["members"]["bob"]["total_eur"] == 8.40 and got["basis"] == "provisional"  # 6.94 + 1.46 VAT
        page = client.get("/api/v1/operations/op1/statement?period=2026-07&member=bob&format=html&lang=nl", headers=h)
        assert page.status_code == 200 and "Afrekening nr." in page.text
        assert client.get("/api/v1/operations/op1/statement?period=2026-13", headers=h).status_code == 422
        assert client.get("/api/v1/operations/op1/statement?period=2026-07").status_code == 401
        assert "a.statement" in client.get("/").text
    finally:
        ledger.close()


def test_the_demo_writes_the_aubange_example_prices() -> None:
    start = datetime.now().astimezone()
    c = parse_community(tomllib.loads(community_toml(MEMBERS[:2], start)))
    op = c.operation("rue-du-moulin")
    assert [str(v.shared_eur_kwh) for v in op.prices] == ["0.0", "0.02"]
    assert sum(lv.eur_kwh for lv in op.prices[0].levies) == sum(lv.eur_kwh for lv in op.prices[1].levies)
    assert str(sum(lv.eur_kwh for lv in op.prices[0].levies)) == "0.0494"
    assert op.member("soleil").supplier_sharing_fee_eur_year == 121
    today = start.date()
    first = today.replace(day=1)
    st = compute(op, first, today, [Energy("voisin", start.astimezone(timezone.utc), start.astimezone(timezone.utc), 500_000, 0),
                                    Energy("soleil", start.astimezone(timezone.utc), start.astimezone(timezone.utc), 0, 500_000)])
    assert st.received_wh == st.injection_wh == 500_000
    assert st.members["voisin"].advances_eur == 30




def test_honest_savings_on_the_node_page_and_the_sheet_tell_a_member_who_loses_money() -> None:
    from zoneinfo import ZoneInfo

    from services.sheet.figures import month_figures
    from services.sheet.render import render_html
    from services.node.web.figures import Prices

    # Aubange with Engie: 500 kWh x (0.15 - 0.0555) = 47.25 EUR a year, minus 121 EUR of fee
    assert Prices(0.15, 0.0555, 121).savings(500_000, 365) == -73.75
    assert Prices(0.15, 0.0555).savings(500_000, 365) == 47.25  # without a fee, as before
    tz = ZoneInfo("Europe/Brussels")
    start = datetime(2026, 6, 1, 12, tzinfo=tz)
    from services.sheet.figures import AllocatedQuarter

    f = month_figures(meter_id="m", month="2026-06", tz=tz, import_wh=100_000, export_wh=0, quarter_hours=2880,
                      expected_quarter_hours=2880, estimated=0, days_with_data=30, own_quarter_hours=[],
                      allocation=[AllocatedQuarter(start, 40_000, 0)], grid_price=0.15, community_price=0.0555,
                      sharing_fee_eur_year=121)
    assert f.sharing_fee_eur == 9.95 and f.savings_eur == round(40 * 0.0945 - 9.95, 2) == -6.17
    page = render_html(f, "fr", made_on=date(2026, 7, 1))
    assert "Le partage vous a coûté 6,17" in page

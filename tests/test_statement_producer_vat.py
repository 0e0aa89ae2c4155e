"""VAT on a producer's credit (``producer_vat``): a VAT-registered producer's credit carries its rate,
a consumer-producer has two rates on one statement (every format shows each line's), a household
producer's credit stays without VAT, and a bad setting is refused naming the member and the field."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import tomllib
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from services.allocation import AllocationInputError
from services.allocation.model import Community, parse_community
from services.community.statement import Energy, Statement, compute
from services.community.statement_format import to_csv, to_dict
from services.community.statement_pdf import render_member, write_pdfs
from tests.test_statement import COMMUNITY as STATEMENT_COMMUNITY

# test_statement.py's community, operation and monthly billing, with other prices and members: the
# community charges 6 % (Belgian households' electricity); the coop and the bakery are VAT-registered
COMMUNITY = STATEMENT_COMMUNITY[:STATEMENT_COMMUNITY.index("[[operations.prices]]")] + """[[operations.prices]]
valid_from = 2026-01-01
shared_eur_kwh = 0.10
producer_eur_kwh = 0.05
vat = {vat}
levies = [{{name = "excise", eur_kwh = 0.0475}}]

[[operations.members]]
id = "alice"

[[operations.members]]
id = "coop"
role = "producer"
producer_vat = {coop_vat}

[[operations.members]]
id = "bakery"
role = "both"
producer_vat = 0.21

[[operations.members]]
id = "roof"
role = "producer"
"""
AT = datetime(2026, 6, 5, 10, tzinfo=timezone.utc)
JUNE = (date(2026, 6, 1), date(2026, 6, 30))


def community(vat: str = "0.06", coop_vat: str = "0.21") -> Community:
    return parse_community(tomllib.loads(COMMUNITY.format(vat=vat, coop_vat=coop_vat)))


def june(c: Community) -> Statement:
    def qh(member: str, received_wh: int, injection_wh: int) -> Energy:
        return Energy(member, AT, AT + timedelta(minutes=15), received_wh, injection_wh)

    # 1,234.567 kWh shared by each producer; the bakery also received 333.333 kWh
    return compute(c.operation("op1"), *JUNE, [qh("coop", 0, 1_234_567), qh("bakery", 333_333, 1_234_567),
                                               qh("roof", 0, 1_234_567), qh("alice", 100_000, 0)])


def lines(ms) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    return [(ln.component, ln.vat_rate, ln.amount_excl_vat_eur, ln.vat_eur) for ln in ms.lines]


def test_a_vat_registered_producers_credit_carries_its_vat() -> None:
    coop = june(community()).members["coop"]
    # 1,234.567 kWh x 0.05 = 61.72835 -> -61.73 (a credit); VAT -61.73 x 0.21 = -12.9633 -> -12.96;
    # total -61.73 - 12.96 = -74.69, owed to the coop
    assert lines(coop) == [("producer", Decimal("0.21"), Decimal("-61.73"), Decimal("-12.96"))]
    assert (coop.total_excl_vat_eur, coop.vat_eur, coop.total_eur, coop.balance_eur) == (
        Decimal("-61.73"), Decimal("-12.96"), Decimal("-74.69"), Decimal("-74.69"))


def test_a_household_producer_stays_without_vat() -> None:
    roof = june(community()).members["roof"]  # no producer_vat: "exempt", as before the setting existed
    assert lines(roof) == [("producer", Decimal(0), Decimal("-61.73"), Decimal("0.00"))]
    assert roof.total_eur == roof.total_excl_vat_eur == Decimal("-61.73")
    coop = june(community(coop_vat='"Exempt"')).members["coop"]
    assert lines(coop) == lines(roof)


def test_a_consumer_producer_has_two_rates_and_its_totals_add_up() -> None:
    st = june(community())
    bakery = st.members["bakery"]
    # received 333.333 kWh at the community's 6 %:
    #   shared energy 333.333 x 0.10 = 33.3333 -> 33.33, VAT 33.33 x 0.06 = 1.9998 -> 2.00
    #   excise 333.333 x 0.0475 = 15.8333175 -> 15.83, VAT 15.83 x 0.06 = 0.9498 -> 0.95
    # shared 1,234.567 kWh at its own 21 %: -61.73, VAT -12.96 (as the coop's)
    assert lines(bakery) == [("shared", Decimal("0.06"), Decimal("33.33"), Decimal("2.00")),
                             ("levy", Decimal("0.06"), Decimal("15.83"), Decimal("0.95")),
                             ("producer", Decimal("0.21"), Decimal("-61.73"), Decimal("-12.96"))]
    # excl. VAT 33.33 + 15.83 - 61.73 = -12.57; VAT 2.00 + 0.95 - 12.96 = -10.01; total -22.58
    assert (bakery.total_excl_vat_eur, bakery.vat_eur, bakery.total_eur) == (
        Decimal("-12.57"), Decimal("-10.01"), Decimal("-22.58"))
    assert bakery.vat_by_rate() == {Decimal("0.06"): (Decimal("49.16"), Decimal("2.95")),
                                    Decimal("0.21"): (Decimal("-61.73"), Decimal("-12.96"))}
    # JSON and CSV carry each line's rate
    js = to_dict(st)["members"]["bakery"]
    assert [(x["component"], x["vat_rate"], x["vat_eur"]) for x in js["lines"]] == [
        ("shared", 0.06, 2.0), ("levy", 0.06, 0.95), ("producer", 0.21, -12.96)]
    assert (js["total_excl_vat_eur"], js["vat_eur"], js["total_eur"]) == (-12.57, -10.01, -22.58)
    rows = [r for r in csv.DictReader(io.StringIO(to_csv(st))) if r["member"] == "bakery"]
    assert [(r["row"], r["vat_rate"], r["amount_excl_vat_eur"], r["vat_eur"], r["amount_incl_vat_eur"]) for r in rows[:4]] == [
        ("line", "0.06", "33.33", "2.00", "35.33"), ("line", "0.06", "15.83", "0.95", "16.78"),
        ("line", "0.21", "-61.73", "-12.96", "-74.69"), ("total", "", "-12.57", "-10.01", "-22.58")]


def test_the_page_shows_each_lines_rate_and_the_vat_per_rate_in_three_languages() -> None:
    c = community()
    st = june(c)
    op = c.operation("op1")
    for lang, credit, vat, total in (("fr", "-61,73", "-12,96", "-22,58"), ("nl", "-61,73", "-12,96", "-22,58"),
                                     ("en", "-61.73", "-12.96", "-22.58")):
        page = render_member(st, st.members["bakery"], c, op, lang, date(2026, 7, 1))
        producer_row = next(r for r in page.split("<tr>") if "(produc" in r)
        assert "21\u00a0%" in producer_row and credit in producer_row and vat in producer_row, lang
        assert f"<b>{total} €</b>" in page, lang
        assert ("1,234.567" if lang == "en" else "1\u00a0234,567") in page, lang  # a no-break space: never wrapped
        per_rate = re.findall(r"<tr class=rate>(.*?)</tr>", page)  # two rates: the VAT of each under the total
        assert len(per_rate) == 2 and "6\u00a0%" in per_rate[0] and vat in per_rate[1], lang
        coop = render_member(st, st.members["coop"], c, op, lang, date(2026, 7, 1))
        assert "21\u00a0%" in coop and vat in coop and "class=rate" not in coop, lang  # one rate: no breakdown


def test_the_printed_pdf_shows_the_producers_vat(tmp_path: Path) -> None:
    if shutil.which("chromium") is None or shutil.which("pdftotext") is None:
        pytest.fail("chromium and poppler-utils are needed: .ci/run installs them", pytrace=False)
    c = community()
    st = june(c)
    [pdf] = write_pdfs(st, c, c.operation("op1"), tmp_path, "fr", date(2026, 7, 1), only="bakery")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    # the producer's row (its label may wrap): unit price, its own rate, credit and VAT
    assert re.search(r"1\s234,567\s+-0,0500\s+21\s*%\s+-61,73\s+-12,96", text), text
    assert re.search(r"TVA\s+6\s*%\s+49,16\s+2,95", text) and re.search(r"TVA\s+21\s*%\s+-61,73\s+-12,96", text), text
    assert re.search(r"Total HTVA / TVA\s+-12,57\s+-10,01", text) and re.search(r"Solde en votre faveur:\s22,58", text)


@pytest.mark.parametrize("bad", ["21", "1", "-0.1", "nan", '"21 %"', "true", '"abc"'])
def test_a_bad_producer_vat_is_refused_naming_the_member_and_the_field(bad: str) -> None:
    with pytest.raises(AllocationInputError) as exc:
        community(coop_vat=bad)
    assert exc.value.field == "operations[0].members[1].producer_vat"
    assert "member 'coop'" in exc.value.reason and '"exempt"' in exc.value.reason, exc.value.reason


def test_producer_vat_on_a_member_that_produces_nothing_is_refused() -> None:
    text = COMMUNITY.format(vat="0.06", coop_vat="0.21").replace('id = "alice"', 'id = "alice"\nproducer_vat = 0.21')
    with pytest.raises(AllocationInputError) as exc:
        parse_community(tomllib.loads(text))
    assert exc.value.field == "operations[0].members[0].producer_vat" and "'alice'" in exc.value.reason


def test_the_communitys_vat_and_the_producers_read_the_same_way() -> None:
    assert community(coop_vat='"0.21"').operation("op1").member("coop").producer_vat == Decimal("0.21")
    with pytest.raises(AllocationInputError) as exc:
        community(vat="21")
    assert exc.value.field == "operations[0].prices[0].vat" and '"exempt"' in exc.value.reason

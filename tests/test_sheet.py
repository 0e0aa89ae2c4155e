"""The monthly sheet: figures from a store filled by replaying a simulated month through the real
pipeline (``quartier replay``), shared energy from a real ``quartier allocate`` run, the numbers as
printed in French, Dutch and English, and the page printed to one A4 PDF page by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from demo.meter import MeterSimulator
from gateway.store import Store
from services.node.sheet import (
    AllocatedQuarter,
    allocation_for_member,
    best_hours,
    format_eur,
    format_kwh,
    hourly_profile,
    month_figures,
    render_html,
)

QUARTIER = [sys.executable, "-m", "gateway.cli"]
TZ = ZoneInfo("Europe/Brussels")
MONTH = "2026-06"
NNBSP, NBSP = "\u202f", "\u00a0"


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*QUARTIER, *args], capture_output=True, text=True, timeout=180, input=stdin)
    assert proc.returncode == 0, f"quartier {' '.join(args)}: {proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def june(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """June 2026 of a household with 4 kWp of solar: one telegram per quarter-hour boundary from the
    simulator, replayed through the pipeline into a store; the true register deltas kept to compare."""
    d = tmp_path_factory.mktemp("june")
    first, nxt = datetime(2026, 6, 1, tzinfo=TZ), datetime(2026, 7, 1, tzinfo=TZ)
    sim = MeterSimulator(first, seed=3, pv_kwp=4.0)
    capture = d / "june.p1"
    with capture.open("wb") as fh:
        t = first
        while t <= nxt:
            fh.write(sim.telegram_at(t))
            if t == first:
                start_import, start_export = sim.true_import_wh, sim.true_export_wh
            if t == nxt:
                end_import, end_export = sim.true_import_wh, sim.true_export_wh
            t += timedelta(minutes=15)
    db = d / "quartier.sqlite"
    # readings exactly 15 minutes apart: nothing to interpolate, so nothing is "estimated"
    _run("replay", str(capture), "--db", str(db), "--max-gap", "1000")
    with Store(db) as store:
        qhs = store.quarter_hours(start=first, end=nxt)
    meter = qhs[0].meter_id
    # a provisional allocation over the month by the real engine: this member, two neighbours, and a
    # school whose roof (three times this one, same sun) is the only producer of the operation
    request = {"preset": "aubange", "members": [meter, "bob", "cafe"], "quarter_hours": [
        {"start": q.start.isoformat(), "production_wh": {"school": 3 * q.export_wh},
         "consumption_wh": {meter: q.import_wh, "bob": 120, "cafe": 250}} for q in qhs]}
    allocation = d / "allocation.json"
    allocation.write_text(_run("allocate", "-", stdin=json.dumps(request)).stdout)
    return {"dir": d, "db": db, "meter": meter, "qhs": qhs, "allocation": allocation,
            "import_wh": end_import - start_import, "export_wh": end_export - start_export}


# -- pure parts ------------------------------------------------------------------------------------


def test_best_hours_are_the_runs_near_the_top() -> None:
    profile = [0.0] * 24
    profile[10:16] = [400, 700, 900, 1000, 800, 450]
    profile[19] = 600
    assert best_hours(profile) == ((11, 15), (19, 20))
    assert best_hours(profile, limit=1) == ((11, 15),)
    assert best_hours([10.0] * 24) == ()  # no hour stands out when there is no surplus to speak of
    assert best_hours([0.0] * 23 + [900.0]) == ((23, 24),)


def test_hourly_profile_averages_per_local_hour() -> None:
    # 12:00 and 12:45 local on two days: both in hour 12, averaged over 2 days
    pts = [(datetime(2026, 6, 1, 12, tzinfo=TZ), 100), (datetime(2026, 6, 1, 12, 45, tzinfo=TZ), 100),
           (datetime(2026, 6, 2, 10, 0, tzinfo=timezone.utc), 60)]  # 12:00 in Brussels (UTC+2)
    profile = hourly_profile(pts, TZ, days=2)
    assert profile[12] == 130 and sum(profile) == 130


def test_number_formats_per_language() -> None:
    assert format_kwh(145_128, "en") == f"145{NBSP}kWh"
    assert format_kwh(1_234_567, "fr") == f"1{NNBSP}235{NBSP}kWh"
    assert format_kwh(1_234_567, "nl") == f"1.235{NBSP}kWh"
    assert format_kwh(7_460, "fr") == f"7,5{NBSP}kWh"  # one decimal below 10 kWh
    assert format_eur(12.5, "en") == "€12.50"
    assert format_eur(12.5, "fr") == f"12,50{NNBSP}€"
    assert format_eur(12.5, "nl") == f"€{NBSP}12,50"


def test_allocation_for_member_reads_quartier_allocate_output() -> None:
    data = {"quarter_hours": [{"start": "2026-06-21T12:00:00+02:00", "allocated_wh": {"ann": 200, "bob": 900},
                               "to_grid_wh": 40}]}
    assert allocation_for_member(data, "ann") == [AllocatedQuarter(datetime(2026, 6, 21, 10, tzinfo=timezone.utc), 200, 40)]
    with pytest.raises(ValueError, match="member 'zoe' is not in the allocation"):
        allocation_for_member(data, "zoe")
    with pytest.raises(ValueError, match="not the output of `quartier allocate`"):
        allocation_for_member({"rounds": []}, "ann")


def test_savings_need_shared_energy_and_both_prices() -> None:
    base = dict(meter_id="m", month=MONTH, tz=TZ, import_wh=100_000, export_wh=0, quarter_hours=2880,
                expected_quarter_hours=2880, estimated=0, days_with_data=30, own_quarter_hours=[])
    alloc = [AllocatedQuarter(datetime(2026, 6, 10, 12, tzinfo=TZ), 25_000, 0),
             AllocatedQuarter(datetime(2026, 7, 1, 12, tzinfo=TZ), 99_999, 0)]  # July: not this sheet's month
    f = month_figures(**base, allocation=alloc, grid_price=0.32, community_price=0.12)
    assert f.shared_wh == 25_000 and f.shared_quarter_hours == 1
    assert f.savings_eur == 5.0 and f.shared_share == 0.25
    assert month_figures(**base, allocation=alloc).savings_eur is None
    unknown = month_figures(**base, allocation=None, grid_price=0.32, community_price=0.12)
    assert unknown.shared_wh is None and unknown.savings_eur is None and unknown.best_hours == ()
    page = render_html(unknown, "en", made_on=date(2026, 7, 1))
    assert "Not known yet. The provisional sharing needs the figures of the whole community" in page
    assert "Not known yet: they need the community&#x27;s figures." in page  # a consumer: no best hours yet
    with pytest.raises(ValueError, match="language"):
        render_html(unknown, "de")


# -- the sheet from a replayed month ---------------------------------------------------------------


def _text(page: str) -> str:
    """The page's visible text, tags removed and whitespace collapsed."""
    body = re.sub(r"<style>.*?</style>|<title>.*?</title>", " ", page, flags=re.DOTALL)
    return re.sub(r"[ \t\r\n]+", " ", re.sub(r"<[^>]+>", " ", body)).replace("&#x27;", "'")


def test_sheet_without_allocation_shows_own_figures_and_best_hours(june: dict, tmp_path: Path) -> None:
    out = tmp_path / "sheet.html"
    _run("sheet", "--db", str(june["db"]), "--month", MONTH, "--lang", "fr", "--name", "Anne Dupont",
         "--grid-price", "0.32", "--community-price", "0.15", "--out", str(out))
    text = _text(out.read_text())
    # the store's totals are the simulator's register deltas over the month, to the Wh
    with Store(june["db"]) as store:
        total = store.monthly_totals(meter_id=june["meter"], start=MONTH, end="2026-07")[0]
    assert (total.import_wh, total.export_wh) == (june["import_wh"], june["export_wh"])
    assert total.quarter_hours == 2880 and total.estimated == 0
    assert "Votre énergie en juin 2026" in text
    assert "Fiche du mois pour Anne Dupont" in text
    assert f"Électricité prise du réseau {round(june['import_wh'] / 1000)}{NBSP}kWh" in text
    assert f"vos panneaux solaires {round(june['export_wh'] / 1000)}{NBSP}kWh" in text
    assert "Pas encore connue. Le partage provisoire a besoin des chiffres de toute la communauté" in text
    assert "Connues quand l'énergie partagée sera connue." in text
    assert "Mesuré 30 jours sur 30." in text and "estimés" not in text
    # best hours from the member's own injection: the sunny middle of the day
    export_by_hour = [0] * 24
    for q in june["qhs"]:
        export_by_hour[q.start.astimezone(TZ).hour] += q.export_wh
    expected = best_hours([v / 30 for v in export_by_hour])
    assert expected and all(9 <= a < b <= 19 for a, b in expected)
    hours = " et ".join(f"{a} h – {b} h" for a, b in expected)
    assert f"de préférence : {hours}" in text
    assert "vos panneaux solaires ont envoyé le plus d'électricité au réseau" in text


def test_sheet_with_allocation_in_three_languages(june: dict, tmp_path: Path) -> None:
    data = json.loads(june["allocation"].read_text())
    meter = june["meter"]
    shared = sum(q["allocated_wh"].get(meter, 0) for q in data["quarter_hours"])
    assert 0 < shared < june["import_wh"]
    savings = round(shared / 1000 * (0.32 - 0.15), 2)
    pct = round(100 * shared / june["import_wh"])
    # this member imports mostly in the evening, when the school's roof gives nothing: a few kWh,
    # printed with one decimal (below 10 kWh)
    assert shared < 10_000
    kwh = f"{shared / 1000:.1f}"
    expect = {
        "en": [f"Shared energy from the community {kwh}{NBSP}kWh",
               f"came from the community's solar panels ({pct}%)",
               f"You saved about €{savings:.2f}: €0.32 per kWh from the grid, €0.15 per kWh from the community.",
               "the community had the most solar electricity left over this month"],
        "fr": [f"Énergie partagée par la communauté {kwh.replace('.', ',')}{NBSP}kWh", f"({pct}{NNBSP}%)",
               f"Vous avez économisé environ {f'{savings:.2f}'.replace('.', ',')}{NNBSP}€",
               "la communauté avait le plus d'électricité solaire en trop"],
        "nl": [f"Gedeelde energie van de gemeenschap {kwh.replace('.', ',')}{NBSP}kWh", f"({pct}%)",
               f"U bespaarde ongeveer €{NBSP}{f'{savings:.2f}'.replace('.', ',')}",
               "had de gemeenschap deze maand de meeste zonnestroom over"],
    }
    for lang, phrases in expect.items():
        out = tmp_path / f"sheet-{lang}.html"
        _run("sheet", "--db", str(june["db"]), "--month", MONTH, "--lang", lang, "--allocation", str(june["allocation"]),
             "--grid-price", "0.32", "--community-price", "0.15", "--out", str(out))
        text = _text(out.read_text())
        for phrase in phrases:
            assert phrase in text, f"{lang}: {phrase!r} not in the sheet"
    # the community's best hours come from the energy the operation returned to the grid
    to_grid = [0] * 24
    for q in data["quarter_hours"]:
        to_grid[datetime.fromisoformat(q["start"]).astimezone(TZ).hour] += q["to_grid_wh"]
    expected = best_hours([v / 30 for v in to_grid])
    assert f"preferably: {' and '.join(f'{a}:00 – {b}:00' for a, b in expected)}" in _text((tmp_path / "sheet-en.html").read_text())


def test_sheet_command_errors_are_one_line(june: dict, tmp_path: Path) -> None:
    def fail(*args: str) -> str:
        proc = subprocess.run([*QUARTIER, "sheet", *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        return proc.stderr

    assert "no such store" in fail("--db", str(tmp_path / "none.sqlite"))
    assert "--month '2026-13'" in fail("--db", str(june["db"]), "--month", "2026-13")
    assert "--month: '9999-12' is out of range" in fail("--db", str(june["db"]), "--month", "9999-12")  # issue 13
    assert "--month: '0001-01' is out of range" in fail("--db", str(june["db"]), "--month", "0001-01")
    assert "is not in the store" in fail("--db", str(june["db"]), "--meter", "nope")
    assert "member 'zoe' is not in the allocation" in fail("--db", str(june["db"]), "--month", MONTH,
                                                          "--allocation", str(june["allocation"]), "--member", "zoe",
                                                          "--out", str(tmp_path / "x.html"))


def test_sheet_prints_to_one_a4_page(june: dict, tmp_path: Path) -> None:
    """Each language with the longest texts (allocation, savings, two names) fits one A4 page."""
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: .ci/run installs it (Debian package chromium)", pytrace=False)
    for lang in ("fr", "nl", "en"):
        pdf = tmp_path / f"sheet-{lang}.pdf"
        _run("sheet", "--db", str(june["db"]), "--month", MONTH, "--lang", lang, "--allocation", str(june["allocation"]),
             "--grid-price", "0.32", "--community-price", "0.15", "--name", "Marie-Christine Vandenbroucke-Lambert",
             "--community", "Communauté d'énergie du Moulin de Wavre", "--out", str(tmp_path / f"s-{lang}.html"),
             "--pdf", str(pdf))
        raw = pdf.read_bytes()
        assert raw.startswith(b"%PDF-")
        pages = len(re.findall(rb"/Type\s*/Page(?![s\w])", raw))
        assert pages == 1, f"{lang}: {pages} pages"
        # A4 is 595 x 842 points
        box = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", raw)
        assert box and abs(float(box.group(1)) - 595) < 2 and abs(float(box.group(2)) - 842) < 2

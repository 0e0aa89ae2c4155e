"""The printable monthly sheet (fiche mensuelle, maandfiche): one A4 page per member and month, in
French, Dutch or English, for members who do not use the page or an app.

It says, in plain words and large type: how much electricity the member took from the grid and sent
to it, how much shared energy it received from the community and what that saved, and the best hours
of the day to use electricity, with a 24-hour chart. Shared energy comes from a provisional allocation
(the JSON that ``quartier allocate`` writes, with the member's id); without it the sheet says that
shared energy is not known yet, because the provisional allocation needs the whole community's data.

The best hours are where surplus was highest on average over the month: the community's energy that
went back to the grid (``to_grid_wh`` of the allocation) when known, else the member's own injection
(a producer's own surplus). Hours at or above half of the best hour's average make the "best hours".

:func:`month_figures` is pure (data in, figures out); :func:`render_html` turns the figures into a
self-contained HTML page (its print stylesheet makes it one A4 page); the command reads the store and
optionally prints the page to PDF with headless Chromium.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from zoneinfo import ZoneInfo

LANGS = ("fr", "nl", "en")
BEST_SHARE = 0.5  # hours with at least half the best hour's average surplus are "best hours"
MIN_SURPLUS_WH = 50.0  # below this average per hour, no hour stands out


# -- figures (pure) --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllocatedQuarter:
    """One quarter-hour of a provisional allocation, seen from one member."""

    start: datetime
    received_wh: int  # shared energy allocated to this member
    to_grid_wh: int  # the community's surplus that nobody used (returned to the grid)


@dataclass(frozen=True, slots=True)
class SheetFigures:
    meter_id: str
    month: str  # YYYY-MM
    import_wh: int
    export_wh: int
    quarter_hours: int  # closed quarter-hours stored for the month
    expected_quarter_hours: int  # how many the month has (2,976 in a 31-day month, ±4 at a DST change)
    estimated: int  # of them estimated (an outage was bridged from the meter's registers)
    days_with_data: int
    days_in_month: int
    shared_wh: int | None  # None: not known (no allocation data for this member and month)
    shared_quarter_hours: int  # quarter-hours the allocation covered
    grid_price: float | None  # EUR/kWh
    community_price: float | None
    hourly_surplus_wh: tuple[float, ...]  # 24 values: average Wh of surplus in each local hour of a day
    surplus_basis: str | None  # "community", "own", or None (no surplus data)
    best_hours: tuple[tuple[int, int], ...]  # [start, end) local hours, best first

    @property
    def savings_eur(self) -> float | None:
        if self.shared_wh is None or self.grid_price is None or self.community_price is None:
            return None
        return round(self.shared_wh / 1000 * (self.grid_price - self.community_price), 2)

    @property
    def shared_share(self) -> float | None:
        """Shared energy / electricity taken from the grid (the member's self-sufficiency)."""
        if self.shared_wh is None or not self.import_wh:
            return None
        return self.shared_wh / self.import_wh


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    year, m = int(month[:4]), int(month[5:7])
    first = datetime(year, m, 1, tzinfo=tz)
    nxt = datetime(year + m // 12, m % 12 + 1, 1, tzinfo=tz)
    return first, nxt


def hourly_profile(points: Iterable[tuple[datetime, float]], tz: ZoneInfo, days: int) -> tuple[float, ...]:
    """Average Wh per local hour of the day over ``days`` days, from (quarter-hour start, Wh) points."""
    sums = [0.0] * 24
    for start, wh in points:
        sums[start.astimezone(tz).hour] += wh
    return tuple(s / days if days else 0.0 for s in sums)


def best_hours(profile: Sequence[float], *, share: float = BEST_SHARE, min_wh: float = MIN_SURPLUS_WH,
               limit: int = 2) -> tuple[tuple[int, int], ...]:
    """Runs of consecutive hours at or above ``share`` × the best hour, the ``limit`` largest first
    (by surplus); nothing when even the best hour is below ``min_wh``."""
    top = max(profile, default=0.0)
    if top < min_wh:
        return ()
    runs: list[tuple[int, int]] = []
    h = 0
    while h < 24:
        if profile[h] >= share * top:
            start = h
            while h < 24 and profile[h] >= share * top:
                h += 1
            runs.append((start, h))
        else:
            h += 1
    runs.sort(key=lambda r: -sum(profile[r[0]:r[1]]))
    return tuple(sorted(runs[:limit]))


def month_figures(
    *, meter_id: str, month: str, tz: ZoneInfo, import_wh: int, export_wh: int, quarter_hours: int,
    expected_quarter_hours: int, estimated: int, days_with_data: int,
    own_quarter_hours: Sequence[tuple[datetime, int, int]],
    allocation: Sequence[AllocatedQuarter] | None,
    grid_price: float | None = None, community_price: float | None = None,
) -> SheetFigures:
    """The sheet's figures from the month's totals, the member's quarter-hours (start, import_wh,
    export_wh) and, when known, the member's provisional allocation."""
    first, nxt = month_bounds(month, tz)
    days = (nxt.date() - first.date()).days
    in_month = [a for a in (allocation or ()) if first <= a.start < nxt]
    if in_month:
        shared: int | None = sum(a.received_wh for a in in_month)
        profile = hourly_profile(((a.start, a.to_grid_wh) for a in in_month), tz, days_with_data or days)
        basis: str | None = "community"
    else:
        shared = None
        own = [(s, exp) for s, _imp, exp in own_quarter_hours if first <= s < nxt]
        profile = hourly_profile(own, tz, days_with_data or days)
        basis = "own" if own and any(wh for _, wh in own) else None
    return SheetFigures(
        meter_id=meter_id, month=month, import_wh=import_wh, export_wh=export_wh, quarter_hours=quarter_hours,
        expected_quarter_hours=expected_quarter_hours, estimated=estimated, days_with_data=days_with_data,
        days_in_month=days, shared_wh=shared, shared_quarter_hours=len(in_month), grid_price=grid_price,
        community_price=community_price, hourly_surplus_wh=profile, surplus_basis=basis,
        best_hours=best_hours(profile) if basis else (),
    )


def allocation_for_member(data: Mapping[str, Any], member_id: str) -> list[AllocatedQuarter]:
    """This member's quarter-hours from ``quartier allocate``'s JSON output. Raises ``ValueError`` with
    a reason a user can act on."""
    qhs = data.get("quarter_hours") if isinstance(data, Mapping) else None
    if not isinstance(qhs, list):
        raise ValueError("not the output of `quartier allocate` (no quarter_hours list)")
    out = []
    seen = False
    for i, q in enumerate(qhs):
        try:
            start = datetime.fromisoformat(str(q["start"]).replace("Z", "+00:00"))
            alloc = q["allocated_wh"]
            to_grid = int(q["to_grid_wh"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"quarter_hours[{i}]: missing or bad field ({exc})") from None
        if start.tzinfo is None:
            raise ValueError(f"quarter_hours[{i}].start has no UTC offset")
        seen = seen or member_id in alloc
        out.append(AllocatedQuarter(start, int(alloc.get(member_id, 0)), to_grid))
    if qhs and not seen:
        members = sorted({m for q in qhs for m in q.get("allocated_wh", {})})
        raise ValueError(f"member {member_id!r} is not in the allocation (members: {', '.join(members[:10])})")
    return out


# -- words (fr, nl, en) ----------------------------------------------------------------------------

MONTHS = {
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"),
    "nl": ("januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september", "oktober",
           "november", "december"),
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
}

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your energy in {month}",
        "for": "Monthly sheet for {name}",
        "from_grid": "Electricity you took from the grid",
        "to_grid": "Electricity your solar panels sent to the grid",
        "shared": "Shared energy from the community",
        "shared_text": "Of the electricity you took from the grid, {kwh} came from the community's solar panels ({pct}).",
        "shared_unknown": "Not known yet. The provisional sharing needs the figures of the whole community; "
                          "your community or the grid operator will send them.",
        "savings": "Your savings",
        "savings_text": "You saved about {eur}: {grid} per kWh from the grid, {community} per kWh from the community.",
        "savings_no_price": "Ask your community for the prices to see how much you saved.",
        "savings_unknown": "Known once the shared energy is known.",
        "best": "The best hours to use electricity",
        "best_intro": "Run the washing machine, the dishwasher or the water heater, or charge the car, preferably:",
        "best_own": "These are the hours when your own solar panels sent the most electricity to the grid this month.",
        "best_community": "These are the hours when the community had the most solar electricity left over this month.",
        "best_none": "This month there was no surplus to speak of: no hour stands out.",
        "best_unknown": "Not known yet: they need the community's figures.",
        "chart": "Surplus per hour of the day, on average this month",
        "light": "The light at home",
        "light_green": "green: use electricity now",
        "light_amber": "orange: small appliances only",
        "light_red": "red: no surplus now",
        "light_blink": "red blinking: please use less now",
        "light_unsure": "orange blinking slowly: no data, the light does not know",
        "measured": "Measured on {days} of {total} days.",
        "estimated": "{n} quarter-hours were estimated after an interruption.",
        "provisional": "These figures are provisional: the official figures come from your grid operator.",
        "footer": "Meter {meter} · made by Quartier on {date}",
        "and": "and",
        "hour": "{h}:00",
    },
    "fr": {
        "title": "Votre énergie en {month}",
        "for": "Fiche du mois pour {name}",
        "from_grid": "Électricité prise du réseau",
        "to_grid": "Électricité envoyée au réseau par vos panneaux solaires",
        "shared": "Énergie partagée par la communauté",
        "shared_text": "Sur l'électricité prise du réseau, {kwh} venaient des panneaux solaires de la communauté ({pct}).",
        "shared_unknown": "Pas encore connue. Le partage provisoire a besoin des chiffres de toute la communauté ; "
                          "votre communauté ou le gestionnaire de réseau les enverra.",
        "savings": "Vos économies",
        "savings_text": "Vous avez économisé environ {eur} : {grid} le kWh du réseau, {community} le kWh de la communauté.",
        "savings_no_price": "Demandez les prix à votre communauté pour voir combien vous avez économisé.",
        "savings_unknown": "Connues quand l'énergie partagée sera connue.",
        "best": "Les meilleures heures pour consommer",
        "best_intro": "Faites tourner le lave-linge, le lave-vaisselle ou le chauffe-eau, ou rechargez la voiture, "
                      "de préférence :",
        "best_own": "Ce sont les heures où vos panneaux solaires ont envoyé le plus d'électricité au réseau ce mois-ci.",
        "best_community": "Ce sont les heures où la communauté avait le plus d'électricité solaire en trop ce mois-ci.",
        "best_none": "Ce mois-ci, il n'y a guère eu de surplus : aucune heure ne se distingue.",
        "best_unknown": "Pas encore connues : il faut les chiffres de la communauté.",
        "chart": "Surplus par heure de la journée, en moyenne ce mois-ci",
        "light": "La lampe à la maison",
        "light_green": "vert : consommez maintenant",
        "light_amber": "orange : petits appareils seulement",
        "light_red": "rouge : pas de surplus",
        "light_blink": "rouge clignotant : consommez moins, s'il vous plaît",
        "light_unsure": "orange clignotant lentement : pas de données, la lampe ne sait pas",
        "measured": "Mesuré {days} jours sur {total}.",
        "estimated": "{n} quarts d'heure ont été estimés après une interruption.",
        "provisional": "Ces chiffres sont provisoires : les chiffres officiels viennent de votre gestionnaire de réseau.",
        "footer": "Compteur {meter} · fiche faite par Quartier le {date}",
        "and": "et",
        "hour": "{h} h",
    },
    "nl": {
        "title": "Uw energie in {month}",
        "for": "Maandfiche voor {name}",
        "from_grid": "Elektriciteit van het net",
        "to_grid": "Elektriciteit die uw zonnepanelen aan het net gaven",
        "shared": "Gedeelde energie van de gemeenschap",
        "shared_text": "Van de elektriciteit die u van het net nam, kwam {kwh} van de zonnepanelen van de gemeenschap ({pct}).",
        "shared_unknown": "Nog niet bekend. Voor de voorlopige verdeling zijn de cijfers van de hele gemeenschap nodig; "
                          "uw gemeenschap of de netbeheerder stuurt ze.",
        "savings": "Uw besparing",
        "savings_text": "U bespaarde ongeveer {eur}: {grid} per kWh van het net, {community} per kWh van de gemeenschap.",
        "savings_no_price": "Vraag de prijzen aan uw gemeenschap om te zien hoeveel u bespaarde.",
        "savings_unknown": "Bekend zodra de gedeelde energie bekend is.",
        "best": "De beste uren om stroom te gebruiken",
        "best_intro": "Laat de wasmachine, de vaatwasser of de boiler werken, of laad de auto op, het liefst:",
        "best_own": "Op deze uren gaven uw eigen zonnepanelen deze maand de meeste stroom aan het net.",
        "best_community": "Op deze uren had de gemeenschap deze maand de meeste zonnestroom over.",
        "best_none": "Deze maand was er nauwelijks overschot: geen enkel uur springt eruit.",
        "best_unknown": "Nog niet bekend: daarvoor zijn de cijfers van de gemeenschap nodig.",
        "chart": "Overschot per uur van de dag, gemiddeld deze maand",
        "light": "Het lampje thuis",
        "light_green": "groen: nu stroom gebruiken",
        "light_amber": "oranje: alleen kleine toestellen",
        "light_red": "rood: geen overschot",
        "light_blink": "rood knipperend: graag minder verbruiken",
        "light_unsure": "oranje traag knipperend: geen gegevens, het lampje weet het niet",
        "measured": "Gemeten op {days} van de {total} dagen.",
        "estimated": "{n} kwartieren werden geschat na een onderbreking.",
        "provisional": "Deze cijfers zijn voorlopig: de officiële cijfers komen van uw netbeheerder.",
        "footer": "Meter {meter} · fiche gemaakt door Quartier op {date}",
        "and": "en",
        "hour": "{h} u",
    },
}

_NBSP = "\u00a0"
_NNBSP = "\u202f"  # French thousands separator and space before % and €


def format_number(value: float, lang: str, decimals: int = 0) -> str:
    text = f"{value:,.{decimals}f}"  # 1,234.5
    if lang == "en":
        return text
    sep = _NNBSP if lang == "fr" else "."
    return text.replace(",", "\0").replace(".", ",").replace("\0", sep)


def format_kwh(wh: int, lang: str) -> str:
    """Whole kWh from 10 kWh up, one decimal below (a small consumer's figures stay visible)."""
    kwh = wh / 1000
    return format_number(kwh, lang, 0 if abs(kwh) >= 10 else 1) + _NBSP + "kWh"


def format_eur(value: float, lang: str) -> str:
    amount = format_number(value, lang, 2)
    return {"en": f"€{amount}", "fr": f"{amount}{_NNBSP}€", "nl": f"€{_NBSP}{amount}"}[lang]


def format_percent(share: float, lang: str) -> str:
    pct = format_number(100 * share, lang, 0)
    return f"{pct}{_NNBSP}%" if lang == "fr" else f"{pct}%"


def format_hours(runs: Sequence[tuple[int, int]], lang: str) -> str:
    hour = TEXT[lang]["hour"]
    parts = [f"{hour.format(h=a)} – {hour.format(h=b)}" for a, b in runs]  # b = 24: midnight
    return f" {TEXT[lang]['and']} ".join(parts)


def month_name(month: str, lang: str) -> str:
    return f"{MONTHS[lang][int(month[5:7]) - 1]} {month[:4]}"


# -- the page --------------------------------------------------------------------------------------


def _chart_svg(profile: Sequence[float], best: Sequence[tuple[int, int]], lang: str) -> str:
    """24 bars, the best hours dark, the others light grey (readable in black and white)."""
    w, h, left, bottom = 720, 120, 8, 24
    bar_w = (w - 2 * left) / 24
    top = max(profile, default=0.0) or 1.0
    hour = TEXT[lang]["hour"]
    is_best = {x for a, b in best for x in range(a, b)}
    parts = [f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{html.escape(TEXT[lang]["chart"])}">']
    for i, v in enumerate(profile):
        bh = (h - bottom - 8) * max(v, 0.0) / top
        x = left + i * bar_w + 2
        cls = "bar best" if i in is_best else "bar"
        parts.append(f'<rect class="{cls}" x="{x:.1f}" y="{h - bottom - bh:.1f}" width="{bar_w - 4:.1f}" '
                     f'height="{bh:.1f}"><title>{html.escape(hour.format(h=i))}: {v:.0f} Wh</title></rect>')
    parts.append(f'<line class="axis" x1="{left}" y1="{h - bottom}" x2="{w - left}" y2="{h - bottom}"/>')
    for i in range(0, 24, 3):
        x = left + i * bar_w + bar_w / 2
        parts.append(f'<text x="{x:.1f}" y="{h - 6}" text-anchor="middle">{html.escape(hour.format(h=i))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(f: SheetFigures, lang: str, *, name: str | None = None, community: str | None = None,
                made_on: date | None = None) -> str:
    """A self-contained HTML page (styles inlined), one A4 page when printed."""
    if lang not in LANGS:
        raise ValueError(f"language must be one of {', '.join(LANGS)}, not {lang!r}")
    t = TEXT[lang]
    e = html.escape
    month = month_name(f.month, lang)

    if f.shared_wh is None:
        shared_value, shared_text = "?", t["shared_unknown"]
    else:
        share = f.shared_share
        shared_value = format_kwh(f.shared_wh, lang)
        shared_text = t["shared_text"].format(kwh=format_kwh(f.shared_wh, lang),
                                              pct=format_percent(share, lang) if share is not None else "–")
    savings = f.savings_eur
    if savings is not None:
        savings_value = format_eur(savings, lang)
        savings_text = t["savings_text"].format(eur=format_eur(savings, lang), grid=format_eur(f.grid_price, lang),
                                                community=format_eur(f.community_price, lang))
    elif f.shared_wh is None:
        savings_value, savings_text = "?", t["savings_unknown"]
    else:
        savings_value, savings_text = "?", t["savings_no_price"]

    if f.best_hours:
        best_block = (f'<p>{e(t["best_intro"])}</p><p class="hours">{e(format_hours(f.best_hours, lang))}</p>'
                      f'<p>{e(t["best_" + (f.surplus_basis or "own")])}</p>'
                      f'<figure>{_chart_svg(f.hourly_surplus_wh, f.best_hours, lang)}'
                      f'<figcaption>{e(t["chart"])}</figcaption></figure>')
    elif f.surplus_basis is None and f.shared_wh is None and not f.export_wh:
        best_block = f'<p class="hours none">{e(t["best_unknown"])}</p>'
    else:
        best_block = f'<p class="hours none">{e(t["best_none"])}</p>'

    quality = [t["measured"].format(days=f.days_with_data, total=f.days_in_month)]
    if f.estimated:
        quality.append(t["estimated"].format(n=f.estimated))
    to_grid = (f'<div class="figure"><div class="label">{e(t["to_grid"])}</div>'
               f'<div class="value">{e(format_kwh(f.export_wh, lang))}</div></div>') if f.export_wh else ""
    subtitle = " · ".join(x for x in (community, t["for"].format(name=name) if name else None) if x)
    css = resources.files("services").joinpath("sheet.css").read_text(encoding="utf-8")
    page = resources.files("services").joinpath("sheet.html").read_text(encoding="utf-8")
    return Template(page).substitute(
        lang=lang,
        css=css,
        title=e(t["title"].format(month=month)),
        subtitle=e(subtitle),
        from_grid_label=e(t["from_grid"]),
        from_grid=e(format_kwh(f.import_wh, lang)),
        to_grid_block=to_grid,
        shared_label=e(t["shared"]),
        shared_value=e(shared_value),
        shared_text=e(shared_text),
        savings_label=e(t["savings"]),
        savings_value=e(savings_value),
        savings_text=e(savings_text),
        best_label=e(t["best"]),
        best_block=best_block,
        light_label=e(t["light"]),
        light_green=e(t["light_green"]),
        light_amber=e(t["light_amber"]),
        light_red=e(t["light_red"]),
        light_blink=e(t["light_blink"]),
        light_unsure=e(t["light_unsure"]),
        quality=e(" ".join(quality)),
        provisional=e(t["provisional"]),
        footer=e(t["footer"].format(meter=f.meter_id, date=(made_on or date.today()).isoformat())),
    )


# -- I/O: the store, Chromium ----------------------------------------------------------------------


def figures_from_store(store, meter_id: str, month: str, *, allocation: Sequence[AllocatedQuarter] | None,
                       grid_price: float | None, community_price: float | None) -> SheetFigures:
    """Read one meter's month from a :class:`gateway.store.Store` (or its read-only variant)."""
    tz = store.tz
    first, nxt = month_bounds(month, tz)
    year, m = int(month[:4]), int(month[5:7])
    nxt_key = f"{year + m // 12:04d}-{m % 12 + 1:02d}"
    totals = store.monthly_totals(meter_id=meter_id, start=month, end=nxt_key)
    days = store.daily_totals(meter_id=meter_id, start=first.date(), end=nxt.date())
    qhs = store.quarter_hours(meter_id=meter_id, start=first, end=nxt)
    t = totals[0] if totals else None
    return month_figures(
        meter_id=meter_id, month=month, tz=tz,
        import_wh=t.import_wh if t else 0, export_wh=t.export_wh if t else 0,
        quarter_hours=t.quarter_hours if t else 0,
        expected_quarter_hours=t.expected if t else int((nxt.timestamp() - first.timestamp()) // 900),
        estimated=t.estimated if t else 0,
        days_with_data=sum(1 for d in days if d.quarter_hours),
        own_quarter_hours=[(q.start, q.import_wh, q.export_wh) for q in qhs],
        allocation=allocation, grid_price=grid_price, community_price=community_price,
    )


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def print_pdf(html_path: Path, pdf_path: Path, *, browser: str | None = None, timeout_s: float = 120) -> None:
    """Headless Chromium prints the page with its print stylesheet (A4, no header or footer)."""
    browser = browser or chromium()
    if browser is None:
        raise SystemExit("quartier sheet: --pdf needs Chromium (sudo apt-get install chromium); "
                         "or open the HTML file in a browser and print it to PDF")
    with tempfile.TemporaryDirectory(prefix="quartier-sheet-") as profile:
        cmd = [browser, "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               "--no-pdf-header-footer", f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()]
        if os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not pdf_path.exists() or pdf_path.stat().st_size == 0:
        raise SystemExit(f"quartier sheet: Chromium could not print {pdf_path}: {proc.stderr.strip()[-300:]}")


def _previous_month(tz: ZoneInfo) -> str:
    today = datetime.now(tz).date()
    last = today.replace(day=1) - timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sheet", help="a member's printable monthly sheet (HTML, or PDF with Chromium)",
                       description="One A4 page for a member and a month, in plain words: electricity from and to "
                       "the grid, shared energy and savings (from a provisional allocation, when given), and the "
                       "best hours to use electricity. Open the HTML file in a browser and print it, or use --pdf.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", "-c", type=Path, help="the node's configuration (store, time zone, language, prices)")
    src.add_argument("--db", type=Path, help="a store file instead of a configuration")
    p.add_argument("--month", help="YYYY-MM (default: last month)")
    p.add_argument("--meter", help="meter id (default: the store's only meter)")
    p.add_argument("--lang", choices=LANGS, help="fr, nl or en (default: web.language, else en)")
    p.add_argument("--name", help="the member's name, printed at the top")
    p.add_argument("--community", help="the community's name, printed at the top")
    p.add_argument("--allocation", type=Path, metavar="FILE",
                   help="a provisional allocation: the JSON output of `quartier allocate` for this month")
    p.add_argument("--member", help="the member's id in the allocation (default: the meter id)")
    p.add_argument("--grid-price", type=float, metavar="EUR", help="EUR per kWh from the grid (default web.grid_price_eur_kwh)")
    p.add_argument("--community-price", type=float, metavar="EUR",
                   help="EUR per kWh of shared energy (default web.shared_price_eur_kwh)")
    p.add_argument("--out", type=Path, help="HTML file to write (default sheet-<meter>-<month>-<lang>.html)")
    p.add_argument("--pdf", type=Path, metavar="FILE", help="also print the sheet to this PDF with headless Chromium")
    p.set_defaults(func=cmd_sheet)


def _open_store(path: Path, timezone_name: str):
    from services.web.history import ReadOnlyStore

    if not path.exists():
        raise SystemExit(f"quartier sheet: {path}: no such store (run the gateway, the demo or a replay first)")
    if os.geteuid() == 0 and path.stat().st_uid != 0:
        # SQLite creates -wal/-shm files beside the store; made by root, the service could not open them
        raise SystemExit("quartier sheet: run as the store's owner, not root: sudo -u quartier quartier sheet ...")
    import sqlite3

    from gateway.store import StoreError

    try:
        return ReadOnlyStore(path, timezone=timezone_name)
    except (OSError, sqlite3.Error, StoreError) as exc:
        raise SystemExit(f"quartier sheet: cannot read {path}: {exc}") from None


def cmd_sheet(args: argparse.Namespace) -> int:
    lang, grid, community, tz_name = args.lang, args.grid_price, args.community_price, "Europe/Brussels"
    if args.config is not None:
        from gateway.config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise SystemExit(f"quartier sheet: {exc}") from None
        db, tz_name = cfg.store.path, cfg.daemon.timezone
        lang = lang or (cfg.web.language if cfg.web.language in LANGS else None)
        grid = grid if grid is not None else cfg.web.grid_price_eur_kwh
        community = community if community is not None else cfg.web.shared_price_eur_kwh
    elif args.db is not None:
        db = args.db
    else:
        raise SystemExit("quartier sheet: give --config FILE or --db STORE")
    lang = lang or "en"
    for flag, value in (("--grid-price", grid), ("--community-price", community)):
        if value is not None and not (0 <= value < 10 and math.isfinite(value)):
            raise SystemExit(f"quartier sheet: {flag} {value}: a price in EUR per kWh, e.g. 0.32")
    store = _open_store(db, tz_name)
    try:
        month = args.month or _previous_month(store.tz)
        try:
            datetime.strptime(month, "%Y-%m")
        except ValueError:
            raise SystemExit(f"quartier sheet: --month {month!r}: expected YYYY-MM, e.g. 2026-06") from None
        meters = store.meters()
        meter = args.meter
        if meter is None:
            if len(meters) != 1:
                raise SystemExit(f"quartier sheet: the store has {len(meters)} meters ({', '.join(meters) or 'none'}): "
                                 "choose one with --meter")
            meter = meters[0]
        elif meter not in meters:
            raise SystemExit(f"quartier sheet: --meter {meter!r} is not in the store (meters: {', '.join(meters) or 'none'})")
        allocation = None
        if args.allocation is not None:
            try:
                data = json.loads(args.allocation.read_text(encoding="utf-8"))
                allocation = allocation_for_member(data, args.member or meter)
            except OSError as exc:
                raise SystemExit(f"quartier sheet: cannot read {args.allocation}: {exc.strerror}") from None
            except ValueError as exc:
                raise SystemExit(f"quartier sheet: {args.allocation}: {exc}") from None
        figures = figures_from_store(store, meter, month, allocation=allocation, grid_price=grid,
                                     community_price=community)
    finally:
        store.close()
    if not figures.quarter_hours:
        print(f"quartier sheet: note: no data for meter {meter} in {month}", file=sys.stderr)
    page = render_html(figures, lang, name=args.name, community=args.community,
                       made_on=datetime.now(timezone.utc).date())
    out = args.out or Path(f"sheet-{meter}-{month}-{lang}.html")
    out.write_text(page, encoding="utf-8")
    print(f"wrote {out}")
    if args.pdf is not None:
        print_pdf(out, args.pdf)
        print(f"wrote {args.pdf}")
    return 0

"""The sheet's words (fr, nl, en) and its self-contained HTML page (a print stylesheet makes it one A4 page)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import date
from importlib import resources
from string import Template

from services.sheet.figures import LANGS, SheetFigures
from services.signal import State
from services.signal_words import legend as light_legend

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
        "savings_fee": " Your supplier's sharing fee for the month ({fee}) is deducted.",
        "savings_loss": "Sharing cost you {eur} this month: your supplier's sharing fee ({fee}) is more than you saved "
                        "({grid} per kWh from the grid, {community} per kWh from the community).",
        "best": "The best hours to use electricity",
        "best_intro": "Run the washing machine, the dishwasher or the water heater, or charge the car, preferably:",
        "best_own": "These are the hours when your own solar panels sent the most electricity to the grid this month.",
        "best_community": "These are the hours when the community had the most solar electricity left over this month.",
        "best_none": "This month there was no surplus to speak of: no hour stands out.",
        "best_unknown": "Not known yet: they need the community's figures.",
        "chart": "Surplus per hour of the day, on average this month",
        "light": "The light at home",
        "measured": "Measured on {days} of {total} days.",
        "estimated": "{n} quarter-hours were estimated after an interruption.",
        "provisional": "These figures are provisional: the official figures come from your grid operator.",
        "binding": "These figures are your grid operator's official figures for the month.",
        "no_data": "No figures for this month: no meter data reached the community.",
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
        "savings_fee": " Les frais de partage de votre fournisseur pour le mois ({fee}) sont déduits.",
        "savings_loss": "Le partage vous a coûté {eur} ce mois-ci : les frais de partage de votre fournisseur ({fee}) "
                        "dépassent l'économie ({grid} le kWh du réseau, {community} le kWh de la communauté).",
        "best": "Les meilleures heures pour consommer",
        "best_intro": "Faites tourner le lave-linge, le lave-vaisselle ou le chauffe-eau, ou rechargez la voiture, "
                      "de préférence :",
        "best_own": "Ce sont les heures où vos panneaux solaires ont envoyé le plus d'électricité au réseau ce mois-ci.",
        "best_community": "Ce sont les heures où la communauté avait le plus d'électricité solaire en trop ce mois-ci.",
        "best_none": "Ce mois-ci, il n'y a guère eu de surplus : aucune heure ne se distingue.",
        "best_unknown": "Pas encore connues : il faut les chiffres de la communauté.",
        "chart": "Surplus par heure de la journée, en moyenne ce mois-ci",
        "light": "La lampe à la maison",
        "measured": "Mesuré {days} jours sur {total}.",
        "estimated": "{n} quarts d'heure ont été estimés après une interruption.",
        "provisional": "Ces chiffres sont provisoires : les chiffres officiels viennent de votre gestionnaire de réseau.",
        "binding": "Ces chiffres sont les chiffres officiels du mois de votre gestionnaire de réseau.",
        "no_data": "Pas de chiffres pour ce mois : aucune donnée de compteur n'est parvenue à la communauté.",
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
        "savings_fee": " De deelkosten van uw leverancier voor de maand ({fee}) zijn afgetrokken.",
        "savings_loss": "Delen heeft u deze maand {eur} gekost: de deelkosten van uw leverancier ({fee}) zijn hoger dan "
                        "de besparing ({grid} per kWh van het net, {community} per kWh van de gemeenschap).",
        "best": "De beste uren om stroom te gebruiken",
        "best_intro": "Laat de wasmachine, de vaatwasser of de boiler werken, of laad de auto op, het liefst:",
        "best_own": "Op deze uren gaven uw eigen zonnepanelen deze maand de meeste stroom aan het net.",
        "best_community": "Op deze uren had de gemeenschap deze maand de meeste zonnestroom over.",
        "best_none": "Deze maand was er nauwelijks overschot: geen enkel uur springt eruit.",
        "best_unknown": "Nog niet bekend: daarvoor zijn de cijfers van de gemeenschap nodig.",
        "chart": "Overschot per uur van de dag, gemiddeld deze maand",
        "light": "Het lampje thuis",
        "measured": "Gemeten op {days} van de {total} dagen.",
        "estimated": "{n} kwartieren werden geschat na een onderbreking.",
        "provisional": "Deze cijfers zijn voorlopig: de officiële cijfers komen van uw netbeheerder.",
        "binding": "Deze cijfers zijn de officiële cijfers van de maand van uw netbeheerder.",
        "no_data": "Geen cijfers voor deze maand: er kwamen geen metergegevens bij de gemeenschap aan.",
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
                made_on: date | None = None, binding: bool = False) -> str:
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
                                              # an oversized allocation never prints "391 %": at most all of it
                                              pct=format_percent(min(share, 1.0), lang) if share is not None else "–")
    savings = f.savings_eur
    if savings is not None:
        savings_value = format_eur(savings, lang)
        fee = format_eur(f.sharing_fee_eur, lang)
        if savings < 0:  # a member who loses money by sharing is told so
            savings_text = t["savings_loss"].format(eur=format_eur(-savings, lang), fee=fee,
                                                    grid=format_eur(f.grid_price, lang),
                                                    community=format_eur(f.community_price, lang))
        else:
            savings_text = t["savings_text"].format(eur=format_eur(savings, lang), grid=format_eur(f.grid_price, lang),
                                                    community=format_eur(f.community_price, lang))
            if f.sharing_fee_eur:
                savings_text += t["savings_fee"].format(fee=fee)
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
    if not f.quarter_hours and not f.import_wh and not f.export_wh and f.shared_wh is None:
        quality = [t["no_data"]]  # a month without data says so
    if f.estimated:
        quality.append(t["estimated"].format(n=f.estimated))
    to_grid = (f'<div class="figure"><div class="label">{e(t["to_grid"])}</div>'
               f'<div class="value">{e(format_kwh(f.export_wh, lang))}</div></div>') if f.export_wh else ""
    subtitle = " · ".join(x for x in (community, t["for"].format(name=name) if name else None) if x)
    legend = light_legend(lang)
    css = resources.files("services.sheet").joinpath("sheet.css").read_text(encoding="utf-8")
    page = resources.files("services.sheet").joinpath("sheet.html").read_text(encoding="utf-8")
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
        # the page's and the MQTT feed's words for the light (services/signal_words.py)
        light_green=e(legend[State.GREEN]),
        light_amber=e(legend[State.AMBER]),
        light_red=e(legend[State.RED]),
        light_blink=e(legend["blink"]),
        light_unsure=e(legend["unsure"]),

        quality=e(" ".join(quality)),
        provisional=e(t["binding" if binding else "provisional"]),
        footer=e(t["footer"].format(meter=f.meter_id, date=(made_on or date.today()).isoformat())),
    )

"""A member's statement as a printed page (French, Dutch, English), through the sheet's Chromium path.

One PDF per member: numbered ``<operation>-<first day>-<member's place in the statement>`` (the same
number for the same period and member on every run, so a re-print is recognisably the same
statement), dated the day it is made, with the community's details from the community file. The HTML
is built purely (:func:`render_member`); :func:`write_pdfs` writes it and prints it.
"""

from __future__ import annotations

import html
from datetime import date
from decimal import Decimal
from pathlib import Path

from services.allocation.model import Community, Operation
from services.community.statement import MemberStatement, Statement

TEXT: dict[str, dict[str, str]] = {
    "en": {"title": "Statement of shared energy", "no": "Statement no.", "date": "Date", "period": "Period",
           "member": "Member", "operation": "Sharing operation", "received": "Shared energy received",
           "injected": "Your production shared with the members", "item": "Item", "kwh": "kWh",
           "unit": "Price per kWh", "vat": "VAT", "amount": "Amount excl. VAT", "vat_amount": "VAT amount",
           "total_excl": "Total excl. VAT", "total": "Total", "advances": "Advances paid",
           "balance_owed": "Balance to pay", "balance_credit": "Balance in your favour",
           "basis_binding": "Figures of the grid operator (binding).",
           "basis_provisional": "Provisional figures measured by the community; the grid operator's figures will replace them.",
           "basis_mixed": "Partly the grid operator's figures (binding), partly provisional figures.",
           "savings": "Your savings", "company": "Company no.", "exempt": "VAT exempt (small business scheme)",
           "shared": "Shared energy", "producer": "Shared injection (producer)", "from": "from",
           "rule": "Each amount is rounded to the cent once; VAT is computed per line."},
    "fr": {"title": "Décompte de l'énergie partagée", "no": "Décompte n°", "date": "Date", "period": "Période",
           "member": "Membre", "operation": "Opération de partage", "received": "Énergie partagée reçue",
           "injected": "Votre production partagée avec les membres", "item": "Poste", "kwh": "kWh",
           "unit": "Prix par kWh", "vat": "TVA", "amount": "Montant HTVA", "vat_amount": "Montant TVA",
           "total_excl": "Total HTVA", "total": "Total TVAC", "advances": "Acomptes versés",
           "balance_owed": "Solde à payer", "balance_credit": "Solde en votre faveur",
           "basis_binding": "Chiffres du gestionnaire de réseau (définitifs).",
           "basis_provisional": "Chiffres provisoires mesurés par la communauté ; ceux du gestionnaire de réseau les remplaceront.",
           "basis_mixed": "En partie les chiffres du gestionnaire de réseau (définitifs), en partie provisoires.",
           "savings": "Vos économies", "company": "N° d'entreprise", "exempt": "Exempté de TVA (régime de franchise)",
           "shared": "Énergie partagée", "producer": "Injection partagée (producteur)", "from": "à partir du",
           "rule": "Chaque montant est arrondi au cent une seule fois ; la TVA est calculée par ligne."},
    "nl": {"title": "Afrekening gedeelde energie", "no": "Afrekening nr.", "date": "Datum", "period": "Periode",
           "member": "Lid", "operation": "Deelinitiatief", "received": "Ontvangen gedeelde energie",
           "injected": "Uw productie gedeeld met de leden", "item": "Post", "kwh": "kWh",
           "unit": "Prijs per kWh", "vat": "Btw", "amount": "Bedrag excl. btw", "vat_amount": "Btw-bedrag",
           "total_excl": "Totaal excl. btw", "total": "Totaal incl. btw", "advances": "Betaalde voorschotten",
           "balance_owed": "Te betalen saldo", "balance_credit": "Saldo in uw voordeel",
           "basis_binding": "Cijfers van de netbeheerder (definitief).",
           "basis_provisional": "Voorlopige cijfers gemeten door de gemeenschap; die van de netbeheerder vervangen ze.",
           "basis_mixed": "Deels cijfers van de netbeheerder (definitief), deels voorlopig.",
           "savings": "Uw besparing", "company": "Ondernemingsnr.", "exempt": "Vrijgesteld van btw (vrijstellingsregeling)",
           "shared": "Gedeelde energie", "producer": "Gedeelde injectie (producent)", "from": "vanaf",
           "rule": "Elk bedrag wordt één keer op de cent afgerond; de btw wordt per lijn berekend."},
}

SAVINGS = {
    "en": ("Had your supplier delivered these kWh, they would have cost {avoided} €; the community charges {charged} € "
           "and your supplier's sharing fee for the period is {fee} €.", "Sharing saved you {net} €.",
           "Sharing cost you {loss} € over this period: your supplier's sharing fee is more than you save."),
    "fr": ("Fournis par votre fournisseur, ces kWh auraient coûté {avoided} € ; la communauté facture {charged} € et "
           "les frais de partage de votre fournisseur pour la période sont de {fee} €.",
           "Le partage vous a fait économiser {net} €.",
           "Le partage vous a coûté {loss} € sur cette période : les frais de partage de votre fournisseur "
           "dépassent ce que vous économisez."),
    "nl": ("Geleverd door uw leverancier hadden deze kWh {avoided} € gekost; de gemeenschap rekent {charged} € aan en "
           "de deelkosten van uw leverancier voor de periode bedragen {fee} €.", "Delen heeft u {net} € bespaard.",
           "Delen heeft u deze periode {loss} € gekost: de deelkosten van uw leverancier zijn hoger dan wat u bespaart."),
}

CSS = """@page { size: A4; margin: 15mm; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 10.5pt; color: #111; }
header { display: flex; justify-content: space-between; border-bottom: 1mm solid #1b5e20; padding-bottom: 3mm; }
h1 { font-size: 17pt; margin: 4mm 0 2mm; } .meta td { padding: 0 4mm 0 0; }
table.lines { border-collapse: collapse; width: 100%; margin: 4mm 0; }
table.lines th, table.lines td { border-bottom: 0.3mm solid #999; padding: 1.2mm 1.5mm; text-align: right; }
table.lines td + td { white-space: nowrap; }
table.lines th:first-child, table.lines td:first-child { text-align: left; }
tr.total td { font-weight: bold; border-bottom: 0.6mm solid #111; }
.balance { font-size: 14pt; font-weight: bold; margin: 3mm 0; } .small { font-size: 8.5pt; color: #444; }
.savings { border: 0.5mm solid #1b5e20; padding: 2mm 3mm; margin-top: 4mm; } .loss { border-color: #a00; }
"""


NBSP = "\u00a0"  # between thousands and before %: a printed 1 234,567 kWh must not break after the 1


def _num(x: Decimal, lang: str, places: int = 3) -> str:
    s = f"{x:,.{places}f}"
    return s if lang == "en" else s.replace(",", NBSP).replace(".", ",")


def _eur(x: Decimal, lang: str) -> str:
    return _num(x, lang, 2)


def _rate(x: Decimal, lang: str) -> str:
    """A VAT rate as a percentage with the digits it has (5.5 %, not 6 %)."""
    s = f"{(x * 100).normalize():f}"
    return (s if lang == "en" else s.replace(".", ",")) + f"{NBSP}%"


def number(st: Statement, member: str) -> str:
    place = list(st.members).index(member) + 1
    return f"{st.operation}-{st.first:%Y%m%d}-{place:03d}"


def render_member(st: Statement, ms: MemberStatement, community: Community, op: Operation, lang: str,
                  made_on: date) -> str:
    t = TEXT[lang]
    e = html.escape
    details = [community.name or community.id, community.address,
               f"{t['company']} {community.company_number}" if community.company_number else "",
               community.iban and f"IBAN {community.iban}", community.email]
    rows = []
    for ln in ms.lines:
        label = {"shared": t["shared"], "producer": t["producer"]}.get(ln.component, ln.label.split(" (from ")[0])
        if " (from " in ln.label:
            label += f" ({t['from']} {ln.price_from.isoformat()})"
        rows.append(f"<tr><td>{e(label)}</td><td>{_num(ln.kwh, lang)}</td><td>{_num(ln.unit_price_eur, lang, 4)}</td>"
                    f"<td>{_rate(ln.vat_rate, lang)}</td><td>{_eur(ln.amount_excl_vat_eur, lang)}</td>"
                    f"<td>{_eur(ln.vat_eur, lang)}</td></tr>")
    by_rate = ms.vat_by_rate()
    per_rate = "".join(  # the VAT per rate under the total, when the lines have two (a consumer-producer's)
        f"<tr class=rate><td>{t['vat']}</td><td></td><td></td><td>{_rate(rate, lang)}</td>"
        f"<td>{_eur(base, lang)}</td><td>{_eur(vat, lang)}</td></tr>" for rate, (base, vat) in by_rate.items()
    ) if len(by_rate) > 1 else ""
    exempt = any(v.vat == "exempt" for v in op.prices)
    balance = ms.balance_eur
    saving = ""
    if ms.savings is not None:
        s = ms.savings
        intro, good, bad = SAVINGS[lang]
        text = intro.format(avoided=_eur(s["supplier_energy_eur"], lang), charged=_eur(s["community_charges_eur"], lang),
                            fee=_eur(s["supplier_sharing_fee_eur"], lang))
        verdict = bad.format(loss=_eur(-s["net_eur"], lang)) if s["loses_money"] else good.format(net=_eur(s["net_eur"], lang))
        saving = (f'<div class="savings{" loss" if s["loses_money"] else ""}"><b>{t["savings"]}</b><p>{e(text)}</p>'
                  f"<p><b>{e(verdict)}</b></p></div>")
    return f"""<!doctype html><html lang="{lang}"><meta charset="utf-8"><title>{e(t['title'])} {e(number(st, ms.member))}</title>
<style>{CSS}</style><body>
<header><div>{'<br>'.join(e(d) for d in details if d)}</div>
<table class=meta><tr><td>{t['no']}</td><td><b class=number>{e(number(st, ms.member))}</b></td></tr>
<tr><td>{t['date']}</td><td class=date>{made_on.isoformat()}</td></tr>
<tr><td>{t['period']}</td><td>{st.first.isoformat()} – {st.last.isoformat()}</td></tr></table></header>
<h1>{e(t['title'])}</h1>
<p>{t['member']}: <b>{e(ms.name or ms.member)}</b> ({e(ms.member)}) · {t['operation']}: {e(op.name or op.id)}</p>
<p>{t['received']}: <b>{_num(Decimal(ms.received_wh) / 1000, lang)} kWh</b>""" + (
        f" · {t['injected']}: <b>{_num(Decimal(ms.injection_wh) / 1000, lang)} kWh</b>" if ms.injection_wh else "") + f"""</p>
<table class=lines><tr><th>{t['item']}</th><th>{t['kwh']}</th><th>{t['unit']}</th><th>{t['vat']}</th>
<th>{t['amount']}</th><th>{t['vat_amount']}</th></tr>{''.join(rows)}
<tr class=total><td>{t['total_excl']} / {t['vat']}</td><td></td><td></td><td></td><td>{_eur(ms.total_excl_vat_eur, lang)}</td>
<td>{_eur(ms.vat_eur, lang)}</td></tr>{per_rate}</table>
<p>{t['total']}: <b>{_eur(ms.total_eur, lang)} €</b> · {t['advances']}: {_eur(ms.advances_eur, lang)} €</p>
<p class=balance>{t['balance_owed'] if balance >= 0 else t['balance_credit']}: {_eur(abs(balance), lang)} €</p>
<p>{e(t['basis_' + ms.basis])}</p>{saving}
<p class=small>{e(t['rule'])}{' ' + e(t['exempt']) if exempt else ''}</p>
</body></html>"""


def write_pdfs(st: Statement, community: Community, op: Operation, out: Path, lang: str, made_on: date,
               only: str | None = None) -> list[Path]:
    """One HTML and one PDF per member (or only that one) in ``out``; the PDFs' paths."""
    from services.pdf import print_pdf

    made = []
    for member, ms in st.members.items():
        if only is not None and member != only:
            continue
        stem = f"statement-{number(st, member)}-{member}-{lang}"
        page = out / f"{stem}.html"
        page.write_text(render_member(st, ms, community, op, lang, made_on), encoding="utf-8")
        pdf = out / f"{stem}.pdf"
        print_pdf(page, pdf)
        made.append(pdf)
    return made

"""A statement as JSON (the machine's), CSV (the accountant's) and the figures a page needs. Pure.

JSON numbers are written from the exact decimals (a value rounded to the cent prints as such); the
CSV writes them as text with a dot, one row per line of every member, then its totals, so it imports
as it is into a spreadsheet or an accounting package.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from services.community.statement import Line, MemberStatement, Statement

KWH = Decimal(1000)


def _num(x: Decimal) -> float | int:
    """A JSON number with the decimal's digits (float's shortest repr round-trips every value here)."""
    return int(x) if x == x.to_integral_value() and x.as_tuple().exponent >= 0 else float(x)


def _line(ln: Line) -> dict[str, Any]:
    return {"label": ln.label, "component": ln.component, "price_from": ln.price_from.isoformat(),
            "kwh": _num(ln.kwh), "unit_price_eur": _num(ln.unit_price_eur), "vat_rate": _num(ln.vat_rate),
            "amount_excl_vat_eur": _num(ln.amount_excl_vat_eur), "vat_eur": _num(ln.vat_eur)}


def member_dict(ms: MemberStatement) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": ms.name, "received_kwh": _num(Decimal(ms.received_wh) / KWH),
        "shared_injection_kwh": _num(Decimal(ms.injection_wh) / KWH),
        "lines": [_line(ln) for ln in ms.lines],
        "total_excl_vat_eur": _num(ms.total_excl_vat_eur), "vat_eur": _num(ms.vat_eur),
        "total_eur": _num(ms.total_eur), "advances_eur": _num(ms.advances_eur),
        "balance_eur": _num(ms.balance_eur), "basis": ms.basis, "member_days": ms.days,
        "savings": None,
    }
    if ms.savings is not None:
        s = ms.savings
        out["savings"] = {k: (_num(v) if isinstance(v, Decimal) else v) for k, v in s.items()}
        out["savings"]["note"] = savings_note(s)
    return out


def savings_note(s: dict[str, Any]) -> str:
    net = s["net_eur"]
    if s["loses_money"]:
        return (f"Sharing cost you {-net:.2f} EUR over this period: your supplier's sharing fee "
                f"({s['supplier_sharing_fee_eur']:.2f} EUR) and the community's charges are more than the "
                f"{s['supplier_energy_eur']:.2f} EUR the shared energy would have cost from your supplier.")
    return f"Sharing saved you about {net:.2f} EUR over this period (network costs are paid either way)."


def to_dict(st: Statement, community: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "operation": st.operation,
        "community": community or {},
        "period": {"from": st.first.isoformat(), "to": st.last.isoformat()},
        "basis": st.basis,
        "rounding": "each line's amount rounded to the cent (half up) once, its VAT rounded per line; "
                    "a member's VAT is the sum of its lines' VAT",
        "members": {m: member_dict(ms) for m, ms in st.members.items()},
        "totals": {"received_kwh": _num(Decimal(st.received_wh) / KWH),
                   "shared_injection_kwh": _num(Decimal(st.injection_wh) / KWH),
                   "total_excl_vat_eur": _num(sum((m.total_excl_vat_eur for m in st.members.values()), Decimal(0))),
                   "vat_eur": _num(sum((m.vat_eur for m in st.members.values()), Decimal(0)))},
    }


CSV_HEADER = ("operation", "period_from", "period_to", "member", "basis", "row", "label", "kwh", "unit_price_eur",
              "vat_rate", "amount_excl_vat_eur", "vat_eur", "amount_incl_vat_eur")


def to_csv(st: Statement) -> str:
    """One row per line, then per member its advances, total and balance (``row`` says which)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    head = (st.operation, st.first.isoformat(), st.last.isoformat())
    for m, ms in st.members.items():
        for ln in ms.lines:
            w.writerow((*head, m, ms.basis, "line", ln.label, str(ln.kwh), str(ln.unit_price_eur), str(ln.vat_rate),
                        str(ln.amount_excl_vat_eur), str(ln.vat_eur), str(ln.amount_excl_vat_eur + ln.vat_eur)))
        w.writerow((*head, m, ms.basis, "total", "Total", str(Decimal(ms.received_wh) / KWH), "", "",
                    str(ms.total_excl_vat_eur), str(ms.vat_eur), str(ms.total_eur)))
        w.writerow((*head, m, ms.basis, "advances", "Advances paid", "", "", "", "", "", str(-ms.advances_eur)))
        w.writerow((*head, m, ms.basis, "balance", "Balance", "", "", "", "", "", str(ms.balance_eur)))
    return buf.getvalue()

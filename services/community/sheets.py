"""Monthly sheets for every member of an operation from the server's figures (« fiches mensuelles »,
« maandfiches »): for members without a Pi or a screen, printed and handed out.

The same sheet as the node's ``quartier sheet`` (``services.sheet``: layout, fr/nl/en words), filled
from the ledger: the member's quarter-hours as its meter sent them, its provisional allocation, or
the grid operator's binding figure once ``quartier community reconcile`` imported it (then the sheet
says the figures are official). A member with no data that month gets a sheet that says so.
"""

from __future__ import annotations

import dataclasses
import html
import re
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from services.allocation.model import Operation
from services.community.ledger import Ledger
from services.sheet.figures import AllocatedQuarter, SheetFigures, month_bounds, month_figures
from services.sheet.render import render_html


@dataclass(frozen=True)
class MemberSheet:
    member: str
    name: str
    lang: str
    figures: SheetFigures
    binding: bool
    html: str


def member_sheets(ledger: Ledger, op: Operation, month: str, *, community: str | None = None,
                  default_lang: str = "fr", made_on: date | None = None, grid_price: float | None = None,
                  community_price: float | None = None) -> list[MemberSheet]:
    """One sheet per member of ``op`` (observers are no members: none for them), in file order."""
    tz = ZoneInfo(op.timezone)
    first, nxt = month_bounds(month, tz)
    totals = ledger.allocation_totals(op.id, first, nxt)
    out = []
    for m in op.members:
        if m.role == "observer":
            continue
        qhs = ledger.member_quarter_hours(op.id, m.id, first, nxt)
        alloc = [AllocatedQuarter(s, r, g) for s, r, g in ledger.member_allocations(op.id, m.id, first, nxt)]
        f = month_figures(
            meter_id=m.meter or m.id, month=month, tz=tz, import_wh=sum(i for _, i, _ in qhs),
            export_wh=sum(e for _, _, e in qhs), quarter_hours=len(qhs),
            expected_quarter_hours=int((nxt.timestamp() - first.timestamp()) // 900), estimated=0,
            days_with_data=len({s.astimezone(tz).date() for s, _, _ in qhs}), own_quarter_hours=qhs,
            allocation=alloc if m.receives else None, grid_price=grid_price, community_price=community_price)
        grid = (totals.get(m.id) or {}).get("grid_received_wh")
        binding = grid is not None
        if binding:  # the grid operator's figure replaces the provisional one
            f = dataclasses.replace(f, shared_wh=int(grid))
        lang = m.language or default_lang
        name = m.name or m.id
        page = render_html(f, lang, name=name, community=community, made_on=made_on, binding=binding)
        out.append(MemberSheet(m.id, name, lang, f, binding, page))
    return out


def combined_html(sheets: list[MemberSheet]) -> str:
    """All the sheets in one document, one A4 page each (to print the whole operation at once)."""
    head = sheets[0].html.split("<body>", 1)[0]
    bodies = []
    for s in sheets:
        body = s.html.split("<body>", 1)[1].rsplit("</body>", 1)[0]
        bodies.append(re.sub(r'<main class="sheet">', f'<main class="sheet" lang="{html.escape(s.lang)}">', body, count=1))
    return (head.replace("</head>", "<style>main.sheet{break-after:page;page-break-after:always}</style></head>")
            + "<body>" + "\n".join(bodies) + "</body></html>\n")


def write_sheets(sheets: list[MemberSheet], out: Path, combined_name: str, *, pdf: bool = True) -> list[Path]:
    """``out/<member>.pdf`` for each member and ``out/<combined_name>.pdf`` with them all (or .html)."""
    from services.pdf import print_pdf

    out.mkdir(parents=True, exist_ok=True)
    written = []
    docs = [(s.member, s.html) for s in sheets] + ([(combined_name, combined_html(sheets))] if sheets else [])
    with tempfile.TemporaryDirectory(prefix="quartier-sheets-") as tmp:
        for stem, page in docs:
            if not pdf:
                target = out / f"{stem}.html"
                target.write_text(page, encoding="utf-8")
            else:
                src = Path(tmp) / f"{stem}.html"
                src.write_text(page, encoding="utf-8")
                target = out / f"{stem}.pdf"
                print_pdf(src, target)
            written.append(target)
    return written

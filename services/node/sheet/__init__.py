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

Modules: ``services.sheet`` (shared with the community server's ``quartier community sheets``:
``figures``, pure, data in, figures out; ``render``, the words and the self-contained HTML page;
and ``services.pdf``, headless Chromium, shared with the statements), and ``command`` here (``quartier sheet``: the node's store in, HTML or PDF out).
"""

from services.node.sheet.command import chromium, figures_from_store, print_pdf, register
from services.sheet.figures import (
    BEST_SHARE,
    LANGS,
    MIN_SURPLUS_WH,
    AllocatedQuarter,
    SheetFigures,
    allocation_for_member,
    best_hours,
    hourly_profile,
    month_bounds,
    month_figures,
)
from services.sheet.render import TEXT, format_eur, format_hours, format_kwh, format_percent, render_html

__all__ = [
    "BEST_SHARE", "LANGS", "MIN_SURPLUS_WH", "TEXT", "AllocatedQuarter", "SheetFigures", "allocation_for_member",
    "best_hours", "chromium", "figures_from_store", "format_eur", "format_hours", "format_kwh", "format_percent",
    "hourly_profile", "month_bounds", "month_figures", "print_pdf", "register", "render_html",
]

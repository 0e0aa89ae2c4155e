"""``quartier sheet``: read the store (and optionally a provisional allocation), write the page, print
it to PDF with headless Chromium."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.dates import DateInputError, parse_month
from services.sheet.figures import (
    LANGS,
    AllocatedQuarter,
    SheetFigures,
    allocation_for_member,
    month_bounds,
    month_figures,
)
from services.sheet.render import render_html
from services.pdf import PdfError, chromium  # noqa: F401 - chromium: this module's name for it since the start
from services.pdf import print_pdf as _print_pdf

# -- I/O: the store, Chromium ----------------------------------------------------------------------


def figures_from_store(store, meter_id: str, month: str, *, allocation: Sequence[AllocatedQuarter] | None,
                       grid_price: float | None, community_price: float | None,
                       sharing_fee_eur_year: float | None = None) -> SheetFigures:
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
        sharing_fee_eur_year=sharing_fee_eur_year,
    )


def print_pdf(html_path: Path, pdf_path: Path, *, browser: str | None = None, timeout_s: float = 120) -> None:
    """Headless Chromium prints the page (services/pdf.py, shared with the community's statements)."""
    try:
        _print_pdf(html_path, pdf_path, browser=browser, timeout_s=timeout_s)
    except PdfError as exc:
        raise SystemExit(f"quartier sheet: {exc}") from None


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
    p.add_argument("--sharing-fee", type=float, metavar="EUR",
                   help="EUR per year your supplier charges for taking part in sharing "
                        "(default web.supplier_sharing_fee_eur_year); deducted from the savings")
    p.add_argument("--out", type=Path, help="HTML file to write (default sheet-<meter>-<month>-<lang>.html)")
    p.add_argument("--pdf", type=Path, metavar="FILE", help="also print the sheet to this PDF with headless Chromium")
    p.set_defaults(func=cmd_sheet)


def _open_store(path: Path, timezone_name: str):
    from services.node.web.history import ReadOnlyStore

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
    fee = args.sharing_fee
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
        fee = fee if fee is not None else cfg.web.supplier_sharing_fee_eur_year
    elif args.db is not None:
        db = args.db
    else:
        raise SystemExit("quartier sheet: give --config FILE or --db STORE")
    lang = lang or "en"
    for flag, value in (("--grid-price", grid), ("--community-price", community)):
        if value is not None and not (0 <= value < 10 and math.isfinite(value)):
            raise SystemExit(f"quartier sheet: {flag} {value}: a price in EUR per kWh, e.g. 0.32")
    if fee is not None and not (0 <= fee <= 10_000 and math.isfinite(fee)):
        raise SystemExit(f"quartier sheet: --sharing-fee {fee}: EUR per year, e.g. 121")
    store = _open_store(db, tz_name)
    try:
        month = args.month or _previous_month(store.tz)
        try:
            datetime.strptime(month, "%Y-%m")
        except ValueError:
            raise SystemExit(f"quartier sheet: --month {month!r}: expected YYYY-MM, e.g. 2026-06") from None
        try:
            parse_month(month, "--month")  # 0001-01 or 9999-12 would overflow a month's bounds
        except DateInputError as exc:
            raise SystemExit(f"quartier sheet: {exc}") from None
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
                                     community_price=community, sharing_fee_eur_year=fee)
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

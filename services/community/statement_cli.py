"""``quartier community statement``: every member's statement of a period, as JSON, CSV or PDF.

    quartier community statement --config server.toml --operation op1 --period 2026-06 --format json
    quartier community statement --config ... --operation op1 --period 2026 --format csv --out DIR
    quartier community statement --config ... --operation op1 --period 2026-03-15..2026-06-30 --format pdf \\
        --out DIR [--lang fr|nl|en] [--member ID]

The period is in the operation's local time: a month, a year, or two days (both included). The
figures come from the server's ledger (``server.database``), read-only, whether the server runs or
not. JSON goes to stdout unless ``--out`` is given; CSV and PDF go to ``--out`` (CSV: stdout without).
"""

from __future__ import annotations

import argparse
import calendar
import json
import re
import sys
from datetime import date, datetime, timezone
from pathlib import Path

from gateway.dates import DateInputError, check_day
from services.languages import LANGS

USER_ERROR = 2
FORMATS = ("json", "csv", "pdf")


def _fail(message: str) -> int:
    print(f"quartier community statement: {message}", file=sys.stderr)
    return USER_ERROR


def parse_period(value: str) -> tuple[date, date]:
    """``YYYY-MM``, ``YYYY`` or ``FROM..TO`` (``YYYY-MM-DD``, both included) -> (first, last) day."""
    v = value.strip()
    try:
        if m := re.fullmatch(r"(\d{4})-(\d{2})", v):
            y, mo = int(m.group(1)), int(m.group(2))
            first, last = date(y, mo, 1), date(y, mo, calendar.monthrange(y, mo)[1])
        elif re.fullmatch(r"\d{4}", v):
            first, last = date(int(v), 1, 1), date(int(v), 12, 31)
        elif m := re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", v):
            first, last = date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2))
        else:
            raise ValueError("expected YYYY-MM, YYYY or YYYY-MM-DD..YYYY-MM-DD")
        check_day(first, "--period")
        check_day(last, "--period")
    except (ValueError, DateInputError) as exc:
        raise ValueError(f"--period {value!r}: {exc}") from None
    if last < first:
        raise ValueError(f"--period {value!r}: ends before it starts")
    return first, last


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    ps = sub.add_parser("statement", parents=[common], help="members' statements (décompte) of a period",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ps.add_argument("--operation", required=True)
    ps.add_argument("--period", required=True, help="YYYY-MM, YYYY or YYYY-MM-DD..YYYY-MM-DD (local time)")
    ps.add_argument("--format", default="json", help="json (default), csv or pdf")
    ps.add_argument("--out", type=Path, help="directory for the files (needed for pdf)")
    ps.add_argument("--lang", default="fr", help="the PDF's language: fr (default), nl or en")
    ps.add_argument("--member", help="only this member (pdf)")
    ps.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from services.community.cli import _load, _operation

    if args.format not in FORMATS:
        return _fail(f"--format {args.format!r}: one of {', '.join(FORMATS)}")
    if args.lang not in LANGS:
        return _fail(f"--lang {args.lang!r}: one of {', '.join(LANGS)}")
    try:
        first, last = parse_period(args.period)
    except ValueError as exc:
        return _fail(str(exc))
    cfg, community = _load(args)
    from services.community.prices import PriceError
    from services.community.statement import compute, local_bounds
    from services.community.statement_data import LedgerReadError, read_period
    from services.community.statement_format import to_csv, to_dict

    op = _operation(community, args.operation, _fail)
    if args.member is not None and all(m.id != args.member for m in op.members):
        return _fail(f"--member {args.member!r}: not a member of {op.id}")
    start, end = local_bounds(first, last, op.timezone)
    try:
        prov, received, injection = read_period(cfg.server.database, op.id, start, end)
        st = compute(op, first, last, prov, received, injection)
    except (LedgerReadError, PriceError) as exc:
        return _fail(str(exc))
    if args.member is not None and args.format != "pdf":  # a PDF keeps its number: filtered when written
        st.members = {k: v for k, v in st.members.items() if k == args.member}
    details = {"id": community.id, "name": community.name, "address": community.address,
               "company_number": community.company_number, "iban": community.iban, "email": community.email}
    stem = f"statement-{op.id}-{args.period.replace('..', '_')}"
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _fail(f"--out {args.out}: {exc.strerror}")
    if args.format == "json":
        text = json.dumps(to_dict(st, details), indent=1, ensure_ascii=False) + "\n"
        return _emit(text, args.out, f"{stem}.json")
    if args.format == "csv":
        return _emit(to_csv(st), args.out, f"{stem}.csv")
    if args.out is None:
        return _fail("--format pdf needs --out DIR")
    from services.community.statement_pdf import write_pdfs
    from services.pdf import PdfError

    try:
        made = write_pdfs(st, community, op, args.out, args.lang, datetime.now(timezone.utc).date(), args.member)
    except PdfError as exc:
        return _fail(str(exc))
    for path in made:
        print(f"wrote {path}")
    return 0


def _emit(text: str, out: Path | None, name: str) -> int:
    if out is None:
        sys.stdout.write(text)
        return 0
    (out / name).write_text(text, encoding="utf-8")
    print(f"wrote {out / name}")
    return 0

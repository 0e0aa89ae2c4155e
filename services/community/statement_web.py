"""The operator API's statement answer: the same computation as ``quartier community statement``."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from fastapi.responses import HTMLResponse

from services.allocation.model import Community, Operation


def statement_response(op: Operation, community_id: str, community: Community | None, db: Path, period: str,
                       member: str | None, fmt: str, lang: str = "fr") -> Any:
    from services.community.prices import PriceError
    from services.community.statement import compute, local_bounds
    from services.community.statement_cli import parse_period
    from services.community.statement_data import LedgerReadError, read_period
    from services.community.statement_format import to_dict
    from services.community.statement_pdf import render_member

    try:
        first, last = parse_period(period)
    except ValueError as exc:
        raise HTTPException(422, str(exc).replace("--period", "period")) from None
    try:
        st = compute(op, first, last, *read_period(db, op.id, *local_bounds(first, last, op.timezone)))
    except (LedgerReadError, PriceError) as exc:
        raise HTTPException(409, str(exc)) from None
    if member is not None and member not in st.members:
        raise HTTPException(404, f"no statement for member {member!r} in {period}")
    details = community or Community.model_construct(id=community_id, name="", address="", company_number="",
                                                     iban="", email="", operations=[op])
    if fmt == "html":
        if member is None:
            raise HTTPException(422, "format=html needs a member")
        return HTMLResponse(render_member(st, st.members[member], details, op, lang,
                                          datetime.now(timezone.utc).date()))
    out = to_dict(st, {"id": details.id, "name": details.name})
    if member is not None:
        out["members"] = {member: out["members"][member]}
    return out

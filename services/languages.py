"""The languages Quartier speaks (fr, nl, en: Belgium's and the Netherlands' communities) and how a
browser's ``Accept-Language`` picks one. Shared by the node's page and the operator page, which
must not import each other."""

from __future__ import annotations

import re

LANGS = ("fr", "nl", "en")

_Q = re.compile(r"q=([0-9.]+)")


def browser_language(accept_language: str | None) -> str | None:
    """The first of :data:`LANGS` in an ``Accept-Language`` header by its q order (ties: as listed),
    or None; ``q=0`` means "not this one"."""
    ranked = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if m := _Q.search(params):
            try:
                q = float(m.group(1))
            except ValueError:
                q = 0.0
        ranked.append((-q, i, tag[:2].lower()))
    return next((tag for neg_q, _i, tag in sorted(ranked) if tag in LANGS and neg_q < 0), None)

"""Reconciliation: the grid operator's binding allocation file replaces the provisional figures.

Grid operators deliver a monthly file per sharing operation: one row per access point (EAN) and
quarter-hour (or per month) with the shared energy allocated to it. Formats differ per operator and
change over time, so the import is driven by a *column mapping* instead of code per operator:

========================  ========================================================================
mapping field             meaning
========================  ========================================================================
``delimiter``             field separator (``;`` in most Belgian exports)
``decimal``               decimal mark of the energy column (``,`` or ``.``)
``ean``                   column holding the access point's EAN
``start``                 column holding the quarter-hour (or month) start, local time
``start_format``          ``strptime`` format of ``start`` (e.g. ``%d/%m/%Y %H:%M``, ``%Y-%m``)
``received``              column holding the shared energy allocated to the access point
``unit``                  ``kWh`` or ``Wh``
``timezone``              zone of ``start`` (``Europe/Brussels``)
========================  ========================================================================

``MAPPINGS`` holds the presets; ``generic`` is Quartier's own export format. Mappings for a specific
grid operator's file (Fluvius, ORES, Sibelga, ...) must be written from a real sample of that file:
they go in the server's config (``[reconcile.mappings.<name>]``) with the same fields.

Pure: parsing and the difference report take text and return values; the ledger stores them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo


class ReconcileError(ValueError):
    """A file that does not match its mapping (line and column named)."""


@dataclass(frozen=True)
class ColumnMapping:
    ean: str
    start: str
    received: str
    start_format: str
    unit: str = "kWh"
    delimiter: str = ";"
    decimal: str = ","
    timezone: str = "Europe/Brussels"

    def __post_init__(self) -> None:
        if self.unit not in ("kWh", "Wh"):
            raise ReconcileError(f"mapping unit {self.unit!r}: kWh or Wh")


MAPPINGS: dict[str, ColumnMapping] = {
    # Quartier's own format (documented in docs/fleet.md): ean;start;received_kwh, quarter-hour rows
    "generic": ColumnMapping(ean="ean", start="start", received="received_kwh", start_format="%Y-%m-%d %H:%M"),
    # the same with one row per member and month
    "generic-monthly": ColumnMapping(ean="ean", start="month", received="received_kwh", start_format="%Y-%m"),
}


@dataclass(frozen=True, slots=True)
class GridRow:
    ean: str
    start: datetime  # UTC
    received_wh: int


def parse_grid_file(text: str, mapping: ColumnMapping) -> list[GridRow]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), delimiter=mapping.delimiter)
    cols = set(reader.fieldnames or ())
    for need in (mapping.ean, mapping.start, mapping.received):
        if need not in cols:
            raise ReconcileError(f"column {need!r} not in the file's header ({', '.join(sorted(cols)) or 'empty'})")
    tz = ZoneInfo(mapping.timezone)
    scale = Decimal(1000) if mapping.unit == "kWh" else Decimal(1)
    out: list[GridRow] = []
    for line, row in enumerate(reader, start=2):
        raw = (row[mapping.received] or "").strip().replace(" ", "")
        if mapping.decimal == ",":
            raw = raw.replace(".", "").replace(",", ".")
        try:
            wh = Decimal(raw) * scale
        except InvalidOperation:
            raise ReconcileError(f"line {line}: {mapping.received} = {row[mapping.received]!r} is not a number") from None
        if wh < 0:
            raise ReconcileError(f"line {line}: {mapping.received} is negative")
        try:
            local = datetime.strptime((row[mapping.start] or "").strip(), mapping.start_format)
        except ValueError:
            raise ReconcileError(
                f"line {line}: {mapping.start} = {row[mapping.start]!r} does not match {mapping.start_format!r}") from None
        out.append(GridRow((row[mapping.ean] or "").strip(), local.replace(tzinfo=tz).astimezone(timezone.utc),
                           int(wh.to_integral_value())))
    return out


def to_members(rows: list[GridRow], meters: Mapping[str, str]) -> tuple[list[tuple[str, datetime, int]], list[str]]:
    """(member, start, Wh) rows for the ledger, and the EANs that are no member of the operation."""
    known, unknown = [], []
    for r in rows:
        member = meters.get(r.ean)
        if member is None:
            unknown.append(r.ean)
        else:
            known.append((member, r.start, r.received_wh))
    return known, sorted(set(unknown))


def differences(totals: Mapping[str, Mapping[str, int]]) -> list[dict[str, object]]:
    """Per member: provisional vs binding received energy over the period, and the difference."""
    out = []
    for member in sorted(totals):
        t = totals[member]
        prov, grid = t.get("received_wh"), t.get("grid_received_wh")
        out.append({
            "member": member, "provisional_wh": prov, "grid_wh": grid,
            "difference_wh": None if prov is None or grid is None else prov - grid,
        })
    return out

"""Reconciliation (*afrekening*, *décompte*): the grid operator's binding allocation file replaces
the provisional figures.

Grid operators deliver a monthly file per sharing operation: rows per access point (EAN) and
quarter-hour (or per month) with the shared energy allocated to it. Formats differ per operator and
change over time, so the import is driven by a declarative *column mapping* instead of code per
operator:

=====================  ===========================================================================
mapping field          meaning
=====================  ===========================================================================
``delimiter``          field separator (``;`` in most Belgian exports)
``decimal``            decimal mark of the energy column (``,`` or ``.``); with ``,`` a ``.`` is a
                       thousands separator
``ean``                column holding the access point's EAN (Excel's ``="541..."`` is unwrapped)
``start``              column holding the quarter-hour (or month) start, local time
``start_time``         optional: a separate column holding the start's time of day; ``start`` and
                       ``start_time`` are joined with one space before ``start_format`` applies
``start_format``       ``strptime`` format of the start (e.g. ``%d-%m-%Y %H:%M:%S``, ``%Y-%m``); with
                       ``%z`` the file states the UTC offset and ``timezone`` is not needed for it
``period``             ``quarter-hour`` or ``month``: what one row covers (checked against start)
``received``           column holding the energy
``unit``               ``kWh`` or ``Wh``, when the file has no unit column
``unit_column``        optional: column holding each row's unit (``kWh``/``Wh``)
``register``           optional: column naming what a row measures (register, volume type)
``registers``          with ``register``: the values that make up the shared energy received;
                       other rows are skipped, the selected ones are summed per (EAN, start)
``empty``              an empty energy cell is an ``error`` (default), ``zero``, or ``skip``ped
``timezone``           zone of the local start (``Europe/Brussels``)
``injection``          optional: column holding a producer's shared injection on the same row (read
                       when the file has it; the generic presets name ``shared_injection_kwh``)
``injection_registers`` with ``register``: the values that make up a producer's shared injection
                       (Sibelga's ``Injection Partagée``); their value column goes to the injection
=====================  ===========================================================================

Both sides: the statement bills members for the shared energy received and credits producers for
their shared injection; with both imported, the binding figures replace the provisional ones on
each side (``quartier community reconcile --inspect FILE`` proposes a mapping from a file).

Local time and the October fall-back: the local hour 02:00-03:00 happens twice. A file in local time
without an offset lists it twice, summer time first (the order the Mijn Fluvius export uses, see
below): the first row of an (EAN, register, local start) is the summer-time quarter-hour, the second
the winter-time one (a row with an empty energy cell still takes its place); a third is an error, as is
a local time that does not exist (the March gap) or a repeated non-ambiguous row. A file that lists a
repeated time once is read as summer time: only a stated offset (``%z``) can say otherwise.

Presets (``MAPPINGS``), each written from a layout found in real files or real code:

* ``generic``, ``generic-monthly``: Quartier's own format (docs/fleet.md).
* ``fluvius-verbruikshistoriek``: the Mijn Fluvius "verbruikshistoriek" quarter-hour CSV export
  (``Van (datum);Van (tijdstip);Tot (datum);Tot (tijdstip);EAN-code;Meter;Metertype;Register;Volume;
  Eenheid;Validatiestatus``, one row per register, ``dd-mm-yyyy`` and ``HH:MM:SS``, decimal comma).
* ``fluvius-verbruikshistoriek-2021``: the same export with its older header (``Van datum;Van
  tijdstip;...;EAN;...``).
  Which *register* of a Fluvius export holds the shared energy (*gedeelde energie*) of an energy
  sharing group is not documented in anything found; the registers seen in real files are ``Afname
  Dag``, ``Afname Nacht``, ``Injectie Dag``, ``Injectie Nacht`` (metered offtake/injection, not the
  shared part). So the two Fluvius presets carry the layout only: a config mapping names the
  register(s) from the operator's own file, ``[reconcile.mappings.fluvius] base =
  "fluvius-verbruikshistoriek"`` and ``registers = ["..."]``; without it the import refuses.
* Sibelga (Brussels): its quarter-hour energy-community file is an Excel workbook with the columns
  ``Date Début``, ``EAN``, ``Type de volume`` (``Consommation Partagée`` = shared energy received,
  ``Consommation Réseau``, ``Injection Partagée``, ``Injection Réseau``) and ``Volume (kWh)``, read by
  third-party code found in the public code index (stored file id 53201964212, repository not
  named there). The date's textual form once saved as CSV is not documented, so there is no preset: a
  config mapping with ``register = "Type de volume"``, ``registers = ["Consommation Partagée"]`` and
  the ``start_format`` of the saved file does it.
* ORES (Wallonia, *partage d'énergie* / CER): no documented layout or real sample was found; no preset.

User-defined mappings go in the community server's config as ``[reconcile.mappings.<name>]`` with the
same fields (and optionally ``base = "<preset>"`` to start from a preset); ``quartier community
reconcile --mapping NAME`` looks there first, then in the presets.

Central store: :func:`binding_lines` turns imported binding figures into InfluxDB line protocol; a
re-import that changes a figure gets a new *revision*, written one second after the previous one
(never a different value at the same series and timestamp, which VictoriaMetrics does not overwrite
reliably). The binding figure of a quarter-hour (month) is the last point in it.

Pure: parsing, the difference report and the line builder take values and return values; the
ledger stores them, :func:`push_binding` only calls what it is given.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.community.central import revision_timestamp, tag

QUARTER = timedelta(minutes=15)
PERIODS = ("quarter-hour", "month")
EMPTY = ("error", "zero", "skip")


class ReconcileError(ValueError):
    """A file that does not match its mapping (line and column named), or a bad mapping (field named)."""


@dataclass(frozen=True)
class ColumnMapping:
    """How to read one operator's file (see the module docstring for each field)."""

    ean: str
    start: str
    received: str
    start_format: str
    unit: str = "kWh"
    delimiter: str = ";"
    decimal: str = ","
    timezone: str = "Europe/Brussels"
    start_time: str | None = None
    period: str = "quarter-hour"
    unit_column: str | None = None
    register: str | None = None
    registers: tuple[str, ...] = field(default=())
    empty: str = "error"
    injection: str | None = None
    injection_registers: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "registers", tuple(self.registers))
        object.__setattr__(self, "injection_registers", tuple(self.injection_registers))
        if self.injection_registers and not self.register:
            raise ReconcileError("injection_registers: needs register (the column the values are looked up in)")
        if self.unit not in ("kWh", "Wh"):
            raise ReconcileError(f"unit = {self.unit!r}: kWh or Wh")
        if self.period not in PERIODS:
            raise ReconcileError(f"period = {self.period!r}: one of {', '.join(PERIODS)}")
        if self.empty not in EMPTY:
            raise ReconcileError(f"empty = {self.empty!r}: one of {', '.join(EMPTY)}")
        if self.decimal not in (",", "."):
            raise ReconcileError(f"decimal = {self.decimal!r}: ',' or '.'")
        if len(self.delimiter) != 1:
            raise ReconcileError(f"delimiter = {self.delimiter!r}: one character")
        if self.registers and not self.register:
            raise ReconcileError("registers: needs register (the column the values are looked up in)")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ReconcileError(f"timezone = {self.timezone!r}: not a known time zone (e.g. Europe/Brussels)") from None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for c in (self.ean, self.start, self.start_time, self.received, self.unit_column,
                                 self.register) if c)


MAPPING_FIELDS = tuple(f.name for f in fields(ColumnMapping))

MAPPINGS: dict[str, ColumnMapping] = {
    # Quartier's own format (documented in docs/fleet.md): ean;start;received_kwh, quarter-hour rows
    # (and shared_injection_kwh, a producer's shared injection, when the file has the column)
    "generic": ColumnMapping(ean="ean", start="start", received="received_kwh", start_format="%Y-%m-%d %H:%M",
                             injection="shared_injection_kwh"),
    # the same with one row per member and month
    "generic-monthly": ColumnMapping(ean="ean", start="month", received="received_kwh", start_format="%Y-%m",
                                     period="month", injection="shared_injection_kwh"),
    # Mijn Fluvius "verbruikshistoriek" quarter-hour export, current header. Layout from real code:
    # the header list in a Fluvius CSV builder (public code index, file id 58954822531, module
    # btm_sim.fluvius: "Van (datum)", "Van (tijdstip)", ..., "EAN-code", "Register", "Volume",
    # "Eenheid", "Validatiestatus"; dates "%d-%m-%Y", times "%H:%M:%S", EAN as ="...", decimal comma)
    # and a parser test using the same header (file id 69272862693, "Injectie Dag;1,0;kWh").
    # Registers: none documented for the shared volume, so none here (module docstring).
    "fluvius-verbruikshistoriek": ColumnMapping(
        ean="EAN-code", start="Van (datum)", start_time="Van (tijdstip)", start_format="%d-%m-%Y %H:%M:%S",
        received="Volume", unit_column="Eenheid", register="Register", empty="skip"),
    # The same export with its older header, from a real (anonymised) export in
    # patrickvorgers/Home-Assistant-Import-Energy-Data, "Datasources/Fluvius/Sample files/
    # Verbruikshistoriek_elektriciteit_123456789123456789_20211012_20240929_kwartiertotalen.csv":
    # "Van datum;Van tijdstip;Tot datum;Tot tijdstip;EAN;Meter;Metertype;Register;Volume;Eenheid;
    # Validatiestatus"; empty Volume with "Geen verbruik"; on 31-10-2021 each 02:xx row appears twice,
    # summer time first (the order rule above).
    "fluvius-verbruikshistoriek-2021": ColumnMapping(
        ean="EAN", start="Van datum", start_time="Van tijdstip", start_format="%d-%m-%Y %H:%M:%S",
        received="Volume", unit_column="Eenheid", register="Register", empty="skip"),
}


def build_mapping(values: Mapping[str, object], presets: Mapping[str, ColumnMapping] = MAPPINGS) -> ColumnMapping:
    """A mapping from config values: ``base`` (a preset) overridden by the given fields.

    Errors name the field (``ReconcileError("registers: ...")``)."""
    values = {k: v for k, v in values.items() if v is not None}
    base_name = values.pop("base", None)
    unknown = sorted(set(values) - set(MAPPING_FIELDS))
    if unknown:
        raise ReconcileError(f"{unknown[0]}: unknown mapping field (have: {', '.join(MAPPING_FIELDS)})")
    if base_name is not None:
        base = presets.get(str(base_name))
        if base is None:
            raise ReconcileError(f"base = {base_name!r}: no such preset (have: {', '.join(sorted(presets))})")
        return replace(base, **values)
    missing = [f for f in ("ean", "start", "received", "start_format") if f not in values]
    if missing:
        raise ReconcileError(f"{missing[0]}: required (or base = \"<preset>\")")
    return ColumnMapping(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class GridRow:
    ean: str
    start: datetime  # UTC
    received_wh: int
    end: datetime | None = None  # UTC; None = start + 15 min
    injection_wh: int | None = None  # a producer's shared injection, when the file gives it

    @property
    def stop(self) -> datetime:
        return self.end if self.end is not None else self.start + QUARTER


def _ean(raw: str) -> str:
    s = raw.strip()
    if s.startswith('="') and s.endswith('"'):  # Excel's "keep as text" escape
        s = s[2:-1]
    return s.strip().replace(" ", "")


def _number(raw: str, decimal: str) -> Decimal:
    s = raw.strip().replace(" ", "").replace("\u00a0", "")
    if decimal == ",":
        s = s.replace(".", "").replace(",", ".")
    else:
        s = s.replace(",", "")
    return Decimal(s)


def _is_ambiguous(local: datetime, tz: ZoneInfo) -> bool:
    return local.replace(tzinfo=tz, fold=0).utcoffset() != local.replace(tzinfo=tz, fold=1).utcoffset()


def _exists(local: datetime, tz: ZoneInfo) -> bool:
    aware = local.replace(tzinfo=tz)
    return aware.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) == local


def _month_end(local: datetime) -> datetime:
    return local.replace(year=local.year + (local.month == 12), month=local.month % 12 + 1)


def parse_grid_file(text: str, mapping: ColumnMapping) -> list[GridRow]:
    """One row per (EAN, start) with the selected energy summed, in Wh, sorted by (start, EAN)."""
    if mapping.register and not mapping.registers:
        raise ReconcileError(
            f"mapping: registers not set: name the value(s) of column {mapping.register!r} that hold the shared "
            "energy received (a [reconcile.mappings.<name>] section with base and registers)")
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), delimiter=mapping.delimiter)
    cols = {c.strip() for c in (reader.fieldnames or ())}
    if reader.fieldnames:
        reader.fieldnames = [c.strip() for c in reader.fieldnames]
    for need in mapping.columns:
        if need not in cols:
            raise ReconcileError(f"column {need!r} not in the file's header ({', '.join(sorted(cols)) or 'empty'})")
    tz = ZoneInfo(mapping.timezone)
    wanted = set(mapping.registers) | set(mapping.injection_registers)
    injection_column = mapping.injection if mapping.injection in cols else None  # optional: one side only
    seen: dict[tuple[str, str, datetime], int] = {}  # (ean, register, local start) -> occurrences
    sums: dict[tuple[datetime, str], Decimal] = {}
    injected: dict[tuple[datetime, str], Decimal] = {}
    ends: dict[tuple[datetime, str], datetime] = {}
    for line, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # a blank line (trailing ones are common)
        register = (row[mapping.register] or "").strip() if mapping.register else ""
        if mapping.register and register not in wanted:
            continue
        stamp = (row[mapping.start] or "").strip()
        if mapping.start_time:
            stamp = f"{stamp} {(row[mapping.start_time] or '').strip()}"
        try:
            parsed = datetime.strptime(stamp, mapping.start_format)
        except ValueError:
            where = f"{mapping.start} + {mapping.start_time}" if mapping.start_time else mapping.start
            raise ReconcileError(f"line {line}: {where} = {stamp!r} does not match {mapping.start_format!r}") from None
        ean = _ean(row[mapping.ean] or "")
        if not ean:
            raise ReconcileError(f"line {line}: {mapping.ean} is empty")
        if parsed.tzinfo is not None:  # the file states the offset: no guessing
            start = parsed.astimezone(timezone.utc)
            local = start.astimezone(tz).replace(tzinfo=None)
            key = (ean, register, start)
            if key in seen:
                raise ReconcileError(f"line {line}: {ean} {register} {stamp} repeated")
            seen[key] = 1
        else:
            local = parsed
            if not _exists(local, tz):
                raise ReconcileError(f"line {line}: {stamp} does not exist in {mapping.timezone} (clocks go forward)")
            key = (ean, register, local)
            n = seen.get(key, 0)
            if n and not (n == 1 and _is_ambiguous(local, tz)):
                raise ReconcileError(f"line {line}: {ean} {register} {stamp} repeated")
            seen[key] = n + 1
            start = local.replace(tzinfo=tz, fold=n).astimezone(timezone.utc)
        if mapping.period == "month":
            if (local.day, local.hour, local.minute, local.second) != (1, 0, 0, 0):
                raise ReconcileError(f"line {line}: {stamp} is not the start of a month")
            end = _month_end(local).replace(tzinfo=tz).astimezone(timezone.utc)
        else:
            if local.minute % 15 or local.second or parsed.microsecond:
                raise ReconcileError(f"line {line}: {stamp} is not the start of a quarter-hour")
            end = start + QUARTER
        raw = (row[mapping.received] or "").strip()
        if not raw:
            if mapping.empty == "error":
                raise ReconcileError(f"line {line}: {mapping.received} is empty")
            if mapping.empty == "skip":  # after the occurrence count: it still was that quarter-hour
                continue
            raw = "0"
        try:
            energy = _number(raw, mapping.decimal)
        except InvalidOperation:
            raise ReconcileError(f"line {line}: {mapping.received} = {row[mapping.received]!r} is not a number") from None
        unit = (row[mapping.unit_column] or "").strip() if mapping.unit_column else mapping.unit
        if unit.lower() not in ("kwh", "wh"):
            raise ReconcileError(f"line {line}: {mapping.unit_column} = {unit!r}: kWh or Wh")
        scale = Decimal(1000) if unit.lower() == "kwh" else Decimal(1)
        wh = energy * scale
        if wh < 0:
            raise ReconcileError(f"line {line}: {mapping.received} is negative")
        k = (start, ean)
        if register and register in mapping.injection_registers:
            injected[k] = injected.get(k, Decimal(0)) + wh
        else:
            sums[k] = sums.get(k, Decimal(0)) + wh
        if injection_column is not None and (cell := (row[injection_column] or "").strip()):
            try:
                inj = _number(cell, mapping.decimal) * scale
            except InvalidOperation:
                raise ReconcileError(f"line {line}: {injection_column} = {cell!r} is not a number") from None
            if inj < 0:
                raise ReconcileError(f"line {line}: {injection_column} is negative")
            injected[k] = injected.get(k, Decimal(0)) + inj
        ends[k] = end
    keys = sorted(set(sums) | set(injected))
    return [GridRow(ean, start, int(sums.get((start, ean), Decimal(0)).to_integral_value()), ends[(start, ean)],
                    int(injected[(start, ean)].to_integral_value()) if (start, ean) in injected else None)
            for start, ean in keys]


def to_members(rows: list[GridRow], meters: Mapping[str, str]) -> tuple[list[tuple[str, datetime, int, datetime]], list[str]]:
    """(member, start, Wh, end) rows for the ledger, and the EANs that are no member of the operation."""
    known, unknown = [], []
    for r in rows:
        member = meters.get(r.ean)
        if member is None:
            unknown.append(r.ean)
        else:
            known.append((member, r.start, r.received_wh, r.stop, r.injection_wh))
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


# -- central store -------------------------------------------------------------------------------

def binding_lines(measurement: str, rows: Sequence[tuple]) -> list[str]:
    """Line protocol (seconds) for ledger rows (operation, member, start_s, revision, received_wh,
    provisional_wh | None): ``<measurement>_binding,operation=..,member=.. received_wh=..i,
    provisional_received_wh=..i,revision=..i <start + revision - 1>`` (why: services/community/central.py)."""
    name = tag(f"{measurement}_binding")
    out = []
    for op, member, start, revision, wh, prov in rows:
        fields_ = f"received_wh={int(wh)}i"
        if prov is not None:
            fields_ += f",provisional_received_wh={int(prov)}i"
        fields_ += f",revision={int(revision)}i"
        out.append(f"{name},operation={tag(op)},member={tag(member)} {fields_} {revision_timestamp(int(start), int(revision))}")
    return out


class BindingQueue(Protocol):
    """What :func:`push_binding` needs of the ledger."""

    def unpushed_binding(self, limit: int = ...) -> list[tuple]: ...

    def mark_binding_pushed(self, keys: Sequence[tuple[str, str, int, int]]) -> None: ...


def push_binding(ledger: BindingQueue, write: Callable[[str], None], measurement: str, limit: int = 5000) -> int:
    """Write the ledger's unpushed binding figures with ``write(lines)`` and mark them pushed.

    ``write`` raises on failure; nothing is marked then, so the next attempt (the server's pusher or
    another ``reconcile`` run) writes the same points again: identical series, timestamp and value."""
    total = 0
    while True:
        rows = ledger.unpushed_binding(limit)
        if not rows:
            return total
        write("\n".join(binding_lines(measurement, rows)))
        ledger.mark_binding_pushed([(op, m, start, rev) for op, m, start, rev, *_ in rows])
        total += len(rows)
        if len(rows) < limit:
            return total

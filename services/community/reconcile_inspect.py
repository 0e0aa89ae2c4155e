"""``quartier community reconcile --inspect FILE``: read any operator's CSV and propose a mapping. Pure.

Fluvius, ORES and Sibelga exports all differ (services/community/reconcile.py), so a community starts
from its own file: the separator, the columns, the first rows, and a guess for each mapping field
from the values themselves (an 18-digit EAN, dates and times and their format, a number column and its
decimal mark, a unit column, a column of register names with its distinct values). The proposal is a
``[reconcile.mappings.<name>]`` section to check and paste into the server's config; a field it could
not guess is left as a comment saying so.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Any

DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M",
                "%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d-%m-%Y", "%d/%m/%Y",
                "%Y-%m-%d", "%Y-%m")
TIME_FORMATS = ("%H:%M:%S", "%H:%M")
RECEIVED_WORDS = ("partag", "gedeeld", "shared", "deel")
CONSUMPTION_WORDS = ("consom", "afname", "received", "prélèv", "preleve", "offtake", "import")
INJECTION_WORDS = ("injec", "export")


def _ean(v: str) -> bool:
    return bool(re.fullmatch(r'(="?)?\s*54\d{16}"?', v.strip()))


def _fmt(values: Sequence[str], formats: Sequence[str]) -> str | None:
    from datetime import datetime

    for f in formats:
        try:
            for v in values:
                datetime.strptime(v.strip(), f)
        except ValueError:
            continue
        return f
    return None


def _number(values: Sequence[str]) -> str | None:
    """The decimal mark of a column of numbers, or None if it is not one."""
    vals = [v.strip() for v in values if v.strip()]
    if not vals or not all(re.fullmatch(r"-?[\d .,]+", v) for v in vals):
        return None
    return "," if any("," in v for v in vals) and not any(re.search(r"\.\d{1,2}$", v) for v in vals) else "."


def inspect(text: str, sample: int = 5, name: str = "mine") -> dict[str, Any]:
    """The file's layout and a proposed mapping."""
    text = text.lstrip("\ufeff")
    head = "\n".join(text.splitlines()[:20])
    try:
        delimiter = csv.Sniffer().sniff(head, delimiters=";,\t|").delimiter
    except csv.Error:
        delimiter = ";"
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return {"delimiter": delimiter, "columns": [], "rows": [], "mapping": {}, "toml": "", "unsure": ["empty file"]}
    header = [c.strip() for c in rows[0]]
    body = rows[1:201]
    col = {h: [r[i] if i < len(r) else "" for r in body] for i, h in enumerate(header)}
    mapping: dict[str, Any] = {"delimiter": delimiter}
    unsure: list[str] = []
    for h, vals in col.items():
        filled = [v for v in vals if v.strip()]
        if filled and "ean" not in mapping and all(_ean(v) for v in filled):
            mapping["ean"] = h
    date_cols = [(h, f) for h, vals in col.items() if (filled := [v for v in vals if v.strip()])
                 and (f := _fmt(filled[:50], DATE_FORMATS))]
    if date_cols:
        h, f = date_cols[0]
        mapping["start"] = h
        time_cols = [(t, tf) for t, vals in col.items() if t != h and (filled := [v for v in vals if v.strip()])
                     and (tf := _fmt(filled[:50], TIME_FORMATS))]
        if time_cols and "%H" not in f:
            mapping["start_time"], tf = time_cols[0]
            f = f"{f} {tf}"
        mapping["start_format"] = f
        if f == "%Y-%m":
            mapping["period"] = "month"
    unit_cols = [h for h, vals in col.items() if vals and all(v.strip().lower() in ("kwh", "wh", "") for v in vals)
                 and any(v.strip() for v in vals)]
    if unit_cols:
        mapping["unit_column"] = unit_cols[0]
    used = {mapping.get(k) for k in ("ean", "start", "start_time", "unit_column")}
    numbers = [(h, d) for h, vals in col.items() if h not in used and (d := _number(vals))]
    # register: a text column with few distinct values, none of them a number
    registers = [h for h, vals in col.items() if h not in used and h not in {n for n, _ in numbers}
                 and 1 < len({v.strip() for v in vals if v.strip()}) <= 12]
    if registers:
        reg = registers[0]
        values = sorted({v.strip() for v in col[reg] if v.strip()})
        mapping["register"] = reg
        lower = {v: v.lower() for v in values}
        shared = [v for v in values if any(w in lower[v] for w in RECEIVED_WORDS)]
        rec = [v for v in shared if any(w in lower[v] for w in CONSUMPTION_WORDS)]
        inj = [v for v in shared if any(w in lower[v] for w in INJECTION_WORDS)]
        if rec:
            mapping["registers"] = rec
        else:
            unsure.append(f"registers: which of {', '.join(values)} is the shared energy received")
        if inj:
            mapping["injection_registers"] = inj
        mapping["_register_values"] = values
    for h, d in numbers:
        low = h.lower()
        if any(w in low for w in INJECTION_WORDS) and "injection" not in mapping and "received" in mapping:
            mapping["injection"] = h
        elif "received" not in mapping:
            mapping["received"] = h
            mapping["decimal"] = d
    for need in ("ean", "start", "start_format", "received"):
        if need not in mapping:
            unsure.append(f"{need}: not found from the values")
    if "unit_column" not in mapping:
        unsure.append("unit: kWh assumed (no unit column); set unit = \"Wh\" if the figures are in Wh")
    if any(not v.strip() for vals in (col.get(mapping.get("received", ""), []),) for v in vals):
        mapping["empty"] = "skip"
    return {"delimiter": delimiter, "columns": header, "rows": body[:sample], "mapping": mapping,
            "toml": to_toml(mapping, name, unsure), "unsure": unsure}


def _q(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_toml(mapping: dict[str, Any], name: str, unsure: Sequence[str]) -> str:
    lines = [f"[reconcile.mappings.{name}]"]
    for key in ("ean", "start", "start_time", "start_format", "period", "received", "injection", "unit_column",
                "register", "registers", "injection_registers", "empty", "delimiter", "decimal"):
        if key in mapping:
            v = mapping[key]
            lines.append(f"{key} = " + ("[" + ", ".join(_q(x) for x in v) + "]" if isinstance(v, list) else _q(str(v))))
    if "_register_values" in mapping:
        lines.append(f"# values of {mapping['register']}: {', '.join(mapping['_register_values'])}")
    lines += [f"# to check: {u}" for u in unsure]
    return "\n".join(lines) + "\n"

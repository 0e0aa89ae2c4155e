"""Sizing simulation: run several allocation keys over a year of quarter-hour data, side by side.

The field's lesson (Verviers pilot): simulate before you share. Sharing rate and self-sufficiency
swing from month to month, and only a year of data says which key suits a community. This module
reads the data (one CSV column per member), runs every key through the engine, and reports monthly
and whole-period figures for the operation and each member as a text table, a CSV file and a chart.

Data file (CSV, ``,`` or ``;``; with ``;`` a decimal comma is accepted)::

    start,ecole,hangar,boulangerie,...
    2025-01-01T00:00:00+01:00,-120,0,412,...

- ``start``: the quarter-hour's start, ISO 8601. Without an offset it is local time in the
  operation's time zone; the repeated hour of the autumn change is read in order (summer time first).
- ``<id>``: one column per member, energy in the quarter-hour: a consumer's net import, a producer's
  net injection, and for a member that is both, the signed net volume (positive = import, negative =
  injection). ``<id>.import`` and ``<id>.export`` columns give the two registers separately.
- Values in Wh (``--unit kWh`` for kWh), rounded to whole Wh; an empty cell counts as 0 and is
  reported. Every member needs its column(s); a column that is not a member is refused.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

import numpy as np

from services.allocation import PRESETS, AllocationInputError, Operation, allocate, ratio
from services.allocation.engine import QUARTER_S

KeyChoice = tuple[str, tuple[str, ...]]  # (label, rounds)
Progress = Callable[[int, int, str], None]  # (done, total, label)


@dataclass(frozen=True)
class MeterData:
    """A period of quarter-hour volumes aligned with an operation's participants and producers."""

    source: str
    epoch: np.ndarray  # int64 [T] start of each quarter-hour, seconds since 1970 UTC, increasing
    member_ids: tuple[str, ...]
    producer_ids: tuple[str, ...]
    consumption: np.ndarray  # int64 [T, M] net import
    production: np.ndarray  # int64 [T, K] net injection
    missing: int  # empty cells taken as 0


def _split_line(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter))


def _parse_times(texts: Sequence[str], lines: Sequence[int], tz: ZoneInfo, source: str) -> np.ndarray:
    out = np.empty(len(texts), dtype=np.int64)
    prev: float | None = None
    for i, (text, line) in enumerate(zip(texts, lines, strict=True)):
        try:
            t = datetime.fromisoformat(text.strip())
        except ValueError:
            raise AllocationInputError(f"{source} line {line}", f"start {text!r} is not an ISO 8601 time") from None
        if t.tzinfo is None:
            local = t.replace(tzinfo=tz)
            ts = local.timestamp()
            if prev is not None and ts <= prev:  # the repeated hour in autumn: second pass is winter time
                ts = local.replace(fold=1).timestamp()
        else:
            ts = t.timestamp()
        prev = ts
        out[i] = math.floor(ts)
    return out


def parse_data(text: Iterable[str], operation: Operation, unit: str = "Wh", source: str = "data") -> MeterData:
    """Read CSV lines into volumes for ``operation`` (see the module docstring for the format)."""
    scale = {"wh": 1.0, "kwh": 1000.0}.get(unit.lower())
    if scale is None:
        raise AllocationInputError("--unit", f"unknown unit {unit!r} (Wh or kWh)")
    numbered = [(n, ln) for n, ln in enumerate(text, 1) if ln.strip()]
    if not numbered:
        raise AllocationInputError(source, "empty file")
    header_line = numbered[0][1].lstrip("\ufeff").rstrip("\r\n")
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    header = [h.strip() for h in _split_line(header_line, delimiter)]
    if len(header) < 2:
        raise AllocationInputError(f"{source} line {numbered[0][0]}", "expected a start column and one column per member")

    members = {m.id: m for m in operation.members}
    single: dict[str, int] = {}
    imports: dict[str, int] = {}
    exports: dict[str, int] = {}
    for col, name in enumerate(header[1:], 1):
        target, kind = name, "single"
        if name not in members:
            for suffix, k in ((".import", "import"), (".export", "export")):
                if name.endswith(suffix) and name[: -len(suffix)] in members:
                    target, kind = name[: -len(suffix)], k
        if target not in members:
            raise AllocationInputError(f"{source} column {name!r}", f"not a member of operation {operation.id!r}")
        table = {"single": single, "import": imports, "export": exports}[kind]
        if target in table or (kind == "single" and (target in imports or target in exports)) or (kind != "single" and target in single):
            raise AllocationInputError(f"{source} column {name!r}", f"member {target!r} has more than one column for the same volume")
        role = members[target].role
        if kind == "import" and role == "producer":
            raise AllocationInputError(f"{source} column {name!r}", f"{target!r} is a producer-only member: its import is not shared to")
        if kind == "export" and role == "consumer":
            raise AllocationInputError(
                f"{source} column {name!r}", f"{target!r} is a consumer in the operation; make it 'both' to share its injection"
            )
        table[target] = col
    for m in operation.members:
        if m.id in single:
            continue
        if m.receives and m.id not in imports:
            raise AllocationInputError(source, f"no column for member {m.id!r} (expected {m.id!r} or {m.id + '.import'!r})")
        if m.produces and m.id not in exports:
            raise AllocationInputError(source, f"no column for member {m.id!r} (expected {m.id!r} or {m.id + '.export'!r})")

    rows = numbered[1:]
    if not rows:
        raise AllocationInputError(source, "no data rows")
    starts: list[str] = []
    line_nos: list[int] = []
    values = np.full((len(rows), len(header) - 1), np.nan)
    width = len(header)
    for i, (n, ln) in enumerate(rows):
        cells = _split_line(ln.rstrip("\r\n"), delimiter)
        if len(cells) != width:
            raise AllocationInputError(f"{source} line {n}", f"{len(cells)} cells, the header has {width}")
        starts.append(cells[0])
        line_nos.append(n)
        for j, cell in enumerate(cells[1:]):
            cell = cell.strip()
            if not cell:
                continue
            if delimiter == ";":
                cell = cell.replace(",", ".")
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise AllocationInputError(f"{source} line {n}, column {header[j + 1]!r}", f"not a number: {cell!r}") from None
    if not np.all(np.isfinite(values[~np.isnan(values)])):
        bad = np.argwhere(np.isinf(values))[0]
        raise AllocationInputError(f"{source} line {line_nos[bad[0]]}, column {header[bad[1] + 1]!r}", "not a finite number")
    missing = int(np.isnan(values).sum())
    wh = np.rint(np.nan_to_num(values, nan=0.0) * scale).astype(np.int64)

    def column(col: int, what: str, member_id: str) -> np.ndarray:
        v = wh[:, col - 1]
        if v.size and v.min() < 0:
            i = int(np.argmax(v < 0))
            raise AllocationInputError(
                f"{source} line {line_nos[i]}, column {header[col]!r}",
                f"negative {what} {wh[i, col - 1]} for member {member_id!r} (a member that both imports and exports needs role 'both')",
            )
        return v

    cons_cols: list[np.ndarray] = []
    for mid in operation.participants:
        if mid in single and members[mid].role == "both":
            cons_cols.append(np.maximum(wh[:, single[mid] - 1], 0))
        elif mid in single:
            cons_cols.append(column(single[mid], "consumption", mid))
        else:
            cons_cols.append(column(imports[mid], "import", mid))
    prod_cols: list[np.ndarray] = []
    for mid in operation.producers:
        if mid in single and members[mid].role == "both":
            prod_cols.append(np.maximum(-wh[:, single[mid] - 1], 0))
        elif mid in single:
            prod_cols.append(column(single[mid], "injection", mid))
        else:
            prod_cols.append(column(exports[mid], "export", mid))

    epoch = _parse_times(starts, line_nos, ZoneInfo(operation.timezone), source)
    order = np.argsort(epoch, kind="stable")
    ep = epoch[order]
    if ep.size > 1 and np.any(np.diff(ep) == 0):
        i = int(np.argmax(np.diff(ep) == 0))
        raise AllocationInputError(source, f"lines {line_nos[order[i]]} and {line_nos[order[i + 1]]} have the same start")
    t = len(rows)
    cons = np.stack(cons_cols, axis=1)[order] if cons_cols else np.zeros((t, 0), dtype=np.int64)
    prod = np.stack(prod_cols, axis=1)[order] if prod_cols else np.zeros((t, 0), dtype=np.int64)
    return MeterData(source, ep, tuple(operation.participants), tuple(operation.producers), cons, prod, missing)


def read_data(path: str | Path, operation: Operation, unit: str = "Wh") -> MeterData:
    """Read a data file (see ``parse_data``)."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as fh:
        return parse_data(fh, operation, unit, source=str(path))


# --- simulation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyOutcome:
    """What one key gives, per month: received per participant, shared per producer (Wh)."""

    label: str
    rounds: tuple[str, ...]
    received: np.ndarray  # int64 [months, M]
    producer_shared: np.ndarray  # int64 [months, K]

    @property
    def shared(self) -> np.ndarray:
        return self.received.sum(axis=1)


@dataclass(frozen=True)
class Simulation:
    """Monthly volumes of the data and the outcome of each key; whole-period figures are sums."""

    operation: Operation
    data: MeterData
    months: list[str]  # "YYYY-MM", local months of the operation's time zone
    consumption: np.ndarray  # int64 [months, M]
    production: np.ndarray  # int64 [months, K]
    outcomes: list[KeyOutcome]

    @property
    def pool(self) -> np.ndarray:
        return self.production.sum(axis=1)

    @property
    def total_consumption(self) -> np.ndarray:
        return self.consumption.sum(axis=1)


def default_keys(operation: Operation) -> list[KeyChoice]:
    """The operation's own key first, then every preset (the specific one only when shares exist)."""
    rounds = operation.key_rounds
    label = next((name for name, r in PRESETS.items() if r == rounds), operation.key_label)
    own = (label, rounds)
    keys = [own]
    for name, rounds in PRESETS.items():
        if ("specific" in rounds or "mixed" in rounds) and operation.shares is None:
            continue
        if rounds != own[1]:
            keys.append((name, rounds))
    return keys


def month_index(epoch: np.ndarray, tz: ZoneInfo) -> tuple[list[str], np.ndarray]:
    """Local month label of each quarter-hour: ``(labels, start row of each month)``; rows sorted."""
    labels: list[str] = []
    starts: list[int] = []
    for i, ts in enumerate(epoch.tolist()):
        label = datetime.fromtimestamp(ts, tz).strftime("%Y-%m")
        if not labels or labels[-1] != label:
            labels.append(label)
            starts.append(i)
    return labels, np.array(starts, dtype=np.int64)


def _by_month(a: np.ndarray, starts: np.ndarray) -> np.ndarray:
    if a.shape[0] == 0 or a.shape[1] == 0:
        return np.zeros((len(starts), a.shape[1]), dtype=np.int64)
    return np.add.reduceat(a, starts, axis=0)


def simulate(operation: Operation, data: MeterData, keys: Sequence[KeyChoice], progress: Progress | None = None) -> Simulation:
    """Run each key over the data; ``progress(done, total, label)`` after each block of rows."""
    labels, starts = month_index(data.epoch, ZoneInfo(operation.timezone))
    slots = data.epoch // QUARTER_S
    t = data.epoch.size
    outcomes: list[KeyOutcome] = []
    for i, (label, rounds) in enumerate(keys):
        cb = None if progress is None else (lambda done, _total, i=i, label=label: progress(i * t + done, len(keys) * t, label))
        own = tuple(rounds) == operation.key_rounds
        settings = operation.settings
        if not own and settings.pool_fractions is not None:  # the operation's fractions are for its own rounds
            settings = settings.model_copy(update={"pool_fractions": None})
        res = allocate(
            data.consumption,
            data.production,
            rounds,
            member_ids=data.member_ids,
            producer_ids=data.producer_ids,
            shares=operation.shares if ("specific" in rounds or "mixed" in rounds) else None,
            settings=settings,
            slots=slots,
            progress=cb,
            round_shares=operation.round_shares if own else None,
        )
        outcomes.append(KeyOutcome(label, tuple(rounds), _by_month(res.allocated, starts), _by_month(res.producer_shared, starts)))
    return Simulation(operation, data, labels, _by_month(data.consumption, starts), _by_month(data.production, starts), outcomes)


# --- outputs -----------------------------------------------------------------------------------


def _kwh(wh: float) -> str:
    return f"{wh / 1000:,.0f}"


def _pct(x: float) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def _table(title: str, head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(head[c]), *(len(r[c]) for r in rows)) if rows else len(head[c]) for c in range(len(head))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(cell.ljust(widths[c]) if c == 0 else cell.rjust(widths[c]) for c, cell in enumerate(cells))

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([title, rule, fmt(head), rule, *(fmt(r) for r in rows), ""])


def _period(sim: Simulation) -> str:
    first = datetime.fromtimestamp(int(sim.data.epoch[0]), ZoneInfo(sim.operation.timezone))
    last = datetime.fromtimestamp(int(sim.data.epoch[-1]) + QUARTER_S, ZoneInfo(sim.operation.timezone))
    return f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} ({sim.operation.timezone})"


def format_report(sim: Simulation, member_months: bool = False) -> str:
    """The readable comparison: whole period, months, members, producers."""
    op = sim.operation
    labels = [o.label for o in sim.outcomes]
    pool_m, cons_m = sim.pool, sim.total_consumption
    pool, cons = int(pool_m.sum()), int(cons_m.sum())
    parts = [
        f"Operation {op.id}"
        + (f" — {op.name}" if op.name else "")
        + f": {len(op.members)} members ({len(op.participants)} receiving, {len(op.producers)} producing)",
        f"Data: {sim.data.source}, {sim.data.epoch.size} quarter-hours, {_period(sim)}"
        + (f", {sim.data.missing} empty cells counted as 0" if sim.data.missing else ""),
        "Keys: " + "; ".join(f"{o.label} = {' → '.join(o.rounds)}" for o in sim.outcomes) + f"  (operation's key: {op.key_label})",
        "",
    ]
    rows = [
        ["Pool (kWh)", *(_kwh(pool) for _ in labels)],
        ["Consumption (kWh)", *(_kwh(cons) for _ in labels)],
        ["Shared (kWh)", *(_kwh(o.shared.sum()) for o in sim.outcomes)],
        ["To grid (kWh)", *(_kwh(pool - o.shared.sum()) for o in sim.outcomes)],
        ["Sharing rate", *(_pct(ratio(o.shared.sum(), pool)) for o in sim.outcomes)],
        ["Self-sufficiency", *(_pct(ratio(o.shared.sum(), cons)) for o in sim.outcomes)],
    ]
    parts.append(_table("Whole period", ["", *labels], rows))
    for title, den in (("Sharing rate by month (shared / pool)", pool_m), ("Self-sufficiency by month (shared / consumption)", cons_m)):
        rows = [
            [month, _kwh(pool_m[i]), _kwh(cons_m[i]), *(_pct(ratio(o.shared[i], den[i])) for o in sim.outcomes)]
            for i, month in enumerate(sim.months)
        ]
        parts.append(_table(title, ["Month", "Pool kWh", "Cons. kWh", *labels], rows))
    cons_j = sim.consumption.sum(axis=0)
    rows = [[mid, _kwh(cons_j[j]), *(_kwh(o.received[:, j].sum()) for o in sim.outcomes)] for j, mid in enumerate(sim.data.member_ids)]
    parts.append(_table("Energy received per member (kWh over the period)", ["Member", "Cons. kWh", *labels], rows))
    rows = [[mid, *(_pct(ratio(o.received[:, j].sum(), cons_j[j])) for o in sim.outcomes)] for j, mid in enumerate(sim.data.member_ids)]
    parts.append(_table("Self-sufficiency per member (received / consumption)", ["Member", *labels], rows))
    if sim.data.producer_ids:
        inj = sim.production.sum(axis=0)
        rows = [
            [pid, _kwh(inj[k]), *(_pct(ratio(o.producer_shared[:, k].sum(), inj[k])) for o in sim.outcomes)]
            for k, pid in enumerate(sim.data.producer_ids)
        ]
        parts.append(_table("Sharing rate per producer (its injection shared / injected)", ["Producer", "Inj. kWh", *labels], rows))
    if member_months:
        for o in sim.outcomes:
            rows = [
                [mid, *(_pct(ratio(o.received[i, j], sim.consumption[i, j])) for i in range(len(sim.months)))]
                for j, mid in enumerate(sim.data.member_ids)
            ]
            parts.append(_table(f"Self-sufficiency per member and month — {o.label}", ["Member", *sim.months], rows))
    return "\n".join(parts)


CSV_COLUMNS = (
    "key", "rounds", "scope", "id", "period", "consumption_wh", "received_wh",
    "injection_wh", "shared_wh", "to_grid_wh", "sharing_rate", "self_sufficiency",
)  # fmt: skip


def _csv_rate(num: float, den: float) -> str:
    return f"{num / den:.6f}" if den else ""


def write_csv(sim: Simulation, out: TextIO) -> None:
    """Every figure in long form: one row per key × scope (operation or member) × period.

    ``period`` is a month (``2025-01``) or ``total``. Operation rows: consumption, shared (as
    received), pool (as injection), to grid, both rates. Member rows: consumption, received and
    self-sufficiency for a receiving member; injection, shared, to grid and sharing rate for a
    producing one. Rates are fractions with 6 decimals; empty where undefined or not applicable.
    """
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    op = sim.operation
    jidx = {mid: j for j, mid in enumerate(sim.data.member_ids)}
    kidx = {pid: k for k, pid in enumerate(sim.data.producer_ids)}
    periods = [(label, slice(i, i + 1)) for i, label in enumerate(sim.months)] + [("total", slice(None))]
    for o in sim.outcomes:
        rounds = ",".join(o.rounds)
        for label, sl in periods:
            pool = int(sim.pool[sl].sum())
            cons = int(sim.total_consumption[sl].sum())
            shared = int(o.shared[sl].sum())
            w.writerow(
                [
                    o.label,
                    rounds,
                    "operation",
                    op.id,
                    label,
                    cons,
                    shared,
                    pool,
                    shared,
                    pool - shared,
                    _csv_rate(shared, pool),
                    _csv_rate(shared, cons),
                ]
            )
        for m in op.members:
            for label, sl in periods:
                row: list[object] = [o.label, rounds, "member", m.id, label, "", "", "", "", "", "", ""]
                if m.id in jidx:
                    c = int(sim.consumption[sl, jidx[m.id]].sum())
                    r = int(o.received[sl, jidx[m.id]].sum())
                    row[5], row[6], row[11] = c, r, _csv_rate(r, c)
                if m.id in kidx:
                    g = int(sim.production[sl, kidx[m.id]].sum())
                    s = int(o.producer_shared[sl, kidx[m.id]].sum())
                    row[7], row[8], row[9], row[10] = g, s, g - s, _csv_rate(s, g)
                w.writerow(row)


def format_csv(sim: Simulation) -> str:
    buf = io.StringIO()
    write_csv(sim, buf)
    return buf.getvalue()


class ChartUnavailable(RuntimeError):
    """matplotlib (the optional 'charts' extra) is not installed."""


CHART_HINT = "the chart needs matplotlib: pip install 'quartier[charts]'"


def charts_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def write_chart(sim: Simulation, path: str | Path) -> None:
    """A PNG a community meeting can read: monthly rates per key, and what each member receives."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChartUnavailable(CHART_HINT) from None
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # no font-cache chatter in a command's output

    op = sim.operation
    months = sim.months
    x = np.arange(len(months))
    fig = plt.figure(figsize=(16, 10), dpi=110, layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.15])
    ax_rate, ax_self = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_members = fig.add_subplot(grid[1, :])
    pool, cons = int(sim.pool.sum()), int(sim.total_consumption.sum())
    styles = ("-", "--", "-.", ":")
    markers = ("o", "s", "^", "D", "v", "P", "X", "*")
    for i, o in enumerate(sim.outcomes):
        style = {"linestyle": styles[i % len(styles)], "marker": markers[i % len(markers)], "linewidth": 2}
        annual = f"{100 * ratio(o.shared.sum(), pool):.0f}% / {100 * ratio(o.shared.sum(), cons):.0f}%"
        ax_rate.plot(x, 100 * ratio(o.shared, sim.pool), label=f"{o.label} ({annual})", **style)
        ax_self.plot(x, 100 * ratio(o.shared, sim.total_consumption), label=o.label, **style)
    for ax, title in ((ax_rate, "Sharing rate by month: shared / pool"), (ax_self, "Self-sufficiency by month: shared / consumption")):
        ax.set_title(title, fontsize=13)
        ax.set_xticks(x, months, rotation=45, ha="right")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    ax_rate.legend(title="key (whole period: sharing / self-sufficiency)", fontsize=9)
    n_keys = len(sim.outcomes)
    members = sim.data.member_ids
    xm = np.arange(len(members))
    width = 0.8 / max(n_keys, 1)
    ax_members.bar(xm, sim.consumption.sum(axis=0) / 1000, 0.92, color="0.88", label="consumption")
    for i, o in enumerate(sim.outcomes):
        ax_members.bar(xm + (i - (n_keys - 1) / 2) * width, o.received.sum(axis=0) / 1000, width, label=o.label)
    ax_members.set_xticks(xm, members, rotation=45, ha="right")
    ax_members.set_ylabel("kWh over the period")
    ax_members.set_title("Shared energy each member would receive, per key (grey: its consumption)", fontsize=13)
    ax_members.legend(ncols=min(n_keys + 1, 8), fontsize=9)
    ax_members.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{op.name or op.id}: allocation keys compared — {_period(sim)}", fontsize=15)
    fig.savefig(path)
    plt.close(fig)


class ProgressBar:
    """A one-line bar on a terminal stream, redrawn at most once per percent."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self._last = -1

    def __call__(self, done: int, total: int, label: str) -> None:
        pct = 100 if total <= 0 else done * 100 // total
        if pct == self._last:
            return
        self._last = pct
        filled = self.width * pct // 100
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {pct:3d}% {label:<20}")
        self.stream.flush()

    def close(self) -> None:
        if self._last >= 0:
            self.stream.write("\n")
            self.stream.flush()


__all__ = [
    "CHART_HINT",
    "ChartUnavailable",
    "KeyOutcome",
    "MeterData",
    "ProgressBar",
    "Simulation",
    "charts_available",
    "default_keys",
    "format_csv",
    "format_report",
    "month_index",
    "parse_data",
    "read_data",
    "simulate",
    "write_chart",
    "write_csv",
]

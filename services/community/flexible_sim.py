"""What following the signal is worth, over a year of data: the members' flexible loads (community file,
``services/allocation/flexible.py``) at their usual time, and moved by the consume-now signal.

The data is taken as it is: it already holds every declared load at its usual time, so the "usual"
year is the data itself. The "moved" year takes each run out of its usual quarter-hours and puts it
where the signal says (``services/community/flexible.py``: the live signal computed from the
operation's totals in the same data, quarter-hour by quarter-hour, without foresight). Both years are
allocated with the operation's own key by the engine.

Taking a run out never makes a volume negative: a consumer's run is taken out only as far as its
import in those quarter-hours holds it (the rest is counted as not found in the data, and what was
found is what moves); a member with panels takes it out of its import first and adds the rest to its
injection (its panels were covering it). Put back, a prosumer's run first uses its own injection.

Euros per member (positive: following the signal saves money)::

    (import before - import after) x grid energy price          # its own panels now cover the load
  + (received after - received before) x (grid - shared price)  # more of it comes from the community
  + (its injection shared after - before) x producer price      # a producer's shared kWh paid

Prices: the member's ``supplier_energy_eur_kwh`` or ``--grid-price`` (default 0.15 EUR/kWh); the shared
price in force on the data's last day (shared price and levies, with VAT) from the operation's prices,
else 0.08 EUR/kWh; ``--price`` sets the value of a shared kWh (grid - shared) outright. Injection that is
not shared is valued at 0 (a conservative simplification).

Pure: numpy, the engine and the signal logic; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np

from services.allocation import Operation
from services.allocation.flexible import FlexibleLoadSetting
from services.community.flexible import FlexibleLoad, green_quarters, run_starts, spread
from services.community.simulate import MeterData, Simulation, simulate
from services.signal import SignalSettings

DEFAULT_GRID_EUR_KWH = 0.15  # a supplier's energy price incl. VAT (network costs are paid either way)
DEFAULT_SHARED_EUR_KWH = 0.08  # a community's shared price with levies and VAT


@dataclass(frozen=True)
class PriceChoice:
    """The prices used for the euros, and where they come from (printed with the figures)."""

    grid_eur_kwh: float = DEFAULT_GRID_EUR_KWH
    shared_eur_kwh: float = DEFAULT_SHARED_EUR_KWH
    producer_eur_kwh: float = 0.0
    value_eur_kwh: float | None = None  # --price: the value of one more shared kWh, overriding grid - shared
    source: str = "defaults"

    def shared_value(self, grid: float) -> float:
        return self.value_eur_kwh if self.value_eur_kwh is not None else grid - self.shared_eur_kwh


def choose_prices(op: Operation, on: date, grid: float | None = None, value: float | None = None) -> PriceChoice:
    """The operation's prices in force ``on`` that day when it has some, else the documented defaults."""
    version = next((v for v in reversed(op.prices) if v.valid_from <= on), None)
    base = PriceChoice(grid_eur_kwh=DEFAULT_GRID_EUR_KWH if grid is None else grid, value_eur_kwh=value)
    if version is not None:
        levies = sum((lv.eur_kwh for lv in version.levies), Decimal(0))
        shared = float((version.shared_eur_kwh + levies) * (1 + version.vat_rate))
        base = replace(base, shared_eur_kwh=shared, producer_eur_kwh=float(version.producer_eur_kwh),
                       source=f"the operation's prices from {version.valid_from}")
    if value is not None:
        base = replace(base, source=f"--price {value} EUR per shared kWh")
    return base


def loads_of(op: Operation) -> dict[str, list[FlexibleLoad]]:
    """The core's loads for each member that declares some (file order)."""
    out: dict[str, list[FlexibleLoad]] = {}
    for m in op.members:
        for s in m.flexible:
            out.setdefault(m.id, []).append(_load(m.id, s))
    return out


def _load(member: str, s: FlexibleLoadSetting) -> FlexibleLoad:
    q = FlexibleLoadSetting.quarter
    return FlexibleLoad(member, s.kind, energy_wh=s.energy_wh, duration_q=s.duration_q, usual=q(s.usual),
                        earliest=q(s.earliest), deadline=q(s.deadline), every_days=s.every_days)


@dataclass(frozen=True)
class Moved:
    """The data with the loads moved, and per member the Wh declared and the Wh actually moved."""

    data: MeterData
    declared_wh: dict[str, int]
    moved_wh: dict[str, int]
    runs: dict[str, int]
    green: np.ndarray


def move_loads(op: Operation, data: MeterData, settings: SignalSettings = SignalSettings()) -> Moved:
    """Take each declared run out of its usual quarter-hours and put it where the signal says."""
    pool = data.production.sum(axis=1)
    cons_total = data.consumption.sum(axis=1)
    green = green_quarters(data.epoch, pool, cons_total, settings)
    tz = ZoneInfo(op.timezone)
    cons = data.consumption.copy()
    prod = data.production.copy()
    jidx = {mid: j for j, mid in enumerate(data.member_ids)}
    kidx = {pid: k for k, pid in enumerate(data.producer_ids)}
    declared: dict[str, int] = {}
    moved: dict[str, int] = {}
    nruns: dict[str, int] = {}
    for mid, loads in loads_of(op).items():
        j, k = jidx.get(mid), kidx.get(mid)
        if j is None:
            continue  # a producer-only member has no import to move
        plan = [(load, u, s) for load in loads for u, s in run_starts(load, data.epoch, tz, green)]
        found: list[int] = []
        for load, u, _ in plan:  # every run out first, so one run's new slot cannot be taken out again
            got = 0
            for q, e in enumerate(spread(load), u):
                take = min(e, int(cons[q, j]))
                cons[q, j] -= take
                if k is not None and e > take:  # its panels were covering the rest
                    prod[q, k] += e - take
                    take = e
                got += take
            found.append(got)
        for (load, _, s), got in zip(plan, found, strict=True):
            for q, e in enumerate(spread(load, got), s):
                own = min(e, int(prod[q, k])) if k is not None else 0
                if k is not None:
                    prod[q, k] -= own
                cons[q, j] += e - own
        declared[mid] = sum(load.energy_wh for load, _, _ in plan)
        moved[mid] = sum(found)
        nruns[mid] = len(plan)
    return Moved(replace(data, consumption=cons, production=prod), declared, moved, nruns, green)


@dataclass(frozen=True)
class MemberWorth:
    id: str
    runs: int
    declared_wh: int
    moved_wh: int
    consumption_wh: tuple[int, int]  # (usual, moved)
    received_wh: tuple[int, int]
    producer_shared_wh: tuple[int, int]
    eur: float

    @property
    def extra_shared_wh(self) -> int:
        return self.received_wh[1] - self.received_wh[0]

    def self_sufficiency(self, i: int) -> float:
        return self.received_wh[i] / self.consumption_wh[i] if self.consumption_wh[i] else float("nan")


@dataclass(frozen=True)
class Worth:
    """Both years allocated with the operation's key, and what moving the loads is worth."""

    usual: Simulation
    moved: Simulation
    shift: Moved
    prices: PriceChoice
    members: list[MemberWorth]  # those declaring loads
    others: list[MemberWorth]  # the rest: moved loads can take shared energy they used to receive

    @property
    def others_extra_shared_wh(self) -> int:
        return sum(m.extra_shared_wh for m in self.others)

    @property
    def others_eur(self) -> float:
        return round(sum(m.eur for m in self.others), 2)

    @property
    def key_label(self) -> str:
        return self.usual.outcomes[0].label

    def shared_wh(self, i: int) -> int:
        return int((self.usual, self.moved)[i].outcomes[0].shared.sum())

    def consumption_wh(self, i: int) -> int:
        return int((self.usual, self.moved)[i].total_consumption.sum())

    @property
    def eur(self) -> float:
        """The whole operation: members with loads and the others."""
        return round(sum(m.eur for m in self.members) + sum(m.eur for m in self.others), 2)


def worth(op: Operation, data: MeterData, prices: PriceChoice | None = None,
          settings: SignalSettings = SignalSettings()) -> Worth:
    """Run the data as it is and with the loads moved, through the operation's own key."""
    key = [(op.key_label, op.key_rounds)]
    shift = move_loads(op, data, settings)
    usual = simulate(op, data, key)
    moved = simulate(op, shift.data, key)
    if prices is None:
        last = datetime.fromtimestamp(int(data.epoch[-1]), ZoneInfo(op.timezone)).date()
        prices = choose_prices(op, last)
    jidx = {mid: j for j, mid in enumerate(data.member_ids)}
    kidx = {pid: k for k, pid in enumerate(data.producer_ids)}
    members: list[MemberWorth] = []
    others: list[MemberWorth] = []
    for m in op.members:
        j, k = jidx.get(m.id), kidx.get(m.id)
        if j is None:
            continue  # a producer-only member receives nothing; a producer price is counted with "others" below
        cons = (int(usual.consumption[:, j].sum()), int(moved.consumption[:, j].sum()))
        recv = (int(usual.outcomes[0].received[:, j].sum()), int(moved.outcomes[0].received[:, j].sum()))
        pshared = (0, 0) if k is None else (int(usual.outcomes[0].producer_shared[:, k].sum()),
                                            int(moved.outcomes[0].producer_shared[:, k].sum()))
        grid = float(m.supplier_energy_eur_kwh) if m.supplier_energy_eur_kwh is not None else prices.grid_eur_kwh
        eur = ((cons[0] - cons[1]) * grid + (recv[1] - recv[0]) * prices.shared_value(grid)
               + (pshared[1] - pshared[0]) * prices.producer_eur_kwh) / 1000
        row = MemberWorth(m.id, shift.runs.get(m.id, 0), shift.declared_wh.get(m.id, 0), shift.moved_wh.get(m.id, 0),
                          cons, recv, pshared, round(eur, 2))
        (members if m.id in shift.declared_wh else others).append(row)
    for m in op.members:  # producer-only members: paid for their shared injection
        if m.id in kidx and m.id not in jidx:
            k = kidx[m.id]
            ps = (int(usual.outcomes[0].producer_shared[:, k].sum()), int(moved.outcomes[0].producer_shared[:, k].sum()))
            others.append(MemberWorth(m.id, 0, 0, 0, (0, 0), (0, 0), ps, round((ps[1] - ps[0]) * prices.producer_eur_kwh / 1000, 2)))
    return Worth(usual, moved, shift, prices, members, others)


def _kwh(wh: float) -> str:
    return f"{wh / 1000:,.1f}"


def _pct(x: float) -> str:
    return "—" if x != x else f"{100 * x:.1f}%"


def format_worth(w: Worth) -> str:
    """The text the command prints: the operation, then each member with loads."""
    ss = [w.shared_wh(i) / w.consumption_wh(i) if w.consumption_wh(i) else float("nan") for i in (0, 1)]
    p = w.prices
    price_line = (f"Prices ({p.source}): value of a shared kWh {p.value_eur_kwh:.3f} EUR" if p.value_eur_kwh is not None
                  else f"Prices ({p.source}): grid energy {p.grid_eur_kwh:.3f} EUR/kWh (or the member's supplier price), "
                       f"shared {p.shared_eur_kwh:.3f} EUR/kWh")
    lines = [
        "",
        f"Flexible loads moved by the consume-now signal (operation's key: {w.key_label})",
        "The data already holds each load at its usual time; the moved year takes every run out of its usual "
        "slot and starts it at the first green quarter-hour of its window (no foresight; never green: the latest start).",
        f"Green quarter-hours: {int(w.shift.green.sum())} of {w.shift.green.size}",
        price_line + "; injection not shared valued at 0.",
        "",
        f"Operation: shared {_kwh(w.shared_wh(0))} -> {_kwh(w.shared_wh(1))} kWh "
        f"({'+' if w.shared_wh(1) >= w.shared_wh(0) else ''}{_kwh(w.shared_wh(1) - w.shared_wh(0))} kWh), "
        f"self-sufficiency {_pct(ss[0])} -> {_pct(ss[1])}, {w.eur:,.2f} EUR for the operation's members",
        "",
    ]
    head = ["Member", "Runs", "Declared kWh", "Moved kWh", "Extra shared kWh", "Self-suff. usual", "Self-suff. moved", "EUR"]
    rows = [[m.id, str(m.runs), _kwh(m.declared_wh), _kwh(m.moved_wh), _kwh(m.extra_shared_wh),
             _pct(m.self_sufficiency(0)), _pct(m.self_sufficiency(1)), f"{m.eur:,.2f}"] for m in w.members]
    widths = [max(len(h), *(len(r[c]) for r in rows)) if rows else len(h) for c, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))  # noqa: E731
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    lines += [fmt(head), rule, *(fmt(r) for r in rows), rule,
              fmt([f"others ({len(w.others)})", "", "", "", _kwh(w.others_extra_shared_wh), "", "", f"{w.others_eur:,.2f}"])]
    short = [m.id for m in w.members if m.moved_wh < m.declared_wh]
    if short:
        lines.append(f"Moved < declared: the data's import at the usual time did not hold the whole run ({', '.join(short)}).")
    return "\n".join(lines) + "\n"


def write_worth_chart(w: Worth, path: str) -> None:
    """Monthly shared energy usual vs moved, and each member's extra kWh and euros."""
    from services.community.simulate import CHART_HINT, ChartUnavailable

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChartUnavailable(CHART_HINT) from None
    months = w.usual.months
    x = np.arange(len(months))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6), dpi=110, layout="constrained")
    ax1.bar(x - 0.2, w.usual.outcomes[0].shared / 1000, 0.4, label="loads at their usual time")
    ax1.bar(x + 0.2, w.moved.outcomes[0].shared / 1000, 0.4, label="loads moved by the signal")
    ax1.set_xticks(x, months, rotation=45, ha="right")
    ax1.set_ylabel("shared kWh")
    ax1.set_title("Shared energy by month")
    ax1.legend()
    ax1.grid(axis="y", alpha=0.3)
    ids = [m.id for m in w.members]
    xm = np.arange(len(ids))
    ax2.bar(xm, [m.extra_shared_wh / 1000 for m in w.members], 0.6, color="tab:green")
    ax2.set_xticks(xm, ids, rotation=45, ha="right")
    ax2.set_ylabel("extra kWh shared over the period")
    ax2.set_title("Per member with flexible loads (label: EUR)")
    for i, m in enumerate(w.members):
        ax2.annotate(f"{m.eur:,.0f} €", (i, m.extra_shared_wh / 1000), ha="center", va="bottom", fontsize=9)
    ax2.grid(axis="y", alpha=0.3)
    op = w.usual.operation
    fig.suptitle(f"{op.name or op.id}: what following the consume-now signal is worth ({w.eur:,.0f} EUR)")
    fig.savefig(path)
    plt.close(fig)

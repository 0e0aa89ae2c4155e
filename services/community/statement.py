"""A member's statement (décompte / afrekening) for the shared energy of a period. Pure: no I/O.

The community's manager bills each member for the shared energy it received and credits each
producer for the energy it shared, on a specific invoice beside the supplier's (design.md, field
facts). Per member:

* energy: received (a consumer's) and shared injection (a producer's), in kWh. Where the grid
  operator's file was imported (``reconcile``) its binding figure replaces the provisional one, per
  quarter-hour (or month) it covers; ``basis`` says ``binding``, ``provisional`` or ``mixed``;
* one line per price component and price version: the shared-energy price and each named levy on
  the energy received, the producers' price on the energy shared (a negative amount: a credit);
* money rule, the same on every line: ``amount = round(kWh × unit price)`` to the cent, half up,
  *once per line*; ``vat = round(amount × rate)`` to the cent, half up, per line; the member's
  ``vat_eur`` is the sum of its lines' VAT and ``total = total_excl_vat + vat`` (never recomputed
  from a sum, so the lines add up to the totals an accountant sees). A producer's credit carries the
  producer's own VAT (``producer_vat``: none by default, as a household producer charges none; a
  VAT-registered one's rate, its VAT negative like the credit), so a member that is both has two
  rates on one statement, each line carrying its own;
* advances (acompte / voorschot) paid in the period are deducted: ``balance = total − advances``.
  Positive: the member owes it; negative: the community owes it.
* honest savings, when the member's supplier energy price is known: what the received kWh would have
  cost at that price (network costs are paid either way), minus what the community charges for them,
  minus the supplier's sharing fee for the days of the period (fee × days / 365). A member who loses
  money by sharing is told so.

Periods are local days of the operation's time zone, ``to`` included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from services.allocation.model import Member, Operation
from services.allocation.terms import PriceVersion
from services.community.prices import price_on, schedule

CENT = Decimal("0.01")
KWH = Decimal(1000)
YEAR_DAYS = Decimal(365)


def cents(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class Energy:
    """One figure of the ledger: a member's provisional quarter-hour or a binding grid-operator row."""

    member: str
    start: datetime  # UTC
    end: datetime
    received_wh: int
    injection_wh: int


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    kwh: Decimal
    unit_price_eur: Decimal
    vat_rate: Decimal
    amount_excl_vat_eur: Decimal
    vat_eur: Decimal
    component: str  # shared | levy | producer
    price_from: date


@dataclass
class MemberStatement:
    member: str
    name: str
    received_wh: int = 0
    injection_wh: int = 0
    lines: list[Line] = field(default_factory=list)
    advances_eur: Decimal = Decimal(0)
    binding_items: int = 0
    provisional_items: int = 0
    days: int = 0  # days of the period the member was a member
    savings: dict[str, object] | None = None

    @property
    def total_excl_vat_eur(self) -> Decimal:
        return sum((ln.amount_excl_vat_eur for ln in self.lines), Decimal("0.00"))

    @property
    def vat_eur(self) -> Decimal:
        return sum((ln.vat_eur for ln in self.lines), Decimal("0.00"))

    @property
    def total_eur(self) -> Decimal:
        return self.total_excl_vat_eur + self.vat_eur

    @property
    def balance_eur(self) -> Decimal:
        return self.total_eur - self.advances_eur

    def vat_by_rate(self) -> dict[Decimal, tuple[Decimal, Decimal]]:
        """rate -> (amount excl. VAT, VAT) of the lines at that rate, lowest rate first: an invoice
        states the VAT per rate, and a consumer-producer's statement can have two."""
        out: dict[Decimal, tuple[Decimal, Decimal]] = {}
        for ln in sorted(self.lines, key=lambda ln: ln.vat_rate):
            base, vat = out.get(ln.vat_rate, (Decimal("0.00"), Decimal("0.00")))
            out[ln.vat_rate] = (base + ln.amount_excl_vat_eur, vat + ln.vat_eur)
        return out

    @property
    def basis(self) -> str:
        return basis_of(self.binding_items, self.provisional_items)


def basis_of(binding: int, provisional: int) -> str:
    if binding and provisional:
        return "mixed"
    return "binding" if binding else "provisional"


@dataclass
class Statement:
    operation: str
    first: date
    last: date  # included
    members: dict[str, MemberStatement]

    @property
    def basis(self) -> str:
        kinds = {m.basis for m in self.members.values()}
        if kinds == {"binding"}:
            return "binding"
        if kinds <= {"provisional"}:
            return "provisional"
        return "mixed"

    @property
    def received_wh(self) -> int:
        return sum(m.received_wh for m in self.members.values())

    @property
    def injection_wh(self) -> int:
        return sum(m.injection_wh for m in self.members.values())


def local_bounds(first: date, last: date, tz: str) -> tuple[datetime, datetime]:
    """[start, end) in aware datetimes for the local days ``first``..``last`` (included)."""
    z = ZoneInfo(tz)
    return datetime(first.year, first.month, first.day, tzinfo=z), \
        datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=z)


def merge_binding(provisional: Iterable[Energy], binding_received: Iterable[Energy],
                  binding_injection: Iterable[Energy], start: datetime, end: datetime) -> list[tuple[Energy, bool, bool]]:
    """The figures to bill, each with whether its received and its injection part are binding.

    A binding row counts if it lies wholly inside [start, end); it then replaces the provisional
    figures of the quarter-hours it covers for that member (received and injection separately). A
    binding row reaching outside the period cannot be split and is left out: provisional there."""
    out: list[tuple[Energy, bool, bool]] = []
    covered: dict[str, dict[str, list[tuple[datetime, datetime]]]] = {"r": {}, "i": {}}
    for kind, rows in (("r", binding_received), ("i", binding_injection)):
        for e in rows:
            if start <= e.start and e.end <= end:
                covered[kind].setdefault(e.member, []).append((e.start, e.end))
                out.append((e, kind == "r", kind == "i"))

    def inside(kind: str, e: Energy) -> bool:
        return any(a <= e.start < b for a, b in covered[kind].get(e.member, ()))

    for e in provisional:
        if not start <= e.start < end:
            continue
        r, i = inside("r", e), inside("i", e)
        if r and i:
            continue
        out.append((Energy(e.member, e.start, e.end, 0 if r else e.received_wh, 0 if i else e.injection_wh), False, False))
    return out


def compute(op: Operation, first: date, last: date, provisional: Sequence[Energy],
            binding_received: Sequence[Energy] = (), binding_injection: Sequence[Energy] = ()) -> Statement:
    """Every member's statement for the local days ``first``..``last`` of the operation."""
    start, end = local_bounds(first, last, op.timezone)
    z = ZoneInfo(op.timezone)
    plan = schedule(op)
    members: dict[str, MemberStatement] = {}
    by_id = {m.id: m for m in op.members}
    for m in op.members:
        days = _member_days(m, first, last)
        if days:
            members[m.id] = MemberStatement(m.id, m.name, days=days)
    # (member, price version index) -> [received Wh, injection Wh]
    sums: dict[tuple[str, int], list[int]] = {}
    versions: list[PriceVersion] = []
    index: dict[int, int] = {}
    for e, r_binding, i_binding in merge_binding(provisional, binding_received, binding_injection, start, end):
        if e.member not in by_id or not (e.received_wh or e.injection_wh):
            continue
        ms = members.setdefault(e.member, MemberStatement(e.member, by_id[e.member].name))
        v = price_on(op, e.start.astimezone(z).date(), plan)
        k = index.setdefault(id(v), len(versions))
        if k == len(versions):
            versions.append(v)
        acc = sums.setdefault((e.member, k), [0, 0])
        acc[0] += e.received_wh
        acc[1] += e.injection_wh
        ms.received_wh += e.received_wh
        ms.injection_wh += e.injection_wh
        if r_binding or i_binding:
            ms.binding_items += 1
        else:
            ms.provisional_items += 1
    starts = {id(v): s for s, v in plan}
    several = len({k for (_, k) in sums}) > 1
    for (member, k), (rec, inj) in sorted(sums.items(), key=lambda kv: (kv[0][0], starts[id(versions[kv[0][1]])])):
        v = versions[k]
        since = starts[id(v)]
        suffix = f" (from {since.isoformat()})" if several else ""
        lines = members[member].lines
        if rec:
            kwh = Decimal(rec) / KWH
            lines.append(_line(f"Shared energy{suffix}", kwh, v.shared_eur_kwh, v.vat_rate, "shared", since))
            for levy in v.levies:
                lines.append(_line(f"{levy.name}{suffix}", kwh, levy.eur_kwh, v.vat_rate, "levy", since))
        if inj:
            lines.append(_line(f"Shared injection (producer){suffix}", Decimal(inj) / KWH, Decimal(0) - v.producer_eur_kwh,
                               by_id[member].producer_vat_rate, "producer", since))
    for ms in members.values():
        m = by_id.get(ms.member)
        if m is None:
            continue
        ms.advances_eur = sum((a.eur for a in m.advances if first <= a.date <= last), Decimal(0))
        ms.savings = savings(m, ms)
    return Statement(op.id, first, last, dict(sorted(members.items())))


def _line(label: str, kwh: Decimal, unit: Decimal, rate: Decimal, component: str, since: date) -> Line:
    amount = cents(kwh * unit)
    return Line(label, kwh, unit, rate, amount, cents(amount * rate), component, since)


def _member_days(m: Member, first: date, last: date) -> int:
    lo = max(first, m.joined or first)
    hi = min(last, (m.left - timedelta(days=1)) if m.left else last)
    return max(0, (hi - lo).days + 1)


def savings(m: Member, ms: MemberStatement) -> dict[str, object] | None:
    """What sharing saved the member over the period (negative: it cost the member money)."""
    if m.supplier_energy_eur_kwh is None or not m.receives:
        return None
    avoided = cents(Decimal(ms.received_wh) / KWH * m.supplier_energy_eur_kwh)
    charged = sum((ln.amount_excl_vat_eur + ln.vat_eur for ln in ms.lines if ln.component != "producer"), Decimal("0.00"))
    fee = cents((m.supplier_sharing_fee_eur_year or Decimal(0)) * ms.days / YEAR_DAYS)
    net = avoided - charged - fee
    return {"supplier_energy_eur": avoided, "community_charges_eur": charged, "supplier_sharing_fee_eur": fee,
            "net_eur": net, "loses_money": net < 0}

"""P1 telegram → :class:`Reading`: the one place that knows which OBIS codes mean what to the gateway.

Registers become whole Wh (the meters' resolution is 1 Wh: kWh with 3 decimals), power becomes W.
Energy is exact: a register that would not be a whole number of Wh is refused rather than rounded.
A register line that is missing (where the dialect always sends it) or unreadable gives an *unknown*
register (None), never zero: the plausibility gate (gateway/plausibility.py) refuses the reading.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from gateway.model import ClockQuality, PhasePower, Reading, SubMeterReading
from gateway.plausibility import fuse_limit_w
from p1.telegram import MBUS_KINDS, Dialect, Telegram

# energy registers per tariff; 1.8.0/2.8.0 (totals) only where the meter gives no tariff registers
_IMPORT = {"1-0:1.8.1": "1", "1-0:1.8.2": "2", "1-0:1.8.3": "3", "1-0:1.8.4": "4"}
_EXPORT = {"1-0:2.8.1": "1", "1-0:2.8.2": "2", "1-0:2.8.3": "3", "1-0:2.8.4": "4"}
_TO_WH = {"kwh": 1000, "wh": 1}
_TO_W = {"kw": 1000, "w": 1}
# dialects that always send both tariff registers in each direction: one missing is unknown
_TWO_TARIFFS = frozenset({Dialect.DSMR40, Dialect.DSMR42, Dialect.DSMR50, Dialect.EMUCS})


class NotAReading(ValueError):
    """The telegram holds no usable cumulative register (or an inexact one)."""


def _energy_wh(values: dict, ref: str) -> int | None:
    """The register in whole Wh; None when unreadable (no value, wrong unit, inexact, negative)."""
    v = values.get(ref)
    if v is None or v.invalid or v.value is None:
        return None
    factor = _TO_WH.get((v.unit or "").lower())
    if factor is None:
        return None
    wh = Decimal(v.value) * factor
    if wh != wh.to_integral_value() or wh < 0:
        return None
    return int(wh)


def _power_w(values: dict, ref: str) -> float | None:
    v = values.get(ref)
    if v is None or v.invalid or v.value is None:
        return None
    factor = _TO_W.get((v.unit or "").lower())
    if factor is None:
        return None
    return float(Decimal(v.value) * factor)


def _number(values: dict, ref: str) -> float | None:
    v = values.get(ref)
    if v is None or v.invalid or v.value is None:
        return None
    return float(v.value)


def _registers(values: dict, tariffs: dict[str, str], total_ref: str, dialect: Dialect) -> dict[str, int | None]:
    """Registers per tariff; a line present but unreadable is None, and so is tariff 1 or 2 missing
    from a dialect that always sends both."""
    regs: dict[str, int | None] = {}
    for ref, tariff in tariffs.items():
        if ref in values:
            regs[tariff] = _energy_wh(values, ref)
    if not regs and total_ref in values:
        regs["0"] = _energy_wh(values, total_ref)
    elif dialect in _TWO_TARIFFS and regs:
        for tariff in ("1", "2"):
            regs.setdefault(tariff, None)
    return regs


def _announced_limit_w(values: dict, phases: int) -> float | None:
    """e-MUCS limiter (0-0:17.0.0, kW) and fuse (1-0:31.4.0, A) thresholds as one power bound."""
    limiter = _power_w(values, "0-0:17.0.0")
    fuse = values.get("1-0:31.4.0")
    fuse_a = float(fuse.value) if fuse is not None and fuse.value is not None and not fuse.invalid \
        and (fuse.unit or "").lower() == "a" else None
    return fuse_limit_w(fuse_a, limiter, phases)


def meter_id_of(telegram: Telegram) -> str:
    """The equipment id the meter announces (0-0:96.1.1 or its variants), else its header."""
    return (telegram.equipment_id or telegram.header.lstrip("/")).strip()


def to_reading(telegram: Telegram, *, meter_id: str | None = None, now: datetime | None = None,
               clock_synced: bool = True) -> Reading:
    """Build a Reading; meter time when the telegram has it (DSMR 2.2 has none: the Pi's clock)."""
    values = telegram.values
    imp = _registers(values, _IMPORT, "1-0:1.8.0", telegram.dialect)
    exp = _registers(values, _EXPORT, "1-0:2.8.0", telegram.dialect)
    if not imp:
        raise NotAReading("no import register (1-0:1.8.x) in the telegram")
    ts = telegram.timestamp
    if ts is not None:
        time, clock = ts.astimezone(timezone.utc), ClockQuality.METER
    else:
        time = (now or datetime.now(timezone.utc)).replace(microsecond=0)
        clock = ClockQuality.SYNCED if clock_synced else ClockQuality.UNSYNCED
    phases = []
    for n, (pi, pe, u, i) in enumerate(
        (("1-0:21.7.0", "1-0:22.7.0", "1-0:32.7.0", "1-0:31.7.0"),
         ("1-0:41.7.0", "1-0:42.7.0", "1-0:52.7.0", "1-0:51.7.0"),
         ("1-0:61.7.0", "1-0:62.7.0", "1-0:72.7.0", "1-0:71.7.0")), start=1):
        p = PhasePower(n, _power_w(values, pi), _power_w(values, pe), _number(values, u), _number(values, i))
        if any(x is not None for x in (p.import_w, p.export_w, p.voltage_v, p.current_a)):
            phases.append(p)
    submeters = tuple(
        SubMeterReading(
            d.channel,
            MBUS_KINDS.get(d.device_type, "gas" if (d.unit or "").lower() == "m3" else "other"),
            float(d.value),
            d.unit or "",
            d.time.astimezone(timezone.utc) if d.time else None,
        )
        for d in telegram.mbus_devices()
        if d.value is not None and not d.invalid
    )
    peak = values.get("1-0:1.6.0")
    tariff = values.get("0-0:96.14.0")
    return Reading(
        meter_id=meter_id or meter_id_of(telegram),
        time=time,
        import_wh=imp,
        export_wh=exp,
        import_w=_power_w(values, "1-0:1.7.0"),
        export_w=_power_w(values, "1-0:2.7.0"),
        clock=clock,
        source="p1",
        phases=tuple(phases),
        submeters=submeters,
        tariff=str(int(tariff.value)) if tariff is not None and tariff.value is not None and not tariff.invalid else None,
        demand_w=_power_w(values, "1-0:1.4.0"),
        month_peak_w=_power_w(values, "1-0:1.6.0"),
        month_peak_time=peak.time.astimezone(timezone.utc) if peak is not None and peak.time and not peak.invalid else None,
        max_power_w=_announced_limit_w(values, 3 if len(phases) > 1 else 1),
    )

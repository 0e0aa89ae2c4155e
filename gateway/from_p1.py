"""P1 telegram → :class:`Reading`: the one place that knows which OBIS codes mean what to the gateway.

Registers become whole Wh (the meters' resolution is 1 Wh: kWh with 3 decimals), power becomes W.
Energy is exact: a register that would not be a whole number of Wh is refused rather than rounded.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from gateway.model import ClockQuality, PhasePower, Reading, SubMeterReading
from p1.telegram import MBUS_KINDS, Telegram

# energy registers per tariff; 1.8.0/2.8.0 (totals) only where the meter gives no tariff registers
_IMPORT = {"1-0:1.8.1": "1", "1-0:1.8.2": "2", "1-0:1.8.3": "3", "1-0:1.8.4": "4"}
_EXPORT = {"1-0:2.8.1": "1", "1-0:2.8.2": "2", "1-0:2.8.3": "3", "1-0:2.8.4": "4"}
_TO_WH = {"kwh": 1000, "wh": 1}
_TO_W = {"kw": 1000, "w": 1}


class NotAReading(ValueError):
    """The telegram holds no usable cumulative register (or an inexact one)."""


def _energy_wh(values: dict, ref: str) -> int | None:
    v = values.get(ref)
    if v is None or v.invalid or v.value is None:
        return None
    factor = _TO_WH.get((v.unit or "").lower())
    if factor is None:
        raise NotAReading(f"{ref}: unit {v.unit!r} is not an energy unit")
    wh = Decimal(v.value) * factor
    if wh != wh.to_integral_value():
        raise NotAReading(f"{ref}: {v.value} {v.unit} is not a whole number of Wh")
    if wh < 0:
        raise NotAReading(f"{ref}: negative register {v.value}")
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


def _registers(values: dict, tariffs: dict[str, str], total_ref: str) -> dict[str, int]:
    regs: dict[str, int] = {}
    for ref, tariff in tariffs.items():
        wh = _energy_wh(values, ref)
        if wh is not None:
            regs[tariff] = wh
    if not regs:
        wh = _energy_wh(values, total_ref)
        if wh is not None:
            regs["0"] = wh
    return regs


def meter_id_of(telegram: Telegram) -> str:
    """The equipment id the meter announces (0-0:96.1.1 or its variants), else its header."""
    return (telegram.equipment_id or telegram.header.lstrip("/")).strip()


def to_reading(telegram: Telegram, *, meter_id: str | None = None, now: datetime | None = None,
               clock_synced: bool = True) -> Reading:
    """Build a Reading; meter time when the telegram has it (DSMR 2.2 has none: the Pi's clock)."""
    values = telegram.values
    imp = _registers(values, _IMPORT, "1-0:1.8.0")
    exp = _registers(values, _EXPORT, "1-0:2.8.0")
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
    )

"""DSMR-reader's MQTT topic layout for the grid meter (issue 17), so Home Assistant's built-in
``dsmr_reader`` integration works unchanged beside (or instead of) our own discovery.

Pure (no paho, no I/O): :func:`dsmr_messages` turns the daemon's ``reading`` message of the grid meter
(gateway/live.py), the ``/api/v1/live`` object and the last closed quarter-hour into
``(topic, payload, retain)``; the feed (services/node/mqtt_feed.py) publishes them.

Units and formats are DSMR-reader's (its split-topic messages, which Home Assistant's
``homeassistant/components/dsmr_reader/definitions.py`` reads): registers in kWh with 3 decimals
(exact: the meters count whole Wh), powers in kW with 3 decimals, voltages in V with 1 decimal, gas in
m³ with 3 decimals, times ISO 8601 in UTC. :data:`UNITS` is the one table of what is published;
tests/test_dsmr_reader.py checks it against Home Assistant's own definitions.

Choices (each one so that no topic carries a made-up value: what the meter does not give is omitted):
- Tariffs are the meter's own numbers, as DSMR-reader does for every meter: ``electricity_delivered_1``
  is OBIS 1-0:1.8.1, ``electricity_tariff`` is 0-0:96.14.0. Home Assistant names tariff 1 "low"
  (Dutch meters: 1 = night), so on a Belgian meter (1 = day, 2 = night) its "low tariff" entities are
  the day tariff — exactly what DSMR-reader with the same meter shows, and register and tariff stay
  consistent with each other (the "low" tariff is the one whose register runs). The live message does
  not say which country's meter it is, and guessing would differ from DSMR-reader. A meter with one
  register per direction (1.8.0, a Fluksometer) gives ``electricity_delivered_1`` only (DSMR-reader's
  Luxembourg mapping); tariffs 3 and 4 have no DSMR-reader topic; tariff indicators other than 1 and 2
  are not published (Home Assistant would call them "high").
- Gas: the first MBus gas channel in m³, on ``reading/extra_device_delivered`` and
  ``consumption/gas/delivered``, its own reading time on ``consumption/gas/read_at``.
  ``reading/extra_device_timestamp`` is left out (Home Assistant does not subscribe to it), and so is
  ``consumption/gas/currently_delivered`` (DSMR-reader's difference to the previous hourly reading,
  which the feed does not have after a restart).
- ``day-consumption/electricity_merged`` and ``electricity_returned_merged`` (today's import and export
  since local midnight) come from the store's closed quarter-hours of the day plus the running one, and
  only when they cover the whole day so far: as many closed quarter-hours as have passed since local
  midnight, the running one not yet closed. Home Assistant keeps them as ``total_increasing``, so a
  figure missing a quarter-hour (a node installed at noon, the instant between a quarter-hour's close
  and the store's new total) would read as a reset; such a figure is not sent. The per-tariff day
  figures (``electricity1``, ``electricity2``, ``…_returned``) need the tariff registers at midnight,
  which quarter-hours do not keep: left out, like the costs and prices (DSMR-reader's own settings),
  the month and year totals, the meter statistics (power failures, sags, swells, DSMR version: not in
  the live message).
- ``consumption/quarter-hour-peak-electricity/*``: the last closed quarter-hour's import as an average
  kW over its span (DSMR-reader: kWh in the quarter × 4), with its start and end.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from gateway.store.schema import quarter_hours_in
from services.node.web.figures import local_midnight

Message = tuple[str, str, bool]  # topic, payload, retain (retained = state: published on change)

KWH, KW, VOLT, AMPERE, M3 = "kWh", "kW", "V", "A", "m³"

# every topic path published under the prefix, with the unit of its payload (None: a time or a code);
# kWh topics take Wh and kW topics take W (the gateway's units), converted here
UNITS: dict[str, str | None] = {
    "reading/timestamp": None,
    **{f"reading/electricity_{d}_{n}": KWH for d in ("delivered", "returned") for n in (1, 2)},
    "reading/electricity_currently_delivered": KW,
    "reading/electricity_currently_returned": KW,
    **{f"reading/phase_currently_{d}_l{n}": KW for d in ("delivered", "returned") for n in (1, 2, 3)},
    **{f"reading/phase_voltage_l{n}": VOLT for n in (1, 2, 3)},
    **{f"reading/phase_power_current_l{n}": AMPERE for n in (1, 2, 3)},
    "reading/extra_device_delivered": M3,
    "consumption/gas/delivered": M3,
    "consumption/gas/read_at": None,
    "meter-stats/electricity_tariff": None,
    "day-consumption/electricity_merged": KWH,
    "day-consumption/electricity_returned_merged": KWH,
    "consumption/quarter-hour-peak-electricity/average_delivered": KW,
    "consumption/quarter-hour-peak-electricity/read_at_start": None,
    "consumption/quarter-hour-peak-electricity/read_at_end": None,
}

# registers: the meter's tariff number -> DSMR-reader's; "0" is a meter's only register (1.8.0, 2.8.0)
_TARIFF_FIELD = {"1": "1", "2": "2", "0": "1"}


def _milli(n: int) -> str:
    """Thousandths as a decimal with 3 places, exactly (1234567 -> "1234.567")."""
    sign = "-" if n < 0 else ""
    return f"{sign}{abs(n) // 1000}.{abs(n) % 1000:03d}"


def _plain(x: float) -> str:
    """A value as the meter gave it: no trailing zeros invented (2.0 -> "2", 0.27 -> "0.27")."""
    return str(int(x)) if float(x).is_integer() else f"{x:.3f}".rstrip("0")


def payload(path: str, value: float | int | str) -> str:
    """``value`` (in Wh, W, V, A, m³ or already text) as DSMR-reader writes the topic's unit."""
    unit = UNITS[path]
    if unit == KWH:
        return _milli(int(value))
    if unit == KW:
        return _milli(round(float(value)))
    if unit == VOLT:
        return f"{float(value):.1f}"
    if unit == M3:
        return f"{float(value):.3f}"
    if unit == AMPERE:
        return _plain(float(value))
    return str(value)


def _gas(grid: dict) -> dict | None:
    """The first MBus gas channel read in m³ (DSMR-reader follows one gas meter)."""
    gas = [m for m in grid.get("submeters") or []
           if m.get("kind") == "gas" and str(m.get("unit") or "").strip().lower() in ("m3", "m³")
           and m.get("value") is not None]
    return min(gas, key=lambda m: int(m.get("channel") or 0)) if gas else None


def _reading(grid: dict) -> list[tuple[str, object, bool]]:
    """(path, value, retain) from the grid meter's reading: registers, tariff and gas retained."""
    out: list[tuple[str, object, bool]] = []
    for direction, field in (("import", "delivered"), ("export", "returned")):
        regs = grid.get(f"{direction}_by_tariff") or {}
        for tariff, wh in regs.items():
            n = _TARIFF_FIELD.get(tariff)
            if n is not None and wh is not None and (tariff != "0" or len(regs) == 1):
                out.append((f"reading/electricity_{field}_{n}", wh, True))
    if grid.get("time"):
        out.append(("reading/timestamp", grid["time"], False))
    for key, field in (("import_w", "delivered"), ("export_w", "returned")):
        if grid.get(key) is not None:
            out.append((f"reading/electricity_currently_{field}", grid[key], False))
    for ph in grid.get("phases") or []:
        n = ph.get("phase")
        if n not in (1, 2, 3):
            continue
        for key, path in (("import_w", "phase_currently_delivered"), ("export_w", "phase_currently_returned"),
                          ("voltage_v", "phase_voltage"), ("current_a", "phase_power_current")):
            if ph.get(key) is not None:
                out.append((f"reading/{path}_l{n}", ph[key], False))
    if str(grid.get("tariff")) in ("1", "2"):
        out.append(("meter-stats/electricity_tariff", str(grid["tariff"]), True))
    gas = _gas(grid)
    if gas is not None:
        out += [("reading/extra_device_delivered", gas["value"], True),
                ("consumption/gas/delivered", gas["value"], True)]
        if gas.get("time"):
            out.append(("consumption/gas/read_at", gas["time"], True))
    return out


def _parse(text: str | None) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def day_complete(live: dict, last_quarter_hour: dict | None) -> bool:
    """Whether ``live["today"]`` is the whole local day so far: every quarter-hour since local midnight
    closed in the store, and the running one (not yet closed) added."""
    today, q = live.get("today"), live.get("quarter_hour")
    if not today or not q or not live.get("timezone"):
        return False
    start = _parse(q.get("start"))
    if start is None or (last_quarter_hour or {}).get("start") == q.get("start"):
        return False
    tz = ZoneInfo(live["timezone"])
    day = date.fromisoformat(today["day"])
    return start.astimezone(tz).date() == day and \
        today.get("closed_quarter_hours") == quarter_hours_in(local_midnight(day, tz), start)


def _day(live: dict | None, last_quarter_hour: dict | None) -> list[tuple[str, object, bool]]:
    if live is None or not day_complete(live, last_quarter_hour):
        return []
    today = live["today"]
    return [(f"day-consumption/electricity{suffix}_merged", today[key], True)
            for suffix, key in (("", "import_wh"), ("_returned", "export_wh")) if today.get(key) is not None]


def _quarter_peak(qh: dict | None) -> list[tuple[str, object, bool]]:
    """The last closed quarter-hour's import as an average power (W here, kW on the wire)."""
    if not qh or qh.get("import_wh") is None:
        return []
    start, end = _parse(qh.get("start")), _parse(qh.get("end"))
    if start is None or end is None or end <= start:
        return []
    path = "consumption/quarter-hour-peak-electricity/"
    return [(path + "average_delivered", qh["import_wh"] * 3600 / (end - start).total_seconds(), True),
            (path + "read_at_start", qh["start"], True), (path + "read_at_end", qh["end"], True)]


def dsmr_messages(prefix: str, grid: dict | None, live: dict | None = None,
                  last_quarter_hour: dict | None = None) -> list[Message]:
    """Every DSMR-reader topic Quartier can fill: from the grid meter's latest ``reading`` message, the
    ``/api/v1/live`` object (today's totals) and the last closed quarter-hour of the grid meter."""
    if grid is None:
        return []
    values = _reading(grid) + _day(live, last_quarter_hour) + _quarter_peak(last_quarter_hour)
    return [(f"{prefix}/{path}", payload(path, value), retain) for path, value, retain in values]

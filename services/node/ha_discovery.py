"""Home Assistant discovery for the node's feed: which entities, with which classes, built from what the
meters actually give.

Pure (no paho, no I/O): :func:`meter_view` reduces the daemon's ``reading`` messages (gateway/live.py)
to what decides the entity set — tariffs, phases, sub-meters, production meters — and
:func:`components` turns that into the ``cmps`` of one device-based discovery message. Every component
is a :class:`Component` (pydantic), so a misspelt key or a wrong type fails here, in our tests, rather
than silently in Home Assistant.

Rules kept here (Home Assistant's sensor rules and its Energy dashboard's):
- registers are ``total_increasing`` (they never fall), energy in Wh, gas and water in m³;
- powers, voltages and currents are ``measurement``;
- quarter-hour energies restart every quarter-hour: ``total`` with ``last_reset``, and disabled by
  default (``enabled_by_default: false``), because offering them to the Energy dashboard beside the
  registers invites counting the same energy twice;
- diagnostics (refused readings, outbox backlog, last push, version, start) carry
  ``entity_category: diagnostic`` and their own availability (the service's), so they stay readable
  when the meter data stops — which is when they matter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

VERSION = "0.1.0"

# MBus sub-meter units as written by meters -> Home Assistant's units
_VOLUME_UNITS = {"m3": "m³", "m³": "m³", "l": "L", "ft3": "ft³"}
_ENERGY_UNITS = {"kwh": "kWh", "wh": "Wh", "mwh": "MWh", "gj": "GJ", "mj": "MJ"}


class Component(BaseModel):
    """One entity of the device discovery message (Home Assistant's full key names, no abbreviations)."""

    model_config = ConfigDict(extra="forbid")

    p: Literal["sensor", "binary_sensor"]
    name: str
    unique_id: str
    state_topic: str
    device_class: str | None = None
    state_class: Literal["measurement", "total", "total_increasing"] | None = None
    unit_of_measurement: str | None = None
    value_template: str | None = None
    last_reset_value_template: str | None = None
    json_attributes_topic: str | None = None
    entity_category: Literal["diagnostic"] | None = None
    enabled_by_default: bool | None = None
    icon: str | None = None
    options: list[str] | None = None
    suggested_display_precision: int | None = None
    availability: list[dict[str, str]] | None = None
    payload_on: str | None = None
    payload_off: str | None = None

    def dump(self) -> dict:
        return self.model_dump(exclude_none=True)


def slug(text: str, limit: int = 48) -> str:
    """Letters, digits, ``_`` and ``-`` only (Home Assistant's rule for discovery ids and topic levels)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:limit] or "x"


@dataclass(frozen=True)
class SubMeter:
    key: str  # gas_1, water_2 ...
    kind: str
    channel: int
    unit: str  # Home Assistant's unit


@dataclass(frozen=True)
class MeterView:
    """What decides the entity set: the grid meter's tariffs, phases and sub-meters, the producers."""

    tariffs_import: tuple[str, ...] = ()
    tariffs_export: tuple[str, ...] = ()
    tariff_indicator: bool = False
    phases: tuple[int, ...] = ()
    phase_export: bool = False
    submeters: tuple[SubMeter, ...] = ()
    meter_demand: bool = False
    month_peak: bool = True
    production: tuple[str, ...] = ()  # production meters' ids
    serial: str | None = None
    extra: dict = field(default_factory=dict, compare=False)


def submeter_of(m: dict) -> SubMeter | None:
    """An MBus channel as an entity, when Home Assistant has a class for it (else None: not published)."""
    kind, unit = str(m.get("kind") or ""), str(m.get("unit") or "").strip().lower()
    channel = int(m.get("channel") or 0)
    if kind in ("gas", "water") and unit in _VOLUME_UNITS:
        return SubMeter(f"{kind}_{channel}", kind, channel, _VOLUME_UNITS[unit])
    if kind in ("heat", "cold") and unit in _ENERGY_UNITS:
        return SubMeter(f"{kind}_{channel}", kind, channel, _ENERGY_UNITS[unit])
    return None


def meter_view(grid: dict | None, producers: dict[str, dict] | None = None) -> MeterView:
    """From the grid meter's latest ``reading`` message and the production meters' ones."""
    producers = producers or {}
    if grid is None:
        return MeterView(production=tuple(sorted(producers)))

    def tariffs(regs: dict | None) -> tuple[str, ...]:
        regs = regs or {}
        # one register under "0" (a total-only meter) is the sum already: no tariff entity
        return tuple(sorted(k for k in regs if k != "0" and re.fullmatch(r"[0-9A-Za-z]{1,4}", k))) if len(regs) > 1 or "0" not in regs else ()

    phases = grid.get("phases") or []
    subs = tuple(s for s in (submeter_of(m) for m in grid.get("submeters") or []) if s is not None)
    return MeterView(
        tariffs_import=tariffs(grid.get("import_by_tariff")),
        tariffs_export=tariffs(grid.get("export_by_tariff")),
        tariff_indicator=grid.get("tariff") is not None,
        phases=tuple(sorted({int(p["phase"]) for p in phases if p.get("phase") in (1, 2, 3)})),
        phase_export=any(p.get("export_w") is not None for p in phases),
        submeters=tuple(sorted(set(subs), key=lambda s: s.key)),
        meter_demand=grid.get("demand_w") is not None,
        production=tuple(sorted(producers)),
        serial=grid.get("serial") or grid.get("meter_id"),
    )


class T:
    """Topic paths under the node's root (``<base>/<node>``), one place for the feed and discovery."""

    import_w = "power/import_w"
    export_w = "power/export_w"
    net_w = "power/net_w"
    import_total = "energy/import_wh_total"
    export_total = "energy/export_wh_total"
    tariff = "tariff"
    demand = "quarter_hour/meter_demand_w"
    projected = "quarter_hour/projected_demand_w"
    peak_margin = "quarter_hour/peak_margin_w"
    month_peak = "month_peak_w"

    @staticmethod
    def register(direction: str, tariff: str) -> str:
        return f"energy/{direction}_t{tariff}_wh"

    @staticmethod
    def phase(n: int, what: str) -> str:
        return f"phase/l{n}/{what}"

    @staticmethod
    def sub(s: SubMeter) -> str:
        return f"{s.kind}/{s.channel}"

    @staticmethod
    def production(meter: str, what: str) -> str:
        return f"production/{slug(meter)}/{what}"


def components(root: str, uid: str, view: MeterView, topics) -> dict[str, dict]:
    """Every entity of the node: ``{key: component}``; ``topics`` is the feed's :class:`Topics`."""
    out: dict[str, Component] = {}

    def add(key: str, **kw) -> None:
        out[key] = Component(unique_id=f"{uid}_{key}", **kw)

    def power(key: str, name: str, path: str, **kw) -> None:
        add(key, p="sensor", name=name, state_topic=f"{root}/{path}", device_class="power",
            unit_of_measurement="W", state_class="measurement", **kw)

    def register(key: str, name: str, path: str, **kw) -> None:
        add(key, p="sensor", name=name, state_topic=f"{root}/{path}", device_class="energy",
            unit_of_measurement="Wh", state_class="total_increasing", **kw)

    def qh_energy(key: str, name: str, topic: str, field_: str) -> None:
        add(key, p="sensor", name=name, state_topic=topic, device_class="energy", unit_of_measurement="Wh",
            state_class="total", value_template=f"{{{{ value_json.{field_} }}}}",
            last_reset_value_template="{{ value_json.start }}", enabled_by_default=False)

    power("import_power", "Import power", T.import_w)
    power("export_power", "Export power", T.export_w)
    power("net_power", "Net power", T.net_w)
    register("import_energy", "Import energy", T.import_total)
    register("export_energy", "Export energy", T.export_total)
    for direction, tariffs in (("import", view.tariffs_import), ("export", view.tariffs_export)):
        for t in tariffs:
            register(f"{direction}_energy_t{t}", f"{direction.capitalize()} energy tariff {t}", T.register(direction, t))
    if view.tariff_indicator:
        add("tariff", p="sensor", name="Active tariff", state_topic=f"{root}/{T.tariff}", icon="mdi:clock-time-eight")
    for n in view.phases:
        add(f"l{n}_voltage", p="sensor", name=f"Voltage L{n}", state_topic=f"{root}/{T.phase(n, 'voltage_v')}",
            device_class="voltage", unit_of_measurement="V", state_class="measurement", suggested_display_precision=1)
        add(f"l{n}_current", p="sensor", name=f"Current L{n}", state_topic=f"{root}/{T.phase(n, 'current_a')}",
            device_class="current", unit_of_measurement="A", state_class="measurement", suggested_display_precision=1)
        power(f"l{n}_import_power", f"Import power L{n}", T.phase(n, "import_w"))
        if view.phase_export:
            power(f"l{n}_export_power", f"Export power L{n}", T.phase(n, "export_w"))
    for s in view.submeters:
        if s.kind in ("gas", "water"):
            add(s.key, p="sensor", name=f"{s.kind.capitalize()}" + (f" {s.channel}" if s.channel != 1 else ""),
                state_topic=f"{root}/{T.sub(s)}", device_class=s.kind, unit_of_measurement=s.unit,
                state_class="total_increasing", suggested_display_precision=3)
        else:
            add(s.key, p="sensor", name=f"{s.kind.capitalize()} {s.channel}", state_topic=f"{root}/{T.sub(s)}",
                device_class="energy", unit_of_measurement=s.unit, state_class="total_increasing")
    for meter in view.production:
        register(f"production_{slug(meter)}", f"Production {meter}", T.production(meter, "energy_wh_total"),
                 icon="mdi:solar-power")
        power(f"production_{slug(meter)}_power", f"Production power {meter}", T.production(meter, "power_w"),
              icon="mdi:solar-power")
    # the capacity tariff: this month's peak, the quarter-hour's projection against it
    power("projected_demand", "Quarter-hour demand (projected)", T.projected)
    if view.meter_demand:
        power("meter_demand", "Quarter-hour demand (meter)", T.demand)
    if view.month_peak:
        power("month_peak", "Month peak demand", T.month_peak)
        power("peak_margin", "Margin to month peak", T.peak_margin, icon="mdi:arrow-collapse-up")
        add("above_month_peak", p="binary_sensor", name="New month peak expected", device_class="problem",
            state_topic=f"{root}/{T.peak_margin}",
            value_template="{{ 'ON' if value | float(0) < 0 else 'OFF' }}")
    qh_energy("quarter_import", "Quarter-hour import", topics.qh_running, "import_wh")
    qh_energy("quarter_export", "Quarter-hour export", topics.qh_running, "export_wh")
    qh_energy("last_quarter_import", "Last quarter-hour import", topics.qh_last, "import_wh")
    qh_energy("last_quarter_export", "Last quarter-hour export", topics.qh_last, "export_wh")
    # the consume-now signal
    add("signal", p="sensor", name="Consume-now signal", state_topic=topics.signal_state, device_class="enum",
        options=["green", "amber", "red"], icon="mdi:traffic-light")
    power("headroom", "Surplus headroom", "signal/headroom_w")
    # the page's sentence (services/signal_words.py): held or not, the quarter-hour's balance
    add("reason_text", p="sensor", name="Consume-now signal in words", state_topic=topics.reason_text,
        icon="mdi:message-text")
    add("consume_now", p="binary_sensor", name="Consume now", state_topic=topics.signal_state,
        value_template="{{ 'ON' if value == 'green' else 'OFF' }}", icon="mdi:solar-power")
    add("reduce_now", p="binary_sensor", name="Reduce now", state_topic=topics.signal, device_class="problem",
        value_template="{{ 'ON' if value_json.reason == 'reduce_now' else 'OFF' }}")
    add("collective_consume", p="binary_sensor", name="Community asks to consume now", state_topic=topics.signal,
        value_template="{{ 'ON' if value_json.reason == 'collective_consume' else 'OFF' }}", icon="mdi:account-group")
    add("alert_message", p="sensor", name="Community alert", state_topic=topics.signal, icon="mdi:message-alert",
        value_template="{{ value_json.alert.message if value_json.alert else '' }}")
    # diagnostics: available while the service is, whatever the meter does
    diag = {"entity_category": "diagnostic", "availability": [{"topic": topics.status}]}
    # readings kept out as damaged or implausible (gateway/plausibility.py); per reason and per meter
    # in the attributes. No state_class: the daemon's counts restart with it.
    add("refused", p="sensor", name="Refused readings", state_topic=topics.refused, icon="mdi:shield-alert",
        json_attributes_topic=topics.metering, **diag)
    add("outbox_backlog", p="sensor", name="Outbox backlog", state_topic=topics.outbox, icon="mdi:tray-full",
        unit_of_measurement="quarter-hours", state_class="measurement", **diag)
    add("last_push", p="sensor", name="Last push", state_topic=topics.last_push, device_class="timestamp", **diag)
    add("version", p="sensor", name="Version", state_topic=topics.version, icon="mdi:tag", **diag)
    add("started", p="sensor", name="Gateway started", state_topic=topics.started, device_class="timestamp", **diag)
    return {k: c.dump() for k, c in out.items()}


def device_config(topics, view: MeterView, *, uid: str, configuration_url: str | None,
                  removed: dict[str, str] | None = None) -> dict:
    """The device-based discovery payload (``<prefix>/device/<node>/config``, Home Assistant 2024.12+).

    ``removed``: components published before and gone now (a production meter removed), sent once as
    ``{"p": platform}``, which is how Home Assistant is told to delete them.
    """
    cmps = components(topics.root, uid, view, topics)
    for key, platform in (removed or {}).items():
        if key not in cmps:
            cmps[key] = {"p": platform}
    dev: dict = {"ids": [uid], "name": f"Quartier {topics.node}", "mf": "Quartier",
                 "mdl": "P1 metering gateway", "sw": VERSION}
    if view.serial:
        dev["sn"] = view.serial
    if configuration_url:
        dev["cu"] = configuration_url
    return {
        "dev": dev,
        "o": {"name": "quartier", "sw": VERSION},
        "availability": [{"topic": topics.status}, {"topic": topics.gateway}],
        "availability_mode": "all",
        "qos": 1,
        "cmps": cmps,
    }

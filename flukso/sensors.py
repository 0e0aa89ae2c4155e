"""Which Fluksometer sensor is what: discovery from the device's sensor config, and roles.

A Fluksometer does not say what a clamp is around. The installer does, in the configuration: each
sensor id gets a *role* and the *meter* whose quarter-hours it feeds.

==============  ========================================  =====================================
role            the sensor measures                       becomes, for its meter
==============  ========================================  =====================================
grid_import     energy taken from the grid                import register, import power
grid_export     energy injected into the grid             export register, export power
grid_net        signed net (FLM02 P1 port): + import      split into import and export
production      a PV inverter's circuit (a producer)      export register, export power
consumption     one consuming circuit (heat pump, EV)     import register, import power
==============  ========================================  =====================================

Production and consumption circuits are meters of their own (their own ``meter_id``): a producer's
Flukso on its inverter circuit yields the producer's quarter-hours, export = production, while the
grid roles of the same Flukso feed the household's grid meter. Several sensors with the same role on
one meter add up (two PV strings on two clamps, three phases on three clamps).

Every mapped sensor must publish a counter: quarter-hours come from counters (register differences),
never from gauges. Every FLM02 sensor does, and so does every FLM03 ``pplus``/``pminus`` sensor; an
FLM03 ``vrms``/``irms``/``pf`` sensor (``data_type`` gauge) does not.

Sensor config topic ``/device/<devid>/config/sensor`` (retained): a JSON object keyed by sensor
number; FLM02 writes its UCI options (strings: ``"enable": "1"``, ``"class": "analog"``), FLM03 adds
``subtype`` (``pplus``, ``pminus``, ``q1``..``q4``, ``vrms``, ...) and ``data_type``
(``counter``/``gauge``) and lists unassigned sensors by id only. Non-numeric keys (``tmpo``,
``mqtt``, ``daemon``) are device settings, not sensors.

Pure: no paho, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flukso.payload import SENSOR_ID


class Role(StrEnum):
    GRID_IMPORT = "grid_import"
    GRID_EXPORT = "grid_export"
    GRID_NET = "grid_net"
    PRODUCTION = "production"
    CONSUMPTION = "consumption"


IMPORT_ROLES = frozenset({Role.GRID_IMPORT, Role.CONSUMPTION})
EXPORT_ROLES = frozenset({Role.GRID_EXPORT, Role.PRODUCTION})
_GRID_ROLES = frozenset({Role.GRID_IMPORT, Role.GRID_EXPORT})


class RoleError(ValueError):
    """A role mapping that cannot describe a meter, worded for the person editing the config."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """One configured sensor: its id, its role, the meter it feeds."""

    sensor_id: str
    role: Role
    meter_id: str


@dataclass(frozen=True, slots=True)
class MeterPlan:
    """The sensors that make one meter's registers.

    ``import_sensors`` and ``export_sensors`` are monotone counters summed into the import and export
    registers; ``net_sensor`` (FLM02 P1 port) is a signed counter split into both.
    """

    meter_id: str
    import_sensors: tuple[str, ...] = ()
    export_sensors: tuple[str, ...] = ()
    net_sensor: str | None = None

    @property
    def counter_sensors(self) -> tuple[str, ...]:
        return self.import_sensors + self.export_sensors + ((self.net_sensor,) if self.net_sensor else ())


def normalise_sensor_id(sensor_id: str) -> str:
    """Sensor ids are 32 hex digits; the firmware writes them in lower case."""
    sid = sensor_id.strip().lower()
    if not SENSOR_ID.fullmatch(sid):
        raise RoleError(f"sensor id {sensor_id!r} is not 32 hexadecimal digits")
    return sid


def plan_meters(assignments: Iterable[Assignment]) -> dict[str, MeterPlan]:
    """Group assignments into meters; raise :class:`RoleError` for a mapping that makes no meter.

    Rules: a sensor has one role; a meter is either a grid meter (``grid_net`` alone, or
    ``grid_import``/``grid_export`` sensors), a production meter or a consumption meter — a meter
    mixing them would add a circuit's energy to the grid's and settle it twice.
    """
    seen: dict[str, Assignment] = {}
    by_meter: dict[str, list[Assignment]] = {}
    for a in assignments:
        if a.sensor_id in seen:
            raise RoleError(f"sensor {a.sensor_id} is mapped twice ({seen[a.sensor_id].role} and {a.role})")
        seen[a.sensor_id] = a
        by_meter.setdefault(a.meter_id, []).append(a)
    plans = {}
    for meter_id, items in by_meter.items():
        roles = {a.role for a in items}
        if Role.GRID_NET in roles and len(items) > 1:
            raise RoleError(
                f"meter {meter_id!r}: grid_net (signed net counter) must be the meter's only sensor; "
                f"it already carries both directions"
            )
        if len(roles) > 1 and not roles <= _GRID_ROLES:
            raise RoleError(
                f"meter {meter_id!r} mixes roles {', '.join(sorted(roles))}: production and consumption "
                f"circuits are meters of their own (give them their own meter_id)"
            )
        plans[meter_id] = MeterPlan(
            meter_id,
            import_sensors=tuple(a.sensor_id for a in items if a.role in IMPORT_ROLES),
            export_sensors=tuple(a.sensor_id for a in items if a.role in EXPORT_ROLES),
            net_sensor=next((a.sensor_id for a in items if a.role is Role.GRID_NET), None),
        )
    return plans


# -- discovery ------------------------------------------------------------------------------------


class _Entry(BaseModel):
    """One numbered entry of the sensor config; both firmware spellings, lenient on types."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str | None = None
    enable: bool = False
    type: str | None = None
    subtype: str | None = None
    data_type: str | None = None
    sensor_class: str | None = Field(default=None, alias="class")
    function: str | None = None
    name: str | None = None
    port: list[int] = Field(default_factory=list)

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, v: object) -> object:
        if v is None:
            return []
        return v if isinstance(v, list) else [v]


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """A sensor as the Fluksometer describes it."""

    number: str
    sensor_id: str
    enabled: bool
    type: str | None  # electricity | water | gas
    subtype: str | None  # FLM03: pplus, pminus, q1..q4, vrms, irms, pf, ...
    data_type: str | None  # FLM03: counter | gauge
    sensor_class: str | None  # FLM02: analog | pulse | cosem; FLM03: ct | pulse | uart
    name: str | None
    ports: tuple[int, ...]


class SensorConfigError(ValueError):
    pass


def parse_sensor_config(payload: bytes) -> dict[str, SensorInfo]:
    """The retained sensor config → sensors keyed by id. Raises :class:`SensorConfigError`."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SensorConfigError(f"sensor config is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SensorConfigError("sensor config is not a JSON object")
    out: dict[str, SensorInfo] = {}
    for number, raw in data.items():
        if not str(number).isdigit() or not isinstance(raw, dict):
            continue  # tmpo, mqtt, daemon: device settings
        try:
            e = _Entry.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise SensorConfigError(
                f"sensor {number}: {'.'.join(map(str, first['loc']))}: {first['msg']}"
            ) from None
        if e.id is None or not SENSOR_ID.fullmatch(e.id.lower()):
            continue
        out[e.id.lower()] = SensorInfo(
            number=str(number),
            sensor_id=e.id.lower(),
            enabled=e.enable,
            type=e.type,
            subtype=e.subtype,
            data_type=e.data_type,
            sensor_class=e.sensor_class,
            name=e.name or e.function,
            ports=tuple(e.port),
        )
    return out


def check_against_device(assignments: Iterable[Assignment], sensors: Mapping[str, SensorInfo]) -> list[str]:
    """What the device's own sensor config says against the mapping: one sentence per problem."""
    problems = []
    for a in assignments:
        info = sensors.get(a.sensor_id)
        if info is None:
            problems.append(f"sensor {a.sensor_id} ({a.role}) is not in the Fluksometer's sensor config")
            continue
        if not info.enabled:
            problems.append(f"sensor {a.sensor_id} ({a.role}) is disabled on the Fluksometer")
        if info.type not in (None, "electricity"):
            problems.append(f"sensor {a.sensor_id} ({a.role}) measures {info.type}, not electricity")
        if info.data_type == "gauge":
            problems.append(f"sensor {a.sensor_id} ({a.role}) publishes no counter (data_type gauge)")
        if info.subtype == "pminus" and a.role in IMPORT_ROLES:
            problems.append(f"sensor {a.sensor_id} is a pminus (export) sensor mapped as {a.role}")
        if info.subtype == "pplus" and a.role is Role.GRID_EXPORT:
            problems.append(f"sensor {a.sensor_id} is a pplus (import) sensor mapped as {a.role}")
    return problems


def suggest_roles(sensors: Mapping[str, SensorInfo]) -> dict[str, Role]:
    """Roles an installer will usually want, for ``quartier flukso listen`` to print.

    Only the unambiguous cases: the P1 port's ``pplus``/``pminus`` (FLM03) and an FLM02 ``cosem``
    (P1) sensor. What a clamp is around cannot be guessed.
    """
    out: dict[str, Role] = {}
    for sid, s in sensors.items():
        if not s.enabled or s.type not in (None, "electricity"):
            continue
        if s.sensor_class == "cosem":
            out[sid] = Role.GRID_NET
        elif s.sensor_class == "uart" and s.subtype == "pplus":
            out[sid] = Role.GRID_IMPORT
        elif s.sensor_class == "uart" and s.subtype == "pminus":
            out[sid] = Role.GRID_EXPORT
    return out

"""Fluksometer MQTT topics and payloads → typed samples. Pure: no paho, no clock, no I/O.

A Fluksometer publishes, on its own broker (port 1883):

- ``/sensor/<sid>/gauge``   ``[unix_ts, value, "W"]``  instantaneous power (``L/s`` or ``L/day``
  for water and gas sensors);
- ``/sensor/<sid>/counter`` ``[unix_ts, value, "Wh"]`` cumulative energy (``L`` for water and gas);
- ``/device/<devid>/config/sensor`` a retained JSON object describing the sensors (see
  :mod:`flukso.sensors`).

Two firmware generations write these differently, and both are accepted as they are:

- FLM02: ``[1750496400,1234,"W"]`` — integers, no spaces, retained; its P1 sensor's gauge is *signed*
  net power and its counter a net register that falls while the house exports;
- FLM03: ``[1750496400, 1234.567, "W"]`` — three decimals, not retained, direction split over
  ``pplus`` / ``pminus`` sensors.

Everything here is a boundary check: a payload that is not exactly a three-element JSON array of an
integer timestamp, a finite number and a known unit is refused with :class:`PayloadError`, whose
message names the topic and the payload (shortened), so the one log line about it says what came in.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

Kind = Literal["gauge", "counter"]

# fluksod drops samples stamped before this (2009-02-13): the Fluksometer's clock was not set yet
TIMESTAMP_MIN = 1234567890

SENSOR_ID = re.compile(r"[0-9a-f]{32}")
DEVICE_ID = re.compile(r"[0-9a-f]{32}")
_SENSOR_TOPIC = re.compile(r"/sensor/([^/]+)/(gauge|counter)")
_CONFIG_TOPIC = re.compile(r"/device/([^/]+)/config/sensor")

# unit → (quantity, scale to the base unit of that quantity)
GAUGE_UNITS: dict[str, tuple[str, Decimal]] = {
    "W": ("power", Decimal(1)),
    "L/s": ("flow", Decimal(1)),
    "L/day": ("flow", Decimal(1) / Decimal(86400)),  # FLM02 water and gas gauges (fluksod LAN_UNIT)
}
COUNTER_UNITS: dict[str, tuple[str, Decimal]] = {
    "Wh": ("energy", Decimal(1)),
    "L": ("volume", Decimal(1)),
}
_MAX_SHOWN = 200
_MAX_VALUE = 10**15  # far above any 32-bit Fluksometer register or household power


class PayloadError(ValueError):
    """A topic or payload that cannot be used. ``kind`` says which counter it goes to."""

    def __init__(self, kind: str, reason: str, topic: str, payload: bytes | str) -> None:
        self.kind = kind  # "malformed" | "unknown_unit"
        self.reason = reason
        self.topic = topic
        self.payload = shown(payload)
        super().__init__(f"{topic} {self.payload}: {reason}")


def shown(payload: bytes | str) -> str:
    """A payload as it can go on one log line: decoded leniently, control characters escaped."""
    size = len(payload)
    text = payload.decode("utf-8", "backslashreplace") if isinstance(payload, bytes) else payload
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + f"...({size} {'bytes' if isinstance(payload, bytes) else 'chars'})"


@dataclass(frozen=True, slots=True)
class SensorTopic:
    sensor_id: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class Sample:
    """One sensor value as the Fluksometer published it.

    ``value`` is exact (a Decimal for FLM03's three decimals, an int for FLM02), in the unit given;
    ``quantity`` is what the unit measures: power, flow, energy or volume.
    """

    sensor_id: str
    kind: Kind
    ts: int  # unix seconds, the Fluksometer's clock
    value: Decimal | int
    unit: str
    quantity: str


def parse_sensor_topic(topic: str) -> SensorTopic | None:
    """``/sensor/<sid>/gauge|counter`` → its parts; ``None`` for any other topic (not ours).

    The sensor id is not checked here: an unmapped sensor is ignored before its payload is looked at.
    """
    m = _SENSOR_TOPIC.fullmatch(topic)
    if m is None:
        return None
    return SensorTopic(m.group(1), m.group(2))  # type: ignore[arg-type]


def parse_config_topic(topic: str) -> str | None:
    """``/device/<devid>/config/sensor`` → the device id; ``None`` otherwise."""
    m = _CONFIG_TOPIC.fullmatch(topic)
    return m.group(1) if m else None


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def decode_sample(topic: str, payload: bytes) -> Sample:
    """Decode one sensor message; raise :class:`PayloadError` naming topic and payload.

    ``[ts, value, unit]``: ``ts`` an integer ≥ 2009-02-13 (a float such as ``1750496400.0`` is
    refused: no firmware writes one, so it is not a Fluksometer speaking), ``value`` a finite JSON
    number (no NaN, no Infinity, no string, no boolean), ``unit`` one of the units of that topic kind.
    """
    st = parse_sensor_topic(topic)
    if st is None:
        raise PayloadError("malformed", "not a /sensor/<id>/gauge|counter topic", topic, payload)
    if not SENSOR_ID.fullmatch(st.sensor_id):
        raise PayloadError("malformed", "sensor id is not 32 lower-case hex digits", topic, payload)
    try:
        text = payload.decode("utf-8")
        data = json.loads(text, parse_float=Decimal, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise PayloadError("malformed", "payload is not UTF-8", topic, payload) from None
    except (ValueError, InvalidOperation) as exc:
        raise PayloadError("malformed", f"not JSON ({exc})", topic, payload) from None
    if not isinstance(data, list) or len(data) != 3:
        raise PayloadError("malformed", "expected a JSON array [timestamp, value, unit]", topic, payload)
    ts, value, unit = data
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise PayloadError("malformed", "timestamp is not an integer", topic, payload)
    if ts < TIMESTAMP_MIN:
        raise PayloadError("malformed", "timestamp before 2009-02-13: the Fluksometer's clock is not set", topic, payload)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise PayloadError("malformed", "value is not a number", topic, payload)
    if isinstance(value, Decimal) and not value.is_finite():
        raise PayloadError("malformed", "value is not finite", topic, payload)
    if abs(value) >= _MAX_VALUE:
        raise PayloadError("malformed", "value out of range", topic, payload)
    if not isinstance(unit, str):
        raise PayloadError("malformed", "unit is not a string", topic, payload)
    units = GAUGE_UNITS if st.kind == "gauge" else COUNTER_UNITS
    if unit not in units:
        raise PayloadError("unknown_unit", f"unknown {st.kind} unit {unit!r} (expected {', '.join(units)})", topic, payload)
    return Sample(st.sensor_id, st.kind, ts, value, unit, units[unit][0])


def watts(sample: Sample) -> float:
    """A gauge in W as a float (live power only: never summed into energy)."""
    return float(sample.value)


def floor_wh(sample: Sample) -> int:
    """A counter in whole Wh, rounded down: a register that only counts what has fully passed.

    Rounding down is monotone, so the differences of floored values never go negative and add up
    exactly to the difference of the last and first floor, as P1 registers in whole Wh do.
    """
    return math.floor(sample.value)

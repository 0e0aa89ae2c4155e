"""Sub-meter plausibility: an MBus gas or water register (compteur de gaz, gasmeter) is a claim too.

The P1 telegram relays each MBus channel's last register with the sub-meter's own capture time
(0-n:24.2.1: every 5 minutes on DSMR 5, every hour on DSMR 4), repeated in every telegram in between.
Home Assistant counts a ``total_increasing`` gas sensor from these values: one glitched 99999.999 is
a huge consumption followed by a "reset". So each channel of each meter has its own gate, the
electricity gate's rules (gateway/plausibility.py) applied to the channel's register and own time:

- the register never goes down (``register_drop``), and grows at most by the channel's maximum flow
  × the time between the sub-meter's own timestamps (``implausible_step``): gas 10 m³/h (the
  maximum of a G6 household meter), water 5 m³/h (a Q3 = 4 m³/h household meter, with margin), no
  bound for other kinds unless configured (``sources[].max_flow``, per kind, in the channel's unit
  per hour);
- a drop, a step or a capture time going backwards (``time_jump``) is *held*, and believed (a meter
  exchange or reset, ``reset``; a clock corrected backwards, ``clock_step``) once ``confirm``
  consistent readings continue it: no state refuses an honest stream for ever. An honest reading
  continuing the last accepted one discards the held ones, each counted as refused;
- a capture time ahead of a synchronised Pi clock by more than the clock tolerance is ``future``;
  one far *behind* is not an error (a sub-meter whose radio link is lost keeps its last capture);
- NaN, infinite or negative values are ``invalid_value``; a unit that changes (m3 → GJ) is
  ``unit_change``, believed (a new device on the channel) only once ``confirm`` readings at distinct
  times agree on it;
- the same capture time and value again is *no news*, not an error (telegrams arrive every second);
  the same capture time with another value is refused at once.

What the caller publishes for a channel is always its last accepted reading (``ChannelGate.last``):
a refused or held value never reaches the live message, the MQTT feed or InfluxDB, and the channel
does not vanish from them meanwhile (Home Assistant would delete its entity).

Pure: no I/O, no clock of its own (the caller passes the Pi's time), no asyncio, no MQTT.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from gateway.model import Reading, SubMeterReading
from gateway.plausibility import DEFAULT_CLOCK_TOLERANCE_S, DEFAULT_CONFIRM, Limits, MeterGate

# in the channel's unit per hour (m³/h): a G6 gas meter's Qmax; a Q3 4 m³/h water meter, with margin
DEFAULT_MAX_FLOW: Mapping[str, float] = MappingProxyType({"gas": 10.0, "water": 5.0})
_SCALE = 1000  # registers judged to a thousandth of their unit (dm³): DSMR writes MBus values with 3 decimals
_NO_BOUND = 1e15  # per hour, in thousandths: no step bound (heat, cold, other kinds)
_NO_JUMP_S = 10 * 366 * 86400.0  # a gap between captures is never an error by itself (hourly, link lost)


class SubReason(StrEnum):
    INVALID_VALUE = "invalid_value"  # NaN, infinite or negative
    UNIT_CHANGE = "unit_change"  # the channel's unit changed (m3 -> GJ)
    IMPLAUSIBLE_STEP = "implausible_step"  # more than the maximum flow over the time between captures
    REGISTER_DROP = "register_drop"  # the register went down
    TIME_JUMP = "time_jump"  # the capture time went backwards (or stayed, with another value)
    FUTURE = "future"  # the capture time is ahead of a synchronised Pi clock


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """Bounds for every channel of a source. ``max_flow``: per kind, unit per hour (absent: no
    bound); ``clock_tolerance_s`` None: no check against the Pi clock (replay, simulated meters)."""

    max_flow: Mapping[str, float] = field(default_factory=lambda: DEFAULT_MAX_FLOW)
    clock_tolerance_s: float | None = DEFAULT_CLOCK_TOLERANCE_S
    confirm: int = DEFAULT_CONFIRM

    def __post_init__(self) -> None:
        for kind, flow in self.max_flow.items():
            if not (math.isfinite(flow) and flow > 0):
                raise ValueError(f"max_flow for {kind} must be a finite number > 0, not {flow!r}")

    def limits(self, kind: str) -> Limits:
        """The electricity gate's bounds for one channel: ``max_power_w`` is the flow in thousandths."""
        flow = self.max_flow.get(kind)
        return Limits(max_power_w=flow * _SCALE if flow is not None else _NO_BOUND, clock_tolerance_s=None,
                      confirm=self.confirm, max_jump_s=_NO_JUMP_S, cadence_factor=None)


@dataclass(frozen=True, slots=True)
class SubRefusal:
    reason: SubReason
    reading: SubMeterReading
    detail: str


@dataclass(slots=True)
class SubDecision:
    """The channel's readings now accepted (in order), whether the first of them starts a new register
    (a confirmed exchange or reset) or follows a capture clock moved back, the refusals settled, and
    whether the reading is held."""

    accepted: list[SubMeterReading] = field(default_factory=list)
    reset: bool = False
    clock_step: bool = False  # the first of them follows a confirmed capture clock moved back
    refused: list[SubRefusal] = field(default_factory=list)
    held: bool = False


def _unit(u: str) -> str:
    return u.strip().lower().replace("³", "3")


def _thousandths(m: SubMeterReading) -> int:
    return round(m.value * _SCALE)


@dataclass(slots=True)
class ChannelGate:
    """One MBus channel of one meter: the last accepted reading and what is held."""

    meter_id: str
    channel: int
    kind: str
    limits: FlowLimits = field(default_factory=FlowLimits)
    gate: MeterGate = field(init=False)
    last: SubMeterReading | None = None  # the last accepted reading: what the caller publishes
    _new_unit: tuple[str, set[datetime]] | None = None  # a unit change and the capture times showing it

    def __post_init__(self) -> None:
        self.gate = MeterGate(f"{self.meter_id}/{self.channel}", self.limits.limits(self.kind))

    @classmethod
    def resume(cls, meter_id: str, limits: FlowLimits, last: SubMeterReading) -> ChannelGate:
        """A gate resuming from a stored accepted reading (a restarted daemon): a first reading that
        is a glitch is then judged, not taken as it is."""
        g = cls(meter_id, last.channel, last.kind, limits)
        g.gate.last = g._pseudo(last, last.time)  # type: ignore[arg-type]
        g.last = last
        return g

    def _pseudo(self, m: SubMeterReading, t: datetime) -> Reading:
        """The channel as a one-register meter, carrying the original reading along."""
        return Reading(self.gate.meter_id, t, {"0": _thousandths(m)}, {}, source="mbus", submeters=(m,))

    def check(self, m: SubMeterReading, *, reading_time: datetime, now: datetime | None = None) -> SubDecision:
        """Judge one channel reading. ``reading_time``: the telegram's time, used when the channel has
        no capture time of its own (DSMR 2.2); ``now``: the synchronised Pi clock, or None."""
        d = SubDecision()
        t = m.time or reading_time
        if not (math.isfinite(m.value) and m.value >= 0):
            return self._refuse(d, SubReason.INVALID_VALUE, m, f"value {m.value!r}")
        tol = self.limits.clock_tolerance_s
        if now is not None and tol is not None and (t - now).total_seconds() > tol:
            return self._refuse(d, SubReason.FUTURE, m, f"capture time {t.isoformat()} is "
                                                        f"{(t - now).total_seconds():+.0f} s from the Pi clock")
        if self.last is not None and (_unit(m.unit) != _unit(self.last.unit) or m.kind != self.kind):
            return self._unit_change(d, m, t)
        self._new_unit = None
        for held in self.gate.held:  # the same held capture again: still held, not a new reading
            if held.time == t and held.import_wh["0"] == _thousandths(m):
                d.held = True
                return d
        last = self.gate.last
        if last is not None and last.time == t:  # no new capture: the same reading again, or a value alone
            if last.import_wh["0"] == _thousandths(m):
                d.held = bool(self.gate.series)
                return d
            reason = SubReason.IMPLAUSIBLE_STEP if _thousandths(m) > last.import_wh["0"] else SubReason.REGISTER_DROP
            return self._refuse(d, reason, m, f"value {m.value} {m.unit} at capture time {t.isoformat()}, "
                                              f"already read as {last.submeters[0].value}")
        decision = self.gate.check(self._pseudo(m, t))
        for r in decision.refused:
            d.refused.append(SubRefusal(SubReason(r.reason.value), r.reading.submeters[0], r.detail))  # type: ignore[union-attr]
        for r, change in decision.accepted:
            d.reset = d.reset or (not d.accepted and change.reset)
            d.clock_step = d.clock_step or (not d.accepted and change.clock_step)
            d.accepted.append(r.submeters[0])
        if d.accepted:
            self.last = d.accepted[-1]
        d.held = decision.held
        return d

    def _refuse(self, d: SubDecision, reason: SubReason, m: SubMeterReading, detail: str) -> SubDecision:
        d.refused.append(SubRefusal(reason, m, detail))
        return d

    def _unit_change(self, d: SubDecision, m: SubMeterReading, t: datetime) -> SubDecision:
        """Refused, unless ``confirm`` readings at distinct capture times agree on the new unit (or
        device kind, 0-n:24.1.0): then the channel starts afresh (a new device), its first reading a reset."""
        assert self.last is not None
        unit = f"{m.kind} {_unit(m.unit)}"
        if self._new_unit is None or self._new_unit[0] != unit:
            self._new_unit = (unit, set())
        self._new_unit[1].add(t)
        if len(self._new_unit[1]) < self.limits.confirm:
            return self._refuse(d, SubReason.UNIT_CHANGE, m, f"{m.kind} in {m.unit!r}, was {self.kind} in {self.last.unit!r}")
        self._new_unit = None
        self.kind = m.kind
        for sr in self.gate.series:  # held under the old unit and never continued
            d.refused += [SubRefusal(SubReason(sr.reason.value), h.submeters[0], sr.detail) for h in sr.readings]
        self.gate = MeterGate(self.gate.meter_id, self.limits.limits(self.kind))
        self.gate.check(self._pseudo(m, t))
        self.last = m
        d.accepted.append(m)
        d.reset = True
        return d


def refusal_key(kind: str, reason: SubReason | str) -> str:
    """The health counter of a sub-meter refusal, beside the electricity reasons: ``gas_register_drop``."""
    return f"{kind}_{reason}"

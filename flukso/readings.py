"""Fluksometer samples → :class:`~gateway.model.Reading` s, one meter at a time. Pure: no paho, no clock.

**Registers.** A Reading carries cumulative registers in whole Wh, keyed ``"0"`` (the total, as OBIS
``1.8.0``: a Fluksometer knows no tariffs). Counters become registers by rounding down
(:func:`flukso.payload.floor_wh`); sensors with the same direction on one meter add up. Gauges never
make energy: they give the Reading's live power only.

**The FLM02 net counter** (role ``grid_net``) counts import minus export and falls while the house
exports. It is split into two monotone registers: import = running sum of its rises, export =
running sum of its falls, kept so that ``import - export == net`` at every sample. After a restart
the split resumes from the last committed quarter-hour's end registers (the aggregator's baseline,
read from the store): the net value they stand for is ``import - export``, so the first new sample's
difference from it is booked to import or export by its sign. Nothing is counted twice; what the
daemon did not see while it was down is booked by the *net* change across the gap (a gap longer than
``max_interpolation_gap_s`` makes those quarter-hours ``estimated``, as for P1).

**When a Reading is emitted.** A Fluksometer publishes each sensor separately, all stamped with the
same second (FLM03 ``pplus`` and ``pminus`` counters of second ``T``). A meter's Reading for ``T`` is
emitted when a message of that meter stamped after ``T`` arrives (the next gauge, one second later),
or on :meth:`ReadingAssembler.flush` (the client calls it when the broker has been quiet for a
moment). So every sensor's value for ``T`` is in the Reading for ``T``. A meter is emitted only once
all its counter sensors have reported: a register that is not known yet must not be taken as zero.

**Time** (:class:`TimePolicy`). The Fluksometer stamps samples with its own NTP clock, which the
gateway does not trust on its own; the Pi's clock is the reference.

- ``clock = "pi"`` (the default). Pi clock synchronised (or unknown, off Linux): a sample stamped
  more than ``future_tolerance_s`` ahead of it is refused (*future*), one older than
  ``stale_after_s`` is *stale* (a retained value from a Fluksometer that went quiet: recognised by
  its timestamp, never taken as live). An accepted sample is within that tolerance of the Pi clock,
  and the Reading is stamped with the sample's own second, tagged ``synced``: it keeps the order and
  spacing the Fluksometer measured, so samples delivered late but within ``stale_after_s`` (a QoS 1
  backlog after a short reconnect) land in the quarter-hour they belong to; an older backlog is
  skipped, and the next counter value carries its energy (the boundaries in between are
  interpolated, as after any gap). Pi clock *not* synchronised (a Pi without RTC before NTP answers):
  the sample's time cannot be checked against anything trusted, so Readings are stamped with the
  Pi's clock on receipt, tagged ``unsynced`` (their quarter-hours are flagged ``clock_unsynced``),
  and retained deliveries, whose age cannot be judged, are skipped as stale.
- ``clock = "sensor"``: the Fluksometer's timestamps are taken as they are (tagged ``meter``): for
  an emulator running faster than real time, or a Pi without a synchronised clock next to a
  Fluksometer that has one. *Future* is still checked against a synchronised Pi clock; *stale*
  means older than ``stale_after_s`` before the newest sample seen.

In both modes a counter sample at or before the meter's restart baseline is stale (it is already in
a committed quarter-hour).

**Bad input** raises :class:`Rejected` (``backwards``, ``future``, ``unknown_unit``, ``malformed``);
the client counts it, logs it and goes on. A monotone counter that falls is refused; if it keeps
reporting consistently lower values ``reset_confirm`` times in a row it was reset (a replaced
Fluksometer), and the lower series is accepted: the aggregator then counts the interval across the
reset as zero and flags the quarter-hour ``register_reset``, as for a replaced P1 meter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

from flukso.payload import Sample, floor_wh, watts
from flukso.sensors import MeterPlan, Role
from gateway.model import ClockQuality, QuarterHour, Reading

TOTAL = "0"  # register key: the total, as OBIS x.8.0
UTC = timezone.utc
_QUANTITY = {"gauge": "power", "counter": "energy"}


@dataclass(frozen=True, slots=True)
class TimePolicy:
    """How sample timestamps are judged and which clock stamps Readings (see the module docstring)."""

    clock: Literal["pi", "sensor"] = "pi"
    stale_after_s: float = 120.0
    future_tolerance_s: float = 10.0
    reset_confirm: int = 3


class Rejected(Exception):
    """A sample that is not used. ``kind``: backwards | future | unknown_unit | malformed (bad
    input, logged) or stale | duplicate (expected in normal operation, counted only)."""

    def __init__(self, kind: str, reason: str, meter_id: str | None = None) -> None:
        self.kind = kind
        self.reason = reason
        self.meter_id = meter_id
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class LivePower:
    meter_id: str
    time: datetime
    import_w: float | None
    export_w: float | None


@dataclass(slots=True)
class _Sensor:
    sensor_id: str
    role: Role
    meter_id: str
    last_ts: int | None = None  # of the last accepted counter sample
    value: int | None = None  # last accepted counter, whole Wh
    backwards: int = 0  # consecutive refused lower values
    backwards_last: int | None = None
    gauge_ts: int | None = None
    gauge_w: float | None = None


@dataclass(slots=True)
class _Meter:
    plan: MeterPlan
    baseline_loaded: bool = False
    baseline_end: int | None = None  # unix s of the last committed quarter-hour's end
    baseline_imp: int = 0
    baseline_exp: int = 0
    emitted: datetime | None = None
    emitted_ts: int | None = None  # the sample second of the last emitted Reading
    pending_ts: int | None = None
    split_imp: int = 0  # grid_net split registers
    split_exp: int = 0
    last_net: int | None = None
    incomplete_noted: bool = False


@dataclass
class ReadingAssembler:
    """Samples of one Fluksometer in, Readings of its meters out (see the module docstring).

    ``baseline(meter_id)`` returns the meter's last committed quarter-hour (``Store.last_boundary``).
    ``notes`` collects noteworthy events (counter reset, meter waiting for a sensor) for the caller
    to log; ``counts`` counts every outcome by kind.
    """

    plans: Mapping[str, MeterPlan]
    roles: Mapping[str, Role]  # sensor id → role
    policy: TimePolicy = field(default_factory=TimePolicy)
    baseline: Callable[[str], QuarterHour | None] | None = None
    source: str = "flukso"
    counts: Counter = field(default_factory=Counter)
    notes: list[tuple[str, dict]] = field(default_factory=list)
    _sensors: dict[str, _Sensor] = field(default_factory=dict)
    _meters: dict[str, _Meter] = field(default_factory=dict)
    _newest_ts: int | None = None

    def __post_init__(self) -> None:
        for meter_id, plan in self.plans.items():
            self._meters[meter_id] = _Meter(plan)
            for sid in plan.counter_sensors:
                self._sensors[sid] = _Sensor(sid, self.roles[sid], meter_id)

    # -- queries ---------------------------------------------------------------------------------

    @property
    def has_pending(self) -> bool:
        return any(m.pending_ts is not None for m in self._meters.values())

    def meter_of(self, sensor_id: str) -> str | None:
        s = self._sensors.get(sensor_id)
        return s.meter_id if s else None

    def is_mapped(self, sensor_id: str) -> bool:
        return sensor_id in self._sensors

    def live(self) -> dict[str, LivePower]:
        """Each meter's latest power from its gauges (for a live display; never energy)."""
        out = {}
        for meter_id, m in self._meters.items():
            ts = [self._sensors[s].gauge_ts for s in m.plan.counter_sensors if self._sensors[s].gauge_ts is not None]
            if ts:
                imp, exp = self._powers(m, max(ts))
                out[meter_id] = LivePower(meter_id, _dt(max(ts)), imp, exp)
        return out

    # -- input -----------------------------------------------------------------------------------

    def accept(self, sample: Sample, *, now: datetime, synced: bool | None, retained: bool = False) -> list[Reading]:
        """One decoded sample of a mapped sensor → the Readings it completes (usually 0 or 1).

        Raises :class:`Rejected` for a sample that is not used.
        """
        sensor = self._sensors[sample.sensor_id]
        meter = self._meters[sensor.meter_id]
        self._load_baseline(meter)
        try:
            self._check_unit(sample, sensor)
            self._check_time(sample, now, synced, retained)
        except Rejected as exc:
            exc.meter_id = sensor.meter_id
            self.counts[exc.kind] += 1
            raise
        out: list[Reading] = []
        if sample.kind == "gauge":
            if sensor.gauge_ts is not None and sample.ts <= sensor.gauge_ts:
                raise self._skip("duplicate", sensor.meter_id)  # a gauge not newer than the last one
            self._newest(sample.ts)
            if meter.pending_ts is not None and sample.ts > meter.pending_ts:
                out += self._emit(meter, now, synced)  # the previous second, with its own power
            sensor.gauge_ts, sensor.gauge_w = sample.ts, watts(sample)
            self.counts["gauge"] += 1
            return out
        # counter
        if sensor.last_ts is not None and sample.ts <= sensor.last_ts:
            raise self._skip("duplicate", sensor.meter_id)  # a counter not newer than the last one (QoS 1 redelivery)
        if meter.baseline_end is not None and sample.ts <= meter.baseline_end:
            raise self._skip("stale", sensor.meter_id)  # already inside a committed quarter-hour
        value = floor_wh(sample)
        net = sensor.role is Role.GRID_NET
        if not net:
            self._check_monotone(sensor, value, sample)
        self._newest(sample.ts)
        if meter.pending_ts is not None and sample.ts > meter.pending_ts:
            out += self._emit(meter, now, synced)  # the previous second, before this sample moves it
        if net:
            self._split(meter, value)
        sensor.value, sensor.last_ts = value, sample.ts
        self.counts["counter"] += 1
        if meter.emitted_ts is None or sample.ts > meter.emitted_ts:
            meter.pending_ts = sample.ts if meter.pending_ts is None else max(meter.pending_ts, sample.ts)
        else:
            self.counts["late"] += 1  # in the next Reading
        return out

    def flush(self, *, now: datetime, synced: bool | None) -> list[Reading]:
        """Emit every meter's pending Reading (the broker has been quiet: no more samples for it)."""
        out: list[Reading] = []
        for meter in self._meters.values():
            if meter.pending_ts is not None:
                out += self._emit(meter, now, synced)
        return out

    # -- checks ----------------------------------------------------------------------------------

    def _check_unit(self, sample: Sample, sensor: _Sensor) -> None:
        expected = _QUANTITY[sample.kind]
        if sample.quantity != expected:
            raise Rejected(
                "unknown_unit",
                f"unit {sample.unit!r} is not an electricity {sample.kind} unit "
                f"(role {sensor.role} expects {'W' if sample.kind == 'gauge' else 'Wh'})",
            )

    def _check_time(self, sample: Sample, now: datetime, synced: bool | None, retained: bool) -> None:
        p = self.policy
        now_s = now.timestamp()
        pi_trusted = synced is not False
        if pi_trusted and sample.ts > now_s + p.future_tolerance_s:
            raise Rejected("future", f"timestamp {sample.ts} is {sample.ts - now_s:.0f} s ahead of the Pi clock")
        if p.clock == "pi" and pi_trusted:
            if sample.ts < now_s - p.stale_after_s:
                raise Rejected("stale", f"timestamp {sample.ts} is {now_s - sample.ts:.0f} s old")
            return
        if p.clock == "pi" and retained:
            raise Rejected("stale", "retained value of unknown age (the Pi clock is not synchronised)")
        if self._newest_ts is not None and sample.ts < self._newest_ts - p.stale_after_s:
            raise Rejected("stale", f"timestamp {sample.ts} is {self._newest_ts - sample.ts} s older than the newest sample")

    def _check_monotone(self, sensor: _Sensor, value: int, sample: Sample) -> None:
        if value < 0:
            self.counts["malformed"] += 1
            raise Rejected("malformed", f"negative value for a counter that only counts up ({sensor.role})", sensor.meter_id)
        if sensor.value is None or value >= sensor.value:
            sensor.backwards, sensor.backwards_last = 0, None
            return
        consistent = sensor.backwards_last is None or value >= sensor.backwards_last
        sensor.backwards = sensor.backwards + 1 if consistent else 1
        sensor.backwards_last = value
        if sensor.backwards >= self.policy.reset_confirm:
            self.notes.append(("counter.reset", {"sensor": sensor.sensor_id, "meter": sensor.meter_id,
                                                 "before_wh": sensor.value, "now_wh": value}))
            self.counts["reset"] += 1
            sensor.backwards, sensor.backwards_last = 0, None
            return
        self.counts["backwards"] += 1
        raise Rejected("backwards", f"counter fell from {sensor.value} Wh to {value} Wh", sensor.meter_id)

    def _skip(self, kind: str, meter_id: str) -> Rejected:
        self.counts[kind] += 1
        return Rejected(kind, "not newer than the last sample" if kind == "duplicate" else
                       "before the end of the last committed quarter-hour", meter_id)

    def _newest(self, ts: int) -> None:
        if self._newest_ts is None or ts > self._newest_ts:
            self._newest_ts = ts

    # -- state -----------------------------------------------------------------------------------

    def _load_baseline(self, meter: _Meter) -> None:
        if meter.baseline_loaded:
            return
        meter.baseline_loaded = True
        b = self.baseline(meter.plan.meter_id) if self.baseline else None
        if b is None:
            return
        meter.baseline_end = int(b.end.timestamp())
        meter.baseline_imp = sum(b.end_import_register.values())
        meter.baseline_exp = sum(b.end_export_register.values())
        meter.emitted = b.end

    def _split(self, meter: _Meter, net: int) -> None:
        """Book a net counter's change to import (rise) or export (fall); import - export == net."""
        if meter.last_net is None:
            if meter.baseline_end is not None:
                meter.split_imp, meter.split_exp = meter.baseline_imp, meter.baseline_exp
                before = meter.baseline_imp - meter.baseline_exp
            else:
                meter.split_imp, meter.split_exp = max(net, 0), max(-net, 0)
                before = net
        else:
            before = meter.last_net
        d = net - before
        if d > 0:
            meter.split_imp += d
        else:
            meter.split_exp -= d
        meter.last_net = net

    def _powers(self, meter: _Meter, at_ts: int) -> tuple[float | None, float | None]:
        def fresh(sid: str) -> float | None:
            s = self._sensors[sid]
            if s.gauge_ts is None or abs(at_ts - s.gauge_ts) > self.policy.stale_after_s:
                return None
            return s.gauge_w

        plan = meter.plan
        if plan.net_sensor is not None:
            g = fresh(plan.net_sensor)
            return (None, None) if g is None else (max(g, 0.0), max(-g, 0.0))

        def total(sids: tuple[str, ...]) -> float | None:
            vals = [fresh(s) for s in sids]
            return None if not sids or any(v is None for v in vals) else sum(abs(v) for v in vals)  # type: ignore[misc]

        return total(plan.import_sensors), total(plan.export_sensors)

    def _emit(self, meter: _Meter, now: datetime, synced: bool | None) -> list[Reading]:
        ts = meter.pending_ts
        assert ts is not None
        plan = meter.plan
        missing = [s for s in plan.counter_sensors if self._sensors[s].value is None]
        if missing:
            if not meter.incomplete_noted:
                meter.incomplete_noted = True
                self.notes.append(("meter.waiting_for_sensor", {"meter": plan.meter_id, "sensors": ",".join(missing)}))
            return []
        meter.pending_ts = None
        if self.policy.clock == "sensor":
            time, clock = _dt(ts), ClockQuality.METER
        elif synced is not False:
            time, clock = _dt(ts), ClockQuality.SYNCED
        else:
            time, clock = now.astimezone(UTC), ClockQuality.UNSYNCED
        if meter.emitted is not None and time <= meter.emitted:
            if clock is not ClockQuality.UNSYNCED:
                self.counts["stale"] += 1
                return []
            time = meter.emitted + timedelta(microseconds=1)  # receipt times must still increase
        imp = sum(self._sensors[s].value for s in plan.import_sensors)  # type: ignore[misc]
        exp = sum(self._sensors[s].value for s in plan.export_sensors)  # type: ignore[misc]
        has_imp = bool(plan.import_sensors) or plan.net_sensor is not None
        has_exp = bool(plan.export_sensors) or plan.net_sensor is not None
        if plan.net_sensor is not None:
            imp, exp = meter.split_imp, meter.split_exp
        import_w, export_w = self._powers(meter, ts)
        meter.emitted, meter.emitted_ts = time, ts
        self.counts["reading"] += 1
        return [Reading(
            meter_id=plan.meter_id,
            time=time,
            import_wh={TOTAL: imp} if has_imp else {},
            export_wh={TOTAL: exp} if has_exp else {},
            import_w=import_w,
            export_w=export_w,
            clock=clock,
            source=self.source,
        )]


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def assembler_for(assignments, policy: TimePolicy | None = None,
                  baseline: Callable[[str], QuarterHour | None] | None = None) -> ReadingAssembler:
    """Build an assembler from :class:`flukso.sensors.Assignment` s (validated by ``plan_meters``)."""
    from flukso.sensors import plan_meters

    assignments = list(assignments)
    return ReadingAssembler(
        plans=plan_meters(assignments),
        roles={a.sensor_id: a.role for a in assignments},
        policy=policy or TimePolicy(),
        baseline=baseline,
    )


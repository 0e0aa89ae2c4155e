"""Meter plausibility: what a reading must pass before the quarter-hour aggregator may count it.

Crash safety keeps what is right from being lost; it does nothing against what is wrong. One telegram
with a flipped digit, a register read as 0, a missing line or a clock a day ahead must never turn into
energy or quarter-hours. The gate sits between a source (P1 telegram, Flukso sample) and the
aggregator, one per meter, and answers for each reading: accept, refuse (with a reason) or hold.

Rules (per meter, relative to the last *accepted* reading ``L``):

- a register missing or unreadable where ``L`` had one is *unknown*: refused (``unknown_register``),
  never taken as zero and never as a reset;
- a register step larger than the connection can carry (``max_power_w`` × elapsed time, or the
  limiter / fuse thresholds an e-MUCS meter announces) is ``implausible_step``;
- a register that goes down is ``register_drop``;
- a meter time at or before ``L``, or further after it than the stream's cadence explains, is a
  ``time_jump``; with a synchronised Pi clock, a meter time further than ``clock_tolerance_s`` from
  it is refused at once (``future`` ahead, ``time_jump`` behind).

A drop, a step or a jump is *held*, not believed: a real meter exchange, reset, clock correction or
outage persists, so once ``confirm`` consistent readings continue it, the held series is accepted (a
register change as a reset, counted zero; a clock moved back as a clock step). An honest reading
that continues from ``L`` instead discards the held ones, each counted as refused. Nothing the gate
keeps grows beyond ``confirm`` readings, and no state (not even a store whose last boundary is in the
future) can make a persistent honest stream be refused for ever.

MBus channels (gas, water) relayed by the same telegram have their own gate, built on this one:
gateway/submeter_plausibility.py.

Pure: no I/O, no clock of its own (the caller passes the Pi's time), no asyncio, no MQTT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from gateway.model import ClockQuality, Reading

# 3 × 400 V × 63 A (the largest residential connection in BE/NL): sqrt(3) × 400 × 63 ≈ 43.6 kW
DEFAULT_MAX_POWER_W = 43_650.0
DEFAULT_CLOCK_TOLERANCE_S = 900.0
DEFAULT_CONFIRM = 3
_MIN_JUMP_S = 5.0  # a cadence of 1 s with a telegram or two lost is no jump
_STEP_MARGIN = 1.25  # fuses carry some overload for a while; meter stamps are whole seconds

REASONS = ("crc", "no_crc", "unknown_register", "implausible_step", "register_drop", "time_jump", "future")


class Reason(StrEnum):
    CRC = "crc"  # damaged frame: CRC mismatch
    NO_CRC = "no_crc"  # a dialect that always sends a CRC sent none (e.g. '!' alone)
    UNKNOWN_REGISTER = "unknown_register"  # a register missing or unreadable
    IMPLAUSIBLE_STEP = "implausible_step"  # more energy than the connection can carry
    REGISTER_DROP = "register_drop"  # a register went down
    TIME_JUMP = "time_jump"  # meter time jumped away from its neighbours (or far behind the Pi)
    FUTURE = "future"  # meter time ahead of a synchronised Pi clock


class Change(StrEnum):
    """How an accepted reading must be taken by the aggregator."""

    NORMAL = "normal"
    RESET = "reset"  # a confirmed register drop or jump: counted zero across it (meter exchange, reset)
    CLOCK_STEP = "clock_step"  # a confirmed backwards clock correction
    CLOCK_STEP_RESET = "clock_step_reset"  # both at once (e.g. a store's boundary from another meter's past)

    @property
    def reset(self) -> bool:
        return self in (Change.RESET, Change.CLOCK_STEP_RESET)

    @property
    def clock_step(self) -> bool:
        return self in (Change.CLOCK_STEP, Change.CLOCK_STEP_RESET)


@dataclass(frozen=True, slots=True)
class Limits:
    """A meter's bounds. ``clock_tolerance_s`` None: no wall-clock check (replay, simulated meters)."""

    max_power_w: float = DEFAULT_MAX_POWER_W
    clock_tolerance_s: float | None = DEFAULT_CLOCK_TOLERANCE_S
    confirm: int = DEFAULT_CONFIRM
    max_jump_s: float = 300.0  # the longest gap believed without confirmation
    # a gap longer than this many times the stream's own cadence is a jump too (None: only max_jump_s)
    cadence_factor: float | None = 3.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_power_w) and self.max_power_w > 0):
            raise ValueError(f"max_power_w must be a finite number > 0, not {self.max_power_w!r}")
        if self.clock_tolerance_s is not None and not (math.isfinite(self.clock_tolerance_s) and self.clock_tolerance_s > 0):
            raise ValueError(f"clock_tolerance_s must be a finite number > 0, not {self.clock_tolerance_s!r}")
        if not 1 <= self.confirm <= 100:
            raise ValueError(f"confirm must be 1..100, not {self.confirm!r}")
        if not (math.isfinite(self.max_jump_s) and self.max_jump_s > 0):
            raise ValueError(f"max_jump_s must be a finite number > 0, not {self.max_jump_s!r}")


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: Reason
    reading: Reading | None
    detail: str


@dataclass(slots=True)
class Decision:
    """What to do with one reading: the readings now accepted (in order, each with how), and the
    refusals it settled (the reading itself, or held ones it discarded). Empty both: held."""

    accepted: list[tuple[Reading, Change]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    held: bool = False


def unknown_registers(r: Reading, before: Reading | None) -> list[str]:
    """Registers of ``r`` that are None, or that ``before`` had and ``r`` lacks."""
    out = []
    for name, now, prev in (("import", r.import_wh, before.import_wh if before else {}),
                            ("export", r.export_wh, before.export_wh if before else {})):
        for k, v in now.items():
            if v is None:
                out.append(f"{name} {k}")
        for k in prev:
            if k not in now:
                out.append(f"{name} {k}")
    return out


def step_limit_w(r: Reading, limits: Limits) -> float:
    """The power a register may have grown by: the meter's announced thresholds where present
    (e-MUCS 0-0:17.0.0 limiter, 1-0:31.4.0 fuse), else the configured maximum."""
    announced = r.max_power_w
    if announced is not None and math.isfinite(announced) and 0 < announced < limits.max_power_w:
        return announced
    return limits.max_power_w


def _register_problem(prev: Reading, r: Reading, dt_s: float, limits: Limits) -> tuple[Reason, str] | None:
    """Drop or implausible step between two readings (registers known), else None."""
    limit_w = step_limit_w(r, limits)
    max_wh = limit_w * _STEP_MARGIN * (max(dt_s, 0.0) + 1.0) / 3600.0 + 1.0
    for name, now, before in (("import", r.import_wh, prev.import_wh), ("export", r.export_wh, prev.export_wh)):
        total = 0
        for k, v in now.items():
            b = before.get(k)
            if b is None:
                return Reason.IMPLAUSIBLE_STEP, f"{name} register {k} appeared at {v} Wh"
            if v < b:
                return Reason.REGISTER_DROP, f"{name} register {k} fell from {b} Wh to {v} Wh"
            total += v - b
        if total > max_wh:
            return Reason.IMPLAUSIBLE_STEP, (f"{name} grew {total} Wh in {dt_s:.0f} s "
                                             f"(at most {max_wh:.0f} Wh at {limit_w:.0f} W)")
    return None


@dataclass(slots=True)
class _Series:
    readings: list[Reading]
    reason: Reason
    detail: str


@dataclass(slots=True)
class MeterGate:
    """One meter's plausibility state: the last accepted reading and the held candidates."""

    meter_id: str
    limits: Limits = field(default_factory=Limits)
    last: Reading | None = None  # the last accepted reading (or the store's last boundary)
    cadence_s: float | None = None  # the last accepted interval between readings
    # held series that do not continue ``last``: the first seen, and one rival (a glitch among held
    # readings, or the first reading itself a glitch, must not keep the honest series from confirming)
    series: list[_Series] = field(default_factory=list)

    @property
    def held(self) -> list[Reading]:
        return [r for sr in self.series for r in sr.readings]

    @property
    def held_reason(self) -> Reason | None:
        return self.series[0].reason if self.series else None

    @classmethod
    def from_boundary(cls, meter_id: str, limits: Limits, time: datetime, import_wh: dict[str, int],
                      export_wh: dict[str, int], source: str = "p1") -> MeterGate:
        """A gate resuming from the store's last committed boundary (a restarted daemon)."""
        last = Reading(meter_id, time, dict(import_wh), dict(export_wh), source=source)
        return cls(meter_id, limits, last=last)

    def _jump_limit_s(self) -> float:
        if self.cadence_s is None or self.limits.cadence_factor is None:
            return self.limits.max_jump_s
        return min(self.limits.max_jump_s, max(_MIN_JUMP_S, self.limits.cadence_factor * self.cadence_s))

    def _judge(self, prev: Reading, r: Reading, jump_s: float) -> tuple[Reason, str] | None:
        """Why ``r`` does not continue ``prev`` (registers known), or None if it does."""
        dt = (r.time - prev.time).total_seconds()
        if dt <= 0:
            return Reason.TIME_JUMP, f"meter time {r.time.isoformat()} not after {prev.time.isoformat()}"
        problem = _register_problem(prev, r, dt, self.limits)
        if problem is not None:
            return problem
        if dt > jump_s:
            return Reason.TIME_JUMP, f"meter time {r.time.isoformat()} is {dt:.0f} s after {prev.time.isoformat()}"
        return None

    def check(self, r: Reading, *, now: datetime | None = None) -> Decision:
        """Judge one reading. ``now``: the Pi's time when its clock is synchronised and this meter's
        time is checked against it; None for no wall-clock check."""
        d = Decision()
        unknown = unknown_registers(r, self.last)
        if unknown:
            d.refused.append(Refusal(Reason.UNKNOWN_REGISTER, r, "unknown: " + ", ".join(unknown)))
            return d
        tol = self.limits.clock_tolerance_s
        if now is not None and tol is not None and r.clock is ClockQuality.METER:
            off = (r.time - now).total_seconds()
            if abs(off) > tol:
                reason = Reason.FUTURE if off > 0 else Reason.TIME_JUMP
                d.refused.append(Refusal(reason, r, f"meter time {r.time.isoformat()} is {off:+.0f} s from the Pi clock"))
                return d
        last = self.last
        if last is not None:
            if r.time == last.time and not self.series:
                return d  # the same second again: nothing new (not a glitch, not a reading)
            problem = self._judge(last, r, self._jump_limit_s())
            if problem is None:
                self._discard(d, self.series)
                self._accept(r, d, Change.NORMAL)
                return d
        else:
            # nothing to judge the very first reading against (no stored boundary): taken as it is; if
            # it was a glitch, the honest readings after it confirm themselves as a rival series
            self._accept(r, d, Change.NORMAL)
            return d
        for sr in self.series:
            if self._extend(sr, r, d):
                if len(sr.readings) >= self.limits.confirm:
                    self._confirm(sr, d)
                else:
                    d.held = True
                return d
        new = _Series([r], *problem)
        if len(self.series) >= 2:  # the older rival gave way to a newer one: it was not continued
            self._discard(d, self.series[1:])
            del self.series[1:]
        self.series.append(new)
        if self.limits.confirm <= 1:
            self._confirm(new, d)
        else:
            d.held = True
        return d

    def _extend(self, sr: _Series, r: Reading, d: Decision) -> bool:
        """Append ``r`` to a held series if it continues it; a glitch inside the series (``r``
        continues an earlier held reading, not the last) is refused and dropped from it."""
        held = sr.readings
        for i in range(len(held) - 1, -1, -1):
            if self._judge(held[i], r, self.limits.max_jump_s) is None:
                for bad in held[i + 1 :]:
                    why = self._judge(held[i], bad, self.limits.max_jump_s) or (Reason.TIME_JUMP, "")
                    d.refused.append(Refusal(why[0], bad, why[1]))
                del held[i + 1 :]
                held.append(r)
                return True
        return False

    def _accept(self, r: Reading, d: Decision, change: Change) -> None:
        if self.last is not None and change is Change.NORMAL:
            dt = (r.time - self.last.time).total_seconds()
            if dt > 0:
                self.cadence_s = dt
        d.accepted.append((r, change))
        self.last = r

    def _confirm(self, sr: _Series, d: Decision) -> None:
        """The held series persisted: a real exchange, reset, clock correction or outage."""
        self._discard(d, [o for o in self.series if o is not sr])
        self.series = []
        first = sr.readings[0]
        last = self.last
        if last is None:
            change = Change.NORMAL
        else:
            back = first.time <= last.time
            # registers judged over the real gap; across a clock moved back only a drop can be told
            problem = _register_problem(last, first, (first.time - last.time).total_seconds() if not back
                                        else math.inf, self.limits)
            if back:
                change = Change.CLOCK_STEP_RESET if problem is not None else Change.CLOCK_STEP
            else:  # an outage, or a clock moved forward: the gap is estimated (unless registers restarted)
                change = Change.RESET if problem is not None else Change.NORMAL
        d.accepted.append((first, change))
        self.last = first
        self.cadence_s = None
        for r in sr.readings[1:]:
            self._accept(r, d, Change.NORMAL)

    def _discard(self, d: Decision, series: list[_Series]) -> None:
        """Held readings that were not continued: glitches, each counted under its series' reason."""
        for sr in series:
            for h in sr.readings:
                d.refused.append(Refusal(sr.reason, h, sr.detail))
        if series is self.series:
            self.series = []


def fuse_limit_w(fuse_a: float | None, limiter_w: float | None, phases: int) -> float | None:
    """The power an e-MUCS meter's announced thresholds allow: the lower of its limiter
    (0-0:17.0.0) and its fuse (1-0:31.4.0, A per phase at 230 V); None when neither is a real
    threshold (999.9 kW / 999 A mean "none")."""
    out = []
    if limiter_w is not None and math.isfinite(limiter_w) and 0 < limiter_w < 999_000:
        out.append(limiter_w)
    if fuse_a is not None and math.isfinite(fuse_a) and 0 < fuse_a < 999:
        out.append(fuse_a * 230.0 * max(1, phases))
    return min(out) if out else None

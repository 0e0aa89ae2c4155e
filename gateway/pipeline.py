"""The metering path on one node: telegram → reading → quarter-hours → local store → sinks told.

Shared by the daemon (live, one commit per closed quarter-hour) and ``quartier replay`` (batched
commits). A closed quarter-hour is committed to the local store before anything else hears of it; if
the commit fails (disk full, database locked) it stays in memory and is retried, never dropped.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from gateway.from_p1 import NotAReading, meter_id_of, to_reading
from gateway.gas_days import GasDay, advance
from gateway.logs import get_logger
from gateway.model import QuarterHour, Reading, SubMeterReading, utc_iso
from gateway.plausibility import Change, Limits, MeterGate, Reason
from gateway.submeter_plausibility import ChannelGate, FlowLimits, SubRefusal, refusal_key
from gateway.quarter_hours import LiveQuarter, QuarterHourAggregator
from p1.decode import CRC_DIALECTS

log = get_logger("quartier.gateway.pipeline")


@dataclass(slots=True)
class MeterHealth:
    """Counters one meter's reader and aggregator keep, for ``quartier status``, health.json and the
    watchdog. ``refused`` counts every reading not used, by reason (gateway.plausibility.REASONS), and
    every MBus channel reading not used as ``<kind>_<reason>`` (gateway/submeter_plausibility.py)."""

    telegrams: int = 0  # frames attributed to this meter, whatever became of them
    accepted: int = 0  # readings the plausibility gate passed to the aggregator
    refused: Counter = field(default_factory=Counter)
    last_telegram_monotonic: float | None = None
    last_accepted_monotonic: float | None = None
    last_reading: Reading | None = None  # the last accepted reading

    @property
    def crc_errors(self) -> int:
        """Damaged frames: a CRC mismatch, or no CRC from a dialect that always sends one."""
        return self.refused["crc"] + self.refused["no_crc"]

    @property
    def rejected(self) -> int:
        """Readings refused for anything but damage (unknown register, implausible step, drop, time)."""
        return sum(self.refused.values()) - self.crc_errors

    @property
    def crc_error_rate(self) -> float | None:
        return self.crc_errors / self.telegrams if self.telegrams else None


@dataclass
class Pipeline:
    store: object  # gateway.store.Store (duck-typed: commit_quarter_hours, last_boundary)
    max_gap: timedelta = timedelta(minutes=5)
    meter_id: str | None = None  # override for every telegram (config sources[].meter_id)
    batch: bool = False  # replay: commit in batches instead of once per quarter-hour
    batch_size: int = 2000
    on_commit: Callable[[list[QuarterHour]], None] | None = None
    clock_synced: Callable[[], bool | None] = lambda: True
    # the meter's bounds; limits.clock_tolerance_s None: no check against the Pi clock (replay)
    limits: Limits | None = None
    # the MBus channels' bounds (gas, water); None: the defaults, with ``limits``' clock tolerance and confirm
    flow_limits: FlowLimits | None = None
    wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    aggregators: dict[str, QuarterHourAggregator] = field(default_factory=dict)
    gates: dict[str, MeterGate] = field(default_factory=dict)
    channel_gates: dict[tuple[str, int], ChannelGate] = field(default_factory=dict)
    # each gas channel's local day so far (gateway/gas_days.py), and the records to write with the next commit
    gas_days: dict[tuple[str, int], GasDay] = field(default_factory=dict)
    _gas_pending: dict[tuple[str, int, date], GasDay] = field(default_factory=dict)
    health: dict[str, MeterHealth] = field(default_factory=dict)
    # damaged frames before any meter was seen: they go to the port's meter once it is known
    unattributed: Counter = field(default_factory=Counter)
    committed: int = 0
    _pending: list[QuarterHour] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _commit_failing: bool = False
    # meter (or (meter, MBus channel)) -> (reason, refusals): one log line per change of state
    _episodes: dict[str | tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    _crc_seen: set[str] = field(default_factory=set)  # meters that sent a valid CRC

    def __post_init__(self) -> None:
        if self.limits is None:
            # no wall-clock check unless asked (the daemon does): a replayed capture is old
            self.limits = Limits(clock_tolerance_s=None, max_jump_s=self.max_gap.total_seconds())
        if self.flow_limits is None:
            self.flow_limits = FlowLimits(clock_tolerance_s=self.limits.clock_tolerance_s, confirm=self.limits.confirm)

    @property
    def unattributed_crc_errors(self) -> int:
        return self.unattributed["crc"] + self.unattributed["no_crc"]

    # -- inputs ----------------------------------------------------------------------------------

    def _port_meter(self) -> str | None:
        """The one meter this reader serves, when known (configured, or the only one seen)."""
        return self.meter_id or (next(iter(self.health)) if len(self.health) == 1 else None)

    def _health(self, meter_id: str) -> MeterHealth:
        h = self.health.get(meter_id)
        if h is None:
            h = self.health[meter_id] = MeterHealth()
            if self.unattributed and (self.meter_id or len(self.health) == 1):
                h.refused.update(self.unattributed)
                h.telegrams += sum(self.unattributed.values())
                self.unattributed.clear()
        return h

    def count_refused(self, meter_id: str | None, reason: str, detail: str, *, telegram: bool = False,
                      reading: Reading | None = None) -> None:
        """Count one refused input against its meter (the port's meter when it cannot be told),
        logging once per episode. Also the entry point for sources' own refusals (Flukso)."""
        with self._lock:
            self._refuse_locked(meter_id, reason, detail, telegram=telegram, reading=reading)

    def _refuse_locked(self, meter_id: str | None, reason: str, detail: str, *, telegram: bool,
                       reading: Reading | None = None) -> None:
        mid = meter_id or self._port_meter()
        if mid is None:
            self.unattributed[reason] += 1
            mid_shown = "unknown"
        else:
            h = self._health(mid)
            h.refused[reason] += 1
            if telegram:
                h.telegrams += 1
                h.last_telegram_monotonic = time.monotonic()
            mid_shown = mid
        self._episode(mid_shown, reason, "reading.refused", {
            "meter": mid_shown, "reason": reason, "detail": detail,
            **({"meter_time": reading.time.isoformat(), "import_wh": reading.import_total_wh,
                "export_wh": reading.export_total_wh} if reading is not None else {})})

    def _episode(self, key: str | tuple[str, int], reason: str, event: str, extra: dict) -> None:
        """Log a refusal only when the state changes (a first refusal, or another reason), not every second."""
        episode = self._episodes.get(key)
        if episode is None or episode[0] != reason:
            log.warning(event, extra=extra)
            self._episodes[key] = (reason, 1)
        else:
            self._episodes[key] = (reason, episode[1] + 1)

    def _episode_ended(self, key: str | tuple[str, int], event: str, extra: dict) -> None:
        episode = self._episodes.pop(key, None)
        if episode is not None:
            log.info(event, extra={**extra, "reason": episode[0], "refused": episode[1]})

    def feed_telegram(self, telegram) -> list[QuarterHour]:
        """One parsed telegram (p1.Telegram). Damaged ones (CRC mismatch, or no CRC from a dialect
        that always sends one, or from a meter that sent one before) are counted, never used."""
        if telegram.crc_ok is False:
            # the meter id inside a damaged telegram cannot be trusted: the port's meter it is
            self.count_refused(None, Reason.CRC, telegram.errors[0] if telegram.errors else "CRC mismatch", telegram=True)
            return []
        mid = self.meter_id or meter_id_of(telegram)
        if telegram.crc_ok is None and (telegram.dialect in CRC_DIALECTS or mid in self._crc_seen):
            self.count_refused(None, Reason.NO_CRC, f"{telegram.dialect.value} telegram without CRC", telegram=True)
            return []
        if telegram.crc_ok:
            self._crc_seen.add(mid)
        try:
            reading = to_reading(telegram, meter_id=self.meter_id, clock_synced=bool(self.clock_synced()))
        except NotAReading as exc:
            self.count_refused(self.meter_id or (mid if telegram.equipment_id else None), Reason.UNKNOWN_REGISTER,
                               str(exc), telegram=True)
            return []
        return self.feed_reading(reading, telegram=True)

    def feed_reading(self, reading: Reading, *, telegram: bool = False) -> list[QuarterHour]:
        """One reading through the meter's plausibility gate, then what it accepted to the aggregator."""
        return self._feed(reading, telegram=telegram)[0]

    def _feed(self, reading: Reading, *, telegram: bool) -> tuple[list[QuarterHour], Reading | None]:
        """The quarter-hours committed, and ``reading`` as accepted (its MBus channels gated) when the
        gate accepted it, else None (held or refused: no news)."""
        with self._lock:
            mid = reading.meter_id
            h = self._health(mid)
            now_mono = time.monotonic()
            if telegram:
                h.telegrams += 1
                h.last_telegram_monotonic = now_mono
            agg = self.aggregators.get(mid)
            if agg is None:
                baseline = self.store.last_boundary(mid)
                agg = QuarterHourAggregator(mid, max_gap=self.max_gap, source=reading.source, baseline=baseline)
                self.aggregators[mid] = agg
                gate = (MeterGate.from_boundary(mid, self.limits, baseline.end, baseline.end_import_register,
                                                baseline.end_export_register, baseline.source)
                        if baseline is not None else MeterGate(mid, self.limits))
                self.gates[mid] = gate
                log.info(
                    "meter.seen",
                    extra={"meter": mid, "resume_from": baseline.end.isoformat() if baseline else "none"},
                )
            gate = self.gates[mid]
            check_wall = self.limits.clock_tolerance_s is not None and self.clock_synced() is True
            now = self.wall_clock() if check_wall else None
            decision = gate.check(reading, now=now)
            for refusal in decision.refused:
                self._refuse_locked(mid, refusal.reason.value, refusal.detail, telegram=False, reading=refusal.reading)
            closed: list[QuarterHour] = []
            as_accepted: Reading | None = None
            for r, change in decision.accepted:
                gated = self._gate_submeters(r, now) if r.submeters else r
                if r is reading:
                    as_accepted = gated
                closed += agg.add(gated, reset=change.reset, clock_step=change.clock_step)
                if change is not Change.NORMAL:
                    log.warning("reading.change_confirmed", extra={"meter": mid, "change": change.value,
                                                                   "meter_time": r.time.isoformat()})
            if decision.accepted:
                h.accepted += len(decision.accepted)
                h.last_accepted_monotonic = now_mono
                h.last_reading = gated
                self._episode_ended(mid, "reading.refusals_ended", {"meter": mid})
            if closed:
                self._pending.extend(closed)
            if self._pending and (not self.batch or len(self._pending) >= self.batch_size):
                return self._commit_locked(), as_accepted
            return [], as_accepted

    def _gate_submeters(self, r: Reading, now: datetime | None) -> Reading:
        """``r`` with each MBus channel's last *accepted* reading (gateway/submeter_plausibility.py): a
        refused or held value is replaced by the one before it, never passed on; a channel with no
        accepted reading yet is left out."""
        out: list[SubMeterReading] = []
        for m in r.submeters:
            key = (r.meter_id, m.channel)
            g = self.channel_gates.get(key)
            if g is None:
                g = self.channel_gates[key] = self._channel_gate(r.meter_id, m)
            d = g.check(m, reading_time=r.time, now=now)
            for refusal in d.refused:
                self._refuse_submeter(r.meter_id, refusal)
            if d.accepted:
                ids = {"meter": r.meter_id, "channel": m.channel, "kind": g.kind}
                if d.reset or d.clock_step:
                    log.warning("submeter.change_confirmed", extra={
                        **ids, "change": "reset" if d.reset else "clock_step", "value": d.accepted[0].value,
                        "mbus_time": utc_iso(d.accepted[0].time)})
                self._episode_ended(key, "submeter.refusals_ended", ids)
                if g.kind == "gas" and _is_m3(g.last.unit) and hasattr(self.store, "tz"):
                    self._gas_day(key, d.accepted, d.reset)
            if g.last is not None:
                out.append(g.last)
        return r if tuple(out) == r.submeters else dataclasses.replace(r, submeters=tuple(out))

    def _channel_gate(self, meter_id: str, m: SubMeterReading) -> ChannelGate:
        """A new channel's gate; a gas channel resumes from its last stored register (a glitch as the
        first reading after a restart is then judged, not believed) and its day so far."""
        last_day = getattr(self.store, "last_gas_day", None)
        stored = last_day(meter_id, m.channel) if m.kind == "gas" and last_day is not None else None
        if stored is None or stored.unit != m.unit:
            return ChannelGate(meter_id, m.channel, m.kind, self.flow_limits)
        self.gas_days[(meter_id, m.channel)] = stored
        return ChannelGate.resume(meter_id, self.flow_limits,
                                  SubMeterReading(m.channel, m.kind, stored.last_m3, stored.unit, stored.last_time))

    def _gas_day(self, key: tuple[str, int], accepted: list[SubMeterReading], reset: bool) -> None:
        """The channel's day record after newly accepted captures: written with the next commit (a new
        capture every 5 minutes or hour, so the card sees no write per telegram)."""
        day = self.gas_days.get(key)
        for i, m in enumerate(accepted):
            day = advance(day, key[0], m, reset=reset and i == 0, tz=self.store.tz)
            if day is not None:  # each day's last state, also that of a day just ended
                self.gas_days[key] = self._gas_pending[(*key, day.day)] = day

    def _refuse_submeter(self, meter_id: str, refusal: SubRefusal) -> None:
        m = refusal.reading
        self._health(meter_id).refused[refusal_key(m.kind, refusal.reason)] += 1
        self._episode((meter_id, m.channel), refusal.reason.value, "submeter.refused", {
            "meter": meter_id, "channel": m.channel, "kind": m.kind, "reason": refusal.reason.value,
            "detail": refusal.detail, "value": m.value, "unit": m.unit, "mbus_time": utc_iso(m.time)})

    def feed_readings(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            self.feed_reading(r)

    # -- commits ---------------------------------------------------------------------------------

    def flush(self) -> list[QuarterHour]:
        """Commit whatever closed quarter-hours (and gas days) are waiting (end of a replay, shutdown,
        retry after a failure)."""
        with self._lock:
            return self._commit_locked() if self._pending or self._gas_pending else []

    def _commit_locked(self) -> list[QuarterHour]:
        batch = list(self._pending)
        gas = list(self._gas_pending.values())
        try:
            if gas:
                self.store.commit_quarter_hours(batch, gas_days=gas)
            else:
                self.store.commit_quarter_hours(batch)
        except Exception as exc:  # sqlite3 errors, disk full: keep them, retry on the next reading
            if not self._commit_failing:
                log.error("store.commit_failed", extra={"pending": len(batch), "error": str(exc)})
            self._commit_failing = True
            return []
        if self._commit_failing:
            log.info("store.commit_recovered", extra={"committed": len(batch)})
            self._commit_failing = False
        self._pending.clear()
        self._gas_pending.clear()
        self.committed += len(batch)
        if not self.batch:
            for qh in batch:
                log.info(
                    "quarter_hour.closed",
                    extra={"meter": qh.meter_id, "start": qh.start.isoformat(), "import_wh": qh.import_wh,
                           "export_wh": qh.export_wh, "quality": qh.quality.value,
                           **({"flags": ",".join(qh.flags)} if qh.flags else {})},
                )
        if self.on_commit is not None and batch:
            self.on_commit(batch)
        return batch

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- live view -------------------------------------------------------------------------------

    def live(self) -> dict[str, LiveQuarter]:
        with self._lock:
            return {mid: lq for mid, agg in self.aggregators.items() if (lq := agg.live()) is not None}

    def last_telegram_age_s(self, now_monotonic: float | None = None) -> float | None:
        now = time.monotonic() if now_monotonic is None else now_monotonic
        ages = [now - h.last_telegram_monotonic for h in self.health.values() if h.last_telegram_monotonic]
        return min(ages) if ages else None

    def last_accepted_age_s(self, now_monotonic: float | None = None) -> float | None:
        """Since the last reading the gate accepted: what the watchdog is fed on (bytes are not metering)."""
        now = time.monotonic() if now_monotonic is None else now_monotonic
        ages = [now - h.last_accepted_monotonic for h in self.health.values() if h.last_accepted_monotonic]
        return min(ages) if ages else None


def _is_m3(unit: str) -> bool:
    return unit.strip().lower() in ("m3", "m³")

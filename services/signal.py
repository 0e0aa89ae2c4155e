"""The consume-now signal (signal « consommez maintenant », « verbruik nu »-signaal).

A member gains from sharing only by consuming while the community has surplus. The signal says so in
three states: ``green`` (surplus: run appliances now), ``amber`` (small or uncertain surplus), ``red``
(none, or a collective "reduce now" alert), with the headroom in W, a reason and how long it is
expected to hold.

Why it is computed from the running quarter-hour: settlement nets energy per quarter-hour, so what
counts is whether *this quarter-hour* ends with surplus, not whether the sun is behind a cloud this
second. The projected quarter-hour surplus is what was injected minus what was consumed so far, plus
the current net power over what is left of the quarter-hour::

    projected_wh = (exported_wh - imported_wh) + (export_w - import_w) * remaining_s / 3600
    headroom_w   = projected_wh / 0.25 h

``headroom_w`` is a load that could run for the rest of the quarter-hour and still leave it with
surplus (conservatively: it is divided by the whole quarter-hour, not by what is left of it, so it
does not shoot up in the last seconds). At the start of a quarter-hour it equals the current net
power; as the quarter-hour goes on, the energy already banked steadies it, so a passing cloud does not
flip it.

Three guards against flapping: hysteresis (entering green needs more headroom than staying green;
leaving red needs more than staying out of it); a minimum hold time (a state, once shown, stays at
least ``hold_s``, doubled up to ``max_hold_s`` while it flaps: see :func:`_next_hold`); and a budget
of ``max_changes_per_hour`` changes in any rolling hour, so that no pattern of clouds makes the light
change more often than that (:func:`_within_budget`; the back-off alone allowed 5 to 8 in the cloudy
hours of most scripted days). Once spent, the state shown stays until the oldest change of the hour
leaves it, and says it is held and until when. Measured over ten scripted days (bench/signal_flicker.py),
the budget costs little: green shown while the quarter-hour heads for an import 0.03 → 0.12 h a day,
green not shown while it heads for a surplus 0.18 → 0.24 h. (Reserving the hour's last change for
leaving green was tried: 0.01 h of the first, but 2.2 h of the second.) A collective alert overrides
all three: it turns the signal red at once and its end
releases it at once.

No feedback loop: a signal that households follow triggers load, which eats the surplus and would
flip it back to red, which stops the load, and so on. Where the triggered load is known (home
automation declares what it switched on because of the signal), its energy and power are added back
before deciding, so the signal is computed as if the load it triggered were not there.

Inputs are the node's own meter (a producer's own export) and, when fleet sync provides it, the
sharing operation's totals (pool = the producers' injection, consumption = the members' import); the
operation's figures are used whenever they are fresh.

Pure: no I/O, no clock. Times come in with the inputs (the meter's clock); :func:`next_signal` takes
the previous signal and returns the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

QUARTER_S = 900.0
_QUARTER_H = QUARTER_S / 3600.0


class State(StrEnum):
    GREEN = "green"
    AMBER = "amber"
    RED = "red"


class Reason(StrEnum):
    """Why the signal is what it is (the page translates these; ``detail`` is the English text)."""

    SURPLUS = "surplus"  # headroom above the green threshold
    SMALL_SURPLUS = "small_surplus"  # some headroom, not enough for green
    NO_SURPLUS = "no_surplus"  # the quarter-hour is heading for import
    STALE_DATA = "stale_data"  # the latest data is too old to trust: surplus uncertain
    NO_DATA = "no_data"  # nothing measured yet
    REDUCE_NOW = "reduce_now"  # a collective alert asks everyone to cut consumption
    COLLECTIVE_CONSUME = "collective_consume"  # a collective alert asks everyone to consume now


_ALERT_REASONS = (Reason.REDUCE_NOW, Reason.COLLECTIVE_CONSUME)


class Basis(StrEnum):
    OPERATION = "operation"  # the sharing operation's totals (fleet sync)
    OWN_METER = "own_meter"  # this node's meter only (a producer's own export)
    NONE = "none"


@dataclass(frozen=True, slots=True)
class SignalSettings:
    """Thresholds (W of headroom) and timings. ``*_enter_w``/``*_exit_w`` pairs are the hysteresis."""

    green_enter_w: float = 500.0  # amber/red -> green at or above this
    green_exit_w: float = 250.0  # green -> amber below this
    red_enter_w: float = 0.0  # -> red at or below this
    red_exit_w: float = 150.0  # red -> amber/green only at or above this
    hold_s: float = 120.0  # minimum time a state is shown
    max_hold_s: float = 600.0  # a flapping light's hold doubles up to this (== hold_s: no back-off)
    max_changes_per_hour: int = 4  # in any rolling hour (0: no budget); the hold and back-off come first
    stale_after_s: float = 30.0  # own live data older than this is not trusted
    operation_stale_after_s: float = 120.0  # fleet totals older than this: fall back to the own meter

    def __post_init__(self) -> None:
        if not self.red_enter_w < self.red_exit_w <= self.green_enter_w:
            raise ValueError("signal thresholds must satisfy red_enter_w < red_exit_w <= green_enter_w")
        if not self.red_enter_w < self.green_exit_w <= self.green_enter_w:
            raise ValueError("signal thresholds must satisfy red_enter_w < green_exit_w <= green_enter_w")
        if self.hold_s < 0 or self.max_hold_s < 0 or self.stale_after_s <= 0 or self.operation_stale_after_s <= 0:
            raise ValueError("signal hold and staleness times must be positive")
        if self.max_changes_per_hour < 0:
            raise ValueError("max_changes_per_hour must be 0 (no budget) or more")

    @classmethod
    def from_section(cls, section: object) -> SignalSettings:
        """From a configuration's ``[web.signal]`` (gateway.config.SignalConfig): the fields it has,
        by name, so a new setting reaches the page, the light and the bench alike."""
        return cls(**{f: getattr(section, f) for f in cls.__dataclass_fields__ if hasattr(section, f)})


@dataclass(frozen=True, slots=True)
class QuarterSoFar:
    """The running quarter-hour of one meter or of the whole operation, as far as data tells.

    For the operation, ``exported_wh``/``export_w`` are the pool (producers' injection) and
    ``imported_wh``/``import_w`` the members' consumption.
    """

    start: datetime
    elapsed_s: float
    imported_wh: float | None  # None: the quarter-hour's start boundary is not known (just restarted)
    exported_wh: float | None
    import_w: float
    export_w: float
    age_s: float = 0.0  # how old these figures are (real seconds since they were received)

    @property
    def remaining_s(self) -> float:
        return max(0.0, QUARTER_S - self.elapsed_s)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=QUARTER_S)


@dataclass(frozen=True, slots=True)
class TriggeredLoad:
    """A load switched on because of the signal (declared by home automation), running since ``since``."""

    watts: float
    since: datetime


@dataclass(frozen=True, slots=True)
class Alert:
    """A collective request: ``reduce`` now (a community asking everyone to cut consumption at a
    peak: red) or ``consume`` now (the push the other way, a sunny noon or a challenge day: green)."""

    start: datetime
    until: datetime
    message: str = ""
    kind: str = "reduce"  # "reduce" | "consume"
    id: str | None = None  # the community server's id; None for a local alert

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.until


@dataclass(frozen=True, slots=True)
class SignalInputs:
    now: datetime  # the meter's clock: latest reading's time plus the time since it arrived
    own: QuarterSoFar | None = None
    operation: QuarterSoFar | None = None
    triggered: Sequence[TriggeredLoad] = ()
    alert: Alert | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    state: State
    reason: Reason
    headroom_w: int  # load that can be added now (>= 0)
    balance_w: float | None  # projected quarter-hour surplus as average power (signed; None: no data)
    basis: Basis
    since: datetime  # when this state was entered
    valid_until: datetime  # expected to hold at least until then
    computed_at: datetime
    held: bool = False  # kept by the minimum hold time although the figures say otherwise
    pending: State | None = None  # what the figures say when held
    detail: str = ""
    alert: Alert | None = None
    triggered_w: float = 0.0  # known triggered load that was added back
    held_until: datetime | None = None  # when held: the end of the minimum hold time
    hold_s: float | None = None  # the hold of this state (None: the settings' hold_s)
    quarter_end: datetime | None = None  # the end of the quarter-hour the balance is about
    changes: tuple[datetime, ...] = ()  # when the state changed within the last hour (the budget's memory)

    def as_dict(self) -> dict[str, object]:
        """The JSON object of ``GET /api/v1/signal`` and the MQTT ``signal`` topic."""
        return {
            "state": self.state.value,
            "headroom_w": self.headroom_w,
            "reason": self.reason.value,
            "detail": self.detail,
            "valid_until": _iso(self.valid_until),
            "since": _iso(self.since),
            "computed_at": _iso(self.computed_at),
            "balance_w": None if self.balance_w is None else round(self.balance_w),
            "basis": self.basis.value,
            "held": self.held,
            "pending": self.pending.value if self.pending else None,
            "triggered_w": round(self.triggered_w),
            "held_until": None if self.held_until is None else _iso(self.held_until),
            "quarter_end": None if self.quarter_end is None else _iso(self.quarter_end),
            "alert": None if self.alert is None else {
                "message": self.alert.message, "start": _iso(self.alert.start), "until": _iso(self.alert.until),
                "kind": self.alert.kind, "id": self.alert.id},
        }


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the pure core ---------------------------------------------------------------------------------


def triggered_energy_wh(loads: Sequence[TriggeredLoad], quarter_start: datetime, now: datetime) -> float:
    """Energy the declared loads used in the running quarter-hour up to ``now``."""
    total = 0.0
    for load in loads:
        since = max(load.since, quarter_start)
        if now > since:
            total += load.watts * (now - since).total_seconds() / 3600.0
    return total


def triggered_power_w(loads: Sequence[TriggeredLoad], now: datetime) -> float:
    return sum(load.watts for load in loads if load.since <= now)


def projected_balance_w(q: QuarterSoFar, loads: Sequence[TriggeredLoad] = (), now: datetime | None = None) -> float:
    """Projected quarter-hour surplus as an average power (W), without the declared triggered load.

    Without the quarter-hour's start boundary (``imported_wh is None``) only the current net power is
    known, and it is the projection.
    """
    at = now if now is not None else q.start + timedelta(seconds=q.elapsed_s)
    net_w = q.export_w - q.import_w + triggered_power_w(loads, at)
    if q.imported_wh is None or q.exported_wh is None:
        return net_w
    so_far_wh = q.exported_wh - q.imported_wh + triggered_energy_wh(loads, q.start, at)
    return (so_far_wh + net_w * q.remaining_s / 3600.0) / _QUARTER_H


def target_state(previous: State | None, balance_w: float, s: SignalSettings) -> State:
    """The state the figures call for, with hysteresis around the previous state."""
    if previous is State.GREEN:
        if balance_w >= s.green_exit_w:
            return State.GREEN
        return State.RED if balance_w <= s.red_enter_w else State.AMBER
    if balance_w >= s.green_enter_w:
        return State.GREEN
    if previous is State.RED:
        return State.AMBER if balance_w >= s.red_exit_w else State.RED
    return State.RED if balance_w <= s.red_enter_w else State.AMBER


def _choose_basis(inputs: SignalInputs, s: SignalSettings) -> tuple[Basis, QuarterSoFar | None]:
    op = inputs.operation
    if op is not None and op.age_s <= s.operation_stale_after_s:
        return Basis.OPERATION, op
    if inputs.own is not None:
        return Basis.OWN_METER, inputs.own
    if op is not None:  # only stale fleet figures: better than nothing, and reported stale below
        return Basis.OPERATION, op
    return Basis.NONE, None


def next_signal(previous: Signal | None, inputs: SignalInputs, settings: SignalSettings = SignalSettings()) -> Signal:
    """The signal after ``previous`` given new inputs (``previous=None`` at start)."""
    now = inputs.now
    s = settings
    basis, q = _choose_basis(inputs, s)
    triggered_w = triggered_power_w(inputs.triggered, now)
    alert = inputs.alert if inputs.alert is not None and inputs.alert.active(now) else None

    if q is None:
        balance = None
        target, reason = State.RED, Reason.NO_DATA
    else:
        balance = projected_balance_w(q, inputs.triggered, now)
        stale = q.age_s > (s.operation_stale_after_s if basis is Basis.OPERATION else s.stale_after_s)
        prev_state = previous.state if previous is not None and previous.reason not in _ALERT_REASONS else None
        target = target_state(prev_state, balance, s)
        if stale:
            # old figures: never green, and say why
            target = State.AMBER if target is State.GREEN else target
            reason = Reason.STALE_DATA
        else:
            reason = {State.GREEN: Reason.SURPLUS, State.AMBER: Reason.SMALL_SURPLUS, State.RED: Reason.NO_SURPLUS}[target]
    headroom = max(0, round(balance)) if balance is not None else 0

    hold_s = None if previous is None else previous.hold_s
    held_until: datetime | None = None  # set when the hourly budget, not the hold time, keeps the state
    if alert is not None:
        consume = alert.kind == "consume"
        state = State.GREEN if consume else State.RED
        reason = Reason.COLLECTIVE_CONSUME if consume else Reason.REDUCE_NOW
        held, pending = False, None
        since = previous.since if previous is not None and previous.reason is reason else now
        valid_until = alert.until
        headroom = headroom if consume else 0
        hold_s = None
    else:
        was_alert = previous is not None and previous.reason in _ALERT_REASONS
        if previous is None or was_alert or target is previous.state:
            state, held, pending = target, False, None
            since = now if previous is None or was_alert or target is not previous.state else previous.since
            if previous is None or was_alert:
                hold_s = None
        elif (now - previous.since).total_seconds() < _hold(previous, s):
            state, held, pending = previous.state, True, target
            since = previous.since
            reason = _natural_reason(previous) if reason is not Reason.STALE_DATA else reason
        elif (budget_end := _within_budget(previous, now, s)) is not None:
            state, held, pending, since = previous.state, True, target, previous.since
            reason = _natural_reason(previous) if reason is not Reason.STALE_DATA else reason
            held_until = budget_end
        else:
            state, held, pending, since = target, False, None, now
            hold_s = _next_hold(previous, now, s)
        valid_until = _valid_until(state, since, now, q, inputs.triggered, s, hold_s)
        if held_until is not None:
            valid_until = max(valid_until, held_until)

    return Signal(
        state=state,
        reason=reason,
        headroom_w=headroom,
        balance_w=balance,
        basis=basis,
        since=since,
        valid_until=valid_until,
        computed_at=now,
        held=held,
        pending=pending,
        detail=describe(state, reason, headroom, held=held, alert=alert),
        alert=alert,
        triggered_w=triggered_w,
        held_until=held_until or (since + timedelta(seconds=hold_s if hold_s is not None else s.hold_s) if held else None),
        hold_s=hold_s,
        quarter_end=None if q is None else q.end,
        changes=_recent_changes(previous, state, now),
    )


_HOUR = timedelta(hours=1)


def _recent_changes(previous: Signal | None, state: State, now: datetime) -> tuple[datetime, ...]:
    """The change times of the last hour, with this one if the state changed now."""
    if previous is None:
        return ()
    recent = tuple(t for t in previous.changes if now - t < _HOUR)
    return recent + (now,) if state is not previous.state else recent


def _within_budget(previous: Signal, now: datetime, s: SignalSettings) -> datetime | None:
    """None when one more change fits in the rolling hour's budget; else when it will (enough of the
    hour's changes having left it; an alert's changes count, though the alert never waits)."""
    n = s.max_changes_per_hour
    recent = sorted(t for t in previous.changes if now - t < _HOUR)
    if n == 0 or len(recent) < n:
        return None
    return recent[len(recent) - n] + _HOUR


def _hold(sig: Signal, s: SignalSettings) -> float:
    return s.hold_s if sig.hold_s is None else sig.hold_s


def _next_hold(previous: Signal | None, now: datetime, s: SignalSettings) -> float | None:
    """The hold of a state entered now: doubled (up to ``max_hold_s``) when the state it replaces
    lasted less than twice its own hold — the light is flapping (clouds passing while the oven is on),
    so it waits longer; back to ``hold_s`` after a calm state. Like route-flap damping: a single change
    is shown at once, a series of them slows down."""
    if previous is None or previous.reason in _ALERT_REASONS or s.max_hold_s <= s.hold_s:
        return None
    last = _hold(previous, s)
    if (now - previous.since).total_seconds() < 2 * last:
        return min(s.max_hold_s, 2 * last) if last > 0 else None
    return None


def _natural_reason(previous: Signal) -> Reason:
    if previous.reason in (Reason.STALE_DATA, Reason.NO_DATA):
        return previous.reason
    return {State.GREEN: Reason.SURPLUS, State.AMBER: Reason.SMALL_SURPLUS, State.RED: Reason.NO_SURPLUS}[previous.state]


def _valid_until(
    state: State, since: datetime, now: datetime, q: QuarterSoFar | None, loads: Sequence[TriggeredLoad], s: SignalSettings,
    hold_s: float | None = None,
) -> datetime:
    """How long the state is expected to hold: at least the hold time; if the current power holds,
    the projection does not move until the quarter-hour ends (then the banked energy restarts from
    zero), so the end of the quarter-hour; one more quarter-hour when the next one, starting from the
    current power alone, would call for the same state."""
    hold_end = since + timedelta(seconds=s.hold_s if hold_s is None else hold_s)
    if q is None:
        return max(hold_end, now)
    end = q.end
    next_balance = q.export_w - q.import_w + triggered_power_w(loads, now)
    if target_state(state, next_balance, s) is state:
        end += timedelta(seconds=QUARTER_S)
    return max(hold_end, end, now)


_DETAIL = {
    Reason.SURPLUS: "Surplus of about {h} W in this quarter-hour: a good time to run appliances.",
    Reason.SMALL_SURPLUS: "Small surplus (about {h} W): run only small appliances.",
    Reason.NO_SURPLUS: "No surplus now: what you consume comes from the grid.",
    Reason.STALE_DATA: "No recent meter data: the surplus is uncertain.",
    Reason.NO_DATA: "No meter data yet.",
    Reason.REDUCE_NOW: "The community asks everyone to reduce consumption now.",
    Reason.COLLECTIVE_CONSUME: "The community asks everyone to consume now.",
}


def describe(state: State, reason: Reason, headroom_w: int, *, held: bool = False, alert: Alert | None = None) -> str:
    """One English sentence (the page has French, Dutch and English versions of the same)."""
    if reason in _ALERT_REASONS and alert is not None and alert.message:
        return f"{_DETAIL[reason]} {alert.message}"
    text = _DETAIL[reason].format(h=headroom_w)
    if held:
        text += " (held for a moment to avoid flapping)"
    return text


@dataclass
class SignalTracker:
    """Keeps the previous signal between evaluations (the only state); still no I/O and no clock."""

    settings: SignalSettings = field(default_factory=SignalSettings)
    current: Signal | None = None

    def update(self, inputs: SignalInputs) -> Signal:
        self.current = next_signal(self.current, inputs, self.settings)
        return self.current

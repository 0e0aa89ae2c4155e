"""What the web service knows right now: the latest live snapshot, the signal, alerts, and who to tell.

Fed by the live client (one message per reading from the daemon) and a one-second tick; read by the
API, the server-sent-event stream and the MQTT feed. Plain synchronous code with no I/O: everything
runs on the web service's event loop thread, and listeners are called synchronously with each update
(they must only hand the update on: set an event, queue a publish).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.logs import get_logger
from services.signal import (
    Alert,
    QuarterSoFar,
    Signal,
    SignalInputs,
    SignalSettings,
    SignalTracker,
    State,
    TriggeredLoad,
)
from services.node.web.declared import DeclaredTally
from services.node.web.fleet import Fleet
from services.signal_words import text as signal_text
from services.signal_words import words as signal_words

log = get_logger("quartier.services.web")

QUARTER_S = 900.0


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def community_alert(a: dict) -> Alert:
    """One alert of the daemon's ``alerts`` message (already checked by the uplink against the wire
    contract); ValueError/KeyError/TypeError when it is not one."""
    start, until = parse_time(a["start"]), parse_time(a["until"])
    if start is None or until is None or start.tzinfo is None or until <= start:
        raise ValueError("alert without a valid window")
    kind = a.get("kind", "reduce")
    if kind not in ("reduce", "consume"):
        raise ValueError(f"alert kind {kind!r}")
    return Alert(start=start, until=until, message=str(a.get("message") or "")[:200], kind=kind, id=str(a["id"])[:64])


def submeters_view(subs: object) -> list[dict]:
    """The grid meter's MBus channels (gas, water) as the daemon relayed them: register, unit and the
    channel's own reading time (hourly or every 5 minutes, not the electricity meter's second)."""
    out = []
    for m in subs if isinstance(subs, list) else []:
        if isinstance(m, dict) and m.get("kind") in ("gas", "water") and isinstance(m.get("value"), int | float):
            unit = str(m.get("unit") or "")
            out.append({"channel": m.get("channel"), "kind": m["kind"], "value": m["value"],
                        "unit": "m3" if unit.lower() == "m3" else unit, "time": m.get("time")})
    return sorted(out, key=lambda m: (m["kind"], str(m["channel"])))


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Update:
    """What changed: ``reading`` (a new reading of the shown meter), ``quarter_hour`` (one closed),
    ``signal`` (the state changed), ``tick`` (time passed), ``gateway`` (connected or lost),
    ``operation`` (the community's live totals), ``allocation`` (the server's share of a quarter-hour)."""

    kind: str
    version: int
    signal_changed: bool = False
    quarter_hour: dict | None = None


@dataclass
class DayTotals:
    """Closed quarter-hours of one local day, from the store (the running one is added live)."""

    meter_id: str
    day: date
    import_wh: int = 0
    export_wh: int = 0
    quarter_hours: int = 0


@dataclass
class NodeState:
    tz: ZoneInfo
    signal_settings: SignalSettings = field(default_factory=SignalSettings)
    meter_id: str | None = None  # the shown meter; None: the first grid meter that sends a reading
    fleet: Fleet = field(default_factory=Fleet)
    clock: Callable[[], float] = time.monotonic
    language: str = "en"  # the node's language (web.language): the MQTT feed's text sensor speaks it
    connected: bool = False
    reading: dict | None = None  # the shown meter's latest "reading" message
    meters: dict[str, dict] = field(default_factory=dict)  # every meter's latest "reading" (producers too)
    received_monotonic: float | None = None
    last_quarter_hour: dict | None = None
    today: DayTotals | None = None
    alert: Alert | None = None  # set locally through the API
    community_alerts: tuple[Alert, ...] = ()  # the operation's collective alerts (active and scheduled)
    last_alert_result: dict | None = None  # the collective result of the last finished alert
    triggered: dict[str, TriggeredLoad] = field(default_factory=dict)
    # the month's energy of declared (triggered) loads run while green (declared.py); its value per kWh
    # (grid - shared price, when web prices are configured) for the euro estimate
    declared: DeclaredTally | None = None
    declared_value_eur_kwh: float | None = None
    version: int = 0
    readings: int = 0
    bad_messages: int = 0  # live-feed messages that did not parse (logged)
    _tracker: SignalTracker = field(init=False)
    _listeners: list[Callable[[Update], None]] = field(default_factory=list)
    _last_now: datetime | None = None
    _today_dirty: bool = False

    def __post_init__(self) -> None:
        self._tracker = SignalTracker(self.signal_settings)
        if self.declared is None:
            self.declared = DeclaredTally(self.tz)

    # -- listeners -------------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[Update], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, kind: str, *, signal_changed: bool = False, quarter_hour: dict | None = None) -> None:
        self.version += 1
        update = Update(kind, self.version, signal_changed, quarter_hour)
        for listener in list(self._listeners):
            try:
                listener(update)
            except Exception:  # one broken listener must not starve the others
                log.exception("web.listener_failed", extra={"kind": kind})

    # -- inputs ----------------------------------------------------------------------------------

    def set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            changed = self._evaluate()
            self._emit("gateway", signal_changed=changed)

    def ingest(self, msg: dict) -> None:
        """One message of the daemon's live feed (see gateway/live.py)."""
        kind = msg.get("type")
        if kind == "reading":
            mid = msg.get("meter_id")
            self.meters[mid] = msg
            if self.meter_id is None:
                if msg.get("role", "grid") != "grid":
                    return  # a producer or a circuit is never the household's meter (not arrival order)
                self.meter_id = mid
                log.info("web.meter_selected", extra={"meter": mid})
            if mid != self.meter_id:
                return
            self.reading = msg
            self.received_monotonic = self.clock()
            self.readings += 1
            changed = self._evaluate()
            self._emit("reading", signal_changed=changed)
        elif kind == "quarter_hour":
            if msg.get("meter_id") != self.meter_id and self.meter_id is not None:
                return
            self.last_quarter_hour = msg
            self._today_dirty = True  # committed before it was sent: the store has it now
            self._emit("quarter_hour", quarter_hour=msg)
        elif kind == "operation":  # the community's live totals, relayed by the daemon's uplink
            from services.node.web.fleet import OperationLive

            try:
                live = OperationLive.from_totals(msg["totals"], self.clock() - max(0.0, time.time() - float(msg["received"])))
            except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
                self.bad_messages += 1
                log.warning("web.bad_operation_totals", extra={"error": str(exc)[:200]})
                return
            self.fleet.update_live(live)
            self._emit("operation", signal_changed=self._evaluate())
        elif kind == "alerts":  # the community's collective alerts, relayed by the daemon's uplink
            try:
                alerts = tuple(sorted((community_alert(a) for a in msg["alerts"]), key=lambda a: a.start))
            except (KeyError, TypeError, ValueError) as exc:
                self.bad_messages += 1
                log.warning("web.bad_alerts", extra={"error": str(exc)[:200]})
                return
            self.community_alerts = alerts
            res = msg.get("last_result")
            self.last_alert_result = res if isinstance(res, dict) else None
            self._emit("signal", signal_changed=self._evaluate())
        elif kind == "allocation":  # committed to the store: the page reloads its month and bars
            self._emit("allocation")

    def tick(self) -> None:
        """Time passed without a reading: staleness and hold times may change the signal."""
        changed = self._evaluate()
        self._emit("tick", signal_changed=changed)

    def set_today(self, totals: DayTotals) -> None:
        self.today = totals
        self._today_dirty = False

    def today_wanted(self) -> tuple[str, date] | None:
        """The (meter, local day) whose closed totals should be loaded, when they are not yet."""
        now = self.meter_now()
        if self.meter_id is None or now is None:
            return None
        key = (self.meter_id, now.astimezone(self.tz).date())
        if self._today_dirty or self.today is None or (self.today.meter_id, self.today.day) != key:
            return key
        return None

    # -- alerts and triggered loads (the state-changing API) ------------------------------------

    def set_alert(self, alert: Alert | None) -> Signal:
        self.alert = alert
        changed = self._evaluate()
        self._emit("signal", signal_changed=changed)
        return self.signal

    def set_triggered(self, load_id: str, watts: float) -> Signal:
        now = self.meter_now() or datetime.now(UTC)
        if watts <= 0:
            self.triggered.pop(load_id, None)
        else:
            prev = self.triggered.get(load_id)
            # a load that changes power: the old part keeps its start, approximated as one load
            self.triggered[load_id] = TriggeredLoad(watts=watts, since=prev.since if prev else now)
        changed = self._evaluate()
        self._emit("signal", signal_changed=changed)
        return self.signal

    # -- derived ---------------------------------------------------------------------------------

    def age_s(self) -> float | None:
        return None if self.received_monotonic is None else max(0.0, self.clock() - self.received_monotonic)

    def meter_now(self) -> datetime | None:
        """The meter's clock now: the latest reading's time plus the time since it arrived."""
        if self.reading is None:
            return None
        t = parse_time(self.reading.get("time"))
        age = self.age_s() or 0.0
        return None if t is None else t + timedelta(seconds=age)

    def active_alert(self, now: datetime) -> Alert | None:
        """The local alert if active, else the community's alert active now (the latest started)."""
        if self.alert is not None and self.alert.active(now):
            return self.alert
        active = [a for a in self.community_alerts if a.active(now)]
        return active[-1] if active else None

    def signal_inputs(self) -> SignalInputs:
        now = self.meter_now() or datetime.now(UTC)
        if self._last_now is not None and now < self._last_now - timedelta(seconds=1):
            # the meter's clock is behind the one used so far (the first reading after the Pi's
            # clock, a meter clock set back): hold times measured on the old clock mean nothing
            log.info("signal.clock_jump", extra={"from": iso(self._last_now), "to": iso(now)})
            self._tracker.current = None
        elif self._last_now is not None and now < self._last_now:
            now = self._last_now  # jitter: the signal's clock never runs backwards
        self._last_now = now
        age = self.age_s()
        own = None
        r = self.reading
        if r is not None:
            q = r.get("quarter_hour") or {}
            start = parse_time(q.get("start"))
            if start is not None:
                stale_for = age if self.connected else max(age or 0.0, self.signal_settings.stale_after_s + 1)
                own = QuarterSoFar(
                    start=start,
                    elapsed_s=float(q.get("elapsed_s") or 0.0),
                    imported_wh=q.get("import_wh"),
                    exported_wh=q.get("export_wh"),
                    import_w=float(r.get("import_w") or 0.0),
                    export_w=float(r.get("export_w") or 0.0),
                    age_s=stale_for or 0.0,
                )
        op = None
        fl = self.fleet.live()
        if fl is not None:
            op = fl.quarter(max(0.0, self.clock() - fl.received_monotonic))
        loads = tuple(self.triggered.values())
        return SignalInputs(now=now, own=own, operation=op, triggered=loads, alert=self.active_alert(now))

    def _evaluate(self) -> bool:
        before = self._tracker.current
        inputs = self.signal_inputs()
        sig = self._tracker.update(inputs)
        if self.declared is not None:  # the interval since the previous evaluation, at the power that ran then
            self.declared.advance(inputs.now, sum(t.watts for t in self.triggered.values()),
                                  sig.state is State.GREEN)
        changed = before is None or before.state is not sig.state or before.reason is not sig.reason
        if changed and before is not None:
            log.info("signal.changed", extra={"state": sig.state.value, "reason": sig.reason.value,
                                               "headroom_w": sig.headroom_w, "was": before.state.value})
        return changed

    @property
    def signal(self) -> Signal:
        if self._tracker.current is None:
            self._evaluate()
        assert self._tracker.current is not None
        return self._tracker.current

    def signal_view(self) -> dict:
        """The signal object with its words (``words[lang]`` = headline and reason in fr/nl/en) and
        ``text``, both in the node's language: the page, the API and the MQTT feed say the same."""
        sig = self.signal
        out = sig.as_dict()
        out["words"] = signal_words(sig, self.tz)
        out["text"] = signal_text(sig, self.language, self.tz)
        return out

    def live(self) -> dict:
        """The ``GET /api/v1/live`` object (also the stream's and the MQTT feed's source)."""
        r = self.reading
        age = self.age_s()
        out: dict = {
            "gateway": {
                "connected": self.connected,
                "meter_id": self.meter_id,
                "last_reading_age_s": None if age is None else round(age, 1),
            },
            "time": None,
            "timezone": self.tz.key,
            "power": None,
            "quarter_hour": None,
            "registers": None,
            "submeters": [],
            "month_peak_w": None,
            "today": None,
            "operation": None,
            "signal": self.signal_view(),
            "last_alert": self.last_alert_result,
            "declared_loads": self.declared_view(),
        }
        if r is not None:
            imp = float(r.get("import_w") or 0.0)
            exp = float(r.get("export_w") or 0.0)
            out["time"] = r.get("time")
            out["power"] = {"import_w": round(imp, 1), "export_w": round(exp, 1), "net_w": round(imp - exp, 1)}
            q = r.get("quarter_hour")
            if q:
                elapsed = float(q.get("elapsed_s") or 0.0)
                start = parse_time(q.get("start"))
                out["quarter_hour"] = {
                    "start": q.get("start"),
                    "end": iso(start + timedelta(seconds=QUARTER_S)) if start else None,
                    "elapsed_s": round(elapsed, 1),
                    "remaining_s": round(max(0.0, QUARTER_S - elapsed), 1),
                    "import_wh": q.get("import_wh"),
                    "export_wh": q.get("export_wh"),
                    "projected_demand_w": q.get("projected_demand_w"),
                }
            out["registers"] = {"import_wh_total": r.get("import_wh_total"), "export_wh_total": r.get("export_wh_total")}
            out["submeters"] = submeters_view(r.get("submeters"))
            out["month_peak_w"] = r.get("month_peak_w")
            out["today"] = self._today_view(q)
        fl = self.fleet.live()
        if fl is not None:
            out["operation"] = {
                "pool_w": round(fl.pool_w, 1),
                "consumption_w": round(fl.consumption_w, 1),
                "surplus_w": round(fl.pool_w - fl.consumption_w, 1),
                "as_of": iso(fl.as_of),
                "age_s": round(max(0.0, self.clock() - fl.received_monotonic), 1),
                "members_reporting": fl.members_reporting,
                "members_total": fl.members_total,
            }
        return out

    def declared_view(self) -> dict | None:
        """This month's energy of the loads home automation declared that ran while the signal was green."""
        if self.declared is None:
            return None
        now = self.meter_now() or datetime.now(UTC)
        month = self.declared.month_of(now)
        kwh = self.declared.month_wh(month) / 1000
        value = self.declared_value_eur_kwh
        return {
            "month": month,
            "green_kwh": round(kwh, 3),
            "savings_eur": None if value is None else round(kwh * value, 2),
            "running": len(self.triggered),
            "running_w": round(sum(t.watts for t in self.triggered.values()), 1),
        }

    def _today_view(self, q: dict | None) -> dict | None:
        t = self.today
        if t is None:
            return None
        imp, exp = t.import_wh, t.export_wh
        start = parse_time(q.get("start")) if q else None
        closed = self.last_quarter_hour.get("start") if self.last_quarter_hour else None
        # the running quarter-hour counts until it is closed (then the store's totals have it)
        if q and start is not None and start.astimezone(self.tz).date() == t.day and q.get("start") != closed:
            imp += int(q.get("import_wh") or 0)
            exp += int(q.get("export_wh") or 0)
        return {"day": t.day.isoformat(), "import_wh": imp, "export_wh": exp, "closed_quarter_hours": t.quarter_hours}

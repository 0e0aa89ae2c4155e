"""The web service at run time: the live client, the one-second tick, today's totals, the MQTT feed.

Runs in its own process (``quartier web``), apart from the daemon: a crash or a slow client here loses
no reading. Everything below runs on one asyncio event loop; store reads go to a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.logs import get_logger
from services.signal import SignalSettings
from services.node.web import declared
from services.node.web.figures import Prices, local_midnight
from services.node.web.fleet import Fleet, MemberQuarterHour, OperationSetup
from services.node.web.history import History
from services.node.web.live_client import LiveClient
from services.signal_words import LANGS
from services.node.web.state import DayTotals, NodeState, Update

log = get_logger("quartier.services.web")


@dataclass(frozen=True, slots=True)
class WebSettings:
    """What the web service needs from the node configuration (``[web]``, ``[daemon]``, ``[store]``)."""

    socket_path: Path
    store_path: Path
    timezone: str = "Europe/Brussels"
    token: str = ""  # bearer token for state-changing endpoints; empty: those endpoints are off
    cors_origins: tuple[str, ...] = ()
    meter_id: str | None = None
    language: str = "auto"
    prices: Prices = field(default_factory=Prices)
    stream_interval_s: float = 1.0
    signal: SignalSettings = field(default_factory=SignalSettings)
    operation: str | None = None  # the sharing operation ([uplink], when enabled): its allocations are shown
    member_id: str | None = None  # this member in it (the pseudonym)
    production_meter_id: str | None = None  # a meter whose role is production (a PV inverter's): own production on the page
    # the meter tariffs' names on the page ("1" -> "day"); unnamed: "Tariff 1" in the page's language
    tariff_names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg) -> WebSettings:
        """From a :class:`gateway.config.Config`."""
        from gateway.live import SOCKET_NAME

        w = cfg.web
        s = w.signal
        return cls(
            socket_path=cfg.daemon.runtime_dir / SOCKET_NAME,
            store_path=cfg.store.path,
            timezone=cfg.daemon.timezone,
            token=w.token.get_secret_value(),
            cors_origins=tuple(w.cors_origins),
            meter_id=w.meter_id,
            language=w.language,
            prices=Prices(w.grid_price_eur_kwh, w.shared_price_eur_kwh, w.supplier_sharing_fee_eur_year,
                          dict(w.grid_price_eur_kwh_by_tariff)),
            tariff_names=dict(w.tariff_names),

            stream_interval_s=w.stream_interval_s,
            operation=cfg.uplink.operation if cfg.uplink.enabled else None,
            member_id=cfg.uplink.pseudonym if cfg.uplink.enabled else None,
            production_meter_id=_production_meter(cfg),
            signal=SignalSettings.from_section(s),
        )


def _production_meter(cfg) -> str | None:
    """The first configured meter whose role is production (a Flukso clamp on the inverter's circuit,
    a PV meter on P1), if any: its export register is the home's own production."""
    for src in cfg.sources:
        for meter_id in src.meter_ids():
            if src.role_of(meter_id) == "production":
                return meter_id
    return None


DECLARED_SAVE_S = 30.0  # how often the declared-loads figure is written (also on stop)


def _shared_value(prices: Prices) -> float | None:
    """EUR a kWh moved into sharing is worth: grid - shared price, when both are configured."""
    if prices.grid_eur_kwh is None or prices.shared_eur_kwh is None:
        return None
    return prices.grid_eur_kwh - prices.shared_eur_kwh


class WebService:
    """Owns the node state and the background tasks; the FastAPI app (app.py) reads from it."""

    def __init__(self, settings: WebSettings, *, fleet: Fleet | None = None, mqtt_feed=None) -> None:
        self.settings = settings
        self.fleet = fleet if fleet is not None else Fleet()
        self.history = History(settings.store_path, timezone=settings.timezone)
        # beside the daemon's socket, in its runtime dir: the only place the web service may write
        self.declared_path = settings.socket_path.parent / declared.FILE_NAME
        if settings.operation and settings.member_id and self.fleet.setup is None:
            # the node knows its operation and pseudonym, not the other members: the community server
            # allocates and sends this member its own share, which the daemon stores
            self.fleet.set_setup(OperationSetup(operation_id=settings.operation, member_id=settings.member_id,
                                                rounds=(), members=()))
        self.state = NodeState(
            tz=ZoneInfo(settings.timezone), signal_settings=settings.signal, meter_id=settings.meter_id, fleet=self.fleet,
            language=settings.language if settings.language in LANGS else "en",
            declared=declared.load(self.declared_path, ZoneInfo(settings.timezone)),
            declared_value_eur_kwh=_shared_value(settings.prices),
        )
        self.client = LiveClient(settings.socket_path, self._on_message, self.state.set_connected)
        self.mqtt_feed = mqtt_feed
        self.started_monotonic = time.monotonic()
        self.stream_clients = 0
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._today_loading = False
        self._declared_saved = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.mqtt_feed is not None:
            self.mqtt_feed.attach(self.state)
            self.mqtt_feed.start()
        self._tasks = [
            asyncio.create_task(self.client.run(), name="live-client"),
            asyncio.create_task(self._ticker(), name="tick"),
        ]
        log.info("web.started", extra={"socket": str(self.settings.socket_path), "store": str(self.settings.store_path),
                                       "mqtt": self.mqtt_feed is not None, "pid": os.getpid()})

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self.mqtt_feed is not None:
            self.mqtt_feed.stop()
        self.save_declared()
        self.history.close()

    def save_declared(self) -> None:
        """Keep the month's declared-loads figure across restarts (declared.py); a failure is logged."""
        tally = self.state.declared
        if tally is None or not tally.dirty:
            return
        try:
            declared.save(self.declared_path, tally)
        except OSError as exc:
            log.warning("web.declared_loads_not_saved", extra={"path": str(self.declared_path), "error": str(exc)})

    # -- live path -------------------------------------------------------------------------------

    def _on_message(self, msg: dict) -> None:
        self.state.ingest(msg)
        if self.state.today_wanted() is not None and not self._today_loading:
            self._today_loading = True
            task = asyncio.get_running_loop().create_task(self._load_today())
            self._background.add(task)  # keep a reference until it is done
            task.add_done_callback(self._background.discard)

    async def _ticker(self) -> None:
        period = min(1.0, self.settings.stream_interval_s)
        while True:
            await asyncio.sleep(period)
            try:
                self.state.tick()
                if time.monotonic() - self._declared_saved >= DECLARED_SAVE_S:
                    self._declared_saved = time.monotonic()
                    self.save_declared()
                if self.mqtt_feed is not None and self.mqtt_feed.diagnostics_due():
                    from gateway.health import metering_summary, read_health

                    health = read_health(self.settings.socket_path.parent)
                    self.mqtt_feed.publish_diagnostics(metering_summary(health), health)
                if self.state.today_wanted() is not None and not self._today_loading:
                    self._today_loading = True
                    await self._load_today()
            except Exception:
                log.exception("web.tick_failed")

    def metering(self) -> dict | None:
        """The daemon's accepted and refused readings per meter, from its health file (beside its
        socket, in the runtime dir)."""
        from gateway.health import metering_summary, read_health

        return metering_summary(read_health(self.settings.socket_path.parent))

    async def _load_today(self) -> None:
        try:
            key = self.state.today_wanted()
            if key is None:
                return
            meter_id, day = key
            totals = await asyncio.to_thread(self._day_totals, meter_id, day)
            if totals is not None:
                self.state.set_today(totals)
        except Exception:
            log.exception("web.today_failed")
        finally:
            self._today_loading = False

    def _day_totals(self, meter_id: str, day: date) -> DayTotals | None:
        if self.history.store() is None:
            return None
        t = self.history.daily_total(meter_id, day)
        if t is None:
            return DayTotals(meter_id, day)
        return DayTotals(meter_id, day, t.import_wh, t.export_wh, t.quarter_hours)

    # -- helpers for the routes ------------------------------------------------------------------

    def today(self) -> date:
        """The local day by the meter's clock (the demo's meter lives on another day than the Pi)."""
        now = self.state.meter_now() or datetime.now(UTC)
        return now.astimezone(self.state.tz).date()

    def day_start(self, day: date) -> datetime:
        return local_midnight(day, self.state.tz)

    def member_quarter_hours(self, start: datetime, end: datetime) -> dict[datetime, MemberQuarterHour]:
        """This member's share per closed quarter-hour in [start, end): the community server's, from
        the store (durable across restarts of either process), over any computed on this node from
        the fleet's quarter-hours. Called from the routes' worker threads (a store read)."""
        out = self.fleet.member_quarter_hours(start, end) if self.fleet.has_data else {}
        setup = self.fleet.setup
        if setup is not None:
            for a in self.history.allocations(setup.operation_id, start, end):
                out[a.start] = MemberQuarterHour(
                    start=a.start, received_wh=a.received_wh, injection_shared_wh=a.injection_shared_wh,
                    pool_wh=a.pool_wh, shared_wh=a.shared_wh, consumption_wh=a.consumption_wh)
        return dict(sorted(out.items()))

    def subscribe(self, listener: Callable[[Update], None]) -> Callable[[], None]:
        return self.state.subscribe(listener)


def is_data_update(update: Update) -> bool:
    """Updates that carry news for the stream and the feed (a tick only does when the signal moved)."""
    return update.kind != "tick" or update.signal_changed

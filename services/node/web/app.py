"""The node's FastAPI app: the local page, the read API, the live stream, and the few state changes.

Read endpoints are open on the LAN (a household's phone needs no login to see the signal); anything
that changes state needs ``Authorization: Bearer <web.token>``; no CORS unless origins are listed.
Bad requests get a 4xx with a one-line ``detail``. OpenAPI at ``/api/v1/openapi.json`` and a small
offline reader of it at ``/api/docs`` (Swagger UI would load from a CDN).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import time
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Annotated, Literal

from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from gateway.dates import DateInputError, check_day, parse_day, parse_instant
from gateway.gas_days import gas_per_day
from gateway.logs import get_logger
from services.signal import Alert
from services.node.web.figures import allocation_view, period_bounds, quarter_hours_view
from services.node.web.page import load_texts, pick_language, render
from services.node.web.periods import Energy, history_view, span
from services.node.web.service import WebService, is_data_update
from services.node.web.state import Update, iso

log = get_logger("quartier.services.web")

API = "/api/v1"
MAX_RANGE = timedelta(days=31)
VERSION = "0.1.0"
STATIC = resources.files("services.node.web") / "static"
BEARER = HTTPBearer(auto_error=False, description="web.token from the node's secrets file")


class AlertRequest(BaseModel):
    """A collective "reduce now" alert: the signal turns red for everyone on this node."""

    message: str = Field(default="", max_length=280, description="shown under the light, e.g. the reason")
    minutes: float = Field(default=60, gt=0, le=24 * 60, description="how long it lasts")


class TriggeredLoadRequest(BaseModel):
    """A load switched on because of the signal (the boiler, the EV charger); 0 W when it stops."""

    watts: float = Field(ge=0, le=100_000)


def _parse_bound(value: str | None, name: str, service: WebService) -> datetime | None:
    """ISO 8601 with an offset, or a date (local midnight of the store's time zone), in range:
    a 400 naming the parameter, never a 500 (gateway/dates.py)."""
    if value is None:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return service.day_start(parse_day(value, name))
        return parse_instant(value, name)
    except DateInputError as exc:
        raise HTTPException(400, str(exc)) from None


def _in_range(day: date | None, name: str) -> date | None:
    try:
        return None if day is None else check_day(day, name)
    except DateInputError as exc:
        raise HTTPException(422, str(exc)) from None


def create_app(service: WebService) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="Quartier node API",
        version=VERSION,
        description="Live metering, consume-now signal and provisional sharing figures of one Quartier node.",
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{API}/openapi.json",
        lifespan=lifespan,
    )
    app.state.service = service
    s = service.settings

    if s.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(s.cors_origins), allow_methods=["GET"],
                           allow_headers=["Authorization"])

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path"))
            parts.append(f"{loc or 'request'}: {err.get('msg')}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        if not s.token:
            raise HTTPException(403, "state-changing endpoints are off: set web.token in the secrets file")
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), s.token.encode()):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    authorised = [Depends(require_token)]
    refusals = {401: {"description": "no or wrong bearer token"},
                403: {"description": "state changes are off (no web.token configured)"}}

    # -- the page ----------------------------------------------------------------------------------

    template = (STATIC / "index.html").read_text(encoding="utf-8")
    texts = load_texts(STATIC)

    @app.get("/", include_in_schema=False)
    def index(lang: str | None = None, quartier_lang: Annotated[str | None, Cookie()] = None,
              accept_language: Annotated[str | None, Header()] = None) -> HTMLResponse:
        """In the member's language (``?lang``, their last choice, ``web.language``, the browser's),
        with the signal and today's figures for a browser without JavaScript."""
        chosen = pick_language(lang, quartier_lang, s.language, accept_language)
        return HTMLResponse(render(template, texts, chosen, service.state.live()),
                            headers={"Cache-Control": "no-cache", "Content-Language": chosen,
                                     "Vary": "Accept-Language, Cookie"})

    @app.get("/manifest.webmanifest", include_in_schema=False)
    def manifest(accept_language: Annotated[str | None, Header()] = None) -> Response:
        """Installable on a phone's home screen; named in the node's language."""
        chosen = pick_language(None, None, s.language, accept_language)
        body = {
            "name": "Quartier", "short_name": "Quartier", "lang": chosen, "start_url": "/", "scope": "/",
            "display": "standalone", "background_color": "#eef2f6", "theme_color": "#16324f",
            "description": texts[chosen].get("surplus_now", "Quartier"),
            "icons": [{"src": "/static/icon.svg", "sizes": "any", "type": "image/svg+xml", "purpose": "any"},
                      {"src": "/static/icon-192.png", "sizes": "192x192", "type": "image/png"},
                      {"src": "/static/icon-512.png", "sizes": "512x512", "type": "image/png"}],
        }
        return Response(json.dumps(body), media_type="application/manifest+json",
                        headers={"Cache-Control": "no-cache", "Vary": "Accept-Language"})

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(str(STATIC / "docs.html"), headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    # -- read API ----------------------------------------------------------------------------------

    @app.get(f"{API}/live", summary="Own power, running quarter-hour, today's energy, the operation's surplus")
    def live() -> dict:
        """Import and export power (W, non-negative) and the signed net (import - export), the running
        quarter-hour so far, today's energy (closed quarter-hours + the running one), this month's
        peak demand, the operation's live surplus when fleet data is available, the signal, and
        ``submeters``: the grid meter's gas and water registers (MBus) with their own reading time."""
        return service.state.live()

    @app.get(f"{API}/signal", summary="The consume-now signal")
    def signal() -> dict:
        """``state`` green (surplus: run appliances now), amber (small or uncertain surplus) or red
        (none, or a collective reduce-now alert); ``headroom_w``; ``reason``; ``valid_until``; ``held`` and
        ``held_until``; ``words`` (headline and reason sentence in fr/nl/en) and ``text`` (the node's language)."""
        return service.state.signal_view()

    @app.get(f"{API}/quarter-hours", summary="Closed quarter-hours with their quality")
    def quarter_hours(
        from_: Annotated[str | None, Query(alias="from", description="ISO 8601 date-time with offset, or a date "
                                           "(local midnight); default: today")] = None,
        to: Annotated[str | None, Query(description="exclusive end; default: from + 1 day")] = None,
        meter: Annotated[str | None, Query(description="meter id; default: the node's meter")] = None,
    ) -> dict:
        start = _parse_bound(from_, "from", service) or service.day_start(service.today())
        end = _parse_bound(to, "to", service) or start + timedelta(days=1)
        if end <= start:
            raise HTTPException(400, "to must be after from")
        if end - start > MAX_RANGE:
            raise HTTPException(400, f"at most {MAX_RANGE.days} days per request")
        meter_id = meter or service.state.meter_id
        qhs = service.history.quarter_hours(meter_id, start, end) if meter_id else []
        member = service.member_quarter_hours(start, end)
        return quarter_hours_view(qhs, member, start=start, end=end, tz=service.state.tz, meter_id=meter_id,
                                  fleet_setup=service.fleet.setup)

    @app.get(f"{API}/allocation", summary="This member's provisional shared energy")
    def allocation(
        period: Annotated[Literal["day", "month"], Query(description="the local day or month")] = "day",
        at: Annotated[date | None, Query(description="a date in the period; default: today")] = None,
    ) -> dict:
        """Shared energy received, sharing rate and self-sufficiency over closed quarter-hours.
        Provisional; without fleet data based on this meter alone (see ``basis`` and ``note``)."""
        day = _in_range(at, "at") or service.today()
        start, end, label = period_bounds(period, day, service.state.tz)
        meter_id = service.state.meter_id
        imp = exp = n = expected = 0
        if meter_id is not None:
            h = service.history
            total = h.daily_total(meter_id, day) if period == "day" else h.monthly_total(meter_id, label)
            if total is not None:
                imp, exp, n, expected = total.import_wh, total.export_wh, total.quarter_hours, total.expected
        if not expected:
            expected = int((end.timestamp() - start.timestamp()) // 900)
        member = service.member_quarter_hours(start, end)
        return allocation_view(period=period, label=label, start=start, end=end, meter_id=meter_id, import_wh=imp,
                               export_wh=exp, quarter_hours=n, expected=expected, member=member,
                               setup=service.fleet.setup, prices=s.prices)

    @app.get(f"{API}/history", summary="A day, week, month or year of this meter, with euros where prices are known")
    def history(
        period: Annotated[Literal["day", "week", "month", "year"], Query(
            description="day: by hour; week (Monday first) and month: by day; year: by month")] = "day",
        at: Annotated[date | None, Query(description="a date in the period (YYYY-MM-DD); default: today")] = None,
    ) -> dict:
        """Import, export and the community's share per bucket and in total (closed quarter-hours and
        the store's daily and monthly totals); ``production_wh`` and ``self_consumption_wh`` when the
        node has a production meter; ``grid_cost_eur``/``shared_cost_eur`` when prices are configured;
        ``import_by_tariff_wh``, ``grid_import_by_tariff_wh`` and ``grid_cost_by_tariff_eur`` per meter
        tariff where the store knows the split (null where retention pruned it before), priced with
        ``web.grid_price_eur_kwh_by_tariff`` (the single price for a tariff without its own).
        ``gas_m3``: gas used per day or month bucket and in the totals (a day: the totals only), from the
        MBus gas register (gateway/gas_days.py); null where unknown, ``gas_partial`` where a day counted
        lacks the day before or had a meter exchange.
        ``previous``/``next``: a date in the neighbouring period. Bad parameters: 422 naming the field."""
        day = _in_range(at, "at") or service.today()
        tz = service.state.tz
        sp = span(period, day, tz)
        meter_id = service.state.meter_id

        def energy_of(meter: str | None) -> list[Energy]:
            if meter is None:
                return []
            h = service.history
            if period == "day":
                return [Energy(q.start, q.import_wh, q.export_wh, int(q.quality.value == "estimated"),
                               q.import_by_tariff, q.export_by_tariff) for q in period_qhs(meter)]
            if period in ("week", "month"):
                first = sp.start.date()
                return [Energy(service.day_start(d.day), d.import_wh, d.export_wh, d.estimated, d.import_by_tariff,
                               d.export_by_tariff) for d in h.daily_totals(meter, first, sp.end.date())]
            return [Energy(service.day_start(date(int(m.month[:4]), int(m.month[5:7]), 1)), m.import_wh, m.export_wh,
                           m.estimated, m.import_by_tariff, m.export_by_tariff)
                    for m in h.monthly_totals(meter, f"{day.year:04d}-01", f"{day.year + 1:04d}-01")]

        qhs_read: dict[str, list] = {}

        def period_qhs(meter: str) -> list:
            if meter not in qhs_read:
                qhs_read[meter] = service.history.quarter_hours(meter, sp.start, sp.end)
            return qhs_read[meter]

        member = service.member_quarter_hours(sp.start, sp.end)
        shared = {t: m.received_wh for t, m in member.items()}
        # shared energy is taken off the tariff it was received in: the kept quarter-hours' split, read
        # only when there is shared energy (a year of them otherwise stays on the card)
        qh_tariffs = ({q.start: q.import_by_tariff for q in period_qhs(meter_id)}
                      if meter_id is not None and any(shared.values()) else None)
        prod_meter = s.production_meter_id
        # the day before the period too: a day's gas counts from the last capture of the day before
        gas = gas_per_day(service.history.gas_days(meter_id, sp.start.date() - timedelta(days=1), sp.end.date())
                          ) if meter_id else {}
        return history_view(sp, tz=tz, meter_id=meter_id, energy=energy_of(meter_id), shared=shared,
                            production=energy_of(prod_meter) if prod_meter else None, prices=s.prices,
                            basis="operation" if member else "own_meter", qh_tariffs=qh_tariffs,
                            tariff_names=s.tariff_names, gas=gas)

    @app.get(f"{API}/health", summary="Is the gateway feeding this service, is the store readable")
    def health() -> dict:
        st = service.state
        age = st.age_s()
        ok = st.connected and age is not None and age < s.signal.stale_after_s
        feed = service.mqtt_feed
        return {
            "status": "ok" if ok else "degraded",
            "version": VERSION,
            "uptime_s": round(time.monotonic() - service.started_monotonic, 1),
            "gateway": {"connected": st.connected, "meter_id": st.meter_id, "readings": st.readings,
                        "last_reading_age_s": None if age is None else round(age, 1), "connects": service.client.connects},
            "store": {"path": str(s.store_path), "readable": service.history.store() is not None},
            "stream_clients": service.stream_clients,
            "mqtt": feed.status() if feed is not None else None,
            # what the daemon accepted and refused per meter and reason (gateway/plausibility.py)
            "metering": service.metering(),
            "rss_bytes": _rss_bytes(),
        }

    @app.get(f"{API}/stream", summary="Server-sent events: the live object about once a second",
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
    async def stream(request: Request) -> StreamingResponse:
        """``event: live`` with the ``/live`` object on each new reading (a meter sends one a second;
        a faster source is coalesced to one per 0.8 ``web.stream_interval_s``), repeated when nothing
        new came for 1.25 intervals; ``event: quarter_hour`` when one closes (the page reloads its bars),
        ``event: allocation`` when the community server's share of one arrived (idem, and the month)."""
        return StreamingResponse(_events(service, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- state changes (bearer token) ------------------------------------------------------------

    @app.put(f"{API}/alert", dependencies=authorised, responses=refusals, summary="Raise a collective reduce-now alert")
    def put_alert(body: AlertRequest) -> dict:
        now = service.state.meter_now() or datetime.now(UTC)
        alert = Alert(start=now, until=now + timedelta(minutes=body.minutes), message=body.message)
        log.info("signal.alert_raised", extra={"until": iso(alert.until), "alert_message": body.message})
        return service.state.set_alert(alert).as_dict()

    @app.delete(f"{API}/alert", dependencies=authorised, responses=refusals, summary="End the reduce-now alert")
    def delete_alert() -> dict:
        log.info("signal.alert_cleared")
        return service.state.set_alert(None).as_dict()

    @app.put(f"{API}/signal/triggered-load/{{load_id}}", dependencies=authorised, responses=refusals,
             summary="Declare a load the signal triggered (added back: no feedback loop)")
    def put_triggered(load_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], body: TriggeredLoadRequest) -> dict:
        return service.state.set_triggered(load_id, body.watts).as_dict()

    return app


async def _events(service: WebService, request: Request):
    """One event per new reading, at most one per 0.8 interval (a faster source is coalesced: a slow
    client only ever gets the newest state, never a backlog); an event at once for other news (a
    closed quarter-hour, a signal change, the gateway lost or back); and a repeat of the latest state
    when nothing was sent for 1.25 intervals (the client sees the stream is alive).

    Only readings are spaced out, and only from the previous reading sent: a repeat or other news
    just before a reading never delays it."""
    interval = service.settings.stream_interval_s
    min_gap = 0.8 * interval
    repeat_after = 1.25 * interval
    state = service.state
    changed = asyncio.Event()
    news = {"reading": True, "other": False, "qh": None, "alloc": False}

    def listener(update: Update) -> None:
        if update.kind == "reading":
            news["reading"] = True
        elif update.kind == "allocation":
            news["alloc"] = news["other"] = True
        elif is_data_update(update):
            news["other"] = True
        else:
            return
        if update.quarter_hour is not None:
            news["qh"] = update.quarter_hour
        changed.set()

    unsubscribe = service.subscribe(listener)
    service.stream_clients += 1
    last_sent = last_reading = -1e9
    try:
        yield "retry: 2000\n\n"
        while True:
            now = time.monotonic()
            if news["other"]:
                pass  # at once
            elif news["reading"] and now >= last_reading + min_gap:
                pass  # at once
            else:
                due = last_reading + min_gap if news["reading"] else last_sent + repeat_after
                if due > now:
                    changed.clear()
                    try:
                        await asyncio.wait_for(changed.wait(), timeout=due - now)
                    except TimeoutError:
                        pass
                    continue
            if await request.is_disconnected():
                return
            if news["reading"]:
                last_reading = time.monotonic()
            qh, alloc = news["qh"], news["alloc"]
            news.update(reading=False, other=False, qh=None, alloc=False)
            if qh is not None:
                yield f"event: quarter_hour\ndata: {json.dumps(qh, separators=(',', ':'))}\n\n"
            if alloc:  # the community's share of a quarter-hour is in the store: reload month and bars
                yield "event: allocation\ndata: {}\n\n"
            body = json.dumps(state.live(), separators=(",", ":"))
            last_sent = time.monotonic()
            yield f"id: {state.version}\nevent: live\ndata: {body}\n\n"
    finally:
        unsubscribe()
        service.stream_clients -= 1


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None

"""The operator's API and page: members online, last data, completeness per day, allocation per member
and month (provisional, and the grid operator's binding figure once imported), the key in use, and
the figures the server refused (per member and reason, and the newest ones with their payload).

Every endpoint needs ``Authorization: Bearer <token>`` (one of ``api.tokens``): the figures are
per-member personal data. The page itself is static and asks for the token once. ``/health`` is
open (it says only whether the server's threads run) and answers 503 when they do not.
"""

from __future__ import annotations

import hmac
from calendar import monthrange
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.dates import DateInputError, check_day, parse_month
from services.community.ledger import Ledger
from services.community.roster import Roster
from services.languages import LANGS, browser_language


def _local_day(day: date, tz: str) -> tuple[datetime, datetime]:
    z = ZoneInfo(tz)
    start = datetime(day.year, day.month, day.day, tzinfo=z)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=z)
    return start, end


def _local_iso(epoch: float | None, tz: str) -> str | None:
    if not epoch:
        return None
    try:
        return datetime.fromtimestamp(epoch, ZoneInfo(tz)).isoformat()
    except (OverflowError, OSError, ValueError):  # a time no member can have sent (a ledger from before admission)
        return None


class AlertRequest(BaseModel):
    """``PUT /api/v1/operations/{op}/alert``: a collective alert for every home of the operation."""

    model_config = ConfigDict(extra="forbid")
    minutes: int = Field(ge=1, le=1440)
    message: str = Field(default="", max_length=200)
    start: datetime | None = None  # ISO 8601 with a zone: a scheduled alert; default now
    # or the wall time on the meters' clock in the operation's time zone, as the operator page's form
    # gives it: the browser's own zone and clock are not the meters' (a demo runs on simulated time)
    start_local: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$")
    kind: Literal["reduce", "consume"] = "reduce"

    @model_validator(mode="after")
    def _one_start(self) -> AlertRequest:
        if self.start is not None and self.start_local is not None:
            raise ValueError("give start or start_local, not both")
        return self


def _wall_time(text: str, zone: str) -> datetime:
    """``YYYY-MM-DDTHH:MM`` in ``zone``; ValueError for a time the clock skips (spring forward). In
    the autumn's repeated hour, the first one (fold 0)."""
    naive = datetime.fromisoformat(text)
    z = ZoneInfo(zone)
    at = naive.replace(tzinfo=z)
    if at.astimezone(ZoneInfo("UTC")).astimezone(z).replace(tzinfo=None) != naive:
        raise ValueError(f"start_local: {text} does not exist in {zone} (the clocks go forward)")
    return at


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def _alert_view(rec: Any, now: datetime, tz: str, effect: dict[str, Any] | None) -> dict[str, Any]:
    z = ZoneInfo(tz)
    return {"id": rec.id, "kind": rec.kind, "message": rec.message, "status": rec.status(now),
            "start": rec.start.astimezone(z).isoformat(), "until": rec.until.astimezone(z).isoformat(),
            "ended_at": rec.ended_at.astimezone(z).isoformat() if rec.ended_at else None,
            "created_at": rec.created_at.astimezone(z).isoformat(), "effect": effect}


def create_app(roster: Roster, ledger: Ledger, tokens: list[str], server: Any = None, community: Any = None) -> FastAPI:
    """``server``: the running :class:`CommunityServer` (live totals, stats), optional; ``community``:
    the community file's :class:`Community` (its details head the statements), optional."""
    if not tokens:
        raise ValueError("api.tokens: at least one operator token is needed (secrets file)")
    app = FastAPI(title="Quartier community", docs_url=None, redoc_url=None)

    def auth(request: Request) -> None:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not given or not any(hmac.compare_digest(given, t) for t in tokens):
            raise HTTPException(401, "operator token required (Authorization: Bearer ...)")

    def op_or_404(op: str) -> Any:
        if op not in roster.operations:
            raise HTTPException(404, f"no operation {op!r}")
        return roster.operations[op]

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, lang: str | None = None) -> HTMLResponse:
        """In the operator's language (``?lang``, else the browser's), set before any script runs."""
        chosen = page_language(lang, request.headers.get("accept-language"))
        return HTMLResponse(PAGE.replace("__LANG__", chosen), headers={"Content-Language": chosen, "Vary": "Accept-Language"})

    @app.get("/health")
    def health() -> JSONResponse:
        if server is None:
            return JSONResponse({"ok": True})
        h = server.health()
        return JSONResponse(h, status_code=200 if h["ok"] else 503)

    @app.get("/api/v1/operations", dependencies=[Depends(auth)])
    def operations() -> list[dict[str, Any]]:
        out = []
        for op in roster.operations.values():
            totals = server.last_totals.get(op.id) if server is not None else None
            last = max((p[2] for p in ledger.presence(op.id).values() if p[2]), default=None)
            out.append({
                "id": op.id, "name": op.name, "key": op.key_label, "rounds": list(op.key_rounds),
                "timezone": op.timezone,
                # the newest quarter-hour any member sent: the page opens on its day and month
                "last_quarter_hour": _local_iso(last, op.timezone),
                "settings": op.settings.model_dump(), "members": len(op.members),
                "metered_members": len(roster.members_of(op.id)),
                "live": totals.model_dump(mode="json") if totals is not None else None,
            })
        return out

    @app.get("/api/v1/operations/{op}/members", dependencies=[Depends(auth)])
    def members(op: str) -> list[dict[str, Any]]:
        o = op_or_404(op)
        presence = ledger.presence(op)
        live = server.live.get(op, {}) if server is not None else {}
        refused: dict[str, int] = {}
        for r in ledger.dead_letter_counts(op):
            if r["member"] is not None:
                refused[r["member"]] = refused.get(r["member"], 0) + r["count"]  # type: ignore[operator]
        out = []
        for m in o.members:
            p = presence.get(m.id)
            lv = live.get(m.id)
            out.append({
                "id": m.id, "name": m.name, "role": m.role, "metered": m.meter is not None,
                "status": p[0] if p else "never seen",
                "status_since": _local_iso(p[1], o.timezone) if p else None,
                "last_quarter_hour": _local_iso(p[2], o.timezone) if p else None,
                "last_live": lv[0].time.isoformat() if lv else None,
                "live_import_w": lv[0].import_w if lv else None, "live_export_w": lv[0].export_w if lv else None,
                "refused": refused.get(m.id, 0),
            })
        return out

    @app.get("/api/v1/operations/{op}/completeness", dependencies=[Depends(auth)])
    def completeness(op: str, day: date = Query(..., description="local day, YYYY-MM-DD")) -> dict[str, Any]:
        o = op_or_404(op)
        try:
            check_day(day, "day")
        except DateInputError as exc:
            raise HTTPException(422, str(exc)) from None
        start, end = _local_day(day, o.timezone)
        expected = int((end - start).total_seconds() // 900)  # 92, 96 or 100 with DST
        have = ledger.completeness(op, start, end)
        return {"day": day.isoformat(), "expected": expected, "members": {
            s.member: {"received": have.get(s.member, 0), "ratio": round(have.get(s.member, 0) / expected, 4)}
            for s in roster.members_of(op)}}

    @app.get("/api/v1/operations/{op}/allocation", dependencies=[Depends(auth)])
    def allocation(op: str, month: str = Query(..., pattern=r"^\d{4}-\d{2}$")) -> dict[str, Any]:
        o = op_or_404(op)
        try:
            y, mo = parse_month(month, "month")
        except DateInputError as exc:
            raise HTTPException(422, str(exc)) from None
        z = ZoneInfo(o.timezone)
        start = datetime(y, mo, 1, tzinfo=z)
        end = start + timedelta(days=monthrange(y, mo)[1])
        end = end.replace(tzinfo=z)
        rows = ledger.allocation_totals(op, start, end)
        binding = False
        for r in rows.values():
            r["provisional_received_wh"] = r.get("received_wh")
            if "grid_received_wh" in r:  # the grid operator's binding figure replaces the provisional one
                binding = True
                if r.get("received_wh") is not None:
                    r["difference_wh"] = r["received_wh"] - r["grid_received_wh"]
                r["received_wh"] = r["grid_received_wh"]
            r["source"] = "grid" if "grid_received_wh" in r else "provisional"
        return {"month": month, "key": o.key_label, "provisional": not binding, "members": rows}

    @app.get("/api/v1/operations/{op}/refused", dependencies=[Depends(auth)])
    def refused(op: str, limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """What the server refused to store: counts per sender and reason, and the newest dead letters."""
        o = op_or_404(op)
        counts = ledger.dead_letter_counts(op)
        for r in counts:
            r["last_at"] = _local_iso(r["last_at"], o.timezone)  # type: ignore[arg-type]
        letters = ledger.dead_letters(op, limit)
        for r in letters:
            r["received_at"] = _local_iso(r["received_at"], o.timezone)  # type: ignore[arg-type]
        return {"counts": counts, "total": sum(r["count"] for r in counts), "recent": letters}  # type: ignore[misc]

    @app.get("/api/v1/operations/{op}/statement", dependencies=[Depends(auth)])
    def statement(op: str, period: str = Query(..., description="YYYY-MM, YYYY or YYYY-MM-DD..YYYY-MM-DD"),
                  member: str | None = None, format: str = Query("json", pattern="^(json|html)$"),
                  lang: str = Query("fr", pattern="^(fr|nl|en)$")) -> Any:
        """Members' statements of a period (services/community/statement.py); ``format=html`` with a
        member: its printable page (the page the PDF is printed from)."""
        from services.community.statement_web import statement_response

        return statement_response(op_or_404(op), roster.community, community, ledger.path, period, member, format, lang)

    @app.get("/api/v1/operations/{op}/observers", dependencies=[Depends(auth)])
    def observers(op: str, day: date = Query(..., description="local day, YYYY-MM-DD")) -> list[dict[str, Any]]:
        """The operation's observer meters (the cabin, a feeder): live power and the day's quarter-hours."""
        o = op_or_404(op)
        try:
            check_day(day, "day")
        except DateInputError as exc:
            raise HTTPException(422, str(exc)) from None
        start, end = _local_day(day, o.timezone)
        live = server.live.get(op, {}) if server is not None else {}
        out = []
        for seat in (s for s in roster.members_of(op) if s.observer):
            lv = live.get(seat.member)
            qhs = ledger.member_quarter_hours(op, seat.member, start, end)
            out.append({"id": seat.member, "live": None if lv is None else {
                "time": lv[0].time.isoformat(), "import_w": lv[0].import_w, "export_w": lv[0].export_w},
                "quarter_hours": [{"start": q.astimezone(ZoneInfo(o.timezone)).isoformat(), "import_wh": i, "export_wh": e}
                                  for q, i, e in qhs]})
        return out

    # -- collective alerts (services/community/alerts.py) ------------------------------------------

    def running() -> Any:
        if server is None:
            raise HTTPException(503, "alerts need the running community server")
        return server

    @app.put("/api/v1/operations/{op}/alert", dependencies=[Depends(auth)])
    def put_alert(op: str, body: Any = Body(...)) -> dict[str, Any]:
        """Raise (or schedule, with ``start``) a collective alert; published to every node at once."""
        o = op_or_404(op)
        srv = running()
        try:
            req = AlertRequest.model_validate(body)
            start = _wall_time(req.start_local, o.timezone) if req.start_local is not None else req.start
        except ValidationError as exc:
            raise HTTPException(422, _one_line(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        from services.community.alerts import AlertInputError

        try:
            rec = srv.raise_alert(op, kind=req.kind, message=req.message, minutes=req.minutes, start=start)
        except AlertInputError as exc:
            raise HTTPException(422, str(exc)) from None
        now = datetime.fromtimestamp(srv.meter_clock(), ZoneInfo("UTC"))
        return _alert_view(rec, now, o.timezone, None)

    @app.delete("/api/v1/operations/{op}/alert", dependencies=[Depends(auth)])
    def delete_alert(op: str, id: str | None = Query(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                                                    description="a scheduled alert to cancel; default: the active ones")) -> dict[str, Any]:
        o = op_or_404(op)
        srv = running()
        ended = srv.end_alert(op, id)
        if id is not None and not ended:
            raise HTTPException(404, f"no alert {id!r} to end in {op!r}")
        now = datetime.fromtimestamp(srv.meter_clock(), ZoneInfo("UTC"))
        return {"ended": [_alert_view(r, now, o.timezone, None) for r in ended]}

    @app.get("/api/v1/operations/{op}/alerts", dependencies=[Depends(auth)])
    def list_alerts(op: str) -> dict[str, Any]:
        """Every alert (scheduled, active, past), newest first, each with its measured effect."""
        from services.community.alerts import BASELINE_RULE

        o = op_or_404(op)
        srv = running()
        now = datetime.fromtimestamp(srv.meter_clock(), ZoneInfo("UTC"))
        records = srv.alerts.all(op)
        out = []
        for r in records:
            eff = srv.alert_effect(op, r, records) if r.start <= now else None
            out.append(_alert_view(r, now, o.timezone, eff))
        # the meters' clock now, in the operation's zone: what the form's start is read against
        return {"baseline": BASELINE_RULE, "alerts": out, "timezone": o.timezone,
                "now": now.astimezone(ZoneInfo(o.timezone)).isoformat(timespec="seconds")}

    @app.get("/api/v1/stats", dependencies=[Depends(auth)])
    def stats() -> dict[str, Any]:
        if server is None:
            return {}
        st = server.stats
        return {k: v for k, v in vars(st).items() if k != "latencies_s"}

    return app


def page_language(query: str | None, accept_language: str | None) -> str:
    """``?lang=``, else the first of fr/nl/en in the browser's ``Accept-Language`` by its q order."""
    return query if query in LANGS else browser_language(accept_language) or "en"


PAGE = """<!doctype html><html lang="__LANG__"><meta charset="utf-8"><title>Quartier community</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark">
<style>
:root{--bg:#f3f5f8;--card:#fff;--ink:#14212e;--muted:#4f5f6f;--line:#d5dde5;--head:#16324f;--ok:#11693a;--bad:#a3241f;
--recv:#2f5f8f;--give:#a14e00;--focus:#1f6fd1}
@media (prefers-color-scheme:dark){:root{--bg:#0e151c;--card:#19232e;--ink:#e7edf3;--muted:#a7b4c1;--line:#33414f;
--head:#0b1f35;--ok:#5ad68f;--bad:#ff8f87;--recv:#7da3cc;--give:#f6ad63;--focus:#7fb2ff}}
*{box-sizing:border-box}[hidden]{display:none!important}body{font:15px/1.45 system-ui,"DejaVu Sans",sans-serif;margin:0;background:var(--bg);color:var(--ink)}
header{display:flex;align-items:center;gap:1rem;padding:.6rem 1.5rem;background:var(--head);color:#fff}
header h1{font-size:1.2rem;margin:0;flex:1}header a{color:#fff;margin-left:.5rem}
main{max-width:78em;margin:0 auto;padding:1rem 1.5rem}
.card,section.op{background:var(--card);border-radius:.6rem;padding:.8rem 1rem;margin:.8rem 0;border:1px solid var(--line)}
h2{font-size:1.15rem;margin:.2rem 0 .5rem}h3{font-size:1rem;margin:1rem 0 .4rem;color:var(--muted)}
.wrap{overflow-x:auto}table{border-collapse:collapse;width:100%}td,th{padding:.3em .6em;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:.85rem;color:var(--muted);font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.online{color:var(--ok)}.offline,.never,.unknown{color:var(--bad)}
form{margin:.5em 0;display:flex;flex-wrap:wrap;gap:.6rem 1rem;align-items:end}label{display:inline-flex;flex-direction:column;font-size:.85rem;color:var(--muted)}
input,select,button{font:inherit;color:var(--ink);background:var(--card);border:1px solid #8193a5;border-radius:.3rem;padding:.3rem .5rem;min-height:2rem}
button{cursor:pointer;background:var(--head);color:#fff;border-color:var(--head)}
a{color:var(--recv)}:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.clock{color:var(--muted);font-size:.85rem}.facts{display:flex;flex-wrap:wrap;gap:.4rem 1.5rem;margin:.2rem 0 .6rem}
.chart{display:block;width:100%;max-width:52rem;height:auto}.chart text{font-size:12px;fill:var(--ink)}
.chart .recv{fill:var(--recv)}.chart .give{fill:var(--give)}.chart .axis{stroke:var(--line)}
.legend{font-size:.85rem;color:var(--muted)}.sw{display:inline-block;width:.8rem;height:.8rem;border-radius:.15rem;margin:0 .3rem 0 .8rem;vertical-align:-1px}
.sw.recv{background:var(--recv)}.sw.give{background:var(--give)}
#msg:empty,#a-msg:empty{display:none}
</style>
<header><h1 data-t=title>Quartier</h1>
<nav id=langs><a href="?lang=fr" lang=fr>FR</a><a href="?lang=nl" lang=nl>NL</a><a href="?lang=en" lang=en>EN</a></nav></header>
<main>
<form id=login hidden><label><span data-t=token></span> <input id=token type=password autocomplete=current-password></label>
<button data-t=open></button></form>
<form id=period hidden><label><span data-t=month></span> <input id=month type=month></label> <label><span data-t=day></span> <input id=day type=date></label></form>
<p id=msg role=status></p>
<p class=clock id=clock></p>
<section id=alerts class=card hidden><h2 data-t=alerts></h2>
<form id=raise><label><span data-t=operation></span> <select id=a-op></select></label>
<label><span data-t=kind></span> <select id=a-kind><option value=reduce data-t=reduce></option><option value=consume data-t=consume></option></select></label>
<label><span data-t=minutes></span> <input id=a-minutes type=number min=1 max=1440 value=60 required></label>
<label><span data-t=start></span> <input id=a-start type=datetime-local aria-describedby=a-now></label> <small id=a-now class=clock></small><br>
<label><span data-t=message></span> <input id=a-message maxlength=200 size=60></label>
<button id=a-raise data-t=raise></button> <button type=button id=a-end data-t=end></button></form>
<p id=a-msg role=status></p><div id=alert-list class=wrap></div></section>
<div id=ops></div>
</main>
<script>
// the token: from the link's fragment (never sent to a server or logged), else this browser's storage
const frag = new URLSearchParams(location.hash.slice(1));
if (frag.get('token')) { localStorage.setItem('qtoken', frag.get('token')); history.replaceState(null, '', location.pathname + location.search); }
let token = localStorage.getItem('qtoken');
const $ = id => document.getElementById(id);
const get = p => fetch(p, {headers: {Authorization: 'Bearer ' + token}}).then(r => {
  if (r.status === 401) { localStorage.removeItem('qtoken'); token = null; ask(); throw new Error('token refused'); }
  if (!r.ok) throw new Error(p + ': ' + r.status); return r.json(); });
const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
function ask() { $('login').hidden = false; $('period').hidden = true; }
$('login').onsubmit = e => { e.preventDefault(); token = $('token').value.trim(); localStorage.setItem('qtoken', token);
  $('login').hidden = true; loadAll().catch(err => $('msg').textContent = err.message); };
['month', 'day'].forEach(id => $(id).onchange = () => { $(id).dataset.set = '1'; load().catch(err => $('msg').textContent = err.message); });
async function load() {
  if (!token) return ask();
  const ops = await get('/api/v1/operations');
  // open on the newest data (a month that has some), unless the operator picked a period
  const newest = ops.map(o => o.last_quarter_hour).filter(Boolean).sort().pop() || new Date().toISOString();
  if (!$('day').dataset.set) $('day').value = newest.slice(0, 10);
  if (!$('month').dataset.set) $('month').value = $('day').value.slice(0, 7);
  $('period').hidden = false; $('msg').textContent = '';
  const month = $('month').value, day = $('day').value;
  let html = '';
  for (const op of ops) {
    const [mem, alloc, comp, ref, obs] = await Promise.all([get(`/api/v1/operations/${op.id}/members`),
      get(`/api/v1/operations/${op.id}/allocation?month=${month}`), get(`/api/v1/operations/${op.id}/completeness?day=${day}`),
      get(`/api/v1/operations/${op.id}/refused?limit=20`), get(`/api/v1/operations/${op.id}/observers?day=${day}`)]);
    const members = mem.filter(m => m.role !== 'observer');  // the cabin's meter is watched, not a member
    const online = members.filter(m => m.status === 'online').length;
    // live figures on one clock: the meters' (the time the operation's totals were measured), in the operation's zone
    const live = op.live ? `${tx('live')} ${esc(at(op.live.time, op.timezone))}: ${tx('pool')} ${num(op.live.pool_w)} W,
      ${tx('consumption')} ${num(op.live.consumption_w)} W, ${tx('signal')} <b>${esc(tx(op.live.signal))}</b>,
      ${op.live.members_reporting}/${op.live.members_total} ${tx('reporting')}` : tx('no_live');
    html += `<section class=op aria-labelledby="op-${esc(op.id)}"><h2 id="op-${esc(op.id)}">${esc(op.name || op.id)}</h2>
      <p class=facts><span>${tx('key')}: <b>${esc(op.key)}</b> (${esc(op.rounds.join(', '))})</span>
      <span class=online-count>${online}/${members.length} ${tx('online')}</span><span>${live}</span></p>` +
      chart(op, members, alloc, month) +
      `<div class=wrap><table><caption class=clock>${tx('times')} (${esc(op.timezone)})</caption><tr><th scope=col>${tx('member')}</th><th scope=col>${tx('role')}</th>
      <th scope=col>${tx('status')}</th><th scope=col>${tx('last_qh')}</th><th scope=col>${tx('qh_of')} ${esc(longDay(day))}</th>
      <th scope=col>${tx('received')} ${esc(longMonth(month))} (Wh)</th><th scope=col>${tx('injection_shared')} (Wh)</th><th scope=col>${tx('provisional')} (Wh)</th>
      <th scope=col>${tx('difference')} (Wh)</th><th scope=col>${tx('refused')}</th><th scope=col>${tx('statement')}</th></tr>` +
      members.map(m => { const a = alloc.members[m.id] || {}, c = comp.members[m.id];
        return `<tr data-member="${esc(m.id)}"><th scope=row>${esc(m.id)}</th><td>${esc(tx(m.role))}</td><td class="${esc(m.status.split(' ')[0])}">${esc(tx({online: 'online_s', offline: 'offline_s'}[m.status] || m.status))}</td>
        <td>${esc(at(m.last_quarter_hour, op.timezone))}</td><td class=n>${c ? c.received + '/' + comp.expected : ''}</td>
        <td class="n received">${a.received_wh ?? ''} ${a.received_wh == null ? '' : a.source === 'grid' ? '(' + tx('grid_operator') + ')' : '(' + tx('provisional').toLowerCase() + ')'}</td>
        <td class=n>${a.injection_shared_wh ?? ''}</td><td class=n>${a.provisional_received_wh ?? ''}</td><td class=n>${a.difference_wh ?? ''}</td>
        <td class="n refused">${m.refused || ''}</td>
        <td><a href="#" class=statement data-op="${esc(op.id)}" data-member="${esc(m.id)}">${esc(longMonth(month))}<span class=clock> · ${esc(m.id)}</span></a></td></tr>`; }).join('') +
      '</table></div>' + observerList(obs, day) + refusedList(ref) + '</section>';
  }
  $('clock').textContent = tx('clock_note');
  $('ops').innerHTML = html;
}
// observer meters (the cabin, a feeder): watched, never allocated; live power and the day's quarter-hours
function observerList(obs, day) {
  if (!obs.length) return '';
  return `<h3>${tx('observers')}</h3><div class=wrap><table class=observers><tr><th scope=col>${tx('meter')}</th><th scope=col>${tx('power')} (W)</th><th scope=col>${tx('qh_of')} ${esc(longDay(day))} (Wh)</th></tr>` +
    obs.map(o => `<tr data-observer="${esc(o.id)}"><td>${esc(o.id)}</td><td class="n power">${o.live ? Math.round(o.live.import_w - o.live.export_w) : '–'}</td>
      <td class=qhs>${o.quarter_hours.map(q => `<span title="${esc(q.start)}">${esc(q.start.slice(11, 16))} ${q.import_wh}</span>`).join(' · ')}</td></tr>`).join('') + '</table></div>';
}
// figures the server refused to store (implausible, out of time, malformed): who, why, how often
function refusedList(ref) {
  if (!ref.total) return '';
  return `<h3>${tx('refused_title')} (${ref.total})</h3><div class=wrap><table class=refused-counts><tr><th scope=col>${tx('member')}</th><th scope=col>${tx('reason')}</th><th scope=col>${tx('count')}</th><th scope=col>${tx('last')}</th></tr>` +
    ref.counts.map(r => `<tr><td>${esc(r.member ?? 'unknown ' + r.meter)}</td><td>${esc(r.reason)}</td><td class=n>${r.count}</td>
      <td>${esc(r.last_at)}</td></tr>`).join('') + '</table></div>' +
    (ref.recent.length ? `<details><summary>${tx('newest')}</summary><ul>` + ref.recent.map(d =>
      `<li>${esc(d.received_at)} ${esc(d.member ?? d.meter)} ${esc(d.kind)}: ${esc(d.detail)}</li>`).join('') + '</ul></details>' : '');
}
// a member's statement of the month (décompte / afrekening), fetched with the token and opened as a page
document.addEventListener('click', e => { const a = e.target.closest('a.statement'); if (!a) return; e.preventDefault();
  const w = window.open('', '_blank');
  fetch(`/api/v1/operations/${a.dataset.op}/statement?format=html&period=${$('month').value}&member=${a.dataset.member}`,
    {headers: {Authorization: 'Bearer ' + token}}).then(r => r.text()).then(t => {
      const url = URL.createObjectURL(new Blob([t], {type: 'text/html'})); if (w) w.location = url; else location = url; }); });
// collective alerts: raise (now or scheduled), end, and the list with each alert's measured effect
const LANG = document.documentElement.lang;  // chosen by the server: ?lang, else the browser's languages
const TX = {
  fr: {alerts: 'Alertes collectives', operation: 'Opération', kind: 'Type', reduce: 'Réduire maintenant',
    consume: 'Consommer maintenant', minutes: 'Durée (min)', start: 'Début (vide : maintenant)', message: 'Message',
    raise: "Lancer l'alerte", end: "Terminer l'alerte en cours", raised: 'Alerte envoyée à tous les foyers.',
    ended: 'Alerte terminée.', none: 'Aucune alerte.', status: 'statut', window: 'période', members: 'membres (kWh, réf., %)',
    observer: 'compteur observé (kWh, réf., %)', scheduled: 'programmée', active: 'en cours', expired: 'passée',
    'ended_s': 'terminée', observers: 'Compteurs observés', power: 'puissance', cancel: 'annuler',
    meters_now: 'Heure des compteurs :',
    title: 'Quartier — communauté', token: "Jeton d'opérateur", open: 'Ouvrir', month: 'Mois', day: 'Jour', live: 'en direct à',
    pool: 'injection', consumption: 'consommation', signal: 'signal', reporting: 'membres rapportent', no_live: 'pas de données en direct',
    key: 'clé de répartition', online: 'membres en ligne', member: 'membre', role: 'rôle', last_qh: 'dernier quart d’heure',
    qh_of: 'quarts d’heure du', received: 'reçu en', injection_shared: 'injection partagée', provisional: 'Provisoire',
    difference: 'écart', refused: 'chiffres refusés', statement: 'décompte', grid_operator: 'gestionnaire de réseau',
    meter: 'compteur', reason: 'raison', count: 'nombre', last: 'dernier', newest: 'les plus récents', refused_title: 'Chiffres refusés',
    consumer: 'consommateur', producer: 'producteur', both: 'les deux', online_s: 'en ligne', offline_s: 'hors ligne', 'never seen': 'jamais vu', unknown: 'inconnu',
    green: 'vert', amber: 'orange', red: 'rouge', chart: 'Énergie partagée en {m} par membre (Wh)', chart_recv: 'reçu', chart_give: 'injection partagée',
    times: 'Heures des compteurs', clock_note: 'Toutes les heures sont celles des compteurs (leurs mesures), dans le fuseau de l’opération ; les chiffres en direct datent de la dernière mesure reçue.'},
  nl: {alerts: 'Collectieve oproepen', operation: 'Deelinitiatief', kind: 'Soort', reduce: 'Nu minder verbruiken',
    consume: 'Nu verbruiken', minutes: 'Duur (min)', start: 'Begin (leeg: nu)', message: 'Bericht',
    raise: 'Oproep versturen', end: 'Lopende oproep beëindigen', raised: 'Oproep naar alle woningen verstuurd.',
    ended: 'Oproep beëindigd.', none: 'Geen oproepen.', status: 'status', window: 'periode', members: 'leden (kWh, ref., %)',
    observer: 'observatiemeter (kWh, ref., %)', scheduled: 'gepland', active: 'lopend', expired: 'voorbij',
    'ended_s': 'beëindigd', observers: 'Observatiemeters', power: 'vermogen', cancel: 'annuleren',
    meters_now: 'Tijd van de meters:',
    title: 'Quartier — gemeenschap', token: 'Operatortoken', open: 'Openen', month: 'Maand', day: 'Dag', live: 'live om',
    pool: 'injectie', consumption: 'verbruik', signal: 'signaal', reporting: 'leden melden', no_live: 'geen live gegevens',
    key: 'verdeelsleutel', online: 'leden online', member: 'lid', role: 'rol', last_qh: 'laatste kwartier',
    qh_of: 'kwartieren van', received: 'ontvangen in', injection_shared: 'gedeelde injectie', provisional: 'Voorlopig',
    difference: 'verschil', refused: 'geweigerde cijfers', statement: 'afrekening', grid_operator: 'netbeheerder',
    meter: 'meter', reason: 'reden', count: 'aantal', last: 'laatste', newest: 'nieuwste', refused_title: 'Geweigerde cijfers',
    consumer: 'verbruiker', producer: 'producent', both: 'beide', online_s: 'online', offline_s: 'offline', 'never seen': 'nooit gezien', unknown: 'onbekend',
    green: 'groen', amber: 'oranje', red: 'rood', chart: 'Gedeelde energie in {m} per lid (Wh)', chart_recv: 'ontvangen', chart_give: 'gedeelde injectie',
    times: 'Tijden van de meters', clock_note: 'Alle tijden zijn die van de meters (hun metingen), in de tijdzone van het deelinitiatief; live cijfers dateren van de laatst ontvangen meting.'},
  en: {alerts: 'Collective alerts', operation: 'Operation', kind: 'Kind', reduce: 'Reduce now', consume: 'Consume now',
    minutes: 'Duration (min)', start: 'Start (empty: now)', message: 'Message', raise: 'Raise the alert',
    end: 'End the active alert', raised: 'Alert sent to every home.', ended: 'Alert ended.', none: 'No alerts.',
    status: 'status', window: 'window', members: 'members (kWh, baseline, %)', observer: 'observer meter (kWh, baseline, %)',
    scheduled: 'scheduled', active: 'active', expired: 'past', 'ended_s': 'ended', observers: 'Observer meters', meters_now: "Meters' clock:",
    power: 'power', cancel: 'cancel',
    title: 'Quartier — community', token: 'Operator token', open: 'Open', month: 'Month', day: 'Day', live: 'live at',
    pool: 'injection', consumption: 'consumption', signal: 'signal', reporting: 'members reporting', no_live: 'no live data',
    key: 'key in use', online: 'members online', member: 'member', role: 'role', last_qh: 'last quarter-hour',
    qh_of: 'quarter-hours of', received: 'received in', injection_shared: 'shared injection', provisional: 'Provisional',
    difference: 'difference', refused: 'refused figures', statement: 'statement', grid_operator: 'grid operator',
    meter: 'meter', reason: 'reason', count: 'count', last: 'last', newest: 'newest', refused_title: 'Refused figures',
    consumer: 'consumer', producer: 'producer', both: 'both', online_s: 'online', offline_s: 'offline', 'never seen': 'never seen',
    green: 'green', amber: 'amber', red: 'red', chart: 'Shared energy in {m} per member (Wh)', chart_recv: 'received', chart_give: 'shared injection',
    times: "Meters' times", clock_note: "All times are the meters' (when they measured), in the operation's time zone; live figures are as of the last measurement received."}};
const tx = k => (TX[LANG] || TX.en)[k] ?? TX.en[k] ?? k;
document.querySelectorAll('[data-t]').forEach(e => e.textContent = tx(e.dataset.t));
$('langs').setAttribute('aria-label', {fr: 'Langue', nl: 'Taal', en: 'Language'}[LANG] || 'Language');
const LOC = {fr: 'fr-BE', nl: 'nl-BE', en: 'en-GB'}[LANG] || 'en-GB';
const num = x => x == null ? '–' : Math.round(x).toLocaleString(LOC);
// a meter time (ISO with its offset) on the operation's clock, in the page's language
const at = (iso, tz) => iso ? new Date(iso).toLocaleString(LOC, {dateStyle: 'short', timeStyle: 'medium', timeZone: tz}) : '';
const longDay = d => d ? new Date(d + 'T12:00:00Z').toLocaleDateString(LOC, {day: 'numeric', month: 'long', year: 'numeric', timeZone: 'UTC'}) : '';
const longMonth = m => m ? new Date(m + '-15T12:00:00Z').toLocaleDateString(LOC, {month: 'long', year: 'numeric', timeZone: 'UTC'}) : '';
// the month's shared energy per member: received (a consumer's share) and shared injection (a producer's)
function chart(op, mem, alloc, month) {
  const rows = mem.map(m => [m.id, (alloc.members[m.id] || {}).received_wh || 0, (alloc.members[m.id] || {}).injection_shared_wh || 0]);
  const max = Math.max(1, ...rows.map(r => Math.max(r[1], r[2]))), W = 640, left = 110, bh = 12, rowH = 34;
  const title = tx('chart').replace('{m}', longMonth(month));
  const desc = rows.map(r => `${r[0]}: ${tx('chart_recv')} ${num(r[1])}, ${tx('chart_give')} ${num(r[2])}`).join('; ');
  const bars = rows.map((r, i) => { const y = 6 + i * rowH, w1 = (W - left - 70) * r[1] / max, w2 = (W - left - 70) * r[2] / max;
    return `<text x="${left - 8}" y="${y + 16}" text-anchor="end">${esc(r[0])}</text>
      <rect class=recv x="${left}" y="${y}" width="${w1.toFixed(1)}" height="${bh}"/><text x="${left + w1 + 4}" y="${y + 10}">${num(r[1])}</text>
      <rect class=give x="${left}" y="${y + bh + 2}" width="${w2.toFixed(1)}" height="${bh}"/><text x="${left + w2 + 4}" y="${y + bh + 12}">${num(r[2])}</text>`; }).join('');
  return `<h3>${esc(title)}</h3><svg class=chart role=img aria-label="${esc(title + ': ' + desc)}" viewBox="0 0 ${W} ${rows.length * rowH + 8}">
    <line class=axis x1="${left}" x2="${left}" y1="0" y2="${rows.length * rowH + 8}"/>${bars}</svg>
    <p class=legend><i class="sw recv"></i>${tx('chart_recv')}<i class="sw give"></i>${tx('chart_give')}</p>`;
}
const send = (method, p, body) => fetch(p, {method, headers: {Authorization: 'Bearer ' + token, 'Content-Type': 'application/json'},
  body: body ? JSON.stringify(body) : undefined}).then(async r => { const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(typeof j.detail === 'string' ? j.detail : r.status + ''); return j; });
$('raise').onsubmit = e => { e.preventDefault();
  const body = {minutes: parseInt($('a-minutes').value), message: $('a-message').value, kind: $('a-kind').value};
  if ($('a-start').value) body.start_local = $('a-start').value;  // the meters' clock, the operation's zone
  send('PUT', `/api/v1/operations/${$('a-op').value}/alert`, body).then(() => { $('a-msg').textContent = tx('raised'); loadAlerts(); })
    .catch(err => $('a-msg').textContent = err.message); };
$('a-end').onclick = () => send('DELETE', `/api/v1/operations/${$('a-op').value}/alert`)
  .then(() => { $('a-msg').textContent = tx('ended'); loadAlerts(); }).catch(err => $('a-msg').textContent = err.message);
let alertZone;  // the operation's time zone: alert times are shown as its meters' clocks read them
const when = s => s ? new Date(s).toLocaleString(LANG, {dateStyle: 'short', timeStyle: 'short', timeZone: alertZone}) : '';
const fig = (k, b, p) => k == null ? '–' : `${k} / ${b ?? '–'} / ${p == null ? '–' : (p > 0 ? '+' : '') + p + ' %'}`;
async function loadAlerts() {
  const op = $('a-op').value; if (!op) return;
  const res = await get(`/api/v1/operations/${op}/alerts`);
  alertZone = res.timezone;
  $('a-now').textContent = tx('meters_now') + ' ' + when(res.now);
  if (!$('a-start').value) $('a-start').min = res.now.slice(0, 16);
  $('alert-list').innerHTML = !res.alerts.length ? `<p>${tx('none')}</p>` :
    `<table class=alerts><tr><th>${tx('status')}</th><th>${tx('kind')}</th><th>${tx('window')}</th><th>${tx('message')}</th>
     <th>${tx('members')}</th><th>${tx('observer')}</th><th></th></tr>` + res.alerts.map(a => { const f = a.effect || {};
     return `<tr data-alert="${esc(a.id)}" class="${esc(a.status)}"><td class=status>${esc(tx(a.status === 'ended' ? 'ended_s' : a.status))}</td>
     <td>${esc(tx(a.kind))}</td><td>${esc(when(a.start))} – ${esc(when(a.ended_at || a.until))}</td><td>${esc(a.message)}</td>
     <td class="n effect-members">${fig(f.members_kwh, f.members_baseline_kwh, f.members_change_pct)}</td>
     <td class="n effect-observer">${fig(f.observer_kwh, f.observer_baseline_kwh, f.observer_change_pct)}</td>
     <td>${a.status === 'scheduled' ? `<button onclick="send('DELETE', '/api/v1/operations/${esc(op)}/alert?id=${esc(a.id)}').then(loadAlerts)">${tx('cancel')}</button>` : ''}</td></tr>`;
     }).join('') + '</table>' + `<p class=baseline><small>${esc(res.baseline)}</small></p>`;
}
$('a-op').onchange = () => loadAlerts().catch(err => $('a-msg').textContent = err.message);
async function loadAll() {
  await load();
  if (!token) return;
  const ops = await get('/api/v1/operations');
  if (!$('a-op').options.length) $('a-op').innerHTML = ops.map(o => `<option value="${esc(o.id)}">${esc(o.name || o.id)}</option>`).join('');
  $('alerts').hidden = false;
  await loadAlerts();
}
loadAll().catch(e => $('msg').textContent = e.message); setInterval(() => { if (token) loadAll().catch(() => {}); }, 10000);
</script></html>"""

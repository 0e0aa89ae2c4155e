"""The node's page as the server sends it: in the member's language, with its labels filled in and a
``<noscript>`` view of the signal and today's figures.

Why on the server: a screen reader and a search for words read ``<html lang>`` before any script
runs, and a phone with JavaScript off (or a very old one) still deserves the light and today's
energy. The texts are the page's own (``static/i18n.js`` and ``static/i18n-page.js``), read once at
start: one set of words for the script and the server.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from datetime import datetime
from importlib.abc import Traversable
from zoneinfo import ZoneInfo

from services.languages import LANGS, browser_language

LOCALE_DECIMAL = {"fr": ",", "nl": ",", "en": "."}

_JS_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|([A-Za-z_$][\w$]*)\s*:')


def _js_object(text: str) -> dict:
    """The object literal of ``window.X = {...};``: quote the bare keys (strings are skipped whole, so
    a colon inside a sentence is never taken for a key) and read it as JSON."""
    start = text.index("= {") + 2
    body = text[start: text.index("\n};", start) + 2]

    def repl(m: re.Match) -> str:
        if m.group(1) is not None:
            return json.dumps(m.group(1)) + ":"
        tok = m.group(0)
        if tok.startswith("'"):
            return json.dumps(tok[1:-1].replace("\\'", "'"))
        return tok

    return json.loads(_JS_TOKEN.sub(repl, body))


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, Mapping) else v
    return out


def load_texts(static: Traversable) -> dict[str, dict]:
    """Every label per language: ``i18n.js`` with ``i18n-page.js``'s keys added (as the page does)."""
    base = _js_object((static / "i18n.js").read_text(encoding="utf-8"))
    extra = _js_object((static / "i18n-page.js").read_text(encoding="utf-8"))
    return {lang: _merge(base.get(lang, {}), extra.get(lang, {})) for lang in LANGS}


def pick_language(query: str | None, cookie: str | None, configured: str, accept_language: str | None) -> str:
    """``?lang=``, then the member's last choice (a cookie the page sets), then ``web.language``,
    then the browser's ``Accept-Language`` (by its q order), then English."""
    for cand in (query, cookie, None if configured == "auto" else configured):
        if cand in LANGS:
            return cand
    return browser_language(accept_language) or "en"


class Words:
    """Looks up a dotted key in one language's texts and fills ``{placeholders}``, as app.js's t()."""

    def __init__(self, texts: Mapping[str, dict], lang: str) -> None:
        self.lang = lang
        self.texts = texts[lang]

    def __call__(self, key: str, **vars: str) -> str:
        node: object = self.texts
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        s = node if isinstance(node, str) else key
        for k, v in vars.items():
            s = s.replace("{" + k + "}", v)
        return s

    def number(self, x: float, digits: int = 0, *, fixed: bool = False) -> str:
        """``x`` in the page's language; ``fixed``: exactly ``digits`` decimals (a meter register)."""
        s = f"{x:,.{digits}f}"
        if "." in s and not fixed:  # at most ``digits`` decimals, as Intl's maximumFractionDigits
            s = s.rstrip("0").rstrip(".")
        if self.lang == "en":
            return s
        # fr-BE and nl-BE: a (narrow) space or a dot for thousands, a comma for decimals
        sep = "\u202f" if self.lang == "fr" else "."
        return s.replace(",", "\x00").replace(".", ",").replace("\x00", sep)

    def watts(self, w: float | None) -> str:
        if w is None:
            return "–"
        return f"{self.number(w / 1000, 2)} kW" if abs(w) >= 1000 else f"{self.number(round(w))} W"

    def kwh(self, wh: float | None) -> str:
        return "–" if wh is None else f"{self.number(wh / 1000, 2 if wh < 10000 else 1)} kWh"


def _when(iso_time: str | None, tz: str) -> str:
    if not iso_time:
        return ""
    t = datetime.fromisoformat(iso_time.replace("Z", "+00:00")).astimezone(ZoneInfo(tz))
    return t.strftime("%d/%m/%Y %H:%M")


def noscript_view(live: dict, w: Words) -> str:
    """The signal and today's figures as plain HTML (escaped), for a browser without JavaScript."""
    e = html.escape
    s = live.get("signal") or {}
    state = s.get("state", "none")
    rows: list[tuple[str, str]] = []
    p = live.get("power")
    if p:
        rows += [(w("import"), w.watts(p["import_w"])), (w("export"), w.watts(p["export_w"]))]
    today = live.get("today")
    if today:
        rows += [(f'{w("today")} · {w("import")}', w.kwh(today["import_wh"])),
                 (f'{w("today")} · {w("export")}', w.kwh(today["export_wh"]))]
    q = live.get("quarter_hour") or {}
    if q.get("projected_demand_w") is not None:
        rows.append((w("meter_card.projected"), w.watts(q["projected_demand_w"])))
    if live.get("month_peak_w") is not None:
        rows.append((w("month_peak"), w.watts(live["month_peak_w"])))
    for m in live.get("submeters") or []:  # gas and water registers, with their channel's reading time
        unit = "m³" if m["unit"] == "m3" else m["unit"]
        when = f' ({w("meter_card.read_at", t=_when(m["time"], live.get("timezone") or "UTC"))})' if m.get("time") else ""
        rows.append((w(f'meter_card.{m["kind"]}_register'), f'{w.number(m["value"], 3, fixed=True)} {unit}{when}'))
    headroom = s.get("headroom_w") or 0
    lines = [
        f'<section class="card noscript" aria-labelledby="ns-title"><h2 id="ns-title">{e(w("noscript.title"))}</h2>',
        f'<p class="ns-signal ns-{e(state)}"><span class="ns-light" aria-hidden="true"></span>'
        f'<b>{e(w("light." + state))}</b> — {e(w("signal." + str(s.get("reason", "no_data"))))}</p>',
    ]
    if headroom > 0 and state != "red":
        lines.append(f'<p class="sub">{e(w("headroom", w=w.watts(headroom)))}</p>')
    if rows:
        lines.append("<dl>" + "".join(f"<div><dt>{e(k)}</dt><dd>{e(v)}</dd></div>" for k, v in rows) + "</dl>")
    if live.get("time"):
        lines.append(f'<p class="sub">{e(w("updated", t=_when(live["time"], live.get("timezone") or "UTC")))}</p>')
    lines.append(f'<p class="note">{e(w("noscript.note"))}</p></section>')
    return "\n".join(lines)


_LABELLED = re.compile(r'(<(\w+)\b[^>]*\bdata-i18n="([\w.]+)"[^>]*>)(</\2>)')
_ARIA = re.compile(r'data-i18n-label="([\w.]+)"')


def render(template: str, texts: Mapping[str, dict], lang: str, live: dict) -> str:
    """The page in ``lang``: ``<html lang>``, every ``data-i18n`` element's text and
    ``data-i18n-label`` element's ``aria-label`` filled in, and the ``<noscript>`` view."""
    w = Words(texts, lang)
    out = template.replace("__LANG__", lang)
    out = _LABELLED.sub(lambda m: m.group(1) + html.escape(w(m.group(3))) + m.group(4), out)
    out = _ARIA.sub(lambda m: f'{m.group(0)} aria-label="{html.escape(w(m.group(1)), quote=True)}"', out)
    return out.replace("<!--NOSCRIPT-->", f"<noscript>{noscript_view(live, w)}</noscript>")

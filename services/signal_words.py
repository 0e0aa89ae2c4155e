"""The consume-now signal in words, in French, Dutch and English: one wording for the page, the MQTT
feed's text sensor and the monthly sheet's legend.

Why one place: a household that reads "surplus" next to the light, "−192 W" under it and something
else in Home Assistant stops trusting the light. Every sentence speaks about the same thing as the
signal itself: the running quarter-hour's balance (bilan du quart d'heure, kwartiersaldo) and the
power that can still be added until it ends, never the meter's power of this second. A held state
(maintenu, vastgehouden) says it is held and until when.

Pure: no I/O; times are shown in the time zone given.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from services.languages import LANGS
from services.signal import Reason, Signal, State


# the headline next to the light, per reason (the page's ``signal.*`` texts, same words)
HEADLINE: dict[str, dict[Reason, str]] = {
    "fr": {
        Reason.SURPLUS: "Surplus maintenant : faites tourner vos appareils.",
        Reason.SMALL_SURPLUS: "Petit surplus : seulement de petits appareils.",
        Reason.NO_SURPLUS: "Pas de surplus : attendez si vous pouvez.",
        Reason.STALE_DATA: "Pas de données récentes : surplus incertain.",
        Reason.NO_DATA: "En attente du compteur…",
        Reason.REDUCE_NOW: "Réduisez votre consommation maintenant, svp.",
        Reason.COLLECTIVE_CONSUME: "La communauté vous invite à consommer maintenant.",
    },
    "nl": {
        Reason.SURPLUS: "Nu overschot: zet uw toestellen aan.",
        Reason.SMALL_SURPLUS: "Klein overschot: enkel kleine toestellen.",
        Reason.NO_SURPLUS: "Geen overschot: wacht als het kan.",
        Reason.STALE_DATA: "Geen recente gegevens: overschot onzeker.",
        Reason.NO_DATA: "Wachten op de meter…",
        Reason.REDUCE_NOW: "Verminder nu uw verbruik, a.u.b.",
        Reason.COLLECTIVE_CONSUME: "De gemeenschap vraagt u nu te verbruiken.",
    },
    "en": {
        Reason.SURPLUS: "Surplus now: run your appliances.",
        Reason.SMALL_SURPLUS: "Small surplus: small appliances only.",
        Reason.NO_SURPLUS: "No surplus: wait if you can.",
        Reason.STALE_DATA: "No recent data: surplus uncertain.",
        Reason.NO_DATA: "Waiting for the meter…",
        Reason.REDUCE_NOW: "Please reduce your consumption now.",
        Reason.COLLECTIVE_CONSUME: "The community invites you to consume now.",
    },
}

COLOUR = {
    "fr": {State.GREEN: "vert", State.AMBER: "orange", State.RED: "rouge"},
    "nl": {State.GREEN: "groen", State.AMBER: "oranje", State.RED: "rood"},
    "en": {State.GREEN: "green", State.AMBER: "amber", State.RED: "red"},
}

_HELD = {
    "fr": "Reste {c} jusqu'à {t} : maintenu pour que la lampe ne clignote pas.",
    "nl": "Blijft {c} tot {t}: even vastgehouden zodat het lampje niet knippert.",
    "en": "Stays {c} until {t}: held so the light does not flicker.",
}

_BALANCE = {
    "fr": {
        "surplus": "Ce quart d'heure va vers un surplus de {b} : environ {h} de plus peuvent tourner jusqu'à {end}.",
        "import": "Ce quart d'heure va vers un prélèvement de {b} : ce que vous allumez maintenant vient du réseau.",
    },
    "nl": {
        "surplus": "Dit kwartier gaat naar een overschot van {b}: ongeveer {h} extra kan draaien tot {end}.",
        "import": "Dit kwartier gaat naar een afname van {b}: wat u nu aanzet, komt van het net.",
    },
    "en": {
        "surplus": "This quarter-hour is heading for a surplus of {b}: about {h} more can run until {end}.",
        "import": "This quarter-hour is heading for an import of {b}: what you switch on now comes from the grid.",
    },
}

_OTHER = {
    "fr": {
        Reason.STALE_DATA: "Les dernières données du compteur sont trop anciennes pour savoir s'il y a un surplus.",
        Reason.NO_DATA: "Pas encore de données du compteur.",
        Reason.REDUCE_NOW: "La communauté demande à tous de consommer moins jusqu'à {until}.",
        Reason.COLLECTIVE_CONSUME: "La communauté demande à tous de consommer maintenant, jusqu'à {until}.",
    },
    "nl": {
        Reason.STALE_DATA: "De laatste metergegevens zijn te oud om te weten of er een overschot is.",
        Reason.NO_DATA: "Nog geen metergegevens.",
        Reason.REDUCE_NOW: "De gemeenschap vraagt iedereen minder te verbruiken tot {until}.",
        Reason.COLLECTIVE_CONSUME: "De gemeenschap vraagt iedereen nu te verbruiken, tot {until}.",
    },
    "en": {
        Reason.STALE_DATA: "The latest meter data is too old to know whether there is a surplus.",
        Reason.NO_DATA: "No meter data yet.",
        Reason.REDUCE_NOW: "The community asks everyone to use less until {until}.",
        Reason.COLLECTIVE_CONSUME: "The community asks everyone to consume now, until {until}.",
    },
}

_ALERT_MESSAGE = {"fr": "Message : {m}", "nl": "Bericht: {m}", "en": "Message: {m}"}


def _lang(lang: str) -> str:
    return lang if lang in LANGS else "en"


def watts(w: float, lang: str) -> str:
    """Like the page's ``watts()``: whole watts below 1 kW, else kW with up to two decimals (rounded
    half to even, as the browser's Intl does), in the language's decimal separator."""
    x = abs(math.floor(w + 0.5))  # Math.round, then the magnitude (story.js's signed())
    if x < 1000:
        return f"{x} W"
    kw = (Decimal(x) / 1000).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    text = f"{kw:f}".rstrip("0").rstrip(".")
    return (text.replace(".", ",") if _lang(lang) in ("fr", "nl") else text) + " kW"


def clock(t: datetime, tz: ZoneInfo) -> str:
    return t.astimezone(tz).strftime("%H:%M")


def headline(sig: Signal, lang: str, tz: ZoneInfo) -> str:
    """The sentence next to the light: what to do, or that the light is held and until when."""
    lang = _lang(lang)
    if sig.held and sig.held_until is not None:
        return _HELD[lang].format(c=COLOUR[lang][sig.state], t=clock(sig.held_until, tz))
    return HEADLINE[lang][sig.reason]


def reason(sig: Signal, lang: str, tz: ZoneInfo) -> str:
    """Why: the quarter-hour's balance and the power that can still be added until it ends."""
    lang = _lang(lang)
    if sig.reason in (Reason.REDUCE_NOW, Reason.COLLECTIVE_CONSUME):
        text = _OTHER[lang][sig.reason].format(until=clock(sig.valid_until, tz))
        if sig.alert is not None and sig.alert.message:
            text += " " + _ALERT_MESSAGE[lang].format(m=sig.alert.message)
        return text
    if sig.reason in (Reason.STALE_DATA, Reason.NO_DATA) or sig.balance_w is None:
        return _OTHER[lang][sig.reason if sig.reason in (Reason.STALE_DATA, Reason.NO_DATA) else Reason.NO_DATA]
    b = sig.balance_w
    if b > 0:
        end = clock(sig.quarter_end, tz) if sig.quarter_end is not None else "?"
        return _BALANCE[lang]["surplus"].format(b=watts(b, lang), h=watts(sig.headroom_w, lang), end=end)
    return _BALANCE[lang]["import"].format(b=watts(b, lang))


def words(sig: Signal, tz: ZoneInfo) -> dict[str, dict[str, str]]:
    """``{lang: {"headline", "reason"}}`` for the three languages (the page picks the member's)."""
    return {lang: {"headline": headline(sig, lang, tz), "reason": reason(sig, lang, tz)} for lang in LANGS}


def text(sig: Signal, lang: str, tz: ZoneInfo) -> str:
    """Headline and reason in one line (the MQTT text sensor; under 255 characters)."""
    return f"{headline(sig, lang, tz)} {reason(sig, lang, tz)}"[:255]


def legend(lang: str) -> dict[State | str, str]:
    """The sheet's legend of the light, in the page's words: one line per colour, plus the blinking
    modes of the lamp (collective alert: red blinking; no data: amber blinking slowly)."""
    lang = _lang(lang)
    c, h = COLOUR[lang], HEADLINE[lang]
    blink = {"fr": "clignotant", "nl": "knipperend", "en": "blinking"}[lang]
    return {
        State.GREEN: f"{c[State.GREEN]} — {h[Reason.SURPLUS]}",
        State.AMBER: f"{c[State.AMBER]} — {h[Reason.SMALL_SURPLUS]}",
        State.RED: f"{c[State.RED]} — {h[Reason.NO_SURPLUS]}",
        "blink": f"{c[State.RED]} {blink} — {h[Reason.REDUCE_NOW]}",
        "unsure": f"{c[State.AMBER]} {blink} — {h[Reason.STALE_DATA]}",
    }

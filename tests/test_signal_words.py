"""The signal in words (services/signal_words.py): one wording for the page, the MQTT feed's text
sensor and the sheet's legend, in fr/nl/en; a held state says so and until when."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from services.node.mqtt_feed import Topics, discovery_config, signal_messages
from services.sheet.figures import SheetFigures
from services.sheet.render import render_html
from services.signal import Reason, SignalSettings, SignalTracker, State
from services.signal_words import HEADLINE, LANGS, headline, legend, reason, text, watts, words
from tests.signal_scenarios import inputs_for

TZ = ZoneInfo("Europe/Brussels")
I18N = Path(__file__).resolve().parents[1] / "services/node/web/static/i18n.js"


def _run(steps, hold_s=120.0):
    tracker = SignalTracker(SignalSettings(hold_s=hold_s))
    return [tracker.update(i) for i in inputs_for(steps)]


def test_headlines_are_the_page_texts_in_every_language():
    js = I18N.read_text(encoding="utf-8")
    for lang in LANGS:
        block = re.search(rf"\n  {lang}: {{.*?signal: {{(.*?)}}", js, re.S).group(1)
        page = dict(re.findall(r'(\w+): "([^"]*)"', block))
        assert page == {r.value: s for r, s in HEADLINE[lang].items()}, lang


def test_a_held_state_says_held_and_until_when_and_the_balance_it_is_held_against():
    # red at 10:00 (import), a surplus 60 s later: held red until 10:02 UTC = 12:02 in Brussels
    sig = _run([(1, -2000), (60, 900)])[-1]
    assert sig.state is State.RED and sig.held and sig.pending is not None
    assert sig.held_until == sig.since + timedelta(seconds=120)
    assert headline(sig, "en", TZ) == "Stays red until 12:02: held so the light does not flicker."
    assert headline(sig, "fr", TZ).startswith("Reste rouge jusqu'à 12:02 : maintenu")
    assert headline(sig, "nl", TZ).startswith("Blijft rood tot 12:02: even vastgehouden")
    assert reason(sig, "en", TZ) == (f"This quarter-hour is heading for a surplus of {watts(sig.balance_w, 'en')}: "
                                     f"about {watts(sig.headroom_w, 'en')} more can run until 12:15.")


def test_the_reason_speaks_about_the_quarter_hour_not_this_second():
    # 10 min of 3 kW export, then a 192 W import: green, and the words say the quarter-hour's surplus
    sig = _run([(600, 3000), (60, -192)])[-1]
    assert sig.state is State.GREEN and not sig.held and sig.balance_w > 1000
    assert headline(sig, "en", TZ) == HEADLINE["en"][Reason.SURPLUS]
    assert f"surplus of {watts(sig.balance_w, 'en')}" in reason(sig, "en", TZ)
    assert watts(sig.balance_w, "fr") in reason(sig, "fr", TZ)
    importing = _run([(60, -1500)])[-1]
    assert reason(importing, "nl", TZ).startswith("Dit kwartier gaat naar een afname van 1,5 kW")


def test_watts_follow_the_page_formatting():
    assert [watts(w, "fr") for w in (0, 192, -192.5, 999.6, 1935, 12500)] == \
        ["0 W", "192 W", "192 W", "1 kW", "1,94 kW", "12,5 kW"]
    assert watts(1070, "en") == "1.07 kW" and watts(1070, "nl") == "1,07 kW"


def test_the_mqtt_text_sensor_carries_the_same_words():
    sig = _run([(1, -2000), (60, 900)])[-1]
    view = {**sig.as_dict(), "words": words(sig, TZ), "text": text(sig, "fr", TZ)}
    t = Topics("quartier", "kitchen")
    msgs = {topic: payload for topic, payload, _ in signal_messages(t, view)}
    assert msgs[t.reason_text] == f"{headline(sig, 'fr', TZ)} {reason(sig, 'fr', TZ)}"
    assert len(msgs[t.reason_text]) <= 255
    assert json.loads(msgs[t.signal])["held_until"] is not None
    assert discovery_config(t)["cmps"]["reason_text"]["state_topic"] == t.reason_text


def test_the_sheet_legend_uses_the_page_words():
    f = SheetFigures(meter_id="1SIM", month="2026-06", import_wh=0, export_wh=0, quarter_hours=0,
                     expected_quarter_hours=2880, estimated=0, days_with_data=0, days_in_month=30, shared_wh=None,
                     shared_quarter_hours=0, grid_price=None, community_price=None, hourly_surplus_wh=(0.0,) * 24,
                     surplus_basis=None, best_hours=())
    for lang in LANGS:
        page = render_html(f, lang)
        for line in legend(lang).values():
            assert line.replace("'", "&#x27;") in page, (lang, line)

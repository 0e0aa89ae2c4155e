"""The three contradictory moments of issue 18 in headless Chromium: in each, the page's words and its
gauge speak about the same thing (the quarter-hour's balance and what can still be added until it
ends), the meter's power of this second is labelled as such, and a held state says it is held and
until when. Screenshots in fr/nl/en: artifacts/signal-story-<moment>-<lang>.png."""

from __future__ import annotations

from pathlib import Path

from services.signal import SignalSettings
from tests.browser import Browser
from tests.web_harness import WebRig

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
HELD_WORD = {"fr": "maintenu", "nl": "vastgehouden", "en": "held"}
HEADLINES = {  # the headlines that promise a surplus (must never sit next to a negative gauge)
    "fr": "Surplus maintenant", "nl": "Nu overschot", "en": "Surplus now"}


def _page(browser: Browser) -> dict:
    return browser.js("""(function(){const g=(id)=>document.getElementById(id).textContent;
      return {light: document.getElementById('light').className.split(' ').pop(), headline: g('sentence'),
              reason: g('reason'), gauge: g('surplus-w'), can_add: g('can-add'), meter_now: g('meter-now'),
              until: g('until'), needle: document.getElementById('needle').style.transform};})()""")


def _check_moment(rig: WebRig, browser: Browser, name: str, *, state: str, held: bool, meter_now: dict[str, str]) -> dict:
    sig = rig.get("/api/v1/signal")
    assert sig["state"] == state and sig["held"] is held, sig
    for lang in ("fr", "nl", "en"):
        browser.js(f"document.querySelector('[data-lang={lang}]').click()")
        browser.wait_js(f"document.getElementById('reason').textContent === {sig['words'][lang]['reason']!r}",
                        what=f"{name} {lang}: the reason sentence")
        p = _page(browser)
        assert p["light"] == state, (lang, p)
        assert p["headline"] == sig["words"][lang]["headline"]
        # the gauge shows the signal's balance, and the reason sentence says the same figure
        balance = sig["balance_w"]
        gauge = p["gauge"]
        assert gauge.startswith("+" if balance > 0 else "\u2212"), (lang, gauge, balance)
        assert gauge.lstrip("+\u2212") in p["reason"], (lang, p)
        rotation = float(p["needle"].removeprefix("rotate(").removesuffix("deg)"))
        assert (rotation > 0) == (balance > 0)
        # never "surplus now" next to a gauge heading for import, nor a bare "no surplus" next to a surplus
        assert not (balance <= 0 and p["headline"].startswith(HEADLINES[lang]))
        if held:
            assert HELD_WORD[lang] in p["headline"]
            assert rig.service.state.signal.held_until is not None
        else:
            assert HELD_WORD[lang] not in p["headline"]
        if balance > 0:
            assert p["can_add"] and p["can_add"].split()[-2] != "0", p
        # this second's meter power, as what it is
        assert meter_now[lang] in p["meter_now"], (lang, p["meter_now"])
        browser.pump(0.8)  # the needle's transition ends before the picture
        browser.screenshot(ARTIFACTS / f"signal-story-{name}-{lang}.png")
    return sig


def test_the_three_contradictory_moments_read_as_one_story():
    rig = WebRig(signal=SignalSettings(hold_s=120))  # today's thresholds and hold time
    browser = None
    try:
        # 10:00 (Brussels): a sunny start of the quarter-hour banks 500 Wh of export
        rig.feed(0, export_w=3000)
        for _ in range(10):
            rig.feed(60, export_w=3000)
        browser = Browser(width=412, height=1100)
        browser.navigate(rig.url + "/?lang=en")
        browser.wait_js("window.quartierUpdates >= 1", what="a live event")

        # 1. the kettle at 10:11: the meter imports 192 W, the quarter-hour still ends in surplus: green
        rig.feed(60, import_w=192)
        rig.wait_live(lambda x: x["power"]["import_w"] == 192, "the import reading")
        sig = _check_moment(rig, browser, "green-while-importing", state="green", held=False,
                            meter_now={"fr": "prélève 192 W", "nl": "neemt 192 W af", "en": "importing 192 W"})
        assert sig["balance_w"] > 500

        # 2. a heavy import to 10:15 turns it red; at 10:16 the meter exports 594 W: held red, headroom 594 W
        for _ in range(4):
            rig.feed(60, import_w=3000)
        rig.wait_live(lambda x: x["signal"]["state"] == "red", "red")
        rig.feed(60, export_w=594)
        rig.wait_live(lambda x: x["power"]["export_w"] == 594, "the export reading")
        sig = _check_moment(rig, browser, "held-red-exporting", state="red", held=True,
                            meter_now={"fr": "injecte 594 W", "nl": "injecteert 594 W", "en": "exporting 594 W"})
        assert abs(sig["headroom_w"] - 594) <= 10  # registers in whole Wh and sig["pending"] == "green"

        # 3. at 10:17 it becomes amber (small surplus); at 10:18 the sun is back: held amber, headroom > 1 kW
        rig.feed(60, export_w=300)
        rig.wait_live(lambda x: x["signal"]["state"] == "amber", "amber")
        rig.feed(60, export_w=1200)
        rig.wait_live(lambda x: x["power"]["export_w"] == 1200, "the export reading")
        sig = _check_moment(rig, browser, "held-amber", state="amber", held=True,
                            meter_now={"fr": "injecte 1,2 kW", "nl": "injecteert 1,2 kW", "en": "exporting 1.2 kW"})
        assert sig["headroom_w"] > 1000 and sig["pending"] == "green"
    finally:
        if browser is not None:
            browser.close()
        rig.close()

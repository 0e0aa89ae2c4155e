"""The local page in headless Debian Chromium: `quartier demo --port N` serves it, it loads from this
node only, updates live from the event stream, speaks French, Dutch and English, says when the
gateway is offline; a phone-sized screenshot is kept at artifacts/web-page.png."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.browser import Browser
from tests.servers import free_port, port_open
from tests.web_harness import WebRig

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SCREENSHOT = ARTIFACTS / "web-page.png"


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer")
        time.sleep(0.2)


def test_demo_page_loads_updates_live_and_is_kept_as_a_screenshot(tmp_path: Path):
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--dir", str(tmp_path / "demo"), "--port", str(port),
         "--speed", "1800", "--start", "2026-06-21T06:00:00+02:00"],  # two quarter-hours a second from 06:00
        stdout=subprocess.PIPE, stderr=open(tmp_path / "demo.log", "wb"), env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}/"
    browser = None
    try:
        banner = demo.stdout.readline().decode()
        assert banner.startswith("Quartier demo")
        _wait_http(url + "api/v1/health")
        browser = Browser(width=412, height=915)
        browser.navigate(url + "?lang=en")
        # live: the stream's events keep arriving and the page changes with them
        browser.wait_js("(window.quartierUpdates || 0) >= 2", what="live events")
        first = browser.js("document.getElementById('updated').textContent")
        browser.wait_js(f"document.getElementById('updated').textContent !== {first!r} && window.quartierUpdates >= 4",
                        what="the page to update from the stream")
        assert browser.js("document.getElementById('status').textContent") == "live"
        assert browser.js("document.getElementById('offline').hidden") is True
        light = browser.js("document.getElementById('light').className")
        assert light.split()[-1] in ("green", "amber", "red")
        sentence = browser.js("document.getElementById('sentence').textContent")
        assert sentence and sentence != "…"
        browser.wait_js("document.querySelectorAll('#bars rect').length >= 8", what="today's quarter-hour bars")
        assert browser.js("document.getElementById('month-note').textContent").startswith("Provisional")
        assert "kW" in browser.js("document.getElementById('surplus-w').textContent") or \
            " W" in browser.js("document.getElementById('surplus-w').textContent")

        # the signal changes during the demo's morning (clouds, appliances, the sun rising)
        states = set()
        deadline = time.monotonic() + 30
        while len(states) < 2 and time.monotonic() < deadline:
            states.add(browser.js("document.getElementById('light').className").split()[-1])
            browser.pump(0.3)
        assert len(states) >= 2, f"the signal never changed: {states}"

        # languages
        browser.js("document.querySelector('[data-lang=nl]').click()")
        assert browser.js("document.documentElement.lang") == "nl"
        assert browser.js("document.querySelector('[data-i18n=today]').textContent") == "Vandaag"
        reason = browser.js("(function(){const r=document.getElementById('light').className.split(' ').pop();return r})()")
        assert reason in ("green", "amber", "red")
        nl_sentence = browser.js("document.getElementById('sentence').textContent")
        # a reason's headline, or a held state saying so (services/signal_words.py)
        assert nl_sentence in browser.js("Object.values(window.QUARTIER_I18N.nl.signal)") or "vastgehouden" in nl_sentence
        browser.js("document.querySelector('[data-lang=fr]').click()")
        assert browser.js("document.querySelector('[data-i18n=this_month]').textContent") == "Ce mois-ci"
        browser.js("document.querySelector('[data-lang=en]').click()")

        # everything came from this node, and little of it
        others = [u for u in browser.requested() if not u.startswith(url) and not u.startswith("data:")]
        assert others == []
        sizes = browser.transferred()
        total = sum(sizes.values())
        print(f"\npage transfer: {total} bytes over {len(sizes)} requests (event stream not counted)")
        assert total < 150_000

        browser.pump(1.0)
        browser.screenshot(SCREENSHOT)
        assert SCREENSHOT.stat().st_size > 10_000
        print(f"screenshot: {SCREENSHOT}")

        # Ctrl-C stops the demo and its web service
        demo.send_signal(signal.SIGINT)
        demo.wait(20)
        deadline = time.monotonic() + 10
        while port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_open("127.0.0.1", port)
    finally:
        if browser is not None:
            browser.close()
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)


def test_page_says_gateway_offline_when_the_daemon_goes_away():
    rig = WebRig()
    browser = None
    try:
        rig.feed(0, export_w=1800)
        rig.feed(60, export_w=1800)
        browser = Browser()
        browser.navigate(rig.url + "/?lang=fr")
        browser.wait_js("window.quartierUpdates >= 1", what="a live event")
        assert browser.js("document.getElementById('light').className") == "light green"
        sentence = browser.js("document.getElementById('sentence').textContent")
        assert sentence == "Surplus maintenant : faites tourner vos appareils."
        rig.publisher.stop()
        browser.wait_js("!document.getElementById('offline').hidden", what="the offline banner")
        assert browser.js("document.getElementById('offline').textContent").startswith("Passerelle hors ligne")
        assert browser.js("document.getElementById('status').textContent") == "hors ligne"
        rig.publisher.start()
        rig.feed(1, export_w=1800)
        browser.wait_js("document.getElementById('offline').hidden", what="the banner to go")
    finally:
        if browser is not None:
            browser.close()
        rig.close()

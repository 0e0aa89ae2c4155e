"""The operator's page for everyone: axe-core (WCAG 2.2 A/AA and best practice) finds nothing in
French, Dutch and English, at 200 % zoom and in dark mode; ``<html lang>`` comes from the server;
labels, statuses and the chart are translated; every time is the meters' and the page says so.
Screenshots in artifacts/operator-a11y-*.png."""

from __future__ import annotations

from pathlib import Path

import httpx

from services.community.api import create_app, page_language
from tests.axe import describe, run_axe, zoom
from tests.browser import Browser
from tests.community_fixtures import recent, seeded
from tests.test_community_alerts import serve

ART = Path(__file__).resolve().parents[1] / "artifacts"
TOKEN = "operator-a11y-token"


def test_operator_page_has_no_axe_violations_in_three_languages(tmp_path: Path):
    srv, ledger = seeded(tmp_path, recent())
    url, server, thread = serve(create_app(srv.roster, ledger, [TOKEN], server=srv))
    b = Browser(width=1280, height=900)
    try:
        assert page_language(None, "nl-BE,nl;q=0.9") == "nl" and page_language("fr", "nl") == "fr"
        assert page_language(None, "de") == "en"
        assert '<html lang="nl">' in httpx.get(url + "/", headers={"Accept-Language": "nl-BE"}).text
        words = {"fr": ("Alertes collectives", "clé de répartition", "consommateur"),
                 "nl": ("Collectieve oproepen", "verdeelsleutel", "verbruiker"),
                 "en": ("Collective alerts", "key in use", "consumer")}
        for lang, expected in words.items():
            b.navigate(url + f"/?lang={lang}#token={TOKEN}")
            b.wait_js("!document.getElementById('alerts').hidden && !!document.querySelector('tr[data-member=alice]')",
                      timeout=15, what=f"{lang}: the operator's figures")
            assert b.js("document.documentElement.lang") == lang
            assert b.js("document.getElementById('login').hidden") is True
            text = b.js("document.body.innerText")
            for word in expected:
                assert word in text, (lang, word)
            assert b.js("document.querySelector('svg.chart').getAttribute('aria-label')").count("alice") == 1
            assert b.js("parseInt(document.querySelector('tr[data-member=alice] .received').textContent)") == 1000
            assert b.js("document.getElementById('clock').textContent")  # which clock the times are on
            found = run_axe(b)
            assert found == [], f"{lang}: axe-core found\n{describe(found)}"
            b.screenshot(ART / f"operator-a11y-{lang}.png")
        b.call("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        b.pump(0.3)
        found = run_axe(b)
        assert found == [], f"dark: axe-core found\n{describe(found)}"
        b.screenshot(ART / "operator-a11y-dark.png")
        b.call("Emulation.setEmulatedMedia", {"features": []})
        zoom(b, 2.0)
        b.navigate(url + f"/?lang=fr#token={TOKEN}")
        b.wait_js("!!document.querySelector('tr[data-member=alice]')", timeout=15, what="200 %: the figures")
        found = run_axe(b)
        assert found == [], f"200 %: axe-core found\n{describe(found)}"
        b.screenshot(ART / "operator-a11y-zoom200.png")
        # without a token: the login form alone, clean too
        b.js("localStorage.removeItem('qtoken'); true")
        b.navigate(url + "/?lang=nl")
        b.wait_js("!document.getElementById('login').hidden", what="the login form")
        found = run_axe(b)
        assert found == [], f"login: axe-core found\n{describe(found)}"
    finally:
        b.close()
        server.should_exit = True
        thread.join(10)

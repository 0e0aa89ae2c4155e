"""axe-core in the real Chromium page: the accessibility checks of the node and operator pages.

axe-core is not vendored: the pinned version is installed with npm into ``.cache/axe`` on first use
(``npm install --prefix .cache/axe axe-core@4.14.1``, as ``.ci/run`` does beforehand); ``AXE_JS`` may
point at another copy of ``axe.min.js``. Without npm and without a copy the test fails with the
command to run, never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.browser import Browser

AXE_VERSION = "4.14.1"
AXE_JS = Path(os.environ.get("AXE_JS") or Path(__file__).resolve().parents[1] / ".cache/axe/node_modules/axe-core/axe.min.js")
# WCAG 2.2 A/AA (2.0 and 2.1 rules carry their own tags) and axe's best practices
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def axe_source() -> str:
    if not AXE_JS.exists() and shutil.which("npm") and "AXE_JS" not in os.environ:
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(AXE_JS.parents[2]),
                        f"axe-core@{AXE_VERSION}"], check=False, timeout=300, stdin=subprocess.DEVNULL)
    if not AXE_JS.exists():
        pytest.fail(f"{AXE_JS} not found: run `npm install --prefix .cache/axe axe-core@{AXE_VERSION}` "
                    "(.ci/run does)", pytrace=False)
    return AXE_JS.read_text(encoding="utf-8")


def run_axe(browser: Browser) -> list[dict]:
    """axe's violations on the page as it is now: [{id, impact, help, nodes: [target, summary]}]."""
    if not browser.js("typeof window.axe === 'object'"):
        browser.call("Runtime.evaluate", {"expression": axe_source()})
    got = browser.js("axe.run(document, {runOnly: {type: 'tag', values: %s}, resultTypes: ['violations']})"
                     ".then(r => JSON.stringify(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, "
                     "nodes: v.nodes.map(n => [n.target.join(' '), n.failureSummary])}))))" % json.dumps(TAGS))
    return json.loads(got)


def describe(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']}")
        lines += [f"    {t}: {(s or '').splitlines()[-1].strip()}" for t, s in v["nodes"][:5]]
    return "\n".join(lines)


def zoom(browser: Browser, factor: float, width: int = 1280, height: int = 900) -> None:
    """Browser zoom: the CSS viewport shrinks by ``factor`` and each CSS pixel grows by it (what
    Ctrl-+ does to a 1280 x 900 window)."""
    browser.call("Emulation.setDeviceMetricsOverride", {"width": int(width / factor), "height": int(height / factor),
                                                        "deviceScaleFactor": factor, "mobile": False})

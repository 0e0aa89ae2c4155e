"""Issue 7's "done when": two nodes running `quartier demo`-style simulated meters and one community
server on this machine show the shared allocation and the operation's live signal on each node's page.

`quartier community demo` starts the real pieces as separate processes: Mosquitto with the generated
TLS + per-gateway ACL configuration, `quartier community` (server + operator API), and two
`quartier demo --join` nodes (simulated meter on a pty, daemon, web page). The test reads each node's
API and page (headless Chromium), the operator API, and checks that what the nodes show is what the
server allocated, conserved across the nodes. Issue 14: the street's cabin runs as a third node, an
observer the operator sees; the demo's scripted collective alert turns every node red with its message
at the simulated time the banner gives, and its measured effect appears on the operator API and page.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from demo.community import ALERT_MESSAGE
from tests.browser import Browser
from tests.servers import free_port, port_open

DAY = "2026-06-21"
START = f"{DAY}T11:00:00+02:00"  # midsummer late morning: the producer's roof has plenty to share


def get(url: str, token: str | None = None) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def poll(fn, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture
def community_demo(tmp_path: Path):
    port, op_port = free_port(), free_port()  # the demo moves the second node on if port + 1 is taken
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "community", "demo", "--dir", str(tmp_path / "demo"),
         "--speed", "120", "--start", START, "--port", str(port), "--operator-port", str(op_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not any(ln.startswith("Stop with Ctrl-C") for ln in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "the demo did not come up:\n" + "".join(lines)
            line = proc.stdout.readline().decode(errors="replace")
            lines.append(line)
        banner = "".join(lines)
        nodes = dict(re.findall(r"^  (\w+)\s+.*?(http://127\.0\.0\.1:\d+/)$", banner, re.M))
        token = re.search(r"operator page\s+http://127\.0\.0\.1:\d+/#token=(\S+)", banner).group(1)
        yield proc, nodes, f"http://127.0.0.1:{op_port}/", token, tmp_path / "demo", banner, time.monotonic()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_two_demo_nodes_and_a_community_server_show_the_shared_allocation_and_the_operation_signal(community_demo) -> None:
    proc, all_nodes, operator, token, d, banner, t_banner = community_demo
    assert set(all_nodes) == {"soleil", "voisin", "cabine"}  # the street's cabin: an observer node
    nodes = {k: v for k, v in all_nodes.items() if k != "cabine"}  # the members

    # the scripted alert: the banner says when (simulated); at that time of the meters' clock every
    # node, the cabin's too, turns red with the reason and the message, on one retained message
    at = re.search(r"scripted alert\s+the community asks every home to reduce at (\d\d:\d\d) simulated time, "
                   r"in about (\d+) s", banner)
    assert at, banner
    red: dict[str, float] = {}

    def all_red() -> bool:
        for name, url in all_nodes.items():
            if name not in red:
                sig = get(url + "api/v1/signal")
                if sig["state"] == "red" and sig["reason"] == "reduce_now":
                    assert sig["alert"]["message"] == ALERT_MESSAGE, sig
                    assert sig["alert"]["start"] == f"{DAY}T{int(at.group(1)[:2]) - 2:02d}:{at.group(1)[3:]}:00Z", sig
                    red[name] = time.monotonic() - t_banner
        return len(red) == len(all_nodes)

    poll(all_red, "every node red on the scripted alert", timeout=60)
    print(f"scripted alert: banner said in about {at.group(2)} s; red after "
          + ", ".join(f"{n} {s:.1f} s" for n, s in sorted(red.items())))
    alert = get(operator + "api/v1/operations/rue-du-moulin/alerts", token)["alerts"]
    assert [a["message"] for a in alert] == [ALERT_MESSAGE] and alert[0]["kind"] == "reduce"
    assert alert[0]["status"] == "active"
    assert {"members_kwh", "members_baseline_kwh", "members_change_pct", "observer_kwh", "observer_baseline_kwh",
            "observer_change_pct"} <= set(alert[0]["effect"])

    # the cabin is watched on the operator API: its live power and its quarter-hours, never a member
    obs = poll(lambda: (o := get(operator + f"api/v1/operations/rue-du-moulin/observers?day={DAY}", token))
               and o[0]["live"] and o, "the cabin's live power on the operator API")
    assert [o["id"] for o in obs] == ["cabine"] and obs[0]["live"]["import_w"] >= 0

    # live: both members report; each node's live view carries the operation's totals and the
    # consume-now signal is computed on the operation's basis (the neighbour has no panels of its own)
    for name, url in nodes.items():
        op = poll(lambda u=url: (get(u + "api/v1/live").get("operation") or {}).get("members_reporting") == 2
                  and get(u + "api/v1/live")["operation"], f"{name}: both members in the operation's live totals")
        assert op["pool_w"] > 0 and op["surplus_w"] == pytest.approx(op["pool_w"] - op["consumption_w"], abs=0.2)
        sig = poll(lambda u=url: get(u + "api/v1/signal").get("basis") == "operation" and get(u + "api/v1/signal"),
                   f"{name}: a signal on the operation's basis")
        assert sig["state"] in ("green", "amber", "red")

    # allocation: quarter-hours close on both simulated meters, the server allocates each one and
    # sends every member its own share; wait for three allocated quarter-hours on both nodes
    def day(name: str) -> dict:
        return get(nodes[name] + f"api/v1/allocation?period=day&at={DAY}")

    poll(lambda: all(day(n).get("quarter_hours_with_fleet_data", 0) >= 3 for n in nodes),
         "three allocated quarter-hours on both nodes", timeout=90)
    soleil, voisin = day("soleil"), day("voisin")
    assert soleil["basis"] == voisin["basis"] == "operation"
    # the neighbour receives exactly what the producer's injection shared, quarter-hour by quarter-hour
    # summed over the same allocations (each node got only its own share and the operation's totals)
    shared = get(operator + "api/v1/operations/rue-du-moulin/allocation?month=2026-06", token)["members"]
    assert shared["voisin"]["received_wh"] > 0
    assert shared["soleil"]["injection_shared_wh"] == shared["voisin"]["received_wh"] + shared["soleil"]["received_wh"]
    # what the node pages show is what the server allocated (the nodes may lag by the allocation in flight)
    assert 0 < voisin["shared_wh"] <= shared["voisin"]["received_wh"]
    assert 0 < soleil["injection_shared_wh"] <= shared["soleil"]["injection_shared_wh"]
    members = {m["id"]: m for m in get(operator + "api/v1/operations/rue-du-moulin/members", token)}
    # the simulated meters run ahead of real time: the demo's server widens its window to match, so
    # not one of their honest figures is refused
    assert get(operator + "api/v1/operations/rue-du-moulin/refused", token)["total"] == 0
    assert members["soleil"]["status"] == members["voisin"]["status"] == "online"
    assert members["cabine"]["role"] == "observer" and "cabine" not in shared

    # once the alert is over, its effect is measured on the quarter-hours of its window (no baseline:
    # the demo has no earlier weeks) and each member's page has the collective result
    done = poll(lambda: (a := get(operator + "api/v1/operations/rue-du-moulin/alerts", token)["alerts"][0])
                ["status"] == "expired" and a["effect"]["members_kwh"] is not None and a, "the alert's measured effect",
                timeout=40)
    assert done["effect"]["members_kwh"] > 0 and done["effect"]["observer_kwh"] > 0
    assert done["effect"]["members_baseline_kwh"] is None and done["effect"]["baseline_weeks"]["members"] == 0
    for name, url in nodes.items():
        poll(lambda u=url: (get(u + "api/v1/live").get("last_alert") or {}).get("id") == done["id"],
             f"{name}: the last alert's collective result")
        assert get(url + "api/v1/signal")["reason"] != "reduce_now"

    # the pages, in a real browser: the gauge is the operation's surplus, the signal light is lit, the
    # month card says the figures are the community's provisional allocation and shows the share
    browser = Browser(width=412, height=915)
    try:
        for name, url in nodes.items():
            browser.navigate(url + "?lang=en")
            browser.wait_js("document.getElementById('surplus-basis').textContent === 'surplus of the sharing operation'",
                            timeout=30, what=f"{name}: the operation's surplus on the gauge")
            light = browser.js("document.getElementById('light').className")
            assert light.split()[-1] in ("green", "amber", "red"), light
            browser.wait_js("document.getElementById('month-note').textContent.startsWith('Provisional')",
                            timeout=30, what=f"{name}: the month card on the operation's allocation")
            if name == "voisin":
                browser.wait_js("document.getElementById('month-shared').textContent !== '–' && "
                                "parseFloat(document.getElementById('month-shared').textContent) > 0",
                                timeout=30, what="voisin: its shared energy this month")
            else:  # the producer's page says how much of its production went to the neighbours
                browser.wait_js("!document.getElementById('month-given').hidden && document.getElementById("
                                "'month-given').textContent.startsWith('Your production shared with the neighbours')",
                                timeout=30, what="soleil: its production shared this month")
            art = Path(__file__).resolve().parents[1] / "artifacts"
            art.mkdir(exist_ok=True)
            browser.screenshot(art / f"community-demo-{name}.png")
        # the operator's page, opened from the demo's link (token in the fragment): both members
        # online, on the newest day and month with data, the neighbour's share and the key in use
        browser.navigate(operator + f"#token={token}")
        browser.wait_js("document.querySelector('.online-count') && "
                        "document.querySelector('.online-count').textContent.startsWith('2/2')",
                        timeout=30, what="operator page: both members online")
        assert browser.js("document.getElementById('month').value") == "2026-06"
        assert browser.js("location.hash") == ""  # the token left the address bar
        got = browser.js("parseInt(document.querySelector('tr[data-member=voisin] .received').textContent)")
        assert got > 0
        # the alert, past, with the members' and the cabin's measured kWh
        cell = f"document.querySelector('tr[data-alert=\"{done['id']}\"].expired .effect-members')"
        browser.wait_js(f"{cell} && {cell}.textContent.startsWith('{done['effect']['members_kwh']} /')",
                        timeout=20, what="operator page: the alert's effect")
        assert browser.js("document.querySelector('tr[data-observer=cabine]') !== null")
        assert "prorata" in browser.js("document.getElementById('ops').textContent").lower()
    finally:
        browser.close()

    # Ctrl-C stops everything in order and cleanly
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    for url in [*all_nodes.values(), operator]:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert not port_open("127.0.0.1", port), f"{url} still served after the demo stopped"
    assert "Traceback" not in (d / "community.log").read_text()
    for name in all_nodes:
        assert "Traceback" not in (d / name / "demo.log").read_text()

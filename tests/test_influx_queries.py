"""The example queries of docs/home-automation.md, run as written against VictoriaMetrics on data the
sinks' own line format writes, across the spring clock change (a 23-hour local day).

The expressions are read from the document's MetricsQL block, so the page and this test cannot drift
apart; only ``<meter>`` and ``<len>`` are filled in, as the document says.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.model import PhasePower, Reading, SubMeterReading
from gateway.sinks.influx_live import live_line
from tests.servers import VictoriaMetrics

DOC = Path(__file__).resolve().parents[1] / "docs" / "home-automation.md"
BXL = ZoneInfo("Europe/Brussels")
METER = "541448820044112233"
DAYS = [date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30)]  # 24 h, 23 h (summer time starts), 24 h


def documented() -> dict[str, str]:
    """The MetricsQL block's expressions, by the comment above them; a second expression under the
    same comment gets the key ``comment + " +"``."""
    text = DOC.read_text()
    block = text[text.index("### MetricsQL"):]
    block = block[block.index("```\n") + 4:]
    block = block[:block.index("```")]
    out: dict[str, str] = {}
    label = ""
    for line in filter(str.strip, block.splitlines()):
        if line.startswith("#"):
            label = line[2:]
        else:
            out[label + " +" if label in out else label] = line.strip()
    return out


def midnight(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=BXL).timestamp())


def instant(vm: VictoriaMetrics, query: str, at: int) -> list[dict]:
    vm.flush()
    q = urllib.parse.urlencode({"query": query, "time": at})
    with urllib.request.urlopen(f"{vm.url}/api/v1/query?{q}", timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def per_local_day(vm: VictoriaMetrics, expression: str, day: date) -> float:
    """The document's recipe: at one second before the next local midnight, over the day's length."""
    start, end = midnight(day), midnight(day + timedelta(days=1))
    found = instant(vm, expression.replace("<meter>", METER).replace("<len>", str(end - start)), end - 1)
    assert len(found) == 1, found
    return float(found[0]["value"][1])


@pytest.fixture
def loaded(victoria_metrics: VictoriaMetrics) -> dict[str, dict[date, float]]:
    """Three local days of quarter-hours (varied Wh) and of live readings every 5 minutes (gas rising
    by varied amounts, three phases); returns what each local day should add up to."""
    expected: dict[str, dict[date, float]] = {"import": {}, "gas": {}}
    qh_lines, live = [], []
    t = datetime.fromtimestamp(midnight(DAYS[0]) - 3600, timezone.utc)  # and the hour before, for gas
    end = datetime.fromtimestamp(midnight(DAYS[-1] + timedelta(days=1)) + 3600, timezone.utc)
    gas, i = 1234.5, 0
    while t < end:
        day = t.astimezone(BXL).date()
        if t.minute % 15 == 0:
            wh = 100 + (i * 37) % 90
            qh_lines.append(f"quarter_hour,meter_id={METER},source=p1 import_wh={wh}i,export_wh=0i {int(t.timestamp())}")
            expected["import"][day] = expected["import"].get(day, 0) + wh
        step = round(0.001 * ((i * 13) % 7), 3)  # m³ since the previous reading
        gas = round(gas + step, 3)
        expected["gas"][day] = round(expected["gas"].get(day, 0) + step, 3)
        live.append(Reading(meter_id=METER, time=t, import_wh={"1": 1000 + i}, export_wh={"1": 500},
                            import_w=800.0, export_w=0.0, tariff="1",
                            phases=tuple(PhasePower(phase=n, voltage_v=230.0 + n, current_a=1.0) for n in (1, 2, 3)),
                            submeters=(SubMeterReading(channel=1, kind="gas", value=gas, unit="m3", time=t),)))
        t += timedelta(minutes=5)
        i += 1
    victoria_metrics.write_lines("\n".join(qh_lines))
    victoria_metrics.write_lines("\n".join(x for r in live if (x := live_line(r)) is not None))
    return expected


def test_the_documented_metricsql_gives_local_days_across_the_clock_change(victoria_metrics: VictoriaMetrics, loaded) -> None:
    queries = documented()
    imported = queries["Wh imported in the local day (quarter_hour_export_wh: exported)"]
    gas = queries["m³ of gas in the local day: the register's increase from the last reading before the day"]
    for day in DAYS:
        assert per_local_day(victoria_metrics, imported, day) == loaded["import"][day], day
        assert per_local_day(victoria_metrics, gas, day) == pytest.approx(loaded["gas"][day], abs=1e-6), day
    # the 23-hour day has 92 quarter-hours, not 96
    assert midnight(DAYS[2]) - midnight(DAYS[1]) == 23 * 3600


def test_the_documented_live_queries_give_one_series_per_phase(victoria_metrics: VictoriaMetrics, loaded) -> None:
    queries = documented()
    now_key = "now: net power, and each phase's voltage (one series per phase)"
    at = midnight(DAYS[1]) + 3600
    net = instant(victoria_metrics, queries[now_key], at)
    assert [float(s["value"][1]) for s in net] == [800.0]
    volts = instant(victoria_metrics, queries[now_key + " +"], at)
    assert sorted((s["metric"]["__name__"], float(s["value"][1])) for s in volts) == [
        ("live_l1_voltage_v", 231.0), ("live_l2_voltage_v", 232.0), ("live_l3_voltage_v", 233.0)]


def test_a_daily_range_query_would_not_give_local_days(victoria_metrics: VictoriaMetrics, loaded) -> None:
    """Why the document asks for instants: step=1d windows end at each midnight, open on the left, so
    they hold the next day's first quarter-hour and not the day's own; across a clock change they drift."""
    start = midnight(DAYS[1])
    q = urllib.parse.urlencode({"query": f'sum_over_time(quarter_hour_import_wh{{meter_id="{METER}"}}[1d])',
                                "start": start, "end": start + 86400, "step": "1d"})
    victoria_metrics.flush()
    with urllib.request.urlopen(f"{victoria_metrics.url}/api/v1/query_range?{q}", timeout=10) as resp:
        values = json.loads(resp.read())["data"]["result"][0]["values"]
    assert float(values[0][1]) != loaded["import"][DAYS[0]]


def test_the_shell_recipe_computes_the_23_hour_day() -> None:
    """The document's `date` arithmetic, run as written (GNU date)."""
    import shutil
    import subprocess

    text = DOC.read_text()
    recipe = re.search(r"```sh\n(day=.*?)\ncurl", text, re.S)
    assert recipe, "the shell recipe is gone from docs/home-automation.md"
    date_bin = shutil.which("date")
    assert date_bin, "GNU date"
    out = subprocess.run(["bash", "-c", recipe.group(1) + '\necho "$from $to"'], capture_output=True, text=True, check=True)
    start, end = map(int, out.stdout.split())
    assert (start, end) == (midnight(DAYS[1]), midnight(DAYS[2]))

"""Reconciliation: operator file layouts, config mappings, and the binding figures' way to the central
store (a real VictoriaMetrics speaking the InfluxDB v2 write API)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError
from services.community.config import load_server_config
from services.community.ledger import Ledger
from services.community.reconcile import (
    MAPPINGS,
    ColumnMapping,
    ReconcileError,
    binding_lines,
    build_mapping,
    parse_grid_file,
)
from tests.community_fixtures import SECRET, seeded, write_community
from tests.servers import VictoriaMetrics, free_port

UTC = timezone.utc
BXL = ZoneInfo("Europe/Brussels")
Q = timedelta(minutes=15)
GRID = Path(__file__).parent / "fixtures" / "grid"
T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
ALICE, BOB, STRANGER = "541448820000000001", "541448820000000002", "541448820000009999"
FLUVIUS_TEST = replace(MAPPINGS["fluvius-verbruikshistoriek"], registers=("Afname Dag", "Afname Nacht"))
FALL_BACK_UTC = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # local 01:00 CEST; 16 quarter-hours to 03:00 UTC
MAPPING_SECTION = ('[reconcile.mappings.fluvius-test]\nbase = "fluvius-verbruikshistoriek"\n'
                   'registers = ["Afname Dag", "Afname Nacht"]\n')


# -- helpers ------------------------------------------------------------------------------------------

def server_config(tmp: Path, extra: str = "", influx_url: str | None = None) -> Path:
    write_community(tmp)
    influx = f'[influx]\nenabled = true\nurl = "{influx_url}"\norg = "o"\nbucket = "b"\n' if influx_url else ""
    (tmp / "server.toml").write_text(
        'secrets_file = "secrets.toml"\n[server]\ncommunity_file = "community.toml"\n'
        f'database = "{tmp / "community.sqlite"}"\n' + influx + extra)
    secrets = tmp / "secrets.toml"
    secrets.write_text(f'[server]\npseudonym_secret = "{SECRET}"\n[influx]\ntoken = "t"\n')
    os.chmod(secrets, 0o600)
    return tmp / "server.toml"


def quartier(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def reconcile(cfg: Path, file: Path, mapping: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--mapping", mapping] if mapping else []
    return quartier("community", "reconcile", "--config", str(cfg), "--operation", "op1", "--file", str(file), *extra)


def generic_file(path: Path, wh: dict[str, int]) -> Path:
    """Quartier's generic format: the same Wh for each of the four seeded quarter-hours."""
    lines = ["ean;start;received_kwh"]
    for i in range(4):
        local = (T0 + i * Q).astimezone(BXL)
        for ean, v in wh.items():
            lines.append(f"{ean};{local:%Y-%m-%d %H:%M};{v // 1000},{v % 1000:03d}")
    path.write_text("\n".join(lines) + "\n")
    return path


def store_points(vm: VictoriaMetrics, member: str, field: str = "received_wh") -> list[tuple[int, float]]:
    return [(s.timestamp_s, s.value) for s in vm.query_points(f"allocation_binding_{field}", member=member)]


# -- the operator layouts -----------------------------------------------------------------------------

def test_fluvius_export_of_the_fall_back_night_gives_each_quarter_hour_once() -> None:
    rows = parse_grid_file((GRID / "fluvius-verbruikshistoriek-2026-10.csv").read_text(encoding="utf-8-sig"),
                           FLUVIUS_TEST)
    got = {(r.ean, r.start): r.received_wh for r in rows}
    want = {}
    for ean, base, step, gap in ((ALICE, 100, 7, None), (BOB, 50, 3, 5), (STRANGER, 10, 1, None)):
        for i in range(16):
            if i != gap:  # "Geen verbruik" with no volume: no figure, not zero
                want[(ean, FALL_BACK_UTC + i * Q)] = base + step * i
    assert got == want
    # the repeated local 02:00 is two quarter-hours an hour apart, summer time first
    assert got[(ALICE, datetime(2026, 10, 25, 0, 0, tzinfo=UTC))] == 100 + 7 * 4
    assert got[(ALICE, datetime(2026, 10, 25, 1, 0, tzinfo=UTC))] == 100 + 7 * 8
    assert all(r.stop - r.start == Q for r in rows)


def test_older_fluvius_header_and_the_real_exports_row_order() -> None:
    mapping = replace(MAPPINGS["fluvius-verbruikshistoriek-2021"], registers=("Afname Nacht",))
    rows = parse_grid_file((GRID / "fluvius-verbruikshistoriek-2021-10.csv").read_text(), mapping)
    t0 = datetime(2021, 10, 30, 23, 45, tzinfo=UTC)
    assert {r.start: r.received_wh for r in rows} == {t0 + i * Q: 40 + i for i in range(1, 9)}


def test_a_fluvius_preset_without_the_shared_register_refuses() -> None:
    text = (GRID / "fluvius-verbruikshistoriek-2026-10.csv").read_text(encoding="utf-8-sig")
    with pytest.raises(ReconcileError, match="registers not set.*'Register'"):
        parse_grid_file(text, MAPPINGS["fluvius-verbruikshistoriek"])


def test_generic_monthly_rows_cover_their_month() -> None:
    rows = parse_grid_file((GRID / "generic-monthly-2026-05.csv").read_text(), MAPPINGS["generic-monthly"])
    alice = next(r for r in rows if r.ean == ALICE)
    assert (alice.received_wh, alice.start, alice.stop) == (
        12500, datetime(2026, 4, 30, 22, 0, tzinfo=UTC), datetime(2026, 5, 31, 22, 0, tzinfo=UTC))


HDR = "Van (datum);Van (tijdstip);Tot (datum);Tot (tijdstip);EAN-code;Meter;Metertype;Register;Volume;Eenheid;Validatiestatus"


def fluvius_line(day: str, time: str, volume: str, register: str = "Afname Nacht", unit: str = "kWh",
                 ean: str = ALICE) -> str:
    return f'{day};{time};{day};x;="{ean}";m;Digitale Meter;{register};{volume};{unit};Gevalideerd'


@pytest.mark.parametrize(("lines", "error"), [
    ([fluvius_line("29-03-2026", "02:15:00", "0,1")], "line 2: 29-03-2026 02:15:00 does not exist"),
    ([fluvius_line("25-10-2026", "02:15:00", "0,1")] * 3, "line 4: .* repeated"),
    ([fluvius_line("25-10-2026", "04:15:00", "0,1")] * 2, "line 3: .* repeated"),
    ([fluvius_line("25-10-2026", "04:10:00", "0,1")], "not the start of a quarter-hour"),
    ([fluvius_line("25-10-2026", "04:15:00", "0,1", unit="kVArh")], "line 2: Eenheid = 'kVArh': kWh or Wh"),
    ([fluvius_line("25-10-2026", "04:15:00", "-0,1")], "line 2: Volume is negative"),
    ([fluvius_line("25-10-2026", "04:15:00", "abc")], "line 2: Volume = 'abc' is not a number"),
    ([fluvius_line("2026-10-25", "04:15:00", "0,1")], r"line 2: Van \(datum\) \+ Van \(tijdstip\) = '2026-10-25 04:15:00'"),
])
def test_files_that_do_not_fit_their_mapping_are_refused_with_the_line(lines: list[str], error: str) -> None:
    with pytest.raises(ReconcileError, match=error):
        parse_grid_file("\n".join([HDR, *lines]) + "\n", FLUVIUS_TEST)


def test_empty_volume_policies() -> None:
    text = "\n".join([HDR, fluvius_line("25-10-2026", "04:15:00", "")]) + "\n"
    assert parse_grid_file(text, FLUVIUS_TEST) == []
    assert parse_grid_file(text, replace(FLUVIUS_TEST, empty="zero"))[0].received_wh == 0
    with pytest.raises(ReconcileError, match="line 2: Volume is empty"):
        parse_grid_file(text, replace(FLUVIUS_TEST, empty="error"))


def test_a_stated_utc_offset_needs_no_row_order() -> None:
    mapping = ColumnMapping(ean="ean", start="start", received="wh", start_format="%Y-%m-%dT%H:%M%z", unit="Wh",
                            delimiter=",", decimal=".")
    text = "ean,start,wh\n1,2026-10-25T02:00+01:00,5\n1,2026-10-25T02:00+02:00,7\n"
    assert [(r.start, r.received_wh) for r in parse_grid_file(text, mapping)] == [
        (datetime(2026, 10, 25, 0, 0, tzinfo=UTC), 7), (datetime(2026, 10, 25, 1, 0, tzinfo=UTC), 5)]


# -- the property: any file in a mapping's layout gives back the Wh per (EAN, start) -----------------

WINDOW = [datetime(2026, 10, 24, 22, 0, tzinfo=UTC) + i * Q for i in range(24)]  # local 00:00-05:00, 02:xx twice
REGISTERS = ("Afname Dag", "Afname Nacht")


@st.composite
def grid_files(draw: st.DrawFn) -> tuple[list[tuple[str, datetime, str, int | None, str]], dict[tuple[str, datetime], int]]:
    """Rows (ean, utc start, register, Wh or None for an empty cell, unit) in any order that keeps each
    repeated wall-clock time summer time first, and the expected Wh per (EAN, start)."""
    eans = draw(st.lists(st.from_regex(r"54144882\d{10}", fullmatch=True), min_size=1, max_size=3, unique=True))
    rows = []
    for ean in eans:
        for start in draw(st.sets(st.sampled_from(WINDOW), min_size=1)):
            for register in draw(st.sets(st.sampled_from(REGISTERS), min_size=1)):
                wh = draw(st.one_of(st.integers(0, 999_999), st.none()))  # None: an empty volume, skipped
                rows.append((ean, start, register, wh, draw(st.sampled_from(["kWh", "Wh"]))))
            if draw(st.booleans()):  # a register the mapping does not select
                rows.append((ean, start, "Injectie Nacht", draw(st.integers(0, 999_999)), "kWh"))
    # a local-time file tells the winter-time 02:xx from the summer-time one only by its place after it:
    # a complete export lists both (an empty volume where there is no figure), so the generator does too
    present = {(ean, start, register) for ean, start, register, *_ in rows}
    for ean, start, register, *_ in list(rows):
        twin = start - timedelta(hours=1)
        if start.astimezone(BXL).fold == 1 and (ean, twin, register) not in present:
            rows.append((ean, twin, register, None, "kWh"))
            present.add((ean, twin, register))
    rows = draw(st.permutations(rows))
    # the file lists a repeated local time's summer-time row first: put the earlier instant first
    slots: dict[tuple, list[int]] = {}
    for i, (ean, start, register, *_rest) in enumerate(rows):
        slots.setdefault((ean, register, start.astimezone(BXL).replace(tzinfo=None)), []).append(i)
    ordered = list(rows)
    for positions in slots.values():
        for pos, row in zip(positions, sorted((rows[i] for i in positions), key=lambda r: r[1]), strict=True):
            ordered[pos] = row
    want: dict[tuple[str, datetime], int] = {}
    for ean, start, register, wh, _unit in ordered:
        if register in REGISTERS and wh is not None:
            want[(ean, start)] = want.get((ean, start), 0) + wh
    return ordered, want


def _fluvius_text(rows: list[tuple[str, datetime, str, int | None, str]]) -> str:
    out = [HDR]
    for ean, start, register, wh, unit in rows:
        local, end = start.astimezone(BXL), (start + Q).astimezone(BXL)
        volume = "" if wh is None else f"{wh // 1000},{wh % 1000:03d}" if unit == "kWh" else str(wh)
        out.append(f'{local:%d-%m-%Y};{local:%H:%M:%S};{end:%d-%m-%Y};{end:%H:%M:%S};="{ean}";1SAG;Digitale Meter;'
                   f"{register};{volume};{unit};Gevalideerd")
    return "\ufeff" + "\r\n".join(out) + "\r\n"


@settings(max_examples=250, deadline=None)
@given(grid_files())
def test_any_fluvius_layout_file_round_trips_to_the_same_wh(case) -> None:
    rows, want = case
    got = parse_grid_file(_fluvius_text(rows), FLUVIUS_TEST)
    assert {(r.ean, r.start): r.received_wh for r in got} == want
    assert len(got) == len(want)


@settings(max_examples=150, deadline=None)
@given(grid_files())
def test_any_offset_stamped_file_round_trips_to_the_same_wh(case) -> None:
    rows, want = case
    mapping = ColumnMapping(ean="ean", start="start", received="energy", start_format="%Y-%m-%d %H:%M:%S%z",
                            delimiter=",", decimal=".", unit_column="unit", register="kind", registers=REGISTERS,
                            empty="skip")
    lines = ["ean,start,kind,energy,unit"]
    for ean, start, register, wh, unit in rows:
        energy = "" if wh is None else str(Decimal(wh) / 1000) if unit == "kWh" else str(wh)
        lines.append(f"{ean},{start.astimezone(BXL):%Y-%m-%d %H:%M:%S%z},{register},{energy},{unit}")
    got = parse_grid_file("\n".join(lines), mapping)
    assert {(r.ean, r.start): r.received_wh for r in got} == want


# -- mappings from the server's config ---------------------------------------------------------------

def test_config_mappings_are_checked_and_errors_name_the_key(tmp_path: Path) -> None:
    cfg = load_server_config(server_config(tmp_path, MAPPING_SECTION))
    assert cfg.reconcile.resolved()["fluvius-test"] == FLUVIUS_TEST
    for section, error in [
        ('[reconcile.mappings.x]\nbase = "generic"\nunit = "MWh"\n', "reconcile.mappings.x.unit = 'MWh': kWh or Wh"),
        ('[reconcile.mappings.x]\nbase = "fluvius"\n', "reconcile.mappings.x.base = 'fluvius': no such preset"),
        ('[reconcile.mappings.x]\nean = "EAN"\n', "reconcile.mappings.x.start: required"),
        ('[reconcile.mappings.x]\nbase = "generic"\ncolumn = "a"\n', "reconcile.mappings.x.column = 'a': unknown key"),
        ('[reconcile.mappings.x]\nbase = "generic"\nregisters = ["a"]\n', "reconcile.mappings.x.registers: needs register"),
        ('[reconcile.mappings.x]\nbase = "generic"\ntimezone = "Mars/Olympus"\n', "reconcile.mappings.x.timezone = "),
    ]:
        with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(".", r"\.")):
            load_server_config(server_config(tmp_path, section))
    assert build_mapping({"base": "generic", "decimal": "."}).decimal == "."


def test_reconcile_finds_config_mappings_first_then_presets(tmp_path: Path) -> None:
    override = '[reconcile.mappings.generic]\nbase = "generic"\ndecimal = "."\n'
    cfg = server_config(tmp_path, MAPPING_SECTION + override)
    done = reconcile(cfg, GRID / "fluvius-verbruikshistoriek-2026-10.csv", "fluvius-test")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["rows"], report["unknown_eans"], report["mapping"]) == (31, [STRANGER], "fluvius-test")
    ledger = Ledger(tmp_path / "community.sqlite")
    totals = ledger.allocation_totals("op1", FALL_BACK_UTC, FALL_BACK_UTC + 16 * Q)
    ledger.close()
    assert totals["alice"]["grid_received_wh"] == sum(100 + 7 * i for i in range(16))
    assert totals["bob"]["grid_received_wh"] == sum(50 + 3 * i for i in range(16) if i != 5)
    # a config mapping named like a preset wins: "0.245" is 245 Wh with decimal "."
    dot = tmp_path / "dot.csv"
    dot.write_text(f"ean;start;received_kwh\n{ALICE};2026-05-01 12:00;0.245\n")
    assert reconcile(cfg, dot, "generic").returncode == 0
    done = reconcile(cfg, GRID / "fluvius-verbruikshistoriek-2026-10.csv", "fluvius-verbruikshistoriek")
    assert done.returncode == 2 and "registers not set" in done.stderr
    done = reconcile(cfg, dot, "ores")
    assert done.returncode == 2
    assert "--mapping ores: unknown (config: fluvius-test, generic; presets: fluvius-verbruikshistoriek, " in done.stderr
    assert "Traceback" not in done.stderr


def test_a_monthly_file_is_compared_with_the_whole_month(tmp_path: Path) -> None:
    cfg = server_config(tmp_path)
    _, ledger = seeded(tmp_path, T0)
    ledger.close()
    done = reconcile(cfg, GRID / "generic-monthly-2026-05.csv", "generic-monthly")
    assert done.returncode == 0, done.stderr
    by = {m["member"]: m for m in json.loads(done.stdout)["members"]}
    assert by["alice"] == {"member": "alice", "provisional_wh": 1000, "grid_wh": 12500, "difference_wh": -11500}
    assert by["bob"]["grid_wh"] == 3250
    ledger = Ledger(tmp_path / "community.sqlite")
    may = int(datetime(2026, 4, 30, 22, 0, tzinfo=UTC).timestamp())
    # queued for the store at the month's start, with the month's provisional figure it replaces
    assert ("op1", "alice", may, 1, 12500, 1000) in ledger.unpushed_binding()
    ledger.close()


# -- the ledger's queue of binding figures -----------------------------------------------------------

def test_a_changed_figure_gets_a_new_revision_and_the_same_one_nothing(tmp_path: Path) -> None:
    _, ledger = seeded(tmp_path, T0)
    ledger.import_grid("op1", [("alice", T0, 240, T0 + Q)], "a.csv")
    t = int(T0.timestamp())
    assert ledger.unpushed_binding() == [("op1", "alice", t, 1, 240, 250)]
    ledger.mark_binding_pushed([("op1", "alice", t, 1)])
    ledger.import_grid("op1", [("alice", T0, 240)], "a-again.csv")
    assert ledger.unpushed_binding() == []
    ledger.import_grid("op1", [("alice", T0, 230)], "b.csv")
    assert ledger.unpushed_binding() == [("op1", "alice", t, 2, 230, 250)]
    ledger.mark_binding_pushed([("op1", "alice", t, 1)])  # a pusher that read revision 1: not this one
    assert len(ledger.unpushed_binding()) == 1
    ledger.close()


def test_grid_rows_of_an_older_database_are_queued_for_the_store(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.execute("CREATE TABLE grid_allocation (operation TEXT NOT NULL, member TEXT NOT NULL, start INTEGER NOT NULL, "
               "received_wh INTEGER NOT NULL, imported_from TEXT NOT NULL, PRIMARY KEY (operation, member, start)) "
               "WITHOUT ROWID")
    db.execute("INSERT INTO grid_allocation VALUES ('op1', 'alice', 1777629600, 900, 'may.csv')")
    db.commit()
    db.close()
    ledger = Ledger(tmp_path / "old.sqlite")
    assert ledger.unpushed_binding() == [("op1", "alice", 1777629600, 1, 900, None)]
    ledger.close()


def test_binding_lines_write_each_revision_one_second_later() -> None:
    rows = [("op 1", "a,b", 1777629600, 1, 900, 1000), ("op1", "bob", 1777629600, 3, 80, None)]
    assert binding_lines("allocation", rows) == [
        (r"allocation_binding,operation=op\ 1,member=a\,b received_wh=900i,provisional_received_wh=1000i,revision=1i "
         "1777629600"),
        "allocation_binding,operation=op1,member=bob received_wh=80i,revision=3i 1777629602",
    ]


# -- VictoriaMetrics: what a rewritten timestamp does --------------------------------------------------

class VictoriaMetricsNoDedup(VictoriaMetrics):
    """VictoriaMetrics as installed by default: no ``-dedup.minScrapeInterval``."""

    def command(self) -> list[str]:
        return [c for c in super().command() if not c.startswith("-dedup.")]


def test_victoria_metrics_with_dedup_keeps_an_arbitrary_value_for_a_rewritten_timestamp(victoria_metrics) -> None:
    """The evidence behind one revision per timestamp: 900 then 100 at the same series and second does
    not reliably leave 100 (InfluxDB would), and a restart can bring the older value back."""
    ts = 1777629600
    for i in range(20):
        victoria_metrics.write_lines(f"probe,series=s{i} wh=900i {ts}")
        victoria_metrics.write_lines(f"probe,series=s{i} wh=100i {ts}")
    victoria_metrics.restart()
    kept = [s.value for s in victoria_metrics.query_points("probe_wh")]
    assert len(kept) == 20  # one sample per series and timestamp ...
    assert set(kept) <= {900, 100} and 900 in kept  # ... but not always the last one written


def test_victoria_metrics_without_dedup_keeps_every_write_of_a_timestamp(tmp_path: Path) -> None:
    with VictoriaMetricsNoDedup(tmp_path / "vm") as vm:
        ts = 1777629600
        for v in (900, 800, 800):
            vm.write_lines(f"probe,series=s wh={v}i {ts}")
        assert sorted(s.value for s in vm.query_points("probe_wh")) == [800, 800, 900]


# -- binding figures to the central store ---------------------------------------------------------------

def test_reconcile_writes_binding_figures_to_the_store_once_and_corrections_as_new_revisions(
        tmp_path: Path, victoria_metrics) -> None:
    cfg = server_config(tmp_path, influx_url=victoria_metrics.url)
    _, ledger = seeded(tmp_path, T0)
    ledger.close()
    grid = generic_file(tmp_path / "grid.csv", {ALICE: 245, BOB: 100})
    done = reconcile(cfg, grid)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["central_store"] == {"pushed": 8, "measurement": "allocation_binding"}
    starts = [int((T0 + i * Q).timestamp()) for i in range(4)]
    assert store_points(victoria_metrics, "alice") == [(t, 245) for t in starts]
    assert store_points(victoria_metrics, "alice", "provisional_received_wh") == [(t, 250) for t in starts]
    # the same file again: nothing new to write
    done = reconcile(cfg, grid)
    assert json.loads(done.stdout)["central_store"]["pushed"] == 0
    # a corrected file: alice's figures become revision 2, one second after revision 1
    done = reconcile(cfg, generic_file(tmp_path / "grid-corrected.csv", {ALICE: 240, BOB: 100}))
    assert json.loads(done.stdout)["central_store"]["pushed"] == 4
    want = sorted([(t, 245) for t in starts] + [(t + 1, 240) for t in starts])
    assert store_points(victoria_metrics, "alice") == want
    assert store_points(victoria_metrics, "bob") == [(t, 100) for t in starts]
    victoria_metrics.restart()  # merged on disk: still one value per timestamp, the last in each quarter-hour
    assert store_points(victoria_metrics, "alice") == want


def test_the_server_pusher_writes_binding_figures_and_reconcile_then_has_nothing_left(
        tmp_path: Path, victoria_metrics) -> None:
    from influxdb_client.client.write_api import SYNCHRONOUS

    from gateway.sinks.influx import load_influxdb_client

    cfg = server_config(tmp_path, influx_url=victoria_metrics.url)
    srv, ledger = seeded(tmp_path, T0)
    ledger.import_grid("op1", [("alice", T0 + i * Q, 245) for i in range(4)], "grid.csv")
    mod = load_influxdb_client()

    def push(url: str) -> int:
        client = mod.InfluxDBClient(url=url, token="t", org="o", timeout=5_000, retries=False)
        try:
            return srv.push_once(client.write_api(write_options=SYNCHRONOUS), {"bucket": "b", "org": "o"},
                                 "allocation", mod)
        finally:
            client.close()

    assert push(f"http://127.0.0.1:{free_port()}") == 0  # the store is down: everything stays queued
    assert srv.stats.push_error and len(ledger.unpushed_binding()) == 4
    pushed = push(victoria_metrics.url)
    assert pushed == 12 + 4  # 3 members x 4 provisional quarter-hours, then alice's 4 binding figures
    assert [v for _, v in store_points(victoria_metrics, "alice")] == [245] * 4
    assert srv.stats.push_error is None
    ledger.close()
    done = reconcile(cfg, generic_file(tmp_path / "grid.csv", {ALICE: 245}))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["central_store"]["pushed"] == 0
    assert len(store_points(victoria_metrics, "alice")) == 4


def test_with_the_store_down_reconcile_imports_and_the_figures_wait(tmp_path: Path, victoria_metrics) -> None:
    cfg = server_config(tmp_path, influx_url=f"http://127.0.0.1:{free_port()}")
    _, ledger = seeded(tmp_path, T0)
    ledger.close()
    done = reconcile(cfg, generic_file(tmp_path / "grid.csv", {ALICE: 245}))
    assert done.returncode == 0, done.stderr
    assert "central store refused the binding figures" in done.stderr and "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report["central_store"]["pushed"] == 0 and report["central_store"]["error"]
    assert {m["member"]: m["grid_wh"] for m in report["members"]}["alice"] == 980
    # the store is back (here: another address): the next run writes what waited
    cfg = server_config(tmp_path, influx_url=victoria_metrics.url)
    done = reconcile(cfg, generic_file(tmp_path / "grid.csv", {ALICE: 245}))
    assert json.loads(done.stdout)["central_store"]["pushed"] == 4
    assert [v for _, v in store_points(victoria_metrics, "alice")] == [245] * 4

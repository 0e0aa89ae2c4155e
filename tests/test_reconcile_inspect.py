"""Reconciliation on both sides (the producers' shared injection too) and ``reconcile --inspect``: a
Sibelga-like file is read, the proposed mapping pasted into the config, imported, and the statement
becomes binding with received = shared injection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.community.reconcile import MAPPINGS, parse_grid_file
from services.community.reconcile_inspect import inspect
from tests.test_statement import _config, quartier, seed

# the quarter-hour seeded at 2026-07-02 10:00 UTC (12:00 in Brussels): the grid operator's figures
SIBELGA = """Date Début;EAN;Type de volume;Volume (kWh)
02/07/2026 12:00;541448820000000001;Consommation Partagée;190,000
02/07/2026 12:00;541448820000000001;Consommation Réseau;20,000
02/07/2026 12:00;541448820000000002;Consommation Partagée;100,000
02/07/2026 12:00;541448820000000003;Injection Partagée;290,000
02/07/2026 12:00;541448820000000003;Injection Réseau;15,500
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "community", "reconcile", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_inspect_proposes_a_mapping_that_imports_both_sides(tmp_path: Path) -> None:
    found = inspect(SIBELGA)
    m = found["mapping"]
    assert (m["ean"], m["start"], m["start_format"], m["received"], m["register"], m["decimal"]) == (
        "EAN", "Date Début", "%d/%m/%Y %H:%M", "Volume (kWh)", "Type de volume", ",")
    assert m["registers"] == ["Consommation Partagée"] and m["injection_registers"] == ["Injection Partagée"]
    cfg = _config(tmp_path)
    seed(tmp_path / "c.sqlite")
    grid = tmp_path / "sibelga.csv"
    grid.write_text(SIBELGA)
    shown = cli("--inspect", str(grid))
    assert shown.returncode == 0 and "Type de volume" in shown.stdout and "[reconcile.mappings.mine]" in shown.stdout
    toml = shown.stdout[shown.stdout.index("[reconcile.mappings.mine]"):]
    cfg.write_text(cfg.read_text() + "\n" + toml)
    r = cli("--config", str(cfg), "--operation", "op1", "--file", str(grid), "--mapping", "mine")
    assert r.returncode == 0, r.stderr
    st = json.loads(quartier("--config", str(cfg), "--operation", "op1", "--period", "2026-07", "--format", "json").stdout)
    assert st["basis"] == "binding" and st["members"]["school"]["basis"] == "binding"
    assert st["members"]["alice"]["received_kwh"] == 190 and st["members"]["school"]["shared_injection_kwh"] == 290
    assert st["totals"]["received_kwh"] == st["totals"]["shared_injection_kwh"] == 290


def test_the_generic_format_reads_the_injection_column_when_there_is_one() -> None:
    text = "ean;start;received_kwh;shared_injection_kwh\n5414;2026-07-02 12:00;0,5;\n5415;2026-07-02 12:00;0;0,5\n"
    rows = parse_grid_file(text, MAPPINGS["generic"])
    assert [(r.ean, r.received_wh, r.injection_wh) for r in rows] == [("5414", 500, None), ("5415", 0, 500)]
    rows = parse_grid_file("ean;start;received_kwh\n5414;2026-07-02 12:00;0,5\n", MAPPINGS["generic"])
    assert rows[0].injection_wh is None  # a file with one side only is read as before


def test_inspect_of_a_missing_file_is_one_line() -> None:
    r = cli("--inspect", "/nonexistent.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1

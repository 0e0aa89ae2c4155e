"""Sizing simulation: reading data, comparing keys, the table, CSV and chart, and the command."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from services import cli
from services.community import simulate as sim
from services.allocation import PRESETS, AllocationInputError, allocate, load_community
from demo import example_year as make_year

FIXTURES = Path(__file__).parent / "fixtures" / "allocation"
OP = load_community(FIXTURES / "sim_operation.toml").operation()


def services_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="quartier")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def parse(text: str, unit: str = "Wh") -> sim.MeterData:
    return sim.parse_data(io.StringIO(text), OP, unit=unit, source="t.csv")


def epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


# --- reading data -----------------------------------------------------------------------------


def test_one_column_per_member_signed_for_a_prosumer() -> None:
    d = parse("start,pv,both1,c1,c2\n2025-06-01T12:15:00+02:00,900,-300,100,\n2025-06-01T12:00:00+02:00,800,250,90,40\n")
    assert d.member_ids == ("both1", "c1", "c2") and d.producer_ids == ("pv", "both1")
    assert d.epoch.tolist() == [epoch("2025-06-01T12:00:00+02:00"), epoch("2025-06-01T12:15:00+02:00")]  # sorted
    assert d.consumption.tolist() == [[250, 90, 40], [0, 100, 0]]
    assert d.production.tolist() == [[800, 0], [900, 300]]
    assert d.missing == 1


def test_import_export_columns_kwh_semicolons_and_decimal_commas() -> None:
    d = parse(
        "start;pv;both1.import;both1.export;c1;c2\n2025-06-01T12:00:00Z;0,8;0,05;0,3;0,1;0,0404\n",
        unit="kWh",
    )
    assert d.consumption.tolist() == [[50, 100, 40]]
    assert d.production.tolist() == [[800, 300]]


def test_local_times_without_offset_follow_the_autumn_change() -> None:
    rows = ["2025-10-26T02:30", "2025-10-26T02:45", "2025-10-26T02:00", "2025-10-26T02:15", "2025-10-26T03:00"]
    d = parse("start,pv,both1,c1,c2\n" + "".join(f"{r},1,1,1,1\n" for r in rows))
    utc = [datetime.fromtimestamp(int(e), UTC).strftime("%H:%M") for e in d.epoch]
    assert utc == ["00:30", "00:45", "01:00", "01:15", "02:00"]


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("start,pv,both1,c1,c2,c3\n2025-01-01T00:00Z,1,1,1,1,1\n", "t.csv column 'c3'", "not a member"),
        ("start,pv,both1,c1\n2025-01-01T00:00Z,1,1,1\n", "t.csv", "no column for member 'c2'"),
        (
            "start,pv,both1,c1,c2\n2025-01-01T00:00Z,1,1,1,1\n2025-01-01T00:15Z,1,1,-4,1\n",
            "t.csv line 3, column 'c1'",
            "negative consumption -4",
        ),
        ("start,pv,both1,c1,c2\n2025-01-01T00:00Z,-1,1,1,1\n", "t.csv line 2, column 'pv'", "negative injection"),
        ("start,pv,both1,c1,c2\n2025-01-01T00:00Z,1,1,1,1\n2025-01-01T01:00+01:00,1,1,1,1\n", "t.csv", "lines 2 and 3 have the same start"),
        ("start,pv,both1,c1,c2\n2025-01-01T00:00Z,1,1,x,1\n", "t.csv line 2, column 'c1'", "not a number"),
        ("start,pv,both1,c1,c2\nnoon,1,1,1,1\n", "t.csv line 2", "not an ISO 8601"),
        ("start,pv,both1,c1,c2\n2025-01-01T00:00Z,1,1,1\n", "t.csv line 2", "4 cells, the header has 5"),
        ("start,pv,pv.import,both1,c1,c2\n2025-01-01T00:00Z,1,1,1,1,1\n", "t.csv column 'pv.import'", "more than one column"),
        ("start,pv.import,both1,c1,c2\n2025-01-01T00:00Z,1,1,1,1\n", "t.csv column 'pv.import'", "producer-only"),
        ("start,pv,both1,c1.export,c2\n2025-01-01T00:00Z,1,1,1,1\n", "t.csv column 'c1.export'", "make it 'both'"),
        ("start,pv,both1.import,c1,c2\n2025-01-01T00:00Z,1,1,1,1\n", "t.csv", "no column for member 'both1'"),
        ("start,pv,both1,c1,c2\n", "t.csv", "no data rows"),
        ("", "t.csv", "empty file"),
    ],
)
def test_data_errors_name_line_and_column(text: str, where: str, words: str) -> None:
    with pytest.raises(AllocationInputError) as exc:
        parse(text)
    assert exc.value.field == where
    assert words in exc.value.reason


# --- simulation -------------------------------------------------------------------------------


def _three_days() -> sim.MeterData:
    """Quarter-hours from 2025-01-30 to 2025-02-02 local time, generated with a fixed seed."""
    rng = np.random.default_rng(3)
    start = epoch("2025-01-30T00:00:00+01:00")
    ep = start + 900 * np.arange(4 * 96)
    hour = ((ep - start) % 86400) / 3600
    sun = np.clip(np.sin((hour - 8) / 9 * np.pi), 0, None)
    lines = ["start,pv,both1,c1,c2"]
    for i, ts in enumerate(ep):
        stamp = datetime.fromtimestamp(int(ts), UTC).isoformat()
        pv = int(sun[i] * rng.integers(0, 3000))
        both = int(rng.integers(-400, 300))
        lines.append(f"{stamp},{pv},{both},{rng.integers(0, 500)},{rng.integers(0, 900)}")
    return parse("\n".join(lines) + "\n")


def test_simulation_figures_are_the_engine_summed_by_local_month() -> None:
    data = _three_days()
    keys = [("hybrid", PRESETS["hybrid"]), ("fixed-specific", PRESETS["fixed-specific"])]
    result = sim.simulate(OP, data, keys)
    assert result.months == ["2025-01", "2025-02"]
    feb = int(np.argmax(data.epoch >= epoch("2025-02-01T00:00:00+01:00")))  # 2025-01-31T23:00Z
    for outcome, (label, rounds) in zip(result.outcomes, keys, strict=True):
        res = allocate(
            data.consumption, data.production, rounds, member_ids=data.member_ids, producer_ids=data.producer_ids,
            shares=OP.shares, slots=data.epoch // 900,
        )  # fmt: skip
        assert outcome.label == label
        assert outcome.received.tolist() == [res.allocated[:feb].sum(axis=0).tolist(), res.allocated[feb:].sum(axis=0).tolist()]
        assert outcome.producer_shared.tolist() == [
            res.producer_shared[:feb].sum(axis=0).tolist(),
            res.producer_shared[feb:].sum(axis=0).tolist(),
        ]
    assert result.consumption.sum() == data.consumption.sum() and result.production.sum() == data.production.sum()


def test_default_keys_put_the_operation_first_and_skip_specific_without_shares() -> None:
    labels = [k[0] for k in sim.default_keys(OP)]
    assert labels == ["hybrid", "fixed-equal", "fixed-specific", "prorata", "cascade", "aubange"]
    no_shares = load_community(FIXTURES / "community.toml").operation("ecole")
    labels = [k[0] for k in sim.default_keys(no_shares)]
    assert labels == ["hybrid", "fixed-equal", "prorata", "cascade", "aubange"]  # its rounds are hybrid's


def test_report_and_csv_agree() -> None:
    data = _three_days()
    result = sim.simulate(OP, data, sim.default_keys(OP))
    report = sim.format_report(result, member_months=True)
    for needle in (
        "Whole period",
        "Sharing rate by month",
        "2025-02",
        "Energy received per member",
        "Self-sufficiency per member and month — aubange",
        "both1",
    ):
        assert needle in report
    rows = list(csv.DictReader(io.StringIO(sim.format_csv(result))))
    assert len(rows) == 6 * (1 + 4) * 3  # keys × (operation + members) × (2 months + total)
    for key in ("hybrid", "prorata"):
        op_rows = {r["period"]: r for r in rows if r["key"] == key and r["scope"] == "operation"}
        assert int(op_rows["total"]["received_wh"]) == int(op_rows["2025-01"]["received_wh"]) + int(op_rows["2025-02"]["received_wh"])
        members = [r for r in rows if r["key"] == key and r["scope"] == "member" and r["period"] == "total" and r["received_wh"]]
        assert sum(int(r["received_wh"]) for r in members) == int(op_rows["total"]["shared_wh"])
        pv = next(r for r in rows if r["key"] == key and r["id"] == "pv" and r["period"] == "total")
        assert pv["consumption_wh"] == "" and int(pv["injection_wh"]) == int(pv["shared_wh"]) + int(pv["to_grid_wh"])
        total = op_rows["total"]
        assert float(total["sharing_rate"]) == pytest.approx(int(total["shared_wh"]) / int(total["injection_wh"]), abs=1e-6)


def test_chart_is_a_png(tmp_path: Path) -> None:
    result = sim.simulate(OP, _three_days(), sim.default_keys(OP)[:3])
    out = tmp_path / "keys.png"
    sim.write_chart(result, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_chart_without_matplotlib_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = sim.simulate(OP, _three_days(), sim.default_keys(OP)[:1])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(sim.ChartUnavailable, match=r"pip install 'quartier\[charts\]'"):
        sim.write_chart(result, tmp_path / "x.png")


def test_progress_bar_draws_each_percent_once() -> None:
    out = io.StringIO()
    bar = sim.ProgressBar(out, width=10)
    for done in range(0, 201):
        bar(done, 200, "aubange")
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 101 and "[##########] 100% aubange" in text and text.endswith("\n")


# --- the command ------------------------------------------------------------------------------


def test_generate_example_and_simulate_a_year(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert services_cli(["simulate", "--generate-example", str(tmp_path)]) == 0
    assert "next: quartier simulate --operation" in capsys.readouterr().err
    toml_path, csv_path = tmp_path / "operation.toml", tmp_path / "year.csv"
    with csv_path.open() as fh:
        assert sum(1 for _ in fh) == 35040 + 1
    chart, table = tmp_path / "keys.png", tmp_path / "keys.csv"
    code = services_cli(["simulate", "--operation", str(toml_path), "--data", str(csv_path), "--csv", str(table), "--chart", str(chart)])
    assert code == 0
    captured = capsys.readouterr()
    assert "35040 quarter-hours, 2025-01-01 00:00 to 2026-01-01 00:00 (Europe/Brussels)" in captured.out
    assert "2025-12" in captured.out and "aubange" in captured.out
    assert "[####" not in captured.err  # stderr is not a terminal here: no bar unless asked
    assert chart.read_bytes()[:4] == b"\x89PNG"
    with table.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 * (1 + 20) * 13
    ops = [r for r in rows if r["scope"] == "operation" and r["period"] == "total"]
    assert len({r["shared_wh"] for r in ops}) > 1  # keys differ
    assert all(0 < float(r["sharing_rate"]) <= 1 and 0 < float(r["self_sufficiency"]) <= 1 for r in ops)


def test_simulate_keys_csv_to_stdout_and_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.csv"
    path.write_text("start,pv,both1,c1,c2\n2025-06-01T12:00:00Z,800,-100,300,400\n2025-06-01T12:15:00Z,600,50,300,400\n")
    code = services_cli(
        [
            "simulate",
            "--operation",
            str(FIXTURES / "sim_operation.toml"),
            "--data",
            str(path),
            "--keys",
            "aubange",
            "equal,prorata",
            "--csv",
            "-",
            "--progress",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert {r["key"] for r in rows} == {"aubange", "equal,prorata"}
    assert "100%" in captured.err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--keys", "fair"], "--keys: unknown key or preset 'fair'"),
        (["--keys", "equal,equal,equal,prorata"], "at most 3"),
        (["--operation", str(FIXTURES / "community.toml")], "several operations"),
        (
            ["--operation", str(FIXTURES / "community.toml"), "--op", "ecole", "--keys", "fixed-specific"],
            "no member of 'ecole' has a share",
        ),
        (["--data", "/nonexistent/d.csv"], "cannot read /nonexistent/d.csv"),
    ],
)
def test_simulate_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text("start,pv,both1,c1,c2\n2025-06-01T12:00:00Z,800,-100,300,400\n")
    base = {"--operation": str(FIXTURES / "sim_operation.toml"), "--data": str(path)}
    for flag in ("--operation", "--data"):
        if flag in argv:
            base.pop(flag)
    full = ["simulate", *[x for kv in base.items() for x in kv], *argv]
    assert services_cli(full) == 2
    err = capsys.readouterr().err
    assert err.startswith("quartier simulate: ") and words in err and err.count("\n") == 1


def test_simulate_needs_operation_and_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert services_cli(["simulate"]) == 2
    assert "--operation FILE and --data FILE.csv are required" in capsys.readouterr().err


def test_simulate_chart_without_matplotlib(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim, "charts_available", lambda: False)
    path = tmp_path / "d.csv"
    path.write_text("start,pv,both1,c1,c2\n2025-06-01T12:00:00Z,800,-100,300,400\n")
    code = services_cli(
        ["simulate", "--operation", str(FIXTURES / "sim_operation.toml"), "--data", str(path), "--chart", str(tmp_path / "c.png")]
    )
    assert code == 2
    assert "pip install 'quartier[charts]'" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


# --- the example generator --------------------------------------------------------------------


def test_generator_profiles_cover_the_example_members() -> None:
    op = load_community(make_year.OPERATION_TOML).operation()
    assert list(make_year.PROFILES) == [m.id for m in op.members]
    for m in op.members:
        _, kwh, kwp = make_year.PROFILES[m.id]
        assert (kwp > 0) == m.produces, m.id
        assert (kwh > 0) == m.receives, m.id


def test_generated_year_is_deterministic_and_plausible() -> None:
    op = load_community(make_year.OPERATION_TOML).operation()
    ep, cols = make_year.generate(op, seed=1)
    _, cols2 = make_year.generate(op, seed=1)
    assert ep.size == 35040 and all(np.array_equal(cols[k], cols2[k]) for k in cols)
    yearly_wh = make_year.YIELD_KWH_PER_KWP * 40 * 1000  # the hangar's 40 kWp
    assert cols["hangar"].min() >= 0 and 0.9 * yearly_wh < cols["hangar"].sum() < 1.05 * yearly_wh
    assert cols["boulangerie"].min() >= 0 and abs(cols["boulangerie"].sum() - 24_000_000) < 24_000
    assert (cols["m01"] < 0).any() and (cols["m01"] > 0).any()  # a prosumer both imports and injects
    night = (ep % 86400) == 0  # 01:00 or 02:00 local: no sun
    assert cols["hangar"][night].max() == 0


def test_make_year_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert make_year.main([str(tmp_path), "--seed", "4", "--year", "2024"]) == 0
    assert "year.csv" in capsys.readouterr().out
    with (tmp_path / "year.csv").open() as fh:
        assert sum(1 for _ in fh) == 35136 + 1  # 2024 is a leap year

"""The JSON contract of ``quartier allocate``: in-process, and through the real command."""

from __future__ import annotations

import argparse
import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from services import cli
from services.allocation import AllocationInputError, handle_request, parse_request

FIXTURES = Path(__file__).parent / "fixtures" / "allocation"
REQUEST = json.loads((FIXTURES / "request.json").read_text())
RESPONSE = json.loads((FIXTURES / "response.json").read_text())
ROOT = Path(__file__).resolve().parents[1]


def services_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="quartier")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_hand_computed_response() -> None:
    # the aubange case of test_allocation_presets, plus a night quarter-hour in which only a and f
    # consume: no pool, so sharing_rate is null and self-sufficiency 0; totals from summed volumes
    # (self-sufficiency 2400 / 4030)
    assert handle_request(REQUEST) == RESPONSE


def test_rounds_equal_to_the_preset_give_the_same_answer() -> None:
    req = copy.deepcopy(REQUEST)
    del req["preset"]
    req["rounds"] = ["equal", "equal", "prorata"]
    assert handle_request(req) == RESPONSE


def test_members_list_adds_participants_and_settings_apply() -> None:
    req = {
        "rounds": ["equal"],
        "members": ["a", "b", "c"],
        "settings": {"first_round": "short"},
        "quarter_hours": [{"start": "2025-01-01T12:00:00Z", "production_wh": {"p": 900}, "consumption_wh": {"a": 1000}}],
    }
    out = handle_request(req)
    assert out["quarter_hours"][0]["allocated_wh"] == {"a": 900, "b": 0, "c": 0}
    req["settings"] = {}
    out = handle_request(req)
    assert out["quarter_hours"][0]["allocated_wh"] == {"a": 300, "b": 0, "c": 0}
    assert out["quarter_hours"][0]["to_grid_wh"] == 600


def test_producer_member_appears_in_both_maps() -> None:
    req = {
        "rounds": ["prorata"],
        "quarter_hours": [{"start": "2025-01-01T12:00:00Z", "production_wh": {"m": 500}, "consumption_wh": {"m": 300, "n": 100}}],
    }
    qh = handle_request(req)["quarter_hours"][0]
    assert qh["allocated_wh"] == {"m": 300, "n": 100}
    assert qh["by_producer"] == {"m": {"shared_wh": 400, "to_grid_wh": 100}}
    req["settings"] = {"own_injection": "excluded"}
    qh = handle_request(req)["quarter_hours"][0]
    assert qh["allocated_wh"] == {"m": 0, "n": 100}


def test_integral_floats_are_whole_wh() -> None:
    req = {
        "rounds": ["equal"],
        "quarter_hours": [{"start": "2025-01-01T12:00:00Z", "production_wh": {"p": 10.0}, "consumption_wh": {"a": 4.0}}],
    }
    assert handle_request(req)["totals"]["allocated_wh"] == {"a": 4}


def test_empty_period() -> None:
    out = handle_request({"preset": "prorata", "quarter_hours": []})
    assert out == {
        "quarter_hours": [],
        "totals": {
            "allocated_wh": {},
            "to_grid_wh": 0,
            "by_producer": {},
            "pool_wh": 0,
            "shared_wh": 0,
            "sharing_rate": None,
            "self_sufficiency": None,
        },
    }


def _qh(**kw):
    base = {"start": "2025-01-01T12:00:00Z", "production_wh": {"p": 100}, "consumption_wh": {"a": 50, "b": 70}}
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("request_", "field", "words"),
    [
        ({"rounds": ["equal", "fair"], "quarter_hours": []}, "rounds[1]", "unknown key 'fair'"),
        ({"rounds": ["equal"] * 4, "quarter_hours": []}, "rounds", "at most 3"),
        ({"rounds": [], "quarter_hours": []}, "rounds", "at least one"),
        ({"rounds": "equal", "quarter_hours": []}, "rounds", "list"),
        ({"preset": "fair", "quarter_hours": []}, "preset", "unknown preset"),
        ({"preset": "aubange", "rounds": ["equal"], "quarter_hours": []}, "preset", "not both"),
        ({"quarter_hours": []}, "rounds", "missing"),
        ({"rounds": ["specific"], "shares": {"a": 0.6, "b": 0.5}, "quarter_hours": [_qh()]}, "shares", "more than 100%"),
        ({"rounds": ["specific"], "shares": {"a": 0.6}, "quarter_hours": [_qh()]}, "shares.b", "missing"),
        ({"rounds": ["specific"], "shares": {"a": "half", "b": 0.1}, "quarter_hours": [_qh()]}, "shares.a", "number"),
        ({"rounds": ["equal"], "quarter_hours": [_qh(consumption_wh={"a": -5})]}, "quarter_hours[0].consumption_wh.a", "negative energy"),
        (
            {"rounds": ["equal"], "quarter_hours": [_qh(), _qh(production_wh={"p": -1})]},
            "quarter_hours[1].production_wh.p",
            "negative energy",
        ),
        ({"rounds": ["equal"], "quarter_hours": [_qh(consumption_wh={"a": 1.5})]}, "quarter_hours[0].consumption_wh.a", "whole number"),
        ({"rounds": ["equal"], "quarter_hours": [_qh(consumption_wh={"a": True})]}, "quarter_hours[0].consumption_wh.a", "whole number"),
        ({"rounds": ["equal"], "quarter_hours": [_qh(start="yesterday")]}, "quarter_hours[0].start", "ISO 8601"),
        (
            {"rounds": ["equal"], "quarter_hours": [{"start": "2025-01-01T00:00Z", "consumption_wh": {}}]},
            "quarter_hours[0].production_wh",
            "missing",
        ),
        ({"rounds": ["equal"], "quarter_hours": [_qh(extra=1)]}, "quarter_hours[0].extra", "unknown field"),
        ({"rounds": ["equal"], "quarter_hours": "all"}, "quarter_hours", "not a list"),
        ({"rounds": ["equal"], "quarter_hours": [], "round": 1}, "round", "unknown field"),
        ({"rounds": ["equal"], "settings": {"prorata_base": "x"}, "quarter_hours": []}, "settings.prorata_base", "unknown setting"),
        ({"rounds": ["equal"], "settings": {"later_rounds": "some"}, "quarter_hours": []}, "settings.later_rounds", "'short' or 'all'"),
        ({"rounds": ["equal"], "members": ["a"], "quarter_hours": [_qh()]}, "quarter_hours[0].consumption_wh.b", "not in members"),
        ([1, 2], "request", "expected an object"),
    ],
)
def test_invalid_requests_name_the_field(request_: object, field: str, words: str) -> None:
    with pytest.raises(AllocationInputError) as exc:
        handle_request(request_)
    assert exc.value.field == field
    assert words in str(exc.value)


def test_parse_request_builds_aligned_arrays() -> None:
    req = parse_request(REQUEST)
    assert req.member_ids == ("a", "b", "c", "d", "e", "f") and req.producer_ids == ("p1", "p2")
    assert req.consumption.tolist() == [[100, 300, 0, 500, 1000, 2000], [50, 0, 0, 0, 0, 80]]
    assert req.rounds == ("equal", "equal", "prorata")


# --- the command ------------------------------------------------------------------------------


def test_cli_reads_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert services_cli(["allocate", str(FIXTURES / "request.json")]) == 0
    assert json.loads(capsys.readouterr().out) == RESPONSE


def test_cli_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(REQUEST)))
    assert services_cli(["allocate", "-", "--pretty"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == RESPONSE and out.startswith("{\n  ")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"rounds": ["equal", "equal", "prorata", "equal"], "quarter_hours": []}', "rounds: 4 rounds given"),
        ("{not json", "input is not valid JSON"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, text: str, words: str
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert services_cli(["allocate"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("quartier allocate: ") and words in captured.err
    assert captured.err.count("\n") == 1


def test_cli_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert services_cli(["allocate", str(tmp_path / "nope.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _quartier(args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_real_command_contract() -> None:
    done = _quartier(["allocate", "-"], json.dumps(REQUEST))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == RESPONSE


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"rounds": ["equal", "bogus"], "quarter_hours": []}, "rounds[1]"),
        ({"rounds": ["specific"], "shares": {"a": 0.8, "b": 0.8}, "quarter_hours": [_qh()]}, "shares"),
        ({"rounds": ["equal"], "quarter_hours": [_qh(consumption_wh={"a": -1})]}, "quarter_hours[0].consumption_wh.a"),
        ({"rounds": ["equal", "equal", "prorata", "prorata"], "quarter_hours": []}, "rounds"),
    ],
)
def test_real_command_refuses_with_status_2_and_one_line(request_: object, field: str) -> None:
    done = _quartier(["allocate"], json.dumps(request_))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"quartier allocate: {field}: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_engine_and_simulation_import_no_network_or_chart_code() -> None:
    code = (
        "import sys, services.allocation, services.community.simulate, services.cli;"
        "bad = [m for m in sys.modules if m.split('.')[0] in"
        " ('asyncio', 'paho', 'fastapi', 'starlette', 'uvicorn', 'httpx', 'influxdb_client', 'matplotlib')];"
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""

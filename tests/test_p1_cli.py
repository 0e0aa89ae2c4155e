"""`quartier p1 decode`: the JSON-lines contract installers and scripts rely on; and `import p1`
staying light (no pyserial, pydantic, numpy or asyncio at import time)."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from p1 import cli
from p1.render import telegram_text, value_json
from p1.telegram import ObisValue
from tests.test_p1_samples import VERDICT, manifest

ROOT = Path(__file__).parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "p1"
NAMES = sorted(p.name for p in FIXTURES.glob("*.txt"))



def run_decode(argv: list[str], stdin: bytes = b"", capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, list[dict]]:
    """Run the handler as `quartier p1 decode` would, in-process (no global logging set-up)."""
    parser = argparse.ArgumentParser(prog="quartier")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["p1", "decode", *argv])
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        status = args.func(args)
    finally:
        sys.stdin = old_stdin
    assert capsys is not None
    out = capsys.readouterr().out
    return status, [json.loads(line, parse_float=Decimal) for line in out.splitlines()]


def test_decode_file_with_every_sample_and_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream = tmp_path / "capture.bin"
    stream.write_bytes(b"\x00\xffboot noise\r\n" + b"garbage!\r\n".join((FIXTURES / n).read_bytes() for n in NAMES))
    status, lines = run_decode([str(stream)], capsys=capsys)
    assert status == 0
    assert len(lines) == len(NAMES)
    expected = manifest()
    for name, obj in zip(NAMES, lines):
        assert set(obj) >= {"crc_ok", "header", "values", "errors"}
        assert obj["crc_ok"] is VERDICT[expected[name]], name
        assert obj["header"] == (FIXTURES / name).read_bytes().split(b"\r\n")[0].decode()
        if obj["crc_ok"] is False:
            assert obj["values"] == {} and obj["errors"]
        else:
            assert obj["values"] and obj["errors"] == []


def test_decode_json_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    data = b"".join((FIXTURES / n).read_bytes() for n in (
        "be_emucs_fluvius_v171_invalid_peak_ts.txt", "nl_dsmr50_iskra_am550_two_mbus.txt", "nl_dsmr30_iskra_mt382_hex_text_no_crc.txt"))
    status, (be, nl, v3) = run_decode(["-"], stdin=data, capsys=capsys)
    assert status == 0
    values = be["values"]
    assert values["1-0:1.8.1"] == {"value": Decimal("301.548"), "unit": "kWh"}
    assert values["0-0:1.0.0"] == {"time": "2023-11-02T12:15:48+01:00"}
    assert values["1-0:1.6.0"] == {"value": Decimal("3.064"), "unit": "kW", "time": "2023-11-02T11:45:00+01:00"}
    assert values["0-0:96.1.1"] == {"text": "1SAG3100721326"}
    assert values["0-0:96.14.0"] == {"value": 1}
    history = values["0-0:98.1.0"]["entries"]
    assert history[0]["time"] is None and "632525252525W" in history[0]["invalid"]
    assert history[1] == {"time": "2023-08-31T18:15:00+02:00", "value": Decimal("1.862"), "unit": "kW", "period_end": "2023-09-01T00:00:00+02:00"}
    assert values["0-1:24.2.3"] == {"value": Decimal("92.287"), "unit": "m3", "time": "2023-11-02T12:10:02+01:00"}
    assert be["dialect"] == "e-MUCS H" and be["version"] == "50217"
    dead = nl["values"]["0-1:24.2.1"]
    assert "value" not in dead and "without unit" in dead["invalid"]
    assert nl["values"]["1-0:99.97.0"]["entries"] == [{"time": "2019-03-26T09:50:15+01:00", "value": 2014, "unit": "s"}]
    assert v3["crc_ok"] is None
    assert v3["values"]["0-1:24.3.0"] == {"value": Decimal("1.001"), "unit": "m3", "time": "2009-02-12T16:00:00+01:00"}
    assert v3["values"]["0-0:96.13.0"]["text"].startswith("0123456789:;<=>?")


def test_decimal_numbers_are_written_exactly() -> None:
    assert value_json(ObisValue(Decimal("1234.567"), "kWh", raw="x")) == '{"value": 1234.567, "unit": "kWh"}'
    assert value_json(ObisValue(Decimal("1E-7"), None, raw="x")) == '{"value": 0.0000001}'
    assert value_json(ObisValue(Decimal("0.000"), "kW", raw="x")) == '{"value": 0.000, "unit": "kW"}'
    assert value_json(ObisValue(raw="1-0:99.1.0(a)(b)")) == '{"raw": "1-0:99.1.0(a)(b)"}'


def test_decode_reports_user_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="quartier p1 decode: FILE .*no such file"):
        run_decode([str(tmp_path / "missing.bin")], capsys=capsys)
    with pytest.raises(SystemExit, match="is a directory"):
        run_decode([str(tmp_path)], capsys=capsys)
    status, lines = run_decode(["-"], stdin=b"no telegram in here", capsys=capsys)
    assert status == 1 and lines == []


def test_quartier_p1_decode_end_to_end() -> None:
    data = (FIXTURES / "be_emucs_fluvius_13month_peak_history.txt").read_bytes() * 3
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "p1", "decode", "-"], input=data, capture_output=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 3 and len(set(lines)) == 1
    assert '"1-0:1.8.1": {"value": 9087.306, "unit": "kWh"}' in lines[0]
    assert len(json.loads(lines[0])["values"]["0-0:98.1.0"]["entries"]) == 13
    assert b"Traceback" not in proc.stderr
    missing = subprocess.run([sys.executable, "-m", "gateway.cli", "p1", "decode", "/no/such/file"], capture_output=True, cwd=ROOT, timeout=60, check=False)
    assert missing.returncode == 1 and b"no such file" in missing.stderr and b"Traceback" not in missing.stderr


def test_readable_form_names_each_line() -> None:
    from p1 import parse_telegram

    text = telegram_text(parse_telegram((FIXTURES / "nl_dsmr50_iskra_am550_two_mbus.txt").read_bytes()))
    assert text.splitlines()[0].startswith("2020-04-26T22:33:25+02:00  /ISK5\\2M550T-1012  DSMR 5.0 50  CRC ok")
    assert "voltage L3" in text and "222.9 V" in text
    assert "INVALID" in text  # the dead MBus channel says so


def test_import_p1_stays_light() -> None:
    code = (
        "import sys, resource, p1, p1.cli\n"
        "heavy = [m for m in ('serial', 'pydantic', 'numpy', 'asyncio', 'dsmr_parser', 'p1.serial_reader') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"

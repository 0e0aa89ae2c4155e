"""Decoding rules (timestamps, hex text, invalid placeholders, unknown and damaged lines) and the
promise that no input makes the decoder raise: properties over random bytes and mutated telegrams."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p1 import Dialect, Telegram, check, crc16, parse_telegram
from p1.decode import hex_text
from p1.render import telegram_json
from p1.timestamps import eu_offset, parse_timestamp

FIXTURES = Path(__file__).parent / "fixtures" / "p1"
SAMPLES = [p.read_bytes() for p in sorted(FIXTURES.glob("*.txt"))]
WITH_CRC = [s for s in SAMPLES if parse_telegram(s).crc_ok is True]
NO_CRC = [s for s in SAMPLES if parse_telegram(s).crc_ok is None]
SUMMER = timezone(timedelta(hours=2))
WINTER = timezone(timedelta(hours=1))


def telegram(body: str, header: str = "/TST5\\2TEST-METER", crc: bool = True) -> bytes:
    """Build a telegram around ``body`` lines, with a correct CRC (or none)."""
    text = f"{header}\r\n\r\n" + "".join(line + "\r\n" for line in body.splitlines()) + "!"
    data = text.encode("latin-1")
    return data + (f"{crc16(data):04X}\r\n".encode() if crc else b"\r\n")


# -- timestamps ------------------------------------------------------------------------------------


def test_timestamp_flags_give_fixed_offsets() -> None:
    assert parse_timestamp("240708200756S") == (datetime(2024, 7, 8, 20, 7, 56, tzinfo=SUMMER), None)
    assert parse_timestamp("240101000000W") == (datetime(2024, 1, 1, tzinfo=WINTER), None)
    assert parse_timestamp("150701190000s")[0] == datetime(2015, 7, 1, 19, tzinfo=SUMMER)
    assert parse_timestamp("240708200756S")[0].utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("632525252525W", "not a date"),  # Fluvius: no peak recorded that month
        ("000101000001W", "not set"),  # Kaifa: clock default
        ("700101010000W", "not set"),  # dead MBus channel: the Unix epoch
        ("240708200756X", "S/W flag"),
        ("24070820075S", "YYMMDDhhmmss"),
        ("2407082007a6S", "YYMMDDhhmmss"),
        ("", "YYMMDDhhmmss"),
    ],
)
def test_invalid_timestamps_give_a_reason_not_a_time(text: str, reason: str) -> None:
    time, why = parse_timestamp(text)
    assert time is None and reason in why


def test_timestamps_without_flag_follow_the_eu_summer_time_rule() -> None:
    assert parse_timestamp("240331015959")[0].utcoffset() == timedelta(hours=1)  # last Sunday of March
    assert parse_timestamp("240331030000")[0].utcoffset() == timedelta(hours=2)
    assert parse_timestamp("241027013000")[0].utcoffset() == timedelta(hours=2)
    assert parse_timestamp("241027030000")[0].utcoffset() == timedelta(hours=1)  # last Sunday of October
    assert eu_offset(datetime(2023, 3, 26, 2, 30)) == SUMMER  # the skipped hour is read as summer
    assert eu_offset(datetime(2023, 3, 25, 12, 0)) == WINTER


# -- values ----------------------------------------------------------------------------------------


def test_hex_text_decodes_only_printable_text() -> None:
    assert hex_text("3153414733313031303231363035") == "1SAG3101021605"
    assert hex_text("48656C6C6F0D0A776F726C64") == "Hello\r\nworld"  # line breaks allowed in messages
    assert hex_text("00000000000000") == "00000000000000"  # NULs: kept as written
    assert hex_text("621848012D2C0B0C") == "621848012D2C0B0C"
    assert hex_text("ABC") == "ABC" and hex_text("") == ""
    assert hex_text("C3A9") == "C3A9"  # not ASCII


def test_number_forms_keep_exact_decimals_and_integer_codes() -> None:
    v = parse_telegram(telegram("1-0:1.8.1(009087.306*kWh)\n0-0:96.14.0(0002)\n1-0:31.7.0(002*A)\n1-0:13.7.0(0.998)")).values
    assert v["1-0:1.8.1"].value == Decimal("9087.306") and str(v["1-0:1.8.1"].value) == "9087.306"
    assert v["0-0:96.14.0"].value == 2 and type(v["0-0:96.14.0"].value) is int
    assert v["1-0:31.7.0"].value == Decimal(2) and v["1-0:31.7.0"].unit == "A"
    assert v["1-0:13.7.0"].value == Decimal("0.998") and v["1-0:13.7.0"].unit is None


def test_unknown_obis_lines_are_kept_never_a_crash() -> None:
    t = parse_telegram(telegram(
        "1-0:99.1.0(230101000000W)(1)(2)(3)\n"  # unknown, several groups: raw only
        "1-0:157.7.0(00.123*kW)\n"  # unknown but numeric: decoded by shape
        "0-0:96.50.68(ON)\n"  # unknown text
        "1-0:1.8.1(000001.000*kWh)"
    ))
    assert t.errors == [] and t.crc_ok is True
    raw = t.values["1-0:99.1.0"]
    assert raw.raw == "1-0:99.1.0(230101000000W)(1)(2)(3)" and raw.value is None and raw.text is None
    assert (t.values["1-0:157.7.0"].value, t.values["1-0:157.7.0"].unit) == (Decimal("0.123"), "kW")
    assert t.values["0-0:96.50.68"].text == "ON"


def test_damaged_lines_are_reported_and_the_rest_decoded() -> None:
    t = parse_telegram(telegram(
        "1-0:1.8.1(00012a.456*kWh)\n"  # not a number on a register
        "noise without parenthesis\n"
        "(00001.001)\n"  # a value line with no reference before it
        "1-0:1.8.2(000002.000*kWh)\n"
        "(00001.001)\n"  # a value line after a reference that takes none
        "1-0:1.8.2(000003.000*kWh)\n"  # repeated
        "0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(230101000000W)(221230114500W)(13.603*kW)\n"  # one entry short
        "0-1:24.2.1(230101000000W)\n"  # timed line with a single group
        "1-0:2.8.1(1*)\n"  # empty unit
    ))
    assert t.crc_ok is True
    assert t.values["1-0:1.8.2"].value == Decimal("2.000")  # the first occurrence is kept
    assert t.values["1-0:1.8.1"].value is None and t.values["1-0:1.8.1"].raw == "1-0:1.8.1(00012a.456*kWh)"
    assert t.values["0-0:98.1.0"].entries is None
    joined = "\n".join(t.errors)
    for expected in ("is not a number", "not an OBIS line", "without a reference", "takes none", "repeated", "2 entries announced", "(time)(value*unit) expected", "empty unit"):
        assert expected in joined
    assert len(t.errors) == 8


def test_mbus_reading_and_peak_with_their_own_time() -> None:
    t = parse_telegram(telegram(
        "0-0:1.0.0(240708200756S)\n"
        "0-3:24.1.0(007)\n0-3:96.1.1(3853414731323334353637383930)\n0-3:24.2.1(240708200500S)(00123.456*m3)\n"
        "0-4:24.1.0(003)\n0-4:24.2.1(700101010000W)(00000000)\n"
        "1-0:1.6.0(240707191500S)(01.811*kW)"
    ))
    water, dead = t.mbus_devices()
    assert (water.channel, water.device_type, water.equipment_id) == (3, 7, "8SAG1234567890")
    assert (water.value, water.unit, water.time) == (Decimal("123.456"), "m3", datetime(2024, 7, 8, 20, 5, tzinfo=SUMMER))
    assert dead.channel == 4 and dead.value is None and dead.invalid
    peak = t.values["1-0:1.6.0"]
    assert (peak.value, peak.time) == (Decimal("1.811"), datetime(2024, 7, 7, 19, 15, tzinfo=SUMMER))
    assert t.timestamp == datetime(2024, 7, 8, 20, 7, 56, tzinfo=SUMMER)


def test_legacy_mbus_value_on_the_same_line_or_missing() -> None:
    same = parse_telegram(telegram("0-1:24.3.0(090212160000)(00)(60)(1)(0-1:24.2.1)(m3)(00001.001)", crc=False))
    assert same.values["0-1:24.3.0"].value == Decimal("1.001") and same.values["0-1:24.3.0"].unit == "m3"
    missing = parse_telegram(telegram("0-1:24.3.0(090212160000)(00)(60)(1)(0-1:24.2.1)(m3)\n0-1:24.4.0(1)", crc=False))
    assert missing.values["0-1:24.3.0"].value is None
    assert any("0-1:24.3.0" in e for e in missing.errors)
    assert missing.values["0-1:24.4.0"].value == 1


def test_version_fields_are_never_hex_decoded() -> None:
    t = parse_telegram(telegram("0-0:96.1.4(5021)\n1-0:1.8.1(000001.000*kWh)"))
    assert t.values["0-0:96.1.4"].text == "5021"  # as hex it would read "P!"
    assert (t.dialect, t.version) == (Dialect.EMUCS, "5021")


def test_dsmr5_telegram_without_crc_is_accepted_but_flagged() -> None:
    t = parse_telegram(telegram("1-3:0.2.8(50)\n0-0:1.0.0(240708200756S)\n1-0:1.8.1(000001.000*kWh)", crc=False))
    assert t.crc_ok is None and t.dialect is Dialect.DSMR50
    assert t.values["1-0:1.8.1"].value == Decimal("1.000")
    assert t.errors == ["DSMR 5.0 telegram (version 50) carries no CRC"]


def test_crc_check_function() -> None:
    good = SAMPLES[0]
    assert check(good) is True
    assert check(good.replace(good[good.rindex(b"!") + 1 : good.rindex(b"!") + 5], b"0000")) is False
    assert check(NO_CRC[0]) is None
    assert check(good.lower()) is False  # contents changed: CRC no longer matches
    lower_crc = good[: good.rindex(b"!") + 1] + good[good.rindex(b"!") + 1 :].lower()
    assert check(lower_crc) is True  # lower-case hex digits are still the CRC
    assert check(b"no telegram") is False
    assert check(b"/X\r\n!GGGG\r\n") is False
    assert crc16(b"123456789") == 0xBB3D  # CRC-16/ARC check value


@pytest.mark.parametrize("data", [b"", b"/", b"!", b"!/", b"/\r\n!", b"/abc", b"xx!12\r\n", b"/x\r\n(0)\r\n!\r\n", b"/x!\r\n"])
def test_degenerate_frames_decode_without_raising(data: bytes) -> None:
    t = parse_telegram(data)
    assert isinstance(t, Telegram) and t.raw == data
    if t.crc_ok is False:
        assert t.values == {}


# -- properties ------------------------------------------------------------------------------------


def assert_well_formed(t: Telegram) -> None:
    assert isinstance(t, Telegram)
    assert t.crc_ok in (True, False, None)
    assert all(isinstance(e, str) for e in t.errors)
    if t.crc_ok is False:
        assert t.values == {} and t.dialect is Dialect.UNKNOWN
    for ref, v in t.values.items():
        assert isinstance(ref, str) and isinstance(v.raw, str)
        assert v.value is None or isinstance(v.value, (int, Decimal))
        assert v.time is None or v.time.utcoffset() in (timedelta(hours=1), timedelta(hours=2))
    line = telegram_json(t)
    decoded = json.loads(line, parse_float=Decimal)
    assert decoded["crc_ok"] is t.crc_ok
    for ref, v in t.values.items():
        if v.value is not None:
            assert decoded["values"][ref]["value"] == v.value  # exact, not through float


@settings(max_examples=400)
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert_well_formed(parse_telegram(data))


@settings(max_examples=400)
@given(st.binary(max_size=1500))
def test_random_bytes_after_a_header_never_raise(body: bytes) -> None:
    assert_well_formed(parse_telegram(b"/ISK5\\2M550T-1012\r\n\r\n" + body + b"\r\n!\r\n"))


mutation = st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate_line", "swap_lines"])


def mutate(data: bytes, kind: str, pos: int, byte: int) -> bytes:
    pos %= max(len(data), 1)
    if kind == "flip":
        return data[:pos] + bytes([byte]) + data[pos + 1 :]
    if kind == "insert":
        return data[:pos] + bytes([byte]) + data[pos:]
    if kind == "delete":
        return data[:pos] + data[pos + 1 :]
    if kind == "truncate":
        return data[:pos]
    lines = data.split(b"\r\n")
    i = pos % len(lines)
    j = byte % len(lines)
    if kind == "duplicate_line":
        return b"\r\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1 :])
    lines[i], lines[j] = lines[j], lines[i]
    return b"\r\n".join(lines)


@settings(max_examples=500)
@given(st.sampled_from(SAMPLES), st.lists(st.tuples(mutation, st.integers(0, 5000), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_real_telegrams_never_raise(data: bytes, mutations: list[tuple[str, int, int]]) -> None:
    for kind, pos, byte in mutations:
        data = mutate(data, kind, pos, byte)
    assert_well_formed(parse_telegram(data))


@settings(max_examples=400)
@given(st.sampled_from(WITH_CRC), st.integers(0, 5000), st.integers(0, 255))
def test_any_changed_byte_before_the_crc_is_caught(data: bytes, pos: int, byte: int) -> None:
    pos %= data.rindex(b"!") + 1
    damaged = data[:pos] + bytes([byte]) + data[pos + 1 :]
    t = parse_telegram(damaged)
    if damaged == data:
        assert t.crc_ok is True
    else:
        assert t.crc_ok is False and t.values == {}


@settings(max_examples=300)
@given(st.sampled_from(NO_CRC), st.lists(st.tuples(mutation, st.integers(0, 5000), st.integers(0, 255)), min_size=1, max_size=3))
def test_mutated_telegrams_without_crc_are_decoded_as_far_as_they_go(data: bytes, mutations: list[tuple[str, int, int]]) -> None:
    for kind, pos, byte in mutations:
        data = mutate(data, kind, pos, byte)
    t = parse_telegram(data)
    assert_well_formed(t)
    if t.crc_ok is None:  # still framed as a no-CRC telegram: whatever survived is decoded
        assert t.values or t.errors or b"(" not in data


def test_only_documented_errors_for_wrong_argument_types() -> None:
    from p1 import Framer

    with pytest.raises(TypeError, match="needs bytes"):
        parse_telegram("/ISK5\r\n!\r\n")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Framer().feed("/ISK5\r\n!\r\n")  # type: ignore[arg-type]
    assert parse_telegram(bytearray(SAMPLES[0])).crc_ok is True


def test_convenience_accessors() -> None:
    t = parse_telegram((FIXTURES / "hu_eon_sag5.txt").read_bytes())
    assert t.equipment_id == "890082200002160"  # this variant has no 96.1.1: 0-0:96.1.0, hex-decoded
    assert t.value("1-0:2.7.0") == Decimal("2.601") and t.value("1-0:9.9.9") is None
    assert t.mbus_devices() == []
    k = parse_telegram((FIXTURES / "nl_dsmr42_kaifa_pflog3.txt").read_bytes())
    assert k.equipment_id == "3960221976967177082151037881335713"

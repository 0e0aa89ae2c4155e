"""The simulated meter: telegram format, energy bookkeeping, solar and tariff model, pty plumbing.

The simulator is what ``quartier demo`` and the daemon's fault tests read, so its telegrams are
checked against a real Fluvius capture line by line, its registers against an independent
integration of its own power model, and its pty against pyserial.
"""

from __future__ import annotations

import itertools
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import crcmod
import numpy as np
import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from demo.pty_meter import PtyMeter, step_for
from demo.meter import MeterSimulator
from p1 import Dialect, parse_telegram

BRUSSELS = ZoneInfo("Europe/Brussels")
CRC16 = crcmod.mkCrcFun(0x18005, rev=True, initCrc=0, xorOut=0)  # CRC16/ARC, independent of p1
LINE = re.compile(r"^(\d+-\d+:\d+\.\d+\.\d+)(.*)$")
FRAME = re.compile(rb"/[^/!]*![0-9A-F]{4}\r\n")

# be_emucs_fluvius_13month_peak_history.txt (a real Fluvius e-MUCS 50217 telegram, CRC B06B; see
# /work/shared/p1-samples/MANIFEST.md), 98.1.0 cut to two of its 13 months
FLUVIUS_SAMPLE = """\
/FLU5\\253769484_A

0-0:96.1.4(50217)
0-0:96.1.1(3153414733313030313338373236)
0-0:1.0.0(240708200756S)
1-0:1.8.1(009087.306*kWh)
1-0:1.8.2(009329.888*kWh)
1-0:2.8.1(005635.639*kWh)
1-0:2.8.2(002258.165*kWh)
0-0:96.14.0(0001)
1-0:1.4.0(00.118*kW)
1-0:1.6.0(240707191500S)(01.811*kW)
0-0:98.1.0(13)(1-0:1.6.0)(1-0:1.6.0)(230701000000S)(230601003000S)(02.680*kW)(230801000000S)(230731200000S)(02.099*kW)
1-0:1.7.0(00.153*kW)
1-0:2.7.0(00.000*kW)
1-0:21.7.0(00.000*kW)
1-0:41.7.0(00.000*kW)
1-0:61.7.0(00.208*kW)
1-0:22.7.0(00.055*kW)
1-0:42.7.0(00.000*kW)
1-0:62.7.0(00.000*kW)
1-0:32.7.0(233.0*V)
1-0:52.7.0(000.0*V)
1-0:72.7.0(233.9*V)
1-0:31.7.0(000.63*A)
1-0:51.7.0(000.75*A)
1-0:71.7.0(001.03*A)
0-0:96.3.10(1)
0-0:17.0.0(999.9*kW)
1-0:31.4.0(999*A)
0-0:96.13.0()
0-1:24.1.0(003)
0-1:96.1.1(37464C4F32313139313532383033)
0-1:24.4.0(1)
0-1:24.2.3(240708200459S)(08538.167*m3)
"""

# nl_dsmr50_iskra_am550_pflog2_export_no_gas.txt (Iskra AM550 DSMR 5.0, CRC E1FA), power failure
# log emptied, plus the gas lines of nl_dsmr50_iskra_mt382.txt (channel 1)
DSMR5_SAMPLE = """\
/ISK5\\2M550T-1013

1-3:0.2.8(50)
0-0:1.0.0(210307123721W)
0-0:96.1.1(4530303534303037343736393431373139)
1-0:1.8.1(002236.186*kWh)
1-0:1.8.2(001755.060*kWh)
1-0:2.8.1(000781.784*kWh)
1-0:2.8.2(001871.581*kWh)
0-0:96.14.0(0001)
1-0:1.7.0(00.000*kW)
1-0:2.7.0(00.662*kW)
0-0:96.7.21(00004)
0-0:96.7.9(00004)
1-0:99.97.0(0)(0-0:96.7.19)
1-0:32.32.0(00003)
1-0:52.32.0(00001)
1-0:72.32.0(00002)
1-0:32.36.0(00001)
1-0:52.36.0(00001)
1-0:72.36.0(00001)
0-0:96.13.0()
1-0:32.7.0(233.7*V)
1-0:52.7.0(233.6*V)
1-0:72.7.0(230.9*V)
1-0:31.7.0(003*A)
1-0:51.7.0(001*A)
1-0:71.7.0(000*A)
1-0:21.7.0(00.000*kW)
1-0:41.7.0(00.213*kW)
1-0:61.7.0(00.076*kW)
1-0:22.7.0(00.900*kW)
1-0:42.7.0(00.000*kW)
1-0:62.7.0(00.000*kW)
0-1:24.1.0(003)
0-1:96.1.0(3232323241424344313233343536373839)
0-1:24.2.1(170102161005W)(00000.107*m3)
"""


# -- helpers ---------------------------------------------------------------------------------------


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BRUSSELS)


def crc_ok(telegram: bytes) -> bool:
    bang = telegram.rindex(b"!")
    return telegram[bang + 1 :] == f"{CRC16(telegram[: bang + 1]):04X}\r\n".encode()


def obis(telegram: bytes) -> dict[str, str]:
    """Reference -> the rest of its line, e.g. {"1-0:1.8.1": "(000012.345*kWh)"}."""
    out = {}
    for line in telegram.decode("ascii").split("\r\n"):
        m = LINE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def registers(telegram: bytes) -> tuple[int, int, int, int]:
    """1.8.1, 1.8.2, 2.8.1, 2.8.2 in Wh, read from the text (kWh with 3 decimals = whole Wh)."""
    o = obis(telegram)
    return tuple(int(o[ref][1:-5].replace(".", "")) for ref in ("1-0:1.8.1", "1-0:1.8.2", "1-0:2.8.1", "1-0:2.8.2"))


def kw_to_w(group: str) -> int:
    return int(group.strip("()").removesuffix("*kW").replace(".", ""))


def stamp_to_utc(stamp: str) -> datetime:
    """YYMMDDhhmmss + S (summer, UTC+2) or W (winter, UTC+1) -> UTC."""
    offset = {"S": 2, "W": 1}[stamp[-1]]
    naive = datetime.strptime(stamp[:-1], "%y%m%d%H%M%S")
    return naive.replace(tzinfo=timezone(timedelta(hours=offset))).astimezone(UTC)


def meter_stamp(telegram: bytes) -> str:
    return obis(telegram)["0-0:1.0.0"].strip("()")


def irregular_times(start: datetime, end: datetime, rng: random.Random, max_step_s: int = 180) -> Iterator[datetime]:
    """Times after ``start`` at irregular steps (sub-second fractions included), ``end`` last."""
    t = start
    while t < end:
        t = min(end, t + timedelta(seconds=rng.randint(1, max_step_s), microseconds=rng.randrange(1_000_000)))
        yield t


def walk(sim: MeterSimulator, end: datetime, rng: random.Random, max_step_s: int = 180) -> list[bytes]:
    """Telegrams at irregular times up to and including ``end``."""
    return [sim.telegram_at(t) for t in irregular_times(sim.time, end, rng, max_step_s)]


def integral_wh(sim: MeterSimulator, start: datetime, seconds: int) -> tuple[float, float]:
    """Independent integral of the step-per-second power model: (import Wh, export Wh)."""
    load, pv = sim.power_series(start, seconds)
    net = load - pv
    return float(np.maximum(net, 0).sum() / 3600), float(np.maximum(-net, 0).sum() / 3600)


def shape(text: str) -> str:
    """Digits and hex digits masked: what stays is the line's layout (widths, decimals, units)."""
    return re.sub(r"[0-9A-F]", "9", text)


# -- telegram format -------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["emucs", "dsmr5"])
@pytest.mark.parametrize("phases", [3, 1])
def test_telegram_is_framed_crlf_with_a_valid_crc(dialect, phases):
    sim = MeterSimulator(local(2026, 5, 4, 10, 0), seed=7, dialect=dialect, phases=phases)
    for minute in range(1, 30, 7):
        tel = sim.telegram_at(local(2026, 5, 4, 10, minute, 3))
        assert tel.startswith(b"/") and tel.endswith(b"\r\n")
        assert b"\n" not in tel.replace(b"\r\n", b"") and b"\r" not in tel.replace(b"\r\n", b"")
        assert tel.split(b"\r\n")[1] == b""  # blank line after the header
        assert re.fullmatch(rb"![0-9A-F]{4}\r\n", tel[tel.rindex(b"!") :])
        assert crc_ok(tel)
        assert len(FRAME.findall(tel)) == 1


def test_emucs_lines_match_a_real_fluvius_telegram():
    sim = MeterSimulator(local(2024, 7, 8, 20, 0), seed=3, import_wh=(9_087_306, 9_329_888), export_wh=(5_635_639, 2_258_165))
    tel = sim.telegram_at(local(2024, 7, 8, 20, 7, 56)).decode("ascii")
    ours = tel.split("\r\n")[:-2]  # drop "!CRC" and what follows the last CRLF
    real = FLUVIUS_SAMPLE.split("\n")[:-1]
    history = re.compile(r"0-0:98\.1\.0\((\d+)\)\(1-0:1\.6\.0\)\(1-0:1\.6\.0\)((?:\(\d{12}[SW]\)\(\d{12}[SW]\)\(\d\d\.\d{3}\*kW\))*)")
    assert len(ours) == len(real)
    for mine, theirs in zip(ours, real):
        if mine.startswith("0-0:98.1.0"):  # same layout, another number of months
            count, entries = history.fullmatch(mine).groups()
            assert entries.count("kW") == int(count) == 3
            assert history.fullmatch(theirs)
        else:
            assert shape(mine) == shape(theirs), (mine, theirs)


def test_dsmr5_lines_match_a_real_iskra_telegram():
    sim = MeterSimulator(local(2021, 3, 7, 12, 0), seed=3, dialect="dsmr5")
    tel = sim.telegram_at(local(2021, 3, 7, 12, 37, 21)).decode("ascii")
    ours = tel.split("\r\n")[:-2]
    real = DSMR5_SAMPLE.split("\n")[:-1]
    assert [shape(x) for x in ours[1:]] == [shape(x) for x in real[1:]]
    assert ours[0] == "/ISK5\\2M550T-1012"
    o = obis(tel.encode())
    assert "1-0:1.4.0" not in o and "1-0:1.6.0" not in o and "0-0:98.1.0" not in o


def test_equipment_ids_are_hex_encoded_ascii():
    sim = MeterSimulator(local(2026, 1, 5, 0, 0), meter_id="1SAG3100138726")
    o = obis(sim.telegram_at(local(2026, 1, 5, 0, 0, 1)))
    assert o["0-0:96.1.1"] == "(3153414733313030313338373236)"  # as in the real Fluvius capture
    assert bytes.fromhex(o["0-1:96.1.1"].strip("()")).decode() == sim.gas_id


def test_same_seed_same_bytes_other_seed_other_household():
    times = [local(2026, 4, 2, 8, 0) + timedelta(seconds=37 * i) for i in range(1, 60)]
    a = MeterSimulator(local(2026, 4, 2, 8, 0), seed=11)
    b = MeterSimulator(local(2026, 4, 2, 8, 0), seed=11)
    c = MeterSimulator(local(2026, 4, 2, 8, 0), seed=12)
    ta, tb, tc = ([s.telegram_at(t) for t in times] for s in (a, b, c))
    assert ta == tb
    assert ta != tc


# -- energy bookkeeping ----------------------------------------------------------------------------


def test_registers_are_whole_wh_monotone_and_what_the_telegram_says():
    sim = MeterSimulator(local(2026, 6, 10, 0, 0), seed=2, import_wh=(1_234_567, 7_654_321), export_wh=(42, 0))
    previous = registers(sim.telegram_at(sim.time))
    assert previous == (1_234_567, 7_654_321, 42, 0)
    for t in irregular_times(sim.time, local(2026, 6, 11, 0, 0), random.Random(1)):
        regs = registers(sim.telegram_at(t))
        assert regs == (*sim.import_wh, *sim.export_wh)
        assert all(all(isinstance(x, int) for x in pair) for pair in (sim.import_wh, sim.export_wh))
        assert all(now >= before for now, before in zip(regs, previous))
        previous = regs


@pytest.mark.parametrize("day", [local(2026, 1, 14), local(2026, 6, 20), local(2026, 3, 29), local(2026, 10, 25)])
def test_register_deltas_equal_the_integral_of_power_within_1_wh(day):
    sim = MeterSimulator(day, seed=5)
    start_regs = registers(sim.telegram_at(day))
    seconds = int((day + timedelta(days=1) - day).total_seconds())  # 23 h and 25 h on DST days
    end = day.astimezone(UTC) + timedelta(seconds=seconds)
    walk(sim, end, random.Random(day.toordinal()))
    regs = registers(sim.telegram_at(end))
    imp_delta = regs[0] + regs[1] - start_regs[0] - start_regs[1]
    exp_delta = regs[2] + regs[3] - start_regs[2] - start_regs[3]
    imp, exp = integral_wh(sim, day, seconds)
    assert abs(imp_delta - imp) < 1.0 + 1e-6
    assert abs(exp_delta - exp) < 1.0 + 1e-6
    assert sim.exact_import_wh == pytest.approx(imp, abs=1e-6)
    assert sim.exact_export_wh == pytest.approx(exp, abs=1e-6)
    assert imp > 1000  # a real day's consumption, not an empty model


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    start_s=st.integers(0, 365 * 86400),
    steps_us=st.lists(st.integers(0, 3600 * 1_000_000), min_size=1, max_size=20),
)
def test_registers_never_decrease_and_keep_every_fraction(seed, start_s, steps_us):
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=start_s)
    sim = MeterSimulator(start, seed=seed, pv_kwp=6.0)
    t, before, stamp_before = start, registers(sim.telegram_at(start)), stamp_to_utc(meter_stamp(sim.telegram_at(start)))
    for step in steps_us:
        t += timedelta(microseconds=step)
        tel = sim.telegram_at(t)
        regs = registers(tel)
        assert all(now >= prev for now, prev in zip(regs, before))
        stamp = stamp_to_utc(meter_stamp(tel))
        assert stamp >= stamp_before and stamp == t.replace(microsecond=0)
        before, stamp_before = regs, stamp
    # whole Wh booked = floor of the exact integral: no energy lost to rounding
    assert (sim.true_import_wh, sim.true_export_wh) == (regs[0] + regs[1], regs[2] + regs[3])
    assert 0 <= sim.exact_import_wh - (regs[0] + regs[1]) < 1 + 1e-6
    assert 0 <= sim.exact_export_wh - (regs[2] + regs[3]) < 1 + 1e-6


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), cuts=st.lists(st.integers(1, 4 * 3600 - 1), max_size=12))
def test_result_does_not_depend_on_how_often_the_meter_is_read(seed, cuts):
    start = local(2026, 7, 1, 9, 0)
    end = start + timedelta(hours=4)
    direct = MeterSimulator(start, seed=seed)
    stepped = MeterSimulator(start, seed=seed)
    direct.telegram_at(end)
    for cut in sorted(set(cuts)):
        stepped.telegram_at(start + timedelta(seconds=cut))
    stepped.telegram_at(end)
    for a, b in zip((*direct.import_wh, *direct.export_wh), (*stepped.import_wh, *stepped.export_wh)):
        assert abs(a - b) <= 1
    assert direct.gas_dm3 == stepped.gas_dm3
    assert direct.month_peak[0] == stepped.month_peak[0]
    assert abs(direct.month_peak[1] - stepped.month_peak[1]) <= 1


@settings(max_examples=200, deadline=None)
@given(offset=st.integers(0, 86400 * 3 - 1))
def test_power_at_is_the_per_second_series(offset):
    sim = MeterSimulator(local(2026, 10, 24), seed=9)
    load, pv = sim.power_series(local(2026, 10, 24) + timedelta(seconds=offset - 1), 3)
    for k in range(3):
        t = local(2026, 10, 24) + timedelta(seconds=offset - 1 + k, microseconds=k * 333_333)
        assert sim.power_at(t) == pytest.approx((load[k], pv[k]), rel=1e-12, abs=1e-9)


# -- physical model --------------------------------------------------------------------------------


def test_pv_is_zero_at_night_and_positive_at_noon_in_june():
    for sky in ("variable", "overcast", "clear"):
        sim = MeterSimulator(local(2026, 6, 21), seed=4, sky=sky)
        _, pv_night = sim.power_series(local(2026, 6, 21, 0, 0), 4 * 3600)
        assert not pv_night.any()
        _, pv_late = sim.power_series(local(2026, 6, 21, 22, 30), 3600)
        assert not pv_late.any()
        assert sim.power_at(local(2026, 6, 21, 13, 45))[1] > 0


def test_pv_peak_follows_the_season():
    def clear_day_peak(day: datetime) -> float:
        sim = MeterSimulator(day, seed=0, sky="clear", pv_kwp=4.0)
        return float(sim.power_series(day, 86400)[1].max())

    june, december = clear_day_peak(local(2026, 6, 21)), clear_day_peak(local(2026, 12, 21))
    assert june == pytest.approx(0.75 * 4000, rel=0.05)
    assert 0.15 * june < december < 0.6 * june
    sim = MeterSimulator(local(2026, 12, 21), seed=0, sky="clear")
    _, pv = sim.power_series(local(2026, 12, 21), 86400)
    producing = np.nonzero(pv)[0] / 3600  # local hours with production: short winter days
    assert 8.0 < producing[0] < 10.0 and 15.0 < producing[-1] < 17.0


def test_export_on_a_sunny_summer_noon():
    sim = MeterSimulator(local(2026, 6, 24, 11, 0), seed=8, sky="clear", pv_kwp=4.0)
    before = sim.export_wh
    telegrams = walk(sim, local(2026, 6, 24, 15, 0), random.Random(3), max_step_s=30)
    after = sim.export_wh
    assert sum(after) - sum(before) > 3000  # several kWh exported over four sunny hours
    exporting = [kw_to_w(obis(t)["1-0:2.7.0"]) > 0 for t in telegrams]
    assert sum(exporting) > 0.8 * len(exporting)
    # the single-phase inverter feeds L1: L1 exports while L2/L3 never do
    assert any(kw_to_w(obis(t)["1-0:22.7.0"]) > 0 for t in telegrams)
    assert not any(kw_to_w(obis(t)["1-0:42.7.0"]) or kw_to_w(obis(t)["1-0:62.7.0"]) for t in telegrams)


def test_load_has_a_realistic_base_and_daily_shape():
    sim = MeterSimulator(local(2026, 2, 10), seed=1)
    load, _ = sim.power_series(local(2026, 2, 10), 86400)  # a Tuesday
    hourly = load.reshape(24, 3600).mean(axis=1)
    assert 100 < hourly[2:5].mean() < 250  # base load around 150 W at night
    assert hourly[17:22].mean() > 2 * hourly[2:5].mean()  # evening peak
    assert hourly[6:9].mean() > hourly[2:5].mean()  # morning peak
    assert load.max() > 1800  # a kettle, hob or washing machine ran


@pytest.mark.parametrize("annual", [3500.0, 7000.0])
def test_yearly_consumption_follows_the_setting(annual):
    sim = MeterSimulator(local(2026, 1, 1), seed=21, annual_consumption_kwh=annual)
    days = range(0, 365, 13)
    kwh = sum(sim.power_series(local(2026, 1, 1) + timedelta(days=d), 86400)[0].sum() for d in days) / 3.6e6
    assert kwh * 365 / len(days) == pytest.approx(annual, rel=0.10)


# -- tariffs, clocks and DST -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "when", "expected"),
    [
        ("emucs", local(2026, 2, 10, 12, 0), "0001"),  # Tuesday noon: day
        ("emucs", local(2026, 2, 10, 6, 59), "0002"),  # before 07:00: night
        ("emucs", local(2026, 2, 10, 7, 0), "0001"),
        ("emucs", local(2026, 2, 10, 22, 0), "0002"),  # 22:00: night
        ("emucs", local(2026, 2, 14, 12, 0), "0002"),  # Saturday: night all day
        ("dsmr5", local(2026, 2, 10, 12, 0), "0002"),  # NL: 0002 = normal
        ("dsmr5", local(2026, 2, 10, 22, 30), "0002"),
        ("dsmr5", local(2026, 2, 10, 23, 0), "0001"),  # NL: low from 23:00
        ("dsmr5", local(2026, 2, 15, 12, 0), "0001"),  # Sunday: low
    ],
)
def test_tariff_indicator(dialect, when, expected):
    sim = MeterSimulator(when - timedelta(minutes=1), seed=0, dialect=dialect)
    assert obis(sim.telegram_at(when))["0-0:96.14.0"] == f"({expected})"
    assert sim.tariff_at(when) == int(expected)


def test_energy_goes_to_the_register_of_the_tariff():
    sim = MeterSimulator(local(2026, 2, 10, 20, 0), seed=2, pv_kwp=0)
    sim.telegram_at(local(2026, 2, 10, 22, 0))
    day_regs = sim.import_wh
    assert day_regs[0] > 0 and day_regs[1] == 0
    sim.telegram_at(local(2026, 2, 11, 2, 0))
    assert sim.import_wh[0] == day_regs[0] and sim.import_wh[1] > 0


@pytest.mark.parametrize(
    ("utc_start", "hours"),
    [(datetime(2026, 3, 28, 22, 0, tzinfo=UTC), 6), (datetime(2026, 10, 24, 22, 0, tzinfo=UTC), 6)],
)
def test_dst_days_carry_the_summer_winter_flag(utc_start, hours):
    sim = MeterSimulator(utc_start, seed=3)
    flags = []
    for k in range(hours * 60):
        t = utc_start + timedelta(seconds=60 * k + 1)
        tel = sim.telegram_at(t)
        stamp = meter_stamp(tel)
        expected = "S" if t.astimezone(BRUSSELS).dst() else "W"
        assert stamp[-1] == expected
        assert stamp_to_utc(stamp) == t  # the local stamp plus its flag is unambiguous
        gas = obis(tel)["0-1:24.2.3"][1:14]
        gas_t = stamp_to_utc(gas)
        assert gas_t <= t and (gas_t.timestamp() % 300) == 0  # own 5-minute capture stamp
        flags.append(stamp[-1])
    changes = [f"{a}{b}" for a, b in itertools.pairwise(flags) if a != b]
    assert changes == (["WS"] if utc_start.month == 3 else ["SW"])


def test_autumn_repeated_hour_is_stamped_twice_with_different_flags():
    sim = MeterSimulator(datetime(2026, 10, 25, 0, 0, tzinfo=UTC), seed=3)
    first = meter_stamp(sim.telegram_at(datetime(2026, 10, 25, 0, 30, tzinfo=UTC)))
    second = meter_stamp(sim.telegram_at(datetime(2026, 10, 25, 1, 30, tzinfo=UTC)))
    assert first == "261025023000S" and second == "261025023000W"


def test_clock_offset_shifts_the_meter_clock_only():
    start = local(2026, 5, 5, 12, 0)
    sim = MeterSimulator(start, seed=4, clock_offset=timedelta(seconds=-90))
    reference = MeterSimulator(start, seed=4)
    t = start + timedelta(minutes=10)
    tel = sim.telegram_at(t)
    reference.telegram_at(t)
    assert stamp_to_utc(meter_stamp(tel)) == t.astimezone(UTC) - timedelta(seconds=90)
    assert sim.exact_import_wh == pytest.approx(reference.exact_import_wh)  # the house uses the same energy
    sim.clock_offset = timedelta(minutes=5)
    tel = sim.telegram_at(t + timedelta(seconds=10))
    assert stamp_to_utc(meter_stamp(tel)) == t.astimezone(UTC) + timedelta(minutes=5, seconds=10)


def test_time_must_be_aware_and_must_not_go_backwards():
    sim = MeterSimulator(local(2026, 5, 5, 12, 0), seed=4)
    sim.telegram_at(local(2026, 5, 5, 12, 1))
    with pytest.raises(ValueError):
        sim.telegram_at(local(2026, 5, 5, 12, 0, 59))
    with pytest.raises(ValueError):
        sim.telegram_at(datetime(2026, 5, 5, 12, 2))
    with pytest.raises(ValueError):
        MeterSimulator(datetime(2026, 5, 5))
    assert sim.telegram_at(local(2026, 5, 5, 12, 1))  # the same time again is fine


# -- capacity tariff registers and gas -------------------------------------------------------------


def test_quarter_hour_demand_and_month_peak_match_an_independent_computation():
    start = local(2026, 6, 1)  # first of the month: the month's peak is this day's highest quarter
    sim = MeterSimulator(start, seed=6, peak_history_months=0)
    load, pv = sim.power_series(start, 86400)
    imported = np.maximum(load - pv, 0)
    quarter_w = imported.reshape(96, 900).sum(axis=1) / 3600 * 4  # Wh per quarter-hour * 4 = W
    rng = random.Random(4)
    for q in range(96):
        q_start = start + timedelta(minutes=15 * q)
        walk(sim, q_start + timedelta(seconds=450), rng, max_step_s=200)
        o = obis(sim.telegram_at(q_start + timedelta(seconds=450)))
        assert abs(kw_to_w(o["1-0:1.4.0"]) - imported[q * 900 : q * 900 + 450].sum() / 450) <= 1
        peak_q = int(np.argmax(quarter_w[:q])) if q else None
        if peak_q is None:
            assert o["1-0:1.6.0"] == "(260601000000S)(00.000*kW)"
        else:
            assert stamp_to_utc(o["1-0:1.6.0"][1:14]) == start + timedelta(minutes=15 * peak_q)
            assert abs(kw_to_w(o["1-0:1.6.0"][15:]) - quarter_w[peak_q]) <= 1
    sim.telegram_at(start + timedelta(days=1))
    peak_time, peak_w = sim.month_peak
    assert peak_time == start + timedelta(minutes=15 * int(np.argmax(quarter_w)))
    assert abs(peak_w - quarter_w.max()) <= 1


def test_month_change_archives_the_peak_into_the_history():
    sim = MeterSimulator(local(2026, 6, 30, 17, 0), seed=6, peak_history_months=2)
    assert [p.stamp for p in sim.peak_history] == [local(2026, 5, 1), local(2026, 6, 1)]
    sim.telegram_at(local(2026, 6, 30, 23, 59, 59))
    june_peak = sim.month_peak
    assert june_peak[0] is not None and june_peak[1] > 0
    tel = sim.telegram_at(local(2026, 7, 1, 0, 10))
    last = sim.peak_history[-1]
    assert (last.stamp, last.time, last.demand_w) == (local(2026, 7, 1), june_peak[0], june_peak[1])
    o = obis(tel)
    assert o["0-0:98.1.0"].startswith("(3)(1-0:1.6.0)(1-0:1.6.0)(260501000000S)")
    assert o["0-0:98.1.0"].endswith(f"(260701000000S)({june_peak[0].astimezone(BRUSSELS):%y%m%d%H%M%S}S)({june_peak[1] / 1000:06.3f}*kW)")
    assert o["1-0:1.6.0"] == "(260701000000S)(00.000*kW)"  # new month, no quarter-hour closed yet


def test_peak_history_keeps_the_last_13_months():
    sim = MeterSimulator(local(2026, 6, 30, 23, 0), seed=6, peak_history_months=13)
    assert [p.stamp for p in sim.peak_history] == [local(2025, m, 1) for m in range(6, 13)] + [local(2026, m, 1) for m in range(1, 7)]
    tel = sim.telegram_at(local(2026, 7, 1, 0, 20))
    assert [p.stamp for p in sim.peak_history] == [local(2025, m, 1) for m in range(7, 13)] + [local(2026, m, 1) for m in range(1, 8)]
    assert obis(tel)["0-0:98.1.0"].startswith("(13)(1-0:1.6.0)(1-0:1.6.0)(250701000000S)")


def test_gas_is_captured_every_five_minutes():
    sim = MeterSimulator(local(2026, 1, 20, 6, 0), seed=2, gas_dm3=1_234_567)
    seen = set()
    last_value = 1_234_567
    for k in range(1, 3600, 17):
        tel = sim.telegram_at(local(2026, 1, 20, 6, 0) + timedelta(seconds=k))
        stamp, value = re.fullmatch(r"\((\d{12}[SW])\)\((\d{5}\.\d{3})\*m3\)", obis(tel)["0-1:24.2.3"]).groups()
        dm3 = int(value.replace(".", ""))
        assert dm3 >= last_value and dm3 == sim.gas_dm3
        last_value = dm3
        seen.add(stamp)
    assert len(seen) == 12  # one capture per 5 minutes over the hour
    assert last_value > 1_234_567  # a January morning burns gas
    no_gas = MeterSimulator(local(2026, 1, 20, 6, 0), seed=2, gas=False)
    assert b"0-1:" not in no_gas.telegram_at(local(2026, 1, 20, 6, 1))


@pytest.mark.parametrize("annual", [600.0, 1500.0])
def test_yearly_gas_follows_the_setting(annual):
    sim = MeterSimulator(datetime(2026, 1, 1, tzinfo=UTC), seed=3, annual_gas_m3=annual)
    year = sim.gas_used_dm3(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)) / 1000
    assert year == pytest.approx(annual, rel=0.1)
    january = sim.gas_used_dm3(local(2026, 1, 1), local(2026, 2, 1))
    july = sim.gas_used_dm3(local(2026, 7, 1), local(2026, 8, 1))
    assert january > 4 * july  # heating season


def test_gas_register_is_the_sum_of_the_slots():
    start = local(2026, 11, 3, 5, 2, 30)
    sim = MeterSimulator(start, seed=8, gas_dm3=1000)
    end = start + timedelta(hours=3)
    sim.telegram_at(end)
    assert sim.gas_dm3 == 1000 + sim.gas_used_dm3(start, end)
    assert sim.gas_capture_time == local(2026, 11, 3, 8, 0)


# -- fault injection -------------------------------------------------------------------------------


def test_corrupt_next_breaks_only_the_crc_of_the_next_n_telegrams():
    sim = MeterSimulator(local(2026, 3, 3, 9, 0), seed=1)
    sim.corrupt_next(2)
    telegrams = [sim.telegram_at(local(2026, 3, 3, 9, 0, s)) for s in range(1, 5)]
    assert [crc_ok(t) for t in telegrams] == [False, False, True, True]
    for bad in telegrams[:2]:
        assert len(FRAME.findall(bad)) == 1  # framing intact: only the CRC tells
        assert parse_telegram(bad).crc_ok is False


def test_replace_meter_restarts_registers_with_a_new_id():
    sim = MeterSimulator(local(2026, 3, 3, 9, 0), seed=1, import_wh=(5_000_000, 3_000_000), export_wh=(1_000_000, 400_000))
    old = obis(sim.telegram_at(local(2026, 3, 3, 10, 0)))
    sim.replace_meter(import_wh=(3, 1))
    tel = sim.telegram_at(local(2026, 3, 3, 10, 30))
    new = obis(tel)
    assert new["0-0:96.1.1"] != old["0-0:96.1.1"]
    regs = registers(tel)
    assert regs[0] >= 3 and regs[1] >= 1 and sum(regs) < 10_000  # near zero, counting again
    assert sum(regs) > 4  # half an hour of import or export on the new meter
    assert new["0-0:98.1.0"].startswith("(0)")  # the history left with the old meter
    assert new["0-1:24.2.3"][15:] >= old["0-1:24.2.3"][15:]  # the gas meter stays


# -- the p1 parser reads what the simulator writes -------------------------------------------------


@pytest.mark.parametrize("dialect", ["emucs", "dsmr5"])
def test_p1_parses_simulated_telegrams_with_the_expected_values(dialect):
    sim = MeterSimulator(local(2026, 7, 14, 11, 0), seed=12, dialect=dialect, import_wh=(1_000_000, 2_000_000))
    for t in irregular_times(sim.time, local(2026, 7, 14, 13, 0), random.Random(5), max_step_s=600):
        parsed = parse_telegram(sim.telegram_at(t))
        assert parsed.crc_ok is True and parsed.errors == []
        assert parsed.dialect is (Dialect.EMUCS if dialect == "emucs" else Dialect.DSMR50)
        assert parsed.equipment_id == sim.meter_id
        assert parsed.timestamp == sim.meter_time.replace(microsecond=0)
        assert [parsed.value(r) * 1000 for r in ("1-0:1.8.1", "1-0:1.8.2")] == list(sim.import_wh)
        assert [parsed.value(r) * 1000 for r in ("1-0:2.8.1", "1-0:2.8.2")] == list(sim.export_wh)
        assert parsed.value("0-0:96.14.0") == sim.tariff_at(sim.time)
        (gas,) = parsed.mbus_devices()
        assert (gas.device_type, gas.equipment_id, gas.value * 1000, gas.time) == (3, sim.gas_id, sim.gas_dm3, sim.gas_capture_time)
        if dialect == "emucs":
            peak = parsed.values["1-0:1.6.0"]
            peak_time, peak_w = sim.month_peak
            assert (peak.time, peak.value * 1000) == (peak_time or local(2026, 7, 1), peak_w)
            entries = parsed.values["0-0:98.1.0"].entries
            assert [(e.period_end, e.time, e.value * 1000) for e in entries] == [
                (p.stamp, p.time, p.demand_w) for p in sim.peak_history
            ]


# -- the pty ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("speed", "step"), [(1, 1), (0.25, 1), (20, 1), (21, 2), (60, 3), (900, 45), (3600, 180), (18000, 900), (1e6, 900)]
)
def test_step_divides_the_quarter_hour_and_caps_the_rate(speed, step):
    assert step_for(speed) == step


@settings(max_examples=300, deadline=None)
@given(speed=st.floats(0.01, 18000), max_rate=st.floats(0.5, 100))
def test_step_is_the_smallest_quarter_divisor_under_the_rate(speed, max_rate):
    step = step_for(speed, max_rate)
    assert 900 % step == 0
    assert speed / step <= max_rate or step == 900
    assert all(speed / d > max_rate for d in range(1, step) if 900 % d == 0)


def read_frames(port: serial.Serial, n: int, timeout_s: float = 20.0) -> list[bytes]:
    """Complete telegrams from the port (a torn first one is skipped, as a reader's framer would)."""
    buf, frames = b"", []
    deadline = time.monotonic() + timeout_s
    while len(frames) < n and time.monotonic() < deadline:
        buf += port.read(4096)
        while (m := FRAME.search(buf)) is not None:
            frames.append(m.group())
            buf = buf[m.end() :]
    assert len(frames) >= n, f"only {len(frames)} telegrams in {timeout_s} s"
    return frames


def wait_until(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_pty_round_trip_with_pyserial(tmp_path):
    sim = MeterSimulator(local(2026, 6, 21, 14, 0, 0), seed=2)
    with PtyMeter(sim, speed=900, link=tmp_path / "p1") as meter:
        assert meter.step_s == 45
        with serial.Serial(meter.path, 115200, timeout=1) as port:
            frames = read_frames(port, 6)
    stamps = []
    for tel in frames:
        parsed = parse_telegram(tel)
        assert crc_ok(tel) and parsed.crc_ok is True and parsed.dialect is Dialect.EMUCS
        stamps.append(stamp_to_utc(meter_stamp(tel)))
    assert all(s.timestamp() % 45 == 0 for s in stamps)  # quarter-hour boundaries are hit exactly
    assert all(b - a == timedelta(seconds=45) for a, b in itertools.pairwise(stamps))
    assert not (tmp_path / "p1").exists()  # stop() removed the link


def test_unplug_makes_the_device_vanish_and_replug_brings_it_back(tmp_path):
    sim = MeterSimulator(local(2026, 6, 21, 9, 0), seed=2)
    link = tmp_path / "p1"
    with PtyMeter(sim, speed=60, link=link) as meter:
        with serial.Serial(meter.path, 115200, timeout=1) as port:
            before = read_frames(port, 2)
            first_device = meter.device
            meter.unplug()
            assert not link.exists() and not meter.plugged
            with pytest.raises(serial.SerialException):
                for _ in range(50):
                    port.read(4096)
        with pytest.raises(serial.SerialException):
            serial.Serial(str(link), 115200, timeout=1)
        unplugged_at = meter.sim_time
        wait_until(lambda: meter.sim_time > unplugged_at + timedelta(minutes=1))
        meter.replug()
        meter.replug()  # idempotent
        assert link.is_symlink() and meter.plugged
        assert str(link.resolve()) == meter.device
        with serial.Serial(meter.path, 115200, timeout=1) as port:
            after = read_frames(port, 2)
    assert first_device  # the old pair is gone; the new one may reuse its number
    last_before, first_after = before[-1], after[0]
    assert stamp_to_utc(meter_stamp(first_after)) > stamp_to_utc(meter_stamp(last_before)) + timedelta(minutes=1)
    assert all(a >= b for a, b in zip(registers(first_after), registers(last_before)))  # metered through the gap
    assert sum(registers(first_after)) > sum(registers(last_before))


def test_meter_keeps_sending_and_drops_when_nobody_reads(tmp_path):
    sim = MeterSimulator(local(2026, 6, 21, 9, 0), seed=2)
    with PtyMeter(sim, speed=60, link=tmp_path / "p1") as meter:
        wait_until(lambda: meter.dropped > 3)
        assert meter.running and meter.error is None
        assert meter.written >= 2  # the queue filled before the drops began
        with serial.Serial(meter.path, 115200, timeout=1) as port:
            since = meter.sim_time
            frames = read_frames(port, 3)
        written_while_reading = meter.written
    assert all(crc_ok(t) for t in frames)
    assert stamp_to_utc(meter_stamp(frames[-1])) > since  # live telegrams, not only the stale queue
    assert written_while_reading >= 5


def test_faults_injected_while_the_pty_runs(tmp_path):
    sim = MeterSimulator(local(2026, 6, 21, 9, 0), seed=2, import_wh=(9_000_000, 9_000_000))
    with PtyMeter(sim, speed=20, link=tmp_path / "p1") as meter, serial.Serial(meter.path, 115200, timeout=1) as port:
        read_frames(port, 2)
        sim.corrupt_next(3)
        sim.replace_meter()
        frames = read_frames(port, 8)
    verdicts = [crc_ok(t) for t in frames]
    assert verdicts.count(False) == 3 and verdicts[-1] is True
    first_bad = verdicts.index(False)
    after = [t for t, ok in zip(frames[first_bad:], verdicts[first_bad:]) if ok]
    assert after and all(sum(registers(t)) < 1_000_000 for t in after)  # the new meter counts from zero

"""Generate a year of quarter-hour data for the example operation (synthetic and deterministic).

The data is made up but shaped like the real thing, so that a sizing simulation shows what real
data shows: solar output from the sun's position at Verviers (50.6°N, 5.9°E) and day-to-day weather
drawn per day with a monthly mean (a sunny June, grey Decembers), household loads with morning and
evening peaks and a winter bump, a bakery working nights, a medical practice and a school working
weekdays (the school closed in the holidays), a heat pump, an electric car. Every load is scaled to
its member's yearly consumption, every installation to about 930 kWh per kWp.

Output: ``operation.toml`` (a copy of the example operation) and ``year.csv`` with one column per
member, in Wh (see ``services.community.simulate`` for the format): a consumer's import, the producer's
injection, and for a member with panels the signed net volume (negative = injection).

    python -m demo.example_year DIR [--seed N] [--year 2025]
    quartier simulate --generate-example DIR            # the same
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from services.allocation import Operation, load_community

OPERATION_TOML = Path(__file__).with_name("operation.toml")
LATITUDE, LONGITUDE = 50.59, 5.86
YIELD_KWH_PER_KWP = 930.0
QUARTER_S = 900

# member id -> (load profile, yearly consumption in kWh, installed kWp)
PROFILES: dict[str, tuple[str, float, float]] = {
    "ecole": ("school", 28_000, 60.0),
    "hangar": ("none", 0, 40.0),
    "boulangerie": ("bakery", 24_000, 0.0),
    "cabinet": ("office", 9_000, 0.0),
    "m01": ("household", 4_200, 5.0),
    "m02": ("household", 3_600, 4.0),
    "m03": ("household", 5_200, 6.0),
    "m04": ("household", 3_900, 4.5),
    "m05": ("household", 2_800, 0.0),
    "m06": ("household", 3_300, 0.0),
    "m07": ("heat_pump", 7_500, 0.0),
    "m08": ("household", 2_200, 0.0),
    "m09": ("household", 3_800, 0.0),
    "m10": ("household", 4_100, 0.0),
    "m11": ("electric_car", 5_600, 0.0),
    "m12": ("household", 1_900, 0.0),
    "m13": ("household", 3_100, 0.0),
    "m14": ("household", 4_600, 0.0),
    "m15": ("household", 2_600, 0.0),
    "m16": ("household", 1_800, 0.0),
}

# mean daily clearness per month (1 = clear sky), Belgian climate
MONTHLY_CLEARNESS = (0.30, 0.36, 0.45, 0.55, 0.58, 0.60, 0.60, 0.57, 0.50, 0.40, 0.31, 0.27)
# French-speaking Belgian school holidays 2025 (day of year ranges, inclusive), near enough any year
SCHOOL_HOLIDAYS = ((1, 5), (55, 66), (118, 129), (186, 236), (293, 304), (356, 366))


def year_epochs(year: int, tz: ZoneInfo) -> np.ndarray:
    """Start of every quarter-hour of the local calendar year (92/100-quarter-hour days included)."""
    start = int(datetime(year, 1, 1, tzinfo=tz).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=tz).timestamp())
    return np.arange(start, end, QUARTER_S, dtype=np.int64)


def _calendar(epoch: np.ndarray, tz: ZoneInfo) -> dict[str, np.ndarray]:
    local = [datetime.fromtimestamp(int(ts) + QUARTER_S // 2, tz) for ts in epoch]
    return {
        "hour": np.array([t.hour + t.minute / 60 for t in local]),
        "weekday": np.array([t.weekday() for t in local]),
        "doy": np.array([t.timetuple().tm_yday for t in local]),
        "month": np.array([t.month for t in local]),
        "day": np.array([t.toordinal() for t in local]),
    }


def _sun_height(epoch: np.ndarray) -> np.ndarray:
    """Sine of the sun's elevation at mid-quarter-hour (NOAA's approximate formulas)."""
    t = (epoch + QUARTER_S // 2).astype(np.float64)
    days = t / 86400.0
    hour_utc = (days % 1.0) * 24.0
    doy = np.floor(days - np.floor(days / 365.2425) * 365.2425) + 1  # close enough for a generator
    g = 2 * np.pi / 365 * (doy - 1 + (hour_utc - 12) / 24)
    eqtime = 229.18 * (0.000075 + 0.001868 * np.cos(g) - 0.032077 * np.sin(g) - 0.014615 * np.cos(2 * g) - 0.040849 * np.sin(2 * g))
    decl = (
        0.006918 - 0.399912 * np.cos(g) + 0.070257 * np.sin(g) - 0.006758 * np.cos(2 * g)
        + 0.000907 * np.sin(2 * g) - 0.002697 * np.cos(3 * g) + 0.00148 * np.sin(3 * g)
    )  # fmt: skip
    solar_minutes = hour_utc * 60 + eqtime + 4 * LONGITUDE
    hour_angle = np.radians(solar_minutes / 4 - 180)
    lat = np.radians(LATITUDE)
    return np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)


def _weather(cal: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Clear-sky index per quarter-hour: a daily draw around the month's mean, with passing clouds."""
    days, day_idx = np.unique(cal["day"], return_inverse=True)
    first_month = np.array([cal["month"][np.argmax(day_idx == i)] for i in range(days.size)])
    mean = np.array(MONTHLY_CLEARNESS)[first_month - 1]
    daily = rng.beta(mean * 3.0, (1 - mean) * 3.0)
    for i in range(1, daily.size):  # weather comes in spells
        daily[i] = 0.55 * daily[i] + 0.45 * daily[i - 1]
    noise = np.empty(day_idx.size)
    noise[0] = 0.0
    shocks = rng.normal(0.0, 0.25, day_idx.size)
    for i in range(1, noise.size):
        noise[i] = 0.85 * noise[i - 1] + shocks[i]
    return np.clip(daily[day_idx] * (1 + 0.5 * noise * (1 - daily[day_idx])), 0.03, 1.1)


def solar_per_kwp(epoch: np.ndarray, cal: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Wh per kWp per quarter-hour for the site, scaled to ``YIELD_KWH_PER_KWP`` a year."""
    sun = np.clip(_sun_height(epoch), 0.0, None)
    shape = sun**1.25 * _weather(cal, rng)
    return shape * (YIELD_KWH_PER_KWP * 1000 * epoch.size / 35040) / shape.sum()


def _bump(hour: np.ndarray, at: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((hour - at) / width) ** 2)


def load_shape(kind: str, cal: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Relative load per quarter-hour for a kind of member (scaled to its yearly kWh afterwards)."""
    h, wd, doy = cal["hour"], cal["weekday"], cal["doy"]
    workday = wd < 5
    winter = np.cos(2 * np.pi * (doy - 15) / 365)  # +1 mid-January, -1 mid-July
    n = h.size
    if kind == "none":
        return np.zeros(n)
    if kind in ("household", "heat_pump", "electric_car"):
        shift = rng.uniform(-0.75, 0.75)
        hs = h - shift
        shape = (
            0.25
            + 0.6 * _bump(hs, 7.3, 0.9) * workday
            + 0.5 * _bump(hs, 9.5, 1.3) * ~workday
            + 0.35 * _bump(hs, 12.5, 1.2)
            + 1.0 * _bump(hs, 19.2, 1.7)
            + 0.2 * _bump(hs, 22.5, 0.8)
        ) * (1 + 0.3 * winter)
        awake = (hs > 6.5) & (hs < 23.5)
        shape = shape + (rng.random(n) < 0.025) * awake * rng.uniform(1.5, 4.0, n)  # kettle, oven, washing
        if kind == "heat_pump":
            outdoor = 10 - 8 * winter + 3 * np.sin(2 * np.pi * (h - 9) / 24)
            shape = shape + np.clip(16 - outdoor, 0, None) * 0.25 * (1 + 0.2 * rng.standard_normal(n))
        if kind == "electric_car":
            day = cal["day"]
            charging_days = {d for d in np.unique(day) if rng.random() < 0.45}
            plugged = np.array([d in charging_days for d in day]) & (h >= 18.5) & (h < 21.0)
            shape = shape + plugged * 7.0
    elif kind == "bakery":
        open_day = wd != 0  # closed on Mondays
        shape = 0.3 + open_day * (2.0 * ((h >= 3) & (h < 13)) + 1.5 * _bump(h, 5.5, 1.2)) + 0.2 * winter
    elif kind == "office":
        shape = 0.15 + workday * (1.0 * ((h >= 8) & (h < 18)) - 0.3 * _bump(h, 12.75, 0.5)) * (1 + 0.15 * winter)
    elif kind == "school":
        holiday = np.zeros(n, dtype=bool)
        for lo, hi in SCHOOL_HOLIDAYS:
            holiday |= (doy >= lo) & (doy <= hi)
        hours = (h >= 7.5) & (h < np.where(wd == 2, 12.5, 16.5))
        shape = 0.25 + (workday & ~holiday) * hours * (1.2 + 0.5 * winter) + 0.15 * (winter > 0.3)
    else:
        raise ValueError(f"unknown load profile {kind!r}")
    return np.clip(shape * rng.lognormal(0.0, 0.35, n), 0.0, None)


def generate(operation: Operation, seed: int = 2025, year: int = 2025) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(epoch, columns)``: quarter-hour starts and one int64 Wh column per member (CSV semantics)."""
    tz = ZoneInfo(operation.timezone)
    epoch = year_epochs(year, tz)
    cal = _calendar(epoch, tz)
    sun = solar_per_kwp(epoch, cal, np.random.default_rng([seed, 0]))
    columns: dict[str, np.ndarray] = {}
    for idx, member in enumerate(operation.members, 1):
        if member.id not in PROFILES:
            raise KeyError(f"no profile for member {member.id!r} in demo/example_year.py")
        kind, kwh, kwp = PROFILES[member.id]
        rng = np.random.default_rng([seed, idx])
        shape = load_shape(kind, cal, rng)
        load = shape * (kwh * 1000 / shape.sum()) if kwh else shape
        pv = sun * kwp * rng.uniform(0.93, 1.03, epoch.size) if kwp else np.zeros(epoch.size)
        if member.role == "consumer":
            columns[member.id] = np.rint(load).astype(np.int64)
        elif member.role == "producer":
            columns[member.id] = np.rint(pv).astype(np.int64)
        else:
            columns[member.id] = np.rint(load - pv).astype(np.int64)
    return epoch, columns


def write_csv(path: Path, epoch: np.ndarray, columns: dict[str, np.ndarray], tz: ZoneInfo) -> None:
    ids = list(columns)
    table = np.stack([columns[i] for i in ids], axis=1).tolist()
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("start," + ",".join(ids) + "\n")
        for ts, row in zip(epoch.tolist(), table, strict=True):
            fh.write(datetime.fromtimestamp(ts, tz).isoformat() + "," + ",".join(map(str, row)) + "\n")


def write_example(directory: str | Path, seed: int = 2025, year: int = 2025) -> tuple[Path, Path]:
    """Write ``operation.toml`` and ``year.csv`` into ``directory`` (created if needed)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    toml_path = out / "operation.toml"
    if toml_path.resolve() != OPERATION_TOML.resolve():
        shutil.copyfile(OPERATION_TOML, toml_path)
    operation = load_community(OPERATION_TOML).operation()
    epoch, columns = generate(operation, seed, year)
    csv_path = out / "year.csv"
    write_csv(csv_path, epoch, columns, ZoneInfo(operation.timezone))
    return toml_path, csv_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--year", type=int, default=2025)
    args = parser.parse_args(argv)
    toml_path, csv_path = write_example(args.directory, args.seed, args.year)
    print(f"wrote {toml_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

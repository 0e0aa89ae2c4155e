"""A simulated electricity meter: deterministic P1 telegrams for one household with rooftop solar.

``quartier demo`` runs the whole gateway on it (no meter, no server) and the daemon's fault tests
drive it to produce CRC errors, meter swaps and clock offsets on demand. The module is pure: no I/O
and no clock reads; simulated time only moves when :meth:`MeterSimulator.telegram_at` is called, so
a seed and a sequence of times always give the same bytes.

Modelling choices (each one documented because a test or a reader relies on it):

- Power is piecewise constant over whole UTC seconds: :meth:`MeterSimulator.power_at` is a pure
  function of the second, and the registers are the exact integral of that step function. Whatever
  the spacing of the calls, the registers are whole Wh and never lose energy to rounding: one
  fractional carry per direction makes ``import_wh[0] + import_wh[1] == floor(exact integral)``
  (``true_import_wh`` is that register total, ``exact_import_wh`` the unrounded integral).
- Random behaviour (appliances, clouds, noise) comes from a counter-based generator (a hash of
  seed and time), never from a sequential RNG, so jumping ahead a month gives the same registers as
  walking there second by second.
- The registers integrate the *total* net power (the vector sum over phases, as Belgian and Dutch
  meters do); per-phase lines show each phase's own net, so ``1.7.0`` can differ from ``sum(21.7.0)``.
- Tariffs (0-0:96.14.0) follow the meter's local clock. e-MUCS (Flanders): register 1 = day/peak
  (``0001``), register 2 = night/off-peak (``0002``); off-peak is 22:00-07:00 on weekdays and all
  weekend. DSMR 5 (Netherlands): register 1 = low (``0001``), 2 = normal; low is 23:00-07:00 on
  weekdays and all weekend. Public holidays are not modelled.
- Capacity tariff registers (e-MUCS only): 1-0:1.4.0 is the average import power over the elapsed
  part of the current quarter-hour (so at the quarter's end it equals that quarter's demand); a
  quarter's demand is its import energy / 15 min and 1-0:1.6.0 keeps this month's highest one,
  stamped with the quarter's *start* (the settlement quarter's identity). At a month change the month
  is archived into 0-0:98.1.0 (oldest first, at most 13 entries, stamped 00:00 on the 1st of the
  following month); a month without a closed quarter-hour is not archived.
- Clock offset: the meter's clock is true time + ``clock_offset``. Stamps, tariffs, quarter-hours
  and months follow the meter's clock; the household and the sun follow true time.
- Gas (MBus channel 1) is captured at every 5-minute boundary; the reading and its timestamp (on
  the meter's clock) are those of the last capture, as on a real meter.
- PV: a south-facing array tilted 35° at the site of the dialect (Brussels / Utrecht), clear-sky
  output from the solar position (so sunrise and sunset follow the season), normalised so a clear
  June solstice noon gives 0.75 × kWp, then a per-day weather type and cloud noise. Arrays up to
  5 kWp sit on one phase (L1), as Belgian single-phase inverters may, larger ones on all three.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from p1.crc import crc16

SimulatedDialect = Literal["emucs", "dsmr5"]  # Fluvius e-MUCS H or Dutch DSMR 5.0
Sky = Literal["variable", "clear", "overcast"]

_US = 1_000_000  # microseconds per second: simulated time is kept as integer microseconds (exact)
_QUARTER_US = 900 * _US
_GAS_SLOT_S = 300  # gas captures every 5 minutes
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)
_MASK64 = (1 << 64) - 1

# Mean yearly consumption of the load model at scale 1, measured over every third day of 2026 for
# seeds 0-2 (4065-4151 kWh): ``annual_consumption_kwh`` scales every load component by
# annual_consumption_kwh / this value (tests check the year lands within 10 %).
_REFERENCE_KWH = 4110.0

_TILT_RAD = math.radians(35.0)
_PV_SUMMER_PEAK = 0.75  # clear June solstice noon output as a fraction of kWp
_PV_CUTOFF_W = 10.0  # inverters stay off below this


@dataclass(frozen=True, slots=True)
class _DialectSpec:
    header: str
    zone: ZoneInfo
    latitude: float
    longitude: float
    offpeak_from_hour: int  # weekday off-peak starts (local)
    offpeak_until_hour: int  # and ends (local)
    offpeak_register: int  # 1-based register counting off-peak energy


_DIALECTS: dict[str, _DialectSpec] = {
    # Fluvius e-MUCS H meter (Sagemcom S211/T211), Brussels-area site
    "emucs": _DialectSpec("/FLU5\\253769484_A", ZoneInfo("Europe/Brussels"), 50.85, 4.35, 22, 7, 2),
    # Iskra AM550 DSMR 5.0, Utrecht-area site
    "dsmr5": _DialectSpec("/ISK5\\2M550T-1012", ZoneInfo("Europe/Amsterdam"), 52.09, 5.12, 23, 7, 1),
}


@dataclass(frozen=True, slots=True)
class MonthPeak:
    """One archived month of the e-MUCS peak history (0-0:98.1.0)."""

    stamp: datetime  # 00:00 local on the 1st of the following month (meter clock)
    time: datetime  # start of the peak quarter-hour (meter clock)
    demand_w: int  # that quarter's average import power, W


@dataclass(frozen=True, slots=True)
class _Event:
    """An appliance run, in local seconds of its day; ``duty`` < 1 cycles per minute (thermostats)."""

    start: int
    end: int
    watts: float
    phase: int
    duty: float = 1.0


@dataclass(frozen=True, slots=True)
class _DayPlan:
    events: tuple[_Event, ...]
    weekend: bool
    winter: float  # 1 in midwinter, 0 in midsummer
    sky_base: float  # mean cloud transmission of the day
    sky_amp: float  # amplitude of the slow cloud variation
    occlusion: float  # probability that a passing cloud covers the sun in a given minute


# ---------------------------------------------------------------------------------------------
# counter-based randomness: U[0,1) as a pure function of (stream key, integer counter)

def _mix64(x: int) -> int:
    """splitmix64 finaliser on a Python int (used to derive stream keys)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


_G = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _uniform(key: int, counter: np.ndarray) -> np.ndarray:
    """splitmix64 over an array of counters: the same counter always gives the same number."""
    x = counter.astype(np.int64).view(np.uint64) ^ np.uint64(key)
    x = x + _G
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _gauss(h: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((h - mu) / sigma) ** 2)


# ---------------------------------------------------------------------------------------------
# sun

def _sun(secs: np.ndarray, lat_deg: float, lon_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(cos of the zenith angle, cos of incidence on a south-facing 35° plane) for UTC seconds.

    NOAA's low-precision solar position (declination and equation of time from the fractional year):
    good to a few minutes, which is all a household simulation needs.
    """
    days = (secs - 946684800) / 86400.0  # since 2000-01-01T00:00Z
    gamma = 2.0 * math.pi * np.mod(days, 365.2425) / 365.2425
    eqtime = 229.18 * (0.000075 + 0.001868 * np.cos(gamma) - 0.032077 * np.sin(gamma)
                       - 0.014615 * np.cos(2 * gamma) - 0.040849 * np.sin(2 * gamma))
    decl = (0.006918 - 0.399912 * np.cos(gamma) + 0.070257 * np.sin(gamma) - 0.006758 * np.cos(2 * gamma)
            + 0.000907 * np.sin(2 * gamma) - 0.002697 * np.cos(3 * gamma) + 0.00148 * np.sin(3 * gamma))
    minutes_utc = np.mod(secs, 86400) / 60.0
    hour_angle = np.radians((minutes_utc + eqtime + 4.0 * lon_deg) / 4.0 - 180.0)
    lat = math.radians(lat_deg)
    cos_zenith = math.sin(lat) * np.sin(decl) + math.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    tilted = lat - _TILT_RAD  # a south-facing tilted plane sees the sun as a horizontal one at lat - tilt
    cos_incidence = math.sin(tilted) * np.sin(decl) + math.cos(tilted) * np.cos(decl) * np.cos(hour_angle)
    return cos_zenith, cos_incidence


def _clear_sky(cos_zenith: np.ndarray, cos_incidence: np.ndarray) -> np.ndarray:
    """Plane-of-array irradiance in suns: Meinel's air-mass attenuation for the beam plus ~12 % diffuse."""
    up = cos_zenith > 0.0
    air_mass = 1.0 / np.maximum(cos_zenith, 0.05)
    beam = 0.7 ** (air_mass ** 0.678)
    return np.where(up, beam * np.maximum(cos_incidence, 0.0) + 0.12 * beam * np.maximum(cos_zenith, 0.0), 0.0)


def _solstice_noon_irradiance(lat_deg: float, lon_deg: float) -> float:
    """Highest clear-sky irradiance on 21 June (sampled per minute): the PV normaliser."""
    noon = int(datetime(2025, 6, 21, tzinfo=UTC).timestamp())
    secs = np.arange(noon + 9 * 3600, noon + 15 * 3600, 60, dtype=np.int64)
    return float(_clear_sky(*_sun(secs, lat_deg, lon_deg)).max())


# ---------------------------------------------------------------------------------------------
# formatting

def _to_us(t: datetime) -> int:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("time must be timezone-aware")
    return (t - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _hex_id(text: str) -> str:
    return text.encode("ascii").hex().upper()


def _kwh(wh: int) -> str:
    return f"{wh // 1000:06d}.{wh % 1000:03d}*kWh"


def _kw(w: float) -> str:
    watts = max(0, round(w))
    return f"{watts // 1000:02d}.{watts % 1000:03d}*kW"


def _m3(dm3: int) -> str:
    return f"{dm3 // 1000:05d}.{dm3 % 1000:03d}*m3"


def _book(registers: list[int], register: int, wh: float) -> float:
    """Add the whole Wh of ``wh`` to one register and return the fraction carried to the next call.

    One carry per direction, shared by both tariff registers: the registers' sum is always the floor
    of the exact integral, whatever the tariff switches.
    """
    whole = int(wh)
    registers[register] += whole
    return wh - whole


def _default_id(dialect: str, seed: int, replacement: int, gas: bool = False) -> str:
    """A recognisably simulated equipment id of the real length (14 chars e-MUCS, 17 DSMR)."""
    n = (seed * 100 + replacement) % 10**10
    if dialect == "emucs":
        return f"{'7' if gas else '1'}SIM{n:010d}"
    return f"{'G' if gas else 'E'}00SIM{n:011d}"


class MeterSimulator:
    """A seeded household meter (e-MUCS H by default, or DSMR 5) that writes one telegram per call.

    ``telegram_at(t)`` advances the model from the previous call to ``t`` (true time; the meter's
    clock is ``t + clock_offset``) and returns one telegram with CRLF line endings and a valid CRC.
    Thread-safe: a writer thread may call ``telegram_at`` while a test injects faults.
    """

    def __init__(
        self,
        start: datetime,
        *,
        seed: int = 0,
        meter_id: str | None = None,
        pv_kwp: float = 4.0,
        annual_consumption_kwh: float = 3500.0,
        import_wh: tuple[int, int] = (0, 0),
        export_wh: tuple[int, int] = (0, 0),
        gas: bool = True,
        gas_dm3: int = 0,
        annual_gas_m3: float = 1500.0,
        phases: int = 3,
        dialect: SimulatedDialect = "emucs",
        sky: Sky = "variable",
        clock_offset: timedelta = timedelta(0),
        peak_history_months: int = 3,
    ) -> None:
        if dialect not in _DIALECTS:
            raise ValueError(f"dialect must be one of {sorted(_DIALECTS)}, not {dialect!r}")
        if phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, not {phases!r}")
        if sky not in ("variable", "clear", "overcast"):
            raise ValueError(f"sky must be 'variable', 'clear' or 'overcast', not {sky!r}")
        if pv_kwp < 0 or annual_consumption_kwh < 0 or annual_gas_m3 < 0:
            raise ValueError("pv_kwp, annual_consumption_kwh and annual_gas_m3 must be >= 0")
        if min(*import_wh, *export_wh, gas_dm3) < 0:
            raise ValueError("initial registers must be >= 0")
        if not 0 <= peak_history_months <= 13:
            raise ValueError("peak_history_months must be between 0 and 13")
        self.seed = seed
        self.dialect: SimulatedDialect = dialect
        self.phases = phases
        self.gas = gas
        self.pv_kwp = pv_kwp
        self.annual_consumption_kwh = annual_consumption_kwh
        self.annual_gas_m3 = annual_gas_m3
        self.sky: Sky = sky
        self._spec = _DIALECTS[dialect]
        self._lock = threading.RLock()
        self._meter_id = meter_id if meter_id is not None else _default_id(dialect, seed, 0)
        self._gas_id = _default_id(dialect, seed, 0, gas=True)
        self._scale = annual_consumption_kwh / _REFERENCE_KWH
        self._pv_w_per_sun = pv_kwp * 1000.0 * _PV_SUMMER_PEAK / _solstice_noon_irradiance(
            self._spec.latitude, self._spec.longitude)
        if phases == 1:
            self._pv_split = np.array([1.0])
        elif pv_kwp <= 5.0:
            self._pv_split = np.array([1.0, 0.0, 0.0])
        else:
            self._pv_split = np.full(3, 1.0 / 3.0)
        # per-phase split of the always-on load and of the activity profile (lights, TV, small loads)
        self._base_split = np.array([1.0]) if phases == 1 else np.array([0.4, 0.3, 0.3])
        self._activity_split = np.array([1.0]) if phases == 1 else np.array([0.5, 0.25, 0.25])
        keys = [_mix64(_mix64(seed & _MASK64) ^ stream) for stream in range(1, 9)]
        (self._k_noise, self._k_small, self._k_duty, self._k_cloud, self._k_occlude,
         self._k_volt, self._k_gas, self._k_round) = keys
        self._fridge_phase_s = _mix64(seed ^ 0xF1D6E) % 2400
        self._plans: dict[int, _DayPlan] = {}
        self._fault_rng = random.Random(f"quartier-sim-fault:{seed}")

        self._t_us = _to_us(start)
        self._offset_us = clock_offset // timedelta(microseconds=1)
        self._import = list(import_wh)
        self._export = list(export_wh)
        self._import_carry = 0.0  # energy not yet booked as a whole Wh, < 1
        self._export_carry = 0.0
        self._exact_import = 0.0  # exact integrals since construction (across meter replacements)
        self._exact_export = 0.0
        self._gas_dm3 = gas_dm3
        slot_us = _GAS_SLOT_S * _US
        self._gas_slot = -(-self._t_us // slot_us)  # next slot to book: only whole slots after start
        self._gas_capture_us = self._t_us // slot_us * slot_us  # true time of the last capture
        self._corrupt_pending = 0
        self._replacements = 0
        meter_now = self._t_us + self._offset_us
        self._quarter = meter_now // _QUARTER_US
        self._quarter_import = 0.0
        self._quarter_begin_us = meter_now
        self._month = self._month_of(meter_now)
        self._peak_w = 0
        self._peak_start_us: int | None = None
        self._history: list[MonthPeak] = self._synthetic_history(peak_history_months)

    # ------------------------------------------------------------------ state for tests and tools
    @property
    def time(self) -> datetime:
        """True (simulated) time the model has been advanced to."""
        return _from_us(self._t_us)

    @property
    def meter_time(self) -> datetime:
        """What the meter's clock says at :attr:`time` (0-0:1.0.0 before flooring to the second)."""
        return _from_us(self._t_us + self._offset_us)

    @property
    def clock_offset(self) -> timedelta:
        return timedelta(microseconds=self._offset_us)

    @clock_offset.setter
    def clock_offset(self, value: timedelta) -> None:
        """Skew the meter's clock from now on (a meter whose clock drifted or was set wrong)."""
        with self._lock:
            self._offset_us = value // timedelta(microseconds=1)

    @property
    def zone(self) -> ZoneInfo:
        return self._spec.zone

    @property
    def meter_id(self) -> str:
        """Equipment id (0-0:96.1.1) in clear; the telegram carries it hex-encoded."""
        return self._meter_id

    @property
    def gas_id(self) -> str:
        return self._gas_id

    @property
    def import_wh(self) -> tuple[int, int]:
        """Import registers (1-0:1.8.1, 1-0:1.8.2) in whole Wh."""
        return self._import[0], self._import[1]

    @property
    def export_wh(self) -> tuple[int, int]:
        """Export registers (1-0:2.8.1, 1-0:2.8.2) in whole Wh."""
        return self._export[0], self._export[1]

    @property
    def true_import_wh(self) -> int:
        """The import registers' total (1.8.1 + 1.8.2) in whole Wh: what a gateway must reproduce."""
        return self._import[0] + self._import[1]

    @property
    def true_export_wh(self) -> int:
        """The export registers' total (2.8.1 + 2.8.2) in whole Wh."""
        return self._export[0] + self._export[1]

    @property
    def exact_import_wh(self) -> float:
        """Import energy integrated since construction, unrounded (continues across meter swaps).

        The registers trail it by less than 1 Wh (their carried fraction) until a meter swap.
        """
        return self._exact_import

    @property
    def exact_export_wh(self) -> float:
        return self._exact_export

    @property
    def gas_dm3(self) -> int:
        """Gas register at the last 5-minute capture, in dm³ (the telegram shows m³ with 3 decimals)."""
        return self._gas_dm3

    @property
    def gas_capture_time(self) -> datetime:
        """Meter-clock time of the last gas capture (the gas line's own timestamp)."""
        return _from_us(self._gas_capture_us + self._offset_us)

    @property
    def month_peak(self) -> tuple[datetime | None, int]:
        """(start of this month's peak quarter-hour on the meter clock, its demand in W)."""
        t = None if self._peak_start_us is None else _from_us(self._peak_start_us)
        return t, self._peak_w

    @property
    def peak_history(self) -> tuple[MonthPeak, ...]:
        return tuple(self._history)

    # ------------------------------------------------------------------ the physical model
    def power_at(self, t: datetime) -> tuple[float, float]:
        """(household load W, PV production W) during the UTC second containing ``t``. Pure."""
        sec = np.array([_to_us(t) // _US], dtype=np.int64)
        load, pv = self._model(sec)
        return float(load.sum()), float(pv[0])

    def power_series(self, start: datetime, seconds: int) -> tuple[np.ndarray, np.ndarray]:
        """Load and PV (W) for ``seconds`` consecutive UTC seconds from the one containing ``start``.

        Vectorised twin of :meth:`power_at` for charts, benchmarks and energy checks.
        """
        first = _to_us(start) // _US
        load, pv = self._model(np.arange(first, first + seconds, dtype=np.int64))
        return load.sum(axis=0), pv

    def gas_used_dm3(self, start: datetime, end: datetime) -> int:
        """Gas drawn (dm³) in the 5-minute slots lying wholly within [start, end). Pure."""
        slot_us = _GAS_SLOT_S * _US
        return self._gas_slots_dm3(-(-_to_us(start) // slot_us), _to_us(end) // slot_us)

    def tariff_at(self, t: datetime) -> int:
        """Register (1 or 2) that counts energy at true time ``t`` on this meter's clock."""
        return self._tariff(_to_us(t) + self._offset_us)

    def _model(self, secs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-phase load (phases × n) and PV (n) in W for an array of whole UTC seconds."""
        local = secs + self._utc_offsets(secs)
        days = local // 86400
        cos_zenith, cos_incidence = _sun(secs, self._spec.latitude, self._spec.longitude)
        load = np.empty((self.phases, secs.size))
        pv = np.empty(secs.size)
        first_day, last_day = int(days[0]), int(days[-1])
        for day in range(first_day, last_day + 1):
            sel = slice(None) if first_day == last_day else (days == day)
            sod = local[sel] - day * 86400
            plan = self._plan(day)
            load[:, sel] = self._load(secs[sel], sod, plan, cos_zenith[sel])
            pv[sel] = self._pv(secs[sel], plan, cos_zenith[sel], cos_incidence[sel])
        return load, pv

    def _load(self, secs: np.ndarray, sod: np.ndarray, plan: _DayPlan, cos_zenith: np.ndarray) -> np.ndarray:
        h = sod / 3600.0
        if plan.weekend:
            activity = 380 * _gauss(h, 9.3, 1.0) + 260 * _gauss(h, 13.0, 2.0) + 430 * _gauss(h, 19.8, 1.7)
        else:
            activity = 330 * _gauss(h, 7.3, 0.7) + 110 * _gauss(h, 13.0, 2.5) + 460 * _gauss(h, 19.8, 1.6)
        activity = activity + 130 * _gauss(h, 22.3, 0.8)
        awake_and_dark = (cos_zenith < 0.05) & (h > 6.5) & (h < 23.3)
        activity = (activity + 110.0 * awake_and_dark) * (0.85 + 0.35 * plan.winter)
        minutes = secs // 60
        small = np.where(_uniform(self._k_small, minutes) < 0.12, 60 + 140 * _uniform(self._k_small ^ 1, minutes), 0.0)
        fridge = np.where((secs + self._fridge_phase_s) % 2400 < 800, 85.0, 0.0)
        base = 120.0 + fridge
        load = (base * self._base_split[:, np.newaxis]
                + (activity + small) * self._activity_split[:, np.newaxis])
        for ev in plan.events:
            on = (sod >= ev.start) & (sod < ev.end)
            if not on.any():
                continue
            if ev.duty < 1.0:
                on &= _uniform(self._k_duty, minutes * 131 + ev.start) < ev.duty
            load[ev.phase % self.phases] += ev.watts * on
        noise = 1.0 + 0.05 * (_uniform(self._k_noise, secs) - 0.5)
        return load * (noise * self._scale)

    def _pv(self, secs: np.ndarray, plan: _DayPlan, cos_zenith: np.ndarray, cos_incidence: np.ndarray) -> np.ndarray:
        if self.pv_kwp <= 0:
            return np.zeros(secs.size)
        sun = _clear_sky(cos_zenith, cos_incidence)
        knots = secs // 120  # slow cloud variation: value noise between 2-minute knots
        frac = (secs % 120) / 120.0
        slow = _uniform(self._k_cloud, knots) * (1 - frac) + _uniform(self._k_cloud, knots + 1) * frac
        transmission = np.clip(plan.sky_base + plan.sky_amp * (slow - 0.5), 0.05, 1.0)
        if plan.occlusion > 0:
            covered = _uniform(self._k_occlude, secs // 60) < plan.occlusion
            transmission = np.where(covered, transmission * 0.35, transmission)
        watts = np.minimum(sun * transmission * self._pv_w_per_sun, self.pv_kwp * 1000.0 * 0.95)
        return np.where(watts < _PV_CUTOFF_W, 0.0, watts)

    def _plan(self, day: int) -> _DayPlan:
        """The day's appliance runs and weather, drawn from (seed, local date): same day, same plan."""
        plan = self._plans.get(day)
        if plan is not None:
            return plan
        d = _EPOCH_DATE + timedelta(days=day)
        rng = random.Random(f"quartier-sim:{self.seed}:{d.isoformat()}")
        doy = d.timetuple().tm_yday
        winter = 0.5 + 0.5 * math.cos(2 * math.pi * (doy - 15) / 365.25)
        weekend = d.weekday() >= 5
        events: list[_Event] = []

        def run(hour: float, seconds: float, watts: float, phase: int, duty: float = 1.0) -> None:
            start = int(min(max(hour * 3600, 0), 86399))
            events.append(_Event(start, min(86400, start + int(seconds)), watts, phase, duty))

        wake = rng.gauss(8.6 if weekend else 6.9, 0.35)
        for hour, chance in ((wake + 0.25, 0.9), (10.5, 0.35), (15.8, 0.5), (20.4, 0.5)):  # kettle
            if rng.random() < chance:
                run(hour + rng.gauss(0, 0.35), rng.uniform(150, 240), rng.uniform(1900, 2200), 0)
        if rng.random() < 0.35:  # hair dryer
            run(wake + rng.uniform(0.3, 0.7), rng.uniform(180, 420), 1700, rng.randrange(3))
        for _ in range(rng.randint(0, 2)):  # microwave
            run(rng.uniform(11.5, 20.5), rng.uniform(60, 240), 1150, 0)
        if rng.random() < 0.85:  # dinner on the induction hob (two zones, two phases)
            hour, seconds, watts = rng.gauss(18.4, 0.45), rng.uniform(1200, 3000), rng.uniform(1400, 2400)
            run(hour, seconds, watts / 2, 1, 0.75)
            run(hour, seconds, watts / 2, 2, 0.75)
        if weekend and rng.random() < 0.5:  # weekend lunch
            run(rng.gauss(12.3, 0.4), rng.uniform(900, 1800), rng.uniform(1200, 2000), 1, 0.75)
        if rng.random() < 0.2:  # oven, thermostat cycling
            run(rng.gauss(18.0, 0.5), rng.uniform(2400, 3600), 2300, 2, 0.55)
        if rng.random() < 0.4:  # washing machine: heating, washing, spinning
            hour = rng.uniform(9.0, 19.0)
            run(hour, 900, 2000, 2)
            run(hour + 0.25, 3600, 180, 2)
            run(hour + 1.25, 600, 450, 2)
            if rng.random() < 0.4 + 0.3 * winter:  # tumble dryer afterwards
                run(hour + 1.5, rng.uniform(3600, 5400), 2400, 2, 0.8)
        if rng.random() < 0.5:  # dishwasher: heat, wash, heat for drying
            hour = rng.uniform(19.5, 21.5)
            run(hour, 1200, 2000, 1)
            run(hour + 1 / 3, 3000, 90, 1)
            run(hour + 1.25, 900, 2000, 1)
        if rng.random() < (0.3 if weekend else 0.1):  # vacuum cleaner
            run(rng.uniform(10.0, 17.0), rng.uniform(600, 1500), 1400, rng.randrange(3))

        if self.sky == "clear":
            base, amp, occlusion = 0.97, 0.06, 0.0
        elif self.sky == "overcast":
            base, amp, occlusion = 0.22, 0.16, 0.0
        else:
            summer = 1.0 - winter
            roll = rng.random()
            if roll < 0.15 + 0.25 * summer:
                base, amp, occlusion = rng.uniform(0.9, 0.98), 0.08, rng.uniform(0.0, 0.08)
            elif roll < 0.6 + 0.1 * summer:
                base, amp, occlusion = rng.uniform(0.55, 0.85), 0.4, rng.uniform(0.15, 0.45)
            else:
                base, amp, occlusion = rng.uniform(0.12, 0.35), 0.2, 0.0
        plan = _DayPlan(tuple(events), weekend, winter, base, amp, occlusion)
        if len(self._plans) > 16:
            self._plans.clear()
        self._plans[day] = plan
        return plan

    def _utc_offsets(self, secs: np.ndarray) -> np.ndarray | int:
        """Local UTC offset in seconds per element; offsets only change on whole UTC hours."""
        first, last = int(secs[0]) // 3600, int(secs[-1]) // 3600
        zone = self._spec.zone
        if first == last:
            return int(_from_us(first * 3600 * _US).astimezone(zone).utcoffset().total_seconds())
        by_hour = np.array([_from_us(h * 3600 * _US).astimezone(zone).utcoffset().total_seconds()
                            for h in range(first, last + 1)], dtype=np.int64)
        return by_hour[secs // 3600 - first]

    def _gas_litres(self, slots: np.ndarray) -> np.ndarray:
        """Gas used in each 5-minute slot (whole dm³): heating by season and hour, plus hot water."""
        secs = slots * _GAS_SLOT_S
        local = secs + self._utc_offsets(secs)
        h = (local % 86400) / 3600.0
        doy = np.mod((local - 946684800) / 86400.0, 365.2425)
        outdoor = 10.5 - 7.5 * np.cos(2 * math.pi * (doy - 20) / 365.2425) + 3.0 * np.sin(2 * math.pi * (h - 9) / 24)
        setpoint = np.where((h >= 6) & (h < 22.5), 20.0, 16.0)
        heating = np.maximum(setpoint - outdoor - 3.0, 0.0)
        hot_water = 2.0 * _gauss(h, 7.3, 0.5) + 1.2 * _gauss(h, 20.0, 1.0) + 0.15
        # 105120 slots a year; the weights above average 6.06 over a year in this climate
        expected = (heating + hot_water) * self.annual_gas_m3 * 1000.0 / (105120 * 6.06)
        noisy = expected * (0.5 + _uniform(self._k_gas, slots))
        return np.floor(noisy + _uniform(self._k_round, slots)).astype(np.int64)

    # ------------------------------------------------------------------ meter logic
    def _tariff(self, meter_us: int) -> int:
        local = _from_us(meter_us).astimezone(self._spec.zone)
        spec = self._spec
        offpeak = local.weekday() >= 5 or local.hour >= spec.offpeak_from_hour or local.hour < spec.offpeak_until_hour
        return spec.offpeak_register if offpeak else 3 - spec.offpeak_register

    def _month_of(self, meter_us: int) -> tuple[int, int]:
        local = _from_us(meter_us).astimezone(self._spec.zone)
        return local.year, local.month

    def _month_start_us(self, year: int, month: int) -> int:
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
        return _to_us(datetime(year, month, 1, tzinfo=self._spec.zone))

    def _synthetic_history(self, months: int) -> list[MonthPeak]:
        """A few plausible past months so a fresh simulator shows a filled 0-0:98.1.0 at once."""
        rng = random.Random(f"quartier-sim-history:{self.seed}")
        year, month = self._month
        history = []
        for back in range(months, 0, -1):
            y, m = year + (month - 1 - back) // 12, (month - 1 - back) % 12 + 1
            begin, end = self._month_start_us(y, m), self._month_start_us(y, m + 1)
            local_day = rng.randrange((end - begin) // (86400 * _US))
            quarter = rng.randrange(17 * 4, 21 * 4)  # evening peaks
            t = begin + (local_day * 86400 + quarter * 900) * _US
            winter = 0.5 + 0.5 * math.cos(2 * math.pi * (m - 1) / 12)
            demand = int(self._scale * rng.uniform(2200, 3800 + 1500 * winter))
            history.append(MonthPeak(_from_us(end), _from_us(t), demand))
        return history

    def _advance(self, end_us: int) -> None:
        """Integrate from the current time to ``end_us``, split at the meter's quarter-hours."""
        a = self._t_us
        while a < end_us:
            meter_a = a + self._offset_us
            self._enter_quarter(meter_a)
            b = min(end_us, (self._quarter + 1) * _QUARTER_US - self._offset_us)
            imp, exp = self._energy(a, b)
            register = self._tariff(meter_a) - 1  # constant within a quarter-hour
            self._exact_import += imp
            self._exact_export += exp
            self._quarter_import += imp
            self._import_carry = _book(self._import, register, self._import_carry + imp)
            self._export_carry = _book(self._export, register, self._export_carry + exp)
            a = b
        self._t_us = max(self._t_us, end_us)
        self._enter_quarter(end_us + self._offset_us)
        self._advance_gas(end_us)

    def _energy(self, a_us: int, b_us: int) -> tuple[float, float]:
        """Exact import and export energy (Wh) of the per-second step function over [a, b)."""
        first, last = a_us // _US, -(-b_us // _US)
        secs = np.arange(first, last, dtype=np.int64)
        load, pv = self._model(secs)
        net = load.sum(axis=0) - pv
        weight = np.ones(secs.size)
        weight[0] -= (a_us - first * _US) / _US
        weight[-1] -= (last * _US - b_us) / _US
        return (float(np.dot(np.maximum(net, 0.0), weight)) / 3600.0,
                float(np.dot(np.maximum(-net, 0.0), weight)) / 3600.0)

    def _enter_quarter(self, meter_us: int) -> None:
        """Close the running quarter-hour if the meter's clock has left it (peak, month change)."""
        quarter = meter_us // _QUARTER_US
        if quarter == self._quarter:
            return
        start = self._quarter * _QUARTER_US
        demand = round(self._quarter_import * 4.0)  # Wh in 15 min -> average W
        if self._month_of(start) == self._month and demand > self._peak_w:
            self._peak_w, self._peak_start_us = demand, start
        self._quarter, self._quarter_import, self._quarter_begin_us = quarter, 0.0, meter_us
        month = self._month_of(quarter * _QUARTER_US)
        if month != self._month:
            if self._peak_start_us is not None:
                stamp = _from_us(self._month_start_us(self._month[0], self._month[1] + 1))
                self._history.append(MonthPeak(stamp, _from_us(self._peak_start_us), self._peak_w))
                del self._history[:-13]
            self._month, self._peak_w, self._peak_start_us = month, 0, None

    def _advance_gas(self, end_us: int) -> None:
        slot = end_us // (_GAS_SLOT_S * _US)  # slots before this one have ended
        self._gas_dm3 += self._gas_slots_dm3(self._gas_slot, slot)
        self._gas_slot = max(self._gas_slot, slot)
        self._gas_capture_us = max(self._gas_capture_us, slot * _GAS_SLOT_S * _US)

    def _gas_slots_dm3(self, first: int, end: int) -> int:
        return int(self._gas_litres(np.arange(first, end, dtype=np.int64)).sum()) if end > first else 0

    # ------------------------------------------------------------------ faults
    def corrupt_next(self, n: int = 1) -> None:
        """Flip one digit in each of the next ``n`` telegrams: the framing survives, the CRC fails."""
        with self._lock:
            self._corrupt_pending += n

    def replace_meter(self, import_wh: tuple[int, int] = (0, 0), export_wh: tuple[int, int] = (0, 0),
                      meter_id: str | None = None) -> None:
        """The grid operator swaps the meter: new equipment id, registers restart near zero.

        The peak history belongs to the old meter and goes with it; the gas meter stays.
        """
        with self._lock:
            self._replacements += 1
            self._meter_id = meter_id if meter_id is not None else _default_id(self.dialect, self.seed, self._replacements)
            self._import, self._export = list(import_wh), list(export_wh)
            self._import_carry = self._export_carry = 0.0
            self._history.clear()
            self._peak_w, self._peak_start_us = 0, None
            self._quarter_import, self._quarter_begin_us = 0.0, self._t_us + self._offset_us

    # ------------------------------------------------------------------ telegrams
    def telegram_at(self, t: datetime) -> bytes:
        """Advance to ``t`` (never backwards) and return the telegram the meter sends at that time."""
        t_us = _to_us(t)
        with self._lock:
            if t_us < self._t_us:
                raise ValueError(f"time must not go backwards: {t.isoformat()} < {self.time.isoformat()}")
            self._advance(t_us)
            body = self._render(t_us)
            if self._corrupt_pending:
                self._corrupt_pending -= 1
                return self._corrupt(body)
            return body

    def _stamp(self, meter_us: int) -> str:
        local = _from_us(meter_us - meter_us % _US).astimezone(self._spec.zone)
        return local.strftime("%y%m%d%H%M%S") + ("S" if local.dst() else "W")

    def _render(self, t_us: int) -> bytes:
        meter_us = t_us + self._offset_us
        shown = np.array([(t_us - 1) // _US], dtype=np.int64)  # the second that just ended
        load, pv = self._model(shown)
        phase_net = load[:, 0] - pv[0] * self._pv_split
        net = float(phase_net.sum())
        volts = self._voltages(shown, phase_net)
        amps = np.abs(phase_net) / volts
        tariff = self._tariff(meter_us)
        emucs = self.dialect == "emucs"
        lines = [self._spec.header, ""]
        if emucs:
            lines += ["0-0:96.1.4(50217)", f"0-0:96.1.1({_hex_id(self._meter_id)})", f"0-0:1.0.0({self._stamp(meter_us)})"]
        else:
            lines += ["1-3:0.2.8(50)", f"0-0:1.0.0({self._stamp(meter_us)})", f"0-0:96.1.1({_hex_id(self._meter_id)})"]
        lines += [
            f"1-0:1.8.1({_kwh(self._import[0])})",
            f"1-0:1.8.2({_kwh(self._import[1])})",
            f"1-0:2.8.1({_kwh(self._export[0])})",
            f"1-0:2.8.2({_kwh(self._export[1])})",
            f"0-0:96.14.0({tariff:04d})",
        ]
        phase_ids = (21, 41, 61)[: self.phases]
        if emucs:
            elapsed_s = (meter_us - self._quarter_begin_us) / _US
            demand = self._quarter_import * 3600.0 / elapsed_s if elapsed_s > 0 else 0.0
            peak_us = self._peak_start_us if self._peak_start_us is not None else self._month_start_us(*self._month)
            history = "".join(f"({self._stamp(_to_us(p.stamp))})({self._stamp(_to_us(p.time))})({_kw(p.demand_w)})"
                              for p in self._history)
            lines += [
                f"1-0:1.4.0({_kw(demand)})",
                f"1-0:1.6.0({self._stamp(peak_us)})({_kw(self._peak_w)})",
                f"0-0:98.1.0({len(self._history)})(1-0:1.6.0)(1-0:1.6.0){history}",
                f"1-0:1.7.0({_kw(max(net, 0.0))})",
                f"1-0:2.7.0({_kw(max(-net, 0.0))})",
            ]
            lines += [f"1-0:{p}.7.0({_kw(max(w, 0.0))})" for p, w in zip(phase_ids, phase_net)]
            lines += [f"1-0:{p + 1}.7.0({_kw(max(-w, 0.0))})" for p, w in zip(phase_ids, phase_net)]
            lines += [f"1-0:{p + 11}.7.0({v:05.1f}*V)" for p, v in zip(phase_ids, volts)]
            lines += [f"1-0:{p + 10}.7.0({a:06.2f}*A)" for p, a in zip(phase_ids, amps)]
            lines += ["0-0:96.3.10(1)", "0-0:17.0.0(999.9*kW)", "1-0:31.4.0(999*A)", "0-0:96.13.0()"]
            if self.gas:
                lines += [
                    "0-1:24.1.0(003)",
                    f"0-1:96.1.1({_hex_id(self._gas_id)})",
                    "0-1:24.4.0(1)",
                    f"0-1:24.2.3({self._stamp(self._gas_capture_us + self._offset_us)})({_m3(self._gas_dm3)})",
                ]
        else:
            lines += [
                f"1-0:1.7.0({_kw(max(net, 0.0))})",
                f"1-0:2.7.0({_kw(max(-net, 0.0))})",
                "0-0:96.7.21(00004)",
                "0-0:96.7.9(00002)",
                "1-0:99.97.0(0)(0-0:96.7.19)",
            ]
            lines += [f"1-0:{p + 11}.32.0(00000)" for p in phase_ids]
            lines += [f"1-0:{p + 11}.36.0(00000)" for p in phase_ids]
            lines += ["0-0:96.13.0()"]
            lines += [f"1-0:{p + 11}.7.0({v:05.1f}*V)" for p, v in zip(phase_ids, volts)]
            lines += [f"1-0:{p + 10}.7.0({round(a):03d}*A)" for p, a in zip(phase_ids, amps)]
            lines += [f"1-0:{p}.7.0({_kw(max(w, 0.0))})" for p, w in zip(phase_ids, phase_net)]
            lines += [f"1-0:{p + 1}.7.0({_kw(max(-w, 0.0))})" for p, w in zip(phase_ids, phase_net)]
            if self.gas:
                lines += [
                    "0-1:24.1.0(003)",
                    f"0-1:96.1.0({_hex_id(self._gas_id)})",
                    f"0-1:24.2.1({self._stamp(self._gas_capture_us + self._offset_us)})({_m3(self._gas_dm3)})",
                ]
        text = ("\r\n".join(lines) + "\r\n!").encode("ascii")
        return text + f"{crc16(text):04X}\r\n".encode("ascii")

    def _voltages(self, shown: np.ndarray, phase_net: np.ndarray) -> np.ndarray:
        """Grid voltage per phase: slow drift and jitter, sagging with import, rising with export."""
        volts = np.empty(self.phases)
        for i, net in enumerate(phase_net):
            key = self._k_volt ^ (i + 1)
            slow = float(_uniform(key, shown // 600)[0])
            jitter = float(_uniform(key ^ 0xABC, shown)[0])
            rise = -0.8 * net / 1000.0 if net > 0 else -2.5 * net / 1000.0
            volts[i] = min(max(229.0 + 6.0 * slow + 0.6 * (jitter - 0.5) + rise, 207.0), 253.0)
        return volts

    def _corrupt(self, telegram: bytes) -> bytes:
        """Change one digit after the header: framing intact, CRC16 catches any single-byte change."""
        body_start = telegram.index(b"\r\n") + 2
        body_end = telegram.rindex(b"!")
        digits = [i for i in range(body_start, body_end) if 48 <= telegram[i] <= 57]
        i = self._fault_rng.choice(digits)
        buf = bytearray(telegram)
        buf[i] = 48 + (buf[i] - 48 + 1) % 10
        return bytes(buf)

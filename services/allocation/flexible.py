"""A member's flexible loads (dishwasher, washing machine, boiler, EV), as declared in the community file.

Used by ``quartier simulate`` to show what following the consume-now signal is worth
(``services/community/flexible_sim.py``); the allocation engine ignores them. A load is one run
every ``every_days`` days: ``energy_kwh`` spread evenly over ``duration_h``, usually started at
``usual``, and, when moved by the signal, started no earlier than ``earliest`` and finished by
``deadline`` (a deadline before the earliest start is the next morning). Times are local, on the
quarter-hour. Presets by ``kind`` fill what is not given::

    [[operations.members]]
    id = "m05"
    flexible = [
      {kind = "dishwasher"},                             # the preset as is
      {kind = "ev", energy_kwh = 10, usual = "19:00"},   # overridden
    ]
"""

from __future__ import annotations

from datetime import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import AllocationInputError

Kind = Literal["dishwasher", "washing_machine", "boiler", "ev", "other"]

# the defaults of each kind; every field can be overridden in the file. Usual times are the evening
# habit (the boiler: the night tariff); the window is what a household can accept when it follows the
# light (load in the morning, done by the evening; the car plugged in from noon, full by 07:00)
PRESETS: dict[str, dict[str, object]] = {
    "dishwasher": {"energy_kwh": 1.2, "duration_h": 2.0, "usual": "19:30", "earliest": "08:00", "deadline": "19:30"},
    "washing_machine": {"energy_kwh": 1.0, "duration_h": 2.0, "usual": "18:00", "earliest": "08:00", "deadline": "18:00"},
    "boiler": {"energy_kwh": 2.5, "duration_h": 3.0, "usual": "01:00", "earliest": "08:00", "deadline": "20:00"},
    "ev": {"energy_kwh": 7.0, "duration_h": 4.0, "power_kw": 3.7, "usual": "18:30", "earliest": "12:00", "deadline": "07:00"},
}


def _hhmm(v: object) -> object:
    if isinstance(v, str):
        try:
            h, m = (int(x) for x in v.strip().split(":"))
        except ValueError:
            raise ValueError(f"{v!r} is not a time of day HH:MM") from None
        if h == 24 and m == 0:
            return time(0, 0)
        if not (0 <= h < 24 and 0 <= m < 60):
            raise ValueError(f"{v!r} is not a time of day HH:MM")
        return time(h, m)
    return v


class FlexibleLoadSetting(BaseModel):
    """One flexible load of a member (see the module docstring); ``power_kw`` is the appliance's maximum
    (a run may not need more than it: energy <= power x duration)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Kind
    energy_kwh: float = Field(gt=0, le=200)
    duration_h: float = Field(gt=0, le=24)
    power_kw: float | None = Field(None, gt=0, le=1000)
    usual: time
    earliest: time
    deadline: time
    every_days: int = Field(1, ge=1, le=31)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("kind") in PRESETS:
            return {**PRESETS[str(data["kind"])], **data}
        return data

    @field_validator("usual", "earliest", "deadline", mode="before")
    @classmethod
    def _times(cls, v: object) -> object:
        return _hhmm(v)

    @field_validator("usual", "earliest", "deadline")
    @classmethod
    def _on_quarter(cls, v: time) -> time:
        if v.minute % 15 or v.second or v.microsecond:
            raise ValueError(f"{v:%H:%M:%S} is not on a quarter-hour (:00, :15, :30, :45)")
        return v

    @field_validator("duration_h")
    @classmethod
    def _whole_quarters(cls, v: float) -> float:
        if abs(v * 4 - round(v * 4)) > 1e-9:
            raise ValueError(f"{v} h is not a whole number of quarter-hours (0.25, 0.5, ... h)")
        return v

    @model_validator(mode="after")
    def _fits(self) -> FlexibleLoadSetting:
        if self.power_kw is not None and self.energy_kwh > self.power_kw * self.duration_h + 1e-9:
            raise AllocationInputError("energy_kwh", f"{self.energy_kwh} kWh does not fit in {self.duration_h} h at "
                                                     f"{self.power_kw} kW: lengthen duration_h or raise power_kw")
        window = (self.quarter(self.deadline) - self.quarter(self.earliest)) % 96 or 96
        if window < self.duration_q:
            raise AllocationInputError("deadline", f"the window {self.earliest:%H:%M}-{self.deadline:%H:%M} is shorter "
                                                   f"than the run ({self.duration_h} h)")
        return self

    @property
    def duration_q(self) -> int:
        return round(self.duration_h * 4)

    @property
    def energy_wh(self) -> int:
        return round(self.energy_kwh * 1000)

    @staticmethod
    def quarter(t: time) -> int:
        """The local quarter-hour of the day (0..95)."""
        return t.hour * 4 + t.minute // 15

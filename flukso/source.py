"""A Fluksometer as a gateway source (``type = "flukso"``): its broker's sensors → the daemon's pipeline.

The table's model lives here, next to the sensor roles it is checked against, so the gateway's
config knows nothing of Fluksometers (gateway/sources.py). paho is imported only when the source
opens.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.logs import get_logger
from gateway.sources import SourceContext, SourceKind, SourceSettings

log = get_logger("quartier.flukso.source")

# the Flukso client's refusal kinds, as the daemon's health names them (gateway/plausibility.py)
_REASONS = {"backwards": "register_drop", "future": "future"}


class FluksoSensor(BaseModel):
    """One Fluksometer sensor: what it measures for which meter (roles: see flukso/sensors.py)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str  # the sensor id, 32 hex digits
    role: Literal["grid_import", "grid_export", "grid_net", "production", "consumption"]
    meter_id: str | None = None  # default: the source's meter_id; a PV or circuit meter gets its own

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-fA-F]{32}", v.strip()):
            raise ValueError("must be a Fluksometer sensor id (32 hexadecimal digits)")
        return v.strip().lower()


class FluksoSettings(SourceSettings):
    """A Fluksometer (FLM02 or FLM03) read from its own MQTT broker. The password, if the broker
    wants one, goes in the secrets file: ``[flukso."<meter_id>"] password = "..."``."""

    credential_keys = frozenset({"username", "password"})
    secret_keys = frozenset({"password"})

    type: Literal["flukso"] = "flukso"
    host: str  # the Fluksometer's address on the LAN
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None  # fixed across restarts (persistent session); default quartier-<hostname>-<meter_id>
    device: str | None = None  # the Fluksometer's device id: its sensor config is checked against sensors
    meter_id: str  # the meter the grid roles feed (a Fluksometer announces no meter id)
    sensors: list[FluksoSensor] = Field(min_length=1)
    username: str | None = None
    password: SecretStr | None = None  # secrets file only
    clock: Literal["pi", "sensor"] = "pi"  # "sensor": trust the Fluksometer's timestamps (emulator, demo)
    stale_after_s: float = Field(default=120, gt=0)  # older samples are not live (retained leftovers)
    future_tolerance_s: float = Field(default=10, ge=0)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    backoff_max_s: float = Field(default=30, gt=0)

    @property
    def runs_on_real_time(self) -> bool:
        return self.clock == "pi"  # "sensor": the Fluksometer's own timestamps (an emulator may run fast)

    def describe(self) -> str:
        return f"flukso:{self.host}:{self.port}"

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", v):
            raise ValueError("must be a Fluksometer device id (32 hexadecimal digits)")
        return v.lower() if v else v

    def role_of(self, meter_id: str) -> str:
        """From the sensors' roles: a meter fed by production sensors is a producer, one fed by
        consumption sensors a circuit, the grid roles' meter the grid."""
        roles = {s.role for s in self.sensors if (s.meter_id or self.meter_id) == meter_id}
        if "production" in roles:
            return "production"
        if "consumption" in roles:
            return "consumption"
        return "grid"

    def meter_ids(self) -> list[str]:
        return list(dict.fromkeys(s.meter_id or self.meter_id for s in self.sensors))

    def serial_of(self, meter_id: str) -> str | None:
        """The meter's first sensor id (32 hex digits, unique to that Fluksometer's clamp or port):
        the meter_id is a name the installer chose and may repeat on another Pi."""
        ids = sorted(s.id for s in self.sensors if (s.meter_id or self.meter_id) == meter_id)
        return ids[0] if ids else None

    @model_validator(mode="after")
    def _roles(self) -> FluksoSettings:
        from flukso.sensors import Assignment, Role, RoleError, plan_meters

        try:
            plan_meters(Assignment(s.id, Role(s.role), s.meter_id or self.meter_id) for s in self.sensors)
        except RoleError as exc:
            raise ValueError(f"sensors: {exc}") from None
        if self.role != "grid":
            raise ValueError("role: a Fluksometer's meters take their role from their sensors' roles")
        return self


def _open(settings: FluksoSettings, ctx: SourceContext):
    """Readings, not telegrams: the client's paho network loop runs in the daemon's reader thread."""
    from flukso.client import client_for_source

    sink = ctx.sink
    client = client_for_source(
        settings,
        on_reading=sink.feed_reading,
        baseline=ctx.baseline,
        clock_synced=ctx.clock_synced,
        # bad Flukso input counts against its meter in health, by reason
        on_rejected=lambda meter_id, kind, detail: sink.count_refused(meter_id, _REASONS.get(kind, kind), detail or kind),
        on_power=lambda p: sink.publish_power(p.meter_id, p.import_w, p.export_w),
    )
    log.info("flukso.source", extra={"broker": client.port, "sensors": len(settings.sensors), "clock": settings.clock,
                                     "meters": len({s.meter_id or settings.meter_id for s in settings.sensors})})
    return client


KIND = SourceKind(settings=FluksoSettings, open=_open)

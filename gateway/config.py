"""Gateway configuration: one TOML file, environment overrides, secrets kept apart.

The file says *what* the node does; secrets (the InfluxDB token, broker passwords) live in a separate
file readable by the service user only (mode 0600) or in the environment, so the config can be shown
to a volunteer, pasted in an issue or kept in git. Any ``QUARTIER_<SECTION>__<KEY>`` variable
overrides the file (``QUARTIER_INFLUX__URL=...``).

A bad config fails at start with the key, the value and the reason: :class:`ConfigError`.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SECRET_KEYS = {("influx", "token")}


class ConfigError(Exception):
    """A configuration problem, worded for the person who edits the file."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class P1Source(_Section):
    """A meter read on its P1 port (DSMR 2.2-5, e-MUCS H) through a serial cable."""

    type: Literal["p1"] = "p1"
    port: str = "/dev/p1"
    baudrate: Literal["auto", 115200, 9600] = "auto"
    # override the id the meter announces (0-0:96.1.1); pseudonymous ids on the wire come later
    meter_id: str | None = None


class SimulatedSource(_Section):
    """A simulated e-MUCS meter on a pseudo-terminal: the demo, and tests without hardware."""

    type: Literal["simulated"] = "simulated"
    speed: float = Field(default=60.0, gt=0, le=3600)
    seed: int = 0
    pv_kwp: float = Field(default=4.0, ge=0, le=100)
    start: str | None = None  # ISO 8601; default: today 10:00 local (the sun is up)


Source = Annotated[P1Source | SimulatedSource, Field(discriminator="type")]


class StoreConfig(_Section):
    path: Path = Path("/var/lib/quartier/quartier.sqlite")
    retention_days: int | None = Field(default=800, ge=1)
    max_mb: int = Field(default=512, ge=1)


class InfluxConfig(_Section):
    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    org: str = "quartier"
    bucket: str = "quartier"
    measurement: str = "quarter_hour"
    token: SecretStr = SecretStr("")
    timeout_s: float = Field(default=10, gt=0)
    backoff_max_s: float = Field(default=300, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class DaemonConfig(_Section):
    timezone: str = "Europe/Brussels"
    # readings further apart than this make the quarter-hours between them "estimated"
    max_interpolation_gap_s: float = Field(default=300, gt=0)
    # runtime state (health file); a tmpfs on a Pi, so the SD card is not written every few seconds
    runtime_dir: Path = Path("/run/quartier")
    health_interval_s: float = Field(default=5, gt=0)
    # the systemd watchdog is fed only while telegrams arrive within this age
    watchdog_max_telegram_age_s: float = Field(default=60, gt=0)
    secrets_file: Path | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone (expected an IANA name such as Europe/Brussels)") from None
        return v


class Config(BaseSettings):
    """The whole node configuration. Field order is the file's section order."""

    model_config = SettingsConfigDict(env_prefix="QUARTIER_", env_nested_delimiter="__", extra="forbid")

    sources: list[Source] = Field(default_factory=lambda: [P1Source()], min_length=1)
    store: StoreConfig = StoreConfig()
    influx: InfluxConfig = InfluxConfig()
    daemon: DaemonConfig = DaemonConfig()

    @model_validator(mode="after")
    def _influx_token(self) -> Config:
        if self.influx.enabled and not self.influx.token.get_secret_value():
            raise ValueError(
                "influx.enabled is true but no token is set: put token in the secrets file "
                "([influx] token = ...) or set QUARTIER_INFLUX__TOKEN"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the environment wins over the file (init kwargs carry the file's content)
        return env_settings, init_settings


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: file not found") from None
    except PermissionError:
        raise ConfigError(f"{what} {path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path}: not valid TOML: {exc}") from None


def _check_secret_mode(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"secrets file {path}: mode {stat.filemode(mode)} lets other users read it; "
            f"run: chmod 600 {path}"
        )


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(exc: ValidationError, data: dict[str, Any]) -> str:
    """``influx.url = 'ftp://x': must start with http:// or https://`` — one line per problem."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and p in ("p1", "simulated"))]
        key = ".".join(loc) or "(file)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt, or not valid in this section)"
        if err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
            continue
        value = err.get("input")
        shown = "" if isinstance(value, dict) or err["type"] == "missing" else f" = {value!r}"
        if key.endswith("token"):
            shown = " = '***'"
        lines.append(f"{key}{shown}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path | None) -> Config:
    """Load and validate; raise :class:`ConfigError` naming each bad key, its value and the reason."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_toml(Path(path), "config")
    for section, key in SECRET_KEYS:
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(
                f"{section}.{key}: secrets do not belong in the config file; move it to the secrets file "
                f"(daemon.secrets_file, mode 0600) or the environment (QUARTIER_{section.upper()}__{key.upper()})"
            )
    daemon = data.get("daemon")
    secrets_path = daemon.get("secrets_file") if isinstance(daemon, dict) else None
    secrets_path = os.environ.get("QUARTIER_DAEMON__SECRETS_FILE", secrets_path)
    if secrets_path:
        sp = Path(secrets_path)
        secrets = _read_toml(sp, "secrets file")
        _check_secret_mode(sp)
        data = _merge(data, secrets)
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError("invalid configuration:\n" + format_validation_error(exc, data)) from None


EXAMPLE = """\
# Quartier gateway configuration. Every key is optional; shown values are the defaults.
# Secrets (influx token) go in daemon.secrets_file (chmod 600) or QUARTIER_INFLUX__TOKEN.

[[sources]]
type = "p1"             # the meter's P1 port
port = "/dev/p1"        # stable name given by deploy/99-quartier-p1.rules
baudrate = "auto"       # 115200 8N1 (DSMR 4/5, e-MUCS) or 9600 7E1 (DSMR 2.2/3), detected

[store]
path = "/var/lib/quartier/quartier.sqlite"
retention_days = 800    # closed quarter-hours kept locally (pushed ones only are ever deleted)
max_mb = 512            # alarm above this size

[influx]
enabled = false
url = "http://127.0.0.1:8086"
org = "quartier"
bucket = "quartier"

[daemon]
timezone = "Europe/Brussels"
runtime_dir = "/run/quartier"
# secrets_file = "/etc/quartier/secrets.toml"
"""

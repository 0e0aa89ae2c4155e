"""Gateway configuration: one TOML file, environment overrides, secrets kept apart.

The file says *what* the node does; secrets (the InfluxDB token, broker passwords) live in a separate
file readable by the service user only (mode 0600) or in the environment, so the config can be shown
to a volunteer, pasted in an issue or kept in git. Any ``QUARTIER_<SECTION>__<KEY>`` variable
overrides the file (``QUARTIER_INFLUX__URL=...``).

A bad config fails at start with the key, the value and the reason: :class:`ConfigError`.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.sources import SourceSettings, source_kind, source_kind_names, source_settings

SECRET_KEYS = {("influx", "token"), ("web", "token"), ("mqtt", "password"), ("uplink", "password")}


class ConfigError(Exception):
    """A configuration problem, worded for the person who edits the file."""


class _Section(BaseModel):
    # inf and nan are floats to TOML but never a sensible setting (a gap of inf s disables estimation)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)




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
    # the live measurement (gateway/sinks/influx_live.py): each meter's latest reading every this many
    # seconds, besides the quarter-hours; unset: off. Never through the outbox; bounded when down.
    live_interval_s: float | None = Field(default=None, ge=1, le=3600)
    live_measurement: str = Field(default="live", min_length=1)
    live_max_points: int = Field(default=2000, ge=1, le=100_000)  # kept while the database is down

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
    # the systemd watchdog is fed only while readings are *accepted* within this age
    watchdog_max_telegram_age_s: float = Field(default=60, gt=0)
    # meter plausibility (gateway/plausibility.py): the default bound on a register step, W, for sources
    # that set no max_power_w: 3 x 400 V x 63 A, the largest residential connection
    max_power_w: float = Field(default=43_650, gt=0, le=10_000_000, allow_inf_nan=False)
    # a meter time further than this from the synchronised Pi clock is refused (sources with clock_check "pi")
    clock_tolerance_s: float = Field(default=900, ge=1, le=31 * 86400, allow_inf_nan=False)
    # a register drop or jump, or a clock jump, is believed once this many consistent readings show it
    confirm_readings: int = Field(default=3, ge=2, le=100)
    secrets_file: Path | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone (expected an IANA name such as Europe/Brussels)") from None
        return v


class SignalConfig(_Section):
    """Consume-now signal (services/signal.py): thresholds in W of projected quarter-hour surplus."""

    green_enter_w: float = Field(default=500, ge=0)
    green_exit_w: float = Field(default=250, ge=0)
    red_enter_w: float = 0
    red_exit_w: float = 150
    hold_s: float = Field(default=120, ge=0, le=3600)  # minimum time a state is shown
    max_hold_s: float = Field(default=600, ge=0, le=3600)  # a flapping light's hold doubles up to this
    max_changes_per_hour: int = Field(default=4, ge=0, le=60)  # in any rolling hour; 0: no budget
    stale_after_s: float = Field(default=30, gt=0)

    @model_validator(mode="after")
    def _order(self) -> SignalConfig:
        if not self.red_enter_w < self.red_exit_w <= self.green_enter_w:
            raise ValueError("need red_enter_w < red_exit_w <= green_enter_w")
        if not self.red_enter_w < self.green_exit_w <= self.green_enter_w:
            raise ValueError("need red_enter_w < green_exit_w <= green_enter_w")
        return self


def _tariff_key(v: str) -> str:
    if not re.fullmatch(r"[1-9]", v):
        raise ValueError('must be a meter tariff number as a string, "1" to "9" (1-0:1.8.1 is tariff "1")')
    return v


# a meter tariff as the P1 parser numbers it ("1" to "4"; "0" is a total-only meter's one register)
TariffKey = Annotated[str, AfterValidator(_tariff_key)]


class WebConfig(_Section):
    """The node's web service (``quartier web``): page, API, live stream."""

    host: str = "0.0.0.0"  # read endpoints are open on the LAN by default
    port: int = Field(default=8080, ge=1, le=65535)
    token: SecretStr = SecretStr("")  # bearer token for state-changing endpoints (secrets file)
    cors_origins: list[str] = Field(default_factory=list)  # no CORS unless listed
    meter_id: str | None = None  # the meter the page shows (default: the first one seen)
    language: Literal["auto", "fr", "nl", "en"] = "auto"
    grid_price_eur_kwh: float | None = Field(default=None, ge=0)  # for the savings figure
    # per meter tariff, as the P1 registers number them (1-0:1.8.1 -> "1"): Belgian e-MUCS 1 = day,
    # 2 = night; Dutch DSMR 1 = low (dal), 2 = normal. Precedes grid_price_eur_kwh for import, which
    # stays the price of a tariff without its own
    grid_price_eur_kwh_by_tariff: dict[TariffKey, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    # the tariffs' names on the page: "day", "night", "low", "normal" are translated, other words shown as written
    tariff_names: dict[TariffKey, Annotated[str, Field(min_length=1, max_length=24)]] = Field(default_factory=dict)
    shared_price_eur_kwh: float | None = Field(default=None, ge=0)
    # the fee the member's supplier charges per meter and year for taking part in sharing (incl. VAT;
    # Engie 121, Eneco 74.20, Luminus 150, Cociter 84.80): the savings figure subtracts it honestly
    supplier_sharing_fee_eur_year: float | None = Field(default=None, ge=0, le=10_000)
    stream_interval_s: float = Field(default=1.0, ge=0.2, le=60)
    signal: SignalConfig = SignalConfig()


class MqttConfig(_Section):
    """The home-automation feed (Home Assistant discovery) on the node's broker."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr = SecretStr("")  # secrets file
    base_topic: str = "quartier"
    node_id: str | None = None  # default: the grid meter's serial (stable across host names)
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # powers, voltages, currents at most every this many seconds; registers, tariff and gas on change
    power_interval_s: float = Field(default=5.0, ge=0, le=3600)
    # the node's page, linked from Home Assistant's device page; default http://<hostname>.local:<web.port>/
    configuration_url: str | None = None
    # also DSMR-reader's topics (services/node/dsmr_reader.py) for Home Assistant's DSMR Reader
    # integration, which listens under "dsmr" only; another prefix is for a bridge or another tool
    dsmr_reader_topics: bool = False
    dsmr_reader_prefix: str = "dsmr"

    @field_validator("configuration_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @field_validator("base_topic", "discovery_prefix", "dsmr_reader_prefix")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not v or any(c in v for c in "+#\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError("must be a topic without wildcards (+ #) and without a leading or trailing /")
        return v

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
            raise ValueError("only letters, digits, _ and - (Home Assistant's rule for discovery ids)")
        return v


class UplinkConfig(_Section):
    """The community uplink (``gateway.uplink``): closed quarter-hours and the live summary to the
    community broker; the operation's totals and signal come back. ``quartier community provision``
    writes this section and the password for a new gateway."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8883, ge=1, le=65535)
    ca_file: Path | None = None  # the community CA; unset = plain TCP (loopback tests only)
    community: str | None = None
    operation: str | None = None
    pseudonym: str | None = None  # this meter's pseudonymous id, also the broker username
    password: SecretStr = SecretStr("")  # secrets file
    meter_id: str | None = None  # the local meter that is this member; unset = every local meter
    live_interval_s: float = Field(default=5.0, gt=0)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # the broker keeps the daemon's MQTT session (and queues this member's allocations) this long
    # while the node is offline; 0 = no persistent session (allocations sent meanwhile are lost)
    session_expiry_s: int = Field(default=7 * 86400, ge=0, le=2**32 - 1)

    @field_validator("community", "operation", "pseudonym")
    @classmethod
    def _segment(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v):
            raise ValueError("only letters, digits, '_', '.' and '-' (a topic level), at most 64")
        return v


class Config(BaseSettings):
    """The whole node configuration. Field order is the file's section order."""

    model_config = SettingsConfigDict(env_prefix="QUARTIER_", env_nested_delimiter="__", extra="forbid",
                                      allow_inf_nan=False)

    # each table validated by its kind's own model (gateway/sources.py), imported only when named
    sources: list[SourceSettings] = Field(default_factory=lambda: [{"type": "p1"}], min_length=1, validate_default=True)
    store: StoreConfig = StoreConfig()
    influx: InfluxConfig = InfluxConfig()
    daemon: DaemonConfig = DaemonConfig()
    web: WebConfig = WebConfig()
    mqtt: MqttConfig = MqttConfig()
    uplink: UplinkConfig = UplinkConfig()

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, items: Any) -> Any:
        return source_settings(items) if isinstance(items, list) else items

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


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The file's tables, or a :class:`ConfigError` naming the file: never a bare ``OSError`` or
    ``UnicodeDecodeError`` (issue 13: those ended as "internal error" without the file's name)."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: file not found") from None
    except PermissionError:
        raise ConfigError(f"{what} {path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path}: is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path}: not valid TOML: {exc}") from None


def check_secret_mode(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"secrets file {path}: mode {stat.filemode(mode)} lets other users read it; "
            f"run: chmod 600 {path}"
        )


def merge_tables(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(exc: ValidationError, data: dict[str, Any]) -> str:
    """``influx.url = 'ftp://x': must start with http:// or https://`` — one line per problem."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "(file)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt, or not valid in this section)"
        if err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
            continue
        value = err.get("input")
        shown = "" if isinstance(value, dict) or err["type"] == "missing" else f" = {value!r}"
        if any(part.endswith(("token", "tokens", "password", "secret")) for part in loc):
            shown = " = '***'"  # a secret's value never reaches a log or a terminal
        lines.append(f"{key}{shown}: {msg}")
    return "\n".join(lines)


def _refuse_source_secrets(data: dict[str, Any]) -> None:
    """A source's credentials (a Fluksometer's broker password) live in the secrets file, keyed by the
    source's type and meter_id: ``[flukso."home"] password = ...``."""
    for name in source_kind_names():
        kind = source_kind(name) if name in data else None
        if kind is not None and kind.settings.credential_keys:
            raise ConfigError(
                f"{name}: credentials do not belong in the config file; move the section to the "
                "secrets file (daemon.secrets_file, mode 0600)"
            )
    sources = data.get("sources")
    for i, src in enumerate(sources if isinstance(sources, list) else []):
        kind = source_kind(src["type"]) if isinstance(src, dict) and isinstance(src.get("type"), str) else None
        for key in sorted(set(src) & kind.settings.secret_keys) if kind else ():
            raise ConfigError(
                f"sources.{i}.{key}: secrets do not belong in the config file; put it in the secrets file "
                f"(daemon.secrets_file, mode 0600) as [{src['type']}.\"{src.get('meter_id', '<meter_id>')}\"] {key} = \"...\""
            )


def _apply_source_secrets(data: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
    """``[<type>."<meter_id>"] password = ...`` (and username) from the secrets file onto that source."""
    sources = data.get("sources") if isinstance(data.get("sources"), list) else []
    for name in source_kind_names():
        section = secrets.get(name)
        kind = source_kind(name) if section is not None else None
        if kind is None or not kind.settings.credential_keys:
            continue
        if not isinstance(section, dict):
            raise ConfigError(f'secrets file: {name}: expected sections [{name}."<meter_id>"] with password = "..."')
        for meter_id, creds in section.items():
            targets = [s for s in sources if isinstance(s, dict) and s.get("type") == name and s.get("meter_id") == meter_id]
            if not targets:
                raise ConfigError(f"secrets file: {name}.{meter_id}: no {name} source has meter_id {meter_id!r}")
            if not isinstance(creds, dict) or set(creds) - kind.settings.credential_keys:
                raise ConfigError(f"secrets file: {name}.{meter_id}: only {' and '.join(sorted(kind.settings.credential_keys))} belong here")
            for src in targets:
                src.update(creds)
        secrets = {k: v for k, v in secrets.items() if k != name}
    return secrets


def refuse_non_secrets(secrets: dict[str, Any], allowed: set[tuple[str, str]], path: Path) -> None:
    """The secrets file holds secrets only: a setting there would silently override the config file
    that a volunteer reads and checks (issue 13: it could move ``store.path``)."""
    for section, table in secrets.items():
        keys = sorted(table) if isinstance(table, dict) else [None]
        for key in keys:
            if (section, key) not in allowed:
                name = section if key is None else f"{section}.{key}"
                raise ConfigError(f"secrets file {path}: {name} is not a secret; it belongs in the config file "
                                  f"(the secrets file holds only {', '.join(sorted(f'{s}.{k}' for s, k in allowed))})")


def load_config(path: str | Path | None) -> Config:
    """Load and validate; raise :class:`ConfigError` naming each bad key, its value and the reason."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(Path(path), "config")
    for section, key in SECRET_KEYS:
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(
                f"{section}.{key}: secrets do not belong in the config file; move it to the secrets file "
                f"(daemon.secrets_file, mode 0600) or the environment (QUARTIER_{section.upper()}__{key.upper()})"
            )
    _refuse_source_secrets(data)
    daemon = data.get("daemon")
    secrets_path = daemon.get("secrets_file") if isinstance(daemon, dict) else None
    secrets_path = os.environ.get("QUARTIER_DAEMON__SECRETS_FILE", secrets_path)
    if secrets_path:
        sp = Path(secrets_path)
        secrets = read_toml(sp, "secrets file")
        check_secret_mode(sp)
        secrets = _apply_source_secrets(data, secrets)
        refuse_non_secrets(secrets, SECRET_KEYS, sp)
        data = merge_tables(data, secrets)
    try:
        return Config(**data)
    except ValidationError as exc:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid configuration{where}:\n" + format_validation_error(exc, data)) from None


EXAMPLE = """\
# Quartier gateway configuration. Every key is optional; shown values are the defaults.
# Secrets (influx token) go in daemon.secrets_file (chmod 600) or QUARTIER_INFLUX__TOKEN.

[[sources]]
type = "p1"             # the meter's P1 port
port = "/dev/p1"        # stable name given by deploy/99-quartier-p1.rules
baudrate = "auto"       # 115200 8N1 (DSMR 4/5, e-MUCS) or 9600 7E1 (DSMR 2.2/3), detected
# max_flow = { gas = 10, water = 5 }  # MBus sub-meters: m3/h they can pass (G6 gas, Q3 4 water meter)

# [[sources]]           # a Fluksometer (FLM02/FLM03) on the LAN; `quartier flukso listen` lists its sensors
# type = "flukso"
# host = "192.168.1.50"
# meter_id = "home"     # the grid meter the roles below feed
# sensors = [
#   { id = "<32 hex>", role = "grid_import" },          # FLM03 P1 pplus (or grid_net: FLM02 P1)
#   { id = "<32 hex>", role = "grid_export" },          # FLM03 P1 pminus
#   { id = "<32 hex>", role = "production", meter_id = "home-pv" },  # the inverter's circuit
# ]
# password: secrets file, [flukso."home"] password = "..."

[store]
path = "/var/lib/quartier/quartier.sqlite"
retention_days = 800    # closed quarter-hours kept locally (pushed ones only are ever deleted)
max_mb = 512            # alarm above this size

[influx]
enabled = false
url = "http://127.0.0.1:8086"
org = "quartier"
bucket = "quartier"
# live_interval_s = 10  # also each meter's live power, per-phase values, registers and gas (measurement "live")

[daemon]
timezone = "Europe/Brussels"
runtime_dir = "/run/quartier"
max_power_w = 43650     # largest register step believed, as W x elapsed time (per source: max_power_w)
clock_tolerance_s = 900 # meter time this far from the synchronised Pi clock is refused
confirm_readings = 3    # a register drop or clock jump is believed once it persists this many readings
# secrets_file = "/etc/quartier/secrets.toml"

[web]                   # quartier web: the page, the API and the live stream
host = "0.0.0.0"        # read endpoints open on the LAN; state changes need web.token (secrets file)
port = 8080
# grid_price_eur_kwh = 0.32     # to show savings on shared energy
# shared_price_eur_kwh = 0.15
# grid_price_eur_kwh_by_tariff = { "1" = 0.34, "2" = 0.27 }   # per meter tariff (e-MUCS: 1 day, 2 night)
# tariff_names = { "1" = "day", "2" = "night" }               # DSMR (NL): 1 low ("low"), 2 normal ("normal")

[web.signal]            # consume-now signal, W of projected quarter-hour surplus
green_enter_w = 500
green_exit_w = 250
hold_s = 120
max_changes_per_hour = 4   # the light changes at most this often in any hour (0: no limit)

[mqtt]                  # Home Assistant feed; mqtt.password goes in the secrets file
enabled = false
host = "127.0.0.1"
port = 1883
base_topic = "quartier"
discovery_prefix = "homeassistant"
power_interval_s = 5    # powers at most this often; registers, tariff and gas when they change
# dsmr_reader_topics = true   # also DSMR-reader's topics, for Home Assistant's DSMR Reader integration
# dsmr_reader_prefix = "dsmr" # the integration listens under "dsmr" only
"""

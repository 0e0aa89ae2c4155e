"""The community server's configuration: one TOML file plus a secrets file (mode 0600).

``quartier community --config FILE`` reads it; errors name the key. Secrets (the pseudonym secret,
the broker password, the InfluxDB token, the operator API tokens) are refused in the main file.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

# one reader, one secrets check and one error format for every Quartier configuration file
from gateway.config import (
    ConfigError,
    check_secret_mode,
    format_validation_error,
    merge_tables,
    read_toml,
    refuse_non_secrets,
)
from services.community.admission import DEFAULT_FUTURE_TOLERANCE_S, DEFAULT_MAX_AGE_S, DEFAULT_MAX_POWER_W
from services.community.reconcile import MAPPINGS, ColumnMapping, ReconcileError, build_mapping


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class MeterClockSection(_S):
    """``[server.meter_clock]``: the meters' clock when they are simulated (``quartier community demo``):
    ``start`` at the real instant ``origin``, ``speed`` times faster. Collective alert windows are
    judged on it, as the nodes judge them on their meters' time; unset, the real clock."""

    start: datetime
    origin: datetime
    speed: float = Field(gt=0, le=3600)

    @field_validator("start", "origin")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2026-06-21T11:00:00+02:00)")
        return v


class ServerSection(_S):
    community_file: Path
    database: Path = Path("/var/lib/quartier/community.sqlite")
    operations: list[str] = Field(default_factory=list)  # this shard's operations; empty = all
    shard: str | None = None  # "K/N": this process owns the operations rendezvous hashing gives shard K of N

    @field_validator("shard")
    @classmethod
    def _shard(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", v)
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise ValueError('"K/N" with 1 <= K <= N, e.g. "2/3" for the second of three server processes')
        return f"{int(m.group(1))}/{int(m.group(2))}"

    @model_validator(mode="after")
    def _one_way_to_shard(self) -> ServerSection:
        if self.shard and self.operations:
            raise ValueError("server.shard and server.operations: set one of them (a list, or a hash share)")
        return self

    def operation_ids(self, community: str, all_ids: list[str]) -> list[str] | None:
        """This process's operations: the list, the hash share, or ``None`` for all of them."""
        if self.operations:
            return list(self.operations)
        if self.shard:
            from services.community.roster import shard_operations

            k, n = (int(x) for x in self.shard.split("/"))
            return shard_operations(community, all_ids, k - 1, n)
        return None
    share_group: str | None = None  # MQTT v5 shared subscription group (docs/fleet.md)
    deadline_s: float = Field(default=300, ge=0)  # after a quarter-hour's end: allocate with estimates
    totals_interval_s: float = Field(default=2.0, gt=0)
    live_stale_s: float = Field(default=30.0, gt=0)
    # admission (services/community/admission.py): the window of quarter-hour starts the server accepts,
    # on its own clock, and the maximum power of a member without max_power_w in the community file
    max_age_s: float = Field(default=DEFAULT_MAX_AGE_S, gt=0)  # the nodes' resend horizon: 40 days
    future_tolerance_s: float = Field(default=DEFAULT_FUTURE_TOLERANCE_S, ge=0)  # a meter clock ahead
    default_max_power_w: float = Field(default=DEFAULT_MAX_POWER_W, gt=0)  # 3 x 400 V x 63 A
    pseudonym_secret: SecretStr = SecretStr("")  # secrets file
    meter_clock: MeterClockSection | None = None  # the demo's simulated meters; None: real time


class BrokerSection(_S):
    host: str = "127.0.0.1"
    port: int = Field(default=8883, ge=1, le=65535)
    ca_file: Path | None = None  # None: plain TCP (loopback only)
    username: str | None = None
    password: SecretStr = SecretStr("")  # secrets file
    # the broker ties a client id to its user (use_username_as_clientid): with a username the server
    # connects as that client id, so every shard needs its own user; without one (a loopback broker
    # for tests), this id, with "-KofN" appended under server.shard
    client_id: str = "quartier-community"
    # the server's persistent session: the broker queues the nodes' quarter-hours while it is down
    session_expiry_s: int = Field(default=7 * 86400, ge=0, le=4294967295)


class InfluxSection(_S):
    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    org: str = "quartier"
    bucket: str = "community"
    token: SecretStr = SecretStr("")  # secrets file
    measurement: str = "allocation"


class ApiSection(_S):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    tokens: list[SecretStr] = Field(default_factory=list)  # secrets file: operator bearer tokens


class ReconcileMapping(_S):
    """``[reconcile.mappings.<name>]``: a grid operator's file layout (fields: services/community/reconcile.py).

    Either every required field (ean, start, received, start_format) or ``base = "<preset>"`` plus the
    fields that differ from it (typically ``registers`` for a Fluvius export)."""

    base: str | None = None
    ean: str | None = None
    start: str | None = None
    start_time: str | None = None
    start_format: str | None = None
    period: str | None = None
    received: str | None = None
    unit: str | None = None
    unit_column: str | None = None
    register_: str | None = Field(default=None, alias="register")  # "register" would shadow ABC.register
    registers: list[str] | None = None
    empty: str | None = None
    delimiter: str | None = None
    decimal: str | None = None
    timezone: str | None = None
    injection: str | None = None  # a producer's shared injection: a column of the same row...
    injection_registers: list[str] | None = None  # ...or the register values that hold it


    def mapping(self) -> ColumnMapping:
        """The complete mapping; :class:`ReconcileError` starting with the field's name if it is not."""
        values = self.model_dump(exclude_none=True, by_alias=True)
        for key in ("registers", "injection_registers"):
            if key in values:
                values[key] = tuple(values[key])
        return build_mapping(values, MAPPINGS)


class ReconcileSection(_S):
    mappings: dict[str, ReconcileMapping] = Field(default_factory=dict)

    def resolved(self) -> dict[str, ColumnMapping]:
        """Config mappings by name (they take precedence over presets of the same name)."""
        return {name: m.mapping() for name, m in self.mappings.items()}


class ServerConfig(_S):
    server: ServerSection
    broker: BrokerSection = BrokerSection()
    influx: InfluxSection = InfluxSection()
    api: ApiSection = ApiSection()
    reconcile: ReconcileSection = ReconcileSection()


SECRETS = {("server", "pseudonym_secret"), ("broker", "password"), ("influx", "token"), ("api", "tokens")}


def load_server_config(path: str | Path, secrets_file: str | Path | None = None) -> ServerConfig:
    path = Path(path)
    data = read_toml(path, "config")
    for section, key in SECRETS:
        if key in (data.get(section) or {}):
            raise ConfigError(f"{section}.{key}: secrets do not belong in the config file; put it in the secrets file")
    secrets_path = secrets_file or data.pop("secrets_file", None)
    if secrets_path:
        sp = (path.parent / secrets_path) if not Path(secrets_path).is_absolute() else Path(secrets_path)
        secrets = read_toml(sp, "secrets file")
        check_secret_mode(sp)
        refuse_non_secrets(secrets, SECRETS, sp)
        data = merge_tables(data, secrets)
    server = data.get("server") or {}
    if "community_file" in server and not Path(server["community_file"]).is_absolute():
        server["community_file"] = str(path.parent / server["community_file"])
    try:
        cfg = ServerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration in {path}:\n" + format_validation_error(exc, data)) from None
    for name, mapping in cfg.reconcile.mappings.items():
        try:
            mapping.mapping()
        except ReconcileError as exc:  # the message starts with the field: "unit = 'MWh': kWh or Wh"
            raise ConfigError(f"invalid configuration in {path}:\nreconcile.mappings.{name}.{exc}") from None
    if not cfg.server.pseudonym_secret.get_secret_value():
        raise ConfigError("server.pseudonym_secret: missing (secrets file): it maps meters to their pseudonyms")
    return cfg

"""The community server's configuration: one TOML file plus a secrets file (mode 0600).

``quartier community --config FILE`` reads it; errors name the key. Secrets (the pseudonym secret,
the broker password, the InfluxDB token, the operator API tokens) are refused in the main file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

# one reader, one secrets check and one error format for every Quartier configuration file
from gateway.config import ConfigError, check_secret_mode, format_validation_error, merge_tables, read_toml


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSection(_S):
    community_file: Path
    database: Path = Path("/var/lib/quartier/community.sqlite")
    operations: list[str] = Field(default_factory=list)  # this shard's operations; empty = all
    share_group: str | None = None  # MQTT v5 shared subscription group (docs/fleet.md)
    deadline_s: float = Field(default=300, ge=0)  # after a quarter-hour's end: allocate with estimates
    totals_interval_s: float = Field(default=2.0, gt=0)
    live_stale_s: float = Field(default=30.0, gt=0)
    pseudonym_secret: SecretStr = SecretStr("")  # secrets file


class BrokerSection(_S):
    host: str = "127.0.0.1"
    port: int = Field(default=8883, ge=1, le=65535)
    ca_file: Path | None = None  # None: plain TCP (loopback only)
    username: str | None = None
    password: SecretStr = SecretStr("")  # secrets file
    client_id: str = "quartier-community"


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


class ServerConfig(_S):
    server: ServerSection
    broker: BrokerSection = BrokerSection()
    influx: InfluxSection = InfluxSection()
    api: ApiSection = ApiSection()


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
        data = merge_tables(data, secrets)
    server = data.get("server") or {}
    if "community_file" in server and not Path(server["community_file"]).is_absolute():
        server["community_file"] = str(path.parent / server["community_file"])
    try:
        cfg = ServerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("invalid configuration:\n" + format_validation_error(exc, data)) from None
    if not cfg.server.pseudonym_secret.get_secret_value():
        raise ConfigError("server.pseudonym_secret: missing (secrets file): it maps meters to their pseudonyms")
    return cfg

"""The files a provisioned gateway receives: its ``[uplink]`` section, its broker password (a 0600
secrets file) and the community CA. Written by ``quartier community provision`` and by the community
demo, read by an installer or by ``quartier demo --join DIR``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

CA_INSTALLED = "/etc/quartier/community-ca.crt"  # where deploy/install.sh puts the CA on a node


@dataclass(frozen=True)
class GatewayFiles:
    member: str
    community: str
    operation: str
    pseudonym: str  # also the broker username
    meter: str  # the member's EAN: the node's own meter id, never sent on the wire
    host: str
    port: int
    password: str


def write_secret(path: Path, text: str) -> None:
    """Create or replace ``path`` readable by its owner only (never world-readable, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def write_gateway_files(out: Path, g: GatewayFiles, ca_cert: Path) -> Path:
    """``out/uplink.toml``, ``out/uplink-secrets.toml`` (0600) and ``out/community-ca.crt``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "community-ca.crt").write_bytes(ca_cert.read_bytes())
    q = json.dumps  # a TOML basic string is a JSON string for these values
    (out / "uplink.toml").write_text(
        f"# add to /etc/quartier/quartier.toml: the community uplink of member {g.member}\n"
        f"[uplink]\nenabled = true\nhost = {q(g.host)}\nport = {g.port}\nca_file = {q(CA_INSTALLED)}\n"
        f"community = {q(g.community)}\noperation = {q(g.operation)}\npseudonym = {q(g.pseudonym)}\n"
        f"meter_id = {q(g.meter)}\n")
    write_secret(out / "uplink-secrets.toml",
                 f"# add to the gateway's secrets file (mode 0600)\n[uplink]\npassword = {q(g.password)}\n")
    return out

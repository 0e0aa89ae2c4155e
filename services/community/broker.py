"""The community broker's security: a CA, a TLS server certificate, per-gateway users and ACLs.

Why per-gateway users with the pseudonym as the username: the ACL gives each username exactly its
own meter's topics inside its own operation (publish) plus its own allocation and its operation's
totals (read); nothing else, not even another operation's totals. A gateway cannot publish as another meter nor read another member's data,
whatever its software does.

Files in the broker directory (all generated, regenerated on every provisioning)::

    ca.crt ca.key            the community CA (key stays on the server; ca.crt goes to every gateway)
    server.crt server.key    the broker's TLS certificate, signed by the CA
    passwd                   Mosquitto password file (PBKDF2 hashes written by mosquitto_passwd)
    acl                      the ACL file
    gateways.json            pseudonym -> operation: the source the ACL is generated from
    mosquitto.conf           listener, TLS, password_file, acl_file

Certificates and hashes come from the Debian ``openssl`` and ``mosquitto`` binaries (subprocess),
never from hand-rolled crypto. A reload (SIGHUP, ``systemctl reload mosquitto``) picks up new users.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.logs import get_logger
from gateway.wire import check_segment

log = get_logger("quartier.community.broker")

OPENSSL = "openssl"
MOSQUITTO_PASSWD = "mosquitto_passwd"


class BrokerSetupError(Exception):
    """A certificate, password or ACL could not be produced (the message says which and why)."""


def _run(cmd: Sequence[str], what: str) -> None:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise BrokerSetupError(f"{what}: {cmd[0]} not found (apt-get install openssl mosquitto)") from None
    if done.returncode != 0:
        raise BrokerSetupError(f"{what}: {cmd[0]} failed: {done.stderr.strip()[:400]}")


@dataclass(frozen=True)
class BrokerDir:
    """Where one community broker's security files live."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def passwd(self) -> Path:
        return self.root / "passwd"

    @property
    def acl(self) -> Path:
        return self.root / "acl"

    @property
    def registry(self) -> Path:
        return self.root / "gateways.json"

    @property
    def conf(self) -> Path:
        return self.root / "mosquitto.conf"


# -- certificates --------------------------------------------------------------------------------


def make_ca(d: BrokerDir, community: str, days: int = 3650) -> None:
    """A self-signed community CA (EC P-256); kept if it exists (re-issuing would orphan gateways)."""
    d.root.mkdir(parents=True, exist_ok=True)
    if d.ca_cert.exists() and d.ca_key.exists():
        return
    _run([OPENSSL, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(d.ca_key)], "CA key")
    os.chmod(d.ca_key, 0o600)
    _run(
        [OPENSSL, "req", "-x509", "-new", "-key", str(d.ca_key), "-sha256", "-days", str(days),
         "-subj", f"/O=Quartier/CN={community} community CA", "-out", str(d.ca_cert),
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        "CA certificate",
    )


def issue_server_cert(d: BrokerDir, hostnames: Sequence[str], days: int = 825) -> None:
    """The broker's certificate for ``hostnames`` (DNS names or IP addresses), signed by the CA."""
    if not hostnames:
        raise BrokerSetupError("server certificate: at least one host name or address is needed")
    sans = ",".join(("IP:" if _is_ip(h) else "DNS:") + h for h in hostnames)
    csr = d.root / "server.csr"
    ext = d.root / "server.ext"
    _run([OPENSSL, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(d.server_key)], "server key")
    os.chmod(d.server_key, 0o600)
    _run([OPENSSL, "req", "-new", "-key", str(d.server_key), "-subj", f"/O=Quartier/CN={hostnames[0]}", "-out", str(csr)],
         "server CSR")
    ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    _run(
        [OPENSSL, "x509", "-req", "-in", str(csr), "-CA", str(d.ca_cert), "-CAkey", str(d.ca_key), "-CAcreateserial",
         "-days", str(days), "-sha256", "-extfile", str(ext), "-out", str(d.server_cert)],
        "server certificate",
    )
    csr.unlink(missing_ok=True)
    ext.unlink(missing_ok=True)


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


# -- users and ACL -------------------------------------------------------------------------------


def set_passwords(d: BrokerDir, passwords: Mapping[str, str]) -> None:
    """Add or replace users in the password file, hashed by ``mosquitto_passwd -U`` in one run."""
    for user in passwords:
        check_segment(user, "broker user")
    d.root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=d.root, prefix=".new-", delete=False) as fh:
        fh.write("".join(f"{u}:{p}\n" for u, p in passwords.items()))
        plain = Path(fh.name)
    try:
        os.chmod(plain, 0o600)
        _run([MOSQUITTO_PASSWD, "-U", str(plain)], "password hashing")
        hashed = {line.split(":", 1)[0]: line for line in plain.read_text().splitlines() if ":" in line}
    finally:
        plain.unlink(missing_ok=True)
    kept = []
    if d.passwd.exists():
        kept = [line for line in d.passwd.read_text().splitlines() if line.split(":", 1)[0] not in hashed]
    tmp = d.passwd.with_suffix(".tmp")
    tmp.write_text("\n".join(kept + list(hashed.values())) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(d.passwd)


def acl_text(community: str, gateways: Mapping[str, str], servers: Sequence[str]) -> str:
    """The ACL: each gateway (its username is its pseudonymous meter id) writes only its own meter's
    topics in its own operation and reads only its own allocation, its own resend requests and its
    operation's totals and alerts; the community-server users read every meter and write totals, alerts,
    allocations and resend requests."""
    c = check_segment(community, "community")
    lines = ["# generated by quartier community provision: do not edit, re-run provisioning instead", ""]
    for user in servers:
        lines += [
            f"user {check_segment(user, 'server user')}",
            f"topic read quartier/{c}/op/+/meter/+/qh",
            f"topic read quartier/{c}/op/+/meter/+/live",
            f"topic read quartier/{c}/op/+/meter/+/status",
            f"topic write quartier/{c}/op/+/meter/+/alloc",
            f"topic write quartier/{c}/op/+/meter/+/resend",
            f"topic readwrite quartier/{c}/op/+/totals",
            f"topic readwrite quartier/{c}/op/+/alert",
            "",
        ]
    for meter, operation in sorted(gateways.items()):
        m = check_segment(meter, "gateway user")
        base = f"quartier/{c}/op/{check_segment(operation, 'operation')}"
        lines += [
            f"user {m}",
            f"topic write {base}/meter/{m}/qh",
            f"topic write {base}/meter/{m}/live",
            f"topic write {base}/meter/{m}/status",
            f"topic read {base}/meter/{m}/alloc",
            f"topic read {base}/meter/{m}/resend",
            f"topic read {base}/totals",
            f"topic read {base}/alert",
            "",
        ]
    return "\n".join(lines)


def conf_text(d: BrokerDir, *, port: int = 8883, bind: str = "0.0.0.0", persistence_dir: Path | None = None,
              run_as: str | None = None, max_connections: int = -1, session_cap: str = "14d") -> str:
    """mosquitto.conf: one TLS listener, no anonymous access, client ids tied to usernames, MQTT v5
    capable (shared subscriptions).

    ``max_queued_messages`` bounds the QoS 1 messages queued per client while it is away: a gateway
    offline for its whole week-long session gets about 700 allocations (96 a day plus re-runs); the
    community server's session, while it is down, gets every node's quarter-hours: 96,000 a day for
    1,000 gateways, so 100,000 covers a day's outage of a 1,000-member community (the nodes keep
    everything in their stores beyond that)."""
    lines = [
        "# generated by quartier community provision",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {d.passwd}",
        f"acl_file {d.acl}",
        f"listener {port} {bind}",
        # a client's id is its username: nobody can connect with another's client id and so take over
        # (disconnect, and wipe the session of) the community server or another gateway. So every
        # community-server process (each shard) has its own user (``provision --server-user``).
        "use_username_as_clientid true",
        f"cafile {d.ca_cert}",
        f"certfile {d.server_cert}",
        f"keyfile {d.server_key}",
        "tls_version tlsv1.2",
        "require_certificate false",
        f"max_connections {max_connections}",
        "max_queued_messages 100000",
        # QoS 1 messages in flight to one client at a time: the community server acknowledges the
        # nodes' quarter-hours only once committed, and 1,000 of them close together
        "max_inflight_messages 1000",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    # the broker's bound on any session (it caps what a client asks for): above the gateways' week,
    # and it frees the queue of a gateway that is gone for good; sessions are saved every minute, so a
    # broker crash loses at most a minute of queued allocations (Mosquitto's default: 30 min). Both
    # apply whoever turns persistence on: this file (``persistence_dir``, the tests and the demo) or
    # Debian's /etc/mosquitto/mosquitto.conf on a deployed broker, which includes this one.
    lines += [f"persistent_client_expiration {session_cap}", "autosave_interval 60"]
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {persistence_dir}/"]
    if run_as:
        lines.append(f"user {run_as}")
    return "\n".join(lines) + "\n"


def load_registry(d: BrokerDir) -> dict[str, object]:
    if not d.registry.exists():
        return {"community": None, "gateways": {}, "servers": []}
    return json.loads(d.registry.read_text())


def write_acl(d: BrokerDir, community: str, gateways: Mapping[str, str], servers: Sequence[str]) -> None:
    d.registry.write_text(json.dumps({"community": community, "gateways": dict(gateways), "servers": list(servers)}, indent=1))
    tmp = d.acl.with_suffix(".tmp")
    tmp.write_text(acl_text(community, gateways, servers))
    tmp.replace(d.acl)


def new_password() -> str:
    return secrets.token_urlsafe(24)


def add_server_user(d: BrokerDir, community: str, user: str, password: str | None = None) -> str:
    """A community-server account (reads every meter of the community); returns its password."""
    reg = load_registry(d)
    password = password or new_password()
    set_passwords(d, {user: password})
    servers = sorted(set(reg.get("servers") or []) | {user})
    write_acl(d, community, reg.get("gateways") or {}, servers)  # type: ignore[arg-type]
    return password


def add_gateways(d: BrokerDir, community: str, gateways: Mapping[str, str]) -> dict[str, str]:
    """Provision gateways (pseudonym -> operation) in one go; returns pseudonym -> new password."""
    reg = load_registry(d)
    if reg.get("community") not in (None, community):
        raise BrokerSetupError(f"{d.root} belongs to community {reg['community']!r}, not {community!r}")
    passwords = {p: new_password() for p in gateways}
    set_passwords(d, passwords)
    merged = {**(reg.get("gateways") or {}), **gateways}  # type: ignore[dict-item]
    write_acl(d, community, merged, reg.get("servers") or [])  # type: ignore[arg-type]
    log.info("broker.gateways_provisioned", extra={"count": len(gateways), "total": len(merged)})
    return passwords

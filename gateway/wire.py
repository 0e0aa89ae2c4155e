"""The node↔community contract: topic tree, versioned payloads, pseudonyms, session set-up.

Both sides import this one module: the node's uplink (``gateway.uplink``) and the community server
(``services.community``). It lives in the gateway, the lower layer, so that nothing on the node
imports the server's code.

Member data is personal data, so the wire never carries a meter's EAN: every meter appears under a
pseudonymous id, an HMAC of its EAN with a community secret. The community server can recompute it
from its member list; nobody else can invert it. The pseudonym is also the gateway's broker
username, which is what lets one ACL pattern (``%u``) confine every gateway to its own topics.

Topic tree (``<c>`` community id, ``<op>`` operation id, ``<m>`` pseudonymous meter id)::

    quartier/<c>/op/<op>/meter/<m>/qh      node -> server  closed quarter-hour, QoS 1 (at-least-once)
    quartier/<c>/op/<op>/meter/<m>/live    node -> server  live summary every few seconds, QoS 0
    quartier/<c>/op/<op>/meter/<m>/status  node -> server  "online" / "offline" (retained, last will)
    quartier/<c>/op/<op>/meter/<m>/alloc   server -> node  this member's provisional allocation, QoS 1
    quartier/<c>/op/<op>/totals            server -> nodes the operation's live totals + signal (retained)
    quartier/<c>/op/<op>/alert             server -> nodes the operation's collective alerts (retained, QoS 1)

The operation is in the topic so that one community-server process can subscribe to just the
operations it serves (sharding, docs/fleet.md) and the broker's ACL can pin each gateway to its one
operation.

Payloads are JSON with a version field ``v``; a receiver refuses versions it does not know rather
than guessing. Pure module: pydantic and hashlib only; paho is imported only by
:func:`connect_async`, when a client connects.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

WIRE_VERSION = 1
PSEUDONYM_CHARS = 24  # 96 bits of the HMAC: no collisions in any community, short on the wire
_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # no MQTT wildcards, no '/', no '$'


class WireError(ValueError):
    """A topic or payload that does not follow the wire format (dropped with a log line)."""


def check_segment(value: str, what: str) -> str:
    """A topic level we build from configuration: refused if it could escape its place in the tree."""
    if not _SEGMENT.match(value):
        raise WireError(f"{what} {value!r} is not a valid topic level (letters, digits, '_', '.', '-'; max 64)")
    return value


def pseudonym(meter_id: str, secret: str | bytes) -> str:
    """The pseudonymous id of a meter: HMAC-SHA256(community secret, EAN), hex, truncated."""
    if not secret:
        raise WireError("the community secret is empty: pseudonyms would be guessable from the EAN")
    key = secret.encode() if isinstance(secret, str) else secret
    return "m" + hmac.new(key, meter_id.encode(), hashlib.sha256).hexdigest()[: PSEUDONYM_CHARS - 1]


# -- topics --------------------------------------------------------------------------------------


def meter_topic(community: str, operation: str, meter: str,
                kind: Literal["qh", "live", "status", "alloc", "resend"]) -> str:
    return (f"{operation_topic(community, operation, 'meter')}/{check_segment(meter, 'meter')}/{kind}")


def operation_topic(community: str, operation: str, kind: Literal["totals", "meter", "alert"] = "totals") -> str:
    return f"quartier/{check_segment(community, 'community')}/op/{check_segment(operation, 'operation')}/{kind}"


def ingest_filters(community: str, operations: list[str] | None = None, share_group: str | None = None) -> list[str]:
    """What a community server subscribes to: every operation (``+``) or only its shard's.

    With ``share_group`` the filters become MQTT v5 shared subscriptions (``$share/<group>/...``): the
    broker hands each message to one subscriber of the group (docs/fleet.md says when that is safe).
    """
    c = check_segment(community, "community")
    ops = [check_segment(o, "operation") for o in operations] if operations else ["+"]
    base = [f"quartier/{c}/op/{o}/meter/+/{k}" for o in ops for k in ("qh", "live", "status")]
    if share_group:
        return [f"$share/{check_segment(share_group, 'share group')}/{t}" for t in base]
    return base


def parse_meter_topic(topic: str) -> tuple[str, str, str, str]:
    """``(community, operation, meter, kind)`` of a node's topic; WireError for anything else."""
    parts = topic.split("/")
    if (len(parts) != 7 or parts[0] != "quartier" or parts[2] != "op" or parts[4] != "meter"
            or parts[6] not in ("qh", "live", "status", "alloc", "resend")):
        raise WireError(f"not a meter topic: {topic!r}")
    return parts[1], parts[3], parts[5], parts[6]


# -- payloads ------------------------------------------------------------------------------------


class _Aware(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _aware(cls, value: object) -> object:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("times must carry a zone (UTC)")
            return value.astimezone(timezone.utc)
        return value


class _Msg(_Aware):
    v: Literal[1] = WIRE_VERSION

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class QuarterHourMsg(_Msg):
    """A closed quarter-hour of one meter. Idempotent on (meter, start): a re-send replaces."""

    meter: str
    operation: str
    start: datetime
    import_wh: int = Field(ge=0)
    export_wh: int = Field(ge=0)
    quality: Literal["measured", "interpolated", "estimated"] = "measured"

    @field_validator("start")
    @classmethod
    def _on_boundary(cls, value: datetime) -> datetime:
        if value.tzinfo is not None and (value.minute % 15 or value.second or value.microsecond):
            raise ValueError("start is not on a quarter-hour boundary")
        return value


class LiveMsg(_Msg):
    """A node's live summary: power now and the running quarter-hour so far (meter time)."""

    meter: str
    operation: str
    time: datetime
    import_w: float = Field(ge=0)
    export_w: float = Field(ge=0)
    qh_start: datetime | None = None
    qh_import_wh: float | None = Field(None, ge=0)
    qh_export_wh: float | None = Field(None, ge=0)


class TotalsMsg(_Msg):
    """The operation's live totals (summed over reporting members) and its consume-now signal."""

    operation: str
    time: datetime
    qh_start: datetime
    elapsed_s: float
    consumption_w: float
    pool_w: float
    consumption_wh: float | None
    pool_wh: float | None
    members_reporting: int
    members_total: int
    signal: Literal["green", "amber", "red"]
    headroom_w: int
    reason: str


class AllocationMsg(_Msg):
    """One member's provisional share of one closed quarter-hour, with the operation's totals."""

    operation: str
    start: datetime
    received_wh: int
    injection_shared_wh: int
    pool_wh: int
    shared_wh: int
    consumption_wh: int
    missing: int = 0  # members whose quarter-hour was estimated (deadline passed without it)
    provisional: bool = True


class ResendMsg(_Msg):
    """Server -> one node: publish your closed quarter-hours from ``since`` again (at-least-once; the
    server collapses what it already has). Sent when the server finds a gap it cannot otherwise fill:
    after it was away longer than the broker queued for it, or when a member that is online misses
    a quarter-hour at its deadline."""

    operation: str
    since: datetime
    until: datetime | None = None  # None: up to now


ALERT_MESSAGE_CHARS = 200
MAX_ALERTS = 20  # in one AlertsMsg: the active ones and the next scheduled ones


class AlertNotice(_Aware):
    """One collective alert (« alerte collective », « collectieve oproep »): ``reduce`` asks every
    home to cut consumption (the signal turns red), ``consume`` asks them to use the surplus now (a
    sunny noon, a challenge day: green). Valid in [start, until) on the node's clock; a node shows
    it only then, so an expired alert is never shown, even from a stale retained message."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["reduce", "consume"] = "reduce"
    message: str = Field(default="", max_length=ALERT_MESSAGE_CHARS)
    start: datetime
    until: datetime

    @field_validator("until")
    @classmethod
    def _after_start(cls, value: datetime, info: Any) -> datetime:
        start = info.data.get("start")
        if start is not None and value.tzinfo is not None and value <= start:
            raise ValueError("until must be after start")
        return value


class AlertResult(_Aware):
    """The collective result of the last finished alert, for the members' pages: the members'
    consumption in the window against their baseline (None: not enough data to say)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["reduce", "consume"] = "reduce"
    start: datetime
    until: datetime
    members_change_pct: float | None = Field(None, ge=-100, le=10_000)


class AlertsMsg(_Msg):
    """Server -> nodes, retained on the operation's ``alert`` topic: every alert not ended and not
    expired (active or scheduled), so a node that was offline when one was raised gets it when it
    connects again. An ended alert is simply absent: the next message replaces the retained one."""

    operation: str
    time: datetime
    alerts: list[AlertNotice] = Field(default_factory=list, max_length=MAX_ALERTS)
    last_result: AlertResult | None = None


def decode(model: type[_Msg], payload: bytes) -> _Msg:
    """Parse a payload into ``model``; WireError (with the reason) for anything malformed."""
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        raise WireError(f"{model.__name__}: {where}: {err['msg']}") from None


# -- session set-up ---------------------------------------------------------------------------------


def connect_async(client: Any, host: str, port: int, *, keepalive: int, session_expiry_s: int) -> None:
    """``client.connect_async`` (a paho MQTT v5 client) with a session that outlives the connection.

    Both ends keep a persistent session so that the broker queues their QoS 1 messages while they are
    away (allocations for a node, quarter-hours for the server). Every connect, the first one after a
    restart too, asks to resume it; ``session_expiry_s`` 0 asks for a clean one.
    """
    if session_expiry_s <= 0:
        client.connect_async(host, port, keepalive=keepalive, clean_start=True)
        return
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    client.connect_async(host, port, keepalive=keepalive, clean_start=False, properties=props)

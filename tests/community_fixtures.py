"""A small community for the community-server tests: one operation, two consumers and a producer."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from services.allocation.model import load_community
from services.community.ledger import Ledger
from services.community.roster import Roster
from services.community.server import BrokerLink, CommunityServer
from gateway.wire import QuarterHourMsg, meter_topic, pseudonym

SECRET = "test-community-secret"
COMMUNITY_TOML = """
[community]
id = "moulin"

[[operations]]
id = "op1"
preset = "fixed-equal"

[[operations.members]]
id = "alice"
role = "consumer"
meter = "541448820000000001"

[[operations.members]]
id = "bob"
role = "consumer"
meter = "541448820000000002"

[[operations.members]]
id = "school"
role = "producer"
meter = "541448820000000003"

[[operations]]
id = "op2"
preset = "prorata"

[[operations.members]]
id = "carol"
role = "both"
meter = "541448820000000004"
"""


def recent(hour: int = 10, days_ago: int = 2) -> datetime:
    """A quarter-hour start the server accepts today (its admission refuses starts older than 40 days):
    ``hour``:00 UTC, ``days_ago`` days back."""
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).replace(hour=hour, minute=0, second=0, microsecond=0)


def write_community(tmp: Path) -> Path:
    path = tmp / "community.toml"
    path.write_text(COMMUNITY_TOML)
    return path


def roster(tmp: Path, only: list[str] | None = None) -> Roster:
    return Roster.build(load_community(write_community(tmp)), SECRET, only)


def wait(pred, timeout: float = 15) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` s pass; the last answer is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def seeded(tmp: Path, start: datetime, influx: dict | None = None) -> tuple[CommunityServer, Ledger]:
    """A server (not connected) whose ledger holds op1's provisional allocation of four quarter-hours
    from ``start``: alice imports 300 Wh, bob 100 Wh, the school injects 500 Wh in each, so fixed-equal
    gives alice 4 x 250 Wh and bob 4 x 100 Wh."""
    ledger = Ledger(tmp / "community.sqlite")
    srv = CommunityServer(roster(tmp), ledger, BrokerLink("127.0.0.1", 1), influx=influx)
    ean = {"alice": "541448820000000001", "bob": "541448820000000002", "school": "541448820000000003"}
    for i in range(4):
        qh = start + timedelta(minutes=15 * i)
        batch = []
        for m, (imp, exp) in {"alice": (300, 0), "bob": (100, 0), "school": (0, 500)}.items():
            p = pseudonym(ean[m], SECRET)
            batch.append((meter_topic("moulin", "op1", p, "qh"),
                          QuarterHourMsg(meter=p, operation="op1", start=qh, import_wh=imp, export_wh=exp).to_bytes(),
                          (qh + timedelta(minutes=15)).timestamp()))  # received as it closed
        srv.handle_batch(batch)
    return srv, ledger

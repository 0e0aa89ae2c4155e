"""A small community for the community-server tests: one operation, two consumers and a producer."""

from __future__ import annotations

import time
from pathlib import Path

from services.allocation.model import load_community
from services.community.roster import Roster

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

"""The daemon's health file (``health.json`` in the runtime dir), read by everything beside it.

The daemon rewrites it atomically every ``daemon.health_interval_s``; ``quartier status``, the doctor,
the web service's ``/api/v1/health``, the Home Assistant diagnostics and the light read it. Reading
never fails: a missing or half-written file is ``None``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HEALTH_FILE = "health.json"


def read_health(runtime_dir: Path) -> dict | None:
    try:
        return json.loads((runtime_dir / HEALTH_FILE).read_text())
    except (OSError, ValueError):
        return None


def metering_summary(health: dict[str, Any] | None, now: datetime | None = None) -> dict[str, Any] | None:
    """What the daemon accepted and refused, per meter and reason (gateway/plausibility.py), with the
    health file's age: the trust part of ``/api/v1/health`` and of the Home Assistant diagnostics."""
    if health is None:
        return None
    now = now or datetime.now(timezone.utc)
    try:
        written = datetime.fromisoformat(str(health.get("time", "")).replace("Z", "+00:00"))
        age = round((now - written).total_seconds(), 1)
    except ValueError:
        age = None
    meters = {}
    for mid, m in (health.get("meters") or {}).items():
        refused = {k: int(v) for k, v in (m.get("refused") or {}).items() if v}
        meters[mid] = {
            "telegrams": m.get("telegrams"),
            "accepted": m.get("accepted"),
            "refused": refused,
            "refused_total": sum(refused.values()),
            "crc_error_rate": m.get("crc_error_rate"),
            "last_accepted_age_s": m.get("last_accepted_age_s"),
        }
    return {"health_age_s": age, "outbox_depth": health.get("outbox_depth"), "meters": meters}

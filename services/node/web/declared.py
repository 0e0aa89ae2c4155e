"""The month's figure for the member's own declared loads: energy of the loads home automation declared
(``PUT /api/v1/signal/triggered-load/{id}``, MQTT ``signal/triggered_load/<id>/set``) that ran while the
signal was green, per local month.

Counted as power x time between two evaluations of the signal, at the power and state that held since the
previous one (a step is capped at ``MAX_STEP_S``, so a suspended process or a clock jump adds nothing
made up; a clock that goes back, such as the wall clock used before the first reading, restarts the count). Pure apart from :func:`load` / :func:`save`.

Kept in a small JSON file in the daemon's runtime dir (``/run/quartier/declared_loads.json``), written
atomically (temporary file + rename): the web service's sandbox may write only there, and its store
connection is read-only by design (the web service must never be able to disturb metering). The runtime
dir is kept across restarts of the services (``RuntimeDirectoryPreserve=yes``), not across a reboot.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.logs import get_logger

log = get_logger("quartier.services.web")

FILE_NAME = "declared_loads.json"
MAX_STEP_S = 60.0


@dataclass
class DeclaredTally:
    """Wh of declared loads run while green, per local month ("YYYY-MM")."""

    tz: ZoneInfo
    months: dict[str, float] = field(default_factory=dict)
    dirty: bool = False
    _last: datetime | None = None
    _watts: float = 0.0
    _green: bool = False

    def advance(self, now: datetime, watts: float, green: bool) -> None:
        """Count the time since the previous call at the previous power and state, then remember these."""
        if self._last is not None and now > self._last:
            if self._green and self._watts > 0:
                step = min((now - self._last).total_seconds(), MAX_STEP_S)
                label = self.month_of(self._last)
                self.months[label] = self.months.get(label, 0.0) + self._watts * step / 3600.0
                self.dirty = True
        if self._last is None or now > self._last or now < self._last - timedelta(seconds=1):
            self._last = now  # forward; or the clock went back (wall clock before the first reading): restart
        self._watts, self._green = max(0.0, watts), green

    def month_of(self, t: datetime) -> str:
        return t.astimezone(self.tz).strftime("%Y-%m")

    def month_wh(self, label: str) -> float:
        return self.months.get(label, 0.0)

    def as_json(self) -> dict:
        return {"version": 1, "green_wh_by_month": {k: round(v, 3) for k, v in sorted(self.months.items())}}


def load(path: Path, tz: ZoneInfo) -> DeclaredTally:
    """The tally kept in ``path``; a missing or unreadable file starts from zero (and says so)."""
    tally = DeclaredTally(tz)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        months = data["green_wh_by_month"]
        tally.months = {str(k): float(v) for k, v in months.items() if float(v) >= 0}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("web.declared_loads_unreadable", extra={"path": str(path), "error": str(exc)})
    return tally


def save(path: Path, tally: DeclaredTally) -> None:
    """Write atomically: a crash leaves the previous file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(tally.as_json()), encoding="utf-8")
    os.replace(tmp, path)
    tally.dirty = False

"""The pure rules of collective alerts (services/community/alerts.py): windows, what is published,
the baseline's weeks across a DST change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.community.alerts import AlertInputError, AlertRecord, check_request, series_effect, shifted, to_publish

BXL = ZoneInfo("Europe/Brussels")
NOW = datetime(2026, 11, 2, 17, 0, tzinfo=UTC)


def rec(i: str, start: datetime, minutes: int, ended: datetime | None = None) -> AlertRecord:
    return AlertRecord(i, "op1", "reduce", "", start, start + timedelta(minutes=minutes), NOW - timedelta(days=1), ended)


def test_requests_are_checked() -> None:
    assert check_request(None, 30, NOW) == (NOW, NOW + timedelta(minutes=30))
    for start, minutes, words in [(None, 0, "minutes"), (datetime(2026, 11, 2, 18, 0), 10, "time zone"),
                                  (NOW - timedelta(hours=1), 30, "already be over"), (NOW + timedelta(days=61), 5, "ahead")]:
        with pytest.raises(AlertInputError, match=words):
            check_request(start, minutes, NOW)


def test_only_active_and_scheduled_alerts_are_published() -> None:
    alerts = [rec("past", NOW - timedelta(hours=2), 30), rec("ended", NOW - timedelta(minutes=5), 30, NOW),
              rec("later", NOW + timedelta(hours=1), 30), rec("now", NOW - timedelta(minutes=1), 30)]
    assert [r.id for r in to_publish(alerts, NOW, 20)] == ["now", "later"]


def test_the_baseline_keeps_the_local_time_across_a_dst_change() -> None:
    start = datetime(2026, 11, 2, 17, 0, tzinfo=UTC)  # 18:00 in Brussels (winter time)
    assert shifted(start, 1, BXL).astimezone(BXL).hour == 18
    assert shifted(start, 1, BXL) == datetime(2026, 10, 26, 17, 0, tzinfo=UTC)
    assert shifted(start, 2, BXL) == datetime(2026, 10, 19, 16, 0, tzinfo=UTC)  # summer time: 16:00 UTC
    series = {start: 500.0, shifted(start, 1, BXL): 1000.0, shifted(start, 2, BXL): 1000.0}
    eff = series_effect([start], series, BXL)
    assert (eff.kwh, eff.baseline_kwh, eff.change_pct, eff.baseline_weeks) == (0.5, 1.0, -50.0, 2)
    assert series_effect([start], {start: 500.0}, BXL).baseline_kwh is None  # no baseline week: said so

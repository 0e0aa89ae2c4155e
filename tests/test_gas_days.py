"""Gas per local day (gateway/gas_days.py): the pure computation with hand-computed m³, the store's
``gas_days`` table (schema 2 -> 3) and the daemon's pipeline writing it once per capture."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.gas_days import GasDay, advance, gas_per_day, gas_used
from gateway.model import Reading, SubMeterReading
from gateway.pipeline import Pipeline
from gateway.store import Store
from gateway.store import schema as schema_module

BRU = ZoneInfo("Europe/Brussels")
UTC = timezone.utc


def at(d: date, hh: int, mm: int) -> datetime:
    return datetime(d.year, d.month, d.day, hh, mm, tzinfo=BRU).astimezone(UTC)


def records(captures: list[tuple[datetime, float, bool]], channel: int = 1) -> list[GasDay]:
    """The day records the daemon keeps for these accepted captures (time, m³, confirmed reset)."""
    out: dict[date, GasDay] = {}
    day = None
    for t, v, reset in captures:
        day = advance(day, "E1", SubMeterReading(channel, "gas", v, "m3", t), reset=reset, tz=BRU)
        out[day.day] = day
    return list(out.values())


D1, D2, D3, D4, D5 = (date(2026, 1, 5) + timedelta(days=i) for i in range(5))


def test_a_day_counts_from_the_last_reading_of_the_day_before():
    days = records([(at(D1, 0, 5), 100.000, False), (at(D1, 23, 55), 103.250, False),
                    (at(D2, 0, 5), 103.400, False), (at(D2, 12, 0), 105.000, False), (at(D2, 23, 55), 106.000, False)])
    use = gas_used(days)
    assert use[D1].m3 == 3.250 and use[D1].partial  # nothing known before 00:05
    assert use[D2].m3 == 2.750 and not use[D2].partial  # 106.000 - 103.250: the 0.150 across midnight is D2's


def test_a_day_whose_day_before_is_missing_is_partial():
    days = records([(at(D1, 23, 0), 100.0, False), (at(D3, 1, 0), 110.000, False), (at(D3, 23, 0), 111.500, False)])
    use = gas_used(days)
    assert use[D3].m3 == 1.500 and use[D3].partial  # D2 unknown: last(D3) - first(D3)
    assert D2 not in use


def test_a_meter_exchange_counts_only_the_consistent_segments_and_is_partial():
    days = records([(at(D4, 22, 0), 111.500, False),
                    (at(D5, 0, 5), 111.600, False), (at(D5, 9, 0), 112.000, False),  # the old meter
                    (at(D5, 11, 0), 0.010, True), (at(D5, 23, 0), 0.500, False),  # the new one, from 0.010
                    (at(D5 + timedelta(days=1), 6, 0), 0.800, False)])
    use = gas_used(days)
    assert use[D5].m3 == 0.890 and use[D5].partial  # (112.000 - 111.600) + (0.500 - 0.010): never -111
    assert use[D5 + timedelta(days=1)].m3 == 0.300 and not use[D5 + timedelta(days=1)].partial


def test_a_reset_at_the_first_capture_of_a_day_breaks_the_link_to_the_day_before():
    days = records([(at(D1, 22, 0), 500.0, False), (at(D2, 0, 5), 0.2, True), (at(D2, 20, 0), 1.7, False)])
    use = gas_used(days)
    assert use[D2].m3 == 1.5 and use[D2].partial


def test_two_gas_channels_add_up():
    a = records([(at(D1, 23, 0), 10.0, False), (at(D2, 23, 0), 12.5, False)], channel=1)
    b = records([(at(D2, 1, 0), 3.0, False), (at(D2, 23, 0), 3.25, False)], channel=2)
    use = gas_per_day(a + b)
    assert use[D2].m3 == 2.75 and use[D2].partial


def test_the_local_day_follows_the_store_time_zone_across_the_clock_change():
    summer = date(2026, 3, 29)  # 23 hours
    days = records([(at(summer - timedelta(days=1), 23, 59), 50.0, False), (at(summer, 0, 0), 50.1, False),
                    (at(summer, 23, 59), 52.0, False)])
    assert [d.day for d in days] == [summer - timedelta(days=1), summer]
    assert gas_used(days)[summer].m3 == 2.0


def test_store_migration_2_to_3_adds_gas_days_and_keeps_the_quarter_hours(tmp_path: Path, make_quarter_hours, monkeypatch):
    path = tmp_path / "q.sqlite"
    qhs = make_quarter_hours("E1", at(D1, 0, 0), 4)
    with monkeypatch.context() as m:
        m.setattr(schema_module, "SCHEMA_VERSION", 2)  # the store as the previous release left it
        with Store(path) as s:
            s.commit_quarter_hours(qhs)
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 2
        assert not c.execute("SELECT name FROM sqlite_master WHERE name = 'gas_days'").fetchall()
    with Store(path) as s:
        assert s.quarter_hours() == qhs and s.gas_days("E1", D1, D2) == []
        [day] = records([(at(D1, 8, 0), 10.0, False), (at(D1, 9, 0), 10.5, False)])
        s.commit_quarter_hours([], gas_days=[day])
        assert s.gas_days("E1", D1, D2) == [day] and s.last_gas_day("E1", 1) == day
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 3


class _Counting(Store):
    commits: list

    def commit_quarter_hours(self, qhs, gas_days=()):
        self.commits.append((len(qhs), [(g.day, g.last_m3) for g in gas_days]))
        return super().commit_quarter_hours(qhs, gas_days)


def _reading(t: datetime, gas_t: datetime, gas_m3: float) -> Reading:
    wh = int((t - at(D1, 0, 0)).total_seconds())
    return Reading("E1", t, {"1": 1_000_000 + wh}, {"1": 0},
                   submeters=(SubMeterReading(1, "gas", gas_m3, "m3", gas_t),))


def test_the_pipeline_writes_a_day_record_with_the_quarter_hour_commits_and_resumes_from_it(tmp_path: Path):
    s = _Counting(tmp_path / "q.sqlite")
    s.commits = []
    try:
        p = Pipeline(s)
        t0 = at(D1, 23, 0)
        for i in range(0, 7200, 10):  # two hours of telegrams every 10 s, a gas capture every 5 minutes
            t = t0 + timedelta(seconds=i)
            capture = t0 + timedelta(seconds=i - i % 300)
            p.feed_reading(_reading(t, capture, round(100 + (i - i % 300) / 3000, 3)))
        p.flush()
        assert len(s.commits) == 7 + 1  # one per quarter-hour closed (23:00..00:45), and the last flush
        assert all(len(g) <= 2 for _, g in s.commits)  # a channel's day once per commit (two at midnight)
        d1, d2 = s.gas_days("E1", D1, D1 + timedelta(days=2))
        assert (d1.first_m3, d1.last_m3, d1.last_time) == (100.0, 101.1, at(D1, 23, 55))
        assert (d2.first_m3, d2.last_m3) == (101.2, 102.3)
        assert gas_used([d1, d2])[D2].m3 == 1.2
    finally:
        s.close()
    s = _Counting(tmp_path / "q.sqlite")
    s.commits = []
    try:  # restarted: a glitch as the first reading is judged against the stored register
        p = Pipeline(s, max_gap=timedelta(hours=1))
        late = at(D2, 1, 0)
        p.feed_reading(_reading(late, late, 99999.999))
        p.feed_reading(_reading(late + timedelta(seconds=10), late, 102.4))
        assert p.health["E1"].last_reading.submeters[0].value == 102.4
        assert dict(p.health["E1"].refused) == {"gas_implausible_step": 1}
    finally:
        s.close()

"""Daily and monthly totals carry the per-tariff split (schema 2): written with each quarter-hour, and
recomputed by the migration from the quarter-hours still kept — unknown where retention pruned some."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.model import QuarterHour
from gateway.store import Store, encode
from gateway.store.schema import _SCHEMA_V1, SCHEMA_VERSION
from services.node.web.history import History

UTC = timezone.utc
DAY1 = datetime(2026, 1, 4, 23, 0, tzinfo=UTC)  # local midnight of 5 January in Brussels


def _split(qhs: list[QuarterHour], attr: str) -> dict[str, int]:
    out: Counter[str] = Counter()
    for q in qhs:
        out.update(getattr(q, attr))
    return dict(out)


def test_totals_are_written_with_the_split_of_their_quarter_hours(tmp_path: Path, make_quarter_hours) -> None:
    qhs = make_quarter_hours("m1", DAY1, 96 * 2)
    with Store(tmp_path / "q.sqlite") as s:
        s.commit_quarter_hours(qhs[:10])
        s.commit_quarter_hours(qhs[10:])
        s.commit_quarter_hours(qhs[:5])  # idempotent: counted once
        d1, d2 = s.daily_totals("m1")
        assert d1.import_by_tariff == _split(qhs[:96], "import_by_tariff")
        assert d2.export_by_tariff == _split(qhs[96:], "export_by_tariff")
        assert sum(d1.import_by_tariff.values()) == d1.import_wh and set(d1.import_by_tariff) == {"1", "2"}
        [month] = s.monthly_totals("m1")
        assert month.import_by_tariff == _split(qhs, "import_by_tariff")


def _v1_store(path: Path, qhs: list[QuarterHour]) -> None:
    """A store as Quartier wrote it before schema 2: totals without a split."""
    with sqlite3.connect(path) as c:
        c.executescript(_SCHEMA_V1)
        c.execute("INSERT INTO state VALUES ('store.timezone', 'Europe/Brussels')")
        totals: dict[tuple[str, str], list[int]] = {}
        for q in qhs:
            c.execute("INSERT INTO quarter_hours VALUES (?,?,?,?,?,?,?,?,?,?,?,0)", encode(q))
            local = q.start.astimezone(ZoneInfo("Europe/Brussels"))
            for table, key in (("daily_totals", local.date().isoformat()), ("monthly_totals", local.strftime("%Y-%m"))):
                acc = totals.setdefault((table, key), [0, 0, 0])
                acc[0] += q.import_wh
                acc[1] += q.export_wh
                acc[2] += 1
        for (table, key), (imp, exp, n) in totals.items():
            c.execute(f"INSERT INTO {table} VALUES ('m1', ?, ?, ?, ?, 0)", (key, imp, exp, n))
        c.execute("PRAGMA user_version = 1")


def test_migration_recomputes_the_split_from_kept_quarter_hours_and_leaves_pruned_days_unknown(
    tmp_path: Path, make_quarter_hours,
) -> None:
    path = tmp_path / "q.sqlite"
    qhs = make_quarter_hours("m1", DAY1, 96 * 3)
    _v1_store(path, qhs)
    with sqlite3.connect(path) as c:  # retention pruned the first day's morning (its totals stay)
        c.execute("DELETE FROM quarter_hours WHERE start < ?", (int((DAY1 + timedelta(hours=6)).timestamp()),))
    history = History(path)
    try:  # the web service reads the old store before the daemon migrated it: no split, no error
        [old] = history.daily_totals("m1", date(2026, 1, 5), date(2026, 1, 6))
        assert old.import_wh == sum(q.import_wh for q in qhs[:96]) and old.import_by_tariff is None
    finally:
        history.close()
    with Store(path) as s:
        d1, d2, d3 = s.daily_totals("m1")
        assert d1.quarter_hours == 96 and d1.import_by_tariff is None and d1.export_by_tariff is None  # never guessed
        assert d2.import_by_tariff == _split(qhs[96:192], "import_by_tariff")
        assert d3.export_by_tariff == _split(qhs[192:], "export_by_tariff")
        [month] = s.monthly_totals("m1")
        assert month.import_by_tariff is None  # the month lost quarter-hours too
        # a later quarter-hour adds to known splits and leaves an unknown one unknown
        more = make_quarter_hours("m1", DAY1 + timedelta(days=3), 1)
        s.commit_quarter_hours(more)
        d4 = s.daily_totals("m1")[-1]
        assert d4.import_by_tariff == more[0].import_by_tariff
        assert s.monthly_totals("m1")[0].import_by_tariff is None
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3  # on through gas_days

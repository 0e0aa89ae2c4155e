"""kill -9 at random instants: a committed quarter-hour is never lost nor duplicated, a batch is all or nothing.

A child process commits batches of quarter-hours (three meters, one quarter-hour each) in a loop and
prints a line only after ``commit_quarter_hours`` returned; it also acknowledges outbox rows in
between, so kills land in commits, acknowledgements, checkpoints and the opening of the file. The
parent kills it with SIGKILL after a random delay, thirty times, then checks the file.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.store import Store

KILLS = 30
METERS = ("m1", "m2", "m3")
FIRST = datetime(2026, 1, 1, tzinfo=timezone.utc)

CHILD = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from gateway.model import QUARTER, Quality, QuarterHour
    from gateway.store import Store

    def qh(meter, k):
        imp, exp = (k * 37 + len(meter)) % 400, (k * 53) % 150
        return QuarterHour(
            meter_id=meter, start=datetime.fromtimestamp(k * 900, timezone.utc), import_wh=imp, export_wh=exp,
            quality=Quality.MEASURED if k % 7 else Quality.ESTIMATED,
            import_by_tariff={"1": imp}, export_by_tariff={"1": exp},
            end_import_register={"1": 10 * k}, end_export_register={"1": 3 * k},
        )

    store = Store(sys.argv[1], sinks=("influx", "uplink"))
    last = store.last_boundary("m1")
    k = int(last.end.timestamp()) // 900 if last else int(sys.argv[2])
    print("ready", k, flush=True)
    while True:
        store.commit_quarter_hours([qh(m, k) for m in ("m1", "m2", "m3")])
        print("committed", k, flush=True)
        rows = store.outbox_peek("influx", 2)  # a sink acknowledging as it goes
        store.outbox_ack("influx", [i for i, _ in rows[:1]], state={"influx.last_push": str(k)})
        k += 1
    """
)


def expected_import(meter: str, k: int) -> int:
    return (k * 37 + len(meter)) % 400


@pytest.mark.slow
def test_kill_9_in_a_loop_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite"
    first_k = int(FIRST.timestamp()) // 900
    rng = random.Random(20260101)
    reported: list[int] = []
    killed_before_ready = 0
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    for _ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(first_k)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        time.sleep(rng.uniform(0.0, 0.4))  # from start: some kills land while the file is opened
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err.decode()
        lines = out.decode().split("\n")
        complete = lines[:-1]  # a line cut by the kill has no newline and does not count
        if not complete or not complete[0].startswith("ready"):
            killed_before_ready += 1
        reported += [int(line.split()[1]) for line in complete if line.startswith("committed ")]

    with Store(db, sinks=("influx", "uplink")) as store:
        assert store.integrity_check() == "ok"
        qhs = store.quarter_hours()
        by_meter = {m: [int(q.start.timestamp()) // 900 for q in qhs if q.meter_id == m] for m in METERS}
        committed = by_meter["m1"]
        print(
            f"\nkill -9 loop: kills={KILLS} before_ready={killed_before_ready} reported={len(reported)}"
            f" stored_batches={len(committed)} unreported_but_stored={len(committed) - len(reported)}"
        )
        assert len(reported) > KILLS, "the child should commit many batches between kills"
        assert len(reported) == len(set(reported))  # a restarted child resumes, never repeats
        # every batch reported as committed is there, once, for every meter (all or nothing)
        assert by_meter["m2"] == by_meter["m3"] == committed
        assert set(reported) <= set(committed)
        assert len(committed) == len(set(committed))
        # no gap: each child resumed at the last committed boundary; at most one unreported batch per kill
        assert committed == list(range(first_k, first_k + len(committed)))
        assert len(committed) - len(reported) <= KILLS
        for q in qhs:
            assert q.import_wh == expected_import(q.meter_id, int(q.start.timestamp()) // 900)
        # totals and outbox moved with the quarter-hours in the same transactions
        assert sum(d.quarter_hours for d in store.daily_totals()) == len(qhs)
        assert sum(d.import_wh for d in store.daily_totals()) == sum(q.import_wh for q in qhs)
        assert store.outbox_depth("uplink") == len(qhs)  # never acknowledged: exactly one row each
        pending = [qh for _, qh in store.outbox_peek("influx", 10**6)]
        assert len(pending) == len({(q.meter_id, q.start) for q in pending}) < len(qhs)
        assert store.get_state("influx.last_push") is not None

"""Line protocol for the central store (any server speaking the InfluxDB v2 write API). Pure.

A figure that changes — a provisional allocation re-run after late data, a corrected grid-operator
file — is never written again at the series and timestamp of its earlier value: revision r lands
r-1 seconds after the period start. InfluxDB would overwrite a point written twice, but
VictoriaMetrics keeps both (or, with deduplication on, one of them, not reliably the last: measured
with VictoriaMetrics 1.79), and a shared figure counted twice is money billed wrong. So the value of
a period is its *last* point in the period (Flux ``aggregateWindow(every: 15m, fn: last)``,
MetricsQL ``last_over_time(x[15m])``), the same on every server; ``revision`` says which it is.
Re-sending the same revision (a push whose acknowledgement was lost) repeats an identical point,
which InfluxDB overwrites and VictoriaMetrics collapses with ``-dedup.minScrapeInterval``.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_REVISION_OFFSET_S = 899  # stay inside the quarter-hour whatever happens


def tag(value: str) -> str:
    """A line-protocol tag key or value (commas, equals signs and spaces escaped)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def revision_timestamp(start_s: int, revision: int) -> int:
    return start_s + min(max(revision, 1) - 1, MAX_REVISION_OFFSET_S)


def allocation_lines(measurement: str, rows: Sequence[tuple]) -> list[str]:
    """Provisional allocation rows of the ledger (operation, member, start_s, received, injection
    shared, consumption, injection, estimated, runs) as line protocol in seconds."""
    name = tag(measurement)
    return [
        f"{name},operation={tag(op)},member={tag(m)} received_wh={int(r)}i,injection_shared_wh={int(s)}i,"
        f"consumption_wh={int(c)}i,injection_wh={int(i)}i,estimated={int(e)}i,revision={int(runs)}i "
        f"{revision_timestamp(int(start), int(runs))}"
        for op, m, start, r, s, c, i, e, runs in rows
    ]

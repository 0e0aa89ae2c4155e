"""The node's durable local store (SQLite): closed quarter-hours and their totals, the sinks' outbox,
this member's allocations, retention.

- ``database``: :class:`Store` — opening, the one commit that holds a quarter-hour with its totals
  and outbox rows, reading, small state;
- ``outbox``: the sinks' outbox and dead letters;
- ``allocations``: the community server's allocations of this member;
- ``retention``: what may be deleted, and the disk alarm;
- ``schema``: the tables, migrations and the row format.
"""

from gateway.store.allocations import Allocation
from gateway.store.database import Conflict, DailyTotal, MonthlyTotal, Store
from gateway.store.outbox import DeadLetter
from gateway.store.retention import DEFAULT_MIN_FREE_BYTES, DiskStatus
from gateway.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Row,
    StoreError,
    add_split,
    decode,
    encode,
    quarter_hours_in,
)

__all__ = [
    "DEFAULT_MIN_FREE_BYTES", "MIGRATIONS", "SCHEMA_VERSION", "Allocation", "Conflict", "DailyTotal", "DeadLetter",
    "DiskStatus", "MonthlyTotal", "Row", "Store", "StoreError", "add_split", "decode", "encode", "quarter_hours_in",
]

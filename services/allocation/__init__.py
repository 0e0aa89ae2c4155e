"""Allocation of a sharing operation's pooled injection (clé de répartition, verdeelsleutel).

Shared: the community server allocates with it, a node can, and the key simulator replays years with it.

Pure: numpy in, numpy out, no I/O, no asyncio/MQTT/HTTP. The semantics and every setting are listed
in ``services/allocation/README.md``; the public entry points:

- ``allocate(consumption, production, rounds, member_ids=..., producer_ids=..., ...)``: a period,
  arrays ``[quarter_hours, members]`` → ``AllocationResult``.
- ``allocate_quarter_hour(consumption_wh, production_wh, rounds, ...)``: the live path, dicts in →
  ``QuarterHourAllocation``.
- ``handle_request(obj)``: the JSON contract of ``quartier allocate``.
- ``load_community(path)``: the community/operation model from TOML.
"""

from .engine import AllocationResult, QuarterHourAllocation, allocate, allocate_quarter_hour, quarter_hour_view, ratio, slot_of
from .errors import AllocationInputError
from .io import AllocationRequest, handle_request, parse_request, result_to_json, run_request
from .model import Community, Coordinator, Member, Operation, load_community, parse_community
from .presets import KEYS, PRESETS, check_rounds, parse_key_spec, resolve_rounds
from .settings import DEFAULT_SETTINGS, MAX_ROUNDS, Settings

__all__ = [
    "DEFAULT_SETTINGS",
    "KEYS",
    "MAX_ROUNDS",
    "PRESETS",
    "AllocationInputError",
    "AllocationRequest",
    "AllocationResult",
    "Community",
    "Coordinator",
    "Member",
    "Operation",
    "QuarterHourAllocation",
    "Settings",
    "allocate",
    "allocate_quarter_hour",
    "check_rounds",
    "handle_request",
    "load_community",
    "parse_community",
    "parse_key_spec",
    "parse_request",
    "quarter_hour_view",
    "ratio",
    "resolve_rounds",
    "result_to_json",
    "run_request",
    "slot_of",
]

"""Every choice the allocation semantics leave open, as one settings object with the defaults.

The defaults are the semantics of design.md ("Allocation semantics"); each alternative exists because
some regulator, grid operator or community does it that way, and a community comparing keys should
be able to see what the choice changes. See ``services/allocation/README.md`` for the table.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_ROUNDS = 3
"""Regulators allow at most three rounds (Wallonia's CWaPE, Brussels' Brugel)."""

SHARE_SCALE = 10**9
"""A share that is not a simple fraction is taken to the nearest 10^-9 (the engine computes in integers)."""

SHARE_DENOMINATOR = 10**6
"""Largest denominator of the simple fraction a share (or a pool fraction) written as a float stands for."""

SHARE_EXACT = Fraction(1, 10**12)
"""How close a float must be to that fraction to be taken as it (1/3 as a float is 1/3 to 10^-17)."""

SHARE_TOLERANCE = 1e-9
"""Shares may sum to 1 + this (decimal fractions such as 1/3 written out do not add up exactly); a sum
within this much per share of 1 is taken as exactly 1, so the whole pool is offered."""

MAX_ENERGY_WH = 10**9
"""Largest energy value (one member or producer, one quarter-hour) the engine accepts: 1 GWh.

The engine multiplies an available volume by a weight in 64-bit integers; these two limits keep every
product below 2^63. No community meter comes within six orders of magnitude of them."""

MAX_TOTAL_WH = 9 * 10**9
"""Largest pool, and largest total consumption, of one quarter-hour: 9 GWh."""


class Settings(BaseModel):
    """How the rounds behave. Frozen: one object describes one way of allocating."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first_round: Literal["all", "short"] = Field(
        "all",
        description="Who takes part in round 1. 'all': every participant, also one that consumes nothing "
        "in this quarter-hour; its part (equal or specific key) is not used and goes on to the next "
        "round or to the grid, which is what a *fixed* key means. 'short': only participants that "
        "consume something.",
    )
    later_rounds: Literal["short", "all"] = Field(
        "short",
        description="Who takes part in rounds 2 and 3. 'short': participants still short "
        "(remaining demand > 0). 'all': every participant again; the part of those already served "
        "goes on to the next round or to the grid.",
    )
    prorata_basis: Literal["remaining", "original"] = Field(
        "remaining",
        description="Weight of the prorata key: the participant's remaining demand (what it still "
        "lacks after the earlier rounds) or its original demand in this quarter-hour.",
    )
    specific_later_rounds: Literal["renormalise", "fixed"] = Field(
        "renormalise",
        description="The specific key in rounds 2 and 3. 'renormalise': the agreed shares of the "
        "participants taking part are scaled to sum to 1, so the whole remainder is offered. "
        "'fixed': the shares are used as agreed, as in round 1 (a part not taken goes on). Round 1 "
        "never renormalises.",
    )
    own_injection: Literal["allowed", "excluded"] = Field(
        "allowed",
        description="A member that is both producer and consumer. 'allowed': it receives from the "
        "pool for its net import like anyone (its net injection and net import are both quarter-hour "
        "register volumes, as the grid operator settles them). 'excluded': it can receive at most "
        "what the *other* producers injected (its demand is capped at pool minus its own injection), "
        "so none of what it receives needs to be its own injection.",
    )
    tie_break: Literal["rotate", "member_id"] = Field(
        "rotate",
        description="Order among equal remainders when the last whole Wh are handed out. 'member_id': "
        "by member id. 'rotate': by member id, starting one place further every quarter-hour "
        "(quarter-hour number since 1970 modulo the number of participants), so that under an equal "
        "key the odd Wh does not go to the same member 35,040 times a year. Both are independent of "
        "the order in which members are listed.",
    )
    pool_fractions: tuple[Annotated[float, Field(gt=0, le=1)], ...] | None = Field(
        None,
        max_length=MAX_ROUNDS,
        description="The fraction of the pool each round may offer at most, one per round (e.g. [0.5, 1]: "
        "round 1 splits half the pool, round 2 what is left). What a round does not offer or give stays "
        "for the later rounds, and after the last one goes to the grid: [0.5, 0.5] gives round 2 at most "
        "the other half, so what round 1 leaves unused goes to the grid. Unset: every round offers all "
        "that is left.",
    )


DEFAULT_SETTINGS = Settings()

"""One round of allocation under each key, for a block of quarter-hours at once.

A round offers the volume still available (``avail[t]``) to the participants taking part
(``elig[t, j]``) in proportion to the key's weight; nobody receives more than its remaining demand
(``rem[t, j]``). The real-valued split is then made whole: round every part down, and hand out the
whole Wh contained in the sum of the fractions by largest remainder (``rounding``). All arithmetic is
in 64-bit integers: exact, and the same whatever order the members are listed in.

Weights (design.md): equal → 1; specific → the agreed share (in units of 10^-9); prorata → remaining
demand, or original demand with ``prorata_basis="original"``.
"""

from __future__ import annotations

import numpy as np

from .rounding import floor_div, pick_first, pick_largest
from .settings import SHARE_SCALE, Settings


def split_equal(avail: np.ndarray, rem: np.ndarray, elig: np.ndarray | None, offset: np.ndarray) -> np.ndarray:
    """Equal key: ``avail / n`` each, capped. All remainders are equal, so the tie-break order alone decides."""
    rows, m = rem.shape
    n = np.full(rows, m, dtype=np.int64) if elig is None else elig.sum(axis=1, dtype=np.int64)
    safe = np.maximum(n, 1)
    q = (avail // safe)[:, None]
    r = avail % safe
    x = np.minimum(rem, q)
    cand = rem > q
    if elig is not None:
        x = np.where(elig, x, 0)
        cand &= elig
    extra = (cand.sum(axis=1, dtype=np.int64) * r) // safe
    return x + pick_first(cand, extra, offset)


def split_weighted(avail: np.ndarray, rem: np.ndarray, w: np.ndarray, wtotal: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Any key given by integer weights ``w`` (0 for non-participants) over a divisor ``wtotal``.

    Each participant's real part is ``avail * w / wtotal`` capped at ``rem``; ``sum(w) <= wtotal``
    guarantees the parts never exceed ``avail``.
    """
    safe = np.maximum(wtotal, 1)[:, None]
    q, r = floor_div(avail[:, None] * w, safe)
    capped = rem <= q
    x = np.where(capped, rem, q)
    cand = ~capped & (r > 0)
    extra = np.where(cand, r, 0).sum(axis=1) // safe[:, 0]
    return x + pick_largest(r, cand, extra, offset)


def split_round(
    key: str,
    later: bool,
    avail: np.ndarray,
    rem: np.ndarray,
    demand: np.ndarray,
    share_units: np.ndarray,
    settings: Settings,
    offset: np.ndarray,
) -> np.ndarray:
    """What each participant receives in one round (int64 ``[rows, participants]``).

    ``later`` is True for rounds 2 and 3, whose participants are chosen by ``settings.later_rounds``;
    ``demand`` is the original demand (for ``prorata_basis="original"``); ``share_units`` the agreed
    shares in units of 10^-9; ``offset`` each row's tie-break start (columns are in sorted-id order).
    """
    everyone = settings.later_rounds == "all" if later else settings.first_round == "all"
    elig = None if everyone else rem > 0
    if key == "equal":
        return split_equal(avail, rem, elig, offset)
    if key == "prorata":
        base = rem if settings.prorata_basis == "remaining" else demand
        w = base if elig is None else np.where(elig, base, 0)
        return split_weighted(avail, rem, w, w.sum(axis=1), offset)
    if key == "specific":
        w = np.broadcast_to(share_units, rem.shape) if elig is None else np.where(elig, share_units[None, :], 0)
        if later and settings.specific_later_rounds == "renormalise":
            wtotal = w.sum(axis=1)
        else:  # as agreed: never more than the shares add up to, never scaled up
            wtotal = np.full(rem.shape[0], max(SHARE_SCALE, int(share_units.sum())), dtype=np.int64)
        return split_weighted(avail, rem, w, wtotal, offset)
    raise ValueError(f"unknown key {key!r}")

"""Whole-Wh rounding: round down, then hand out the remaining Wh by largest remainder.

Everything here works on 2-D blocks, one row per quarter-hour, one column per participant (or
producer), **with the columns in sorted-id order** (the engine permutes them so). Ties among equal
remainders are broken by a priority: column j's place in row t is ``(j - offset[t]) mod n``, i.e.
sorted ids starting at ``offset[t]`` and wrapping around. Because it depends on the ids only, never on
the order in which members are listed, permuting members changes nothing.
"""

from __future__ import annotations

import numpy as np


def id_order(ids: tuple[str, ...] | list[str]) -> np.ndarray:
    """Column indices that put ``ids`` in sorted order."""
    return np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)


def _places(offset: np.ndarray, n: int) -> np.ndarray:
    """Each column's place in the tie-break order of each row: ``(j - offset) mod n``."""
    place = np.arange(n, dtype=np.int64)[None, :] - offset[:, None]
    place[place < 0] += n
    return place


def pick_first(cand: np.ndarray, extra: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Mark, per row, the first ``extra[t]`` candidates in tie-break order (all remainders equal)."""
    out = np.zeros(cand.shape, dtype=bool)
    rows = np.flatnonzero(extra > 0)
    if rows.size == 0:
        return out
    c = cand[rows]
    off = offset[rows]
    cs = np.cumsum(c, axis=1, dtype=np.int64)
    before = np.where(off > 0, cs[np.arange(rows.size), off - 1], 0)  # candidates left of the offset
    total = cs[:, -1]
    # 1-based rank of each candidate in the rotated order: columns from the offset on come first
    pos = np.where(np.arange(c.shape[1])[None, :] >= off[:, None], cs - before[:, None], cs + (total - before)[:, None])
    out[rows] = c & (pos <= extra[rows, None])
    return out


def pick_largest(remainder: np.ndarray, cand: np.ndarray, extra: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Mark, per row, the ``extra[t]`` candidates with the largest remainder (ties: tie-break order).

    Requires ``extra[t] <= number of candidates in row t`` (true by construction: the Wh handed out
    are the whole part of a sum of fractions, each below 1).
    """
    out = np.zeros(cand.shape, dtype=bool)
    rows = np.flatnonzero(extra > 0)
    if rows.size == 0:
        return out
    n = cand.shape[1]
    # one sortable key per cell, unique within a row: remainder first, then earlier place
    key = np.where(cand[rows], remainder[rows] * n + (n - 1 - _places(offset[rows], n)), -1)
    threshold = np.sort(key, axis=1)[np.arange(rows.size), n - extra[rows]]
    out[rows] = key >= threshold[:, None]
    return out


def floor_div(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(num // den, num % den)`` for int64 with ``den > 0``, faster than integer division.

    The quotient is estimated in floating point (vectorised) and corrected in integers wherever the
    estimate is off, so the result is exact for any values whose products fit in int64.
    """
    q = (num / den).astype(np.int64)
    r = num - q * den
    bad = (r < 0) | (r >= den)
    if bad.any():
        d = np.broadcast_to(den, num.shape)[bad]
        q[bad] += r[bad] // d
        r[bad] = num[bad] - q[bad] * d
    return q, r


def apportion(total: np.ndarray, weights: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Split ``total[t]`` over the columns in proportion to ``weights[t]``, whole units, exact sum.

    Needs ``0 <= total[t] <= weights[t].sum()``; then no column gets more than its weight. Used to
    attribute the shared volume back to producers in proportion to their injection.
    """
    if weights.shape[1] == 1:
        return total[:, None].copy()
    wsum = weights.sum(axis=1)
    q, r = floor_div(total[:, None] * weights, np.maximum(wsum, 1)[:, None])
    extra = total - q.sum(axis=1)
    return q + pick_largest(r, r > 0, extra, offset)

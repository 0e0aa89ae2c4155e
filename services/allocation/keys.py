"""The rounds of a key, computed exactly, and rounded to whole Wh once at the end.

Why exactly: rounding every round to whole Wh on its own drifts a member 2-3 Wh from its exact
allocation after three rounds, and gives two members with identical entitlement 155 and 157 Wh where
156.25 each is exact. So every quantity of a quarter-hour (remaining demand, what is available) is
kept as an exact rational ``q + r / den``: an integer part ``q``, a remainder ``0 <= r < den`` and one
denominator ``den`` per quarter-hour, which each round multiplies by its divisor. Only the final
allocation is made whole, by largest remainder (``finish``).

A round offers the volume available (at most ``pool_fractions[i]`` of the pool) to the participants
taking part in proportion to the key's weight; nobody receives more than its remaining demand.
Weights (design.md): equal → 1; specific → the agreed share; prorata → remaining demand (or the
original demand, ``prorata_basis="original"``); mixed → the agreed share for the members that have
one in this round, and the rest of the offer pro rata of demand among those that have none.

Two arithmetics, one code path: 64-bit integers while every denominator stays below 2^61 (products
that do not fit are taken modulo 2^64 and their quotient estimated in floating point, which is exact
because the remainder is known to lie in a narrow range: ``wide_divmod``), and Python integers
(``object`` arrays) for the rare quarter-hours whose denominators grow beyond that (``wide=True``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .rounding import pick_first
from .settings import Settings

DEN_LIMIT = float(2**61)
"""Largest denominator of the 64-bit path; a quarter-hour that would exceed it is redone in Python integers."""


@dataclass(frozen=True)
class RoundShares:
    """Agreed shares used by one round, as integers over a common denominator (columns sorted by id).

    ``whole``: the shares sum to 1 within tolerance, so the round's divisor is their sum and the whole
    offer is split (1/3 + 1/3 + 1/3 gives the whole pool, not 1 Wh less). ``has``: the member has a
    share in this round (under the mixed key the others take part pro rata).
    """

    units: np.ndarray
    scale: int
    whole: bool
    has: np.ndarray


def wide_divmod(num: np.ndarray, estimate: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``divmod(N, den)`` for an integer N known only modulo 2^64 (``num``, wrapped int64) and
    approximately (``estimate`` ≈ N / den, off by less than 1).

    Needs ``0 < den < 2^61``: the remainder computed with wrapping arithmetic then lies in
    ``[-den, 2 den)``, inside int64, so it is exact and one correction step fixes the quotient.
    ``estimate`` is a temporary of the caller's and is overwritten.
    """
    q = np.floor(estimate, out=estimate).astype(np.int64)
    with np.errstate(over="ignore"):
        r = num - q * den
    den = np.broadcast_to(den, r.shape)
    low = r < 0
    if low.any():
        q[low] -= 1
        r[low] += den[low]
    high = r >= den
    if high.any():
        q[high] += 1
        r[high] -= den[high]
    return q, r


def _carry(rsum_wrapped: np.ndarray, rsum_float: np.ndarray, den: np.ndarray, wide: bool) -> tuple[np.ndarray, np.ndarray]:
    """``divmod`` of a row sum of remainders (each below ``den``) by ``den``."""
    if wide:
        return rsum_wrapped // den, rsum_wrapped % den
    return wide_divmod(rsum_wrapped, rsum_float / den.astype(np.float64), den)


def _sub(aq: np.ndarray, ar: np.ndarray, bq: np.ndarray, br: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(aq + ar/den) - (bq + br/den)`` with the remainder kept in ``[0, den)``."""
    q, r = aq - bq, ar - br  # fresh arrays: updated in place below (a year of 1,000 members is hot)
    borrow = r < 0
    np.add(r, den, out=r, where=borrow)
    q -= borrow
    return q, r


def _positive(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    return (q > 0) | (r > 0)


def _step(
    st: dict[str, np.ndarray],
    oq: np.ndarray,
    orr: np.ndarray,
    w: np.ndarray,
    wtot: np.ndarray,
    wide: bool,
) -> None:
    """Offer ``o = oq + orr/den`` to each participant as ``o × w / wtot``, capped at its remaining demand.

    Updates the state in place; the new denominator is ``den × wtot``.
    """
    den, rq, rr = st["den"], st["rq"], st["rr"]
    den2 = den * wtot
    d2 = den2[:, None]
    with np.errstate(over="ignore"):
        o_int = oq * den + orr  # wraps in int64: only its value modulo 2^64 is used
        num = o_int[:, None] * w
    if wide:
        xq, xr = num // d2, num % d2
    else:
        rate = (oq + orr / den.astype(np.float64)) / wtot.astype(np.float64)
        xq, xr = wide_divmod(num, rate[:, None] * w, d2)
    rr2 = rr * wtot[:, None]
    capped = (rq < xq) | ((rq == xq) & (rr2 <= xr))
    np.copyto(xq, rq, where=capped)  # the grant: the smaller of offer and remaining demand
    np.copyto(xr, rr2, where=capped)
    gq, gr = xq, xr
    st["rq"], st["rr"] = _sub(rq, rr2, gq, gr, d2)
    with np.errstate(over="ignore"):
        rsum = gr.sum(axis=1)
    carry, rem = _carry(rsum, None if wide else gr.astype(np.float64).sum(axis=1), den2, wide)
    st["aq"], st["ar"] = _sub(st["aq"], st["ar"] * wtot, gq.sum(axis=1) + carry, rem, den2)
    st["den"] = den2


def _reduce(st: dict[str, np.ndarray], wide: bool) -> None:
    """Divide each row's denominator and remainders by their greatest common divisor, in place."""
    if wide:
        return
    g = np.gcd(np.gcd.reduce(st["rr"], axis=1), np.gcd(st["ar"], st["den"] // st["base"]))  # den stays a multiple of base
    g = np.maximum(g, 1)
    st["den"] = st["den"] // g
    st["rr"] = st["rr"] // g[:, None]
    st["ar"] = st["ar"] // g


def _offer(st: dict[str, np.ndarray], pool: np.ndarray, frac: Fraction | None) -> tuple[np.ndarray, np.ndarray]:
    """What a round offers: everything available, or at most ``frac`` of the pool (``den`` is a multiple
    of ``frac``'s denominator, see ``allocate_rounds``)."""
    aq, ar = st["aq"], st["ar"]
    if frac is None or frac >= 1:
        return aq, ar
    num = pool * frac.numerator
    cq = num // frac.denominator
    cr = (num % frac.denominator) * (st["den"] // frac.denominator)
    less = (cq < aq) | ((cq == aq) & (cr < ar))
    return np.where(less, cq, aq), np.where(less, cr, ar)


def _weights(
    key: str,
    later: bool,
    st: dict[str, np.ndarray],
    demand: np.ndarray,
    shares: RoundShares | None,
    settings: Settings,
    wide: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(w, wtot, fits)`` of one round: integer weights (0 for who does not take part), the divisor,
    and per row whether ``den × wtot`` stays within the 64-bit path."""
    everyone = settings.later_rounds == "all" if later else settings.first_round == "all"
    rows, m = demand.shape
    elig = np.ones((rows, m), dtype=bool) if everyone else _positive(st["rq"], st["rr"])
    den = st["den"]
    dtype = object if wide else np.int64

    def base() -> tuple[np.ndarray, np.ndarray]:
        """Pro-rata weight and its float size (to check the bounds before computing in int64)."""
        if settings.prorata_basis == "original":
            return demand, demand.astype(np.float64)
        with np.errstate(over="ignore"):
            exact = st["rq"] * den[:, None] + st["rr"]
        approx = None if wide else st["rq"] * den.astype(np.float64)[:, None] + st["rr"]
        return exact, approx

    if key == "equal":
        w = elig.astype(np.int64).astype(dtype)
        wtot = elig.sum(axis=1).astype(np.int64).astype(dtype)
        size = wtot.astype(np.float64) if not wide else None
    elif key == "prorata":
        b, bf = base()
        w = np.where(elig, b, 0)
        wtot = w.sum(axis=1)
        size = None if wide else np.where(elig, bf, 0.0).sum(axis=1)
    elif key == "specific":
        assert shares is not None
        units = shares.units.astype(dtype)
        w = np.where(elig, units[None, :], 0).astype(dtype)
        if later and settings.specific_later_rounds == "renormalise":
            wtot = w.sum(axis=1)
        else:  # as agreed: never more than the shares add up to; all of it when they sum to 1
            total = int(shares.units.sum())
            fixed = total if shares.whole else max(shares.scale, total)
            wtot = np.full(rows, fixed, dtype=dtype)
        size = None if wide else wtot.astype(np.float64)
    elif key == "mixed":
        assert shares is not None
        units = shares.units.astype(dtype)
        fixed_total = int(shares.units[shares.has].sum())
        scale = fixed_total if shares.whole else max(shares.scale, fixed_total)
        pr = elig & ~shares.has[None, :]
        b, bf = base()
        bw = np.where(pr, b, 0)
        bsum = bw.sum(axis=1)
        none = bsum == 0
        bsum1 = np.where(none, 1, bsum).astype(dtype)
        # fixed part: offer × share / scale = offer × share × bsum / (scale × bsum);
        # pro-rata part: offer × (scale - shares) / scale × b / bsum
        fixed_w = np.where(elig & shares.has[None, :], units[None, :], 0).astype(dtype)
        w = fixed_w * bsum1[:, None] + bw * (scale - fixed_total)
        wtot = bsum1 * scale
        size = None if wide else np.where(none, 1.0, np.where(pr, bf, 0.0).sum(axis=1)) * float(scale)
    else:
        raise ValueError(f"unknown key {key!r}")
    zero = wtot == 0
    if zero.any():
        wtot = np.where(zero, 1, wtot).astype(dtype)
    if wide:
        return w, wtot, np.ones(rows, dtype=bool)
    fits = (size < DEN_LIMIT) & (den.astype(np.float64) * np.maximum(size, 1.0) < DEN_LIMIT)
    return w, wtot, fits


def allocate_rounds(
    demand: np.ndarray,
    pool: np.ndarray,
    rounds: tuple[str, ...],
    shares: list[RoundShares | None],
    fractions: list[Fraction | None],
    settings: Settings,
    offset: np.ndarray,
) -> np.ndarray:
    """Whole-Wh allocation ``[rows, participants]`` of a block (columns in sorted-id order).

    ``demand``: what each participant can receive; ``pool``: what is shared; ``shares[i]`` and
    ``fractions[i]``: round i's agreed shares and the fraction of the pool it may offer (None: all).
    """
    got = _rounds(demand, pool, rounds, shares, fractions, settings, offset, wide=False)
    if isinstance(got, tuple):  # some rows need wider integers: redo those exactly in Python ints
        got, bad = got
        idx = np.flatnonzero(bad)
        redo = _rounds(demand[idx].astype(object), pool[idx].astype(object), rounds, shares, fractions, settings, offset[idx], wide=True)
        assert not isinstance(redo, tuple)
        got[idx] = redo.astype(np.int64)
    return got


def _rounds(
    demand: np.ndarray,
    pool: np.ndarray,
    rounds: tuple[str, ...],
    shares: list[RoundShares | None],
    fractions: list[Fraction | None],
    settings: Settings,
    offset: np.ndarray,
    wide: bool,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    rows = demand.shape[0]
    start = 1
    for f in fractions:
        if f is not None and f < 1:
            start = start * f.denominator // np.gcd(start, f.denominator)
    dtype = object if wide else np.int64
    st: dict[str, np.ndarray] = {
        "den": np.full(rows, start, dtype=dtype),
        "base": np.full(rows, start, dtype=dtype),  # the pool fractions' common denominator
        "rq": demand.copy(),
        "rr": np.zeros(demand.shape, dtype=dtype),
        "aq": pool.copy(),
        "ar": np.zeros(rows, dtype=dtype),
    }
    bad = np.zeros(rows, dtype=bool)
    for i, key in enumerate(rounds):
        # a round only matters where something is left to offer and someone still lacks energy
        live = _positive(st["aq"], st["ar"]) & _positive(st["rq"], st["rr"]).any(axis=1) & ~bad
        idx = np.flatnonzero(live)
        if idx.size == 0:
            break
        whole = idx.size == rows
        sub = st if whole else {k: v[idx] for k, v in st.items()}
        dem = demand if whole else demand[idx]
        w, wtot, fits = _weights(key, i > 0, sub, dem, shares[i], settings, wide)
        if not fits.all():
            _reduce(sub, wide)  # a common factor may bring the denominator back within bounds
            w, wtot, fits = _weights(key, i > 0, sub, dem, shares[i], settings, wide)
        if not fits.all():  # keep those rows still (offer nothing) and redo them in Python integers
            bad[idx[~fits]] = True
            w = np.where(fits[:, None], w, 0)
            wtot = np.where(fits, wtot, 1)
        oq, orr = _offer(sub, pool if whole else pool[idx], fractions[i])
        _step(sub, oq, orr, w, wtot, wide)
        if not whole:
            for k, v in sub.items():
                st[k][idx] = v
    got = finish(st["den"], st["rq"], st["rr"], demand, offset, wide)
    return (got, bad) if bad.any() else got


def finish(den: np.ndarray, rq: np.ndarray, rr: np.ndarray, demand: np.ndarray, offset: np.ndarray, wide: bool) -> np.ndarray:
    """The exact allocations ``demand - remaining`` made whole: round down, then the whole Wh in the sum
    of the fractions go one each to the largest fractions, equal fractions in tie-break order."""
    frac = rr > 0
    gq = demand - rq - frac
    d = den[:, None]
    gr = np.where(frac, d - rr, 0)
    with np.errstate(over="ignore"):
        rsum = gr.sum(axis=1)
    extra, _ = _carry(rsum, None if wide else gr.astype(np.float64).sum(axis=1), den, wide)
    extra = np.asarray(extra).astype(np.int64)
    out = np.asarray(gq).astype(np.int64)
    rows = np.flatnonzero(extra > 0)
    if rows.size == 0:
        return out
    g = gr[rows]
    n = g.shape[1]
    ex = extra[rows]
    thr = np.sort(g, axis=1)[np.arange(rows.size), n - ex][:, None]  # the ex-th largest fraction of the row
    above = g > thr
    ties = (g == thr) & frac[rows]
    k = ex - above.sum(axis=1).astype(np.int64)
    out[rows] += above | pick_first(ties, k, offset[rows])
    return out

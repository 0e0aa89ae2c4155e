"""Allocation engine benchmark: a year for 1,000 members, and one live quarter-hour.

    python bench/allocation.py [--members 1000] [--producers 100] [--quarter-hours 35040]

Prints, for a synthetic year (solar pool shaped by day and season, household loads):
- the vectorised engine's time for the whole year under several 1-3 round keys (best of --repeat),
  against the 2 s target;
- the same allocation through a plain per-quarter-hour Python loop (exact fractions, no numpy),
  timed on a sample of quarter-hours spread over the year and extrapolated to the year, with the
  ratio; the loop's results are checked equal to the engine's on the sample;
- the live path (``allocate_quarter_hour``, dicts in and out) for one sunny quarter-hour, median and
  95th percentile, against the 2 ms target.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from services.allocation import allocate, allocate_quarter_hour, parse_key_spec

YEAR_TARGET_S = 2.0
LIVE_TARGET_MS = 2.0


def synthetic_year(members: int, producers: int, quarter_hours: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(consumption [T, M], production [T, K], slots [T])`` in Wh; the producers are members too."""
    rng = np.random.default_rng(seed)
    t = np.arange(quarter_hours)
    hour = (t % 96) / 4.0
    day = t // 96
    season = 0.5 - 0.5 * np.cos(2 * np.pi * (day - 172) / 365)  # 0 at midwinter .. 1 at midsummer
    daylen = 8 + 8.5 * season
    sun = np.clip(np.cos(np.pi * (hour - 13) / daylen), 0, None) * (hour > 13 - daylen / 2) * (hour < 13 + daylen / 2)
    clouds = rng.beta(2, 2, day.max() + 1)[day]
    kwp = rng.uniform(3, 10, producers)
    production = np.rint(
        sun[:, None]
        * clouds[:, None]
        * (0.25 + 0.6 * season)[:, None]
        * kwp[None, :]
        * 250
        * rng.uniform(0.8, 1.0, (quarter_hours, producers))
    ).astype(np.int64)
    base = rng.uniform(20, 60, members)
    evening = np.exp(-0.5 * ((hour - 19) / 2) ** 2)
    morning = np.exp(-0.5 * ((hour - 7.5) / 1) ** 2)
    shape = 1 + 2.5 * evening + 1.2 * morning + 0.6 * (1 - season)
    consumption = np.rint(shape[:, None] * base[None, :] * rng.lognormal(0, 0.5, (quarter_hours, members))).astype(np.int64)
    slots = 1_735_686_000 // 900 + t  # 2025-01-01 local midnight, quarter-hour numbers
    return consumption, production, slots


def plain_loop(
    cons: list[int], prod: list[int], rounds: tuple[str, ...], ranks: list[int], pranks: list[int], shares: list[Fraction], slot: int
) -> tuple[list[int], list[int]]:
    """One quarter-hour with default settings, written as a plain Python loop over members: every
    round in exact fractions, the allocations made whole once by largest remainder."""
    m = len(cons)
    prio = [(r - slot) % m for r in ranks]
    rem = [Fraction(c) for c in cons]
    avail = Fraction(sum(prod))
    whole = sum(shares) == 1
    for i, key in enumerate(rounds):
        if avail == 0:
            break
        elig = [True] * m if i == 0 else [r > 0 for r in rem]
        if key == "equal":
            w = [Fraction(1 if e else 0) for e in elig]
            total = sum(w)
        elif key == "prorata":
            w = [r if e else Fraction(0) for r, e in zip(rem, elig, strict=True)]
            total = sum(w)
        else:
            w = [u if e else Fraction(0) for u, e in zip(shares, elig, strict=True)]
            total = sum(w) if i > 0 or whole else max(Fraction(1), sum(shares))
        if total == 0:
            continue
        offer = avail
        for j in range(m):
            x = min(rem[j], offer * w[j] / total)
            rem[j] -= x
            avail -= x
    exact = [c - r for c, r in zip(cons, rem, strict=True)]
    got = [math.floor(x) for x in exact]
    extra = math.floor(sum(exact)) - sum(got)
    order = sorted((j for j in range(m) if exact[j] != got[j]), key=lambda j: (-(exact[j] - got[j]), prio[j]))
    for j in order[:extra]:
        got[j] += 1
    shared = sum(got)
    pool = sum(prod)
    k = len(prod)
    pprio = [(r - slot) % k for r in pranks]
    split = []
    cands = []
    for j in range(k):
        q, r = divmod(shared * prod[j], pool) if pool else (0, 0)
        split.append(q)
        if r:
            cands.append((-r, pprio[j], j))
    for _, _, j in sorted(cands)[: shared - sum(split)]:
        split[j] += 1
    return got, split


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--producers", type=int, default=300, help="how many of the members also produce")
    ap.add_argument("--quarter-hours", type=int, default=35040)
    ap.add_argument("--keys", nargs="+", default=["aubange", "cascade", "prorata,prorata,prorata", "specific,prorata,equal"])
    ap.add_argument("--repeat", type=int, default=3, help="engine runs per key; the best is reported")
    ap.add_argument("--loop-sample", type=int, default=480, help="quarter-hours timed through the plain loop")
    ap.add_argument("--live-runs", type=int, default=300)
    args = ap.parse_args(argv)

    m, k, t = args.members, args.producers, args.quarter_hours
    cons, prod, slots = synthetic_year(m, k, t)
    member_ids = [f"m{j:05d}" for j in range(m)]
    producer_ids = member_ids[:k]
    shares = [1.0 / m] * m
    pool_mwh, cons_mwh = prod.sum() / 1e6, cons.sum() / 1e6
    print(
        f"synthetic year: {t} quarter-hours, {m} members of which {k} also produce; pool {pool_mwh:,.0f} MWh, consumption {cons_mwh:,.0f} MWh"
    )
    print(f"numpy {np.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print()
    print(f"vectorised engine, whole year, best of {args.repeat} (wall clock; CPU time of that run):")
    first = None
    for spec in args.keys:
        label, rounds = parse_key_spec(spec)
        best, cpu = float("inf"), 0.0
        for _ in range(args.repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            res = allocate(cons, prod, rounds, member_ids=member_ids, producer_ids=producer_ids, shares=shares, slots=slots)
            wall = time.perf_counter() - w0
            if wall < best:
                best, cpu = wall, time.process_time() - c0
        if first is None:
            first = (label, rounds, res, best)
        verdict = "ok" if best <= YEAR_TARGET_S else "MISSED"
        print(f"  {label:<26} {len(rounds)} rounds  {best:6.2f} s  (CPU {cpu:5.2f} s)   target <= {YEAR_TARGET_S:.0f} s: {verdict}")

    label, rounds, res, engine_s = first
    sample = np.linspace(0, t - 1, min(args.loop_sample, t)).astype(int)
    order = sorted(member_ids)
    ranks = [order.index(x) for x in member_ids]
    pranks = sorted(range(k), key=producer_ids.__getitem__)
    pranks = [pranks.index(i) for i in range(k)]
    exact_shares = [Fraction(s).limit_denominator(10**6) for s in shares]
    rows = list(zip(cons[sample].tolist(), prod[sample].tolist(), sample.tolist(), strict=True))
    t0 = time.perf_counter()
    outs = [plain_loop(c, p, rounds, ranks, pranks, exact_shares, int(slots[i])) for c, p, i in rows]
    loop_s = time.perf_counter() - t0
    same = all(
        got == res.allocated[i].tolist() and split == res.producer_shared[i].tolist()
        for (got, split), i in zip(outs, sample.tolist(), strict=True)
    )
    loop_year = loop_s / sample.size * t
    print()
    print(f"plain per-quarter-hour Python loop, key {label}: timed on {sample.size} quarter-hours spread evenly over the year")
    print(f"  {loop_s:.2f} s for the sample, extrapolated to {t} quarter-hours: {loop_year:.0f} s")
    print(f"  engine {engine_s:.2f} s for the year: {loop_year / engine_s:.0f}x faster")
    print(f"  loop results identical to the engine's on the sample: {'yes' if same else 'NO'}")

    sunny = int(np.argmax(prod.sum(axis=1)))
    cons_d = dict(zip(member_ids, cons[sunny].tolist(), strict=True))
    prod_d = dict(zip(producer_ids, prod[sunny].tolist(), strict=True))
    start = datetime.fromtimestamp(int(slots[sunny]) * 900, UTC)
    timings = []
    for _ in range(args.live_runs):
        t0 = time.perf_counter()
        live = allocate_quarter_hour(cons_d, prod_d, rounds, start=start)
        timings.append(time.perf_counter() - t0)
    timings.sort()
    med = statistics.median(timings) * 1000
    p95 = timings[int(0.95 * (len(timings) - 1))] * 1000
    same_live = [live.allocated_wh[x] for x in member_ids] == res.allocated[sunny].tolist()
    verdict = "ok" if med <= LIVE_TARGET_MS else "MISSED"
    print()
    print(f"live path (allocate_quarter_hour, dicts in and out): one sunny quarter-hour, {m} members, {label} ({len(rounds)} rounds)")
    print(f"  median {med:.2f} ms, 95th percentile {p95:.2f} ms over {args.live_runs} runs; target <= {LIVE_TARGET_MS:.0f} ms: {verdict}")
    print(f"  identical to the year run's row: {'yes' if same_live else 'NO'}")
    return 0 if same and same_live else 1


if __name__ == "__main__":
    sys.exit(main())

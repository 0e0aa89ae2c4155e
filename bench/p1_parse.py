"""P1 telegram throughput and memory: ``p1`` against ``dsmr_parser`` (the parser Home Assistant ships).

    python bench/p1_parse.py            # figures for this machine (about 30 s)
    python bench/p1_parse.py --check    # and exit 1 if a target is missed

Both sides parse the same real sample telegrams with CRC checking on: ``p1.parse_telegram`` and
``dsmr_parser`` 1.11.2 ``TelegramParser(spec, apply_checksum_validation=True).parse`` with the
matching specification (BELGIUM_FLUVIUS for e-MUCS, V5 for DSMR 5). Throughput is telegrams per
CPU-second, the best of 5 runs alternating between the two parsers. The "stream" row adds framing:
a byte stream cut in 256-byte chunks, through ``p1.Framer`` or dsmr_parser's ``TelegramBuffer``.
Peak RSS is measured in a fresh subprocess per side (``resource.getrusage().ru_maxrss``) that
imports only its parser and decodes 10,000 telegrams, so neither figure includes the other's
imports; the children are spawned before this process imports either parser, because on Linux a
spawned child's ru_maxrss starts from its parent's peak.

Note: p1 memoises timestamp strings (the peak history and MBus stamps repeat verbatim from one
telegram to the next on a real meter). Repeating one sample also repeats its 0-0:1.0.0 stamp, which a
live meter would not; that is one stamp per telegram, a few percent of the figure.

Targets (issue 2): throughput >= 10x dsmr_parser's; p1 process peak RSS <= 25 MB.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "fixtures" / "p1"

# (label, sample file, dsmr_parser specification name)
CASES = [
    ("e-MUCS 1.7.1, gas + water", "be_emucs_fluvius_v171_gas_water.txt", "BELGIUM_FLUVIUS"),
    ("e-MUCS, 13-month peak history", "be_emucs_fluvius_13month_peak_history.txt", "BELGIUM_FLUVIUS"),
    ("e-MUCS 1.7.1, invalid peak stamp", "be_emucs_fluvius_v171_invalid_peak_ts.txt", "BELGIUM_FLUVIUS"),
    ("DSMR 5.0, Iskra MT382", "nl_dsmr50_iskra_mt382.txt", "V5"),
    ("DSMR 5.0, AM550 two MBus", "nl_dsmr50_iskra_am550_two_mbus.txt", "V5"),
]
RSS_TARGET_MB = 25.0
RATIO_TARGET = 10.0
CHUNK = 256


def load(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def compare(mine: Callable[[], object], theirs: Callable[[], object], seconds: float, rounds: int = 5) -> tuple[float, float]:
    """Calls per CPU-second of each function: the best of ``rounds`` alternating runs.

    CPU time (not wall time) and alternation keep the ratio fair on a machine that is busy with
    something else: both sides see the same conditions, and time spent descheduled is not counted.
    """

    def calibrate(fn: Callable[[], object]) -> int:
        n = 1
        while True:
            t0 = time.process_time()
            for _ in range(n):
                fn()
            dt = time.process_time() - t0
            if dt > 0.05:
                return max(1, int(n * seconds / rounds / dt))
            n *= 2

    def run(fn: Callable[[], object], n: int) -> float:
        t0 = time.process_time()
        for _ in range(n):
            fn()
        return n / max(time.process_time() - t0, 1e-9)

    n_mine, n_theirs = calibrate(mine), calibrate(theirs)
    best_mine = best_theirs = 0.0
    for _ in range(rounds):
        best_mine = max(best_mine, run(mine, n_mine))
        best_theirs = max(best_theirs, run(theirs, n_theirs))
    return best_mine, best_theirs


def chunks(telegrams: list[bytes], count: int) -> Iterator[bytes]:
    """``count`` telegrams cycled from ``telegrams``, as a serial port would hand them over."""
    for raw in itertools.islice(itertools.cycle(telegrams), count):
        for i in range(0, len(raw), CHUNK):
            yield raw[i : i + CHUNK]


# -- subprocess side: peak RSS ---------------------------------------------------------------------


def rss_child(side: str, count: int) -> None:
    """Import one parser, decode ``count`` telegrams, print {"rss_kb", "telegrams", "ok"}."""
    sys.path.insert(0, str(ROOT))
    telegrams = [load(name) for _, name, _ in CASES]
    decoded = ok = 0
    if side == "p1":
        import p1

        for t in p1.iter_telegrams(chunks(telegrams, count)):
            decoded += 1
            ok += t.crc_ok is True and len(t.values) > 10
    elif side == "dsmr_parser":
        from dsmr_parser import telegram_specifications
        from dsmr_parser.clients.telegram_buffer import TelegramBuffer
        from dsmr_parser.parsers import TelegramParser

        logging.getLogger("dsmr_parser").setLevel(logging.CRITICAL)
        parsers = {spec: TelegramParser(getattr(telegram_specifications, spec), apply_checksum_validation=True) for _, _, spec in CASES}
        spec_of = {raw.split(b"\r\n", 1)[0] + raw[-8:]: spec for raw, (_, _, spec) in zip(telegrams, CASES)}
        buffer = TelegramBuffer()
        for chunk in chunks(telegrams, count):
            buffer.append(chunk.decode("ascii"))
            for text in buffer.get_all():
                raw = text.encode("ascii")
                t = parsers[spec_of[raw.split(b"\r\n", 1)[0] + raw[-8:]]].parse(text)
                decoded += 1
                ok += len(list(t)) > 10
    elif side != "none":
        raise SystemExit(f"unknown side {side!r}")
    print(json.dumps({"rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "hwm_kb": _vm_hwm_kb(), "telegrams": decoded, "ok": ok}))


def _vm_hwm_kb() -> int | None:
    """This process's own peak RSS from /proc (Linux), immune to what the parent had mapped."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_rss(side: str, count: int) -> dict:
    """Run one side in a fresh interpreter. Called while this process is still small: on Linux a
    spawned child's ru_maxrss starts from its parent's peak (vfork/exec), so the bench measures
    memory before importing either parser itself."""
    proc = subprocess.run(
        [sys.executable, __file__, "--rss-child", side, "--count", str(count)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return json.loads(proc.stdout)


# -- main ------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per side and telegram (default 2)")
    ap.add_argument("--count", type=int, default=10_000, help="telegrams decoded for the RSS figure")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--rss-child", choices=("p1", "dsmr_parser", "none"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.count)
        return 0

    # memory first, while this process is a bare interpreter (see measure_rss)
    base = measure_rss("none", 0)
    mine_rss = measure_rss("p1", args.count)
    theirs_rss = measure_rss("dsmr_parser", args.count)
    assert mine_rss["telegrams"] == theirs_rss["telegrams"] == args.count, (mine_rss, theirs_rss)
    assert mine_rss["ok"] == theirs_rss["ok"] == args.count, (mine_rss, theirs_rss)

    sys.path.insert(0, str(ROOT))
    from dsmr_parser import telegram_specifications
    from dsmr_parser.clients.telegram_buffer import TelegramBuffer
    from dsmr_parser.parsers import TelegramParser

    import p1

    logging.getLogger("dsmr_parser").setLevel(logging.CRITICAL)
    print(f"P1 parse benchmark: CRC check on; telegrams per CPU-second, best of 5 alternating runs (~{args.seconds:g} s per side)")
    print(f"Python {platform.python_version()} on {platform.machine()}, {platform.platform()}")
    print()
    header = f"{'telegram':<36}{'bytes':>6}{'p1 tel/s':>12}{'dsmr_parser tel/s':>20}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    ratios = []
    for label, name, spec in CASES:
        raw = load(name)
        text = raw.decode("ascii")
        parser = TelegramParser(getattr(telegram_specifications, spec), apply_checksum_validation=True)
        ours = p1.parse_telegram(raw)
        assert ours.crc_ok is True and not ours.errors, name
        parser.parse(text)  # raises on a CRC mismatch
        mine, theirs = compare(partial(p1.parse_telegram, raw), partial(parser.parse, text), args.seconds)
        ratios.append(mine / theirs)
        print(f"{label:<36}{len(raw):>6}{mine:>12,.0f}{theirs:>20,.0f}{mine / theirs:>7.1f}x")

    # framing included: a mixed stream of the same telegrams in 256-byte chunks
    telegrams = [load(name) for _, name, _ in CASES]
    stream_chunks = list(chunks(telegrams, 200))
    text_chunks = [c.decode("ascii") for c in stream_chunks]
    by_text = {
        raw.decode("ascii"): TelegramParser(getattr(telegram_specifications, spec), apply_checksum_validation=True)
        for raw, (_, _, spec) in zip(telegrams, CASES)
    }

    def p1_stream() -> int:
        return sum(1 for _ in p1.iter_telegrams(stream_chunks))

    def dsmr_stream() -> int:
        buffer, n = TelegramBuffer(), 0
        for c in text_chunks:
            buffer.append(c)
            for t in buffer.get_all():
                by_text[t].parse(t)
                n += 1
        return n

    assert p1_stream() == dsmr_stream() == 200
    mine, theirs = compare(p1_stream, dsmr_stream, args.seconds)
    mine, theirs = 200 * mine, 200 * theirs
    ratios.append(mine / theirs)
    print(f"{'stream of all five, with framing':<36}{'-':>6}{mine:>12,.0f}{theirs:>20,.0f}{mine / theirs:>7.1f}x")

    print()
    p1_mb, dsmr_mb, base_mb = (r["rss_kb"] / 1024 for r in (mine_rss, theirs_rss, base))
    print(f"peak RSS (ru_maxrss), import + decode {args.count:,} telegrams, fresh process each:")
    print(f"  p1           {p1_mb:6.1f} MB")
    print(f"  dsmr_parser  {dsmr_mb:6.1f} MB   ({dsmr_mb / p1_mb:.1f}x p1)")
    print(f"  bare python  {base_mb:6.1f} MB   (same child, no parser imported: interpreter + this script's imports)")
    if mine_rss["hwm_kb"] and theirs_rss["hwm_kb"]:
        print(f"  own VmHWM from /proc: p1 {mine_rss['hwm_kb'] / 1024:.1f} MB, dsmr_parser {theirs_rss['hwm_kb'] / 1024:.1f} MB, bare {base['hwm_kb'] / 1024:.1f} MB")
    print()
    worst = min(ratios)
    rss_ok = p1_mb <= RSS_TARGET_MB
    print(f"target throughput >= {RATIO_TARGET:g}x dsmr_parser: worst case {worst:.1f}x -> {'PASS' if worst >= RATIO_TARGET else 'FAIL'}")
    print(f"target p1 peak RSS <= {RSS_TARGET_MB:g} MB: {p1_mb:.1f} MB -> {'PASS' if rss_ok else 'FAIL'}")
    return 1 if args.check and (worst < RATIO_TARGET or not rss_ok) else 0


if __name__ == "__main__":
    sys.exit(main())

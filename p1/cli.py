"""``quartier p1 read`` and ``quartier p1 decode``: what an installer runs at the meter.

``read`` shows live telegrams from a serial port; ``decode`` turns any captured byte stream (a file,
``cat /dev/ttyUSB0``, a log with garbage) into one JSON object per telegram.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO

from gateway.logs import get_logger

log = get_logger("quartier.p1")

CHUNK = 64 * 1024


def register(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``quartier p1 read|decode``; the work happens in the handlers."""
    p1 = subparsers.add_parser("p1", help="read and decode P1 telegrams (DSMR 2.2-5, e-MUCS H)")
    sub = p1.add_subparsers(dest="p1_command", required=True, metavar="{read,decode}")

    read = sub.add_parser("read", help="print telegrams live from a serial port")
    read.add_argument("--port", required=True, help="serial device of the P1 cable, e.g. /dev/ttyUSB0")
    read.add_argument(
        "--baudrate",
        type=int,
        choices=(115200, 9600),
        default=None,
        help="115200 (8N1, DSMR 4/5, e-MUCS) or 9600 (7E1, DSMR 2.2/3); default: detect",
    )
    read.add_argument("--json", action="store_true", help="one JSON object per telegram, as `p1 decode`")
    read.add_argument("--count", type=int, default=0, help="stop after this many telegrams (default: run until Ctrl-C)")
    read.set_defaults(func=_read)

    decode = sub.add_parser("decode", help="decode a raw P1 byte stream to one JSON object per telegram")
    decode.add_argument("file", nargs="?", default="-", help="file with the raw bytes, or - for standard input (default)")
    decode.set_defaults(func=_decode)


def _decode(args: argparse.Namespace) -> int:
    if args.file == "-":
        return _decode_stream(sys.stdin.buffer, "standard input")
    try:
        with open(args.file, "rb") as stream:
            return _decode_stream(stream, args.file)
    except FileNotFoundError:
        raise SystemExit(f"quartier p1 decode: FILE {args.file!r}: no such file") from None
    except IsADirectoryError:
        raise SystemExit(f"quartier p1 decode: FILE {args.file!r}: is a directory, not a capture file") from None
    except PermissionError:
        raise SystemExit(f"quartier p1 decode: FILE {args.file!r}: permission denied") from None


def _decode_stream(stream: BinaryIO, label: str) -> int:
    from p1.decode import parse_telegram
    from p1.framing import Framer
    from p1.render import telegram_json

    framer = Framer()
    out = sys.stdout
    read = getattr(stream, "read1", stream.read)  # read1: pass telegrams on as soon as they arrive
    counts = {True: 0, False: 0, None: 0}
    while True:
        chunk = read(CHUNK)
        frames = framer.feed(chunk) if chunk else framer.flush()
        for frame in frames:
            t = parse_telegram(frame)
            counts[t.crc_ok] += 1
            out.write(telegram_json(t) + "\n")
        if frames:
            out.flush()
        if not chunk:
            break
    total = sum(counts.values())
    log.info(
        "p1.decoded",
        extra={"source": label, "telegrams": total, "crc_ok": counts[True], "crc_failed": counts[False], "no_crc": counts[None], "discarded_bytes": framer.discarded_bytes, "overflows": framer.overflows},
    )
    if total == 0:
        print(f"quartier p1 decode: no telegram found in {label} ({framer.discarded_bytes} bytes discarded)", file=sys.stderr)
        return 1
    return 0


def _read(args: argparse.Namespace) -> int:
    from p1.render import telegram_json, telegram_text
    from p1.serial_reader import SerialReader

    if not os.path.exists(args.port):
        raise SystemExit(f"quartier p1 read: --port {args.port!r}: no such device (is the P1 cable plugged in?)")
    if not os.access(args.port, os.R_OK | os.W_OK):
        raise SystemExit(f"quartier p1 read: --port {args.port!r}: permission denied (is this user in the 'dialout' group?)")
    if args.count < 0:
        raise SystemExit(f"quartier p1 read: --count {args.count}: must be 0 (no limit) or more")
    render = telegram_json if args.json else telegram_text
    seen = 0
    with SerialReader(args.port, args.baudrate) as reader:
        for t in reader:
            sys.stdout.write(render(t) + ("\n" if args.json else "\n\n"))
            sys.stdout.flush()
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0

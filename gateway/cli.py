"""The ``quartier`` command: one entry point, subcommands registered by each package.

Each package exposes ``register(subparsers)`` that only declares its arguments; the work (and the
heavy imports: FastAPI, paho, influxdb-client) happens inside the handler, so ``quartier p1 decode``
starts fast on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gateway.logs import get_logger, setup_logging

# modules that contribute subcommands, in help order
COMMAND_MODULES = (
    "gateway.commands", "demo.cli", "gateway.doctor", "p1.cli", "flukso.cli",
    "services.cli", "services.node.light", "services.node.sheet",
)

log = get_logger("quartier.cli")


class CommandError(Exception):
    """An error a user can act on: printed as one line, exit status 2, never a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quartier", description="Metering gateway for energy-sharing communities.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # that package is not part of this installation
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `quartier p1 decode | head`
        return 0
    except CommandError as exc:
        print(f"quartier: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # last resort: one clear line, traceback only with --log-level DEBUG
        if args.log_level == "DEBUG":
            raise
        print(f"quartier: internal error: {type(exc).__name__}: {exc} (rerun with --log-level DEBUG for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # re-import under the package name so gateway.cli.CommandError is the class commands raise
    from gateway.cli import main as _main

    sys.exit(_main())

"""The ``quartier`` command: one entry point, subcommands registered by each package.

Each package exposes ``register(subparsers)`` that only declares its arguments; the work (and the
heavy imports: FastAPI, paho, influxdb-client) happens inside the handler, so ``quartier p1 decode``
starts fast on a Raspberry Pi. Only the package that owns the command typed is imported
(:data:`COMMANDS`): the daemon does not carry the community server's, the doctor's or the sheet's
modules for its lifetime (about 13 MB, a fifth of its memory budget). Help and a misspelt command
import them all, to list every command.

Exit statuses (sysexits.h, as systemd units and scripts read them):

- 0 done; a bare ``quartier`` prints the help to stdout and exits 0 (asking what the command does is
  no error; ``quartier ""`` or a misspelt command still exits 2);
- 1 an internal error; 2 a usage or input error (argparse's own status, and :class:`CommandError`);
- 78 (``EX_CONFIG``) the configuration is wrong (:class:`ConfigurationError`): restarting cannot fix
  it, so every unit names it in ``RestartPreventExitStatus=`` instead of restarting every 5 s for ever;
- 130 interrupted (Ctrl-C); 143 stopped by SIGTERM in the middle of a one-shot command. The
  long-running commands (run, demo, web, light, community, community demo, flukso emulate) treat
  SIGTERM as the normal way to stop: they finish cleanly and exit 0.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from gateway.logs import get_logger, setup_logging

# modules that contribute subcommands, in help order, with the commands each registers (a test
# checks this against what their register() declares)
COMMANDS: dict[str, tuple[str, ...]] = {
    "gateway.commands": ("run", "replay", "export", "status", "config"),
    "demo.cli": ("demo",),
    "gateway.doctor": ("doctor",),
    "p1.cli": ("p1",),
    "flukso.cli": ("flukso",),
    "services.cli": ("allocate", "simulate", "web"),
    "services.community.cli": ("community",),
    "services.node.light": ("light",),
    "services.node.sheet": ("sheet",),
}
_GLOBAL_WITH_VALUE = ("--log-level", "--log-format")

log = get_logger("quartier.cli")


EX_USAGE = 2
EX_CONFIG = 78  # sysexits.h; systemd.exec(5) names it "CONFIG" too


class CommandError(Exception):
    """An error a user can act on: printed as one line, exit status 2, never a traceback."""

    exit_status = EX_USAGE


class ConfigurationError(CommandError):
    """The configuration file (or its secrets) is wrong: exit status 78, which the units do not restart on."""

    exit_status = EX_CONFIG


class Terminated(Exception):
    """SIGTERM arrived while a command without its own handler ran: unwinds it so that its ``finally``
    blocks run (ports closed, files flushed) instead of the process vanishing mid-write."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


def version() -> str:
    """The installed distribution's version (``pip install``), or the source tree's when run uninstalled."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("quartier")
    except PackageNotFoundError:  # pragma: no cover - a checkout on sys.path without pip install
        return "unknown"


def command_word(argv: list[str]) -> str | None:
    """The subcommand in ``argv``: the first word that is neither a global option nor its value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _GLOBAL_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: with only the module that owns its command, or every module (help,
    an unknown command, or ``argv`` None)."""
    word = None if argv is None else command_word(argv)
    modules = [m for m, commands in COMMANDS.items() if word in commands] or list(COMMANDS)
    parser = argparse.ArgumentParser(prog="quartier", description="Metering gateway for energy-sharing communities.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # that package is not part of this installation
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:  # a bare `quartier` (maybe with --log-level): the help, on stdout
        parser.print_help(sys.stdout)
        return 0
    setup_logging(args.log_level, args.log_format)
    # the default for every command; the long-running ones install their own (a clean stop, status 0)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Terminated:
        return 128 + signal.SIGTERM
    except BrokenPipeError:  # `quartier p1 decode | head`
        return 0
    except CommandError as exc:
        print(f"quartier: {exc}", file=sys.stderr)
        return exc.exit_status
    except Exception as exc:  # last resort: one clear line, traceback only with --log-level DEBUG
        if args.log_level == "DEBUG":
            raise
        print(f"quartier: internal error: {type(exc).__name__}: {exc} (rerun with --log-level DEBUG for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # re-import under the package name so gateway.cli.CommandError is the class commands raise
    from gateway.cli import main as _main

    sys.exit(_main())

"""Command line: ``flax-resnet1d <command>`` (also ``python -m flax_resnet1d``).

Each command lives in its own module of this package exposing ``register(subparsers)``, which
adds a sub-parser whose ``func(args) -> int`` runs it. The library never imports this package.
Bad input (``errors.UsageError`` and its subclasses), and any error of the operating
system (a full disk, a read-only or missing directory, a name too long), is reported here, at
the edge, as one line on stderr naming the path and the cause, with exit code 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from ..errors import UsageError

# Modules that register sub-commands, in --help order.
COMMAND_MODULES: tuple[str, ...] = ("convert", "verify", "summary", "train", "evaluate", "predict", "explain",
                                    "export")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors in one line, as every other failure (argparse adds the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="flax-resnet1d", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad argument (2, its one line already printed)
        return int(e.code or 0)
    # `kill` (SIGTERM) unwinds like Ctrl-C, so temporaries are removed on that exit path too
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"flax-resnet1d {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"flax-resnet1d {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"flax-resnet1d {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `flax-resnet1d summary ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python docs' recipe: no flush error at exit
        return 0
    except OSError as e:
        print(f"flax-resnet1d {args.command}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C is (every ``finally`` and cleanup runs)."""


def _terminate(signum, frame):
    raise Terminated


def describe_os_error(error: OSError) -> str:
    """'PATH: cause' (both paths of a rename), as the shell's tools say it."""
    cause = error.strerror or str(error) or type(error).__name__
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {cause}" if paths else cause


if __name__ == "__main__":
    sys.exit(main())

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
import contextlib
import importlib
import os
import sys

from .. import interrupts
from ..errors import UsageError, one_line, out_of_memory
from ..interrupts import Interrupted

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


def main(argv: list[str] | None = None, program: bool = False) -> int:
    """Run a command; with ``program`` (the installed command) a signal ends the process at once."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad argument (2, its one line already printed)
        return int(e.code or 0)
    with interrupts.handled(f"flax-resnet1d {args.command}" if program else None):
        code, message = _run(args)
        signum = interrupts.received()
        if signum is not None and code < 128:  # a signal a library swallowed, or one it turned into an error
            code, message = 128 + signum, interrupts.SIGNALS[signum]
        if message:
            print(f"flax-resnet1d {args.command}: {message}", file=sys.stderr)
        return code


def _run(args: argparse.Namespace) -> tuple[int, str]:
    """(exit code, the one line for stderr) of the command."""
    stdout, sys.stdout = sys.stdout, _NamedStream(sys.stdout, "standard output")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, so that a full stdout is reported as such
    except Interrupted as e:
        return e.exit_code, str(e)
    except KeyboardInterrupt:  # raised by code that is not ours (a handler of the caller's)
        return 130, "interrupted"
    except UsageError as e:
        return 2, f"error: {e}"
    except BrokenPipeError:  # e.g. `flax-resnet1d summary ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python docs' recipe: no flush error at exit
        return 0, ""
    except OSError as e:
        return 2, f"error: {describe_os_error(e)}"
    except Exception as e:  # memory exhausted in numpy or XLA despite the estimates checked up front
        message = out_of_memory(e)
        if message is None:
            raise
        return 2, f"error: {message}"
    finally:
        sys.stdout = stdout
    return code, ""


class _NamedStream:
    """A text stream whose OS errors name it: `> file` on a full disk reads "standard output: No
    space left on device", not a bare cause."""

    def __init__(self, stream, name: str):
        self._stream, self._name = stream, name

    def write(self, text: str) -> int:
        with self._named():
            return self._stream.write(text)

    def flush(self) -> None:
        with self._named():
            self._stream.flush()

    def __getattr__(self, attribute: str):
        return getattr(self._stream, attribute)

    @contextlib.contextmanager
    def _named(self):
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OSError(e.errno, e.strerror, self._name) from None


def entry() -> None:
    """The installed command: ``main``, with signals handled from the first instruction to the
    last (a late one cannot turn into a success)."""
    command = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else ""
    with interrupts.handled(f"flax-resnet1d {command}".rstrip()):  # until main knows the command for sure
        code = main(program=True)
    sys.exit(code)


def describe_os_error(error: OSError) -> str:
    """'PATH: cause' (both paths of a rename), as the shell's tools say it."""
    cause = error.strerror or str(error) or type(error).__name__
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    return one_line(f"{' -> '.join(paths)}: {cause}" if paths else cause)


if __name__ == "__main__":
    entry()

"""The errors a user can cause: one base class, ``UsageError``, that the command line reports as
one line and exit code 2; library callers catch it (or ``ValueError``, which most also are).
``first_line`` quotes a library's exception inside such a line, ``one_line`` renders user text
(a path with a newline) on one line, ``input_file`` refuses what is not a regular file before
anything opens it, and ``out_of_memory`` words numpy's and XLA's out-of-memory errors."""

from __future__ import annotations

import os
import stat


class UsageError(Exception):
    """A problem with the user's input (file, argument, data, setting), told in one line: control
    characters of user text quoted in it (a newline in a path) are escaped."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class CheckpointError(UsageError, ValueError):
    """A checkpoint that cannot be read, written or matched to its network."""


class DataError(UsageError, ValueError):
    """Training or evaluation data that cannot be used as given."""


class TrainingError(UsageError, ValueError):
    """A bad training setting or run directory."""


class ConfigError(UsageError, ValueError):
    """A configuration (``--config``, a checkpoint's or a run's ``config.json``) that is not valid:
    its encoding, nesting, a field's type or range."""


class DistributedError(UsageError):
    """A multi-process setup that cannot work (coordinator, process ids, differing data)."""


def one_line(text: str) -> str:
    """``text`` with every control or separator character but the space escaped as Python
    writes it (``\\n``, ``\\x1b``, ``\\u2028``): user text (a path, a file's field) keeps a message on
    one line, and a terminal shows what the name holds."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s text (its type's name if it has none), at most 300 characters:
    a library's message quoted inside one of our one-line errors."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def input_file(path: str | os.PathLike, what: str, error: type[UsageError] = UsageError) -> None:
    """Refuse ``path`` (after ``what`` in the message, e.g. ``--input``, if given) unless it is a regular file
    (a link to one is): a FIFO, device or socket would block the read or never end, so this is
    checked before anything opens it."""
    where = f"{what} {path}" if what else str(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{where}: no such file") from None
    except NotADirectoryError:
        raise error(f"{where}: a component of the path is not a directory") from None
    if stat.S_ISDIR(mode):
        raise error(f"{where}: is a directory, expected a file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise error(f"{where}: is {kind}, not a regular file; refused without reading it")


def out_of_memory(error: BaseException) -> str | None:
    """The one-line report of an out-of-memory error (numpy's MemoryError, XLA's
    RESOURCE_EXHAUSTED), or None for any other error. Checked by name: the command line's
    error handling imports neither JAX nor numpy."""
    if isinstance(error, MemoryError):
        return f"out of memory ({first_line(error)}); use smaller batches, inputs or networks"
    if type(error).__name__ in ("XlaRuntimeError", "JaxRuntimeError") and "RESOURCE_EXHAUSTED" in str(error):
        return (f"out of device memory ({first_line(error)}); use smaller batches, inputs or networks")
    return None

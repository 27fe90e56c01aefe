"""The errors a user can cause: one base class, ``UsageError``, that the command line reports as
one line and exit code 2; library callers catch it (or ``ValueError``, which most also are).
``first_line`` quotes a library's exception inside such a line."""


class UsageError(Exception):
    """A problem with the user's input (file, argument, data, setting), told in one line."""


class CheckpointError(UsageError, ValueError):
    """A checkpoint that cannot be read, written or matched to its network."""


class DataError(UsageError, ValueError):
    """Training or evaluation data that cannot be used as given."""


class TrainingError(UsageError, ValueError):
    """A bad training setting or run directory."""


class DistributedError(UsageError):
    """A multi-process setup that cannot work (coordinator, process ids, differing data)."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s text (its type's name if it has none), at most 300 characters:
    a library's message quoted inside one of our one-line errors."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]

"""The errors a user can cause: one base class, ``UsageError``, that the command line reports as
one line and exit code 2; library callers catch it (or ``ValueError``, which most also are)."""


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

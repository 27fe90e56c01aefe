"""SIGINT, SIGTERM and SIGHUP end a command from any point with one line and the shell's exit
status (130, 143, 129), its temporaries removed.

As a program (``handled(program=...)``) the process ends inside the signal handler: it runs the
registered cleanups (``at_exit``), prints the line and leaves with ``os._exit``. Unwinding an
exception instead is not safe there: raised inside a garbage-collection callback or ``__del__``
it is swallowed ("Exception ignored") and the command carries on to exit 0, and unwinding
through XLA's C++ frames while its threads run can crash the process. Called as a function
(``main`` in-process, tests), the signal is raised as ``Interrupted`` where the program is, as
Ctrl-C is, and recorded: ``check()`` raises it again where a library swallowed it. Inside
``deferred()`` (a few renames that must happen together) the signal waits for the block's end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

# the word for each handled signal; the exit status is 128 + its number, as shells report it
SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


class Interrupted(KeyboardInterrupt):
    """A handled signal, raised where the program was when it arrived."""

    def __init__(self, signum: int):
        super().__init__(SIGNALS[signum])
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_CLEANUPS: list[Callable[[], None]] = []
_state = {"program": None, "received": None, "deferring": 0}


def at_exit(cleanup: Callable[[], None]) -> None:
    """Run ``cleanup`` when a signal ends the program (and at a normal exit, via ``atexit``)."""
    import atexit

    _CLEANUPS.append(cleanup)
    atexit.register(cleanup)


def received() -> int | None:
    """The first signal received while ``handled`` was active, if any."""
    return _state["received"]


def check() -> None:
    """Raise ``Interrupted`` again if a signal arrived whose exception was swallowed."""
    if _state["received"] is not None and not _state["deferring"]:
        raise Interrupted(_state["received"])


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A signal arriving in the block takes effect at its end (steps that must not be split)."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
    if _state["received"] is not None and not _state["deferring"]:
        _end(_state["received"])


def _handle(signum: int, frame) -> None:
    if _state["received"] is None:
        _state["received"] = signum
    if not _state["deferring"]:
        _end(signum)


def _end(signum: int) -> None:
    if _state["program"] is None:
        raise Interrupted(signum)
    for cleanup in _CLEANUPS:
        with contextlib.suppress(BaseException):
            cleanup()
    for stream in (sys.stdout, sys.stderr):  # what the command printed before the signal
        with contextlib.suppress(BaseException):
            stream.flush()
    with contextlib.suppress(OSError):
        os.write(2, f"{_state['program']}: {SIGNALS[signum]}\n".encode())
    os._exit(128 + signum)


@contextlib.contextmanager
def handled(program: str | None = None) -> Iterator[None]:
    """Handle SIGINT, SIGTERM and SIGHUP for the block (main thread only), then restore the
    caller's handlers: as the ``program`` of that name (exit at once), or by raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = dict(_state)
    _state.update(program=program, received=None)
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.update(program=saved["program"], received=saved["received"])  # nothing pending outside

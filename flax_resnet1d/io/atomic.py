"""The atomic-file layer: outputs are written to a temporary beside the destination and renamed
into place, so a failure, Ctrl-C or ``kill`` leaves neither a partial output nor a temporary (a
kill -9 may leave a hidden ``.NAME.*.tmp``, never a partial NAME); an existing output is replaced
only with ``overwrite=True`` and only when it is something this tool writes (``OwnOutput``)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from .. import interrupts
from ..config import config_from_dict
from ..errors import CheckpointError, first_line
from .formats import CONTENT, output_format, sniff
from .manifest import MANIFEST_FILE, Manifest, holds_nothing

# strerror -> errno of the OS errors a write can meet, to recognise them inside library messages.
_WRITE_ERRNOS = {os.strerror(code): code for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                                                      errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ENOTDIR,
                                                      errno.EIO)}


def as_os_error(error: BaseException, path: str | os.PathLike) -> Exception:
    """A library's write failure as an OSError at the user's ``path`` when its message names an OS
    error (tensorstore, Orbax), else a CheckpointError with its first line."""
    if isinstance(error, OSError) and error.errno is not None:
        return OSError(error.errno, error.strerror, str(path))
    text = str(error)
    for strerror, code in _WRITE_ERRNOS.items():
        if strerror.lower() in text.lower():
            return OSError(code, strerror, str(path))
    return CheckpointError(f"{path}: writing failed ({first_line(error)})")


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Write and fsync ``data``: a complete file on disk, or an OSError."""
    with errors_named(path):
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def errors_named(path: str | os.PathLike, temporary: str | os.PathLike | None = None) -> Iterator[None]:
    """An OSError raised in the block names the user's ``path`` where it would name no file (a
    failed ``write()``) or our ``temporary`` (any path starting with it)."""
    try:
        yield
    except OSError as e:
        if e.filename is not None and (temporary is None or not str(e.filename).startswith(str(temporary))):
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None


# -- what --overwrite may replace ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OwnOutput:
    """What one of our writers leaves at its output path; ``--overwrite`` replaces nothing else.

    A file is recognised by its content (``sniff`` kinds); a directory by its manifest (of
    ``kind``) listing every file in it: one file the tool did not write, anywhere inside, and
    nothing is replaced. An empty directory qualifies (nothing is lost).
    """

    what: str
    contents: tuple[str, ...] = ()
    kind: str = ""  # of a directory's manifest
    makes_parents: bool = False  # creates missing parent directories

    def foreign(self, path: Path) -> str | None:
        """Why ``path`` is not such an output, or None if it is one (or empty: nothing to lose)."""
        if path.is_symlink():
            return "it is a symbolic link"
        if not self.kind:
            if not path.is_file():
                return "it is a directory" if path.is_dir() else "it is not a regular file"
            kind = "config" if "config" in self.contents and _is_config_file(path) else sniff(path)
            return None if kind in self.contents else f"it {CONTENT[kind]}"
        if not path.is_dir():
            return "it is a file, not a directory"
        own = Manifest.read(path)
        if own is None:
            return None if holds_nothing(path) else (f"it holds {listed(sorted(os.listdir(path)))} and no "
                                                       f"{MANIFEST_FILE} listing what flax-resnet1d wrote there "
                                                       "(someone else wrote it, or a version before 0.2)")
        if own.kind != self.kind:
            return f"its {MANIFEST_FILE} is of {own.kind!r}, not {self.kind!r}"
        other = own.foreign()
        return f"it holds {listed(other)}, which flax-resnet1d did not write" if other else None


def listed(names: list[str]) -> str:
    """The first three of ``names``, and how many more."""
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


OWN_OUTPUTS = {
    "torch": OwnOutput("a PyTorch checkpoint", contents=("torch", "pickle", "empty")),
    "safetensors": OwnOutput("a safetensors file", contents=("safetensors", "empty")),
    "msgpack": OwnOutput("a Flax msgpack file", contents=("msgpack", "empty")),
    "orbax": OwnOutput("an Orbax checkpoint directory", kind="orbax"),
    "config": OwnOutput("a config file", contents=("config", "empty")),  # beside a .msgpack
}


def check_output(path: str | os.PathLike, overwrite: bool, own: OwnOutput | None = None,
                 inputs: tuple[str | os.PathLike, ...] = ()) -> None:
    """Refuse an output that cannot be created, or whose existing contents ``overwrite`` must not
    replace: anything but ``own`` (default: what the format's writer writes) or anything holding
    one of ``inputs``."""
    path = Path(path)
    if path.name in ("", ".", "..") or path.resolve() in (Path.cwd(), *Path.cwd().parents):
        raise CheckpointError(f"{path}: names the working directory or one above it, not an output: give the "
                              "output's own name (e.g. DIR/model.orbax)")
    own = own or OWN_OUTPUTS[output_format(path)]
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise CheckpointError(f"{path}: {existing} is not a directory")
    if existing != path.parent and not own.makes_parents:
        raise CheckpointError(f"{path}: output directory {path.parent} does not exist")
    if not (path.exists() or path.is_symlink()):
        return
    why = own.foreign(path)
    if why:
        raise CheckpointError(f"{path}: exists and is not {own.what} written by flax-resnet1d ({why}); "
                              "--overwrite replaces nothing else: choose another name")
    if not overwrite:
        raise CheckpointError(f"{path}: already exists; pass --overwrite (overwrite=True) to replace it")
    resolved = path.resolve()
    for source in inputs:
        if resolved == Path(source).resolve() or resolved in Path(source).resolve().parents:
            raise CheckpointError(f"{path}: not replaced: it holds the input {source}")


def _is_config_file(path: Path) -> bool:
    """Whether ``path`` holds the config of any architecture of the family, as ``save_flax`` writes
    it (a config's warnings are for whoever loads it, not for this check)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config_from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, AttributeError):
        return False
    return True


def remove_own_entries(path: str | os.PathLike) -> None:
    """Delete what the manifest of directory ``path`` lists (after ``check_output``)."""
    own = Manifest.read(path)
    if own is not None:
        own.remove()


# -- atomic replacement ----------------------------------------------------------------------
_TEMPORARIES: set[Path] = set()  # holders not yet removed; the rest go at exit


interrupts.at_exit(lambda: [shutil.rmtree(holder, ignore_errors=True) for holder in list(_TEMPORARIES)])


_HOLDER_NAME_BYTES = 100  # of DST's name in the holder's: a 255-byte DST name must still fit


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A private hidden directory beside ``path``, removed on exit whatever happens (including
    KeyboardInterrupt); an OSError inside names ``path``, never the temporary. Writers (Orbax
    among them) create what they write inside it, and one rmtree removes whatever they left."""
    prefix = "." + path.name.encode()[:_HOLDER_NAME_BYTES].decode(errors="ignore") + "."
    with errors_named(path, path.parent / prefix):
        holder = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    _TEMPORARIES.add(holder)
    try:
        with errors_named(path, holder):
            yield holder
    except BaseException:
        _remove_temporary(holder, settle=True)
        raise
    _remove_temporary(holder)


@contextlib.contextmanager
def atomic_output(path: Path, overwrite: bool, own: OwnOutput | None = None) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on success rename it to ``path``.

    On any failure the temporary is removed and ``path`` is untouched. With ``overwrite`` an
    existing ``path`` (checked by ``check_output``) is moved aside first and deleted only once
    the new one is in place.
    """
    check_output(path, overwrite, own)
    with _temporary_beside(path) as holder:
        yield holder / "new"
        _replace(holder / "new", path, overwrite, holder / "old")


@contextlib.contextmanager
def replaced_when_written(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file beside ``path`` that replaces it once the body returns: a kill or an
    error never leaves a half-written ``path``. For our own result files (metrics, plots, benchmark
    tables), which are replaced without the ownership checks of ``--overwrite``. ``suffix`` keeps
    the extension for writers that infer the format from it."""
    path = Path(path)
    with _temporary_beside(path) as holder:
        new = holder / f"new{suffix}"
        yield new
        interrupts.check()
        os.replace(new, path)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) through a temporary: never half-written."""
    with replaced_when_written(path) as tmp:
        write_file(tmp, text.encode())


def save_figure(fig, path: str | os.PathLike, dpi: int) -> None:
    """Save a matplotlib figure through a temporary, then close it (closed on failure too)."""
    import matplotlib.pyplot as plt

    try:
        with replaced_when_written(path, os.path.splitext(path)[1]) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)


# After a failed write, how long the holder must stay gone before it counts as removed, and how
# long to wait for that at most: tensorstore's threads finish an Orbax write's other arrays after
# the first one failed, creating their directories again (seen in a full test run).
_SETTLE_S, _SETTLE_LIMIT_S = 0.2, 3.0


def _remove_temporary(holder: Path, settle: bool = False) -> None:
    """rmtree that a second Ctrl-C does not cut short. With ``settle`` (a failed write), removed
    again while a writer's thread recreates it, for up to ``_SETTLE_LIMIT_S``; what a thread adds
    later still goes at exit."""
    deadline = time.monotonic() + (_SETTLE_LIMIT_S if settle else 0.0)
    for _ in range(3):
        try:
            shutil.rmtree(holder, ignore_errors=True)
            while time.monotonic() < deadline and _recreated(holder):
                shutil.rmtree(holder, ignore_errors=True)
        except KeyboardInterrupt:
            continue
        if not holder.exists():
            _TEMPORARIES.discard(holder)
            return


def _recreated(holder: Path) -> bool:
    """Whether a writer's thread has created ``holder`` again ``_SETTLE_S`` from now."""
    time.sleep(_SETTLE_S)
    return holder.exists()


def _replace(new: Path, path: Path, overwrite: bool, old: Path) -> None:
    interrupts.check()  # nothing is committed after a signal, even one a library swallowed
    if not (overwrite and path.exists()):
        if path.exists():
            raise CheckpointError(f"{path}: appeared while writing; not overwritten")
        os.rename(new, path)
        return
    if not (path.is_dir() or new.is_dir()):
        os.replace(new, path)
        return
    # rename cannot replace a non-empty directory: move the old one aside (into the temporary
    # holder, removed with it), and back if the new one cannot take its place
    with interrupts.deferred():
        os.rename(path, old)
        try:
            os.rename(new, path)
        except BaseException:
            os.rename(old, path)
            raise


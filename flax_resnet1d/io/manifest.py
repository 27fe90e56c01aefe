"""What flax-resnet1d wrote inside a directory, so that it deletes nothing else.

A directory the tool writes (a run directory, an Orbax checkpoint directory) holds a manifest,
``.flax-resnet1d.json``: every file the tool wrote there, by relative path, and the directories
it is writing right now (``pending``: a kill mid-write leaves them, and what lies under them is
still the tool's). The tool replaces or deletes only listed files, and only after checking
that the whole tree holds nothing else (``foreign``): a user's file anywhere inside, or a
symbolic link, is reported, never walked into or deleted. ``exclusive`` gives one writer per
directory (an ``flock`` the kernel releases when the process dies, even on kill -9)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import glob
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import CheckpointError

MANIFEST_FILE = ".flax-resnet1d.json"
LOCK_FILE = ".flax-resnet1d.lock"
_TOOL = "flax-resnet1d"
# atomic.py's temporaries: ".<name>.<mkdtemp's 8 random characters>.tmp" beside <name>
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def temporary_of(name: str) -> str | None:
    """The file a temporary named ``name`` was replacing (``.config.json.ab12cd34.tmp`` ->
    ``config.json``), or None if ``name`` is not one of atomic.py's temporaries."""
    match = _TEMPORARY.match(name)
    return match["name"] if match else None


@dataclasses.dataclass
class Manifest:
    """The files (relative POSIX paths; a directory the tool created ends in "/") the tool wrote
    under ``root``, and its writes in progress."""

    root: Path
    kind: str  # "run" or "orbax"
    files: set[str] = dataclasses.field(default_factory=set)
    pending: set[str] = dataclasses.field(default_factory=set)  # directories being written

    @classmethod
    def read(cls, root: str | os.PathLike) -> Manifest | None:
        """The manifest of ``root``, or None if it has none; CheckpointError if it is not ours."""
        root = Path(root)
        path = root / MANIFEST_FILE
        if not (path.exists() or path.is_symlink()):
            return None
        try:
            if not path.is_file() or path.is_symlink():
                raise ValueError("not a regular file")
            record = json.loads(path.read_bytes().decode())
            if record.get("tool") != _TOOL or not isinstance(record.get("kind"), str):
                raise ValueError(f"not written by {_TOOL}")
            files, pending = (record.get(k, []) for k in ("files", "pending"))
            if not all(isinstance(p, str) and _inside(p) for p in (*files, *pending)):
                raise ValueError("a path outside the directory")
        except (OSError, ValueError, AttributeError, TypeError, RecursionError) as e:
            raise CheckpointError(f"{path}: not a manifest flax-resnet1d wrote ({e})") from None
        return cls(root, record["kind"], set(files), set(pending))

    def save(self) -> None:
        from .atomic import write_text  # atomic imports this module

        record = {"tool": _TOOL, "kind": self.kind, "files": sorted(self.files), "pending": sorted(self.pending)}
        write_text(self.root / MANIFEST_FILE, json.dumps(record, indent=1) + "\n")

    # -- what is ours ---------------------------------------------------------------------
    def owns(self, rel: str) -> bool:
        """Whether the file or directory ``rel`` is the tool's: listed, the manifest or lock
        itself, under a pending write (Orbax's ``<dir>.orbax-checkpoint-tmp-*`` included), or
        a temporary of atomic.py beside a listed file."""
        head, _, name = rel.rpartition("/")
        original = temporary_of(name)
        return (rel in self.files or rel + "/" in self.files or rel in (MANIFEST_FILE, LOCK_FILE)
                or any(rel == p or rel.startswith((p + "/", p + ".")) for p in self.pending)
                or (original is not None and (f"{head}/{original}" if head else original)
                    in (*self.files, MANIFEST_FILE)))

    def foreign(self) -> list[str]:
        """Everything under ``root`` the tool cannot prove it wrote: unlisted files, symbolic
        links, directories holding none of the tool's files (nothing is followed or entered
        below what is foreign)."""
        parents = {parent for rel in self.files for parent in _parents(rel)}
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            base = Path(dirpath).relative_to(self.root).as_posix()
            for name in sorted(dirnames):
                rel = name if base == "." else f"{base}/{name}"
                if os.path.islink(os.path.join(dirpath, name)):
                    found.append(f"{rel} (a symbolic link)")
                elif not (rel in parents or self.owns(rel)):
                    found.append(f"{rel}/")
            dirnames[:] = [n for n in dirnames if (n if base == "." else f"{base}/{n}") in parents
                           and not os.path.islink(os.path.join(dirpath, n))]
            for name in sorted(filenames):
                rel = name if base == "." else f"{base}/{name}"
                if os.path.islink(os.path.join(dirpath, name)):
                    found.append(f"{rel} (a symbolic link)")
                elif not self.owns(rel):
                    found.append(rel)
        return found

    # -- changes --------------------------------------------------------------------------
    def begin(self, rel_dir: str) -> None:
        """Record that the tool is about to write directory ``rel_dir``."""
        self.pending.add(rel_dir)
        self.save()

    def commit(self, rel_dir: str) -> None:
        """Record every file under ``rel_dir`` (written by the tool, pending until now)."""
        self.files.update(_files_under(self.root, rel_dir))
        self.pending.discard(rel_dir)
        self.save()

    def _remove_temporaries(self, rels: set[str]) -> None:
        """Delete atomic.py's temporaries beside ``rels``, which a kill -9 leaves."""
        for rel in rels:
            path = self.root / rel.rstrip("/")
            for temporary in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
                if temporary_of(temporary.name) == path.name and not temporary.is_symlink():
                    _rmtree(temporary)

    def settle(self) -> None:
        """Finish the record of what a killed process left: a directory it was writing that was
        renamed into place is complete and listed; its temporaries are deleted."""
        self._remove_temporaries({MANIFEST_FILE} | {rel for rel in self.files if "/" not in rel.rstrip("/")})
        for pending in sorted(self.pending):
            for path in self.root.glob(f"{glob.escape(pending)}.*"):
                if not path.is_symlink():
                    _rmtree(path)
            if (self.root / pending).is_dir():
                self.files.update(_files_under(self.root, pending))
        self.pending.clear()
        self.save()

    def add(self, *rels: str) -> None:
        """Record single files the tool writes (before writing them: a kill leaves them ours)."""
        if not set(rels) <= self.files:
            self.files.update(rels)
            self.save()

    def move(self, rel_from: str, rel_to: str) -> None:
        """Rename directory ``rel_from`` (the tool's) to ``rel_to`` and record its files there (pending
        meanwhile: a kill between the rename and the record leaves ``rel_to`` the tool's)."""
        self.pending.add(rel_to)
        self.save()
        os.makedirs(self.root / rel_to.rpartition("/")[0], exist_ok=True)
        os.rename(self.root / rel_from, self.root / rel_to)
        self.files = {_rebased(rel, rel_from, rel_to) for rel in self.files}
        self.pending.discard(rel_to)  # its files are the ones listed, not whatever else moved with them
        self.save()

    def remove(self, rel_dir: str = "") -> None:
        """Delete the tool's files under ``rel_dir`` (all with ""), its pending writes there and
        the directories left empty; a user's file keeps its directory."""
        prefix = rel_dir + "/" if rel_dir else ""
        for pending in sorted(p for p in self.pending if p == rel_dir or p.startswith(prefix)):
            for path in [self.root / pending, *self.root.glob(f"{glob.escape(pending)}.*")]:  # and Orbax's temporaries
                if path.exists() and not path.is_symlink():
                    _rmtree(path)
        gone = {rel for rel in self.files if rel.startswith(prefix)}
        for rel in sorted(rel for rel in gone if not rel.endswith("/")):
            with contextlib.suppress(FileNotFoundError):
                path = self.root / rel
                if path.is_dir() and not path.is_symlink():
                    raise CheckpointError(f"{path}: a directory where flax-resnet1d wrote a file; not deleted")
                path.unlink()
        self._remove_temporaries(gone)
        for directory in sorted({p for rel in gone for p in _parents(rel)}, key=len, reverse=True):
            with contextlib.suppress(OSError):  # not empty: it holds something not ours
                os.rmdir(self.root / directory)
        self.files -= gone
        self.pending = {p for p in self.pending if not (p == rel_dir or p.startswith(prefix))} if rel_dir else set()
        self.save()

    def steps(self, rel_dir: str) -> list[int]:
        """The integer-named directories directly under ``rel_dir`` that hold the tool's files or
        that it is writing."""
        prefix = rel_dir + "/"
        return sorted({int(name) for rel in (*self.files, *self.pending) if rel.startswith(prefix)
                       for name in [rel[len(prefix):].partition("/")[0]] if name.isdigit()})


def holds_nothing(path: str | os.PathLike) -> bool:
    """Whether directory ``path`` is empty but for a lock file (a start killed before it wrote anything)."""
    return set(os.listdir(path)) <= {LOCK_FILE}


def write_for_tree(root: str | os.PathLike, kind: str) -> None:
    """A manifest listing every file now under ``root`` (a directory the tool just wrote whole)."""
    Manifest(Path(root), kind, set(_files_under(Path(root), ""))).save()


@contextlib.contextmanager
def exclusive(root: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold ``root``'s write lock for the block, or CheckpointError naming the process holding it.
    Re-entrant within a process (the CLI takes it before ``fit`` does)."""
    root = Path(root)
    key = os.path.realpath(root)
    if key in _HELD:
        yield
        return
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise CheckpointError(f"{root} is in use by {holder}; one writer at a time: wait for it to finish "
                                  "or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({_TOOL} {command})\n".encode(), 0)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # releases the lock


_HELD: set[str] = set()  # real paths whose lock this process holds


def _inside(rel: str) -> bool:
    return rel != "" and not rel.startswith("/") and ".." not in rel.split("/")


def _parents(rel: str) -> Iterator[str]:
    parts = rel.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _rebased(rel: str, old: str, new: str) -> str:
    return new + rel[len(old):] if rel == old or rel.startswith(old + "/") else rel


def _files_under(root: Path, rel_dir: str) -> Iterator[str]:
    top = root / rel_dir if rel_dir else root
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [n for n in dirnames if not os.path.islink(os.path.join(dirpath, n))]
        for name in filenames:
            if name not in (MANIFEST_FILE, LOCK_FILE):
                yield (Path(dirpath) / name).relative_to(root).as_posix()


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path) if path.is_dir() else path.unlink()

"""Checkpoint formats: chosen by the file name when written, recognised by name or content when
read, and the Orbax settings both directions use.

- PyTorch ``.pt``/``.pth``: an MDNC state dict (``torch.save``).
- ``.safetensors``: an MDNC state dict (``safetensors.numpy``).
- Flax ``.msgpack``: ``flax.serialization`` bytes of the variables, with the config beside it in
  ``<name>.config.json``.
- Flax Orbax checkpoint: a directory (any other name) holding the variables, with ``config.json``
  inside.

Only the standard library is imported here; orbax is imported when a format needs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import CheckpointError, input_file

TORCH_SUFFIXES = (".pt", ".pth")


SAFETENSORS_SUFFIX = ".safetensors"


MSGPACK_SUFFIX = ".msgpack"


ORBAX_SUFFIX = ".orbax"  # optional; a name without a suffix is an Orbax directory too


CONFIG_NAME = "config.json"  # inside an Orbax checkpoint directory


FORMAT_NAMES = {"torch": "a PyTorch checkpoint", "safetensors": "a safetensors file",
                "msgpack": "a Flax msgpack file", "orbax": "an Orbax checkpoint directory"}


TORCH_FORMATS = ("torch", "safetensors")  # MDNC state dicts


FLAX_FORMATS = ("orbax", "msgpack")  # Flax variables + config


# Top-level entries of an Orbax checkpoint directory (Orbax's own, plus our config.json).
ORBAX_ENTRIES = ("_CHECKPOINT_METADATA", "_METADATA", "_sharding", "commit_success.txt", "manifest.ocdbt", "d",
                 "ocdbt.process_*", "array_metadatas", "descriptor", CONFIG_NAME)


# What a file's first bytes say it is (see sniff), as the predicate of an error message.
CONTENT = {
    "empty": "is empty (0 bytes)",
    "torch": "is a PyTorch checkpoint",
    "pickle": "is a Python pickle",
    "npz": "is a NumPy .npz archive",
    "zip": "is a zip archive without PyTorch's data.pkl",
    "badzip": "is truncated or corrupt (unreadable zip archive)",
    "npy": "is a NumPy .npy array",
    "safetensors": "is a safetensors file",
    "msgpack": "looks like a msgpack (Flax) file",
    "hdf5": "is an HDF5 file",
    "gzip": "is gzip-compressed",
    "png": "is a PNG image",
    "text": "is a text file",
    "unknown": "holds unrecognised bytes",
}


# Content kinds each reader accepts (a legacy, non-zip torch file is a pickle).
_READABLE = {"torch": ("torch", "pickle"), "safetensors": ("safetensors",), "msgpack": ("msgpack",)}


# -- formats -------------------------------------------------------------------------------
def output_format(path: str | os.PathLike) -> str:
    """Format written for ``path``: 'torch', 'safetensors', 'msgpack' or 'orbax'."""
    suffix = Path(path).suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return "torch"
    if suffix == SAFETENSORS_SUFFIX:
        return "safetensors"
    if suffix == MSGPACK_SUFFIX:
        return "msgpack"
    if suffix in ("", ORBAX_SUFFIX) or Path(path).is_dir():
        return "orbax"
    raise CheckpointError(f"{path}: unknown output format {suffix!r}: use .pt/.pth or .safetensors (PyTorch), "
                          f".msgpack (Flax) or a directory name without a suffix (Orbax)")


def input_format(path: str | os.PathLike) -> str:
    """Format of an existing checkpoint: by suffix, by content for other suffixes."""
    path = Path(path)
    if path.is_dir():
        return "orbax"
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES or suffix in (SAFETENSORS_SUFFIX, MSGPACK_SUFFIX):
        return output_format(path)
    kind = sniff(path)
    for fmt, kinds in _READABLE.items():
        if kind in kinds:
            return fmt
    raise CheckpointError(f"{path}: {CONTENT[kind]}, not a checkpoint of a known kind "
                          f"(.pt/.pth, .safetensors, .msgpack or an Orbax directory)")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    input_file(path, "", CheckpointError)  # a FIFO, device or socket: refused before sniff opens it
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied")


def sniff(path: Path) -> str:
    """What the file's first bytes say it is: a key of ``CONTENT``."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "empty"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except Exception:  # BadZipFile, NotImplementedError (garbled method field), OSError, ...
            return "badzip"
        if any(name.endswith("data.pkl") for name in names):
            return "torch"
        return "npz" if names and all(name.endswith(".npy") for name in names) else "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:  # PROTO opcode
        return "pickle"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"  # 8-byte header length, then the JSON header
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF):  # msgpack map
        return "msgpack"
    return "text" if _is_text(head) else "unknown"


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut by the 512-byte window
            return False
        text = head[:e.start].decode("utf-8")
    return all(c.isprintable() or c.isspace() for c in text)


def expect_content(path: Path, fmt: str) -> None:
    kind = sniff(path)
    if kind not in _READABLE[fmt]:
        raise CheckpointError(f"{path}: {CONTENT[kind]}, not {FORMAT_NAMES[fmt]}")


def msgpack_config_path(path: str | os.PathLike) -> Path:
    """``model.msgpack`` -> ``model.config.json``."""
    return Path(path).with_suffix(".config.json")


def orbax_checkpointer():
    """Synchronous Orbax checkpointer without compression: faster than the default (async, zstd)
    both ways, as float weights barely compress and every caller waits for the write; the
    on-disk format stays Orbax's default (OCDBT, zarr2), which Orbax itself restores."""
    import orbax.checkpoint as ocp

    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False))


@contextlib.contextmanager
def quiet_orbax_failures() -> Iterator[None]:
    """Keep a failed Orbax read or write to the one error it raises.

    While the block runs, Orbax's absl error logs (a whole traceback per failing worker thread)
    are held back. Orbax handles all arrays concurrently and closes its event loop at the first
    failure, so tensorstore's later callbacks print "Event loop is closed" and "Task exception
    was never retrieved" on stderr, some after the call returned: hooks installed once drop
    exactly those two.
    """
    previous = sys.unraisablehook
    if not getattr(previous, "drops_orbax_noise", False):
        def unraisablehook(unraisable):
            if not (isinstance(unraisable.exc_value, RuntimeError)
                    and str(unraisable.exc_value) == "Event loop is closed"):
                previous(unraisable)

        unraisablehook.drops_orbax_noise = True
        sys.unraisablehook = unraisablehook
        logging.getLogger("asyncio").addFilter(
            lambda record: not (record.getMessage() == "Task exception was never retrieved" and record.exc_info
                                and "tensorstore" in str(record.exc_info[1]).lower()))
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.CRITICAL)  # setLevel, not .level =: it clears the loggers' cached levels
    try:
        yield
    finally:
        absl.setLevel(level)


"""Memory checked before it is allocated: what an array file would take to load (read from its
header, never from the data), what a train step, an evaluation or ``verify`` would take (from the
network's plan), and what the machine has. A size beyond it is refused with the estimate in one
line, instead of dying in numpy or XLA part-way through.

The estimates are lower bounds (each layer's output kept once for the backward pass, the weights,
gradients and optimizer slots), so a refusal is never a run that would have fitted.
This module imports neither JAX nor torch.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator

import numpy as np

from .errors import UsageError, first_line

OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1}  # arrays per parameter (sgd: its momentum trace)
COMPUTE_BYTES = {"float32": 4, "bfloat16": 2}


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def host_available() -> tuple[int, str] | None:
    """(bytes, where they were read) this process can still allocate: the kernel's MemAvailable,
    or less if the control group's limit leaves less; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append((int(line.split()[1]) * 1024, "MemAvailable"))
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            limit = f.read().strip()
            if limit != "max":
                found.append((int(limit) - int(g.read().strip()), "the cgroup's memory.max"))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_fits(need: int, what: str, available: tuple[int, str] | None, error: type[UsageError],
               hint: str = "") -> None:
    """``error`` (one line: ``what``, the estimate, what is available, ``hint``) if ``need`` bytes
    exceed ``available`` (bytes, where read); nothing when the memory is unknown."""
    if available is not None and need > available[0]:
        raise error(f"{what} needs about {format_bytes(need)} of memory, more than the {format_bytes(available[0])} "
                    f"available ({available[1]}){'; ' + hint if hint else ''}")


# -- array files -------------------------------------------------------------------------------
def _header(f, source: str, error: type[UsageError]) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here")
        shape, _, dtype = read(f)
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as e:  # numpy's header parser raises all these
        raise error(f"{source}: not a readable .npy array ({first_line(e)})") from None
    return shape, dtype


def array_headers(path: str | os.PathLike, error: type[UsageError],
                  npy: bool = True) -> Iterator[tuple[str, tuple[int, ...], np.dtype]]:
    """(name, shape, dtype) of each array of a ``.npy`` (name ''; refused unless ``npy``) or ``.npz``
    file, read from the headers alone; ``error`` if an array declares more bytes than the file
    holds for it (a lying or truncated header, which numpy would allocate before reading)."""
    kind = ".npy/.npz" if npy else ".npz"
    with open(path, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            if not npy:
                raise error(f"{path}: not a readable .npz file (a .npy array; save the arrays with np.savez)")
            f.seek(0)
            shape, dtype = _header(f, str(path), error)
            _check_stored(path, "", shape, dtype, os.fstat(f.fileno()).st_size - f.tell(), error)
            yield "", shape, dtype
            return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise error(f"{path}: not a readable {kind} file ({first_line(e)})") from None
    with archive:
        for entry in archive.infolist():
            if not entry.filename.endswith(".npy"):
                continue  # np.load refuses or ignores it; not an array
            name = entry.filename.removesuffix(".npy")
            try:
                with archive.open(entry) as member:
                    shape, dtype = _header(member, f"{path}: {name}", error)
                    stored = entry.file_size - member.tell()
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as e:
                raise error(f"{path}: entry {name} is unreadable ({first_line(e)})") from None
            _check_stored(path, name, shape, dtype, stored, error)
            yield name, shape, dtype


def _check_stored(path, name: str, shape: tuple[int, ...], dtype: np.dtype, stored: int,
                  error: type[UsageError]) -> None:
    declared = math.prod(shape) * dtype.itemsize
    if dtype.hasobject:
        return  # np.load(allow_pickle=False) refuses it with its own message
    if declared > stored:
        where = f"{path}: {name}" if name else str(path)
        raise error(f"{where}: its header declares shape {shape} {dtype} ({format_bytes(declared)}) but the file holds "
                    f"{format_bytes(max(stored, 0))} for it: truncated or corrupt; refused before allocating")


def check_array_file(path: str | os.PathLike, names: tuple[str, ...] | None, what: str, error: type[UsageError],
                     copies: float = 1.0, npy: bool = True) -> None:
    """Before ``np.load``: the arrays ``names`` of ``path`` (None: every array; a ``.npy`` only if
    ``npy``) are what their headers say they are, and loading them, plus ``copies`` float64
    copies of each (the conversions that follow), fits in memory; else ``error`` in one line
    naming ``what``."""
    need = 0
    for name, shape, dtype in array_headers(path, error, npy):
        if names is None or name in names:
            need += math.prod(shape) * (dtype.itemsize + int(copies * 8))
    check_fits(need, f"{what} {path}: loading it", host_available(), error)


# -- networks ----------------------------------------------------------------------------------
def train_step_bytes(model, batch: int, length: int, optimizer: str, dtype: str = "float32") -> int:
    """A lower bound of a train step's memory on one device: weights, gradients, updated weights
    and optimizer slots (float32), and every layer's output for ``batch`` examples of ``length``
    steps kept for the backward pass (the compute dtype)."""
    activations, _ = model.activation_elements(length)
    state = model.parameter_count() * 4 * (3 + OPTIMIZER_SLOTS.get(optimizer, 2))
    inputs = batch * length * model.in_channels * 4
    return state + inputs + batch * activations * COMPUTE_BYTES.get(dtype, 4)


def eval_step_bytes(model, batch: int, length: int) -> int:
    """A lower bound of an evaluation step's memory: the weights and, for ``batch`` examples,
    the input and the largest layer output with the output it becomes (float32)."""
    _, largest = model.activation_elements(length)
    return model.parameter_count() * 4 + batch * (length * model.in_channels + 2 * largest) * 4


def verify_bytes(model, shape: tuple[int, ...]) -> int:
    """A lower bound of ``verify``'s memory for a float64 input of MDNC ``shape`` (B, C, L) or
    (B, in_length): the PyTorch reference's forward pass kept for its backward pass, the input and
    its gradient, and the weights with their gradients in both implementations (float64)."""
    activations, _ = model.activation_elements(shape[-1])
    return 8 * (4 * model.parameter_count() + shape[0] * activations + 2 * math.prod(shape))

"""The series to predict on, as a user gives them: ``.npz`` (array ``x``), ``.npy``, ``.ts`` (the
UCR/UEA archive's format, via ``aeon``) or ``.csv`` (one univariate series a row), checked before
any array is allocated (an ``.npy`` or ``.npz`` header declaring more than the available memory is
refused), validated (numeric, finite) and returned channels-last ``(N, L, C)`` float64, or a list
of ``(L_i, C)`` series when a ``.ts`` file holds series of several lengths. A decoder with a
vector input takes ``(N, in_length)``: a 2-D array is then returned as given.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..errors import DataError
from ..training.data import LAYOUTS

INPUT_SUFFIXES = (".npz", ".npy", ".ts", ".csv")


def available_memory() -> int:
    """Bytes the system can still give (MemAvailable; total memory where /proc is absent)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(path: str, what: str, nbytes: int) -> None:
    """DataError unless ``nbytes`` fit in the available memory (with a float64 working copy)."""
    available = available_memory()
    if nbytes > available:
        raise DataError(f"{path}: {what} needs {nbytes / 2**30:.2f} GiB, more than the {available / 2**30:.2f} GiB of "
                        "memory available; split the file")


def _check_npy_header(path: str, f, what: str) -> None:
    """Read an .npy header from the open file ``f`` and refuse it if it cannot fit in memory."""
    try:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: {what} holds Python objects (dtype {dtype}); only numeric arrays are read")
    count = int(np.prod(shape, dtype=object))
    check_memory(path, f"{what} of shape {tuple(shape)} {dtype}", count * max(dtype.itemsize, 8))


def read_inputs(path: str, layout: str = "NCL", vector: int | None = None) -> np.ndarray | list[np.ndarray]:
    """The series in ``path`` as ``(N, L, C)`` float64 (a list of ``(L_i, C)`` for a ``.ts`` of
    several lengths); with ``vector`` (a decoder's ``in_length``) vectors ``(N, in_length)``."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in INPUT_SUFFIXES:
        raise DataError(f"{path}: unknown input format {suffix or '(no suffix)'!r}; expected one of "
                        f"{', '.join(INPUT_SUFFIXES)}")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if suffix == ".ts":
        series = _read_ts(path)
        lengths = {len(s) for s in series}
        return np.stack(series) if len(lengths) == 1 else series
    x = {".npz": _read_npz, ".npy": _read_npy, ".csv": _read_csv}[suffix](path)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{path}: x must be numeric, got dtype {x.dtype}")
    if len(x) == 0:
        raise DataError(f"{path}: no series")
    x = x.astype(np.float64)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        raise DataError(f"{path}: x contains {len(bad)} NaN/Inf values (first in series {bad[0][0]})")
    if vector:
        if x.shape[1:] != (vector,):
            raise DataError(f"{path}: the network takes vectors (N, {vector}), got an array of shape {x.shape}")
        return x
    if x.ndim == 2:
        return x[:, :, None]
    if x.ndim == 3:
        return x if layout == "NLC" else np.swapaxes(x, 1, 2)
    raise DataError(f"{path}: x must have shape (N, C, L), (N, L, C) or (N, L), got {x.shape}")


def _read_npy(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        _check_npy_header(path, f, "the array")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None


def _read_npz(path: str) -> np.ndarray:
    try:
        with zipfile.ZipFile(path) as archive:
            if "x.npy" not in archive.namelist():
                names = [n.removesuffix(".npy") for n in archive.namelist()]
                raise DataError(f"{path}: needs an array 'x' (has {names})")
            with archive.open("x.npy") as f:
                _check_npy_header(path, f, "x")
        with np.load(path, allow_pickle=False) as f:
            return f["x"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({e})") from None


def _read_csv(path: str) -> np.ndarray:
    check_memory(path, "the text", 8 * os.path.getsize(path))  # each value at least a digit and a comma
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{path}: not a CSV file of numbers, one series a row ({e})") from None


def _read_ts(path: str) -> list[np.ndarray]:
    try:
        import aeon.datasets
    except ImportError:
        raise DataError(f"{path}: .ts files are read by the aeon package, which is not installed: "
                        "pip install 'flax-resnet1d[data]'") from None
    check_memory(path, "the text", 8 * os.path.getsize(path))
    try:
        x = aeon.datasets.load_from_ts_file(path, return_type="np-list")
    except Exception as e:  # aeon raises IOError, ValueError, TsFileParseException on a malformed file
        raise DataError(f"{path}: not a readable .ts file ({str(e).strip().splitlines()[0] if str(e) else e})") from None
    x = x[0] if isinstance(x, tuple) else x
    series = [np.asarray(s, np.float64).T for s in x]
    if not series:
        raise DataError(f"{path}: no series")
    for i, s in enumerate(series):
        if not np.all(np.isfinite(s)):
            raise DataError(f"{path}: series {i} contains NaN or Inf (missing values are not supported)")
    return series

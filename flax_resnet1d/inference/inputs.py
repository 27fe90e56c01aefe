"""The series to predict on, as a user gives them: ``.npz`` (array ``x``), ``.npy``, ``.ts`` (the
UCR/UEA archive's format, via ``aeon``), ``.tsv`` (the UCR 2018 archive's: a label, ignored here, then
the series, a line each) or ``.csv`` (one univariate series a row), checked before
any array is allocated (an ``.npy`` or ``.npz`` header declaring more than the available memory is
refused), validated (numeric, finite) and returned channels-last ``(N, L, C)`` float64, or a list
of ``(L_i, C)`` series when a ``.ts`` file holds series of several lengths. A decoder with a
vector input takes ``(N, in_length)``: a 2-D array is then returned as given.
"""

from __future__ import annotations

import os

import numpy as np

from .. import memory
from ..errors import DataError, first_line
from ..training.data import LAYOUTS, check_text_memory, read_tsv

INPUT_SUFFIXES = (".npz", ".npy", ".ts", ".tsv", ".csv")


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
    x = {".npz": _read_npz, ".npy": _read_npy, ".csv": _read_csv, ".tsv": _read_tsv}[suffix](path)
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
    memory.check_array_file(path, None, "--input", DataError)  # headers first: nothing allocated for a lying one
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None


def _read_npz(path: str) -> np.ndarray:
    names = [name for name, _, _ in memory.array_headers(path, DataError, npy=False)]
    if "x" not in names:
        raise DataError(f"{path}: needs an array 'x' (has {names})")
    memory.check_array_file(path, ("x",), "--input", DataError, npy=False)
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["x"]
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None


def _read_csv(path: str) -> np.ndarray:
    check_text_memory(path, f"--input {path}")
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{path}: not a CSV file of numbers, one series a row ({e})") from None


def _read_tsv(path: str) -> np.ndarray:
    return read_tsv(path, "--input")[0][..., 0]  # (N, L), one channel whatever the layout; the labels are not input


def _read_ts(path: str) -> list[np.ndarray]:
    try:
        import aeon.datasets
    except ImportError:
        raise DataError(f"{path}: .ts files are read by the aeon package, which is not installed: "
                        "pip install 'flax-resnet1d[data]'") from None
    check_text_memory(path, f"--input {path}")
    try:
        x = aeon.datasets.load_from_ts_file(path, return_type="np-list")
    except Exception as e:  # aeon raises IOError, ValueError, TsFileParseException on a malformed file
        raise DataError(f"{path}: not a readable .ts file ({first_line(e)})") from None
    x = x[0] if isinstance(x, tuple) else x
    series = [np.asarray(s, np.float64).T for s in x]
    if not series:
        raise DataError(f"{path}: no series")
    for i, s in enumerate(series):
        if not np.all(np.isfinite(s)):
            raise DataError(f"{path}: series {i} contains NaN or Inf (missing values are not supported)")
    return series

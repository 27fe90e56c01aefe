"""Prediction files, format by name: ``.npz`` (arrays) or ``.csv`` (one series a row), written
atomically; an existing file is replaced only with ``overwrite`` and only if it is such a file.

- classification: ``labels`` and ``probabilities`` ``(N, K)`` (with ``classes``, the class names
  or indices in column order); the CSV's columns: ``label``, then one probability per class.
- regression: ``values`` ``(N, K)``; CSV columns ``value_0..``.
- signal: ``signals`` in the input's layout; a CSV holds one-channel signals only, a row each.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import atomic

OUTPUTS = {".npz": atomic.OwnOutput("a .npz file", contents=("npz", "empty")),
           ".csv": atomic.OwnOutput("a CSV file", contents=("text", "empty"))}
NAMES = {"classification": "probabilities", "regression": "values", "signal": "signals"}


def output_suffix(path: str | os.PathLike, suffixes: tuple[str, ...] = tuple(OUTPUTS)) -> str:
    """The format of ``path`` by its suffix, or DataError naming the known ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in suffixes:
        raise DataError(f"{path}: unknown output format {suffix or '(no suffix)'!r}; expected one of "
                        f"{', '.join(suffixes)}")
    return suffix


def check_prediction_output(path: str | os.PathLike, overwrite: bool, task: str, out_channels: int) -> None:
    """Refuse, before any work, an output that could not be written (see ``atomic.check_output``)."""
    suffix = output_suffix(path)
    if suffix == ".csv" and task == "signal" and out_channels != 1:
        raise DataError(f"{path}: signals of {out_channels} channels do not fit one CSV row each; write a .npz")
    atomic.check_output(path, overwrite, OUTPUTS[suffix])


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], overwrite: bool = False) -> None:
    """``arrays`` as an ``.npz`` file, through a temporary (never half-written)."""
    with atomic.atomic_output(Path(path), overwrite, OUTPUTS[".npz"]) as tmp:
        with atomic.errors_named(path, tmp), open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def write_predictions(path: str | os.PathLike, task: str, outputs: np.ndarray, labels: np.ndarray | None = None,
                      classes: tuple[str, ...] | None = None, overwrite: bool = False) -> None:
    """The predictions of ``task`` (``outputs`` of ``Predictor.outputs``, and a classifier's
    labels and class names) as ``path``'s format."""
    suffix = output_suffix(path)
    columns = list(classes) if classes is not None else [str(i) for i in range(outputs.shape[1])] \
        if task == "classification" else None
    if suffix == ".npz":
        arrays = {NAMES[task]: outputs}
        if task == "classification":
            arrays.update(labels=labels, classes=np.asarray(columns))
        write_npz(path, arrays, overwrite)
        return
    rows = outputs.reshape(len(outputs), -1)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if task == "classification":
        writer.writerow(["label", *columns])
        writer.writerows([str(label), *map(repr_float, row)] for label, row in zip(labels, rows))
    else:
        writer.writerow([f"{'value' if task == 'regression' else 't'}_{i}" for i in range(rows.shape[1])])
        writer.writerows(list(map(repr_float, row)) for row in rows)
    with atomic.atomic_output(Path(path), overwrite, OUTPUTS[".csv"]) as tmp:
        atomic.write_file(tmp, text.getvalue().encode())


def repr_float(value: float) -> str:
    """The shortest text that reads back as the same float32."""
    return str(np.float32(value))

"""Classification data sets: UCR/UEA archive sets shipped inside ``aeon``, and the user's arrays.

Every loader returns a ``Dataset`` with inputs channels-last ``(N, L, C)`` float32 (what the
Flax model takes) and integer labels ``0..K-1``.

Normalization (``NORMALIZATIONS``; statistics are population ones, ddof=0):
- ``series``, the UCR convention: each channel of each series gets mean 0 and standard
  deviation 1 over its own time steps (a constant channel becomes zeros). The default for the
  univariate sets and for the user's arrays.
- ``channel``: each channel standardized with the mean and standard deviation of that channel
  over every time step of every *training* series, applied to train and test alike. It keeps
  the differences in level and amplitude between series, which the multivariate sets carry
  their classes in (BasicMotions: standing vs running; JapaneseVowels: speakers); their default.
- ``none``.
Variable-length sets (JapaneseVowels, PickupGestureWiimoteZ) are normalized over their observed
steps (interpolated steps would weigh the short series more in the statistics), then every series
is resampled (linear interpolation, first and last steps kept) to the longest series of the data
set (train and test together), as Ismail Fawaz et al. do for their multivariate sets.
``Dataset.pad_to`` zero-pads at the end up to a network's minimum input length
(ItalyPowerDemand has 24 steps; a 5-stage kernel-3 network needs 33).

The archive files are read from the installed ``aeon`` package (``aeon/datasets/data``) with
``aeon.datasets.load_from_ts_file``, a plain file reader: nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence

import numpy as np

from .. import memory
from ..errors import DataError, input_file

# UCR/UEA classification sets whose TRAIN/TEST files ship inside the aeon package.
ARCHIVE_DATASETS = ("GunPoint", "ArrowHead", "ItalyPowerDemand", "OSULeaf", "ACSF1", "PickupGestureWiimoteZ",
                    "BasicMotions", "JapaneseVowels")
MULTIVARIATE_DATASETS = ("BasicMotions", "JapaneseVowels")
LAYOUTS = ("NCL", "NLC")  # of a user's x array; NCL is MDNC's (N, C, L)
NORMALIZATIONS = ("series", "channel", "none")


@dataclasses.dataclass(frozen=True)
class Normalization:
    """How inputs are standardized; ``channel`` carries the training set's statistics."""

    how: str = "series"
    mean: np.ndarray | None = None  # (C,), for "channel"
    std: np.ndarray | None = None

    @classmethod
    def fit(cls, how: str, train: Sequence[np.ndarray]) -> Normalization:
        """From the training series, each ``(L_i, C)``."""
        if how not in NORMALIZATIONS:
            raise DataError(f"unknown normalization {how!r}; expected one of {', '.join(NORMALIZATIONS)}")
        if how != "channel":
            return cls(how)
        steps = np.concatenate([np.asarray(s, np.float64) for s in train])  # (all steps, C)
        exponent = magnitude_exponent(steps, axis=0)  # statistics of exactly rescaled steps: see znormalize
        scaled = np.ldexp(steps, -exponent)
        std = scaled.std(axis=0)
        return cls(how, np.ldexp(scaled.mean(axis=0), exponent), np.ldexp(np.where(std > 0, std, 1.0), exponent))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalize a series ``(L, C)`` or a batch ``(N, L, C)`` (float64)."""
        x = np.asarray(x, np.float64)
        if self.how == "series":
            return znormalize(x, axis=-2)
        return (x - self.mean) / self.std if self.how == "channel" else x


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification data set with the archive's (or the user's) train/test split."""

    name: str
    x_train: np.ndarray  # (N, L, C) float32
    y_train: np.ndarray  # (N,) int32 in 0..num_classes-1
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]  # original label of class index i
    normalization: Normalization = Normalization()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def length(self) -> int:
        return self.x_train.shape[1]

    @property
    def in_planes(self) -> int:
        return self.x_train.shape[2]

    def pad_to(self, length: int) -> Dataset:
        """Zero-pad every series at the end to at least ``length`` steps."""
        return dataclasses.replace(self, x_train=pad_end(self.x_train, length), x_test=pad_end(self.x_test, length))


def pad_end(x: np.ndarray, length: int) -> np.ndarray:
    """(N, L, C) zero-padded at the end of the time axis to at least ``length`` steps."""
    return x if x.shape[1] >= length else np.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0)))


def shifted(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(B, L, C) series each moved ``shift[b]`` steps later (earlier if negative), the vacated
    steps holding the series' first (last) value."""
    length = x.shape[1]
    source = np.clip(np.arange(length)[None, :] - shift[:, None], 0, length - 1)
    return x[np.arange(len(shift))[:, None], source]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where a run's data comes from; saved in the run's config so ``eval`` can reload it.

    ``source`` is an archive name or a ``.npz`` path. For ``.npz`` data, ``test`` is another
    ``.npz``; without it a fixed ``test_fraction`` of the examples (chosen by a permutation
    seeded with 0, the same for every training seed) is held out.
    """

    source: str
    layout: str = "NCL"
    test: str | None = None
    test_fraction: float = 0.2
    normalize: str = "series"
    digest: str | None = None  # sha256 of the loaded arrays, recorded by the run (see ``with_digest``)
    # Recorded with the digest, so a run predicts without its data: the class names, the series
    # length the network trained on, and the ``channel`` statistics (absent in older runs).
    classes: tuple[str, ...] | None = None
    length: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        for name, optional in (("source", False), ("test", True), ("digest", True)):
            value = getattr(self, name)
            if not (isinstance(value, str) and value) and not (optional and value is None):
                raise DataError(f"data {name} must be a non-empty string{' or null' if optional else ''}, got "
                                f"{type(value).__name__} {value!r}")
        for name, choices in (("layout", LAYOUTS), ("normalize", NORMALIZATIONS)):
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in choices:
                raise DataError(f"unknown data {name} {getattr(self, name)!r}; expected one of {', '.join(choices)}")
        fraction = self.test_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise DataError(f"test fraction must be a number, got {type(fraction).__name__} {fraction!r}")
        if not 0 < fraction < 1:
            raise DataError(f"test fraction must be between 0 and 1, got {fraction}")
        if self.digest is not None and not (len(self.digest) == 64 and all(c in "0123456789abcdef" for c in self.digest)):
            raise DataError(f"data digest must be 64 hexadecimal digits (a sha256), got {self.digest!r}")
        self._check_recorded()

    def _check_recorded(self) -> None:
        """What prediction reads of the data: class names, the length, the channel statistics."""
        if self.classes is not None and not (isinstance(self.classes, tuple) and self.classes
                                             and all(isinstance(c, str) for c in self.classes)):
            raise DataError(f"data classes must be a non-empty list of strings or null, got {self.classes!r}")
        if self.length is not None and (isinstance(self.length, bool) or not isinstance(self.length, int)
                                        or self.length < 1):
            raise DataError(f"data length must be a positive integer or null, got {self.length!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, tuple) and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)):
                raise DataError(f"data {name} must be a list of finite numbers or null, got {value!r}")
        if (self.mean is None) != (self.std is None) or (self.mean is not None and len(self.mean) != len(self.std)):
            raise DataError(f"data mean and std must both be lists of one number per channel, got {self.mean!r} and "
                            f"{self.std!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        """The spec a run's config.json holds; DataError naming the field if it is not one."""
        if not isinstance(d, dict):
            raise DataError(f"data must be an object of {', '.join(f.name for f in dataclasses.fields(cls))}, got "
                            f"{type(d).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(d) - fields), [] if "source" in d else ["source"]
        if unknown or missing:
            raise DataError(f"data: {'unknown fields ' + str(unknown) if unknown else 'missing field source'}")
        d = {name: tuple(value) if name in ("classes", "mean", "std") and isinstance(value, list) else value
             for name, value in d.items()}
        return cls(**d)

    @property
    def normalization(self) -> Normalization | None:
        """The recorded normalization (None for a run from before statistics were recorded)."""
        if self.normalize != "channel":
            return Normalization(self.normalize)
        if self.mean is None:
            return None
        return Normalization("channel", np.array(self.mean, np.float64), np.array(self.std, np.float64))


def input_files(spec: DataSpec) -> tuple[str, ...]:
    """The files a run reads its data from (none for an archive set)."""
    return tuple(path for path in (spec.source, spec.test) if path and path.endswith(".npz"))


def load(spec: DataSpec) -> Dataset:
    """The data set ``spec`` names; with a recorded digest, refused if the data changed since."""
    if spec.source.endswith(".npz"):
        dataset = load_npz(spec.source, spec.layout, spec.test, spec.test_fraction, spec.normalize)
    else:
        dataset = load_archive(spec.source, spec.normalize)
    with_digest(spec, dataset)
    return dataset


def digest(dataset: Dataset) -> str:
    """sha256 of the arrays a run trains and tests on (after normalization), shapes included."""
    sha = hashlib.sha256()
    for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        sha.update(repr((a.dtype.str, a.shape)).encode())
        sha.update(np.ascontiguousarray(a).tobytes())
    return sha.hexdigest()


def with_digest(spec: DataSpec, dataset: Dataset) -> DataSpec:
    """``spec`` with the digest of ``dataset`` recorded, and what prediction needs of it (classes,
    length, statistics); DataError if it recorded another digest."""
    actual = digest(dataset)
    if spec.digest is not None and spec.digest != actual:
        files = " and ".join(input_files(spec)) or f"the archive set {spec.source}"
        raise DataError(f"{files}: the data changed since the run recorded it (sha256 {spec.digest[:12]}..., now "
                        f"{actual[:12]}...); restore the original data, or start a new run with --out")
    statistics = {name: None if value is None else tuple(map(float, value))
                  for name, value in (("mean", dataset.normalization.mean), ("std", dataset.normalization.std))}
    return dataclasses.replace(spec, digest=actual, classes=tuple(dataset.classes), length=dataset.length, **statistics)


def default_normalization(source: str) -> str:
    """``channel`` for the multivariate archive sets, ``series`` otherwise (see the module doc)."""
    return "channel" if source in MULTIVARIATE_DATASETS else "series"


# -- UCR/UEA archive --------------------------------------------------------------------------

def archive_name(name: str) -> str:
    """The canonical archive name (case-insensitive match) or DataError listing the choices."""
    by_fold = {n.casefold(): n for n in ARCHIVE_DATASETS}
    if name.casefold() not in by_fold:
        raise DataError(f"unknown data set {name!r}; available: {', '.join(ARCHIVE_DATASETS)} "
                        "(or a .npz file with arrays x and y)")
    return by_fold[name.casefold()]


def load_archive(name: str, normalize: str | None = None) -> Dataset:
    """Load an archive set with its own train/test split, normalized (default: per the data set),
    labels in the order of the file's ``@classLabel`` header."""
    name = archive_name(name)
    try:
        import aeon.datasets
    except ImportError:
        raise DataError("the UCR/UEA data sets are read from the aeon package, which is not installed: "
                        "pip install 'flax-resnet1d[data]' (or pip install aeon)") from None
    folder = os.path.join(os.path.dirname(aeon.datasets.__file__), "data", name)
    splits = {split: read_ts(name, os.path.join(folder, f"{name}_{split}.ts")) for split in ("TRAIN", "TEST")}
    classes = splits["TRAIN"][2]
    if splits["TEST"][2] != classes:
        raise DataError(f"{name}: TRAIN and TEST files declare different classes {classes} vs {splits['TEST'][2]}")
    index = {c: i for i, c in enumerate(classes)}
    length = max(len(s) for series, _, _ in splits.values() for s in series)
    normalization = Normalization.fit(normalize or default_normalization(name), splits["TRAIN"][0])
    arrays = []
    for series, y, _ in splits.values():
        unknown = sorted(set(y) - set(index))
        if unknown:
            raise DataError(f"{name}: labels {unknown} are not among the declared classes {classes}")
        arrays += [np.stack([resampled(normalization(s), length) for s in series]).astype(np.float32),
                   np.array([index[label] for label in y], np.int32)]
    absent = sorted(set(classes) - set(splits["TRAIN"][1]))
    if absent:
        raise DataError(f"{name}: classes {absent} are absent from the training split; the network could not learn them")
    return Dataset(name, *arrays, classes=classes, normalization=normalization)


def read_ts(name: str, path: str) -> tuple[list[np.ndarray], np.ndarray, tuple[str, ...]]:
    """One split of archive set ``name``: its series, each (L_i, C) float64, their labels and the
    classes the file declares."""
    import aeon.datasets

    if not os.path.isfile(path):
        raise DataError(f"{name}: {path} is missing from the installed aeon package")
    x, y, meta = aeon.datasets.load_from_ts_file(path, return_meta_data=True)
    series = [np.asarray(s, np.float64).T for s in x]  # (L_i, C)
    for i, s in enumerate(series):
        if not np.all(np.isfinite(s)):
            raise DataError(f"{path}: series {i} contains NaN or Inf (missing values are not supported)")
    return series, np.asarray(y).astype(str), tuple(str(c) for c in meta["class_values"])


def resampled(series: np.ndarray, length: int) -> np.ndarray:
    """An (L_i, C) series linearly interpolated to (length, C), its first and last steps kept."""
    if len(series) == length:
        return series
    steps = np.linspace(0, len(series) - 1, length)
    return np.stack([np.interp(steps, np.arange(len(series)), channel) for channel in series.T], axis=1)


def znormalize(x: np.ndarray, axis: int) -> np.ndarray:
    """Per-series, per-channel z-normalization along the time ``axis`` (population std)."""
    x = np.asarray(x, np.float64)
    x = np.ldexp(x, -magnitude_exponent(x, axis, keepdims=True))
    mean = x.mean(axis=axis, keepdims=True)
    std = x.std(axis=axis, keepdims=True)
    return (x - mean) / np.where(std > 0, std, 1.0)  # a constant channel becomes zeros


def magnitude_exponent(x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    """The power of two near the largest magnitude along ``axis``. Dividing by it is exact (every
    rounding scales with it), so statistics are unchanged bit for bit, but the squares of finite
    values up to 1.8e308 no longer overflow to a standard deviation of inf (which would
    normalize them all to zeros)."""
    return np.frexp(np.max(np.abs(x), axis=axis, keepdims=keepdims))[1]


# -- user arrays ------------------------------------------------------------------------------

def load_npz(path: str, layout: str = "NCL", test_path: str | None = None, test_fraction: float = 0.2,
             normalize: str = "series") -> Dataset:
    """Load ``x`` and integer ``y`` from ``path`` (and ``test_path``), validated and normalized.

    ``x`` is ``(N, C, L)`` for ``layout='NCL'`` (MDNC's layout, the default), ``(N, L, C)`` for
    ``'NLC'``, or ``(N, L)`` for one channel; the two 3-D layouts cannot be told apart from
    the shape, hence the explicit layout. Labels must be integers ``0..K-1`` with K the number
    of classes seen in training; test labels must lie in the same range.
    """
    x_train, y_train = read_arrays(path, layout, "training")
    if test_path is not None:
        x_test, y_test = read_arrays(test_path, layout, "test")
    else:
        if not 0 < test_fraction < 1:
            raise DataError(f"test fraction must be between 0 and 1, got {test_fraction}")
        order = np.random.default_rng(0).permutation(len(y_train))
        n_test = int(round(test_fraction * len(y_train)))
        if not 0 < n_test < len(y_train):
            raise DataError(f"{path}: {len(y_train)} examples are too few to hold out a test fraction of "
                            f"{test_fraction}; pass a separate test file")
        x_train, y_train, x_test, y_test = (x_train[order[n_test:]], y_train[order[n_test:]],
                                            x_train[order[:n_test]], y_train[order[:n_test]])
    if x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(f"test inputs have shape (N, L, C) = {x_test.shape} but training inputs {x_train.shape}")
    num_classes = check_classes(path, y_train)
    check_labels(y_test, num_classes, f"{test_path or path}: test label")
    normalization = Normalization.fit(normalize, x_train)
    return Dataset(os.path.basename(path), float32_inputs(path, normalization, x_train), y_train,
                   float32_inputs(test_path or path, normalization, x_test), y_test,
                   classes=tuple(str(i) for i in range(num_classes)), normalization=normalization)


def check_classes(path: str, y_train: np.ndarray) -> int:
    """The number of classes K: every label 0..K-1 occurs in training, and K >= 2. Labels are
    integers in int32's range (``read_arrays``); nothing is sized by the largest one."""
    present = np.unique(y_train)
    if len(present) < 2:
        raise DataError(f"{path}: the training labels hold one class ({present[0]}): there is nothing to tell apart")
    num_classes = int(present[-1]) + 1
    if len(present) != num_classes:
        missing = _first_missing(present, 5)
        more = num_classes - len(present) - len(missing)
        shown = ", ".join(map(str, missing)) + (f" and {more} more" if more else "")
        raise DataError(f"{path}: the training labels skip {shown} of 0..{num_classes - 1}: each would be a class "
                        "the network outputs but never sees; relabel to 0..K-1 (e.g. np.unique(y, return_inverse="
                        "True)[1])")
    return num_classes


def _first_missing(present: np.ndarray, count: int) -> list[int]:
    """The first ``count`` integers from 0 up that the sorted, distinct ``present`` lacks."""
    missing, expected = [], 0
    for value in present.tolist():
        missing += range(expected, min(value, expected + count - len(missing)))
        if len(missing) == count:
            break
        expected = value + 1
    return missing


def float32_inputs(path: str, normalization: Normalization, x: np.ndarray) -> np.ndarray:
    """Normalized float32 inputs; refused if float32 cannot hold them (huge values with ``none``)."""
    with np.errstate(over="ignore"):  # reported below
        out = normalization(x).astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{path}: x has values up to {np.max(np.abs(x)):.3g}, beyond float32's range with "
                        f"--normalize {normalization.how}; rescale them or normalize with series/channel")
    return out


def check_labels(y: np.ndarray, num_classes: int, what: str) -> None:
    """``what`` (the file and split, e.g. 'test.npz: test label') of a label beyond 0..num_classes-1."""
    if y.max() >= num_classes:
        raise DataError(f"{what} {int(y.max())} is out of range: the classes are 0..{num_classes - 1} (a class absent "
                        "from the training split cannot be learned)")


def read_arrays(path: str, layout: str = "NCL", split: str = "training") -> tuple[np.ndarray, np.ndarray]:
    """One validated ``.npz``: x as (N, L, C) float64, as stored (not normalized), y as (N,) int32;
    ``split`` names it in errors. Its array headers are checked before any array is read (a
    FIFO, a lying header or a size beyond memory is refused unread)."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    input_file(path, "", DataError)
    # raw x and y, then x as float64, normalized in float64 and as float32: 2.5 float64 copies
    memory.check_array_file(path, ("x", "y"), f"the {split} data", DataError, copies=2.5, npy=False)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise DataError(f"{path}: needs arrays 'x' and 'y', missing {missing} (has {f.files})")
            x, y = f["x"], f["y"]
    except (OSError, ValueError) as e:  # not a zip, truncated, or object arrays (pickles are refused)
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{path}: x must be numeric, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[:, :, None]
    elif x.ndim == 3:
        x = x if layout == "NLC" else np.swapaxes(x, 1, 2)
    else:
        raise DataError(f"{path}: x must have shape (N, C, L), (N, L, C) or (N, L), got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: y must have shape (N,) matching x's {len(x)} examples, got {y.shape}")
    if len(y) == 0:
        raise DataError(f"{path}: no examples")
    if 0 in x.shape[1:]:
        raise DataError(f"{path}: x holds series of length {x.shape[1]} with {x.shape[2]} channels (layout {layout}); "
                        "both must be at least 1")
    x = x.astype(np.float64)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        raise DataError(f"{path}: x contains {len(bad)} NaN/Inf values (first at example {bad[0][0]})")
    return x, _integer_labels(path, y, split)


LABEL_LIMIT = np.iinfo(np.int32).max  # labels are int32 on the device


def _integer_labels(path: str, y: np.ndarray, split: str) -> np.ndarray:
    """y as int32, checked in its own dtype first: whole numbers in 0..LABEL_LIMIT (so the cast
    cannot wrap: an int64 2**32 or a uint32 0xFFFFFFFF is refused, not read as 0 or -1)."""
    if np.issubdtype(y.dtype, np.floating):  # whole-number floats are accepted as labels
        fractional = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if len(fractional):
            raise DataError(f"{path}: {split} labels must be integers; y[{fractional[0]}] = {y[fractional[0]]}")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {split} labels must be integers, got dtype {y.dtype}")
    if y.min() < 0:
        raise DataError(f"{path}: {split} labels must be 0..K-1; y[{int(np.argmin(y))}] = {y.min()} is negative")
    if y.max() > LABEL_LIMIT:
        i = int(np.argmax(y))
        raise DataError(f"{path}: {split} label y[{i}] = {y[i]!s} ({y.dtype}) is beyond {LABEL_LIMIT} (int32): labels "
                        "must be 0..K-1 with K classes")
    return y.astype(np.int32)

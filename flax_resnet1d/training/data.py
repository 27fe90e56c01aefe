"""Data sets: UCR/UEA archive sets shipped inside ``aeon``, and the user's arrays, for the three
tasks (``TASKS``) their targets imply:

- ``classify``: integer labels ``y (N,)`` in ``0..K-1``;
- ``regress``: float targets ``y (N,)`` or ``(N, K)``, kept as ``(N, K)``;
- ``signal``: a target series ``y (N, C', L')`` in ``x``'s layout, kept channels-last
  ``(N, L', C')``; no ``y`` at all: the (normalized) input itself, an auto-encoder's target.
A user's data is a ``.npz`` of arrays ``x`` and ``y``, or a classification set in the UCR 2018
archive's ``.tsv`` files (a label, then the series, per tab-separated line; ``load_tsv``).

Every loader returns a ``Dataset`` with inputs channels-last ``(N, L, C)`` float32 (what the
Flax model takes; a ``DecoderNet1d``'s vector inputs ``(N, F)``) and the targets of its task.
Regression and signal targets are standardized for the loss with the training targets' mean
and standard deviation per output (``TargetScale``; a target column or channel), unless
``--normalize none``; the metrics undo it, so they are in the targets' own units.

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
import warnings
from collections.abc import Sequence

import numpy as np

from .. import memory
from ..errors import DataError, first_line, input_file

# UCR/UEA classification sets whose TRAIN/TEST files ship inside the aeon package.
CLASSIFICATION_DATASETS = ("GunPoint", "ArrowHead", "ItalyPowerDemand", "OSULeaf", "ACSF1", "PickupGestureWiimoteZ",
                           "BasicMotions", "JapaneseVowels")
# Monash/UEA regression sets (``@targetlabel true``) whose TRAIN/TEST files ship inside aeon too.
REGRESSION_DATASETS = ("Covid3Month", "CardanoSentiment")
ARCHIVE_DATASETS = CLASSIFICATION_DATASETS + REGRESSION_DATASETS
MULTIVARIATE_DATASETS = ("BasicMotions", "JapaneseVowels", "CardanoSentiment")
TASKS = ("classify", "regress", "signal")
LAYOUTS = ("NCL", "NLC")  # of a user's x array; NCL is MDNC's (N, C, L)
USER_FILES = (".npz", ".tsv")  # a user's arrays, or a UCR 2018 archive split
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
class TargetScale:
    """How regression and signal targets are standardized for the loss: ``(y - mean) / std`` per
    output (the last axis: a target column or a signal channel), with the training targets'
    statistics (ddof=0; a constant output keeps std 1); the identity when ``mean`` is None."""

    mean: np.ndarray | None = None  # (K,) float64
    std: np.ndarray | None = None

    @classmethod
    def fit(cls, y_train: np.ndarray, standardize: bool) -> TargetScale:
        if not standardize:
            return cls()
        flat = np.asarray(y_train, np.float64).reshape(-1, y_train.shape[-1])
        std = flat.std(axis=0)
        return cls(flat.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """Targets in units -> standardized (float64)."""
        y = np.asarray(y, np.float64)
        return y if self.mean is None else (y - self.mean) / self.std

    def units(self, z: np.ndarray) -> np.ndarray:
        """Standardized outputs -> the targets' units (float64)."""
        z = np.asarray(z, np.float64)
        return z if self.mean is None else z * self.std + self.mean


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A data set with the archive's (or the user's) train/test split; ``y`` as its task's loss
    takes it (standardized with ``target_scale`` for regress and signal)."""

    name: str
    x_train: np.ndarray  # (N, L, C) float32, or (N, F) vectors for a DecoderNet1d
    y_train: np.ndarray  # classify: (N,) int32 in 0..num_classes-1; regress: (N, K); signal: (N, L', C') float32
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...] = ()  # classify: original label of class index i
    normalization: Normalization = Normalization()
    task: str = "classify"
    target_scale: TargetScale = TargetScale()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def outputs(self) -> int:
        """What the network's last layer emits per step: classes, target columns or channels."""
        return self.num_classes if self.task == "classify" else self.y_train.shape[-1]

    @property
    def is_vector(self) -> bool:
        return self.x_train.ndim == 2

    @property
    def resamplable(self) -> bool:
        """Whether its inputs may be resampled (``capped``): series whose target keeps no length."""
        return not self.is_vector and self.task != "signal"

    @property
    def length(self) -> int:
        return self.x_train.shape[1]

    @property
    def in_planes(self) -> int:
        return self.x_train.shape[1] if self.is_vector else self.x_train.shape[2]

    def pad_to(self, length: int) -> Dataset:
        """Zero-pad every series at the end to at least ``length`` steps (a classifier's or
        regressor's inputs only: a signal target must keep the input's length)."""
        if self.task == "signal" or self.is_vector:
            return self
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


def stretched(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """(B, L, C) series each resampled about its middle step so that its features last ``factor[b]``
    times as long (linear interpolation; past either end, the series' first or last value)."""
    length = x.shape[1]
    middle = (length - 1) / 2
    source = np.clip(middle + (np.arange(length)[None, :] - middle) / factor[:, None], 0, length - 1)
    left = np.clip(np.floor(source), 0, max(length - 2, 0)).astype(np.int64)
    weight = (source - left)[..., None].astype(x.dtype)
    rows = np.arange(len(factor))[:, None]
    return (1 - weight) * x[rows, left] + weight * x[rows, np.minimum(left + 1, length - 1)]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where a run's data comes from; saved in the run's config so ``eval`` can reload it.

    ``source`` is an archive name, a ``.npz`` path or a UCR ``.tsv`` path. For a file, ``test`` is
    another of its kind; without it a fixed ``test_fraction`` of the examples (chosen by a
    permutation seeded with 0, the same for every training seed) is held out.
    """

    source: str
    layout: str = "NCL"
    test: str | None = None
    test_fraction: float = 0.2
    normalize: str = "series"
    digest: str | None = None  # sha256 of the loaded arrays, recorded by the run (see ``with_digest``)
    task: str | None = None  # None: the task the targets imply (``infer_task``), recorded by ``with_digest``
    vector: bool = False  # x holds vectors (N, F), a DecoderNet1d's inputs
    max_length: int | None = None  # longer series are resampled to this many steps (``capped``); None: none
    # Recorded with the digest, so a run predicts without its data: the class names, the series
    # length the network trained on, and the ``channel`` statistics (absent in older runs).
    classes: tuple[str, ...] | None = None
    length: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # a regressor's or signal network's target standardization (its outputs -> the targets' units)
    target_mean: tuple[float, ...] | None = None
    target_std: tuple[float, ...] | None = None

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
        if self.task is not None and self.task not in TASKS:
            raise DataError(f"unknown data task {self.task!r}; expected one of {', '.join(TASKS)}")
        if not isinstance(self.vector, bool):
            raise DataError(f"data vector must be true or false, got {type(self.vector).__name__} {self.vector!r}")
        if self.max_length is not None and (isinstance(self.max_length, bool) or not isinstance(self.max_length, int)
                                            or self.max_length < 2):
            raise DataError(f"max length must be an integer of at least 2 or null, got {self.max_length!r}")
        self._check_recorded()

    def _check_recorded(self) -> None:
        """What prediction reads of the data: class names, the length, the channel statistics."""
        if self.classes is not None and not (isinstance(self.classes, tuple) and self.classes
                                             and all(isinstance(c, str) for c in self.classes)):
            raise DataError(f"data classes must be a non-empty list of strings or null, got {self.classes!r}")
        if self.length is not None and (isinstance(self.length, bool) or not isinstance(self.length, int)
                                        or self.length < 1):
            raise DataError(f"data length must be a positive integer or null, got {self.length!r}")
        for mean, std in (("mean", "std"), ("target_mean", "target_std")):
            for name in (mean, std):
                value = getattr(self, name)
                if value is not None and not (isinstance(value, tuple) and all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)):
                    raise DataError(f"data {name} must be a list of finite numbers or null, got {value!r}")
            a, b = getattr(self, mean), getattr(self, std)
            if (a is None) != (b is None) or (a is not None and len(a) != len(b)):
                raise DataError(f"data {mean} and {std} must both be lists of one number per channel, got {a!r} and "
                                f"{b!r}")

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
        recorded = ("classes", "mean", "std", "target_mean", "target_std")
        d = {name: tuple(value) if name in recorded and isinstance(value, list) else value for name, value in d.items()}
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
    return tuple(path for path in (spec.source, spec.test) if path and path.endswith(USER_FILES))


def load(spec: DataSpec) -> Dataset:
    """The data set ``spec`` names; with a recorded digest, refused if the data changed since."""
    if spec.source.endswith(".npz"):
        dataset = load_npz(spec.source, spec.layout, spec.test, spec.test_fraction, spec.normalize, spec.task,
                           spec.vector)
    elif spec.source.endswith(".tsv"):
        dataset = load_tsv(spec.source, spec.test, spec.test_fraction, spec.normalize, spec.task)
    else:
        dataset = load_archive(spec.source, spec.normalize, spec.task)
    dataset = capped(dataset, spec.max_length)
    with_digest(spec, dataset)
    return dataset


def capped(dataset: Dataset, max_length: int | None) -> Dataset:
    """``dataset`` with its series resampled to ``max_length`` steps if longer (linear interpolation)
    and normalized again per series under ``series``: what prediction does with the raw series (it
    resamples, then normalizes; resampling commutes with the affine ``channel`` and per-series
    maps). A signal task's series and vector inputs stay as they are: the target keeps its length."""
    if max_length is None or not dataset.resamplable or dataset.length <= max_length:
        return dataset
    return dataclasses.replace(dataset, x_train=capped_inputs(dataset.x_train, max_length, dataset.normalization),
                               x_test=capped_inputs(dataset.x_test, max_length, dataset.normalization))


def capped_inputs(x: np.ndarray, max_length: int, normalization: Normalization) -> np.ndarray:
    """Normalized ``(N, L, C)`` inputs resampled to ``max_length`` steps if longer (see ``capped``)."""
    if x.shape[1] <= max_length:
        return x
    x = np.stack([resampled(np.asarray(s, np.float64), max_length) for s in x])
    return (znormalize(x, axis=1) if normalization.how == "series" else x).astype(np.float32)


def digest(dataset: Dataset) -> str:
    """sha256 of the arrays a run trains and tests on (after normalization), shapes included."""
    sha = hashlib.sha256()
    for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        sha.update(repr((a.dtype.str, a.shape)).encode())
        sha.update(np.ascontiguousarray(a).tobytes())
    return sha.hexdigest()


def with_digest(spec: DataSpec, dataset: Dataset) -> DataSpec:
    """``spec`` with the digest and task of ``dataset`` recorded, and what prediction needs of it
    (classes, length, statistics); DataError if it recorded another digest."""
    actual = digest(dataset)
    if spec.digest is not None and spec.digest != actual:
        files = " and ".join(input_files(spec)) or f"the archive set {spec.source}"
        raise DataError(f"{files}: the data changed since the run recorded it (sha256 {spec.digest[:12]}..., now "
                        f"{actual[:12]}...); restore the original data, or start a new run with --out")
    statistics = {name: None if value is None else tuple(map(float, value))
                  for name, value in (("mean", dataset.normalization.mean), ("std", dataset.normalization.std),
                                      ("target_mean", dataset.target_scale.mean),
                                      ("target_std", dataset.target_scale.std))}
    return dataclasses.replace(spec, digest=actual, task=dataset.task, classes=tuple(dataset.classes) or None,
                               length=dataset.length, **statistics)


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


def load_archive(name: str, normalize: str | None = None, task: str | None = None) -> Dataset:
    """Load an archive set with its own train/test split, normalized (default: per the data set):
    a classification set's labels in the order of the file's ``@classLabel`` header, a regression
    set's (``@targetlabel``) float targets standardized as the module doc says."""
    name = archive_name(name)
    try:
        import aeon.datasets
    except ImportError:
        raise DataError("the UCR/UEA data sets are read from the aeon package, which is not installed: "
                        "pip install 'flax-resnet1d[data]' (or pip install aeon)") from None
    folder = os.path.join(os.path.dirname(aeon.datasets.__file__), "data", name)
    splits = {split: read_ts(name, os.path.join(folder, f"{name}_{split}.ts")) for split in ("TRAIN", "TEST")}
    own_task = "regress" if name in REGRESSION_DATASETS else "classify"
    if task not in (None, own_task):
        raise DataError(f"{name} is a {'regression' if own_task == 'regress' else 'classification'} set: its "
                        f"targets make the task {own_task}, not {task}")
    length = max(len(s) for series, _, _ in splits.values() for s in series)
    how = normalize or default_normalization(name)
    normalization = Normalization.fit(how, splits["TRAIN"][0])
    x_train, x_test = (np.stack([resampled(normalization(s), length) for s in series]).astype(np.float32)
                       for series, _, _ in splits.values())
    if own_task == "regress":
        y_train, y_test = (float_targets(f"{name} {split}", y).reshape(-1, 1) for split, (_, y, _) in splits.items())
        scale = TargetScale.fit(y_train, how != "none")
        return Dataset(name, x_train, float32_targets(name, scale, y_train), x_test,
                       float32_targets(name, scale, y_test), normalization=normalization, task="regress",
                       target_scale=scale)
    classes = splits["TRAIN"][2]
    if splits["TEST"][2] != classes:
        raise DataError(f"{name}: TRAIN and TEST files declare different classes {classes} vs {splits['TEST'][2]}")
    index = {c: i for i, c in enumerate(classes)}
    labels = []
    for series, y, _ in splits.values():
        unknown = sorted(set(y) - set(index))
        if unknown:
            raise DataError(f"{name}: labels {unknown} are not among the declared classes {classes}")
        labels.append(np.array([index[label] for label in y], np.int32))
    absent = sorted(set(classes) - set(splits["TRAIN"][1]))
    if absent:
        raise DataError(f"{name}: classes {absent} are absent from the training split; the network could not learn them")
    return Dataset(name, x_train, labels[0], x_test, labels[1], classes=classes, normalization=normalization)


def read_ts(name: str, path: str) -> tuple[list[np.ndarray], np.ndarray, tuple[str, ...]]:
    """One split of a ``.ts`` set ``name``: its series, each (L_i, C) float64, their labels (str)
    and the classes the file declares, or for a file with ``@targetlabel true`` its float targets
    and no classes."""
    import aeon.datasets

    if not os.path.isfile(path):
        raise DataError(f"{name}: {path} is missing from the installed aeon package")
    try:
        x, y, meta = aeon.datasets.load_from_ts_file(path, return_meta_data=True)
    except (OSError, ValueError, IOError) as e:  # aeon's words for a malformed file
        raise DataError(f"{path}: not a readable .ts file ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                        ) from None
    series = [np.asarray(s, np.float64).T for s in x]  # (L_i, C)
    for i, s in enumerate(series):
        if not np.all(np.isfinite(s)):
            raise DataError(f"{path}: series {i} contains NaN or Inf (missing values are not supported)")
    if meta.get("targetlabel"):
        return series, np.asarray(y, np.float64), ()
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
             normalize: str = "series", task: str | None = None, vector: bool = False) -> Dataset:
    """Load ``x`` and ``y`` from ``path`` (and ``test_path``), validated and normalized, for
    ``task`` (None: the one ``y`` implies, ``infer_task``).

    ``x`` is ``(N, C, L)`` for ``layout='NCL'`` (MDNC's layout, the default), ``(N, L, C)`` for
    ``'NLC'``, or ``(N, L)`` for one channel; the two 3-D layouts cannot be told apart from
    the shape, hence the explicit layout. With ``vector``, ``x`` is ``(N, F)``: a DecoderNet1d's
    inputs, normalized as ``(N, F, 1)`` series (``series``: each vector over its F entries).
    Labels must be integers ``0..K-1`` with K the number of classes seen in training; test
    labels must lie in the same range. A signal target ``y`` has ``x``'s layout (2-D: one channel).
    """
    x_train, y_train = read_arrays(path, layout, "training", vector)
    task = task or infer_task(y_train, vector)
    check_task_targets(path, y_train, task)
    labels = _integer_labels if task == "classify" else (lambda _path, y, _split: y)
    y_train = labels(path, y_train, "training")
    if test_path is not None:
        x_test, y_test = read_arrays(test_path, layout, "test", vector)
        check_task_targets(test_path, y_test, task)
        y_test = labels(test_path, y_test, "test")
        if (y_test is None) != (y_train is None):
            raise DataError(f"{test_path}: {'has no' if y_test is None else 'has a'} y but {path} "
                            f"{'has one' if y_test is None else 'does not'}")
    else:
        train, test = held_out(path, len(x_train), test_fraction)
        x_train, x_test = x_train[train], x_train[test]
        y_train, y_test = (None, None) if y_train is None else (y_train[train], y_train[test])
    check_test_shape(x_train, x_test)
    as_series = (lambda x: x[:, :, None]) if vector else (lambda x: x)
    normalization = Normalization.fit(normalize, as_series(x_train))
    x_train, x_test = (float32_inputs(where, normalization, as_series(x))[..., 0] if vector
                       else float32_inputs(where, normalization, x)
                       for where, x in ((path, x_train), (test_path or path, x_test)))
    name = os.path.basename(path)
    if task == "classify":
        num_classes = check_classes(path, y_train)
        check_labels(y_test, num_classes, f"{test_path or path}: test label")
        return Dataset(name, x_train, y_train, x_test, y_test, classes=tuple(str(i) for i in range(num_classes)),
                       normalization=normalization)
    if y_train is None:  # an auto-encoder: the network's own (normalized) input is the target
        if vector:
            raise DataError(f"{path}: a DecoderNet1d's vector inputs need a target series y (N, C', L)")
        return Dataset(name, x_train, x_train, x_test, x_test, normalization=normalization, task=task)
    y_train, y_test = (float_targets(where, y, task, layout) for where, y in ((path, y_train),
                                                                              (test_path or path, y_test)))
    if y_test.shape[1:] != y_train.shape[1:]:
        raise DataError(f"test targets have shape {y_test.shape} but training targets {y_train.shape}")
    scale = TargetScale.fit(y_train, normalize != "none")
    return Dataset(name, x_train, float32_targets(path, scale, y_train), x_test,
                   float32_targets(test_path or path, scale, y_test), normalization=normalization, task=task,
                   target_scale=scale)


def held_out(path: str, n: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The training and test indices of ``n`` examples without a test file: a fixed
    ``test_fraction`` of them (a permutation seeded with 0) held out."""
    if not 0 < test_fraction < 1:
        raise DataError(f"test fraction must be between 0 and 1, got {test_fraction}")
    order = np.random.default_rng(0).permutation(n)
    n_test = int(round(test_fraction * n))
    if not 0 < n_test < n:
        raise DataError(f"{path}: {n} examples are too few to hold out a test fraction of {test_fraction}; pass a "
                        "separate test file")
    return order[n_test:], order[:n_test]


def check_test_shape(x_train: np.ndarray, x_test: np.ndarray) -> None:
    if x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(f"test inputs have shape {x_test.shape} but training inputs {x_train.shape}")


def load_tsv(path: str, test_path: str | None = None, test_fraction: float = 0.2, normalize: str = "series",
             task: str | None = None) -> Dataset:
    """A classification set in the UCR 2018 archive's files: ``path`` (its ``_TRAIN.tsv``) and
    ``test_path`` (``_TEST.tsv``), or a held-out ``test_fraction`` of ``path`` (``held_out``). The
    classes are the training labels, sorted, named as the file writes them (``label_names``)."""
    if task not in (None, "classify"):
        raise DataError(f"{path}: a .tsv holds labelled series (the UCR archive's), task classify, not {task}")
    x_train, labels_train = read_tsv(path, "training")
    if test_path is not None:
        if not test_path.endswith(".tsv"):
            raise DataError(f"{test_path}: the test file of a .tsv data set is a .tsv too")
        x_test, labels_test = read_tsv(test_path, "test")
    else:
        train, test = held_out(path, len(x_train), test_fraction)
        x_train, x_test = x_train[train], x_train[test]
        labels_train, labels_test = labels_train[train], labels_train[test]
    check_test_shape(x_train, x_test)
    classes, y_train = np.unique(labels_train, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{path}: the training labels hold one class ({label_names(classes)[0]}): there is nothing "
                        "to tell apart")
    names = label_names(classes)
    y_test = class_indices(test_path or path, labels_test, names)
    normalization = Normalization.fit(normalize, x_train)
    return Dataset(os.path.basename(path), float32_inputs(path, normalization, x_train), y_train.astype(np.int32),
                   float32_inputs(test_path or path, normalization, x_test), y_test, classes=names,
                   normalization=normalization)


def read_tsv(path: str, split: str = "training") -> tuple[np.ndarray, np.ndarray]:
    """One UCR 2018 archive file, a label and then the series per tab-separated line: the series
    as ``(N, L, 1)`` float64 and the labels ``(N,)`` float64; ``split`` names it in errors."""
    input_file(path, "", DataError)
    check_text_memory(path, f"the {split} data {path}")
    try:
        with warnings.catch_warnings():  # an empty file: the one-line error below instead of numpy's warning
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter="\t", ndmin=2, dtype=np.float64)
    except ValueError as e:  # text, or rows of unequal length
        raise DataError(f"{path}: not a UCR .tsv file (a label, then the series, tab-separated; series of one "
                        f"length) ({first_line(e)})") from None
    if len(table) == 0 or table.shape[1] < 2:
        raise DataError(f"{path}: no series (a line holds a label, then the series)")
    bad = np.argwhere(~np.isfinite(table))
    if len(bad):  # the archive writes NaN for missing values and the ends of shorter series
        raise DataError(f"{path}: line {bad[0][0] + 1} holds NaN or Inf: missing values and series of unequal "
                        "length are not supported")
    return table[:, 1:, None], table[:, 0]


def check_text_memory(path: str, what: str) -> None:
    """A text file of numbers becomes at most one float64 for each two bytes (a digit and a separator)."""
    memory.check_fits(4 * os.path.getsize(path), f"{what}: reading it", memory.host_available(), DataError)


def label_names(labels: np.ndarray) -> tuple[str, ...]:
    """Class names of numeric labels as the archive writes them: ``1``, ``-1``, ``2.5``."""
    return tuple(str(int(c)) if float(c).is_integer() else repr(float(c)) for c in labels)


def class_indices(path: str, labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The index in ``classes`` of each numeric label (int32); DataError naming labels not among them."""
    index = {name: i for i, name in enumerate(classes)}
    names = label_names(labels)
    unknown = sorted({name for name in names if name not in index})
    if unknown:
        raise DataError(f"{path}: labels {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} are not among "
                        f"the training classes ({', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''})")
    return np.array([index[name] for name in names], np.int32)


def infer_task(y: np.ndarray | None, vector: bool = False) -> str:
    """The task ``y`` implies: none, a series ``(N, C', L)`` or a DecoderNet1d's target: signal;
    ``(N, K)`` floats: regress; ``(N,)`` integers (or whole-number floats): classify; other
    ``(N,)`` floats: regress."""
    if y is None or y.ndim == 3 or vector:
        return "signal"
    if y.ndim == 2:
        return "regress"
    whole = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    return "classify" if whole else "regress"


TARGET_SHAPES = {"classify": "(N,) integer labels", "regress": "(N,) or (N, K) floats",
                 "signal": "(N, C', L) in x's layout, (N, L) for one channel, or none (x itself)"}


def check_task_targets(path: str, y: np.ndarray | None, task: str) -> None:
    """DataError unless ``y``'s rank fits ``task`` (what ``TARGET_SHAPES`` says)."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    ranks = {"classify": (1,), "regress": (1, 2), "signal": (None, 2, 3)}[task]
    if (None if y is None else y.ndim) not in ranks:
        got = "no y" if y is None else f"y of shape {y.shape}"
        raise DataError(f"{path}: task {task} needs targets {TARGET_SHAPES[task]}, got {got}")


def float_targets(path: str, y: np.ndarray, task: str = "regress", layout: str = "NCL") -> np.ndarray:
    """Regression targets as (N, K) or signal targets channels-last (N, L, C'), float64, finite."""
    if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
        raise DataError(f"{path}: targets y must be numeric, got dtype {y.dtype}")
    y = y.astype(np.float64)
    bad = np.argwhere(~np.isfinite(y))
    if len(bad):
        raise DataError(f"{path}: y contains {len(bad)} NaN/Inf values (first at example {bad[0][0]})")
    if task == "regress":
        return y.reshape(len(y), -1)
    return y[:, :, None] if y.ndim == 2 else (y if layout == "NLC" else np.swapaxes(y, 1, 2))


def float32_targets(path: str, scale: TargetScale, y: np.ndarray) -> np.ndarray:
    """Standardized float32 targets; refused if float32 cannot hold them."""
    with np.errstate(over="ignore"):
        out = scale(y).astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{path}: y has values up to {np.max(np.abs(y)):.3g}, beyond float32's range; rescale them")
    return out


def load_like(dataset: Dataset, path: str, layout: str = "NCL", max_length: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of ``path`` as ``dataset`` holds its own (``eval --data``): the inputs normalized
    with its normalization (its training statistics for ``channel``) and resampled to ``max_length``
    steps if longer (``capped``), the targets of its task checked and standardized with its target
    scale (none: the inputs, for an auto-encoder); a ``.tsv``'s labels are the run's class names."""
    if path.endswith(".tsv"):
        if dataset.task != "classify":
            raise DataError(f"{path}: a .tsv holds labelled series, for a classifier; this run's task is "
                            f"{dataset.task}")
        x, labels = read_tsv(path, "--data")
        x = float32_inputs(path, dataset.normalization, x)
        x = x if max_length is None else capped_inputs(x, max_length, dataset.normalization)
        return x, class_indices(path, labels, dataset.classes)
    x, y = read_arrays(path, layout, "--data", dataset.is_vector)
    check_task_targets(path, y, dataset.task)
    x = (float32_inputs(path, dataset.normalization, x[:, :, None])[..., 0] if dataset.is_vector
         else float32_inputs(path, dataset.normalization, x))
    if max_length is not None and dataset.resamplable:
        x = capped_inputs(x, max_length, dataset.normalization)
    if dataset.task == "classify":
        y = _integer_labels(path, y, "--data")
        check_labels(y, dataset.num_classes, f"{path}: --data label")
        return x, y
    if y is None:
        return x, x
    return x, float32_targets(path, dataset.target_scale, float_targets(path, y, dataset.task, layout))


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


def read_arrays(path: str, layout: str = "NCL", split: str = "training", vector: bool = False
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """One validated ``.npz``: x as (N, L, C) float64 (with ``vector``, (N, F)), as stored (not
    normalized), and y: integer labels as (N,) int32, any other targets as stored (validated by
    their task), or None if the file has no y; ``split`` names it in errors. Its array headers
    are checked before any array is read (a FIFO, a lying header or a size beyond memory is
    refused unread)."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    input_file(path, "", DataError)
    # raw x and y, then x as float64, normalized in float64 and as float32: 2.5 float64 copies
    memory.check_array_file(path, ("x", "y"), f"the {split} data", DataError, copies=2.5, npy=False)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files:
                raise DataError(f"{path}: needs an array 'x' (and 'y', except for an auto-encoder), has {f.files}")
            x, y = f["x"], (f["y"] if "y" in f.files else None)
    except (OSError, ValueError) as e:  # not a zip, truncated, or object arrays (pickles are refused)
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{path}: x must be numeric, got dtype {x.dtype}")
    if vector:
        if x.ndim != 2:
            raise DataError(f"{path}: a DecoderNet1d's inputs x must be vectors (N, F), got {x.shape}")
    elif x.ndim == 2:
        x = x[:, :, None]
    elif x.ndim == 3:
        x = x if layout == "NLC" else np.swapaxes(x, 1, 2)
    else:
        raise DataError(f"{path}: x must have shape (N, C, L), (N, L, C) or (N, L), got {x.shape}")
    if y is not None and (y.ndim == 0 or len(y) != len(x)):
        raise DataError(f"{path}: y must have shape (N, ...) matching x's {len(x)} examples, got {y.shape}")
    if len(x) == 0:
        raise DataError(f"{path}: no examples")
    if 0 in x.shape[1:]:
        raise DataError(f"{path}: x holds vectors of length 0" if vector else
                        f"{path}: x holds series of length {x.shape[1]} with {x.shape[2]} channels (layout {layout}); "
                        "both must be at least 1")
    x = x.astype(np.float64)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        raise DataError(f"{path}: x contains {len(bad)} NaN/Inf values (first at example {bad[0][0]})")
    if y is not None and y.ndim == 1 and infer_task(y) == "classify":
        y = _integer_labels(path, y, split)
    return x, y


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

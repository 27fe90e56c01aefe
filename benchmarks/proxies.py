"""Data sets for measuring the recipe where the eight archive sets say little (issue 37): few
training series per class, many classes, long series; and the 1-NN baselines of every set.

- ``NAME@K``: the archive set ``NAME`` with its training split cut to ``K`` series per class (all
  of a class that has fewer), a stratified choice fixed by ``SUBSAMPLE_SEED`` (not the training
  seed); the test split untouched. The inputs keep the full set's normalization (per series for
  the univariate sets, so nothing of the dropped series enters them).
- ``Synthetic50x2``: 50 classes, 2 training and 4 test series per class, length 2000, one channel.
  Each class has 3 smooth shapes of its own (Hann-windowed cosine mixtures, 30-200 steps wide),
  each at a position of its own; each series holds its class's shapes moved up to ``spread`` (5%)
  of the length from those positions (drawn per series and shape), each with an amplitude jitter
  of +-30%, on a slow random baseline (a sum of 3 low-frequency cosines), plus Gaussian noise;
  z-normalized per series. Generated from ``SYNTHETIC_SEED``. The baseline hides the shapes from
  a nearest neighbour (1-NN Euclidean 2.5%, DTW 15.5%; with the shapes anywhere, 3.5% both),
  where a network's filters see past it.
- ``Periodic50x2``: the same sizes; each class a beat of its own (one smooth shape, its period of
  100-300 steps), each series that beat repeated from a random phase, its period stretched by up to
  +-5% and its amplitude by up to +-30% per series, on the same slow baseline and noise: a stand-in
  for recordings of a periodic signal (the archive's 52-class sets of 104 series of length 2000 are
  pig blood and airway pressures), where nothing lines up from one series to the next.

Archive sets aeon does not ship (``UNSEEN``), read from the UCR 2018 archive's files
``NAME/NAME_{TRAIN,TEST}.tsv`` under ``UCR_ARCHIVE`` (the environment variable, else
``../shared/data/UCRArchive_2018`` beside the repository): the three pig sets, 52 classes (one pig
each) of 2 training and 4 test series of length 2000, the issue's own kind of data. Their series
are z-normalized, as ``train`` does to a .npz.

Baselines, on the inputs the network sees (the set's normalization: z-normalized per series for the
univariate sets, per channel with the training split's statistics for the multivariate ones, as
``train`` does): 1-NN with the Euclidean distance, and 1-NN DTW (dependent: squared Euclidean over
channels) with a Sakoe-Chiba band of 10% of the length, on the series average-pooled by an integer
factor to at most 256 steps.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from flax_resnet1d.training import data

SUBSAMPLE_SEED = 0
SYNTHETIC_SEED = 37
SYNTHETIC = {"Synthetic50x2": {"classes": 50, "train": 2, "test": 4, "length": 2000, "shapes": 3, "spread": 0.05},
             "Periodic50x2": {"classes": 50, "train": 2, "test": 4, "length": 2000, "periodic": True}}
UNSEEN = ("PigCVP", "PigArtPressure", "PigAirwayPressure")
UCR_ARCHIVE = os.environ.get("UCR_ARCHIVE", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                         "shared", "data", "UCRArchive_2018"))
PER_CLASS = (2, 4)
DTW_LENGTH = 256
DTW_BAND = 0.1


def names() -> list[str]:
    """Every proxy: the eight classification sets at each ``PER_CLASS``, then the synthetic sets."""
    return [f"{n}@{k}" for k in PER_CLASS for n in data.CLASSIFICATION_DATASETS] + list(SYNTHETIC)


def is_proxy(name: str) -> bool:
    return "@" in name or name in SYNTHETIC


def load(name: str) -> data.Dataset:
    """The proxy ``name`` (``NAME@K`` or a synthetic set)."""
    if name in SYNTHETIC:
        settings = dict(SYNTHETIC[name])
        return periodic(name, **settings) if settings.pop("periodic", False) else synthetic(name, **settings)
    base, k = name.split("@")
    return subsampled(data.load_archive(base), int(k))


def unseen(name: str, root: str = UCR_ARCHIVE) -> data.Dataset:
    """The archive set ``name`` from its UCR 2018 files under ``root`` (``data.load_tsv``)."""
    paths = [os.path.join(root, name, f"{name}_{split}.tsv") for split in ("TRAIN", "TEST")]
    for path in paths:
        if not os.path.isfile(path):
            raise data.DataError(f"{path} is missing: {name} is read from the UCR 2018 archive's files "
                                 "(UCR_ARCHIVE names their folder)")
    return dataclasses.replace(data.load_tsv(*paths), name=name)


def subsampled(dataset: data.Dataset, per_class: int, seed: int = SUBSAMPLE_SEED) -> data.Dataset:
    """``dataset`` with ``per_class`` training series of each class (sorted), chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(dataset.y_train == c),
                                              min(per_class, int(np.sum(dataset.y_train == c))), replace=False)
                                   for c in np.unique(dataset.y_train)]))
    return dataclasses.replace(dataset, name=f"{dataset.name}@{per_class}", x_train=dataset.x_train[keep],
                               y_train=dataset.y_train[keep])


def synthetic(name: str, classes: int, train: int, test: int, length: int, shapes: int, spread: float,
              seed: int = SYNTHETIC_SEED) -> data.Dataset:
    """The synthetic set described in the module docstring."""
    rng = np.random.default_rng(seed)
    widths = rng.integers(30, 201, (classes, shapes))
    templates = [[_shape(rng, w) for w in row] for row in widths]
    anchors = [[rng.integers(0, length - w + 1) for w in row] for row in widths]
    move = round(spread * length)

    def series(c: int) -> np.ndarray:
        x = np.zeros(length)
        for shape, anchor in zip(templates[c], anchors[c]):
            start = np.clip(anchor + rng.integers(-move, move + 1), 0, length - len(shape))
            x[start:start + len(shape)] += rng.uniform(0.7, 1.3) * shape
        return x

    return _dataset(name, rng, classes, train, test, length, series)


def periodic(name: str, classes: int, train: int, test: int, length: int, seed: int = SYNTHETIC_SEED) -> data.Dataset:
    """The periodic synthetic set described in the module docstring."""
    rng = np.random.default_rng(seed)
    beats = [_shape(rng, int(period)) for period in rng.integers(100, 301, classes)]

    def series(c: int) -> np.ndarray:
        period = round(len(beats[c]) * rng.uniform(0.95, 1.05))
        beat = np.interp(np.linspace(0, len(beats[c]) - 1, period), np.arange(len(beats[c])), beats[c])
        start = rng.integers(0, period)
        return rng.uniform(0.7, 1.3) * np.tile(beat, length // period + 2)[start:start + length]

    return _dataset(name, rng, classes, train, test, length, series)


def _dataset(name: str, rng: np.random.Generator, classes: int, train: int, test: int, length: int,
             series) -> data.Dataset:
    """Train and test splits of ``series(class)`` on a slow random baseline with Gaussian noise,
    z-normalized per series."""
    t = np.arange(length) / length

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(classes), per_class).astype(np.int32)
        x = np.empty((len(y), length))
        for i, c in enumerate(y):
            freq, phase, amp = rng.uniform(0.5, 3, 3), rng.uniform(0, 2 * np.pi, 3), rng.uniform(0, 0.5, 3)
            x[i] = (amp[:, None] * np.cos(2 * np.pi * freq[:, None] * t + phase[:, None])).sum(0) + series(c)
            x[i] += 0.3 * rng.standard_normal(length)
        return data.znormalize(x[..., None], axis=1).astype(np.float32), y

    x_train, y_train = split(train)
    x_test, y_test = split(test)
    return data.Dataset(name, x_train, y_train, x_test, y_test, classes=tuple(str(c) for c in range(classes)))


def _shape(rng: np.random.Generator, width: int) -> np.ndarray:
    """A smooth shape of ``width`` steps: a Hann window over a mix of 2 cosines, peak +-1."""
    u = np.linspace(0, 1, width)
    mix = sum(np.cos(2 * np.pi * rng.uniform(0.3, 2.5) * u + rng.uniform(0, 2 * np.pi)) for _ in range(2))
    shape = np.hanning(width) * mix
    return rng.choice((-1, 1)) * shape / np.abs(shape).max()


def baselines(dataset: data.Dataset) -> dict:
    """Test accuracy (%) of 1-NN Euclidean and 1-NN DTW, with how the DTW was computed."""
    train, test = (np.asarray(x, np.float64) for x in (dataset.x_train, dataset.x_test))
    euclid = _squared_distances(test.reshape(len(test), -1), train.reshape(len(train), -1))
    factor = math.ceil(train.shape[1] / DTW_LENGTH)
    pooled = [_pooled(x, factor) for x in (test, train)]
    band = max(1, math.ceil(DTW_BAND * pooled[0].shape[1]))
    dtw = dtw_distances(*pooled, band)
    accuracy = lambda d: float(100 * np.mean(dataset.y_train[d.argmin(1)] == dataset.y_test))  # noqa: E731
    return {"nn_euclidean": accuracy(euclid), "nn_dtw": accuracy(dtw), "dtw_pool": factor,
            "dtw_length": pooled[0].shape[1], "dtw_band": band}


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T, 0)


def _pooled(x: np.ndarray, factor: int) -> np.ndarray:
    """(N, L, C) averaged over windows of ``factor`` steps (the last, partial one dropped)."""
    n, length, channels = x.shape
    keep = length // factor * factor
    return x[:, :keep].reshape(n, keep // factor, factor, channels).mean(2)


def dtw_distances(a: np.ndarray, b: np.ndarray, band: int, chunk: int = 20000) -> np.ndarray:
    """DTW distances (sums of squared Euclidean step costs) of every (a_i, b_j), series (L, C) of one
    length, warping at most ``band`` steps; vectorized over the pairs, a row of the band at a time."""
    out = np.empty((len(a), len(b)))
    rows = max(1, chunk // len(b))
    for start in range(0, len(a), rows):
        x = a[start:start + rows]
        out[start:start + len(x)] = _dtw_block(x, b, band)
    return out


def _dtw_block(a: np.ndarray, b: np.ndarray, band: int) -> np.ndarray:
    length = a.shape[1]
    previous = np.full((len(a), len(b), length + 1), np.inf)
    previous[..., 0] = 0.0  # D[-1, -1] = 0: the path starts at (0, 0)
    for i in range(length):
        current = np.full_like(previous, np.inf)
        for j in range(max(0, i - band), min(length, i + band + 1)):
            cost = ((a[:, None, i] - b[None, :, j]) ** 2).sum(-1)
            best = np.minimum(np.minimum(previous[..., j], previous[..., j + 1]), current[..., j])
            current[..., j + 1] = cost + best
        previous = current
    return previous[..., length]

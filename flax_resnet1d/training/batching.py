"""Batches: the data order and the random shifts, both drawn from ``(seed, epoch)`` so that a
resumed run replays exactly the steps of an uninterrupted one, padded to the batch size, and
sharded so that each process gathers only its own rows."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from . import data, distributed
from .run_config import TrainConfig
from .steps import Batch, shardings


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The data order of ``epoch``: a function of (seed, epoch) only, so resume replays it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


Augmentation = Callable[[dict, slice], dict]  # (this process's rows of a batch, which rows of it) -> batch


def batches(x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int, rows: slice = slice(None),
            augment: Augmentation | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-size batches in ``order``; the last is filled with row ``order[0]`` under mask 0.
    With ``rows``, only those rows of each batch (one process's share) are gathered; ``augment``
    transforms them."""
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        mask = np.zeros(batch_size, np.float32)
        mask[:len(idx)] = 1
        idx = np.concatenate([idx, np.full(batch_size - len(idx), order[0])])[rows]
        batch = {"x": x[idx], "y": y[idx], "mask": mask[rows]}
        yield batch if augment is None else augment(batch, rows)


def augmentation(config: TrainConfig, epoch: int) -> Augmentation | None:
    """The random transform of the training batches of ``epoch`` (None: none), drawn from (seed,
    epoch) only, so resume replays it, and for the whole global batch, so every process draws the
    same and takes its own rows.

    ``shift``: each series moves by a random whole number of steps, at most ``shift`` of its
    length either way, the vacated steps repeating the series' first or last value (zeros would
    put a level step into it). Its length, frequencies and amplitudes stay as they are, so the
    step compiles once and evaluation sees what training saw. A signal target moves with its
    input. Only the first ``augment_fraction`` of the epochs are shifted; the rest, at the low end
    of the schedule, fit the series as they are. With ``stretch``, each shifted series is first
    resampled about its middle by a random factor within 1 +- ``stretch`` (``data.stretched``): its
    features last longer or shorter, as a beat does at another rate.

    ``noise``: Gaussian noise of standard deviation ``noise`` (in the normalized inputs' units) is
    added to every input, in every epoch, after the shift; the target stays clean (denoising).
    """
    shifts = config.augment != "none" and epoch <= augmented_epochs(config)
    if not shifts and not config.noise:
        return None
    shift_rng, noise_rng = (np.random.default_rng([config.seed, epoch, stream]) for stream in (1, 2))

    def augment(batch: dict, rows: slice) -> dict:
        x, out = batch["x"], dict(batch)
        if shifts:
            reach = int(config.shift * x.shape[1])
            moves = shift_rng.integers(-reach, reach + 1, config.batch_size)[rows]
            factors = shift_rng.uniform(1 - config.stretch, 1 + config.stretch, config.batch_size)[rows]
            keys = ("x", "y") if config.task == "signal" else ("x",)
            for key in keys:
                out[key] = data.shifted(data.stretched(batch[key], factors) if config.stretch else batch[key], moves)
        if config.noise:
            noise = noise_rng.standard_normal((config.batch_size, *x.shape[1:]), dtype=np.float32)[rows]
            out["x"] = out["x"] + np.float32(config.noise) * noise
        return out

    return augment


def augmented_epochs(config: TrainConfig) -> int:
    return math.ceil(round(config.augment_fraction * config.epochs, 9))  # 0.07 * 100 is 7.000000000000001


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh, batch_size: int | None = None) -> Batch:
    """This process's rows of a global batch of ``batch_size`` rows (default: the whole batch,
    one process) -> global arrays sharded over ``batch``."""
    sharding, size = shardings(mesh)[1], batch_size or len(batch["mask"])
    return {k: jax.make_array_from_process_local_data(sharding, v, (size, *v.shape[1:])) for k, v in batch.items()}


def sharded_batches(x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int, mesh: Mesh,
                    augment: Augmentation | None = None) -> Iterator[Batch]:
    """``batches`` as global arrays: every process draws the same order (same data, same seed)
    and gathers only the rows its own devices hold."""
    rows = distributed.local_rows(shardings(mesh)[1], batch_size)
    for batch in batches(x, y, order, batch_size, rows, augment):
        yield shard_batch(batch, mesh, batch_size)


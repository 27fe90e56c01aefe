"""Shared pieces of the training tests: a small learnable data set, a tiny network config,
and bit-exact comparisons of runs."""

from __future__ import annotations

import os

import jax
import numpy as np

from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.training import run_config, run_files, steps
from flax_resnet1d.training.data import Dataset, DataSpec


# a tiny network and batch for CLI runs that test behaviour, not accuracy
TINY_MODEL = ["--channel", "4", "--layers", "1", "1", "--block", "plain", "--kernel-size", "3", "--batch-size", "8",
              "--no-progress"]


def synthetic_dataset(n_train: int = 40, n_test: int = 24, length: int = 32, channels: int = 2, classes: int = 3,
                      seed: int = 0) -> Dataset:
    """Noisy sinusoids whose frequency depends on the class: learnable, never constant."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, classes, n).astype(np.int32)
        t = np.arange(length)[None, :, None] / length
        phase = rng.uniform(0, 2 * np.pi, (n, 1, channels))
        x = np.sin(2 * np.pi * (1 + y[:, None, None]) * t + phase) + 0.5 * rng.standard_normal((n, length, channels))
        return x.astype(np.float32), y

    return Dataset("synthetic", *split(n_train), *split(n_test), classes=tuple(str(i) for i in range(classes)))


def tiny_config(dataset: Dataset, **overrides) -> run_config.TrainConfig:
    """A network small enough to compile in seconds; 16-row batches leave a partial last batch."""
    model = EncoderConfig(4, (1, 1), "plain", 3, dataset.in_planes, dataset.num_classes)
    settings = dict(epochs=6, batch_size=16, lr=3e-3, ckpt_every=2, keep=2)
    return run_config.TrainConfig(model, DataSpec("synthetic.npz"), **{**settings, **overrides})


def dead_shortcut_biases(config: EncoderConfig) -> set[tuple[str, ...]]:
    """Flax paths of the shortcut-norm biases whose gradient is zero in exact arithmetic.

    Such a bias adds a per-channel constant to its block's output. Every later residual branch
    starts with an instance norm and every projection shortcut ends with one, removing it;
    only identity shortcuts carry it on. It reaches the output (through the final conv) only
    when no later block has a projection shortcut. Rounding noise stands in for these zero
    gradients, and Adam turns noise into O(lr) steps: runs differ there by design.
    """
    blocks = [(s, j) for s, n in enumerate(config.layers) for j in range(n)]
    projects = [(lambda i, o, stride: stride > 1 or i != o)(*config.block_args(s, j)) for s, j in blocks]
    return {(f"stage{s + 1}_block{j + 1}", "shortcut", "norm", "bias")
            for k, (s, j) in enumerate(blocks) if projects[k] and any(projects[k + 1:])}


def save_npz(dataset: Dataset, train_path, test_path) -> None:
    """The data set as the user's files: x in MDNC's (N, C, L) layout."""
    np.savez(train_path, x=np.swapaxes(dataset.x_train, 1, 2), y=dataset.y_train)
    np.savez(test_path, x=np.swapaxes(dataset.x_test, 1, 2), y=dataset.y_test)


def corrupt_files(path) -> int:
    """Overwrite every file under ``path`` with random bytes of the same size."""
    rng, count = np.random.default_rng(0), 0
    for root, _, files in os.walk(path):
        for name in files:
            file = os.path.join(root, name)
            size = max(os.path.getsize(file), 16)
            with open(file, "wb") as f:
                f.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            count += 1
    return count


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in run_files.TIMING_KEYS} for h in history]


def assert_same_state(a: steps.TrainState, b: steps.TrainState) -> None:
    """Bit-identical parameters, optimizer state and step."""
    leaves_a, tree_a = jax.tree.flatten(jax.device_get((a.step, a.params, a.opt_state)))
    leaves_b, tree_b = jax.tree.flatten(jax.device_get((b.step, b.params, b.opt_state)))
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

"""The default recipe (``flax_resnet1d.recipe``) and its training pieces: random shifts, label
smoothing, the step budget; and ``train`` with no tuning flag on small and odd data."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from train_helpers import save_npz, synthetic_dataset, tiny_config

from flax_resnet1d import cli, recipe, train


def _epoch_batches(config, dataset, rows=slice(None), epoch=3):
    order = train.epoch_order(config.seed, epoch, len(dataset.y_train))
    return list(train.batches(dataset.x_train, dataset.y_train, order, config.batch_size, rows,
                              train.augmentation(config, epoch)))


def test_shifts_are_replayable_and_the_same_whatever_the_process_split():
    dataset = synthetic_dataset(n_train=40, length=32)
    config = tiny_config(dataset, augment="shift", shift=0.25)
    shifted, again = _epoch_batches(config, dataset), _epoch_batches(config, dataset)
    halves = [_epoch_batches(config, dataset, slice(i, i + 8)) for i in (0, 8)]
    plain = _epoch_batches(dataclasses.replace(config, augment="none"), dataset)
    shifts = set()
    for b, batch in enumerate(shifted):
        for key in batch:
            assert np.array_equal(batch[key], again[b][key])  # (seed, epoch) alone fix them: resume replays them
            assert np.array_equal(batch[key], np.concatenate([h[b][key] for h in halves]))  # two processes' rows
        assert np.array_equal(batch["y"], plain[b]["y"]) and np.array_equal(batch["mask"], plain[b]["mask"])
        for moved, series in zip(batch["x"], plain[b]["x"]):  # each row is its own series moved by <= 8 steps
            found = [k for k in range(-8, 9) if np.array_equal(moved, train.shifted(series[None], np.array([k]))[0])]
            assert found
            shifts.add(found[0])
    assert len(shifts) > 8  # they move, both ways


def test_shifted_moves_and_repeats_the_edge_values():
    x = np.arange(1, 6, dtype=np.float32)[None, :, None].repeat(3, axis=0)  # 1..5, three rows
    out = train.shifted(x, np.array([2, -1, 0]))[..., 0]
    assert out.dtype == x.dtype and np.array_equal(out, [[1, 1, 1, 2, 3], [2, 3, 4, 5, 5], [1, 2, 3, 4, 5]])


@pytest.mark.parametrize("fraction, augmented", [(1.0, 6), (0.5, 3), (0.4, 3), (0.01, 1)])
def test_only_the_first_augment_fraction_of_the_epochs_is_augmented(fraction, augmented):
    dataset = synthetic_dataset(n_train=40, length=32)
    config = tiny_config(dataset, augment="shift", shift=0.25, augment_fraction=fraction)
    plain = dataclasses.replace(config, augment="none")
    moved = [not all(np.array_equal(b["x"], p["x"]) for b, p in
                     zip(_epoch_batches(config, dataset, epoch=e), _epoch_batches(plain, dataset, epoch=e)))
             for e in range(1, config.epochs + 1)]
    assert moved == [e <= augmented for e in range(1, config.epochs + 1)]


def test_label_smoothing_matches_torch_cross_entropy():
    rng = np.random.default_rng(1)
    logits, y = rng.standard_normal((7, 5)), rng.integers(0, 5, 7)
    mask = np.array([1, 1, 1, 1, 1, 0, 0], np.float64)
    with jax.enable_x64(True):
        ours = float(train.cross_entropy(jnp.asarray(logits), jnp.asarray(y), jnp.asarray(mask), 0.1))
    reference = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits[:5]), torch.from_numpy(y[:5]),
                                                        label_smoothing=0.1))
    assert abs(ours - reference) <= 1e-14 * abs(reference)


@pytest.mark.parametrize("num_train, epochs", [(4, 600), (200, 600), (1000, 190), (8000, 24),
                                               (10**6, recipe.MIN_EPOCHS)])
def test_the_step_budget_sets_the_epochs(num_train, epochs):
    settings = recipe.training(num_train, {})
    assert settings["epochs"] == epochs
    assert settings["eval_every"] == max(1, epochs // recipe.EVALUATIONS)
    assert {k: settings[k] for k in recipe.TRAINING} == recipe.TRAINING


def test_given_options_override_the_recipe():
    settings = recipe.training(200, {"epochs": 7, "lr": 0.01, "ckpt_every": 3})
    assert (settings["epochs"], settings["lr"], settings["ckpt_every"], settings["eval_every"]) == (7, 0.01, 3, 1)
    assert settings["augment"] == recipe.TRAINING["augment"]


ODD_DATA = {  # name: synthetic_dataset arguments
    "2 examples per class": dict(n_train=6, n_test=6, classes=3, length=40, channels=1),
    "52 classes": dict(n_train=156, n_test=52, classes=52, length=30, channels=1),
    "length 24": dict(n_train=30, n_test=10, classes=2, length=24, channels=1),
    "length 2100": dict(n_train=12, n_test=6, classes=2, length=2100, channels=1),
}


@pytest.mark.parametrize("case", sorted(ODD_DATA))
def test_train_with_the_recipe_on_odd_data(case, tmp_path, capsys):
    """The recipe's settings apply as is (2 epochs of them: CI time); the last line keeps its form."""
    dataset = synthetic_dataset(**ODD_DATA[case])
    classes = ODD_DATA[case]["classes"]  # every class in training; 2 examples each for the first case
    dataset = dataclasses.replace(dataset, y_train=np.arange(len(dataset.y_train), dtype=np.int32) % classes)
    save_npz(dataset, tmp_path / "train.npz", tmp_path / "test.npz")
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--dataset", str(tmp_path / "train.npz"), "--test-data", str(tmp_path / "test.npz"),
                     "--epochs", "2", "--no-progress", "--out", str(run_dir)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"test accuracy {train.read_metrics(run_dir)[-1]['test_accuracy']:.4f}" in last
    config = train.load_config(run_dir)
    assert {k: getattr(config, k) for k in recipe.TRAINING} == recipe.TRAINING
    assert config.model.out_length == dataset.num_classes


def test_unequal_class_counts_and_a_class_absent_from_training(tmp_path, capsys):
    dataset = synthetic_dataset(n_train=30, n_test=12, classes=3)
    y_train = np.array([0] * 20 + [1] * 8 + [2] * 2, np.int32)
    save_npz(dataclasses.replace(dataset, y_train=y_train), tmp_path / "train.npz", tmp_path / "test.npz")
    args = ["train", "--dataset", str(tmp_path / "train.npz"), "--test-data", str(tmp_path / "test.npz"),
            "--epochs", "1", "--no-progress"]
    assert cli.main([*args, "--out", str(tmp_path / "unequal")]) == 0
    save_npz(dataclasses.replace(dataset, y_train=np.where(y_train == 2, 0, y_train).astype(np.int32)),
             tmp_path / "train.npz", tmp_path / "test.npz")  # class 2 only in the test split
    capsys.readouterr()
    assert cli.main([*args, "--out", str(tmp_path / "absent")]) == 2
    assert "test label 2 is out of range: the classes are 0..1 (a class absent from the training split" in \
        capsys.readouterr().err

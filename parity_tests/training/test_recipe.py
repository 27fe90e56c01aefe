"""The default recipe (``flax_resnet1d.training.recipe``) and its training pieces: random shifts, label
smoothing, the step budget; and ``train`` with no tuning flag on small and odd data."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from train_helpers import save_npz, synthetic_dataset, tiny_config

from flax_resnet1d import cli
from flax_resnet1d.training import batching, data, recipe, run_config, run_files, steps


def _epoch_batches(config, dataset, rows=slice(None), epoch=3):
    order = batching.epoch_order(config.seed, epoch, len(dataset.y_train))
    return list(batching.batches(dataset.x_train, dataset.y_train, order, config.batch_size, rows,
                              batching.augmentation(config, epoch)))


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
            found = [k for k in range(-8, 9) if np.array_equal(moved, data.shifted(series[None], np.array([k]))[0])]
            assert found
            shifts.add(found[0])
    assert len(shifts) > 8  # they move, both ways


def test_shifted_moves_and_repeats_the_edge_values():
    x = np.arange(1, 6, dtype=np.float32)[None, :, None].repeat(3, axis=0)  # 1..5, three rows
    out = data.shifted(x, np.array([2, -1, 0]))[..., 0]
    assert out.dtype == x.dtype and np.array_equal(out, [[1, 1, 1, 2, 3], [2, 3, 4, 5, 5], [1, 2, 3, 4, 5]])


@pytest.mark.parametrize("factor", [1.0, 1.25, 0.8, 2.0, 0.5])
def test_stretched_resamples_about_the_middle_and_repeats_the_edge_values(factor):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 17, 3)).astype(np.float32)
    out = data.stretched(x, np.array([factor, 1.0]))
    middle, steps = 8, np.arange(17)
    source = np.clip(middle + (steps - middle) / factor, 0, 16)  # where each step reads the series
    expected = np.stack([np.interp(source, steps, x[0, :, c]) for c in range(3)], axis=1)
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_allclose(out[0], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[1], x[1], rtol=1e-6, atol=1e-6)  # factor 1: the series itself
    if factor < 1:  # shorter: the ends repeat the first and last values
        assert np.all(out[0, 0] == x[0, 0]) and np.all(out[0, -1] == x[0, -1])


def test_stretches_are_replayable_the_same_whatever_the_process_split_and_bounded():
    dataset = synthetic_dataset(n_train=40, length=32)
    config = tiny_config(dataset, augment="shift", shift=0.25, stretch=0.2)
    stretched, again = _epoch_batches(config, dataset), _epoch_batches(config, dataset)
    halves = [_epoch_batches(config, dataset, slice(i, i + 8)) for i in (0, 8)]
    plain = _epoch_batches(dataclasses.replace(config, augment="none", stretch=0.0), dataset)
    factors = []
    for b, batch in enumerate(stretched):
        for key in batch:
            assert np.array_equal(batch[key], again[b][key])
            assert np.array_equal(batch[key], np.concatenate([h[b][key] for h in halves]))
        for moved, series in zip(batch["x"], plain[b]["x"]):  # each row: its series stretched, then shifted
            grid = np.linspace(0.8, 1.2, 401)
            candidates = data.stretched(np.repeat(series[None], len(grid), 0), grid)  # one per factor
            errors = np.min([np.abs(moved - data.shifted(candidates, np.full(len(grid), k))).max(axis=(1, 2))
                             for k in range(-8, 9)], axis=0)
            factors.append(grid[int(np.argmin(errors))])
            assert errors.min() < 0.05
    assert min(factors) < 0.95 and max(factors) > 1.05  # they stretch, both ways


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
        ours = float(steps.cross_entropy(jnp.asarray(logits), jnp.asarray(y), jnp.asarray(mask), 0.1))
    reference = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits[:5]), torch.from_numpy(y[:5]),
                                                        label_smoothing=0.1))
    assert abs(ours - reference) <= 1e-14 * abs(reference)


def _bumps(centres, length=32, per_class=3, seed=0):
    """One noisy Gaussian bump per class at ``centres[class]``: (x (N, length, 1), y)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(centres)), per_class)
    t = np.arange(length)[None, :]
    x = np.exp(-0.5 * ((t - np.asarray(centres, float)[y, None]) / 2.0) ** 2)
    return (x + 0.05 * rng.standard_normal(x.shape))[..., None].astype(np.float32), y


@pytest.mark.parametrize("num_train, epochs", [(4, 2400), (12, 2400), (40, 800), (100, 600), (200, 600),
                                               (1000, 190), (8000, 24), (10**6, recipe.MIN_EPOCHS)])
def test_the_step_budget_sets_the_epochs(num_train, epochs):
    assert recipe.epochs_for(num_train) == epochs


# The eight archive sets: (series, length, channels), and what the recipe chooses for them from their
# training split (docs/accuracy.md's table): augmentation, shift strength, epochs.
EIGHT_SETS = {"GunPoint": ((50, 150, 1), ("shift", 0.1, 600)), "ArrowHead": ((36, 251, 1), ("shift", 0.1, 800)),
              "ItalyPowerDemand": ((67, 24, 1), ("none", None, 600)),
              "OSULeaf": ((200, 427, 1), ("shift", 0.3, 600)),
              "ACSF1": ((100, 1460, 1), ("none", None, 435)),  # spiky: kept at its length
              "PickupGestureWiimoteZ": ((50, 361, 1), ("shift", 0.1, 600)),
              "BasicMotions": ((40, 100, 6), ("shift", 0.1, 800)),
              "JapaneseVowels": ((270, 29, 12), ("shift", 0.1, 600))}


@pytest.mark.parametrize("name", EIGHT_SETS)
def test_the_budget_of_the_eight_sets(name):
    (num_train, length, channels), (_, _, epochs) = EIGHT_SETS[name]
    assert recipe.epochs_for(num_train, recipe.BATCH_SIZE, length, channels) == epochs


@pytest.mark.parametrize("name", EIGHT_SETS)
def test_the_recipe_on_the_eight_sets(name):
    """The choices the accuracy table was measured with, from each set's training split: none of
    them is resampled, so all keep MODEL's kernel."""
    spec, dataset = run_config.sized({}, data.DataSpec(name), data.load_archive(name))
    assert dataset.length == EIGHT_SETS[name][0][1]
    config = run_config.train_config({}, spec, dataset)
    augment, shift, epochs = EIGHT_SETS[name][1]
    assert (config.augment, config.epochs, config.model.kernel_size) == (augment, epochs, recipe.MODEL["kernel_size"])
    assert config.shift == (shift or recipe.TRAINING["shift"])


@pytest.mark.parametrize("num_train, batch_size, length, channels, kernel_size",
                         [(104, 16, 2000, 1, 9), (100, 16, 8000, 1, 9), (12, 16, 20000, 1, 9), (104, 16, 2000, 12, 9),
                          (1000, 16, 1000, 3, 9), (104, 8, 2000, 1, 9), (2000, 16, 512, 1, 15), (104, 16, 2000, 1, 3)])
def test_the_time_rule_caps_the_steps_of_long_series_to_the_budget(num_train, batch_size, length, channels,
                                                                    kernel_size):
    epochs = recipe.epochs_for(num_train, batch_size, length, channels, kernel_size)
    steps_per_epoch = math.ceil(num_train / batch_size)
    ms = recipe.step_ms(batch_size, length, channels, kernel_size)
    assert epochs < recipe.epochs_for(num_train, batch_size)  # the time binds before the step cap
    assert epochs * steps_per_epoch * ms <= 1e3 * recipe.STEP_BUDGET_S < (epochs + 1) * steps_per_epoch * ms


@pytest.mark.parametrize("grown", [0, 1, 2, 3])
def test_a_step_takes_longer_with_more_rows_steps_channels_or_kernel(grown):
    shape = [16, 500, 2, 9]
    bigger = [2 * v if i == grown else v for i, v in enumerate(shape)]
    assert recipe.step_ms(*bigger) > recipe.step_ms(*shape) > 0


@pytest.mark.parametrize("task, capped", [("classify", True), ("regress", True), ("signal", False)])
def test_the_recipe_caps_the_epochs_of_long_series_by_time_for_the_encoder_only(task, capped):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((104, 3000, 1)).astype(np.float32)
    y = {"classify": np.arange(104) % 52, "regress": rng.standard_normal((104, 1)), "signal": x}[task]
    epochs = recipe.training(x, y, {}, task)["epochs"]
    assert epochs == (recipe.epochs_for(104, recipe.BATCH_SIZE, 3000, 1) if capped else recipe.epochs_for(104))
    assert (epochs < recipe.EPOCHS) == capped


@pytest.mark.parametrize("per_class", [2, 500])
def test_the_recipe_fills_in_every_setting(per_class):
    x, y = _bumps([6, 24], per_class=per_class)
    settings = recipe.training(x, y, {})
    assert settings["epochs"] == recipe.epochs_for(len(y), recipe.BATCH_SIZE, *x.shape[1:])
    assert settings["eval_every"] == max(1, settings["epochs"] // recipe.EVALUATIONS)
    expected = {**recipe.TRAINING, "shift": recipe.shift_strength(x, y)}
    assert {k: settings[k] for k in recipe.TRAINING} == expected


def test_given_options_override_the_recipe():
    settings = recipe.training(*_bumps([6, 24], per_class=100), {"epochs": 7, "lr": 0.01, "ckpt_every": 3})
    assert (settings["epochs"], settings["lr"], settings["ckpt_every"], settings["eval_every"]) == (7, 0.01, 3, 1)
    assert settings["augment"] == recipe.TRAINING["augment"]


@pytest.mark.parametrize("centres, changed", [([6, 24], None), ([6, 16, 24], None), ([12, 13], (1, 0)),
                                              ([13, 12], (0, 1)), ([20, 5, 19], (0, 2)), ([5, 20, 19], (1, 2))])
def test_shifts_are_dropped_where_one_step_turns_a_class_into_another(centres, changed):
    x, y = _bumps(centres)
    assert recipe.class_changed_by_shift(x, y) == changed
    assert recipe.training(x, y, {})["augment"] == ("shift" if changed is None else "none")
    assert recipe.training(x, y, {"augment": "shift"})["augment"] == "shift"  # the user's choice stands


@pytest.mark.parametrize("augment", [[], ["--augment", "shift"]])
def test_train_says_when_the_recipe_drops_the_shifts(augment, tmp_path, capsys):
    x, y = _bumps([12, 13], per_class=8)
    dataset = data.Dataset("bumps", x, y.astype(np.int32), x, y.astype(np.int32), classes=("0", "1"))
    save_npz(dataset, tmp_path / "train.npz", tmp_path / "test.npz")
    assert cli.main(["train", "--dataset", str(tmp_path / "train.npz"), "--test-data", str(tmp_path / "test.npz"),
                     "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run"), *augment]) == 0
    said = "recipe: no random shifts, since class 1's mean series moved one step is nearer class 0's"
    assert (said in capsys.readouterr().out) == (not augment)
    assert run_files.load_config(tmp_path / "run").augment == ("shift" if augment else "none")


def _smooth_and_spiky(length: int = 2000, n: int = 12) -> dict[str, np.ndarray]:
    """Smooth series (a few slow sines), which resampling keeps, and spiky ones (sparse impulses), which it loses."""
    rng, t = np.random.default_rng(3), np.arange(length)[None, :, None]
    smooth = np.sin(2 * np.pi * t * rng.uniform(1, 8, (n, 1, 1)) / length + rng.uniform(0, 6, (n, 1, 1)))
    spiky = np.where(rng.random((n, length, 1)) < 0.05, rng.uniform(1, 3, (n, length, 1)), 0.0)
    return {"smooth": smooth, "spiky": spiky}


@pytest.mark.parametrize("kind, loss", [("smooth", (0, 0.01)), ("spiky", (0.5, 2))])
def test_resample_loss_is_the_energy_resampling_to_the_length_and_back_loses(kind, loss):
    x = _smooth_and_spiky()[kind]
    back = np.stack([data.resampled(data.resampled(s, 512), 2000) for s in x])
    expected = ((x - back) ** 2).sum() / (x**2).sum()
    assert recipe.resample_loss(x, 512) == pytest.approx(expected, rel=1e-12) and loss[0] < expected < loss[1]
    assert recipe.input_length(x) == (recipe.MAX_LENGTH if kind == "smooth" else 2000)
    assert recipe.input_length(x[:, :recipe.MAX_LENGTH]) == recipe.MAX_LENGTH  # not longer: as it is


@pytest.mark.parametrize("kind, given, length, kernel",
                         [("smooth", [], recipe.MAX_LENGTH, recipe.RESAMPLED_KERNEL_SIZE), ("spiky", [], 2000, 9),
                          ("smooth", ["--max-length", "300"], 300, 9), ("smooth", ["--max-length", "0"], 2000, 9),
                          ("smooth", ["--kernel-size", "5"], recipe.MAX_LENGTH, 5)])
def test_train_resamples_long_smooth_series_to_the_recipes_length_with_a_wider_kernel(kind, given, length, kernel,
                                                                                       tmp_path, capsys):
    x, y = _smooth_and_spiky()[kind].astype(np.float32), np.arange(12, dtype=np.int32) % 2
    save_npz(data.Dataset("long", x, y, x, y, classes=("0", "1")), tmp_path / "train.npz", tmp_path / "test.npz")
    assert cli.main(["train", "--dataset", str(tmp_path / "train.npz"), "--test-data", str(tmp_path / "test.npz"),
                     "--channel", "4", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run"), *given]) == 0
    out = capsys.readouterr().out
    said = f"recipe: the series resampled from 2000 to {recipe.MAX_LENGTH} steps, since that keeps 50% of their energy"
    assert (said in out) == (length == recipe.MAX_LENGTH)
    said = f"recipe: kernel {recipe.RESAMPLED_KERNEL_SIZE} for the resampled series"
    assert (said in out) == (kernel == recipe.RESAMPLED_KERNEL_SIZE)
    config = run_files.load_config(tmp_path / "run")
    assert config.data.length == length and config.data.max_length == (length if length < 2000 else None)
    assert config.model.kernel_size == kernel


def test_the_time_rule_counts_the_kernel_of_the_network_it_trains():
    x, y = _smooth_and_spiky()["spiky"].astype(np.float32), np.arange(12, dtype=np.int32) % 2
    dataset = data.Dataset("long", x, y, x, y, classes=("0", "1"))
    spec = data.DataSpec("long.npz")
    epochs = [run_config.train_config({"kernel_size": k}, spec, dataset).epochs for k in (3, 9, 25)]
    assert epochs == [recipe.epochs_for(12, recipe.BATCH_SIZE, 2000, 1, k) for k in (3, 9, 25)]
    assert epochs[0] == epochs[1] > epochs[2]  # a narrower kernel is not counted faster


@pytest.mark.parametrize("seed", range(4))
def test_class_changed_by_shift_agrees_with_a_direct_search(seed):
    """Random multichannel classes: the first class whose one-step-moved mean has another class's
    mean nearer than its own, found by explicit loops."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(40) % 5)
    x = np.cumsum(rng.standard_normal((40, 12, 3)), axis=1).astype(np.float32) + y[:, None, None]
    means = [x[y == c].mean(0).astype(np.float64) for c in range(5)]
    expected = None
    for step in (-1, 1):
        for a in range(5):
            moved = data.shifted(means[a][None], np.array([step]))[0]
            d = [((moved - m) ** 2).sum() for m in means]
            b = min((c for c in range(5) if c != a), key=lambda c: d[c])
            if expected is None and d[b] < d[a]:
                expected = (a, b)
    assert recipe.class_changed_by_shift(x, y) == expected


def _shapes_moved(move, per_class=3, classes=6, length=120, seed=0):
    """A burst of its own frequency per class, each series holding it moved up to ``move`` steps
    either way from the middle: (x (N, length, 1), y)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per_class)
    t = np.arange(length)[None, :] - (length // 2 + rng.integers(-move, move + 1, len(y)))[:, None]
    x = np.exp(-0.5 * (t / 8.0) ** 2) * np.cos(2 * np.pi * (0.04 + 0.03 * y[:, None]) * t)
    return (x + 0.05 * rng.standard_normal(x.shape))[..., None].astype(np.float32), y


@pytest.mark.parametrize("move, strength", [(0, 0.1), (30, 0.3)])
def test_shifts_are_stronger_where_moving_series_far_finds_their_class(move, strength):
    """Bursts at one place: every strength finds the class, so the weaker stands; moved up to a
    quarter of the length, only the stronger shifts find it."""
    x, y = _shapes_moved(move)
    weaker, stronger = recipe.neighbour_accuracies(x, y)
    assert (weaker == stronger == 1.0) if move == 0 else (weaker < stronger == 1.0)
    assert recipe.shift_strength(x, y) == strength
    # (the class means of the moved bursts fail the one-step check: shifts forced on)
    assert recipe.training(x, y, {"augment": "shift"})["shift"] == strength
    assert recipe.training(x, y, {"augment": "shift", "shift": 0.05})["shift"] == 0.05  # the user's choice stands


@pytest.mark.parametrize("given", [[], ["--shift", "0.3"]])
def test_train_says_when_the_recipe_makes_the_shifts_stronger(given, tmp_path, capsys):
    x, y = _shapes_moved(30)
    dataset = data.Dataset("bursts", x, y.astype(np.int32), x, y.astype(np.int32), classes=tuple("abcdef"))
    save_npz(dataset, tmp_path / "train.npz", tmp_path / "test.npz")
    assert cli.main(["train", "--dataset", str(tmp_path / "train.npz"), "--test-data", str(tmp_path / "test.npz"),
                     "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run"), "--augment", "shift",
                     *given]) == 0
    said = "recipe: random shifts of up to 30% of the length, since moved that far"
    assert (said in capsys.readouterr().out) == (not given)
    assert run_files.load_config(tmp_path / "run").shift == 0.3


@pytest.mark.parametrize("seed, moves", [(0, 50), (1, 50), (2, 2), (3, 1)])
def test_neighbour_accuracies_agree_with_a_direct_search(seed, moves, monkeypatch):
    """Random multichannel series: each one's nearest other series over every allowed move, found by loops."""
    monkeypatch.setattr(recipe, "NEIGHBOUR_MOVES", moves)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(14) % 4)
    x = np.cumsum(rng.standard_normal((14, 23, 2)), axis=1).astype(np.float32)
    limits = [round(s * 23) for s in recipe.SHIFT_STRENGTHS]
    stride = max(1, limits[-1] // moves)
    expected = []
    for limit in limits:
        allowed = [m for m in range(-limit, limit + 1) if m % stride == 0]
        correct = 0
        for i in range(14):
            d = [min(((x[i].astype(np.float64) - data.shifted(x[j][None], np.array([m]))[0]) ** 2).sum()
                     for m in allowed) if j != i else np.inf for j in range(14)]
            correct += y[int(np.argmin(d))] == y[i]
        expected.append(correct / 14)
    np.testing.assert_allclose(recipe.neighbour_accuracies(x, y), expected)


def test_the_neighbour_check_reads_at_most_its_share_of_series(monkeypatch):
    monkeypatch.setattr(recipe, "NEIGHBOUR_SERIES", 9)
    x, y = _shapes_moved(30, per_class=5)
    seen = []
    monkeypatch.setattr(recipe, "shifted", lambda x, move: seen.append(len(x)) or data.shifted(x, move))
    recipe.neighbour_accuracies(x, y)
    assert set(seen) == {9}


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
    assert f"test accuracy {run_files.read_metrics(run_dir)[-1]['test_accuracy']:.4f}" in last
    config = run_files.load_config(run_dir)
    loaded = data.load(config.data)  # normalized as the run saw it
    expected = recipe.training(loaded.x_train, loaded.y_train, {})
    assert {k: getattr(config, k) for k in recipe.TRAINING} == {k: expected[k] for k in recipe.TRAINING}
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

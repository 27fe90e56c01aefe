"""benchmarks/accuracy.py's bookkeeping (a rerun of some seeds merges with the stored runs of the
others) and shift_probe.py's training-set statistic."""

import accuracy  # benchmarks/ is on pytest's pythonpath (pyproject.toml)
import numpy as np
import pytest
import shift_probe


def entry(epochs: int, runs: dict[int, float], augment: str = "shift", shift: float = 0.1) -> dict:
    return {"dataset": "ACSF1", "epochs": epochs, "augment": augment, "shift": shift,
            "runs": [{"seed": seed, "test_accuracy": acc, "seconds": 10.0 * (seed + 1)} for seed, acc in runs.items()]}


def test_rerunning_one_seed_keeps_the_others_and_recomputes_the_summary():
    stored = accuracy.summarized(entry(1200, {0: 0.89, 1: 0.91}))
    got = accuracy.merged(stored, accuracy.summarized(entry(1200, {2: 0.80, 1: 0.85})), same_recipe=True)
    assert [(r["seed"], r["test_accuracy"]) for r in got["runs"]] == [(0, 0.89), (1, 0.85), (2, 0.80)]
    assert got["mean"] == pytest.approx(100 * (0.89 + 0.85 + 0.80) / 3)
    assert got["std"] == pytest.approx(100 * np.std([0.89, 0.85, 0.80]))
    assert got["seconds_per_run"] == pytest.approx(20.0)


@pytest.mark.parametrize("same_recipe, stored_epochs, stored_augment, stored_shift",
                         [(False, 1200, "shift", 0.1), (True, 600, "shift", 0.1), (True, 1200, "none", 0.1),
                          (True, 1200, "shift", 0.3)])
def test_runs_of_another_recipe_or_budget_are_replaced_not_merged(same_recipe, stored_epochs, stored_augment,
                                                                  stored_shift):
    stored = accuracy.summarized(entry(stored_epochs, {0: 0.89, 1: 0.91}, stored_augment, stored_shift))
    measured = accuracy.summarized(entry(1200, {2: 0.80}))
    assert accuracy.merged(stored, measured, same_recipe) == measured


def test_the_ensemble_averages_the_seeds_probabilities_and_old_entries_have_none():
    with_probabilities = {**entry(600, {}), "test_labels": [0, 1, 1], "runs": [
        {"seed": 0, "test_accuracy": 2 / 3, "seconds": 1.0, "test_probabilities": [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]},
        {"seed": 1, "test_accuracy": 2 / 3, "seconds": 1.0, "test_probabilities": [[0.4, 0.6], [0.1, 0.9], [0.3, 0.7]]}]}
    assert accuracy.summarized(with_probabilities)["ensemble"] == pytest.approx(100.0)  # each seed 2/3, their mean 3/3
    old = accuracy.summarized(entry(600, {0: 0.9}))
    assert old["ensemble"] is None and accuracy.verdict({**old, "published": (80.0, 1.0)}, "ensemble") == "n/a"


def test_class_mean_accuracy_is_the_leave_one_out_nearest_mean_and_sees_a_class_made_by_a_shift():
    rng = np.random.default_rng(0)
    steps = np.arange(32)
    y = np.repeat([0, 1], 20)
    centre = np.where(y == 0, 12, 15)[:, None]  # class 1 is class 0 three steps later
    x = (np.exp(-0.5 * ((steps - centre) / 2) ** 2) + 0.05 * rng.standard_normal((40, 32)))[..., None]
    for shift in (0, 3, -3):
        moved = np.stack([np.roll(np.pad(s, ((3, 3), (0, 0)), mode="edge"), shift, axis=0)[3:-3] for s in x])
        expected = np.mean([np.argmin([((moved[i] - x[(y == c) & (np.arange(40) != i)].mean(0)) ** 2).sum()
                                       for c in (0, 1)]) == y[i] for i in range(40)])
        assert shift_probe.class_mean_accuracy(x, y, shift) == pytest.approx(expected)
    assert shift_probe.class_mean_accuracy(x, y) == 1.0
    assert shift_probe.class_mean_accuracy(x, y, 3) == 0.5  # class 0 moved onto class 1; class 1 stays nearest its own

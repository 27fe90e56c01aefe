"""benchmarks/accuracy.py's bookkeeping: a rerun of some seeds merges with the stored runs of the others."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import accuracy  # noqa: E402  (a script beside suite.py, not a package)


def entry(epochs: int, runs: dict[int, float]) -> dict:
    return {"dataset": "ACSF1", "epochs": epochs,
            "runs": [{"seed": seed, "test_accuracy": acc, "seconds": 10.0 * (seed + 1)} for seed, acc in runs.items()]}


def test_rerunning_one_seed_keeps_the_others_and_recomputes_the_summary():
    stored = accuracy.summarized(entry(1200, {0: 0.89, 1: 0.91}))
    got = accuracy.merged(stored, accuracy.summarized(entry(1200, {2: 0.80, 1: 0.85})), same_recipe=True)
    assert [(r["seed"], r["test_accuracy"]) for r in got["runs"]] == [(0, 0.89), (1, 0.85), (2, 0.80)]
    assert got["mean"] == pytest.approx(100 * (0.89 + 0.85 + 0.80) / 3)
    assert got["std"] == pytest.approx(100 * np.std([0.89, 0.85, 0.80]))
    assert got["seconds_per_run"] == pytest.approx(20.0)


@pytest.mark.parametrize("same_recipe, stored_epochs", [(False, 1200), (True, 600)])
def test_runs_of_another_recipe_or_budget_are_replaced_not_merged(same_recipe, stored_epochs):
    stored = accuracy.summarized(entry(stored_epochs, {0: 0.89, 1: 0.91}))
    measured = accuracy.summarized(entry(1200, {2: 0.80}))
    assert accuracy.merged(stored, measured, same_recipe) == measured

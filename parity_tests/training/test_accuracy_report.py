"""benchmarks/accuracy.py's bookkeeping (a rerun of some seeds merges with the stored runs of the
others; what accuracy.json keeps of a run), proxies.py's reader of the UCR archive's files and
shift_probe.py's training-set statistic."""

import json

import accuracy  # benchmarks/ is on pytest's pythonpath (pyproject.toml)
import numpy as np
import proxies
import pytest
import shift_probe

from flax_resnet1d.training import data


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


def test_the_stored_curve_keeps_the_evaluated_epochs_to_four_digits_and_the_json_reads_back():
    history = [{"epoch": e, "step": 7 * e, "lr": 1e-3 / e, "train_loss": 1 / (3 * e), "train_accuracy": 0.5,
                "epoch_time_s": 0.3, "step_time_ms": 40.1234} for e in range(1, 9)]
    for h in history[3::4]:
        h.update(test_loss=2 / (3 * h["epoch"]), test_accuracy=0.123456)
    kept = accuracy.curve(history)
    assert kept == [{"epoch": e, "train_loss": float(f"{1 / (3 * e):.4g}"), "train_accuracy": 0.5,
                     "test_loss": float(f"{2 / (3 * e):.4g}"), "test_accuracy": 0.1235} for e in (4, 8)]
    assert accuracy.curve(kept) == kept  # stored entries are slimmed again on every write
    value = {"meta": {"seeds": [0, 1], "note": "a [bracket] and {brace}"}, "results": [{"history": kept}]}
    text = accuracy.dumped(value)
    assert json.loads(text) == value
    assert text.count("\n") == 13 and '"seeds": [ 0, 1 ]' in text  # one line per history row and short list


def test_an_archive_set_is_read_from_its_tsv_files(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "Pigs").mkdir()
    x = {split: 3 + 2 * rng.standard_normal((n, 50)) for split, n in (("TRAIN", 4), ("TEST", 6))}
    labels = {"TRAIN": [7, 2, 7, 2], "TEST": [2, 7, 7, 2, 2, 7]}
    for split in x:
        np.savetxt(tmp_path / "Pigs" / f"Pigs_{split}.tsv", np.column_stack([labels[split], x[split]]), delimiter="\t")
    got = proxies.unseen("Pigs", str(tmp_path))
    assert got.classes == ("2", "7") and got.y_train.tolist() == [1, 0, 1, 0] and got.y_test.tolist() == [0, 1, 1, 0, 0, 1]
    np.testing.assert_allclose(got.x_test[..., 0], data.znormalize(x["TEST"], axis=1), atol=1e-6)
    assert got.x_train.shape == (4, 50, 1) and got.x_train.dtype == np.float32
    np.savetxt(tmp_path / "Pigs" / "Pigs_TEST.tsv", np.column_stack([[2, 3, 7, 2, 2, 7], x["TEST"]]), delimiter="\t")
    with pytest.raises(data.DataError, match=r"Pigs_TEST.tsv: labels 3 are not among the training classes \(2, 7\)"):
        proxies.unseen("Pigs", str(tmp_path))
    with pytest.raises(data.DataError, match=r"Cows_TRAIN.tsv is missing"):
        proxies.unseen("Cows", str(tmp_path))

"""Predictions: of an MDNC checkpoint equal torch_ref's outputs for every architecture; of a run,
its training preprocessing and class names; ensembles average their members; batches do not
change the result."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest
import torch
from checkpoint_helpers import FAMILY_EXAMPLES, family_config, small_state_dict, write_checkpoint
from conftest import FAMILY_DIR, MDNC_DIR, load_mdnc_fixture

import torch_ref
from flax_resnet1d import Predictor
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.model import from_config
from flax_resnet1d.parity import relative_error
from flax_resnet1d.training import data, run_files

# One MDNC checkpoint per architecture, and an EncoderNet1d without fc (its feature map is a signal).
FIXTURES = ([pytest.param((FAMILY_DIR, name), id=f"{arch}-{name}") for arch, name in FAMILY_EXAMPLES.items()]
            + [pytest.param((MDNC_DIR, "plain_k5_c8_l1211_features"), id="EncoderNet1d-features")])


def torch_ref_outputs(config, state_dict, x: np.ndarray) -> np.ndarray:
    net = torch_ref.from_config(config).eval()
    net.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        return net(torch.from_numpy(x.astype(np.float32))).numpy()


@pytest.mark.parametrize("fixture", FIXTURES)
def test_predictions_of_an_mdnc_checkpoint_equal_torch_ref(fixture, capsys):
    case = load_mdnc_fixture(*fixture)
    path = fixture[0] / f"{case.name}.pt"
    x = case.arrays["x"]
    reference = torch_ref_outputs(case.config, case.state_dict, x)
    predictor = Predictor.load(path, config=case.config)
    outputs = predictor.outputs(x)
    if predictor.task == "classification":  # the probabilities, and the logits as a regression's values
        assert relative_error(outputs, torch.softmax(torch.from_numpy(reference), -1).numpy()) <= 1e-5
        assert (predictor.predict(x) == reference.argmax(1)).all()
        outputs = Predictor.load(path, config=case.config, task="regression").predict(x)
    error = relative_error(outputs, reference)
    with capsys.disabled():
        print(f"\npredict vs torch_ref, {case.arch} {case.name}: {error:.2e}")
    assert error <= 1e-5


@pytest.fixture(scope="module")
def run_predictor(classifier_run):
    return Predictor.load(classifier_run[0])


def test_a_run_predicts_with_its_own_preprocessing_and_class_names(classifier_run, run_predictor):
    run_dir, x_test = classifier_run
    config, state, _ = run_files.restore_run(run_dir)
    assert config.data.normalize == "channel" and config.data.classes == ("0", "1", "2") and config.data.length == 32
    dataset = data.load(config.data)  # training's own float64 preprocessing
    logits = np.asarray(jax.jit(from_config(config.model).apply)({"params": state.params}, dataset.x_test))
    expected = np.asarray(jax.nn.softmax(logits))
    assert relative_error(run_predictor.predict_proba(x_test), expected) <= 1e-5
    assert (run_predictor.predict(x_test) == np.array(["0", "1", "2"])[expected.argmax(1)]).all()
    # a run's layout is its data's unless given; NLC, and longer series, resampled to the run's length
    assert run_predictor.layout == "NCL"
    assert Predictor([dataclasses.replace(m, layout="NLC") for m in run_predictor.members]).layout == "NLC"
    nlc = Predictor(run_predictor.members, layout="NLC")
    assert relative_error(nlc.predict_proba(x_test.swapaxes(1, 2)), expected) <= 1e-5
    stretched = np.stack([data.resampled(s, 64) for s in x_test.swapaxes(1, 2)])
    resampled_back = np.stack([data.resampled(s, 32) for s in stretched])
    assert relative_error(nlc.predict_proba(stretched), nlc.predict_proba(resampled_back)) <= 1e-6


@pytest.mark.parametrize("normalize", ["series", "channel"])
def test_a_run_on_resampled_series_predicts_the_raw_series_as_it_evaluates_them(tmp_path, user_data, normalize):
    """--max-length: training resamples the normalized series, prediction the raw ones before
    normalizing; both are the same inputs (resampling commutes with either normalization)."""
    from flax_resnet1d import cli

    run_dir = str(tmp_path / "run")
    assert cli.main(["train", "--dataset", str(user_data / "train.npz"), "--test-data", str(user_data / "test.npz"),
                     "--normalize", normalize, "--max-length", "20", "--channel", "4", "--layers", "1", "1",
                     "--block", "plain", "--kernel-size", "3", "--epochs", "2", "--no-progress", "--out", run_dir]) == 0
    config, state, _ = run_files.restore_run(run_dir)
    dataset = data.load(config.data)
    assert config.data.max_length == 20 and config.data.length == 20 and dataset.x_test.shape[1] == 20
    logits = np.asarray(jax.jit(from_config(config.model).apply)({"params": state.params}, dataset.x_test))
    x_test = np.load(user_data / "test.npz")["x"]
    assert x_test.shape[2] == 32  # the user's series, longer than the run's
    assert relative_error(Predictor.load(run_dir).predict_proba(x_test), np.asarray(jax.nn.softmax(logits))) <= 1e-5


def test_a_run_from_before_class_names_predicts_class_indices(classifier_run, run_predictor, tmp_path):
    run_dir, x_test = classifier_run
    old = tmp_path / "old_run"
    shutil.copytree(run_dir, old)
    config = json.loads((old / run_files.CONFIG_FILE).read_text())
    for name in ("classes", "length", "mean", "std"):
        del config["data"][name]
    (old / run_files.CONFIG_FILE).write_text(json.dumps(config))
    before = Predictor.load(str(old))  # the statistics from the data set again
    assert before.classes is None and before.predict(x_test).dtype.kind == "i"
    assert relative_error(before.predict_proba(x_test), run_predictor.predict_proba(x_test)) <= 1e-6


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), -1).numpy()


def test_an_ensemble_averages_its_members_and_batches_do_not_matter(tmp_path):
    config = EncoderConfig(4, (1, 1), "bottleneck", 3, in_planes=2, out_length=3)
    state_dicts = [small_state_dict(seed=seed, config=config) for seed in range(3)]
    paths = [write_checkpoint(tmp_path / f"m{seed}.pt", sd, config) for seed, sd in enumerate(state_dicts)]
    x = np.random.default_rng(0).standard_normal((11, 2, 20)).astype(np.float32) * 5 + 2
    normalized = data.znormalize(x, axis=-1)
    members = [softmax(torch_ref_outputs(config, {k: torch.from_numpy(v) for k, v in sd.items()}, normalized))
               for sd in state_dicts]
    assert not np.allclose(members[0], members[1], atol=1e-3)  # members that differ: the mean is a real test
    ensemble = Predictor.load(*paths, normalize="series")
    mean = np.mean(members, axis=0)
    assert relative_error(ensemble.predict_proba(x), mean) <= 1e-5
    assert relative_error(ensemble.predict_proba(x, batch_size=4), mean) <= 1e-5  # a padded last batch
    assert (ensemble.predict(x) == mean.argmax(1)).all()


def test_an_ensemble_of_signal_networks_averages_their_signals(tmp_path):
    config = family_config(FAMILY_EXAMPLES["DecoderNet1d"])
    state_dicts = [small_state_dict(seed=seed, config=config) for seed in range(2)]
    paths = [write_checkpoint(tmp_path / f"m{seed}.pt", sd, config) for seed, sd in enumerate(state_dicts)]
    x = np.random.default_rng(1).standard_normal((5, config.in_length)).astype(np.float32)
    expected = np.mean([torch_ref_outputs(config, {k: torch.from_numpy(v) for k, v in sd.items()}, x)
                        for sd in state_dicts], axis=0)
    assert relative_error(Predictor.load(*paths, config=config).predict(x), expected) <= 1e-5

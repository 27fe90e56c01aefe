"""Every task through ``loop.fit``: the task the targets imply, metrics in the targets' units,
resume, noise and shifts drawn from (seed, epoch) with a signal target moving with its input,
BatchNorm's running statistics in the train state, --freeze body, and the regression sets."""

from __future__ import annotations

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict
from train_helpers import assert_same_state, without_timing

import torch_ref
from flax_resnet1d import errors, port
from flax_resnet1d.config import FAMILY_PRESETS, AEConfig, BlockPlainConfig, DecoderConfig, EncoderConfig
from flax_resnet1d.inference.predictor import Predictor
from flax_resnet1d.parity import relative_error, to_flax_input, to_mdnc_output
from flax_resnet1d.training import batching, data, loop, run_config, run_files

N_TRAIN, N_TEST, LENGTH = 40, 16, 32


def arrays(kind: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """x (N, 2, L) (a DecoderNet1d's: (N, 5)) and the targets of ``kind``: sinusoids whose
    frequency and amplitude are the regression targets (in units far from 0 and 1) and whose
    clean series are the signal targets."""
    rng = np.random.default_rng(seed)
    frequency, amplitude = rng.uniform(1, 4, (n, 1)), rng.uniform(0.5, 2, (n, 1))
    t = np.arange(LENGTH) / LENGTH
    clean = amplitude[:, :, None] * np.sin(2 * np.pi * frequency[:, :, None] * t + np.arange(2)[None, :, None])
    noisy = clean + 0.3 * rng.standard_normal(clean.shape)
    if kind == "regress":
        return {"x": noisy, "y": np.concatenate([100 + 30 * frequency, -5 * amplitude], axis=1)}
    if kind == "decode":
        return {"x": np.concatenate([frequency, amplitude, rng.standard_normal((n, 3))], axis=1), "y": clean}
    return {"x": noisy, "y": clean} if kind == "denoise" else {"x": clean}


def load(tmp_path, kind: str, **options) -> data.Dataset:
    np.savez(tmp_path / f"{kind}-train.npz", **arrays(kind, N_TRAIN, 0))
    np.savez(tmp_path / f"{kind}-test.npz", **arrays(kind, N_TEST, 1))
    spec = data.DataSpec(str(tmp_path / f"{kind}-train.npz"), test=str(tmp_path / f"{kind}-test.npz"),
                         vector=kind == "decode", **options)
    return data.load(spec), spec


MODELS = {  # tiny networks; the data determines their channels and outputs
    "regress": EncoderConfig(4, (1, 1), "plain", 3, in_planes=2, out_length=2),
    "denoise": AEConfig(4, (1, 1), "plain", 3, in_planes=2, out_planes=2),
    "reconstruct": AEConfig(4, (1, 1), "plain", 3, in_planes=2, out_planes=2),
    "decode": DecoderConfig(4, (1, 1), LENGTH, "plain", 3, in_length=5, out_planes=2),
    "batchnorm": BlockPlainConfig(2, 2, normalizer="batch", activator="relu"),
}
SETTINGS = {"regress": {}, "denoise": {"loss": "l1", "augment": "shift"}, "reconstruct": {"noise": 0.5},
            "decode": {}, "batchnorm": {"noise": 0.2, "augment": "shift"}}


def config_of(case: str, spec: data.DataSpec, dataset: data.Dataset, **overrides) -> run_config.TrainConfig:
    settings = {"epochs": 4, "batch_size": 16, "lr": 3e-3, "ckpt_every": 1, "keep": 4,
                "loss": "cross_entropy" if dataset.task == "classify" else "mse", **SETTINGS[case], **overrides}
    return run_config.TrainConfig(MODELS[case], data.with_digest(spec, dataset), **settings)


@pytest.mark.parametrize("y, vector, task", [
    (np.array([0, 1, 2]), False, "classify"),
    (np.array([0.0, 1.0, 1.0]), False, "classify"),  # whole-number floats: labels
    (np.array([0.5, 1.0, 2.0]), False, "regress"),
    (np.zeros((3, 2)), False, "regress"),
    (np.zeros((3, 2, 8)), False, "signal"),
    (None, False, "signal"),  # no y: an auto-encoder's
    (np.zeros((3, 8)), True, "signal"),  # a DecoderNet1d's one-channel target
])
def test_the_targets_imply_the_task(y, vector, task):
    assert data.infer_task(y, vector) == task


CASES = ["regress", "denoise", "decode", "batchnorm"]  # reconstruct: as denoise, its target the input


@pytest.fixture(scope="module", params=CASES)
def run(request, tmp_path_factory):
    """An uninterrupted 4-epoch run of each case, checkpointed every epoch."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    dataset, spec = load(tmp_path, "denoise" if request.param == "batchnorm" else request.param)
    config = config_of(request.param, spec, dataset)
    result = loop.fit(config, dataset, str(tmp_path / "run"), progress=False)
    return request.param, config, dataset, str(tmp_path / "run"), result


def test_metrics_are_in_the_targets_units(run):
    case, config, dataset, _, result = run
    assert dataset.task == config.task == ("regress" if case == "regress" else "signal")
    test = loop.evaluate_splits(config, result.state, {"test": (dataset.x_test, dataset.y_test)},
                                target_scale=dataset.target_scale)["test"]
    predicted, target = dataset.target_scale.units(test.outputs), dataset.target_scale.units(dataset.y_test)
    if case in ("regress", "denoise", "decode"):  # standardized with the training targets' statistics
        raw = arrays(case, N_TEST, 1)["y"]
        np.testing.assert_allclose(target, raw if raw.ndim == 2 else np.swapaxes(raw, 1, 2), rtol=1e-5, atol=1e-5)
    last = result.history[-1]
    assert relative_error(last["test_rmse"], np.sqrt(np.mean((predicted - target) ** 2))) < 1e-5
    if case == "regress":
        assert relative_error(last["test_mae"], np.mean(np.abs(predicted - target))) < 1e-5
        assert relative_error(last["test_r2"], loop.r2_score(target, predicted)) < 1e-9
        assert np.all(np.abs(dataset.target_scale.mean) > 1)  # the units differ from the standardized ones
    else:
        snr = 10 * np.log10(np.sum(target ** 2) / np.sum((predicted - target) ** 2))
        assert abs(last["test_snr_db"] - snr) < 1e-4
    assert last["train_loss"] < result.history[0]["train_loss"]  # it learns
    with open(os.path.join(run[3], run_files.CURVE_FILE), "rb") as f:  # loss and the task's metric per epoch
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_run_predicts_in_the_targets_units(run):
    """Predictor on the user's raw test inputs = the run's evaluation, back in the targets' units
    (signals in the input's layout, MDNC's (N, C, L)); BatchNorm in eval mode."""
    case, config, dataset, run_dir, result = run
    test = loop.evaluate_splits(config, result.state, {"test": (dataset.x_test, dataset.y_test)},
                                target_scale=dataset.target_scale)["test"]
    expected = dataset.target_scale.units(test.outputs)
    raw = arrays("denoise" if case == "batchnorm" else case, N_TEST, 1)["x"].astype(np.float32)
    predicted = Predictor.load(run_dir).predict(raw)
    assert relative_error(predicted, expected if expected.ndim == 2 else np.swapaxes(expected, 1, 2)) < 1e-5


def test_resume_replays_the_uninterrupted_run(run, tmp_path):
    case, config, dataset, run_dir, result = run
    resumed_dir = str(tmp_path / "resumed")
    shutil.copytree(run_dir, resumed_dir)
    for epoch in (3, 4):  # as if killed after epoch 2's checkpoint
        shutil.rmtree(os.path.join(resumed_dir, run_files.CHECKPOINT_DIR, str(epoch)))
    resumed = loop.fit(config, dataset, resumed_dir, resume=True, progress=False)
    assert resumed.resumed_from == 2
    assert without_timing(resumed.history) == without_timing(result.history)
    assert_same_state(resumed.state, result.state)
    if case == "batchnorm":
        stats = [jax.device_get(r.state.batch_stats) for r in (resumed, result)]
        assert jax.tree.all(jax.tree.map(np.array_equal, *stats))


@pytest.mark.parametrize("run", ["batchnorm"], indirect=True)
def test_batch_norm_statistics_train_evaluate_checkpoint_and_export(run):
    _, config, dataset, run_dir, result = run
    stats = flatten_dict(jax.device_get(result.state.batch_stats))
    counts = [v for k, v in stats.items() if k[-1] == "num_batches_tracked"]
    assert counts and all(int(c) == int(result.state.step) == 4 * 3 for c in counts)  # one per train step
    assert all(np.abs(v).max() > 0 for k, v in stats.items() if k[-1] == "mean")  # updated from their zeros
    _, restored, _ = run_files.restore_run(run_dir)
    assert jax.tree.all(jax.tree.map(np.array_equal, jax.device_get(restored.batch_stats),
                                     jax.device_get(result.state.batch_stats)))
    state_dict = port.flax_to_torch(jax.device_get(restored.variables()), config.model)
    assert any(k.endswith("running_var") for k in state_dict)
    net = torch_ref.from_config(config.model).eval()  # eval mode: the running statistics
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, strict=True)
    with torch.no_grad():
        expected = to_mdnc_output(net(torch.from_numpy(to_flax_input(dataset.x_test).copy())).numpy())
    test = loop.evaluate_splits(config, restored, {"test": (dataset.x_test, dataset.y_test)})["test"]
    assert relative_error(test.outputs, expected) < 1e-5


def test_noise_and_shifts_come_from_seed_and_epoch_and_move_a_signal_target(tmp_path):
    dataset, spec = load(tmp_path, "denoise")
    config = config_of("denoise", spec, dataset, noise=0.5)
    batch = next(batching.batches(dataset.x_train, dataset.y_train, np.arange(N_TRAIN), 16))
    full = batching.augmentation(config, 1)(batch, slice(None))
    again = batching.augmentation(config, 1)(batch, slice(None))
    share = batching.augmentation(config, 1)({k: v[8:] for k, v in batch.items()}, slice(8, 16))
    for key in ("x", "y"):
        np.testing.assert_array_equal(full[key], again[key])
        np.testing.assert_array_equal(full[key][8:], share[key])  # a process's rows: the same draws
    moves = [next(m for m in range(-3, 4) if np.array_equal(data.shifted(batch["y"][i:i + 1], np.array([m])),
                                                            full["y"][i:i + 1])) for i in range(16)]
    assert any(moves)  # the targets moved ...
    noise = full["x"] - data.shifted(batch["x"], np.array(moves))  # ... as their inputs did, under the noise
    assert 0.4 < noise.std() < 0.6 and not np.array_equal(full["x"], batching.augmentation(config, 2)(batch,
                                                                                                     slice(None))["x"])
    off = dataclasses.replace(config, augment="none", noise=0.0)
    assert batching.augmentation(off, 1) is None


@pytest.mark.parametrize("run", ["regress"], indirect=True)
def test_freeze_body_trains_only_the_head_from_epoch_0(run, tmp_path):
    _, config, dataset, run_dir, first = run
    frozen = dataclasses.replace(config, epochs=1, freeze="body", init=run_dir, init_sha256=run_files.read_init(run_dir)[2])
    result = loop.fit(frozen, dataset, str(tmp_path / "frozen"), progress=False)
    before, after = flatten_dict(jax.device_get(first.state.params)), flatten_dict(jax.device_get(result.state.params))
    assert {k for k in before if not np.array_equal(before[k], after[k])} == {("fc", "kernel"), ("fc", "bias")}
    initial = result.history[0]  # epoch 0: the initial weights' metrics, recorded first
    assert initial["epoch"] == 0 and initial["step"] == 0 and run_files.read_metrics(str(tmp_path / "frozen"))[0] == initial
    evaluated = loop.evaluate_splits(config, first.state, {"train": (dataset.x_train, dataset.y_train)},
                                     target_scale=dataset.target_scale)["train"]
    assert initial["train_loss"] == evaluated.loss and initial["train_rmse"] == evaluated.metrics["rmse"]


def test_regression_archive_sets(tmp_path):
    for name in data.REGRESSION_DATASETS:
        ds = data.load_archive(name)
        assert ds.task == "regress" and ds.y_train.shape == (len(ds.x_train), 1) and ds.y_train.dtype == np.float32
        np.testing.assert_allclose(ds.y_train.mean(), 0, atol=1e-5)  # standardized with the training targets
        raw = data.load_archive(name, normalize="none")
        np.testing.assert_allclose(ds.target_scale.units(ds.y_test), raw.y_test, rtol=1e-5, atol=1e-6)
    ts = tmp_path / "tiny_TRAIN.ts"  # any @targetlabel file, multivariate, reads the same way
    ts.write_text("@problemName tiny\n@timestamps false\n@univariate false\n@equalLength true\n@seriesLength 3\n"
                  "@targetlabel true\n@data\n1,2,3:4,5,6:0.25\n3,2,1:6,5,4:-1.5\n")
    series, y, classes = data.read_ts("tiny", str(ts))
    assert classes == () and y.tolist() == [0.25, -1.5] and series[1].tolist() == [[3, 6], [2, 5], [1, 4]]


@pytest.mark.parametrize("preset", sorted(FAMILY_PRESETS))
def test_every_family_preset_is_sized_to_the_data_it_trains_on(preset):
    arch = FAMILY_PRESETS[preset][0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16) if arch == "DecoderNet1d" else (4, 256, 2)).astype(np.float32)
    y = {"EncoderNet1d": np.arange(4, dtype=np.int32) % 3, "DecoderNet1d": rng.standard_normal((4, 100, 2))}.get(
        arch, rng.standard_normal((4, 256, 3))).astype(np.float32 if arch != "EncoderNet1d" else np.int32)
    task = "classify" if arch == "EncoderNet1d" else "signal"
    dataset = data.Dataset("d", x, y, x, y, ("a", "b", "c") if task == "classify" else (), task=task)
    if preset == "unet16":  # MDNC builds it and fails at its first forward: refused up front
        with pytest.raises(errors.UsageError, match="MDNC builds this network and fails at its first forward"):
            run_config.model_config({"preset": preset}, dataset)
        return
    model = run_config.model_config({"preset": preset}, dataset)
    assert model.arch == arch and model.channel == 64
    config = run_config.TrainConfig(model, data.DataSpec("d.npz", task=task, vector=arch == "DecoderNet1d"),
                                    loss="cross_entropy" if task == "classify" else "mse", label_smoothing=0.0)
    loop.check_model_takes(config, loop.model_inputs(dataset, model))  # inputs, lengths and targets fit

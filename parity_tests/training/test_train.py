"""Training: steps compiled once, determinism, schedules, bf16, padding masks, checkpoint
fallback and resume (in process; the SIGKILL test is test_train_resume.py)."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_helpers import assert_same_state, corrupt_files, synthetic_dataset, tiny_config, without_timing

from flax_resnet1d import errors
from flax_resnet1d.io.manifest import Manifest
from flax_resnet1d.training import batching, data, loop, run_config, run_files, steps


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset()


def _counting(fn, counts):
    @functools.wraps(fn)
    def traced(*args, **kwargs):
        counts[fn.__name__] = counts.get(fn.__name__, 0) + 1  # runs only while tracing
        return fn(*args, **kwargs)

    return traced


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted 6-epoch run (checkpoints at epochs 2, 4, 6; the last 2 kept), counting traces."""
    run_dir, counts = str(tmp_path_factory.mktemp("reference")), {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(steps, "train_step", _counting(steps.train_step, counts))
        patch.setattr(steps, "eval_step", _counting(steps.eval_step, counts))
        result = loop.fit(tiny_config(dataset), dataset, run_dir, progress=False)
    return run_dir, result, counts


def test_steps_are_traced_once(reference):
    _, result, counts = reference
    assert int(result.state.step) == 6 * 3  # 40 rows in 16-row batches: 3 steps, one partial, per epoch
    assert counts == {"train_step": 1, "eval_step": 1}  # over 18 train steps and 12 eval batches


def test_same_seed_same_run_other_seed_other_run(dataset, reference, tmp_path):
    _, ref, _ = reference
    again = loop.fit(tiny_config(dataset), dataset, str(tmp_path / "again"), progress=False)
    assert without_timing(again.history) == without_timing(ref.history)
    assert_same_state(again.state, ref.state)
    other = loop.fit(tiny_config(dataset, seed=1), dataset, str(tmp_path / "other"), progress=False)
    assert without_timing(other.history) != without_timing(ref.history)


def test_run_directory_contents(reference):
    run_dir, ref, _ = reference
    assert [h["epoch"] for h in ref.history] == [1, 2, 3, 4, 5, 6]
    assert run_files.read_metrics(run_dir) == ref.history
    assert sorted(os.listdir(os.path.join(run_dir, run_files.CHECKPOINT_DIR))) == ["4", "6"]  # every 2, keep 2
    expected = tiny_config(synthetic_dataset())
    recorded = run_files.load_config(run_dir)
    assert recorded == dataclasses.replace(expected, data=data.with_digest(expected.data, synthetic_dataset()))
    with open(os.path.join(run_dir, run_files.CURVE_FILE), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    first, last = ref.history[0], ref.history[-1]
    assert set(first) == {"epoch", "step", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                          *run_files.TIMING_KEYS}
    assert last["train_loss"] < first["train_loss"]


@pytest.mark.parametrize("damage", ["array files", "whole checkpoint"])
def test_corrupt_newest_checkpoint_falls_back_and_resumes_exactly(damage, dataset, reference, tmp_path, caplog):
    ref_dir, ref, _ = reference
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_dir, run_dir)
    newest = os.path.join(run_dir, run_files.CHECKPOINT_DIR, "6")
    assert corrupt_files(os.path.join(newest, "state") if damage == "array files" else newest) > 0
    # What a kill during a save leaves behind: the save recorded as begun, and Orbax's unfinished
    # temporary directory, never restored.
    Manifest.read(run_dir).begin(f"{run_files.CHECKPOINT_DIR}/5")
    os.makedirs(os.path.join(run_dir, run_files.CHECKPOINT_DIR, "5.orbax-checkpoint-tmp", "state"))

    with caplog.at_level(logging.WARNING, logger="flax_resnet1d.training"):
        resumed = loop.fit(tiny_config(dataset), dataset, run_dir, resume=True, progress=False)
    assert resumed.resumed_from == 4
    assert "checkpoint of epoch 6" in caplog.text and "unreadable" in caplog.text
    assert len(os.listdir(os.path.join(run_dir, run_files.CORRUPT_DIR))) == 1  # moved aside, not deleted
    assert without_timing(resumed.history) == without_timing(ref.history)
    assert without_timing(run_files.read_metrics(run_dir)) == without_timing(ref.history)
    assert_same_state(resumed.state, ref.state)


def test_no_readable_checkpoint_is_an_error_and_moves_nothing(dataset, reference, tmp_path):
    ref_dir, _, _ = reference
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_dir, run_dir)
    for epoch in ("4", "6"):
        corrupt_files(os.path.join(run_dir, run_files.CHECKPOINT_DIR, epoch, "state"))
    with pytest.raises(errors.TrainingError, match="no checkpoint in .* is readable"):
        loop.fit(tiny_config(dataset), dataset, run_dir, resume=True, progress=False)
    assert sorted(os.listdir(os.path.join(run_dir, run_files.CHECKPOINT_DIR))) == ["4", "6"]


def test_resume_of_a_finished_run_trains_nothing(dataset, reference, tmp_path):
    ref_dir, ref, _ = reference
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_dir, run_dir)
    resumed = loop.fit(tiny_config(dataset), dataset, run_dir, resume=True, progress=False)
    assert resumed.resumed_from == 6 and resumed.compile_seconds == 0
    assert without_timing(resumed.history) == without_timing(ref.history)
    assert_same_state(resumed.state, ref.state)


def test_fit_refuses_to_mix_runs(dataset, reference, tmp_path):
    ref_dir, _, _ = reference
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_dir, run_dir)
    with pytest.raises(errors.TrainingError, match="already holds a run"):
        loop.fit(tiny_config(dataset), dataset, run_dir, progress=False)
    with pytest.raises(errors.TrainingError, match="another configuration"):
        loop.fit(tiny_config(dataset, lr=0.1), dataset, run_dir, resume=True, progress=False)


@pytest.mark.parametrize("schedule, warmup, expected", [
    ("constant", 0, {0: 1.0, 50: 1.0, 99: 1.0}),
    ("cosine", 0, {0: 1.0, 50: 0.5, 100: 0.0}),
    ("warmup", 2, {0: 0.0, 10: 0.5, 20: 1.0, 99: 1.0}),
    ("warmup_cosine", 2, {0: 0.0, 10: 0.5, 20: 1.0, 60: 0.5, 100: 0.0}),
])
def test_schedules(schedule, warmup, expected, dataset):
    config = tiny_config(dataset, epochs=10, lr=2.0, schedule=schedule, warmup_epochs=warmup)
    lr = steps.make_schedule(config, steps_per_epoch=10)
    assert {step: float(lr(step)) / 2.0 for step in expected} == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("bad, message", [
    (dict(optimizer="rmsprop"), "unknown optimizer"),
    (dict(schedule="step"), "unknown schedule"),
    (dict(schedule="warmup_cosine", warmup_epochs=0), "warmup"),
    (dict(dtype="float16"), "unknown dtype"),
    (dict(epochs=0), "epochs must be at least 1"),
    (dict(lr=-1.0), "lr must be positive"),
])
def test_bad_training_settings(bad, message, dataset):
    with pytest.raises(errors.TrainingError, match=message):
        tiny_config(dataset, **bad)


def _equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in its equations' parameters."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    yield from _equations(sub)


def test_bfloat16_computes_in_bf16_with_float32_params(dataset, tmp_path):
    config = tiny_config(dataset, epochs=1, dtype="bfloat16")
    result = loop.fit(config, dataset, str(tmp_path), progress=False)
    assert {leaf.dtype for leaf in jax.tree.leaves(result.state.params)} == {jnp.dtype(jnp.float32)}
    batch = next(batching.batches(dataset.x_train, dataset.y_train, np.arange(16), 16))
    # Convolutions, dense, and their VJPs take bf16 operands (conv1d's matmuls accumulate in float32).
    products = [(e.primitive.name, [v.aval.dtype for v in e.invars])
                for e in _equations(jax.make_jaxpr(steps.train_step)(result.state, batch).jaxpr)
                if e.primitive.name in ("dot_general", "conv_general_dilated")]
    assert products and all(dtypes == [jnp.bfloat16] * 2 for _, dtypes in products), products
    assert np.isfinite(result.history[0]["train_loss"])
    # The same weights applied in float32 (as exported to PyTorch) agree to bf16 rounding.
    x = jnp.asarray(dataset.x_test)
    bf16 = result.state.apply_fn({"params": result.state.params}, x)
    f32 = steps.float32_state(config, result.state).apply_fn({"params": result.state.params}, x)
    assert bf16.dtype == jnp.bfloat16 and f32.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(bf16.astype(jnp.float32) - f32)) / jnp.max(jnp.abs(f32))) < 0.05


def test_padded_rows_do_not_count(dataset):
    """A partial batch's padding (mask 0) changes neither the loss nor the metrics."""
    n = len(dataset.y_train)
    batch_list = list(batching.batches(dataset.x_train, dataset.y_train, np.arange(n), 16))
    assert [b["x"].shape[0] for b in batch_list] == [16] * 3 and sum(b["mask"].sum() for b in batch_list) == n
    last = batch_list[-1]
    real = int(last["mask"].sum())
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((16, dataset.num_classes)))
    masked = steps.cross_entropy(logits, jnp.asarray(last["y"]), jnp.asarray(last["mask"]))
    plain = steps.cross_entropy(logits[:real], jnp.asarray(last["y"][:real]), jnp.ones(real))
    assert float(masked) == pytest.approx(float(plain), rel=1e-6)


def test_epoch_order_depends_only_on_seed_and_epoch():
    a, b = batching.epoch_order(0, 3, 50), batching.epoch_order(0, 3, 50)
    np.testing.assert_array_equal(a, b)
    assert sorted(a) == list(range(50))
    assert not np.array_equal(a, batching.epoch_order(0, 4, 50))
    assert not np.array_equal(a, batching.epoch_order(1, 3, 50))


def test_config_round_trips_through_json(dataset):
    config = tiny_config(dataset, optimizer="adamw", schedule="warmup", warmup_epochs=1, dtype="bfloat16")
    assert run_config.TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config

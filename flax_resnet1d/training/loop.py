"""The training loop: ``fit`` (new or resumed run) and evaluation, in the style of Flax's ResNet
example: pure steps jit-compiled once at the edge, plain Python around them.

Determinism and exact resume: the only randomness is the parameter init (``seed``), the data
order and the shifts, drawn from ``(seed, epoch)``; a checkpoint needs only the state and the
epoch. Several processes (``jax.distributed``, see ``distributed``) share one mesh."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from ..config import EncoderConfig
from ..errors import TrainingError
from . import data, distributed
from .batching import augmentation, epoch_order, sharded_batches
from .data import Dataset
from .run_config import TrainConfig
from .run_files import (CONFIG_FILE, CURVE_FILE, METRICS_FILE, append_text, atomic_write_text, checkpoint_manager,
                        load_config, plot_learning_curve, restore_checkpoint, save_checkpoint, save_config)
from .steps import (TrainState, check_batch_size, create_state, data_parallel_mesh, jit_eval_step, jit_train_step,
                    make_schedule, replicate)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    count: int
    logits: np.ndarray  # (N, num_classes) float32


def _epoch_means(sums: list[dict]) -> tuple[float, float, int]:
    totals = {k: float(np.sum([np.float64(s[k]) for s in sums])) for k in ("loss", "correct", "count")}
    return totals["loss"] / totals["count"], totals["correct"] / totals["count"], int(totals["count"])


def evaluate(eval_fn: Callable, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int,
             mesh: Mesh) -> Evaluation:
    """Loss, accuracy and logits of ``state`` on all of (x, y), in padded fixed-size batches."""
    results = [eval_fn(state, b) for b in sharded_batches(x, y, np.arange(len(y)), batch_size, mesh)]
    sums, logits = zip(*jax.device_get(results))
    loss, accuracy, count = _epoch_means(list(sums))
    return Evaluation(loss, accuracy, count, np.concatenate(logits)[:len(y)])


def evaluate_splits(config: TrainConfig, state: TrainState, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                    mesh: Mesh | None = None) -> dict[str, Evaluation]:
    """``evaluate`` on each named (x, y) split, with the run's batch size, over all devices."""
    mesh = mesh if mesh is not None else data_parallel_mesh()
    check_batch_size(config.batch_size, mesh)
    eval_fn, state = jit_eval_step(mesh), replicate(state, mesh)
    for split, (x, y) in splits.items():
        config.model.check_input_shape((len(x), *x.shape[1:]), channel_axis=2)
    return {split: evaluate(eval_fn, state, x, y, config.batch_size, mesh) for split, (x, y) in splits.items()}


def model_inputs(dataset: Dataset, model: EncoderConfig) -> Dataset:
    """The data set zero-padded (at the end) to the network's minimum input length, if shorter."""
    return dataset.pad_to(model.min_length() or 0)


def train_epoch(train_fn: Callable, state: TrainState, dataset: Dataset, config: TrainConfig, epoch: int,
                mesh: Mesh) -> tuple[TrainState, float, float]:
    """One pass over the training set in the order of (seed, epoch): (state, mean loss, accuracy)."""
    sums = []
    order = epoch_order(config.seed, epoch, len(dataset.y_train))
    augment = augmentation(config, epoch)
    for batch in sharded_batches(dataset.x_train, dataset.y_train, order, config.batch_size, mesh, augment):
        state, batch_sums = train_fn(state, batch)
        sums.append(batch_sums)  # stays on device: no sync per step
    loss, accuracy, _ = _epoch_means(jax.device_get(sums))
    return state, loss, accuracy


@dataclasses.dataclass
class FitResult:
    state: TrainState
    history: list[dict]
    compile_seconds: float
    resumed_from: int | None  # epoch of the restored checkpoint


def fit(config: TrainConfig, dataset: Dataset, run_dir: str, *, resume: bool = False, mesh: Mesh | None = None,
        progress: bool = True) -> FitResult:
    """Train ``config`` on ``dataset``, writing metrics, checkpoints and the plot into ``run_dir``.

    With ``resume``, continue from the newest readable checkpoint: the result is bit-identical
    to an uninterrupted run, and ``metrics.jsonl`` is rewritten to the restored history first.
    """
    from tqdm.auto import tqdm

    mesh = mesh if mesh is not None else data_parallel_mesh()
    stored = load_config(run_dir) if resume and os.path.isfile(os.path.join(run_dir, CONFIG_FILE)) else None
    if stored is not None:  # DataError if the data changed since the run started (runs before digests: unchecked)
        data.with_digest(stored.data, dataset)
    config = dataclasses.replace(config, data=data.with_digest(config.data, dataset))  # recorded in config.json
    dataset = model_inputs(dataset, config.model)
    distributed.check_same_setup(config.to_dict())
    check_batch_size(config.batch_size, mesh)
    if (dataset.in_planes, dataset.num_classes) != (config.model.in_planes, config.model.out_length):
        raise TrainingError(f"data set {dataset.name} has {dataset.in_planes} channels and {dataset.num_classes} "
                            f"classes but the model takes {config.model.in_planes} and outputs {config.model.out_length}")
    try:
        config.model.feature_length(dataset.length)  # a clear error before tracing
    except ValueError as e:
        raise TrainingError(f"data set {dataset.name}: {e}") from None
    writer = jax.process_index() == 0
    manager = checkpoint_manager(run_dir, config.keep)
    if not resume and manager.all_steps():
        raise TrainingError(f"{run_dir} already holds checkpoints of a run; resume it or use another directory")
    if stored is not None and dataclasses.replace(stored, data=dataclasses.replace(stored.data, digest=config.data.digest)
                                                  ) != config:
        raise TrainingError(f"cannot resume {run_dir} with another configuration than its {CONFIG_FILE}")
    steps_per_epoch = math.ceil(len(dataset.y_train) / config.batch_size)
    state = create_state(config, dataset.in_planes, dataset.length, steps_per_epoch)
    if writer:
        save_config(run_dir, config)
    history, start_epoch, resumed_from = [], 0, None
    if resume:
        restored = restore_checkpoint(manager, run_dir, replicate(state, mesh), quarantine=True)
        if restored is None:
            log.warning("warning: %s has no readable checkpoint; starting from epoch 1", run_dir)
        else:
            state, meta = restored
            history, start_epoch = meta["history"], meta["epoch"]
            resumed_from = start_epoch
    if writer:  # metrics.jsonl = the restored history (drops lines of epochs after the checkpoint)
        atomic_write_text(os.path.join(run_dir, METRICS_FILE), "".join(json.dumps(h) + "\n" for h in history))

    state, compile_seconds = replicate(state, mesh), 0.0
    if start_epoch < config.epochs:  # compiled ahead of time, once: other shapes would raise, not retrace
        example = next(sharded_batches(dataset.x_train, dataset.y_train, np.arange(1), config.batch_size, mesh))
        start = time.perf_counter()
        train_fn = jit_train_step(mesh, config.label_smoothing).lower(state, example).compile()
        eval_fn = jit_eval_step(mesh).lower(state, example).compile()
        compile_seconds = time.perf_counter() - start
    schedule = make_schedule(config, steps_per_epoch)
    bar = tqdm(total=config.epochs, initial=start_epoch, desc=dataset.name, unit="epoch",
               disable=None if progress and writer else True)  # None: only on a terminal
    shown_test = None
    for epoch in range(start_epoch + 1, config.epochs + 1):
        start = time.perf_counter()
        state, train_loss, train_accuracy = train_epoch(train_fn, state, dataset, config, epoch, mesh)
        train_seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise TrainingError(f"the training loss is {train_loss} in epoch {epoch}: the run diverged (lr "
                                f"{config.lr}, {config.optimizer}); lower --lr or use a warm-up schedule")
        record = {"epoch": epoch, "step": epoch * steps_per_epoch, "lr": float(schedule(epoch * steps_per_epoch - 1)),
                  "train_loss": train_loss, "train_accuracy": train_accuracy}
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            test = evaluate(eval_fn, state, dataset.x_test, dataset.y_test, config.batch_size, mesh)
            record.update(test_loss=test.loss, test_accuracy=test.accuracy)
        record.update(epoch_time_s=round(time.perf_counter() - start, 4),
                      step_time_ms=round(1e3 * train_seconds / steps_per_epoch, 3))
        history.append(record)
        if writer:
            append_text(os.path.join(run_dir, METRICS_FILE), json.dumps(record) + "\n")
        if epoch % config.ckpt_every == 0 or epoch == config.epochs:
            save_checkpoint(manager, epoch, state, history)
        shown_test = record.get("test_accuracy", shown_test)  # the last evaluation's
        bar.set_postfix(loss=f"{train_loss:.4f}", train_acc=f"{train_accuracy:.3f}",
                        **({} if shown_test is None else {"test_acc": f"{shown_test:.3f}"}))
        bar.update(1)
    bar.close()
    manager.close()
    if writer and history:
        plot_learning_curve(history, os.path.join(run_dir, CURVE_FILE), f"{dataset.name}: {config.model.block} "
                            f"{list(config.model.layers)} x{config.model.channel}, {config.optimizer} lr {config.lr}")
    return FitResult(state, history, compile_seconds, resumed_from)


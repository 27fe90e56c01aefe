"""The training loop: ``fit`` (a new or resumed run) and ``evaluate``, in the style of Flax's
ResNet example: the pure steps of ``steps``, compiled once at the edge, plain Python around them.

A resumed run replays the uninterrupted one exactly: the only randomness is the parameter init
and each epoch's data order and shifts, drawn from ``(seed, epoch)``, so a checkpoint needs only
the state and the epoch. With several processes (``distributed``) all train over one mesh and
take part in each checkpoint; process 0 alone writes the run's other files."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from .. import interrupts
from ..errors import TrainingError
from ..io.manifest import Manifest
from . import data, distributed
from .batching import augmentation, epoch_order, sharded_batches
from .data import Dataset, TargetScale
from .run_config import TrainConfig
from .run_files import (CONFIG_FILE, append_metrics, checkpoint_dir, checkpoint_manager, claim, load_config,
                        plot_learning_curve, read_init, restore_checkpoint, retire, save_checkpoint, save_config,
                        write_metrics)
from .steps import (Task, TrainState, check_batch_size, check_memory, create_state, data_parallel_mesh,
                    jit_eval_step, jit_train_step, make_schedule, replicate)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    loss: float
    metrics: dict[str, float]  # the task's (Task.metrics; regress adds r2)
    count: int
    outputs: np.ndarray  # float32: (N, num_classes) logits, (N, K) or (N, L', C') standardized predictions

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]

    @property
    def logits(self) -> np.ndarray:
        return self.outputs


def evaluate(eval_fn: Callable, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int,
             mesh: Mesh, task: Task = Task()) -> Evaluation:
    """Loss, ``task``'s metrics and outputs of ``state`` on all of (x, y), in padded fixed-size
    batches. A regression's R^2 (the mean over target columns, as scikit-learn's r2_score) is
    computed from the outputs, in float64."""
    results = [eval_fn(state, b) for b in sharded_batches(x, y, np.arange(len(y)), batch_size, mesh)]
    sums, outputs = zip(*jax.device_get(results))
    metrics = task.means(list(sums), int(np.prod(y.shape[1:])))
    outputs = np.concatenate(outputs)[:len(y)]
    if task.kind == "regress":
        metrics["r2"] = r2_score(y, outputs)
    return Evaluation(metrics.pop("loss"), metrics, len(y), outputs)


def r2_score(y: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over columns of 1 - SSE / SST (a constant column: 1 if predicted exactly, else 0),
    invariant under each column's standardization."""
    y, predicted = np.asarray(y, np.float64), np.asarray(predicted, np.float64)
    sse = np.sum((y - predicted) ** 2, axis=0)
    sst = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    return float(np.mean(np.where(sst > 0, 1 - sse / np.where(sst > 0, sst, 1), (sse == 0).astype(float))))


def evaluate_splits(config: TrainConfig, state: TrainState, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                    mesh: Mesh | None = None, target_scale: TargetScale = TargetScale()) -> dict[str, Evaluation]:
    """``evaluate`` on each named (x, y) split, with the run's batch size, over all devices;
    ``target_scale`` is the data's (metrics in the targets' units)."""
    mesh = mesh if mesh is not None else data_parallel_mesh()
    check_batch_size(config.batch_size, mesh)
    task = Task.of(config, target_scale)
    eval_fn, state = jit_eval_step(mesh, task), replicate(state, mesh)
    for split, (x, y) in splits.items():
        config.model.check_input_shape((len(x), *x.shape[1:]), channel_axis=2)
    return {split: evaluate(eval_fn, state, x, y, config.batch_size, mesh, task) for split, (x, y) in splits.items()}


def model_inputs(dataset: Dataset, model) -> Dataset:
    """The data set zero-padded (at the end) to the network's minimum input length, if shorter
    (a classifier's or regressor's inputs: ``Dataset.pad_to``)."""
    return dataset.pad_to(model.min_length() or 0)


def train_epoch(train_fn: Callable, state: TrainState, dataset: Dataset, config: TrainConfig, epoch: int,
                mesh: Mesh, task: Task = Task()) -> tuple[TrainState, dict[str, float]]:
    """One pass over the training set in the order of (seed, epoch): (state, the task's mean loss and metrics)."""
    sums = []
    order = epoch_order(config.seed, epoch, len(dataset.y_train))
    augment = augmentation(config, epoch)
    for batch in sharded_batches(dataset.x_train, dataset.y_train, order, config.batch_size, mesh, augment):
        state, batch_sums = train_fn(state, batch)
        sums.append(batch_sums)  # stays on device: no sync per step
    return state, task.means(jax.device_get(sums), int(np.prod(dataset.y_train.shape[1:])))


@dataclasses.dataclass
class FitResult:
    state: TrainState
    history: list[dict]
    compile_seconds: float
    resumed_from: int | None  # epoch of the restored checkpoint


def fit(config: TrainConfig, dataset: Dataset, run_dir: str, *, resume: bool = False, overwrite: bool = False,
        inputs: tuple[str, ...] = (), mesh: Mesh | None = None, progress: bool = True) -> FitResult:
    """Train ``config`` on ``dataset``, writing metrics, checkpoints and the plot into ``run_dir``.

    With ``resume``, continue from the newest readable checkpoint: the result is bit-identical
    to an uninterrupted run, and ``metrics.jsonl`` is rewritten to the restored history first.
    Everything is checked before ``run_dir`` is touched; ``overwrite`` then replaces a run there
    (only what flax-resnet1d wrote, never a directory holding one of ``inputs``), and the run
    holds the directory as its one writer until it returns. A run from a checkpoint
    (``config.init``) records epoch 0 first: the metrics of the initial weights on both splits
    (the training split as evaluated, unaugmented), no step taken.
    """
    run = _checked_run(config, dataset, run_dir, resume, mesh if mesh is not None else data_parallel_mesh())
    with contextlib.ExitStack() as held:  # process 0 claims the directory; the others wait for it
        own = distributed.on_primary("claim_run_dir", lambda: held.enter_context(
            claim(run_dir, resume, overwrite, inputs)))
        run = dataclasses.replace(run, own=own, manager=checkpoint_manager(run_dir))
        state, history, resumed_from = _start_or_resume(run, resume)
        state, start_epoch = replicate(state, run.mesh), resumed_from or 0
        finished = start_epoch >= run.config.epochs
        train_fn, eval_fn, compile_seconds = (None, None, 0.0) if finished else _compiled_steps(run, state)
        if run.config.init is not None and not history:  # where fine-tuning starts
            history.append(_initial_record(run, eval_fn, state))
            if run.writer:
                append_metrics(run.own, history[-1])
        state = _train_epochs(run, train_fn, eval_fn, state, history, start_epoch, progress)
        _finish(run, history)
    return FitResult(state, history, compile_seconds, resumed_from)


@dataclasses.dataclass(frozen=True)
class _Run:
    """A run checked against its data and directory: what each part of ``fit`` reads."""

    config: TrainConfig  # with the data's digest, as config.json records it
    dataset: Dataset  # as the network takes it (``model_inputs``)
    run_dir: str
    mesh: Mesh
    steps_per_epoch: int
    schedule: optax.Schedule
    task: Task
    own: Manifest | None = None  # the run directory's manifest, on process 0 (the writer)
    manager: Any = None  # Orbax CheckpointManager over run_dir/checkpoints

    @property
    def writer(self) -> bool:
        """Process 0 alone writes the run's files."""
        return jax.process_index() == 0


def _checked_run(config: TrainConfig, dataset: Dataset, run_dir: str, resume: bool, mesh: Mesh) -> _Run:
    """Check that config, data and devices fit together, and for a resumed run that config and
    data are the run's own, touching nothing on disk."""
    stored = load_config(run_dir) if resume and os.path.isfile(os.path.join(run_dir, CONFIG_FILE)) else None
    # DataError if the data changed since the run started (runs before digests: unchecked); what
    # older runs did not record (classes, length, statistics) is recorded now
    recorded = data.with_digest(stored.data, dataset) if stored is not None else None
    config = dataclasses.replace(config, data=data.with_digest(config.data, dataset))  # recorded in config.json
    dataset = model_inputs(dataset, config.model)
    distributed.check_same_setup(config.to_dict())
    check_batch_size(config.batch_size, mesh)
    check_model_takes(config, dataset)
    check_memory(config, dataset.length, mesh)
    if stored is not None and dataclasses.replace(stored, data=recorded) != config:
        raise TrainingError(f"cannot resume {run_dir} with another configuration than its {CONFIG_FILE}")
    steps_per_epoch = math.ceil(len(dataset.y_train) / config.batch_size)
    return _Run(config, dataset, run_dir, mesh, steps_per_epoch, make_schedule(config, steps_per_epoch),
                Task.of(config, dataset.target_scale))


def check_model_takes(config: TrainConfig, dataset: Dataset) -> None:
    """TrainingError unless the network takes the data's inputs (channels, length) and outputs
    its targets' shape, before anything is traced."""
    if dataset.task != config.task:
        raise TrainingError(f"data set {dataset.name} is for the task {dataset.task}, the run's is {config.task}")
    model = config.model
    try:
        length = model.check_input_shape((1, *dataset.x_train.shape[1:]), channel_axis=2)
    except ValueError as e:
        raise TrainingError(f"data set {dataset.name}: {e}") from None
    if model.arch == "EncoderNet1d":
        produced = (model.out_length,) if model.out_length else (length, model.out_channels)
    else:
        produced = (length, model.out_channels)
    wanted = (dataset.outputs,) if config.task == "classify" else dataset.y_train.shape[1:]
    if tuple(produced) != tuple(wanted):
        what = "classes" if config.task == "classify" else "targets per example (L, C channels-last)"
        raise TrainingError(f"data set {dataset.name} has {what} {tuple(wanted)} but the {model.arch} outputs "
                            f"{tuple(produced)} for its inputs {dataset.x_train.shape[1:]}")


def _start_or_resume(run: _Run, resume: bool) -> tuple[TrainState, list[dict], int | None]:
    """(state, history, epoch resumed from): the initial state, or with ``resume`` the newest
    readable checkpoint's. Writes config.json, and metrics.jsonl as the history so far."""
    state = create_state(run.config, run.dataset.length, run.steps_per_epoch, _initial_variables(run.config))
    if run.writer:
        save_config(run.own, run.config)
    history, resumed_from = [], None
    if resume:
        restored = restore_checkpoint(run.manager, run.run_dir, replicate(state, run.mesh), run.own)
        if restored is None:
            log.warning("warning: %s has no readable checkpoint; starting from epoch 1", run.run_dir)
        else:
            state, meta = restored
            history, resumed_from = meta["history"], meta["epoch"]
    if run.writer:  # drops the lines of epochs after the checkpoint
        write_metrics(run.own, history)
    return state, history, resumed_from


def _initial_variables(config: TrainConfig) -> dict | None:
    """The variables of the checkpoint ``config.init`` the run starts from (None: from the seed),
    refused if it changed since the run recorded its sha256."""
    if config.init is None:
        return None
    # An EncoderNet1d's weights determine its config (its head may differ from the run's); the
    # others' configs are the run's own.
    variables, _, sha256 = read_init(config.init, None if config.model.arch == "EncoderNet1d" else config.model)
    if sha256 != config.init_sha256:
        raise TrainingError(f"--init {config.init} changed since the run recorded it (sha256 "
                            f"{str(config.init_sha256)[:12]}..., now {sha256[:12]}...); restore it or start a new run")
    return variables


def _initial_record(run: _Run, eval_fn: Callable, state: TrainState) -> dict:
    """metrics.jsonl's epoch 0: both splits evaluated with the initial weights."""
    dataset, config = run.dataset, run.config
    record = {"epoch": 0, "step": 0, "lr": float(run.schedule(0))}
    for split, (x, y) in (("train", (dataset.x_train, dataset.y_train)), ("test", (dataset.x_test, dataset.y_test))):
        result = evaluate(eval_fn, state, x, y, config.batch_size, run.mesh, run.task)
        record.update({f"{split}_loss": result.loss, **{f"{split}_{k}": v for k, v in result.metrics.items()}})
    return record


def _compiled_steps(run: _Run, state: TrainState) -> tuple[Callable, Callable, float]:
    """(train step, eval step, seconds to compile them), compiled ahead of time for the run's
    batches: compiled once, as other shapes would raise, not retrace."""
    example = next(sharded_batches(run.dataset.x_train, run.dataset.y_train, np.arange(1), run.config.batch_size,
                                   run.mesh))
    start = time.perf_counter()
    train_fn = jit_train_step(run.mesh, run.task).lower(state, example).compile()
    eval_fn = jit_eval_step(run.mesh, run.task).lower(state, example).compile()
    return train_fn, eval_fn, time.perf_counter() - start


def _train_epochs(run: _Run, train_fn: Callable | None, eval_fn: Callable | None, state: TrainState,
                  history: list[dict], start_epoch: int, progress: bool) -> TrainState:
    """The epochs after ``start_epoch``, each appended to ``history`` and saved, under a progress bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=run.config.epochs, initial=start_epoch, desc=run.dataset.name, unit="epoch",
               disable=None if progress and run.writer else True)  # None: only on a terminal
    shown_test, metric = None, run.task.metrics[0]
    for epoch in range(start_epoch + 1, run.config.epochs + 1):
        interrupts.check()  # a signal a library swallowed stops the run at the epoch's end
        if run.writer and _checkpointed(run, epoch):  # a kill mid-save then leaves the tool's own temporary
            run.own.begin(checkpoint_dir(epoch))
        state, record = _run_epoch(run, train_fn, eval_fn, state, epoch)
        history.append(record)
        _save_epoch(run, epoch, state, history)
        shown_test = record.get(f"test_{metric}", shown_test)  # the last evaluation's
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", **{f"train_{metric}": f"{record[f'train_{metric}']:.4g}"},
                        **({} if shown_test is None else {f"test_{metric}": f"{shown_test:.4g}"}))
        bar.update(1)
    bar.close()
    return state


def _run_epoch(run: _Run, train_fn: Callable, eval_fn: Callable, state: TrainState, epoch: int
               ) -> tuple[TrainState, dict]:
    """One epoch of training, and the test set's metrics every ``eval_every`` epochs and at the
    end: (state, the epoch's metrics.jsonl record)."""
    config, dataset = run.config, run.dataset
    start = time.perf_counter()
    state, train = train_epoch(train_fn, state, dataset, config, epoch, run.mesh, run.task)
    train_seconds, train_loss = time.perf_counter() - start, train.pop("loss")
    if not math.isfinite(train_loss):
        raise TrainingError(f"the training loss is {train_loss} in epoch {epoch}: the run diverged (lr "
                            f"{config.lr}, {config.optimizer}); lower --lr or use a warm-up schedule")
    step = epoch * run.steps_per_epoch
    record = {"epoch": epoch, "step": step, "lr": float(run.schedule(step - 1)), "train_loss": train_loss,
              **{f"train_{k}": v for k, v in train.items()}}
    if epoch % config.eval_every == 0 or epoch == config.epochs:
        test = evaluate(eval_fn, state, dataset.x_test, dataset.y_test, config.batch_size, run.mesh, run.task)
        record.update(test_loss=test.loss, **{f"test_{k}": v for k, v in test.metrics.items()})

    record.update(epoch_time_s=round(time.perf_counter() - start, 4),
                  step_time_ms=round(1e3 * train_seconds / run.steps_per_epoch, 3))
    return state, record


def _save_epoch(run: _Run, epoch: int, state: TrainState, history: list[dict]) -> None:
    """The epoch's line of metrics.jsonl, and its checkpoint every ``ckpt_every`` epochs and at the end."""
    if run.writer:
        append_metrics(run.own, history[-1])
    if _checkpointed(run, epoch):
        save_checkpoint(run.manager, run.own, epoch, state, history)
        if run.writer:
            retire(run.manager, run.own, run.config.keep)


def _checkpointed(run: _Run, epoch: int) -> bool:
    """Whether ``epoch`` ends with a checkpoint: every ``ckpt_every`` epochs and at the end."""
    return epoch % run.config.ckpt_every == 0 or epoch == run.config.epochs


def _finish(run: _Run, history: list[dict]) -> None:
    """Close the checkpoints and plot the learning curve."""
    run.manager.close()
    config = run.config
    if run.writer and history:
        model = config.model
        shape = (f"{model.block} {list(model.layers)} x{model.channel}" if hasattr(model, "layers")
                 else f"{model.in_planes}->{model.out_planes} {model.normalizer} norm")  # a standalone block
        plot_learning_curve(run.own, history, f"{run.dataset.name}: {model.arch} {shape}, {config.optimizer} lr "
                            f"{config.lr}", config.loss, run.task.metrics[0])

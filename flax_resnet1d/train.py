"""Training an ``EncoderNet1d`` classifier: pure ``train_step``/``eval_step`` over a ``TrainState``.

In the style of Flax's ResNet example: the steps are pure functions of ``(state, batch)``,
jit-compiled once at the edge (ahead of time, with the state donated on accelerators), and the loop around
them is plain Python. The model has no BatchNorm, so the state is params + optimizer state.

Determinism and exact resume: the only randomness is the parameter init (``seed``), the data
order and the training shifts (``augment``), drawn from ``(seed, epoch)``. A checkpoint therefore
needs only the state and the epoch; a resumed run replays exactly the steps the uninterrupted run would take.

Several devices: a 1-D ``Mesh`` over all devices with the batch axis sharded and the state
replicated; XLA inserts the gradient all-reduce. One device is the same code path. Several
processes (``jax.distributed``, see ``distributed.py``): the same mesh over every process's
devices; each process gathers only its own rows of each batch, process 0 alone writes the run
directory's files, and every process takes part in each Orbax save and restore.

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per epoch),
``learning_curve.png`` and Orbax checkpoints under ``checkpoints/<epoch>``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import checkpoint_io, data, distributed
from .cli import UsageError
from .config import EncoderConfig
from .data import Dataset, DataSpec
from .model import EncoderNet1d, from_config

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup", "warmup_cosine")
AUGMENTATIONS = ("none", "shift")
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # compute dtype; parameters stay float32
TIMING_KEYS = ("epoch_time_s", "step_time_ms")  # the only metrics that differ between identical runs

CONFIG_FILE, METRICS_FILE, CURVE_FILE = "config.json", "metrics.jsonl", "learning_curve.png"
CHECKPOINT_DIR, CORRUPT_DIR = "checkpoints", "corrupt_checkpoints"
# Everything a run writes in its directory (temporaries end in .tmp-<pid>): `train --out
# --overwrite` replaces a directory holding only these, with config.json, and nothing else.
RUN_OUTPUT = checkpoint_io.OwnOutput("a run directory", entries=(CONFIG_FILE, METRICS_FILE, CURVE_FILE, CHECKPOINT_DIR,
                                                                 CORRUPT_DIR, "*.tmp-*"), required=CONFIG_FILE,
                                     makes_parents=True)

TrainState = train_state.TrainState  # step, apply_fn, params, tx, opt_state
Batch = dict[str, Any]  # x (B, L, C), y (B,) int32, mask (B,) float32: 0 marks padding rows


class TrainingError(UsageError, ValueError):
    """A bad training setting or run directory."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run; saved as ``config.json`` in the run directory."""

    model: EncoderConfig
    data: DataSpec
    epochs: int = 40
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_epochs: int = 0
    momentum: float = 0.9  # sgd
    weight_decay: float = 1e-2  # adamw (torch.optim.AdamW's default)
    seed: int = 0
    dtype: str = "float32"
    ckpt_every: int = 10
    keep: int = 3
    eval_every: int = 1
    augment: str = "none"
    shift: float = 0.1
    augment_fraction: float = 1.0  # the first ``ceil(augment_fraction * epochs)`` epochs are augmented
    label_smoothing: float = 0.0

    def __post_init__(self):
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("ckpt_every", 1), ("keep", 1), ("warmup_epochs", 0),
                              ("seed", 0), ("eval_every", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TrainingError(f"{name} must be an int, got {type(value).__name__} {value!r}")
            if value < minimum:
                raise TrainingError(f"{name} must be at least {minimum}, got {value}")
        if self.seed >= 2**32:  # numpy's and JAX's seeds
            raise TrainingError(f"seed must be below 2**32, got {self.seed}")
        for name, value, high in (("momentum", self.momentum, 1), ("weight_decay", self.weight_decay, math.inf),
                                  ("label_smoothing", self.label_smoothing, 1), ("shift", self.shift, 1)):
            if not (math.isfinite(value) and 0 <= value < high):
                raise TrainingError(f"{name} must be a finite number in [0, {high}), got {value}")
        if not (math.isfinite(self.augment_fraction) and 0 < self.augment_fraction <= 1):
            raise TrainingError(f"augment_fraction must be a finite number in (0, 1], got {self.augment_fraction}")
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
                                     ("dtype", self.dtype, tuple(DTYPES)), ("augment", self.augment, AUGMENTATIONS)):
            if value not in choices:
                raise TrainingError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
        if not (math.isfinite(self.lr) and self.lr > 0):  # inf trains to NaN
            raise TrainingError(f"lr must be positive and finite, got {self.lr}")
        if self.schedule.startswith("warmup") and not 0 < self.warmup_epochs < self.epochs:
            raise TrainingError(f"schedule {self.schedule!r} needs 0 < --warmup-epochs < --epochs "
                                f"({self.warmup_epochs}, {self.epochs})")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(model=self.model.to_dict(), data=self.data.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**{**d, "model": EncoderConfig.from_dict(d["model"]), "data": DataSpec.from_dict(d["data"])})


# -- model, optimizer, state ----------------------------------------------------------------------

def build_model(config: TrainConfig) -> EncoderNet1d:
    return from_config(config.model, dtype=DTYPES[config.dtype])


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    total, warmup = config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    if config.schedule == "constant":
        return optax.constant_schedule(config.lr)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.lr, total)
    if config.schedule == "warmup":
        return optax.warmup_constant_schedule(0.0, config.lr, warmup)
    return optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, total)


def make_optimizer(name: str, learning_rate: float | optax.Schedule, momentum: float = 0.9,
                   weight_decay: float = 1e-2) -> optax.GradientTransformation:
    """optax optimizers with exactly torch.optim's update rules (checked by parity_tests/test_train_torch.py).

    - ``adam`` = ``torch.optim.Adam(betas=(0.9, 0.999), eps=1e-8)``: both add eps to the
      bias-corrected ``sqrt(v_hat)``.
    - ``adamw`` = ``torch.optim.AdamW``: decoupled decay ``p -= lr * wd * p`` on every parameter
      (optax scales the decay by the learning rate too, and no mask is applied, as torch does
      for ``model.parameters()``).
    - ``sgd`` = ``torch.optim.SGD(momentum, dampening=0, nesterov=False)``: optax's trace
      ``t = g + m t`` is torch's momentum buffer; momentum 0 is plain SGD.
    """
    if name == "adam":
        return optax.adam(learning_rate)
    if name == "adamw":
        return optax.adamw(learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return optax.sgd(learning_rate, momentum=momentum or None)
    raise TrainingError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def create_state(config: TrainConfig, in_planes: int, length: int, steps_per_epoch: int) -> TrainState:
    model = build_model(config)
    key, x = jax.random.key(config.seed), jnp.zeros((1, length, in_planes), jnp.float32)
    # One compilation instead of eager op-by-op dispatch, and without XLA's optimizations: init
    # runs once, and optimizing its threefry code takes ~7x longer (11 s vs 1.6 s) than this.
    init = jax.jit(model.init).lower(key, x).compile({"xla_backend_optimization_level": 0})
    params = init(key, x)["params"]
    tx = make_optimizer(config.optimizer, make_schedule(config, steps_per_epoch), config.momentum, config.weight_decay)
    # An int32 array step (not create's Python 0): one dtype before and after a step and in checkpoints.
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx).replace(step=jnp.zeros((), jnp.int32))


# -- the steps ---------------------------------------------------------------------------------

def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy over the rows with ``mask`` 1 (as torch's F.cross_entropy,
    ``label_smoothing`` included)."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if label_smoothing:  # targets (1 - e) one_hot + e / K, from the integer labels: a one-hot made the
        # spec model's B=32 float32 step 24% slower on XLA:CPU (237 vs 190 ms)
        uniform = jax.nn.logsumexp(logits, axis=-1) - jnp.mean(logits, axis=-1)  # mean over k of -log p_k
        losses = (1 - label_smoothing) * losses + label_smoothing * uniform
    return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1)


def _batch_sums(logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """Sums over real rows, so epoch metrics are exact however the last batch is padded."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
    correct = jnp.argmax(logits, axis=-1) == batch["y"]
    return {"loss": jnp.sum(losses * batch["mask"]), "correct": jnp.sum(correct * batch["mask"]),
            "count": jnp.sum(batch["mask"])}


def train_step(state: TrainState, batch: Batch, label_smoothing: float = 0.0) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on the masked mean cross-entropy of ``batch``."""

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, batch["x"])
        return cross_entropy(logits, batch["y"], batch["mask"], label_smoothing), logits

    (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), _batch_sums(logits, batch)


def eval_step(state: TrainState, batch: Batch) -> tuple[dict[str, jax.Array], jax.Array]:
    """Metric sums and float32 logits of ``batch``."""
    logits = state.apply_fn({"params": state.params}, batch["x"])
    return _batch_sums(logits, batch), logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


# -- devices and batches --------------------------------------------------------------------------

def data_parallel_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all, across hosts) with axis ``batch``."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("batch",))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise TrainingError(f"batch size {batch_size} must be a multiple of the {mesh.size} devices it is split "
                            f"over; use e.g. --batch-size {math.ceil(batch_size / mesh.size) * mesh.size}")


def _shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, batch-sharded)."""
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("batch"))


def state_donation(platform: str) -> tuple[int, ...]:
    """``donate_argnums`` for a jitted ``train_step`` on ``platform``: the state on accelerators,
    where it halves the state's memory; nothing on CPU, where XLA then copies every donated
    parameter before the step (or, without those copies, orders the in-place update after all
    its reads) and the spec model's B=32 step takes ~10 ms longer (160 vs 150 ms)."""
    return () if platform == "cpu" else (0,)


def jit_train_step(mesh: Mesh, label_smoothing: float = 0.0):
    """``train_step`` jitted with the state replicated (and donated on accelerators), the batch
    sharded over ``batch``."""
    replicated, sharded = _shardings(mesh)
    return jax.jit(functools.partial(train_step, label_smoothing=label_smoothing), in_shardings=(replicated, sharded),
                   out_shardings=(replicated, replicated), donate_argnums=state_donation(mesh.devices.flat[0].platform))


def jit_eval_step(mesh: Mesh):
    replicated, sharded = _shardings(mesh)
    return jax.jit(eval_step, in_shardings=(replicated, sharded), out_shardings=(replicated, replicated))


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The data order of ``epoch``: a function of (seed, epoch) only, so resume replays it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


Augmentation = Callable[[dict, slice], dict]  # (this process's rows of a batch, which rows of it) -> batch


def batches(x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int, rows: slice = slice(None),
            augment: Augmentation | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-size batches in ``order``; the last is filled with row ``order[0]`` under mask 0.
    With ``rows``, only those rows of each batch (one process's share) are gathered; ``augment``
    transforms them."""
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        mask = np.zeros(batch_size, np.float32)
        mask[:len(idx)] = 1
        idx = np.concatenate([idx, np.full(batch_size - len(idx), order[0])])[rows]
        batch = {"x": x[idx], "y": y[idx], "mask": mask[rows]}
        yield batch if augment is None else augment(batch, rows)


def augmentation(config: TrainConfig, epoch: int) -> Augmentation | None:
    """The random transform of the training batches of ``epoch`` (None: none), drawn from (seed,
    epoch) only, so resume replays it, and for the whole global batch, so every process draws the
    same and takes its own rows.

    ``shift``: each series moves by a random whole number of steps, at most ``shift`` of its
    length either way, the vacated steps repeating the series' first or last value (zeros would
    put a level step into it: ItalyPowerDemand lost 0.6 points to zero-filling). Its length,
    frequencies and amplitudes stay as they are, so the step compiles once and evaluation sees
    what training saw.

    Only the first ``augment_fraction`` of the epochs are augmented; the rest, at the low end of
    the schedule, fit the series as they are.
    """
    if config.augment == "none" or epoch > augmented_epochs(config):
        return None
    rng = np.random.default_rng([config.seed, epoch, 1])

    def augment(batch: dict, rows: slice) -> dict:
        reach = int(config.shift * batch["x"].shape[1])
        return {**batch, "x": data.shifted(batch["x"], rng.integers(-reach, reach + 1, config.batch_size)[rows])}

    return augment


def augmented_epochs(config: TrainConfig) -> int:
    return math.ceil(round(config.augment_fraction * config.epochs, 9))  # 0.07 * 100 is 7.000000000000001


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh, batch_size: int | None = None) -> Batch:
    """This process's rows of a global batch of ``batch_size`` rows (default: the whole batch,
    one process) -> global arrays sharded over ``batch``."""
    sharding, size = _shardings(mesh)[1], batch_size or len(batch["mask"])
    return {k: jax.make_array_from_process_local_data(sharding, v, (size, *v.shape[1:])) for k, v in batch.items()}


def sharded_batches(x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int, mesh: Mesh,
                    augment: Augmentation | None = None) -> Iterator[Batch]:
    """``batches`` as global arrays: every process draws the same order (same data, same seed)
    and gathers only the rows its own devices hold."""
    rows = distributed.local_rows(_shardings(mesh)[1], batch_size)
    for batch in batches(x, y, order, batch_size, rows, augment):
        yield shard_batch(batch, mesh, batch_size)


def replicate(state: TrainState, mesh: Mesh) -> TrainState:
    """The state on every device of ``mesh``, from host copies: ``jax.device_put`` of a
    device array onto devices of several processes builds arrays Orbax cannot save (jax 0.10.2)."""
    replicated = _shardings(mesh)[0]
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(replicated, np.asarray(a)), state)


# -- evaluation ------------------------------------------------------------------------------

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


def float32_state(config: TrainConfig, state: TrainState) -> TrainState:
    """The same parameters applied in float32 (a bfloat16 run's weights, evaluated as PyTorch would)."""
    return state.replace(apply_fn=from_config(config.model).apply)


def model_inputs(dataset: Dataset, model: EncoderConfig) -> Dataset:
    """The data set zero-padded (at the end) to the network's minimum input length, if shorter."""
    return dataset.pad_to(model.min_length() or 0)


# -- run directory: config, metrics, checkpoints ------------------------------------------------------

def atomic_write_text(path: str, text: str) -> None:
    with checkpoint_io.replaced_when_written(path) as tmp:
        checkpoint_io.write_file(tmp, text.encode())


def save_figure(fig, path: str, dpi: int) -> None:
    """Save a matplotlib figure through a temporary, then close it (closed on failure too)."""
    import matplotlib.pyplot as plt

    try:
        with checkpoint_io.replaced_when_written(path, os.path.splitext(path)[1]) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)


def append_text(path: str, text: str) -> None:
    with checkpoint_io.errors_named(path), open(path, "a") as f:
        f.write(text)
        f.flush()


def save_config(run_dir: str, config: TrainConfig) -> None:
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_text(os.path.join(run_dir, CONFIG_FILE), json.dumps(config.to_dict(), indent=2) + "\n")


def load_config(run_dir: str) -> TrainConfig:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise TrainingError(f"{run_dir} is not a run directory: no {CONFIG_FILE}")
    try:
        with open(path) as f:
            return TrainConfig.from_dict(json.load(f))
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise TrainingError(f"{path} is not a valid run config: {e}") from None


def read_metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def state_digest(state: TrainState) -> str:
    """sha256 of every array of the state, in tree order: catches silently damaged checkpoints."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(state)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def checkpoint_manager(run_dir: str, keep: int):
    """Orbax manager over ``run_dir/checkpoints``: one ``<epoch>`` directory per checkpoint.

    Orbax writes each checkpoint into ``<epoch>.orbax-checkpoint-tmp`` and renames it
    when complete, so a kill mid-save leaves only a temporary directory, which is never
    restored. Saves are synchronous: on accelerators the next train step donates the state's buffers.
    """
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    try:
        with checkpoint_io.quiet_orbax_failures():
            return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "meta"))
    except Exception as e:  # e.g. a read-only or full file system, in Orbax's words
        raise checkpoint_io.as_os_error(e, directory) from None


def save_checkpoint(manager, epoch: int, state: TrainState, history: list[dict]) -> None:
    import orbax.checkpoint as ocp

    meta = {"epoch": epoch, "step": int(state.step), "digest": state_digest(state), "history": history}
    try:
        with checkpoint_io.quiet_orbax_failures():
            manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)))
    except Exception as e:  # tensorstore reports a full disk inside its own exception types
        raise checkpoint_io.as_os_error(e, os.path.join(str(manager.directory), str(epoch))) from None


def restore_checkpoint(manager, run_dir: str, target: TrainState, quarantine: bool = False
                       ) -> tuple[TrainState, dict] | None:
    """The newest readable checkpoint as (state, meta), or None if there is none.

    An unreadable checkpoint (damaged or missing files, digest mismatch) is skipped with a
    warning in favour of the previous one. With ``quarantine`` (when training resumes and
    will write those epochs again) the skipped ones are moved to ``run_dir/corrupt_checkpoints``
    once an older one has restored. If none restores, nothing is moved and TrainingError says why.
    """
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    unreadable = {}
    for epoch in sorted(manager.all_steps(), reverse=True):
        try:
            with checkpoint_io.quiet_orbax_failures():  # the warning below is the whole report
                restored = manager.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                          meta=ocp.args.JsonRestore()))
            state, meta = restored["state"], restored["meta"]
            if meta["digest"] != state_digest(state):
                raise ValueError("its arrays do not match the digest recorded when it was saved")
        except Exception as e:  # orbax/tensorstore/json raise many types for damaged files
            unreadable[epoch] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log.warning("warning: checkpoint of epoch %d in %s is unreadable (%s); trying the previous one",
                        epoch, run_dir, unreadable[epoch])
            continue
        if quarantine and unreadable:  # once, by process 0, after every process has read the checkpoints
            distributed.on_primary("quarantine", _quarantine, run_dir, sorted(unreadable))
            manager.reload()
        return state, meta
    if unreadable:
        raise TrainingError(f"no checkpoint in {run_dir} is readable: "
                            + "; ".join(f"epoch {e}: {why}" for e, why in unreadable.items()))
    return None


def _quarantine(run_dir: str, epochs: list[int]) -> None:
    for bad in epochs:
        corrupt = os.path.join(run_dir, CORRUPT_DIR, f"{bad}-{time.strftime('%Y%m%dT%H%M%S')}")
        os.makedirs(os.path.dirname(corrupt), exist_ok=True)
        shutil.move(os.path.join(run_dir, CHECKPOINT_DIR, str(bad)), corrupt)
        log.warning("warning: moved the unreadable checkpoint of epoch %d to %s", bad, corrupt)


def restore_run(run_dir: str) -> tuple[TrainConfig, TrainState, int]:
    """(config, state, epoch) of a run's newest readable checkpoint, for eval and export."""
    config = load_config(run_dir)
    manager = checkpoint_manager(run_dir, config.keep)
    # Parameter and optimizer-state shapes do not depend on the input length or the schedule.
    target = create_state(config, config.model.in_planes, config.model.min_length() or 1, steps_per_epoch=1)
    restored = restore_checkpoint(manager, run_dir, target)
    manager.close()
    if restored is None:
        raise TrainingError(f"{run_dir} has no checkpoint yet")
    return config, restored[0], restored[1]["epoch"]


# -- plots -------------------------------------------------------------------------------------

def plot_learning_curve(history: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "test"):  # test: the evaluated epochs (every eval_every)
        rows = [h for h in history if f"{split}_loss" in h]
        ax_loss.plot([h["epoch"] for h in rows], [h[f"{split}_loss"] for h in rows], label=split)
        ax_acc.plot([h["epoch"] for h in rows], [h[f"{split}_accuracy"] for h in rows], label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


# -- the loop ----------------------------------------------------------------------------------

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

"""The model, optimizer and ``TrainState``, the pure ``train_step``/``eval_step``, and their
jit-compiled, data-parallel forms over a 1-D device mesh (batch sharded, state replicated; XLA
inserts the gradient all-reduce). One step for every task: a ``Task`` supplies the loss and the
metric sums. The state holds the BatchNorm running statistics (``batch_stats``, empty without
BatchNorm), updated by each train step and used by the eval step."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .. import memory
from ..errors import TrainingError
from ..model import from_config
from ..once import run_once
from .run_config import METRICS, OPTIMIZERS, TrainConfig, compute_dtype

Batch = dict[str, Any]  # x (B, L, C) or (B, F), y (B,) int32 | (B, K) | (B, L', C'), mask (B,) float32: 0 marks padding rows
HEAD = "fc"  # the Flax name of a classifier's or regressor's head (EncoderNet1d's fc)


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, apply_fn, params, tx, opt_state) with ``batch_stats``: the
    BatchNorm running statistics, an empty dict for a network without BatchNorm."""

    batch_stats: Any = flax.struct.field(default_factory=dict)

    def variables(self, params=None) -> dict:
        return {"params": self.params if params is None else params,
                **({"batch_stats": self.batch_stats} if self.batch_stats else {})}


def apply_model(state: TrainState, params, x: jax.Array, train: bool) -> tuple[jax.Array, dict]:
    """(outputs, updated batch_stats or {}): BatchNorm normalizes with the batch's statistics and
    updates the running ones in train mode, and uses the running ones otherwise."""
    if train and state.batch_stats:
        outputs, mutated = state.apply_fn(state.variables(params), x, train=True, mutable=["batch_stats"])
        return outputs, {"batch_stats": mutated["batch_stats"]}
    return state.apply_fn(state.variables(params), x, train=train), {}


@dataclasses.dataclass(frozen=True)
class Task:
    """What a step optimizes and measures (``data.TASKS``): the masked mean loss of the outputs
    against ``batch['y']`` and the sums epoch metrics are made of. ``units`` (per output: the
    targets' mean and std, ``data.TargetScale``) turns standardized errors into the targets'
    units for the metrics; None: the targets are in their units already."""

    kind: str = "classify"
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    units: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @classmethod
    def of(cls, config: TrainConfig, target_scale=None) -> Task:
        """The task of a run; ``target_scale`` is its data's (``Dataset.target_scale``)."""
        units = None
        if target_scale is not None and target_scale.mean is not None:
            units = (tuple(map(float, target_scale.mean)), tuple(map(float, target_scale.std)))
        return cls(config.task, config.loss, config.label_smoothing, units)

    def loss_of(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        """Mean loss over the rows with ``mask`` 1: F.cross_entropy (label smoothing included),
        F.mse_loss or F.l1_loss (mean over every element) of a full batch."""
        if self.kind == "classify":
            return cross_entropy(outputs, batch["y"], batch["mask"], self.label_smoothing)
        return jnp.sum(self._row_losses(outputs, batch) * batch["mask"]) / jnp.maximum(jnp.sum(batch["mask"]), 1)

    def _row_losses(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        error = _float32(outputs) - batch["y"]
        per_element = jnp.square(error) if self.loss == "mse" else jnp.abs(error)
        return jnp.mean(per_element.reshape(len(error), -1), axis=1)

    def sums(self, outputs: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        """Sums over real rows, so epoch metrics are exact however the last batch is padded."""
        mask = batch["mask"]
        if self.kind == "classify":
            logits = _float32(outputs)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
            correct = jnp.argmax(logits, axis=-1) == batch["y"]
            return {"loss": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}
        error, target = _float32(outputs) - batch["y"], batch["y"]
        if self.units is not None:  # standardized -> the targets' units
            mean, std = (jnp.asarray(u, error.dtype) for u in self.units)
            error, target = error * std, target * std + mean
        rows = mask.reshape(-1, *([1] * (error.ndim - 1)))
        return {"loss": jnp.sum(self._row_losses(outputs, batch) * mask), "count": jnp.sum(mask),
                "squared_error": jnp.sum(jnp.square(error) * rows), "absolute_error": jnp.sum(jnp.abs(error) * rows),
                "power": jnp.sum(jnp.square(target) * rows)}

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names of ``means`` (besides loss), the headline first."""
        return METRICS[self.kind]

    def means(self, sums: list[dict], elements: int) -> dict[str, float]:
        """Epoch metrics from the batches' sums (float64 on the host); ``elements`` per row."""
        total = {k: float(np.sum([np.float64(s[k]) for s in sums])) for k in sums[0]}
        count = total["count"]
        means = {"loss": total["loss"] / count}
        if self.kind == "classify":
            return {**means, "accuracy": total["correct"] / count}
        means["rmse"] = math.sqrt(total["squared_error"] / (count * elements))
        if self.kind == "regress":
            return {**means, "mae": total["absolute_error"] / (count * elements)}
        with np.errstate(divide="ignore"):
            snr = 10 * np.log10(np.float64(total["power"]) / np.float64(total["squared_error"]))
        return {**means, "snr_db": float(snr)}


def _float32(outputs: jax.Array) -> jax.Array:
    return outputs.astype(jnp.promote_types(outputs.dtype, jnp.float32))


def build_model(config: TrainConfig):
    return from_config(config.model, dtype=compute_dtype(config.dtype))


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
                   weight_decay: float = 1e-2, freeze: str = "none") -> optax.GradientTransformation:
    """optax optimizers with exactly torch.optim's update rules (checked by
    parity_tests/training/test_train_torch.py).

    - ``adam`` = ``torch.optim.Adam(betas=(0.9, 0.999), eps=1e-8)``: both add eps to the
      bias-corrected ``sqrt(v_hat)``.
    - ``adamw`` = ``torch.optim.AdamW``: decoupled decay ``p -= lr * wd * p`` on every parameter
      (optax scales the decay by the learning rate too, and no mask is applied, as torch does
      for ``model.parameters()``).
    - ``sgd`` = ``torch.optim.SGD(momentum, dampening=0, nesterov=False)``: optax's trace
      ``t = g + m t`` is torch's momentum buffer; momentum 0 is plain SGD.

    ``freeze='body'`` updates only the head (``HEAD``): every other parameter's update is zero
    (decay included), as torch.optim over ``model.fc.parameters()`` would.
    """
    if name == "adam":
        tx = optax.adam(learning_rate)
    elif name == "adamw":
        tx = optax.adamw(learning_rate, weight_decay=weight_decay)
    elif name == "sgd":
        tx = optax.sgd(learning_rate, momentum=momentum or None)
    else:
        raise TrainingError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    if freeze == "none":
        return tx
    return optax.multi_transform({"head": tx, "body": optax.set_to_zero()},
                                 lambda params: {k: jax.tree.map(lambda _: "head" if k == HEAD else "body", v)
                                                 for k, v in params.items()})


def init_input(model, length: int) -> jax.Array:
    """A zero input of one example for ``model`` (a family config): (1, length, C), or a
    DecoderNet1d's vector (1, in_length)."""
    if getattr(model, "is_vector_input", False):
        return jnp.zeros((1, model.in_length), jnp.float32)
    return jnp.zeros((1, length, model.in_channels), jnp.float32)


def create_state(config: TrainConfig, length: int, steps_per_epoch: int, initial: dict | None = None) -> TrainState:
    """The state of a new run: the parameters of the seed's init, or ``initial`` (variables, a
    checkpoint's: ``params`` and any ``batch_stats``) where it has them, with an initialized head
    where its ``fc`` differs in shape (``init_variables``)."""
    model = build_model(config)
    key, x = jax.random.key(config.seed), init_input(config.model, length)
    variables = run_once(model.init, key, x)
    if initial is not None:
        variables = init_variables(variables, initial)
    tx = make_optimizer(config.optimizer, make_schedule(config, steps_per_epoch), config.momentum, config.weight_decay,
                        config.freeze)
    # An int32 array step (not create's Python 0): one dtype before and after a step and in checkpoints.
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {})).replace(step=jnp.zeros((), jnp.int32))


def init_variables(fresh: dict, initial: dict) -> dict:
    """``initial``'s arrays in ``fresh``'s tree (and dtypes), except a head (``fc``) of another
    shape, which keeps ``fresh``'s initialization; any other difference is a TrainingError."""
    out = {}
    for collection, tree in fresh.items():
        flat, given = flax.traverse_util.flatten_dict(tree), flax.traverse_util.flatten_dict(initial.get(collection, {}))
        missing = sorted("/".join(p) for p in set(flat) - set(given))
        if missing or set(given) - set(flat):
            raise TrainingError(f"the checkpoint's {collection} do not match the network: missing {missing[:5]}, "
                                f"unexpected {sorted('/'.join(p) for p in set(given) - set(flat))[:5]}")
        merged = {}
        for path, leaf in flat.items():
            source = np.asarray(given[path])
            if source.shape != leaf.shape and path[0] != HEAD:
                raise TrainingError(f"the checkpoint's {'/'.join(path)} has shape {source.shape}, the network's "
                                    f"{tuple(leaf.shape)}")
            merged[path] = leaf if source.shape != leaf.shape else jnp.asarray(source, leaf.dtype)
        out[collection] = flax.traverse_util.unflatten_dict(merged)
    return out


def float32_state(config: TrainConfig, state: TrainState) -> TrainState:
    """The same parameters applied in float32 (a bfloat16 run's weights, evaluated as PyTorch would)."""
    return state.replace(apply_fn=from_config(config.model).apply)


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy over the rows with ``mask`` 1 (as torch's F.cross_entropy,
    ``label_smoothing`` included)."""
    logits = _float32(logits)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if label_smoothing:  # targets (1 - e) one_hot + e / K, from the integer labels: a one-hot array
        # makes the step slower on XLA:CPU
        uniform = jax.nn.logsumexp(logits, axis=-1) - jnp.mean(logits, axis=-1)  # mean over k of -log p_k
        losses = (1 - label_smoothing) * losses + label_smoothing * uniform
    return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1)


def train_step(state: TrainState, batch: Batch, task: Task = Task()) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on ``task``'s masked mean loss of ``batch`` (BatchNorm in train mode)."""

    def loss_fn(params):
        outputs, updates = apply_model(state, params, batch["x"], train=True)
        return task.loss_of(outputs, batch), (outputs, updates)

    (_, (outputs, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads, **updates), task.sums(outputs, batch)


def eval_step(state: TrainState, batch: Batch, task: Task = Task()) -> tuple[dict[str, jax.Array], jax.Array]:
    """Metric sums and float32 outputs of ``batch`` (BatchNorm with its running statistics)."""
    outputs, _ = apply_model(state, state.params, batch["x"], train=False)
    return task.sums(outputs, batch), _float32(outputs)


def data_parallel_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all, across hosts) with axis ``batch``."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("batch",))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise TrainingError(f"batch size {batch_size} must be a multiple of the {mesh.size} devices it is split "
                            f"over; use e.g. --batch-size {math.ceil(batch_size / mesh.size) * mesh.size}")


def device_available(device) -> tuple[int, str] | None:
    """(bytes, where read) ``device`` can still allocate: the host's memory for a CPU device, else
    its allocator's limit less what is in use; None if unknown."""
    if device.platform == "cpu":
        return memory.host_available()
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"{device.device_kind} bytes_limit"


def check_memory(config: TrainConfig, length: int, mesh: Mesh | None = None, training: bool = True) -> None:
    """TrainingError, in one line with the estimate, unless a train step (``training``) or an
    evaluation step of ``config`` on series of ``length`` steps fits in the memory of this
    process's devices of ``mesh`` (default: all devices), each with its share of the batch (CPU
    devices share the host's memory). Call it before anything is written."""
    mesh = mesh if mesh is not None else data_parallel_mesh()
    per_device = math.ceil(config.batch_size / mesh.size)
    need = (memory.train_step_bytes(config.model, per_device, length, config.optimizer, config.dtype) if training
            else memory.eval_step_bytes(config.model, per_device, length))
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()] or list(mesh.devices.flat)
    if local[0].platform == "cpu":
        need *= len(local)
    what = (f"a{' train' if training else 'n evaluation'} step of batch size {config.batch_size} over {mesh.size} "
            f"device{'s' if mesh.size > 1 else ''} on series of {length} steps ({config.model.arch} of "
            f"{config.model.parameter_count():,} weights)")
    memory.check_fits(need, what, device_available(local[0]), TrainingError,
                      "lower the batch size (--batch-size) or the network's size (--channel, --layers)")


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, batch-sharded)."""
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("batch"))


def state_donation(platform: str) -> tuple[int, ...]:
    """``donate_argnums`` for a jitted ``train_step`` on ``platform``: the state on accelerators,
    where it halves the state's memory; nothing on CPU, where XLA then copies every donated
    parameter before the step (or, without those copies, orders the in-place update after all
    its reads), which makes the step slower."""
    return () if platform == "cpu" else (0,)


def jit_train_step(mesh: Mesh, task: Task = Task()):
    """``train_step`` jitted with the state replicated (and donated on accelerators), the batch
    sharded over ``batch``."""
    replicated, sharded = shardings(mesh)
    return jax.jit(functools.partial(train_step, task=task), in_shardings=(replicated, sharded),
                   out_shardings=(replicated, replicated), donate_argnums=state_donation(mesh.devices.flat[0].platform))


def jit_eval_step(mesh: Mesh, task: Task = Task()):
    replicated, sharded = shardings(mesh)
    return jax.jit(functools.partial(eval_step, task=task), in_shardings=(replicated, sharded),
                   out_shardings=(replicated, replicated))


def replicate(state: TrainState, mesh: Mesh) -> TrainState:
    """The state on every device of ``mesh``, from host copies: ``jax.device_put`` of a
    device array onto devices of several processes builds arrays Orbax cannot save (jax 0.10.2)."""
    replicated = shardings(mesh)[0]
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(replicated, np.asarray(a)), state)

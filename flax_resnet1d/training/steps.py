"""The model, optimizer and ``TrainState``, the pure ``train_step``/``eval_step``, and their
jit-compiled, data-parallel forms over a 1-D device mesh (batch sharded, state replicated; XLA
inserts the gradient all-reduce). The model has no BatchNorm, so the state is params + optimizer
state."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .. import memory
from ..errors import TrainingError
from ..model import EncoderNet1d, from_config
from .run_config import OPTIMIZERS, TrainConfig, compute_dtype

TrainState = train_state.TrainState  # step, apply_fn, params, tx, opt_state
Batch = dict[str, Any]  # x (B, L, C), y (B,) int32, mask (B,) float32: 0 marks padding rows


def build_model(config: TrainConfig) -> EncoderNet1d:
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
                   weight_decay: float = 1e-2) -> optax.GradientTransformation:
    """optax optimizers with exactly torch.optim's update rules (checked by
    parity_tests/training/test_train_torch.py).

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
    # runs once, and optimizing its threefry code takes far longer than running it unoptimized.
    init = jax.jit(model.init).lower(key, x).compile({"xla_backend_optimization_level": 0})
    params = init(key, x)["params"]
    tx = make_optimizer(config.optimizer, make_schedule(config, steps_per_epoch), config.momentum, config.weight_decay)
    # An int32 array step (not create's Python 0): one dtype before and after a step and in checkpoints.
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx).replace(step=jnp.zeros((), jnp.int32))


def float32_state(config: TrainConfig, state: TrainState) -> TrainState:
    """The same parameters applied in float32 (a bfloat16 run's weights, evaluated as PyTorch would)."""
    return state.replace(apply_fn=from_config(config.model).apply)


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy over the rows with ``mask`` 1 (as torch's F.cross_entropy,
    ``label_smoothing`` included)."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if label_smoothing:  # targets (1 - e) one_hot + e / K, from the integer labels: a one-hot array
        # makes the step slower on XLA:CPU
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


def jit_train_step(mesh: Mesh, label_smoothing: float = 0.0):
    """``train_step`` jitted with the state replicated (and donated on accelerators), the batch
    sharded over ``batch``."""
    replicated, sharded = shardings(mesh)
    return jax.jit(functools.partial(train_step, label_smoothing=label_smoothing), in_shardings=(replicated, sharded),
                   out_shardings=(replicated, replicated), donate_argnums=state_donation(mesh.devices.flat[0].platform))


def jit_eval_step(mesh: Mesh):
    replicated, sharded = shardings(mesh)
    return jax.jit(eval_step, in_shardings=(replicated, sharded), out_shardings=(replicated, replicated))


def replicate(state: TrainState, mesh: Mesh) -> TrainState:
    """The state on every device of ``mesh``, from host copies: ``jax.device_put`` of a
    device array onto devices of several processes builds arrays Orbax cannot save (jax 0.10.2)."""
    replicated = shardings(mesh)[0]
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(replicated, np.asarray(a)), state)

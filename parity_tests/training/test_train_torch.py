"""Training parity with PyTorch: from the same weights and batches, K optax steps through
``steps.train_step`` equal K ``torch.optim`` steps on ``torch_ref``, in float64, for every
task's network (architecture x optimizer): an EncoderNet1d classifier (cross-entropy) and
regressor (MSE), AE1d, UNet1d, a vector-input DecoderNet1d (MSE) and a BatchNorm block in train
mode, whose running statistics are compared too.

Semantics pinned here (see ``steps.make_optimizer``): torch SGD momentum (dampening 0, no
nesterov) is optax's trace; Adam's eps is added to the bias-corrected sqrt(v) in both;
AdamW's decay is decoupled, p -= lr * wd * p, on every parameter.

Some gradients are zero in exact arithmetic (``train_helpers.dead_shortcut_biases``). Both
frameworks then see rounding noise (~1e-17), which Adam normalizes into an O(lr) step of
arbitrary sign. Those tensors are scored in the all-parameters vector only (as
``parity.compare`` does for gradients); every other tensor is scored on its own.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from train_helpers import dead_shortcut_biases

import torch_ref
from flax_resnet1d import port
from flax_resnet1d.config import AEConfig, BlockPlainConfig, DecoderConfig, EncoderConfig, UNetConfig
from flax_resnet1d.model import from_config
from flax_resnet1d.parity import random_state_dict, relative_error, to_flax_input
from flax_resnet1d.training import steps

STEPS = 5
TOLERANCE = 1e-10  # params (and running statistics) after STEPS steps, max|a-b|/max|b| per tensor, float64
LOSS_TOLERANCE = 1e-12
# All parameters as one vector, the structurally dead ones included: Adam turns their rounding-noise
# gradients (~1e-17) into steps of lr * noise / eps, up to ~1e-11 each.
VECTOR_TOLERANCE = 1e-9
BATCH = 8


@dataclasses.dataclass(frozen=True)
class Case:
    """A network, the task its step trains, and its batches' shapes (MDNC layout, no batch axis)."""

    config: object
    task: str
    x_shape: tuple[int, ...]
    dead: int  # tensors whose gradient is zero in exact arithmetic

    def batches(self, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(seed)
        out = self.config.output_shape((BATCH, *self.x_shape))
        return [(rng.standard_normal((BATCH, *self.x_shape)),
                 rng.integers(0, self.config.out_length, BATCH) if self.task == "classify"
                 else rng.standard_normal(out)) for _ in range(STEPS)]


ENCODER = EncoderConfig(6, (1, 2), "bottleneck", 3, in_planes=2, out_length=3)
CASES = {  # final encoder feature length 6 (LENGTH 24): instance norm stays well conditioned
    "EncoderNet1d-classify": Case(ENCODER, "classify", (2, 24), dead=2),
    "EncoderNet1d-regress": Case(dataclasses.replace(ENCODER, out_length=2), "regress", (2, 24), dead=2),
    "AE1d": Case(AEConfig(4, (1, 1), "bottleneck", 3, in_planes=2, out_planes=3), "signal", (2, 24), dead=1),
    "UNet1d": Case(UNetConfig(4, (1, 1), "plain", 3, in_planes=2, out_planes=2), "signal", (2, 24), dead=2),
    "DecoderNet1d": Case(DecoderConfig(4, (1, 2), 20, "plain", 3, in_length=5, out_planes=2), "signal", (5,), dead=1),
    "BlockPlain1d-batch": Case(BlockPlainConfig(3, 5, normalizer="batch", activator="prelu"), "signal", (3, 16),
                               dead=0),
}

OPTIMIZERS = {  # name: (optax kwargs for make_optimizer, torch optimizer factory)
    "sgd": (dict(learning_rate=0.05, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0, nesterov=False)),
    "adam": (dict(learning_rate=1e-2),
             lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8)),
    "adamw": (dict(learning_rate=1e-2, weight_decay=0.1),
              lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)),
}


def _torch_run(case: Case, state_dict, make_optimizer, batches):
    net = torch_ref.from_config(case.config).double().train()
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, strict=True)
    optimizer = make_optimizer(net.parameters())
    loss_fn = torch.nn.functional.cross_entropy if case.task == "classify" else torch.nn.functional.mse_loss
    losses, first_grads = [], None
    for x, y in batches:
        optimizer.zero_grad()
        loss = loss_fn(net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        first_grads = first_grads or {k: p.grad.numpy().copy() for k, p in net.named_parameters()}
        optimizer.step()
        losses.append(loss.item())
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}, losses, first_grads


def _jax_run(case: Case, state_dict, name, kwargs, batches):
    with jax.enable_x64(True):
        variables = port.torch_to_flax(state_dict, case.config)
        state = steps.TrainState.create(apply_fn=from_config(case.config).apply, params=variables["params"],
                                        tx=steps.make_optimizer(name, **kwargs),
                                        batch_stats=variables.get("batch_stats", {}))
        task = steps.Task(case.task, "cross_entropy" if case.task == "classify" else "mse")
        step = jax.jit(lambda state, batch: steps.train_step(state, batch, task))
        losses = []
        for x, y in batches:
            target = jnp.asarray(y, jnp.int32) if case.task == "classify" else jnp.asarray(
                y if y.ndim == 2 else to_flax_input(y))  # (B, C, L) -> (B, L, C)
            batch = {"x": jnp.asarray(to_flax_input(x)), "y": target, "mask": jnp.ones(BATCH, jnp.float64)}
            state, sums = step(state, batch)
            losses.append(float(sums["loss"]) / BATCH)  # the loss of the params before the step
        assert jax.tree.leaves(state.params)[0].dtype == jnp.float64
        return port.flax_to_torch(jax.device_get(state.variables()), case.config), losses


# Adam and AdamW on every network; SGD (no per-parameter normalization, nothing new per network) on the classifier.
RUNS = [(arch, name) for arch in CASES for name in ("adam", "adamw")] + [("EncoderNet1d-classify", "sgd")]


@pytest.mark.parametrize("arch, name", RUNS)
def test_optax_steps_match_torch_optim(arch, name):
    case = CASES[arch]
    kwargs, torch_optimizer = OPTIMIZERS[name]
    state_dict = random_state_dict(case.config, seed=11)
    batches = case.batches(seed=12)
    ref, ref_losses, grads = _torch_run(case, state_dict, torch_optimizer, batches)
    ours, losses = _jax_run(case, state_dict, name, kwargs, batches)

    scale = max(np.max(np.abs(g)) for g in grads.values())
    live = [k for k in grads if np.max(np.abs(grads[k])) > 1e4 * np.finfo(np.float64).eps * scale]
    stats = [k for k in ref if k not in grads]  # BatchNorm's running statistics: no gradient, updated by the step
    errors = {k: relative_error(ours[k], ref[k]) for k in live + stats}
    worst = max(errors, key=errors.get)
    flat = relative_error(np.concatenate([ours[k].ravel() for k in grads]),
                          np.concatenate([ref[k].ravel() for k in grads]))
    loss_error = relative_error(losses, ref_losses)
    print(f"{arch} {name}: {STEPS} float64 steps: worst of {len(errors)} tensors {worst}: {errors[worst]:.2e}; all "
          f"{len(grads)} parameters as one vector: {flat:.2e}; losses: {loss_error:.2e}")
    dead = set(grads) - set(live)
    assert len(dead) == case.dead and all(k.endswith(".bias") for k in dead)  # biases an instance norm removes
    if case.config.arch == "EncoderNet1d":
        assert dead == {row.torch_key for row in port.param_table(case.config)
                        if row.flax_path in dead_shortcut_biases(case.config)}
    assert errors[worst] <= TOLERANCE, f"{arch} {name}: {worst} differs by {errors[worst]:.2e} relative"
    assert flat <= VECTOR_TOLERANCE
    assert loss_error <= LOSS_TOLERANCE
    moved = {k: relative_error(ref[k], state_dict[k]) for k in live + stats}
    assert min(moved.values()) > 1e-6, "every live parameter must have been updated"  # else nothing is tested
    if case.config.has_batch_norm:
        counts = [k for k in stats if k.endswith("num_batches_tracked")]
        assert counts and all(int(ours[k]) == int(ref[k]) == int(state_dict[k]) + STEPS for k in counts)
    assert ref_losses[-1] != ref_losses[0]

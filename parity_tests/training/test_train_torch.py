"""Training parity with PyTorch: from the same weights and batches, K optax steps through
``steps.train_step`` equal K ``torch.optim`` steps on ``torch_ref``, in float64.

Semantics pinned here (see ``steps.make_optimizer``): torch SGD momentum (dampening 0, no
nesterov) is optax's trace; Adam's eps is added to the bias-corrected sqrt(v) in both;
AdamW's decay is decoupled, p -= lr * wd * p, on every parameter.

Some gradients are zero in exact arithmetic (``train_helpers.dead_shortcut_biases``). Both
frameworks then see rounding noise (~1e-17), which Adam normalizes into an O(lr) step of
arbitrary sign. Those tensors are scored in the all-parameters vector only (as
``parity.compare`` does for gradients); every other tensor is scored on its own.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from train_helpers import dead_shortcut_biases

import torch_ref
from flax_resnet1d import port
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.model import from_config
from flax_resnet1d.parity import random_state_dict, relative_error
from flax_resnet1d.training import steps

STEPS = 5
TOLERANCE = 1e-10  # params after STEPS steps, max|a-b|/max|b| per tensor, float64
CONFIG = EncoderConfig(6, (1, 2), "bottleneck", 3, in_planes=2, out_length=3)
BATCH, LENGTH = 8, 24  # final feature length 6: instance norm stays well conditioned

OPTIMIZERS = {  # name: (optax kwargs for make_optimizer, torch optimizer factory)
    "sgd": (dict(learning_rate=0.05, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0, nesterov=False)),
    "adam": (dict(learning_rate=1e-2),
             lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8)),
    "adamw": (dict(learning_rate=1e-2, weight_decay=0.1),
              lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)),
}


def _batches(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((BATCH, CONFIG.in_planes, LENGTH)), rng.integers(0, CONFIG.out_length, BATCH))
            for _ in range(STEPS)]


def _torch_run(state_dict, make_optimizer, batches):
    net = torch_ref.from_config(CONFIG).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
    optimizer = make_optimizer(net.parameters())
    losses, first_grads = [], None
    for x, y in batches:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        first_grads = first_grads or {k: p.grad.numpy().copy() for k, p in net.named_parameters()}
        optimizer.step()
        losses.append(loss.item())
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}, losses, first_grads


def _jax_run(state_dict, name, kwargs, batches):
    with jax.enable_x64(True):
        params = port.torch_to_flax(state_dict, CONFIG)["params"]
        state = steps.TrainState.create(apply_fn=from_config(CONFIG).apply, params=params,
                                        tx=steps.make_optimizer(name, **kwargs))
        step = jax.jit(steps.train_step)
        losses = []
        for x, y in batches:
            batch = {"x": jnp.asarray(np.swapaxes(x, 1, 2)), "y": jnp.asarray(y, jnp.int32),
                     "mask": jnp.ones(BATCH, jnp.float64)}
            state, sums = step(state, batch)
            losses.append(float(sums["loss"]) / BATCH)  # the loss of the params before the step
        assert jax.tree.leaves(state.params)[0].dtype == jnp.float64
        return port.flax_to_torch(jax.device_get(state.params), CONFIG), losses


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optax_steps_match_torch_optim(name):
    kwargs, torch_optimizer = OPTIMIZERS[name]
    state_dict = random_state_dict(CONFIG, seed=11)
    batches = _batches(seed=12)
    ref, ref_losses, grads = _torch_run(state_dict, torch_optimizer, batches)
    ours, losses = _jax_run(state_dict, name, kwargs, batches)

    scale = max(np.max(np.abs(g)) for g in grads.values())
    live = [k for k in ref if np.max(np.abs(grads[k])) > 1e4 * np.finfo(np.float64).eps * scale]
    errors = {k: relative_error(ours[k], ref[k]) for k in live}
    worst = max(errors, key=errors.get)
    flat = relative_error(np.concatenate([ours[k].ravel() for k in ref]), np.concatenate([ref[k].ravel() for k in ref]))
    print(f"{name}: {STEPS} float64 steps: worst of {len(live)} tensors {worst}: {errors[worst]:.2e}; all "
          f"{len(ref)} tensors as one vector: {flat:.2e}; losses: {relative_error(losses, ref_losses):.2e}")
    dead = {row.torch_key for row in port.param_table(CONFIG) if row.flax_path in dead_shortcut_biases(CONFIG)}
    assert set(ref) - set(live) == dead and len(dead) == 2  # exactly the structurally zero gradients
    assert errors[worst] <= TOLERANCE, f"{name}: {worst} differs by {errors[worst]:.2e} relative"
    assert flat <= TOLERANCE
    assert relative_error(losses, ref_losses) <= TOLERANCE
    moved = {k: relative_error(ref[k], state_dict[k]) for k in live}
    assert min(moved.values()) > 1e-6, "every live parameter must have been updated"  # else nothing is tested
    assert ref_losses[-1] != ref_losses[0]

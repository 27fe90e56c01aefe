"""Flax NNX: every architecture's MDNC checkpoint, ported, gives torch_ref's outputs as an NNX
module, and NNX's gradients are the Linen module's (the docs' NNX training example takes its steps)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from checkpoint_helpers import FAMILY_EXAMPLES
from conftest import FAMILY_DIR, load_mdnc_fixture
from flax import nnx

import torch_ref
from flax_resnet1d import load_nnx, port, to_nnx
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.model import from_config
from flax_resnet1d.parity import relative_error, to_flax_input


@pytest.mark.parametrize("name", FAMILY_EXAMPLES.values(), ids=FAMILY_EXAMPLES.keys())
def test_a_ported_mdnc_checkpoint_gives_torch_refs_outputs_in_nnx(name):
    case = load_mdnc_fixture(FAMILY_DIR, name)
    x = case.arrays["x"].astype(np.float32)
    net = torch_ref.from_config(case.config).eval()
    net.load_state_dict(case.state_dict, strict=True)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    module = load_nnx(FAMILY_DIR / f"{name}.pt", config=case.config)
    assert isinstance(module, nnx.Module)
    outputs = nnx.jit(lambda module, x: module(x))(module, to_flax_input(x))
    assert relative_error(to_flax_input(np.asarray(outputs)), expected) <= 1e-5


def test_nnx_gradients_are_the_linen_gradients(make_flax_variables):
    config = EncoderConfig(4, (1, 1), "bottleneck", 3, in_planes=2, out_length=3)
    variables = make_flax_variables(config, "float32", seed=1)
    module = to_nnx(config, variables)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((6, 16, 2)), jnp.float32)
    y = jnp.asarray([0, 1, 2, 0, 1, 2])

    def loss(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    grads = nnx.jit(nnx.grad(loss))(module)
    linen_grads = jax.jit(jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        from_config(config).apply({"params": p}, x), y).mean()))(variables["params"])
    nnx_grads = port.flax_to_torch(nnx.to_pure_dict(grads), config)
    for key, expected in port.flax_to_torch(linen_grads, config).items():
        assert relative_error(nnx_grads[key], expected) <= 1e-4, key

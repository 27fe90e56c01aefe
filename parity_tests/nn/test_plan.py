"""The plans' forward flow and the fused NormAct layer.

The float64 parity tests prove each flow's topology against the reference; these check that
each flow is well formed (every applied prefix is a leaf, every leaf with parameters applied
once, every saved name saved before use), that ``config``'s length walk over it matches what
both implementations produce, and that the Flax ``NormAct`` computes the two layers it fuses.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_ref
from flax_resnet1d import config_from_dict, plan as P
from flax_resnet1d.errors import ConfigError
from flax_resnet1d.model import InstanceNorm1d, NormAct, PReLU, from_config
from flax_resnet1d.parity import dtype_context, relative_error

CONFIGS = [
    {"arch": "BlockPlain1d", "in_planes": 3, "out_planes": 5, "stride": 2},
    {"arch": "BlockBottleneck1d", "in_planes": 4, "out_planes": 4, "normalizer": "inst", "activator": "relu"},
    {"arch": "EncoderNet1d", "channel": 3, "layers": [1, 2, 1], "block": "plain", "in_planes": 2, "out_length": 4},
    {"arch": "EncoderNet1d", "channel": 3, "layers": [2, 1], "kernel_size": 5, "out_length": None},
    {"arch": "DecoderNet1d", "channel": 2, "layers": [1, 2], "out_size": 23, "in_length": 3},
    {"arch": "DecoderNet1d", "channel": 2, "layers": [2, 1, 1], "out_size": 40, "in_length": None, "out_planes": 2},
    {"arch": "AE1d", "channel": 2, "layers": [2, 3, 2], "block": "plain", "in_planes": 2, "out_planes": 3},
    {"arch": "UNet1d", "channel": 2, "layers": [1, 2, 2], "kernel_size": 5, "in_planes": 2},
]


def ids(d: dict) -> str:
    return "-".join(str(v) for v in d.values())


@pytest.mark.parametrize("d", CONFIGS, ids=ids)
def test_flow_is_well_formed(d):
    plan = config_from_dict(d).plan()
    applied = [step.prefix for step in plan.flow if isinstance(step, (P.Apply, P.Pool))]
    assert sorted(applied) == sorted(plan.leaves)  # each leaf once (the pool by Pool)
    assert all(isinstance(plan.leaves[step.prefix].node, P.AvgPool) == isinstance(step, P.Pool)
               for step in plan.flow if isinstance(step, (P.Apply, P.Pool)))
    saved = set()
    for step in plan.flow:
        if isinstance(step, P.Save):
            assert step.name not in saved
            saved.add(step.name)
        name = step.name if isinstance(step, P.ConcatSkip) else getattr(step, "length", None)
        assert not isinstance(name, str) or name in saved


def test_a_network_too_deep_to_search_is_refused_at_once():
    config = config_from_dict({"arch": "EncoderNet1d", "channel": 2, "layers": [1] * 30})
    with pytest.raises(ConfigError, match=r"30 stages need inputs of about 2\*\*30 steps"):
        config.min_length()


@pytest.mark.parametrize("d", CONFIGS, ids=ids)
def test_length_walk_matches_both_implementations(d):
    config = config_from_dict(d)
    vector = getattr(config, "is_vector_input", False)
    shape = (2, config.in_length) if vector else (2, config.in_channels, config.min_length() + 5)
    expected = config.output_shape(shape)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    model = from_config(config)
    x_flax = x if vector else np.swapaxes(x, 1, 2)
    y = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], x_flax)
    assert (y.shape if len(expected) == 2 else (y.shape[0], y.shape[2], y.shape[1])) == expected
    with torch.no_grad():
        assert tuple(torch_ref.from_config(config)(torch.from_numpy(x)).shape) == expected


def norm_act_seqs(d: dict) -> list[P.Seq]:
    block = config_from_dict(d).plan().node("")
    return [seq for _, _, seq in block.seqs()]


@pytest.mark.parametrize("activator", ["prelu", "null", "relu"])
@pytest.mark.parametrize("layer_order", ["new", "old"])
def test_only_the_new_order_pinst_norm_is_fused(activator, layer_order):
    d = {"arch": "BlockPlain1d", "in_planes": 3, "out_planes": 5, "stride": 2, "activator": activator,
         "layer_order": layer_order}
    branch, _, shortcut = norm_act_seqs(d)
    fused = [layer for _, layer in branch.layers if isinstance(layer, P.NormAct)]
    assert len(fused) == (layer_order == "new" and activator != "relu")
    assert [type(layer) for _, layer in shortcut.layers][-1] is (P.NormAct if layer_order == "new" else P.Norm)
    for seq in (branch, shortcut):  # MDNC's Sequential entries: the NormAct is its two layers
        entries = [layer for _, layer in seq.sequential()]
        assert not any(isinstance(layer, P.NormAct) for layer in entries)
        assert len(entries) == sum(len(layer.parts()) if isinstance(layer, P.NormAct) else 1 for _, layer in seq.layers)


@pytest.mark.parametrize("prelu", [True, False])
def test_fused_norm_act_matches_the_two_layers(prelu):
    """``NormAct(norm, act)`` (one fused kernel) equals ``act(norm(x))`` (plain jnp) in value and
    every gradient, and keeps each layer's parameters under the layer's own name."""

    class Layers(nn.Module):
        fused: bool

        @nn.compact
        def __call__(self, x):
            norm = InstanceNorm1d(6, name="norm")
            act = PReLU(6, name="act") if prelu else None
            if self.fused:
                return NormAct(norm, act)(x)
            return norm(x) if act is None else act(norm(x))

    with dtype_context("float64"):
        rng = np.random.default_rng(3)
        x = jnp.asarray(rng.normal(0.5, 2.0, size=(2, 11, 6)), jnp.float64)
        params = {"norm": {"scale": rng.normal(size=6), "bias": rng.normal(size=6)}}
        if prelu:
            params["act"] = {"negative_slope": rng.normal(size=6)}
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        initial = Layers(True).init(jax.random.key(0), x)["params"]
        assert jax.tree.map(jnp.shape, initial) == jax.tree.map(jnp.shape, params)
        cotangent = jnp.asarray(rng.normal(size=x.shape), jnp.float64)

        def value_and_grads(fused):
            y, pullback = jax.vjp(lambda p, x: Layers(fused).apply({"params": p}, x), params, x)
            return y, pullback(cotangent)

        for got, want in zip(jax.tree.leaves(value_and_grads(True)), jax.tree.leaves(value_and_grads(False))):
            assert relative_error(got, want) <= 1e-12

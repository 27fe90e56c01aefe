"""The mdnc-family fixtures: blocks over every option, DecoderNet1d (vector and feature-map
input), AE1d, UNet1d and EncoderNet1d saved by the original library, with inputs and the
outputs it computed (copied into parity_tests/data/mdnc-family). Each one loads strictly into
torch_ref and into Flax, both reproduce MDNC's outputs (eval float32/float64; BatchNorm train
mode and the updated running statistics), Flax matches the reference's gradients, and the
port is bit-exact both ways."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import torch_ref
from flax_resnet1d import parity, port
from flax_resnet1d.model import from_config

STATS = "stats_after."


@pytest.fixture(params=["float32", "float64"])
def dtype(request) -> str:
    return request.param


def cotangent(name: str, meta: dict) -> np.ndarray:
    return np.random.default_rng(len(name)).normal(size=meta["output_shape"])


def test_plan_gives_mdnc_keys_shapes_and_counts(family_fixture):
    name, meta, config, state_dict, _ = family_fixture
    rows = port.param_table(config)
    assert [row.torch_key for row in rows] == list(state_dict)  # MDNC's own key order
    assert all(row.torch_shape == tuple(state_dict[row.torch_key].shape) for row in rows)
    assert len(rows) == meta["keys"]
    net = torch_ref.from_config(config)
    assert sum(p.numel() for p in net.parameters()) == meta["params"]
    assert sum(int(np.prod(row.torch_shape)) for row in rows if row.collection == "params") == meta["params"]
    assert config.has_batch_norm == meta["has_batch_norm"]
    assert config.output_shape(meta["input_shape"]) == tuple(meta["output_shape"])
    if "nlayers" in meta:
        assert from_config(config).nlayers == net.nlayers == config.nlayers == meta["nlayers"]


def test_torch_ref_loads_strictly_and_reproduces_mdnc(family_fixture, dtype):
    name, meta, config, state_dict, arrays = family_fixture
    net = torch_ref.from_config(config)
    net.load_state_dict(state_dict, strict=True)
    net = net.to(getattr(torch, dtype)).eval()
    x = torch.as_tensor(arrays["x"]).to(getattr(torch, dtype))
    with torch.no_grad():
        y = net(x).numpy()
    assert list(y.shape) == meta["output_shape"]
    assert parity.relative_error(y, arrays[f"y_{dtype}"]) <= parity.TOLERANCES[dtype]["output"]
    if meta["has_batch_norm"] and dtype == "float64":
        y_train = net.train()(x).detach().numpy()
        assert parity.relative_error(y_train, arrays["y_train_float64"]) <= 1e-12
        buffers = dict(net.named_buffers())
        for key in (k for k in arrays if k.startswith(STATS)):
            after = buffers[key[len(STATS):]].numpy()
            assert after.dtype == arrays[key].dtype  # float64 statistics, int64 counts
            assert parity.relative_error(after, arrays[key]) <= 1e-12, key


def test_flax_reproduces_mdnc_with_gradients(family_fixture, dtype, parity_log):
    """torch_to_flax of the MDNC weights gives MDNC's stored output, and the reference's gradients
    (input and every parameter)."""
    name, meta, config, state_dict, arrays = family_fixture
    ours = parity.flax_outputs(state_dict, config, arrays["x"], cotangent(name, meta), dtype)
    ref = parity.torch_outputs(state_dict, config, arrays["x"], cotangent(name, meta), dtype)
    assert parity.relative_error(ours.y, arrays[f"y_{dtype}"]) <= parity.TOLERANCES[dtype]["output"]
    rows = parity.compare(ours, ref, dtype)
    parity_log.extend((f"family {meta['arch']}", row) for row in rows)
    assert not [row for row in rows if not row.passed]


def test_flax_batch_norm_train_mode_reproduces_mdnc(batch_norm_fixture, dtype, parity_log):
    """Train mode: MDNC's output and its running statistics after the step (stored in float64:
    1e-12 in float64, the float32 output bound in float32), num_batches_tracked counted and
    returned as int64; gradients and statistics as the reference's in the same dtype."""
    name, meta, config, state_dict, arrays = batch_norm_fixture
    ct = cotangent(name, meta)
    ours = parity.flax_outputs(state_dict, config, arrays["x"], ct, dtype, train=True)
    ref = parity.torch_outputs(state_dict, config, arrays["x"], ct, dtype, train=True)
    bound = parity.TOLERANCES[dtype]["output"]
    assert parity.relative_error(ours.y, arrays["y_train_float64"]) <= bound
    expected = {k[len(STATS):]: v for k, v in arrays.items() if k.startswith(STATS)}
    assert set(ours.stats) == set(expected)
    for key, value in expected.items():
        assert parity.relative_error(ours.stats[key], value) <= bound, key
        if key.endswith("num_batches_tracked"):
            assert ours.stats[key].dtype == np.int64 and ours.stats[key] == value
    rows = parity.compare(ours, ref, dtype)
    parity_log.extend((f"family {meta['arch']} train", row) for row in rows)
    assert not [row for row in rows if not row.passed]


def test_port_is_bit_exact_both_ways(family_fixture):
    name, meta, config, state_dict, _ = family_fixture
    variables = port.torch_to_flax(state_dict, config)
    assert set(variables) == ({"params", "batch_stats"} if meta["has_batch_norm"] else {"params"})
    back = port.flax_to_torch(variables, config.to_dict())  # a dict with 'arch' works as the config
    assert list(back) == list(state_dict)
    for key, tensor in state_dict.items():
        original = tensor.numpy()
        assert back[key].dtype == original.dtype and back[key].tobytes() == original.tobytes(), key
    again = port.torch_to_flax(back, config)
    assert jax.tree.all(jax.tree.map(lambda a, b: a.dtype == b.dtype and np.array_equal(a, b), again, variables))
    x = parity.to_flax_input(np.zeros(meta["input_shape"], np.float32))
    shapes = jax.eval_shape(lambda: from_config(config).init(jax.random.key(0), x))
    assert jax.tree.structure(shapes) == jax.tree.structure(variables)  # the port builds what the model declares


def test_infer_config_reads_what_the_weights_determine(family_fixture):
    """EncoderNet1d, AE1d and UNet1d come back whole; a decoder's out_size and a block's
    stride/padding/output_size are not in the weights: a clear error asks for the config."""
    name, meta, config, state_dict, _ = family_fixture
    if meta["arch"] in ("EncoderNet1d", "AE1d", "UNet1d"):
        assert port.infer_config(state_dict) == config
        return
    with pytest.raises(port.CheckpointError) as error:
        port.infer_config(state_dict)
    message = str(error.value)
    assert message.startswith(meta["arch"]) and "give the config" in message
    if meta["arch"] == "DecoderNet1d":
        assert "out_size is not in the weights" in message and f"layers={meta['kwargs']['layers']}" in message
    else:
        assert "stride, padding and output_size are not in the weights" in message
        options = meta["kwargs"]
        assert f"normalizer={options['normalizer']!r}, activator={options['activator']!r}" in message

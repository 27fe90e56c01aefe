"""The MDNC fixtures: state dicts saved by the original library, with inputs and the outputs it
computed (copied into parity_tests/data): EncoderNet1d checkpoints (data/mdnc) and every
architecture, blocks over every option included (data/mdnc-family); ids ``arch-name``. Each one
loads strictly into torch_ref and into Flax in MDNC's key order, both reproduce MDNC's outputs
(eval float32/float64; BatchNorm train mode and the updated running statistics), Flax matches
the reference's gradients, and the port is bit-exact both ways."""

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


def cotangent(fixture) -> np.ndarray:
    return np.random.default_rng(len(fixture.name)).normal(size=fixture.output_shape)


def test_plan_gives_mdnc_keys_shapes_and_counts(mdnc_fixture):
    f = mdnc_fixture
    rows = port.param_table(f.config)
    assert [row.torch_key for row in rows] == list(f.state_dict)  # MDNC's own key order
    assert all(row.torch_shape == tuple(f.state_dict[row.torch_key].shape) for row in rows)
    assert len(rows) == f.keys
    net = torch_ref.from_config(f.config)
    assert sum(p.numel() for p in net.parameters()) == f.params
    assert sum(int(np.prod(row.torch_shape)) for row in rows if row.collection == "params") == f.params
    assert f.config.has_batch_norm == f.has_batch_norm
    assert f.config.output_shape(f.input_shape) == tuple(f.output_shape)
    if f.nlayers is not None:
        assert from_config(f.config).nlayers == net.nlayers == f.config.nlayers == f.nlayers


def test_torch_ref_loads_strictly_and_reproduces_mdnc(mdnc_fixture, dtype):
    f = mdnc_fixture
    net = torch_ref.from_config(f.config)
    net.load_state_dict(f.state_dict, strict=True)
    net = net.to(getattr(torch, dtype)).eval()
    x = torch.as_tensor(f.arrays["x"]).to(getattr(torch, dtype))
    with torch.no_grad():
        y = net(x).numpy()
    assert list(y.shape) == f.output_shape
    assert parity.relative_error(y, f.arrays[f"y_{dtype}"]) <= parity.TOLERANCES[dtype]["output"]
    if f.has_batch_norm and dtype == "float64":
        y_train = net.train()(x).detach().numpy()
        assert parity.relative_error(y_train, f.arrays["y_train_float64"]) <= 1e-12
        buffers = dict(net.named_buffers())
        for key in (k for k in f.arrays if k.startswith(STATS)):
            after = buffers[key[len(STATS):]].numpy()
            assert after.dtype == f.arrays[key].dtype  # float64 statistics, int64 counts
            assert parity.relative_error(after, f.arrays[key]) <= 1e-12, key


def test_flax_reproduces_mdnc_with_gradients(mdnc_fixture, dtype, parity_log):
    """torch_to_flax of the MDNC weights gives MDNC's stored output, and the reference's gradients
    (input and every parameter)."""
    f = mdnc_fixture
    ours = parity.flax_outputs(f.state_dict, f.config, f.arrays["x"], cotangent(f), dtype)
    ref = parity.torch_outputs(f.state_dict, f.config, f.arrays["x"], cotangent(f), dtype)
    assert parity.relative_error(ours.y, f.arrays[f"y_{dtype}"]) <= parity.TOLERANCES[dtype]["output"]
    rows = parity.compare(ours, ref, dtype)
    parity_log.extend((f.source, row) for row in rows)
    failed = [row for row in rows if not row.passed]
    assert not failed, failed


def test_flax_batch_norm_train_mode_reproduces_mdnc(batch_norm_fixture, dtype, parity_log):
    """Train mode: MDNC's output and its running statistics after the step (stored in float64:
    1e-12 in float64, the float32 output bound in float32), num_batches_tracked counted and
    returned as int64; gradients and statistics as the reference's in the same dtype."""
    f = batch_norm_fixture
    ct = cotangent(f)
    ours = parity.flax_outputs(f.state_dict, f.config, f.arrays["x"], ct, dtype, train=True)
    ref = parity.torch_outputs(f.state_dict, f.config, f.arrays["x"], ct, dtype, train=True)
    bound = parity.TOLERANCES[dtype]["output"]
    assert parity.relative_error(ours.y, f.arrays["y_train_float64"]) <= bound
    expected = {k[len(STATS):]: v for k, v in f.arrays.items() if k.startswith(STATS)}
    assert set(ours.stats) == set(expected)
    for key, value in expected.items():
        assert parity.relative_error(ours.stats[key], value) <= bound, key
        if key.endswith("num_batches_tracked"):
            assert ours.stats[key].dtype == np.int64 and ours.stats[key] == value
    rows = parity.compare(ours, ref, dtype)
    parity_log.extend((f"{f.source} train", row) for row in rows)
    assert not [row for row in rows if not row.passed]


def test_port_is_bit_exact_both_ways(mdnc_fixture):
    f = mdnc_fixture
    variables = port.torch_to_flax(f.state_dict, f.config)
    assert set(variables) == ({"params", "batch_stats"} if f.has_batch_norm else {"params"})
    back = port.flax_to_torch(variables, f.config.to_dict())  # a dict with 'arch' works as the config
    assert list(back) == list(f.state_dict)
    for key, tensor in f.state_dict.items():
        original = tensor.numpy()
        assert back[key].dtype == original.dtype and back[key].tobytes() == original.tobytes(), key
    again = port.torch_to_flax(back, f.config)
    assert jax.tree.all(jax.tree.map(lambda a, b: a.dtype == b.dtype and np.array_equal(a, b), again, variables))
    x = parity.to_flax_input(np.zeros(f.input_shape, np.float32))
    shapes = jax.eval_shape(lambda: from_config(f.config).init(jax.random.key(0), x))
    assert jax.tree.structure(shapes) == jax.tree.structure(variables)  # the port builds what the model declares


def test_infer_config_reads_what_the_weights_determine(mdnc_fixture):
    """EncoderNet1d, AE1d and UNet1d come back whole; a decoder's out_size and a block's
    stride/padding/output_size are not in the weights: a clear error asks for the config."""
    f = mdnc_fixture
    if f.arch in ("EncoderNet1d", "AE1d", "UNet1d"):
        assert port.infer_config(f.state_dict) == f.config
        return
    with pytest.raises(port.CheckpointError) as error:
        port.infer_config(f.state_dict)
    message = str(error.value)
    assert message.startswith(f.arch) and "give the config" in message
    if f.arch == "DecoderNet1d":
        assert "out_size is not in the weights" in message and f"layers={f.kwargs['layers']}" in message
    else:
        assert "stride, padding and output_size are not in the weights" in message
        assert f"normalizer={f.kwargs['normalizer']!r}, activator={f.kwargs['activator']!r}" in message

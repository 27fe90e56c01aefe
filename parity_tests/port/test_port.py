"""flax_resnet1d.port: bit-exact round trips, input types, the ``module.`` prefix, strict
errors listing every offending key, and config inference."""

from __future__ import annotations

import jax
import ml_dtypes
import numpy as np
import pytest
import torch

import torch_ref
from flax_resnet1d import parity, port
from flax_resnet1d.config import PRESETS, EncoderConfig, preset_config

CONFIG = EncoderConfig(6, (2, 1, 2), "bottleneck", 5, 3, 4)
ROUND_TRIP_DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def noise(*shape) -> np.ndarray:
    return np.random.default_rng(sum(shape)).normal(size=shape)


def shapes_only(config: EncoderConfig) -> dict[str, np.ndarray]:
    """A state dict with the right keys and shapes, without memory (config inference reads shapes only)."""
    return {row.torch_key: np.broadcast_to(np.float32(0.5), row.torch_shape) for row in port.param_table(config)}


@pytest.mark.parametrize("dtype", ROUND_TRIP_DTYPES, ids=lambda d: np.dtype(d).name)
def test_torch_flax_torch_is_bit_exact(dtype):
    state_dict = {k: v.astype(dtype) for k, v in parity.random_state_dict(CONFIG, seed=1).items()}
    back = port.flax_to_torch(port.torch_to_flax(state_dict))
    assert list(back) == list(state_dict)
    assert all(same_bits(back[k], state_dict[k]) for k in state_dict)


@pytest.mark.parametrize("dtype", ROUND_TRIP_DTYPES, ids=lambda d: np.dtype(d).name)
def test_flax_torch_flax_is_bit_exact(dtype, make_flax_variables):
    variables = jax.tree.map(lambda v: v.astype(dtype), make_flax_variables(CONFIG, "float64", seed=2))
    back = port.torch_to_flax(port.flax_to_torch(variables))
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    assert jax.tree.all(jax.tree.map(same_bits, back, variables))


def test_torch_tensors_and_numpy_arrays_give_the_same_variables():
    arrays = parity.random_state_dict(CONFIG, seed=3)
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    from_tensors, from_arrays = port.torch_to_flax(tensors), port.torch_to_flax(arrays)
    assert jax.tree.all(jax.tree.map(same_bits, from_tensors, from_arrays))


def test_export_loads_strictly_into_the_reference(make_flax_variables):
    exported = port.flax_to_torch(make_flax_variables(CONFIG, "float32", seed=4))
    net = torch_ref.from_config(CONFIG)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
    assert all(same_bits(p.detach().numpy(), exported[k]) for k, p in net.state_dict().items())


def test_module_prefix_is_stripped():
    state_dict = parity.random_state_dict(CONFIG, seed=5)
    wrapped = {f"module.{k}": v for k, v in state_dict.items()}  # as saved from DataParallel/DDP
    assert port.infer_config(wrapped) == CONFIG
    assert jax.tree.all(jax.tree.map(same_bits, port.torch_to_flax(wrapped), port.torch_to_flax(state_dict)))


def test_one_strict_error_lists_every_offending_key_with_both_shapes():
    state_dict = parity.random_state_dict(CONFIG, seed=6)
    missing = ["netbody.2.conv_scale.conv2.2.weight", "fc.bias"]
    for key in missing:
        del state_dict[key]
    state_dict["netbody.1.conv_list.0.conv4.0.weight"] = noise(6)
    state_dict["head.weight"] = noise(4, 24)
    state_dict["netbody.1.conv_list.0.conv2.2.weight"] = noise(6, 6, 3)  # expected (6, 6, 5)
    state_dict["netbody.3.conv_scale.in_node.1.bias"] = noise(12)  # expected (24,)
    for convert in (lambda sd: port.torch_to_flax(sd, CONFIG), port.torch_to_flax, port.infer_config):
        with pytest.raises(port.CheckpointError) as error:
            convert(state_dict)
        message = str(error.value)
        assert "2 missing keys" in message and all(key in message for key in missing)
        assert "2 unexpected keys" in message
        assert "netbody.1.conv_list.0.conv4.0.weight" in message and "head.weight" in message
        assert "2 shape mismatches" in message
        assert "netbody.1.conv_list.0.conv2.2.weight: checkpoint (6, 6, 3) vs expected (6, 6, 5)" in message
        assert "netbody.3.conv_scale.in_node.1.bias: checkpoint (12,) vs expected (24,)" in message
    assert issubclass(port.CheckpointError, ValueError)


def test_strict_error_on_export_lists_every_offending_leaf(make_flax_variables):
    params = make_flax_variables(CONFIG, "float32", seed=7)["params"]
    del params["stage2_block1"]["conv1"]["act"]
    params["stage1_block1"]["conv2"]["conv"]["kernel"] = noise(3, 6, 6).astype(np.float32)  # expected (5, 6, 6)
    params["extra"] = {"kernel": noise(2, 2).astype(np.float32)}
    with pytest.raises(port.CheckpointError) as error:
        port.flax_to_torch({"params": params}, CONFIG)
    message = str(error.value)
    assert "1 missing keys: netbody.2.conv_scale.conv1.1.weight" in message
    assert "1 unexpected keys: extra/kernel" in message
    assert "netbody.1.conv_list.0.conv2.2.weight: checkpoint (6, 6, 3) vs expected (6, 6, 5)" in message


def test_long_error_lists_are_counted_and_truncated():
    state_dict = parity.random_state_dict(CONFIG, seed=8)
    dropped = [k for k in state_dict if k.startswith("netbody.1.")]
    for key in dropped:
        del state_dict[key]
    with pytest.raises(port.CheckpointError, match=f"{len(dropped)} missing keys: .* and {len(dropped) - 20} more"):
        port.torch_to_flax(state_dict, CONFIG)


def test_infer_config_on_every_grid_config(grid_case):
    config = grid_case.config
    assert port.infer_config(shapes_only(config)) == config
    assert port.config_from_variables(port.torch_to_flax(shapes_only(config))) == config


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("in_planes, out_length, kernel_size", [(1, 2, 3), (3, None, 7), (2, 10, 1)])
def test_infer_config_on_presets(name, in_planes, out_length, kernel_size):
    config = preset_config(name, in_planes, out_length, kernel_size)
    assert port.infer_config(shapes_only(config)) == config


def test_infer_config_rejects_other_networks():
    with pytest.raises(port.CheckpointError, match="not an EncoderNet1d state dict.*first keys: conv.weight"):
        port.infer_config({"conv.weight": noise(2, 2, 3), "fc.weight": noise(2, 2)})


def test_a_missing_weight_is_named_even_when_its_bias_is_there():
    state_dict = parity.random_state_dict(CONFIG, seed=9)
    del state_dict["fc.weight"]
    with pytest.raises(port.CheckpointError, match=r"1 missing keys: fc.weight$"):
        port.infer_config(state_dict)


FAMILY_CONFIGS = [  # one per architecture; configs as dicts with 'arch', as in a config.json
    {"arch": "DecoderNet1d", "channel": 4, "layers": [2, 1], "out_size": 19, "block": "bottleneck", "kernel_size": 5,
     "in_length": 3, "out_planes": 2},
    {"arch": "DecoderNet1d", "channel": 4, "layers": [1, 2], "out_size": 9, "kernel_size": 1, "in_length": None},
    {"arch": "AE1d", "channel": 4, "layers": [1, 2, 1], "block": "plain", "kernel_size": 1, "in_planes": 2},
    {"arch": "UNet1d", "channel": 4, "layers": [2, 2, 2], "block": "bottleneck", "kernel_size": 3, "out_planes": 3},
    {"arch": "BlockPlain1d", "in_planes": 3, "out_planes": 5, "normalizer": "batch", "activator": "relu",
     "layer_order": "old", "scaler": "up", "stride": 2},
    {"arch": "BlockBottleneck1d", "in_planes": 4, "out_planes": 4, "kernel_size": 5, "padding": 2,
     "normalizer": "batch"},
]


@pytest.mark.parametrize("config", FAMILY_CONFIGS, ids=lambda c: c["arch"])
@pytest.mark.parametrize("direction", ["torch->flax->torch", "flax->torch->flax"])
def test_every_architecture_round_trips_bit_exactly(config, direction, make_flax_variables):
    from flax_resnet1d.config import config_from_dict

    parsed = config_from_dict(config)
    if direction == "torch->flax->torch":
        state_dict = parity.random_state_dict(parsed, seed=10)
        back = port.flax_to_torch(port.torch_to_flax(state_dict, config), config)
        assert list(back) == list(state_dict) and all(same_bits(back[k], state_dict[k]) for k in state_dict)
        net = torch_ref.from_config(config)
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in back.items()}, strict=True)
    else:
        variables = make_flax_variables(parsed, "float32", seed=11)
        back = port.torch_to_flax(port.flax_to_torch(variables, config), config)
        assert jax.tree.structure(back) == jax.tree.structure(variables)
        assert jax.tree.all(jax.tree.map(same_bits, back, variables))


def test_num_batches_tracked_is_int64_in_torch_and_int32_in_flax():
    config = FAMILY_CONFIGS[-1]
    state_dict = parity.random_state_dict(config, seed=12)
    state_dict["conv1.0.num_batches_tracked"] = np.int64(2**31 - 1)  # the largest count int32 holds
    variables = port.torch_to_flax(state_dict, config)
    counter = variables["batch_stats"]["conv1"]["norm"]["num_batches_tracked"]
    assert counter.dtype == np.int32 and counter == 2**31 - 1
    back = port.flax_to_torch(variables, config)
    assert back["conv1.0.num_batches_tracked"].dtype == np.int64
    assert back["conv1.0.num_batches_tracked"] == 2**31 - 1


@pytest.mark.parametrize("name", ["ae16", "ae32", "unet32", "unet44"])
def test_infer_config_on_family_presets(name):
    config = preset_config(name, 2, 3, 5)
    assert port.infer_config(shapes_only(config)) == config


def test_infer_config_tells_apart_what_only_the_sequential_indices_show():
    """inst / relu / new and inst / null / new have no norm keys at all: the conv's index tells."""
    from flax_resnet1d.config import BlockPlainConfig

    for activator, index in (("relu", 2), ("null", 1)):
        config = BlockPlainConfig(4, 4, normalizer="inst", activator=activator)
        assert [row.torch_key for row in port.param_table(config)] == [f"conv1.{index}.weight", f"conv2.{index}.weight"]
        with pytest.raises(port.CheckpointError) as error:
            port.infer_config(shapes_only(config))
        assert f"normalizer='inst', activator={activator!r}, layer_order='new'" in str(error.value)
        assert ("activator='relu'" in str(error.value)) == (activator == "relu")

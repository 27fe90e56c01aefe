"""The MDNC fixtures: state dicts saved by the original library, with inputs and the outputs
it computed in float32 and float64 (copied into parity_tests/data/mdnc)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torch_ref
from flax_resnet1d import parity, port
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.model import from_config


@pytest.fixture(params=["float32", "float64"])
def dtype(request) -> str:
    return request.param


def test_manifest_config_and_counts(mdnc_fixture):
    name, meta, state_dict, _ = mdnc_fixture
    config = EncoderConfig.from_dict(meta["config"])
    assert port.infer_config(state_dict) == config
    assert from_config(config).nlayers == torch_ref.from_config(config).nlayers == meta["nlayers"]
    rows = port.param_table(config)
    assert len(state_dict) == len(rows) == meta["n_state_dict_keys"]
    assert [row.torch_key for row in rows] == list(state_dict)  # MDNC's own key order
    assert sum(v.numel() for v in state_dict.values()) == meta["n_params"]
    assert sum(p.numel() for p in torch_ref.from_config(config).parameters()) == meta["n_params"]


def test_torch_ref_loads_strictly_and_reproduces_mdnc(mdnc_fixture, dtype):
    name, meta, state_dict, arrays = mdnc_fixture
    net = torch_ref.from_config(EncoderConfig.from_dict(meta["config"]))
    net.load_state_dict(state_dict, strict=True)
    net = net.to(getattr(torch, dtype)).eval()
    with torch.no_grad():
        y = net(torch.as_tensor(arrays["x"]).to(getattr(torch, dtype))).numpy()
    assert list(y.shape) == meta["output_shape"]
    assert parity.relative_error(y, arrays[f"y_{dtype}"]) <= parity.TOLERANCES[dtype]["output"]


def test_flax_reproduces_mdnc_with_gradients(mdnc_fixture, dtype, parity_log):
    """torch_to_flax of the MDNC weights gives MDNC's stored output, and the gradients of the
    reference (input and every parameter)."""
    name, meta, state_dict, arrays = mdnc_fixture
    config = EncoderConfig.from_dict(meta["config"])
    x = arrays["x"]
    cotangent = np.random.default_rng(len(name)).normal(size=meta["output_shape"])
    ours = parity.flax_outputs(state_dict, config, x, cotangent, dtype)
    ref = parity.torch_outputs(state_dict, config, x, cotangent, dtype)
    assert parity.relative_error(ours.y, arrays[f"y_{dtype}"]) <= parity.TOLERANCES[dtype]["output"]
    rows = parity.compare(ours, ref, dtype)
    parity_log.extend(("MDNC fixtures", row) for row in rows)
    failed = [row for row in rows if not row.passed]
    assert not failed, failed

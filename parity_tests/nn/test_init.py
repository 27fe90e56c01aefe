"""Fresh Flax parameters follow PyTorch's default initialisation, checked statistically
against a freshly constructed torch_ref model:

- Conv1d/Linear weights: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in));
- Conv1d/Linear biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the weight's fan_in;
- InstanceNorm1d(affine): weight 1, bias 0; PReLU: 0.25.

The checks are shown to reject a plausible wrong init (LeCun-normal kernels, zero biases).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import stats

import torch_ref
from flax_resnet1d import port
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.model import from_config

CONFIG = EncoderConfig(32, (1, 1), "bottleneck", 5, 3, 16)
CONSTANTS = {"scale": 1.0, "negative_slope": 0.25}  # and a norm's bias: 0
MIN_P_VALUE = 1e-3  # KS tests; the samples are fixed by the seeds, so the outcome is deterministic


def uniform_rows() -> dict[str, float]:
    """MDNC key -> fan_in, for every weight and bias drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    rows = port.param_table(CONFIG)
    fan_in = {row.torch_key.rsplit(".", 1)[0]: int(np.prod(row.torch_shape[1:]))
              for row in rows if row.flax_path[-1] == "kernel"}
    return {row.torch_key: fan_in[row.torch_key.rsplit(".", 1)[0]] for row in rows
            if row.flax_path[-1] == "kernel" or (row.flax_path[-1] == "bias" and row.flax_path[-2] != "norm")}


def normalised(state_dict) -> tuple[np.ndarray, np.ndarray]:
    """Pooled weights and pooled biases, each divided by its bound 1/sqrt(fan_in): ~U(-1, 1)."""
    weights, biases = [], []
    for key, fan_in in uniform_rows().items():
        (weights if key.endswith("weight") else biases).append(np.ravel(state_dict[key]) * np.sqrt(fan_in))
    return np.concatenate(weights), np.concatenate(biases)


def init_problems(state_dict) -> list[str]:
    """What differs from PyTorch's default init: bounds, per-tensor variance, distribution, constants."""
    problems = []
    for key, fan_in in uniform_rows().items():
        u = np.ravel(state_dict[key]).astype(np.float64) * np.sqrt(fan_in)
        if np.max(np.abs(u)) > 1 + 1e-6:
            problems.append(f"{key}: max|w| = {np.max(np.abs(u)):.3f}/sqrt(fan_in) exceeds the bound")
        # E[u^2] = 1/3 for U(-1, 1), with standard error sqrt(Var(u^2)/n) = sqrt(4/45/n).
        if u.size >= 64 and abs(np.mean(u**2) - 1 / 3) > 5 * np.sqrt(4 / 45 / u.size):
            problems.append(f"{key}: E[w^2]*fan_in = {np.mean(u**2):.4f}, expected 1/3")
    for name, sample in zip(("weights", "biases"), normalised(state_dict)):
        p = stats.kstest(sample, stats.uniform(-1, 2).cdf).pvalue
        if p < MIN_P_VALUE:
            problems.append(f"{name}: KS test against U(-1, 1)/sqrt(fan_in): p = {p:.1e}")
    for row in port.param_table(CONFIG):
        if row.torch_key not in uniform_rows():
            expected = CONSTANTS.get(row.flax_path[-1], 0.0)
            if not np.all(np.asarray(state_dict[row.torch_key]) == expected):
                problems.append(f"{row.torch_key}: not all {expected}")
    return problems


@pytest.fixture(scope="module")
def flax_init() -> dict[str, np.ndarray]:
    model = from_config(CONFIG)
    x = jax.random.normal(jax.random.key(1), (2, 64, CONFIG.in_planes))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    return port.flax_to_torch(variables)


@pytest.fixture(scope="module")
def torch_init() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return {k: v.numpy() for k, v in torch_ref.from_config(CONFIG).state_dict().items()}


def test_torch_reference_passes_the_checks(torch_init):
    assert init_problems(torch_init) == []


def test_flax_init_follows_pytorch_defaults(flax_init):
    assert init_problems(flax_init) == []


def test_flax_and_torch_init_have_the_same_distribution(flax_init, torch_init):
    for ours, theirs in zip(normalised(flax_init), normalised(torch_init)):
        assert stats.ks_2samp(ours, theirs).pvalue > MIN_P_VALUE


def test_checks_reject_a_wrong_init(flax_init):
    """Flax's defaults (LeCun-normal kernels N(0, 1/fan_in), zero biases) must not pass for PyTorch's."""
    rng = np.random.default_rng(2)
    lecun = dict(flax_init, **{k: rng.normal(0.0, 1 / np.sqrt(fan_in), flax_init[k].shape)
                               for k, fan_in in uniform_rows().items() if k.endswith("weight")})
    assert any("exceeds the bound" in p for p in init_problems(lecun))
    zero_bias = dict(flax_init, **{k: np.zeros_like(flax_init[k]) for k in uniform_rows() if k.endswith("bias")})
    assert any(p.startswith("biases: KS test") for p in init_problems(zero_bias))


def test_batch_norm_starts_as_pytorch_does():
    """BatchNorm: weight 1, bias 0, running mean 0, running var 1, num_batches_tracked 0, as a
    fresh torch_ref block's; the convolutions of the same block keep PyTorch's uniform bounds."""
    import flax_resnet1d as fr

    kwargs = dict(in_planes=3, out_planes=5, normalizer="batch", activator="relu", layer_order="old")
    variables = fr.BlockPlain1d(**kwargs).init(jax.random.key(0), jnp.zeros((2, 8, 3)))
    exported = port.flax_to_torch(variables, fr.BlockPlainConfig(**kwargs))
    fresh = torch_ref.BlockPlain1d(**kwargs).state_dict()
    assert list(exported) == list(fresh)
    for key, tensor in fresh.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")) or ".1." in key or "in_node.1" in key:
            assert exported[key].dtype == tensor.numpy().dtype and np.array_equal(exported[key], tensor.numpy()), key
        else:  # conv weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1 / np.sqrt(np.prod(tensor.shape[1:]))
            assert np.max(np.abs(exported[key])) <= bound and np.std(exported[key]) > bound / 4, key


def test_decoder_input_conv_bias_uses_its_own_fan_in():
    import flax_resnet1d as fr

    config = fr.DecoderConfig(4, (1, 1), out_size=40, in_length=6)  # conv_in: kernel 10, fan_in 60
    variables = fr.from_config(config).init(jax.random.key(1), jnp.zeros((2, 6)))
    bias = np.asarray(variables["params"]["conv_in"]["bias"])
    assert np.max(np.abs(bias)) <= 1 / np.sqrt(60) and np.max(np.abs(bias)) > 0.5 / np.sqrt(60)

"""Parity on the GPU at pinned precision. Skipped, with the reason shown, where no GPU is visible
(CI); the full GPU evidence (TF32, bf16, speed) comes from ``gpu_suite.py`` on a GPU machine."""

import numpy as np
import pytest
from gpu_suite import gpu_devices, variants

from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.parity import compare, random_state_dict

JAX_GPUS, TORCH_CUDA = gpu_devices()
pytestmark = pytest.mark.skipif(not (JAX_GPUS and TORCH_CUDA),
                                reason=f"no GPU visible (jax GPU devices: {len(JAX_GPUS)}, torch.cuda: {TORCH_CUDA})")

CONFIGS = [(EncoderConfig(16, (2, 1, 2), "bottleneck", 3, 3, 7), 75), (EncoderConfig(8, (1, 2), "plain", 5, 2, None), 48)]


@pytest.mark.parametrize("config,length", CONFIGS, ids=["bottleneck_k3", "plain_k5_features"])
@pytest.mark.parametrize("ours,ref,dtype", [("jax f32 highest", "torch f32 no-tf32", "float32"),
                                            ("jax f64", "torch f64", "float64"),
                                            ("jax f32 highest", "jax f32 highest on CPU", "float32")])
def test_gpu_parity_pinned(config, length, ours, ref, dtype):
    import jax

    runners = variants(JAX_GPUS[0], jax.devices("cpu")[0], "cuda")
    rng = np.random.default_rng(length)
    x = rng.normal(size=(4, config.in_planes, length))
    out_shape = (4, config.out_length) if config.out_length else (4, config.out_channels, config.feature_length(length))
    ct = rng.normal(size=out_shape)
    sd = random_state_dict(config, seed=length)
    rows = compare(runners[ours](sd, config, x, ct), runners[ref](sd, config, x, ct), dtype)
    assert all(r.passed for r in rows), [(r.quantity, r.rel_err, r.tol) for r in rows]

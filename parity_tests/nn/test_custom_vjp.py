"""The hand-written backward passes of ``flax_resnet1d.ops`` against autodiff.

``conv1d`` (XLA's convolution forward; gradient in matmul or convolution form, chosen by
shape) and ``instance_norm`` (norm, affine and optional PReLU with a closed-form gradient) are
checked against automatic differentiation of the plain computations (``jax.lax.conv_general_dilated``;
the two-pass normalization, affine and PReLU written with jnp) in float64 to 1e-12 and float32 to 1e-5, and
against finite differences with ``jax.test_util.check_grads``. The cases cover both backward
forms of ``conv1d`` (the 1x1 convolutions of long inputs among the matmul form's), strides 1
and 2, kernels 1/3/5/7 and even/odd lengths.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from flax_resnet1d.ops import conv1d, instance_norm, matmul_gradient
from flax_resnet1d.parity import dtype_context, relative_error

# (batch, length, in, out, kernel, stride), by the backward form ``matmul_gradient`` chooses.
MATMUL_FORM = [
    (1, 9, 6, 10, 3, 2),  # the kernel at least half the size of the input
    (2, 8, 5, 16, 1, 2),
    (1, 12, 4, 8, 7, 1),
    (4, 20, 6, 3, 1, 1),  # 1x1 convolutions on inputs far larger than the kernel
    (3, 26, 4, 6, 1, 2),
]
CONV_FORM = [  # wider kernels on inputs larger than the kernel
    (3, 40, 4, 5, 3, 1),
    (2, 33, 3, 4, 5, 2),
    (4, 30, 6, 3, 3, 2),
    (1, 1030, 2, 200, 3, 2),  # the kernel outweighs the input, but more rows than MATMUL_GRADIENT_MAX_ROWS
]
CASES = MATMUL_FORM + CONV_FORM
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


def test_cases_cover_both_backward_forms():
    forms = [matmul_gradient((b, n, ci), (k, ci, co)) for b, n, ci, co, k, _ in CASES]
    assert forms == [True] * len(MATMUL_FORM) + [False] * len(CONV_FORM)


def random_inputs(case, dtype, seed):
    batch, length, cin, cout, k, _ = case
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(1.0, 2.0, size=(batch, length, cin)), dtype)
    kernel = jnp.asarray(rng.normal(0, (k * cin) ** -0.5, (k, cin, cout)), dtype)
    return x, kernel


def reference_conv(x, kernel, stride, padding):
    return jax.lax.conv_general_dilated(x, kernel, (stride,), [(padding, padding)],
                                        dimension_numbers=("NWC", "WIO", "NWC"))


def reference_instance_norm(x, scale, bias, negative_slope, epsilon):
    centered = x - jnp.mean(x, axis=1, keepdims=True)
    y = centered / jnp.sqrt(jnp.mean(centered * centered, axis=1, keepdims=True) + epsilon) * scale + bias
    return y if negative_slope is None else jnp.where(y > 0, y, negative_slope * y)


def norm_inputs(x, with_slope, seed):
    """x and random (non-init) per-channel scale, bias and, optionally, PReLU slope (some negative)."""
    rng = np.random.default_rng(seed)
    scale, bias, slope = (jnp.asarray(rng.normal(size=x.shape[2]), x.dtype) for _ in range(3))
    return x, scale, bias, (slope if with_slope else None)


def value_and_grads(fn, args, cotangent):
    y, vjp = jax.vjp(fn, *args)
    return y, vjp(cotangent)


def assert_close(ours, ref, dtype):
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert relative_error(got, want) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_conv1d_matches_autodiff(case, dtype):
    stride, padding = case[5], case[4] // 2
    with dtype_context(dtype):
        args = random_inputs(case, dtype, seed=sum(case))
        out_shape = reference_conv(*args, stride, padding).shape
        cotangent = jnp.asarray(np.random.default_rng(1).normal(size=out_shape), dtype)
        ours = value_and_grads(lambda x, k: conv1d(x, k, stride, padding), args, cotangent)
        ref = value_and_grads(lambda x, k: reference_conv(x, k, stride, padding), args, cotangent)
        assert_close(ours, ref, dtype)


@pytest.mark.parametrize("case", CASES)
def test_conv1d_bfloat16_matches_float32(case):
    """In bf16 (forward and gradients as float32-accumulated matmuls over the gathered taps) the
    value and both gradients match float32 autodiff on the same bf16-rounded inputs to a few of
    bf16's roundings."""
    stride, padding = case[5], case[4] // 2
    x, kernel = (a.astype(jnp.bfloat16) for a in random_inputs(case, "float32", seed=3 * sum(case)))
    out_shape = reference_conv(x, kernel, stride, padding).shape
    cotangent = jnp.asarray(np.random.default_rng(4).normal(size=out_shape), jnp.bfloat16)
    ours = value_and_grads(lambda x, k: conv1d(x, k, stride, padding), (x, kernel), cotangent)
    ref = value_and_grads(lambda x, k: reference_conv(x, k, stride, padding),
                          (x.astype(jnp.float32), kernel.astype(jnp.float32)), cotangent.astype(jnp.float32))
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        assert got.dtype == jnp.bfloat16 and got.shape == want.shape
        assert relative_error(got.astype(jnp.float32), want) <= 1e-2


@pytest.mark.parametrize("with_slope", [True, False], ids=["prelu", "norm-only"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_instance_norm_matches_autodiff(case, dtype, with_slope):
    with dtype_context(dtype):
        args = norm_inputs(random_inputs(case, dtype, seed=2 * sum(case))[0], with_slope, seed=sum(case))
        cotangent = jnp.asarray(np.random.default_rng(2).normal(size=args[0].shape), dtype)
        assert_close(value_and_grads(lambda *a: instance_norm(*a, 1e-5), args, cotangent),
                     value_and_grads(lambda *a: reference_instance_norm(*a, 1e-5), args, cotangent), dtype)


@pytest.mark.parametrize("case", [MATMUL_FORM[0], MATMUL_FORM[3], CONV_FORM[1]])
def test_custom_gradients_match_finite_differences(case):
    stride, padding = case[5], case[4] // 2
    with dtype_context("float64"):
        x, kernel = random_inputs(case, "float64", seed=7)
        check_grads(lambda x, k: conv1d(x, k, stride, padding), (x, kernel), order=1, modes=["rev"])
        check_grads(lambda *a: instance_norm(*a, 1e-5), norm_inputs(x, True, seed=8), order=1, modes=["rev"])

"""Fused, shape-chosen kernels with hand-written backward passes (custom VJPs).

The architecture code (``model``) calls these; they know nothing of blocks or networks.
Each one computes exactly the function its autodiff reference computes (checked against
autodiff in float64 by ``parity_tests/nn/test_custom_vjp.py``); only the backward pass's
formulation differs, chosen for speed on the shapes where it wins.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

PrecisionLike = Any


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def instance_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, negative_slope: jax.Array | None,
                  epsilon: float) -> jax.Array:
    """Instance norm over the length axis of ``(B, L, C)`` with affine ``scale``/``bias``, followed by a
    per-channel PReLU when ``negative_slope`` is given: ``PReLU(normalize(x) * scale + bias)``.

    Statistics take two passes (the mean, then the mean of squared deviations, biased), as
    PyTorch's, rather than E[x^2] - E[x]^2. Norm, affine and PReLU are one function with a
    closed-form backward pass: it keeps only the centered input and ``rstd`` (autodiff of the
    three layers keeps four full-size tensors) and needs one reduction pass and one elementwise
    pass over them. The normalized input, affine and PReLU are recomputed there rather than
    stored; the forward pass never writes the normalized input out.
    """
    return _instance_norm_fwd(x, scale, bias, negative_slope, epsilon)[0]


def _instance_norm_fwd(x, scale, bias, negative_slope, epsilon):
    centered = x - jnp.mean(x, axis=1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(centered), axis=1, keepdims=True) + epsilon)
    normalized = centered * rstd
    out = normalized * scale + bias
    if negative_slope is not None:
        out = jnp.where(out > 0, out, negative_slope * out)
    return out, (centered, rstd, scale, bias, negative_slope)


def _instance_norm_bwd(epsilon, residuals, d_out):
    centered, rstd, scale, bias, negative_slope = residuals
    normalized = centered * rstd
    d_affine, d_slope = d_out, None
    if negative_slope is not None:
        affine = normalized * scale + bias
        positive = affine > 0
        d_affine = jnp.where(positive, d_out, negative_slope * d_out)
        d_slope = jnp.sum(jnp.where(positive, 0, d_out * affine), axis=(0, 1))
    # Per (batch, channel) sums over the length give both the parameter gradients and the
    # normalization's backward: rstd * scale * (g - mean(g) - y * mean(g * y)).
    # sum(g * normalized) as rstd * sum(g * centered): XLA:CPU's reduction fusions take no
    # broadcast operand, so the other form makes it write the normalized input out in the forward.
    d_bias_bc = jnp.sum(d_affine, axis=1, keepdims=True)
    d_scale_bc = rstd * jnp.sum(d_affine * centered, axis=1, keepdims=True)
    # The parameter gradients sum these (B, 1, C) sums over the batch; the barrier stops XLA
    # from folding that back into a second full-size reduction (and a materialized product)
    # per parameter.
    d_bias_bc, d_scale_bc = jax.lax.optimization_barrier((d_bias_bc, d_scale_bc))
    # The 1/length goes on the (B, 1, C) sums: on the full-size term XLA:CPU materializes a
    # full-size broadcast of the constant for every shape and streams it through the fusion.
    length = normalized.shape[1]
    d_x = (rstd * scale) * (d_affine - (d_bias_bc / length + normalized * (d_scale_bc / length)))
    return d_x, jnp.sum(d_scale_bc, axis=(0, 1)), jnp.sum(d_bias_bc, axis=(0, 1)), d_slope


instance_norm.defvjp(_instance_norm_fwd, _instance_norm_bwd)


def _conv_xla(x: jax.Array, kernel: jax.Array, stride: int, padding: int, precision: PrecisionLike) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride,), [(padding, padding)],
                                        dimension_numbers=("NWC", "WIO", "NWC"), precision=precision)


def _einsum(spec: str, a: jax.Array, b: jax.Array, precision: PrecisionLike) -> jax.Array:
    """``jnp.einsum`` in the operands' dtype, accumulated in float32 for narrower floats: XLA:CPU's
    bf16 dot with a float32 result uses the CPU's bf16 dot-product instructions, faster than with a
    bf16 result."""
    narrow = jnp.finfo(a.dtype).bits < 32
    out = jnp.einsum(spec, a, b, precision=precision, preferred_element_type=jnp.float32 if narrow else None)
    return out.astype(a.dtype)


def _conv_forward(x: jax.Array, kernel: jax.Array, stride: int, padding: int, precision: PrecisionLike) -> jax.Array:
    """XLA's convolution, except in a float narrower than float32: there one matmul of the gathered
    taps with the ``(k*Cin, Cout)`` kernel, accumulated in float32 (``_einsum``), as XLA:CPU's bf16
    convolutions are no faster than its float32 ones and its float32-accumulated bf16 dots are."""
    if jnp.finfo(x.dtype).bits < 32:
        k, cin, cout = kernel.shape
        return _einsum("blc,cd->bld", _gather_taps(x, k, stride, padding), kernel.reshape(k * cin, cout), precision)
    return _conv_xla(x, kernel, stride, padding, precision)


def _gather_taps(x: jax.Array, k: int, stride: int, padding: int) -> jax.Array:
    """The ``k`` taps of each output position gathered by strided slices into ``(B, L', k*Cin)``."""
    x = jnp.pad(x, ((0, 0), (padding, padding), (0, 0))) if padding else x
    out_length = (x.shape[1] - k) // stride + 1
    taps = [jax.lax.slice_in_dim(x, t, t + stride * (out_length - 1) + 1, stride, axis=1) for t in range(k)]
    return taps[0] if k == 1 else jnp.concatenate(taps, axis=2)


def _conv_matmul_vjp(x, kernel, stride, padding, precision, d_out):
    """Gradients of the convolution written as one matmul of the gathered taps with the
    ``(k*Cin, Cout)`` kernel. The kernel is the left operand of the input gradient
    (``kernel @ d_out^T``): XLA then transposes the small ``d_out`` rather than copying the
    whole kernel to a transposed layout on every step."""
    k, cin, cout = kernel.shape
    patches, scatter_taps = jax.vjp(lambda x: _gather_taps(x, k, stride, padding), x)
    d_kernel = _einsum("blc,bld->cd", patches, d_out, precision).reshape(kernel.shape)
    d_patches = _einsum("cd,bld->blc", kernel.reshape(k * cin, cout), d_out, precision)
    return scatter_taps(d_patches)[0], d_kernel


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv1d(x: jax.Array, kernel: jax.Array, stride: int, padding: int, precision: PrecisionLike = None) -> jax.Array:
    """1D convolution (PyTorch's cross-correlation) of ``(B, L, Cin)`` with a ``(k, Cin, Cout)`` kernel.

    The forward pass is XLA's convolution. The backward pass differentiates the same function
    in one of two forms, chosen by shape (``matmul_gradient``). XLA:CPU's convolution gradients
    (the kernel gradient as a convolution over the length axis, the input gradient of a strided
    convolution as one over a zero-dilated input) run several times slower than matmuls of the
    same size when the kernel outweighs the activations (the deep, short stages; small batches),
    and for a 1x1 convolution they transpose the input and the output gradient to put the batch
    innermost, where the matmul form is one plain contraction over ``(B, L)``. There the matmul
    form's gradients are plain dot products; elsewhere (kernels wider than 1 on long signals) the
    convolution gradients are faster, as they need no ``k``-fold copy of the activations.
    In bf16 (any float narrower than float32) every convolution runs as matmuls accumulated in
    float32, forward (``_conv_forward``) and backward (the matmul form, whatever the shape).
    """
    return _conv_forward(x, kernel, stride, padding, precision)


def _conv1d_fwd(x, kernel, stride, padding, precision):
    return _conv_forward(x, kernel, stride, padding, precision), (x, kernel)


# Above this many input rows (batch * input length) XLA:CPU's convolution-form gradients of a
# wider kernel beat the matmul form even where the kernel outweighs the input.
MATMUL_GRADIENT_MAX_ROWS = 1024


def matmul_gradient(x_shape: Sequence[int], kernel_shape: Sequence[int]) -> bool:
    """Whether ``conv1d``'s backward pass takes the matmul form: for every 1x1 convolution, and
    for wider kernels on at most ``MATMUL_GRADIENT_MAX_ROWS`` input rows (``B * L``) when the
    kernel (``k * Cin * Cout``) is at least half the size of the input (``B * L * Cin``)."""
    (batch, length, _), (k, _, cout) = x_shape, kernel_shape
    rows = batch * length
    return k == 1 or (rows <= MATMUL_GRADIENT_MAX_ROWS and 2 * k * cout >= rows)


def _conv1d_bwd(stride, padding, precision, residuals, d_out):
    x, kernel = residuals
    if jnp.finfo(x.dtype).bits < 32 or matmul_gradient(x.shape, kernel.shape):  # see _conv_forward for bf16
        return _conv_matmul_vjp(x, kernel, stride, padding, precision, d_out)
    return jax.vjp(lambda x, kernel: _conv_xla(x, kernel, stride, padding, precision), x, kernel)[1](d_out)


conv1d.defvjp(_conv1d_fwd, _conv1d_bwd)

"""Flax linen ``EncoderNet1d``: the 1D residual encoder of MDNC, channels-last.

Layout: inputs are ``(B, L, C)`` (Flax convention) where MDNC takes ``(B, C, L)``; the
feature map comes out as ``(B, L', C')``. Convolution kernels are ``(k, in, out)`` where
PyTorch stores ``(out, in, k)``; ``flax_resnet1d.port`` converts between the two.

Every sub-layer follows MDNC's "new" order: InstanceNorm(affine) -> PReLU -> Conv.
Fresh parameters follow PyTorch's default initializers, so training from scratch
behaves as the reference does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import EncoderConfig, make_preset

Dtype = Any
PrecisionLike = Any

# PyTorch's Conv1d/Linear default: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = fan_in**-0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


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


class InstanceNorm1d(nn.Module):
    """Instance norm over the length axis of ``(B, L, C)``, affine, biased variance.

    ``__call__(x, negative_slope)`` also applies a per-channel PReLU with that slope (see
    ``instance_norm``). Statistics are computed in at least float32.
    """

    features: int
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, negative_slope: jax.Array | None = None):
        scale = self.param("scale", nn.initializers.ones, (self.features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
        if negative_slope is not None:
            negative_slope = negative_slope.astype(stat_dtype)
        y = instance_norm(x.astype(stat_dtype), scale.astype(stat_dtype), bias.astype(stat_dtype), negative_slope,
                          self.epsilon)
        return y.astype(self.dtype or jnp.result_type(x.dtype, self.param_dtype))


class PReLU(nn.Module):
    """Per-channel PReLU (PyTorch ``nn.PReLU(num_parameters=C)``, slope init 0.25).

    ``__call__(x, norm)`` computes ``PReLU(norm(x))`` as one fused ``instance_norm``.
    """

    features: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, norm: InstanceNorm1d | None = None):
        slope = self.param("negative_slope", nn.initializers.constant(0.25), (self.features,), self.param_dtype)
        if norm is not None:
            return norm(x, slope)
        x, slope = nn.dtypes.promote_dtype(x, slope, dtype=self.dtype)
        return jnp.where(x > 0, x, slope * x)


def _conv_xla(x: jax.Array, kernel: jax.Array, stride: int, padding: int, precision: PrecisionLike) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride,), [(padding, padding)],
                                        dimension_numbers=("NWC", "WIO", "NWC"), precision=precision)


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
    d_kernel = jnp.einsum("blc,bld->cd", patches, d_out, precision=precision).reshape(kernel.shape)
    d_patches = jnp.einsum("cd,bld->blc", kernel.reshape(k * cin, cout), d_out, precision=precision)
    return scatter_taps(d_patches)[0], d_kernel


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv1d(x: jax.Array, kernel: jax.Array, stride: int, padding: int, precision: PrecisionLike = None) -> jax.Array:
    """1D convolution (PyTorch's cross-correlation) of ``(B, L, Cin)`` with a ``(k, Cin, Cout)`` kernel.

    The forward pass is XLA's convolution. The backward pass differentiates the same function
    in one of two forms, chosen by shape: XLA:CPU's convolution gradients (the kernel gradient
    as a convolution over the length axis, the input gradient of a strided convolution as one
    over a zero-dilated input) run several times slower than matmuls of the same size when the
    kernel outweighs the activations (the deep, short stages; small batches). There the matmul
    form's gradients are plain dot products; elsewhere the convolution gradients are faster,
    as they need no ``k``-fold copy of the activations.
    """
    return _conv_xla(x, kernel, stride, padding, precision)


def _conv1d_fwd(x, kernel, stride, padding, precision):
    return _conv_xla(x, kernel, stride, padding, precision), (x, kernel)


def matmul_gradient(x_shape: Sequence[int], kernel_shape: Sequence[int]) -> bool:
    """Whether ``conv1d``'s backward pass takes the matmul form: when the kernel (``k * Cin * Cout``)
    is at least half the size of the input (``B * L * Cin``)."""
    (batch, length, _), (k, _, cout) = x_shape, kernel_shape
    return 2 * k * cout >= batch * length


def _conv1d_bwd(stride, padding, precision, residuals, d_out):
    x, kernel = residuals
    if matmul_gradient(x.shape, kernel.shape):
        return _conv_matmul_vjp(x, kernel, stride, padding, precision, d_out)
    return jax.vjp(lambda x, kernel: _conv_xla(x, kernel, stride, padding, precision), x, kernel)[1](d_out)


conv1d.defvjp(_conv1d_fwd, _conv1d_bwd)


class Conv1d(nn.Module):
    """PyTorch-initialised ``Conv1d`` on ``(B, L, C)``: params ``kernel (k, in, out)`` and optional ``bias``."""

    in_planes: int
    out_planes: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", torch_kernel_init, (self.kernel_size, self.in_planes, self.out_planes),
                            self.param_dtype)
        bias = (self.param("bias", torch_bias_init(self.in_planes * self.kernel_size), (self.out_planes,),
                           self.param_dtype) if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv1d(x, kernel, self.stride, self.padding, self.precision)
        return y if bias is None else y + bias


def _conv(owner: nn.Module, in_planes: int, out_planes: int, kernel_size: int, stride: int, padding: int,
          use_bias: bool, name: str) -> Conv1d:
    """A ``Conv1d`` sharing the owner's dtype, param_dtype and precision."""
    return Conv1d(in_planes, out_planes, kernel_size, stride, padding, use_bias, dtype=owner.dtype,
                  param_dtype=owner.param_dtype, precision=owner.precision, name=name)


class NormActConv(nn.Module):
    """One residual sub-layer (MDNC's ``res_branch``): InstanceNorm -> PReLU -> Conv, no bias."""

    in_planes: int
    out_planes: int
    kernel_size: int
    stride: int
    padding: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    @nn.compact
    def __call__(self, x):
        norm = InstanceNorm1d(self.in_planes, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")
        x = PReLU(self.in_planes, dtype=self.dtype, param_dtype=self.param_dtype, name="act")(x, norm)  # fused
        conv = _conv(self, self.in_planes, self.out_planes, self.kernel_size, self.stride, self.padding, False, "conv")
        return conv(x)


class ConvNorm(nn.Module):
    """The projection shortcut (MDNC's ``in_node``): strided 1x1 Conv -> InstanceNorm."""

    in_planes: int
    out_planes: int
    stride: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    @nn.compact
    def __call__(self, x):
        x = _conv(self, self.in_planes, self.out_planes, 1, self.stride, 0, False, "conv")(x)
        return InstanceNorm1d(self.out_planes, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)


class _ResidualBlock1d(nn.Module):
    """Residual block: ``branch(x) + shortcut(x)``; subclasses define the branch's convs."""

    in_planes: int
    out_planes: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    def branch(self) -> Sequence[tuple[int, int, int, int]]:
        """(out_planes, kernel_size, stride, padding) of conv1, conv2, ..."""
        raise NotImplementedError

    @property
    def has_shortcut_conv(self) -> bool:
        return self.stride > 1 or self.in_planes != self.out_planes

    @nn.compact
    def __call__(self, x):
        shared = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        residual, planes = x, self.in_planes
        for i, (out_planes, kernel_size, stride, padding) in enumerate(self.branch(), start=1):
            residual = NormActConv(planes, out_planes, kernel_size, stride, padding, **shared, name=f"conv{i}")(residual)
            planes = out_planes
        shortcut = ConvNorm(self.in_planes, self.out_planes, self.stride, **shared, name="shortcut")(x) if self.has_shortcut_conv else x
        return residual + shortcut


class BlockPlain1d(_ResidualBlock1d):
    """Plain block: k-conv (in -> in), strided k-conv (in -> out)."""

    def branch(self):
        k, p = self.kernel_size, self.padding
        return [(self.in_planes, k, 1, p), (self.out_planes, k, self.stride, p)]


class BlockBottleneck1d(_ResidualBlock1d):
    """Bottleneck block without channel reduction: 1x1 (in -> in), strided k (in -> in), 1x1 (in -> out)."""

    def branch(self):
        k, p = self.kernel_size, self.padding
        return [(self.in_planes, 1, 1, 0), (self.in_planes, k, self.stride, p), (self.out_planes, 1, 1, 0)]


BLOCKS = {"plain": BlockPlain1d, "bottleneck": BlockBottleneck1d}


class EncoderNet1d(nn.Module):
    """MDNC ``EncoderNet1d`` in Flax.

    ``__call__(x)`` takes ``x`` of shape ``(B, L, in_planes)`` and returns ``(B, out_length)``,
    or the feature map ``(B, L', C')`` when ``out_length`` is None or 0.

    ``dtype=None`` computes in the dtype of the inputs and parameters (float64 works under
    ``jax_enable_x64``); ``dtype=jnp.bfloat16`` computes in bf16 with ``param_dtype`` params.
    """

    channel: int
    layers: Sequence[int]
    block: str = "bottleneck"
    kernel_size: int = 3
    in_planes: int = 1
    out_length: int | None = 2
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    def __post_init__(self):
        config = self.config  # validates every argument, early and by name
        object.__setattr__(self, "layers", config.layers)
        super().__post_init__()

    @property
    def config(self) -> EncoderConfig:
        return EncoderConfig(self.channel, self.layers, self.block, self.kernel_size, self.in_planes, self.out_length)

    @property
    def nlayers(self) -> int:
        return self.config.nlayers

    @nn.compact
    def __call__(self, x):
        config = self.config
        config.check_input_shape(x.shape, channel_axis=2)
        shared = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        block_cls = BLOCKS[config.block]
        x = _conv(self, config.in_planes, config.channel, config.stem_kernel, 1, config.stem_kernel // 2, False, "stem")(x)
        for stage, num_blocks in enumerate(config.layers):
            for index in range(num_blocks):
                in_planes, out_planes, stride = config.block_args(stage, index)
                x = block_cls(in_planes, out_planes, config.kernel_size, stride, config.padding, **shared,
                              name=f"stage{stage + 1}_block{index + 1}")(x)
        channels = config.out_channels
        x = _conv(self, channels, channels, config.kernel_size, 1, config.padding, True, "final_conv")(x)
        if config.out_length is None:
            return x
        x = jnp.mean(x, axis=1)  # AdaptiveAvgPool1d(1) + flatten
        return nn.Dense(config.out_length, dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision,
                        kernel_init=torch_kernel_init, bias_init=torch_bias_init(channels), name="fc")(x)


def from_config(config: EncoderConfig | dict, **kwargs) -> EncoderNet1d:
    """Build the Flax model of a config (``EncoderConfig`` or its dict); kwargs set dtype etc."""
    c = EncoderConfig.coerce(config)
    return EncoderNet1d(c.channel, c.layers, c.block, c.kernel_size, c.in_planes, c.out_length, **kwargs)


encnet12 = make_preset("encnet12", from_config)
encnet32 = make_preset("encnet32", from_config)
encnet47 = make_preset("encnet47", from_config)
encnet62 = make_preset("encnet62", from_config)

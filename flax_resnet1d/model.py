"""Flax linen ``EncoderNet1d``: the 1D residual encoder of MDNC, channels-last.

Layout: inputs are ``(B, L, C)`` (Flax convention) where MDNC takes ``(B, C, L)``; the
feature map comes out as ``(B, L', C')``. Convolution kernels are ``(k, in, out)`` where
PyTorch stores ``(out, in, k)``; ``flax_resnet1d.port`` converts between the two.

Every sub-layer follows MDNC's "new" order: InstanceNorm(affine) -> PReLU -> Conv.
Fresh parameters follow PyTorch's default initializers, so training from scratch
behaves as the reference does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import EncoderConfig, make_preset
from .ops import conv1d, instance_norm

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

"""Flax linen modules of MDNC's 1D residual family, channels-last.

Layout: inputs are ``(B, L, C)`` (Flax convention) where MDNC takes ``(B, C, L)``, and feature
maps come out as ``(B, L', C')``; a decoder's vector input is ``(B, in_length)``. Convolution
kernels are ``(k, in, out)`` where PyTorch stores ``(out, in, k)``; ``flax_resnet1d.port``
converts between the two.

The structure of every block and network, and each network's forward flow, are read from its
plan (``flax_resnet1d.plan``), the same one the PyTorch reference and the port read. The plan's
NormAct (a pinst norm and the PReLU after it, new order) runs as one fused kernel from ``ops``;
every other layer (BatchNorm, ReLU, the old order, up-sampling) is plain jnp code. Fresh
parameters follow PyTorch's default initializers, so training from scratch behaves as the
reference does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import plan as P
from .config import (AEConfig, BlockBottleneckConfig, BlockPlainConfig, DecoderConfig, EncoderConfig, UNetConfig,
                     coerce_config, make_preset)
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


def _stat_dtype(x) -> Dtype:
    return jnp.promote_types(x.dtype, jnp.float32)


class InstanceNorm1d(nn.Module):
    """Instance norm over the length axis of ``(B, L, C)``, biased variance, in plain jnp;
    affine for MDNC's 'pinst' (``scale``, ``bias``), none for 'inst'. Statistics in at least
    float32. (``NormAct`` runs it with the PReLU after it as one fused kernel.)
    """

    features: int
    use_affine: bool = True
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):  # parameters in setup: NormAct reads them without calling the layer
        if self.use_affine:
            self.scale = self.param("scale", nn.initializers.ones, (self.features,), self.param_dtype)
            self.bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)

    def __call__(self, x):
        stat_dtype = _stat_dtype(x)
        xs = x.astype(stat_dtype)
        centered = xs - jnp.mean(xs, axis=1, keepdims=True)
        y = centered * jax.lax.rsqrt(jnp.mean(jnp.square(centered), axis=1, keepdims=True) + self.epsilon)
        if self.use_affine:
            y = y * self.scale.astype(stat_dtype) + self.bias.astype(stat_dtype)
        return y.astype(self.dtype or jnp.result_type(x.dtype, self.param_dtype))


class BatchNorm1d(nn.Module):
    """PyTorch's ``BatchNorm1d`` on ``(B, L, C)``: params ``scale``, ``bias``; ``batch_stats``
    ``mean``, ``var``, ``num_batches_tracked``.

    ``train=False`` normalizes with the running statistics. ``train=True`` normalizes with the
    batch's mean and biased variance (two passes) and, when ``batch_stats`` is mutable, updates
    the running statistics as PyTorch does: ``new = (1 - momentum) * old + momentum * batch``
    with the *unbiased* variance, and counts the batch.
    """

    features: int
    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = (self.features,)
        scale = self.param("scale", nn.initializers.ones, c, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, c, self.param_dtype)
        running_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(c, self.param_dtype))
        running_var = self.variable("batch_stats", "var", lambda: jnp.ones(c, self.param_dtype))
        count = self.variable("batch_stats", "num_batches_tracked", lambda: jnp.zeros((), jnp.int32))
        stat_dtype = _stat_dtype(x)
        xs = x.astype(stat_dtype)
        if train:
            n = x.shape[0] * x.shape[1]
            if n < 2:
                raise ValueError(f"BatchNorm1d: train mode needs more than one value per channel, got input shape "
                                 f"{tuple(x.shape)} (B * L = {n})")
            mean = jnp.mean(xs, axis=(0, 1))
            centered = xs - mean
            var = jnp.mean(jnp.square(centered), axis=(0, 1))
            y = centered * jax.lax.rsqrt(var + self.epsilon)
            if not self.is_initializing():
                m = self.momentum
                stats = jax.lax.stop_gradient((mean, var * (n / (n - 1))))
                running_mean.value = ((1 - m) * running_mean.value + m * stats[0]).astype(running_mean.value.dtype)
                running_var.value = ((1 - m) * running_var.value + m * stats[1]).astype(running_var.value.dtype)
                count.value = count.value + 1
        else:
            y = (xs - running_mean.value.astype(stat_dtype)) * jax.lax.rsqrt(
                running_var.value.astype(stat_dtype) + self.epsilon)
        y = y * scale.astype(stat_dtype) + bias.astype(stat_dtype)
        return y.astype(self.dtype or jnp.result_type(x.dtype, self.param_dtype))


class PReLU(nn.Module):
    """Per-channel PReLU (PyTorch ``nn.PReLU(num_parameters=C)``, slope init 0.25)."""

    features: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):  # as InstanceNorm1d's
        self.negative_slope = self.param("negative_slope", nn.initializers.constant(0.25), (self.features,),
                                         self.param_dtype)

    def __call__(self, x):
        x, slope = nn.dtypes.promote_dtype(x, self.negative_slope, dtype=self.dtype)
        return jnp.where(x > 0, x, slope * x)


class NormAct(nn.Module):
    """``act(norm(x))`` for an affine ``InstanceNorm1d`` and a ``PReLU`` (or no activation) as one
    fused ``ops.instance_norm`` kernel. The two layers hold the parameters: created beside this
    module, under their own names, so the Flax paths are those of MDNC's two layers."""

    norm: InstanceNorm1d
    act: PReLU | None = None

    @property
    def layers(self) -> tuple[nn.Module, ...]:
        return (self.norm,) if self.act is None else (self.norm, self.act)

    def __call__(self, x):
        norm, stat_dtype = self.norm, _stat_dtype(x)
        # the slope first: a fresh init creates the variables in the order it always has (act, then norm)
        slope = None if self.act is None else self.act.negative_slope.astype(stat_dtype)
        y = instance_norm(x.astype(stat_dtype), norm.scale.astype(stat_dtype), norm.bias.astype(stat_dtype), slope,
                          norm.epsilon)
        return y.astype(norm.dtype or jnp.result_type(x.dtype, norm.param_dtype))


class ReLU(nn.Module):
    """PyTorch's ReLU, including its zero gradient at 0. No parameters; a module so that
    ``summary`` lists it, as torchsummary does."""

    @nn.compact
    def __call__(self, x):
        return jnp.where(x > 0, x, jnp.zeros_like(x))


class Upsample(nn.Module):
    """``nn.Upsample(mode='linear', align_corners=True)`` by ``scale_factor`` or to ``size``; no parameters."""

    scale_factor: int | None = None
    size: int | None = None

    @nn.compact
    def __call__(self, x):
        return upsample_linear(x, self.size if self.size is not None else x.shape[1] * self.scale_factor)


def upsample_linear(x, out_length: int):
    """``nn.Upsample(mode='linear', align_corners=True)`` along the length of ``(B, L, C)``:
    output position i samples i * (L - 1) / (out_length - 1), linearly between neighbours."""
    length = x.shape[1]
    scale = (length - 1) / (out_length - 1) if out_length > 1 else 0.0
    source = scale * np.arange(out_length)
    low = np.minimum(source.astype(np.int64), length - 1)
    high = np.minimum(low + 1, length - 1)
    weight = jnp.asarray((source - low)[None, :, None], x.dtype)
    return x[:, low] * (1 - weight) + x[:, high] * weight


def middle_crop(x, length: int):
    """MDNC's middle cropping of ``(B, L, C)`` to at most ``length`` positions: start (L - length) // 2."""
    length = min(length, x.shape[1])
    start = (x.shape[1] - length) // 2
    return x[:, start:start + length]


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


def _conv(owner: nn.Module, conv: P.Conv, name: str) -> Conv1d:
    """The ``Conv1d`` of a plan layer, sharing the owner's dtype, param_dtype and precision."""
    return Conv1d(conv.in_planes, conv.out_planes, conv.kernel_size, conv.stride, conv.padding, conv.bias,
                  dtype=owner.dtype, param_dtype=owner.param_dtype, precision=owner.precision, name=name)


def _layer(owner: nn.Module, layer, name: str) -> nn.Module:
    """The module of one plan layer, named ``name`` in ``owner``, sharing its dtypes."""
    dtypes = dict(dtype=owner.dtype, param_dtype=owner.param_dtype)
    if isinstance(layer, P.Conv):
        return _conv(owner, layer, name)
    if isinstance(layer, P.Upsample):
        return Upsample(layer.scale_factor, layer.size, name=name)
    if isinstance(layer, P.NormAct):
        return NormAct(*(_layer(owner, part, part_name) for part_name, part in layer.parts()), name=name)
    if isinstance(layer, P.Norm) and layer.kind == "batch":
        return BatchNorm1d(layer.features, **dtypes, name=name)
    if isinstance(layer, P.Norm):
        return InstanceNorm1d(layer.features, layer.kind == "pinst", **dtypes, name=name)
    return PReLU(layer.features, **dtypes, name=name) if layer.kind == "prelu" else ReLU(name=name)


class Branch(nn.Module):
    """One ``nn.Sequential`` of a block (a residual branch or the shortcut), read from its plan."""

    seq: P.Seq
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        for name, layer in self.seq.layers:
            module = _layer(self, layer, name)
            x = module(x, train) if isinstance(module, BatchNorm1d) else module(x)
        return x


def _residual(owner: nn.Module, block: P.BlockPlan, x, train: bool):
    """``branch(x) + shortcut(x)`` of a block plan, submodules named as the plan says."""
    shared = dict(dtype=owner.dtype, param_dtype=owner.param_dtype, precision=owner.precision)
    residual = x
    for _, flax_name, seq in block.branches:
        residual = Branch(seq, **shared, name=flax_name)(residual, train)
    shortcut = x if block.shortcut is None else Branch(block.shortcut, **shared, name="shortcut")(x, train)
    return residual + shortcut


class PlannedBlock(nn.Module):
    """A residual block given by its plan (the blocks inside the networks)."""

    block: P.BlockPlan
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        return _residual(self, self.block, x, train)


def _config_of(module: nn.Module):
    """The config of a block or network module: its fields of the same names, validated."""
    cls = module.config_class
    return cls(**{f.name: getattr(module, f.name) for f in dataclasses.fields(cls)})


def _checked_config(module: nn.Module, x):
    """The module's config, after checking the input ``x`` (channels-last) against it."""
    config = module.config
    config.check_input_shape(x.shape, channel_axis=2)
    return config


class _ResidualBlock1d(nn.Module):
    """MDNC's standalone block, with MDNC's arguments and defaults; ``__call__(x, train=False)``
    on ``(B, L, in_planes)``."""

    in_planes: int
    out_planes: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    output_size: int | None = None
    normalizer: str = "pinst"
    activator: str = "prelu"
    layer_order: str = "new"
    scaler: str = "down"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    config_class = None

    def __post_init__(self):
        self.config  # validates every argument, early and by name
        super().__post_init__()

    config = property(lambda self: _config_of(self))

    @nn.compact
    def __call__(self, x, train: bool = False):
        return _residual(self, _checked_config(self, x).plan().node(""), x, train)


class BlockPlain1d(_ResidualBlock1d):
    """Plain block: k-conv (in -> in), k-conv (in -> out) carrying the scaling."""

    config_class = BlockPlainConfig


class BlockBottleneck1d(_ResidualBlock1d):
    """Bottleneck block without channel reduction: 1x1 (in -> in), k (in -> in) scaling, 1x1 (in -> out)."""

    config_class = BlockBottleneckConfig


# -- networks ------------------------------------------------------------------------------
class _Network(nn.Module):
    """Shared pieces of the networks: the config from the fields, validation, dtype handling, and
    the forward pass: the plan's flow, step by step."""

    config_class = None

    def __post_init__(self):
        config = self.config  # validates every argument, early and by name
        object.__setattr__(self, "layers", config.layers)
        super().__post_init__()

    config = property(lambda self: _config_of(self))

    @property
    def nlayers(self) -> int:
        return self.config.nlayers

    @nn.compact
    def __call__(self, x, train: bool = False):
        plan = _checked_config(self, x).plan()
        saved = {}
        for step in plan.flow:
            if isinstance(step, P.Apply):
                x = self._apply(plan.leaves[step.prefix], x, train)
            elif isinstance(step, P.Pool):
                x = jnp.mean(x, axis=1)
            elif isinstance(step, P.VectorIn):
                x = x[:, None, :]
            elif isinstance(step, P.Save):
                saved[step.name] = x
            elif isinstance(step, P.CropTo):
                x = middle_crop(x, saved[step.length].shape[1] if isinstance(step.length, str) else step.length)
            else:  # ConcatSkip
                skip = saved[step.name]
                length = min(x.shape[1], skip.shape[1])
                x = jnp.concatenate([middle_crop(x, length), middle_crop(skip, length)], axis=-1)
        return x

    def _apply(self, leaf: P.Leaf, x, train: bool):
        node, name = leaf.node, leaf.flax_name
        if isinstance(node, P.BlockPlan):
            return PlannedBlock(node, dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision,
                                name=name)(x, train)
        if isinstance(node, P.Linear):
            return nn.Dense(node.out_features, dtype=self.dtype, param_dtype=self.param_dtype,
                            precision=self.precision, kernel_init=torch_kernel_init,
                            bias_init=torch_bias_init(node.in_features), name=name)(x)
        return _conv(self, node, name)(x)


class EncoderNet1d(_Network):
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

    config_class = EncoderConfig


class DecoderNet1d(_Network):
    """MDNC ``DecoderNet1d`` in Flax: ``(B, in_length)`` (or, with ``in_length=None``, the feature
    map ``(B, shapes[-1], C)``) -> ``(B, out_size, out_planes)``."""

    channel: int
    layers: Sequence[int]
    out_size: int
    block: str = "bottleneck"
    kernel_size: int = 3
    in_length: int | None = 2
    out_planes: int = 1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    config_class = DecoderConfig

    @property
    def input_size(self) -> tuple[int, ...]:
        return self.config.input_size


class AE1d(_Network):
    """MDNC ``AE1d`` in Flax: ``(B, L, in_planes)`` -> ``(B, L, out_planes)``, any L the stages take."""

    channel: int
    layers: Sequence[int]
    block: str = "bottleneck"
    kernel_size: int = 3
    in_planes: int = 1
    out_planes: int = 1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    config_class = AEConfig


class UNet1d(AE1d):
    """MDNC ``UNet1d`` in Flax: as ``AE1d``, with each down stage's hidden tensor concatenated
    (after middle cropping) into the matching up stage."""

    config_class = UNetConfig


ARCHITECTURES = {cls.config_class.arch: cls for cls in (BlockPlain1d, BlockBottleneck1d, EncoderNet1d, DecoderNet1d,
                                                       AE1d, UNet1d)}


def from_config(config, **kwargs) -> nn.Module:
    """Build the Flax model of a config (a config object, or a dict with ``arch``, absent meaning
    ``EncoderNet1d``); kwargs set dtype, param_dtype, precision."""
    config = coerce_config(config)
    return ARCHITECTURES[config.arch](**config.kwargs(), **kwargs)


encnet12, encnet32, encnet47, encnet62 = (make_preset(f"encnet{n}", from_config) for n in (12, 32, 47, 62))
decnet13, decnet33, decnet48, decnet63 = (make_preset(f"decnet{n}", from_config) for n in (13, 33, 48, 63))
ae16, ae32, ae44, ae65, ae83 = (make_preset(f"ae{n}", from_config) for n in (16, 32, 44, 65, 83))
unet16, unet32, unet44, unet65, unet83 = (make_preset(f"unet{n}", from_config) for n in (16, 32, 44, 65, 83))

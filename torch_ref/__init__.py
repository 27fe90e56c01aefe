"""PyTorch reference of MDNC's 1D residual family (``mdnc.modules.resnet``), written from its spec.

Every module is built from the same framework-free plan (``flax_resnet1d.plan``) as the Flax
port, and every network runs the plan's forward flow, so its ``state_dict()`` keys and shapes
are exactly the original library's: MDNC checkpoints load with ``strict=True`` and checkpoints
saved here load into MDNC. Inputs are
``(B, C, L)`` (a decoder's vector input ``(B, in_length)``). Arguments and input shapes are
validated by ``flax_resnet1d.config`` (shared with the Flax port), so both implementations
reject the same things with the same messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flax_resnet1d import plan as P
from flax_resnet1d.config import (AEConfig, BlockBottleneckConfig, BlockPlainConfig, DecoderConfig, EncoderConfig,
                                  UNetConfig, coerce_config, make_preset)

__all__ = ["BlockPlain1d", "BlockBottleneck1d", "EncoderNet1d", "DecoderNet1d", "AE1d", "UNet1d", "from_config",
           "encnet12", "encnet32", "encnet47", "encnet62", "decnet13", "decnet33", "decnet48", "decnet63",
           "ae16", "ae32", "ae44", "ae65", "ae83", "unet16", "unet32", "unet44", "unet65", "unet83"]


def _layer(layer) -> nn.Module:
    """The torch module of one plan layer."""
    if isinstance(layer, P.Conv):
        return nn.Conv1d(layer.in_planes, layer.out_planes, layer.kernel_size, stride=layer.stride,
                         padding=layer.padding, bias=layer.bias)
    if isinstance(layer, P.Linear):
        return nn.Linear(layer.in_features, layer.out_features)
    if isinstance(layer, P.AvgPool):
        return nn.AdaptiveAvgPool1d(1)
    if isinstance(layer, P.Upsample):
        if layer.size is not None:
            return nn.Upsample(size=layer.size, mode="linear", align_corners=True)
        return nn.Upsample(scale_factor=(layer.scale_factor,), mode="linear", align_corners=True)
    if isinstance(layer, P.Norm):
        if layer.kind == "batch":
            return nn.BatchNorm1d(layer.features)
        return nn.InstanceNorm1d(layer.features, affine=layer.kind == "pinst")
    return nn.PReLU(num_parameters=layer.features) if layer.kind == "prelu" else nn.ReLU(inplace=False)


def _sequential(seq: P.Seq) -> nn.Sequential:
    return nn.Sequential(*(_layer(layer) for _, layer in seq.sequential()))


class PlannedBlock(nn.Module):
    """A residual block from its plan: ``conv1``, ``conv2`` [, ``conv3``] and ``in_node`` (or None)."""

    def __init__(self, block: P.BlockPlan):
        super().__init__()
        self.branch_names = [name for name, _, _ in block.branches]
        for name, _, seq in block.branches:
            self.add_module(name, _sequential(seq))
        self.in_node = None if block.shortcut is None else _sequential(block.shortcut)

    def forward(self, x):
        res = x
        for name in self.branch_names:
            res = getattr(self, name)(res)
        return res + (x if self.in_node is None else self.in_node(x))


class _ResidualBlock1d(PlannedBlock):
    """MDNC's standalone block with MDNC's arguments; input ``(B, in_planes, L)``."""

    config_class = None

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 output_size: int | None = None, normalizer: str = "pinst", activator: str = "prelu",
                 layer_order: str = "new", scaler: str = "down"):
        config = self.config_class(in_planes, out_planes, kernel_size, stride, padding, output_size, normalizer,
                                   activator, layer_order, scaler)
        super().__init__(config.plan().node(""))
        self.config = config

    def forward(self, x):
        self.config.check_input_shape(tuple(x.shape), channel_axis=1)
        return super().forward(x)


class BlockPlain1d(_ResidualBlock1d):
    config_class = BlockPlainConfig


class BlockBottleneck1d(_ResidualBlock1d):
    config_class = BlockBottleneckConfig


def middle_crop(x: torch.Tensor, length: int) -> torch.Tensor:
    """MDNC's middle cropping of ``(B, C, L)`` to at most ``length``: start (L - length) // 2."""
    length = min(length, x.shape[-1])
    start = (x.shape[-1] - length) // 2
    return x[..., start:start + length]


class _ResStack1d(nn.Module):
    """MDNC ``_BlockResStkNd``'s keys: ``conv_list`` of stride-1 blocks, then ``conv_scale``. The
    network's flow applies the blocks one by one."""

    def __init__(self, stage: P.StagePlan):
        super().__init__()
        blocks = [PlannedBlock(block) for _, _, block in stage.blocks]
        self.conv_list = nn.ModuleList(blocks[:-1])
        self.conv_scale = blocks[-1]


def _node(node) -> nn.Module:
    return _ResStack1d(node) if isinstance(node, P.StagePlan) else _layer(node)


class _Network(nn.Module):
    """A network built from its plan: prefix ``name.i`` is entry ``i`` of ModuleList ``name``,
    registered in the plan's (MDNC's) order, so ``state_dict()`` has MDNC's keys in MDNC's order.
    ``forward`` runs the plan's flow, step by step."""

    config_class = None

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.config = self.config_class(*args, **kwargs)
        plan = self.config.plan()
        self.flow = plan.flow
        for prefix, _, node in plan.nodes:
            name, _, index = prefix.partition(".")
            if index:
                if not hasattr(self, name):
                    self.add_module(name, nn.ModuleList())
                getattr(self, name).append(_node(node))
            else:
                self.add_module(name, _node(node))

    @property
    def nlayers(self) -> int:
        return self.config.nlayers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.config.check_input_shape(tuple(x.shape), channel_axis=1)
        saved = {}
        for step in self.flow:
            if isinstance(step, P.Apply):
                x = self.get_submodule(step.prefix)(x)
            elif isinstance(step, P.Pool):
                x = torch.flatten(self.get_submodule(step.prefix)(x), 1)
            elif isinstance(step, P.VectorIn):
                x = x[..., None]
            elif isinstance(step, P.Save):
                saved[step.name] = x
            elif isinstance(step, P.CropTo):
                x = middle_crop(x, saved[step.length].shape[-1] if isinstance(step.length, str) else step.length)
            else:  # ConcatSkip
                skip = saved[step.name]
                length = min(x.shape[-1], skip.shape[-1])
                x = torch.cat((middle_crop(x, length), middle_crop(skip, length)), dim=1)
        return x


class EncoderNet1d(_Network):
    """MDNC ``EncoderNet1d(channel, layers, block, kernel_size, in_planes, out_length)``: ``(B, in_planes, L)``
    -> ``(B, out_length)``, or the feature map ``(B, C', L')`` when ``out_length`` is None or 0."""

    config_class = EncoderConfig

    def __init__(self, channel: int, layers: Sequence[int], block: str = "bottleneck", kernel_size: int = 3,
                 in_planes: int = 1, out_length: int | None = 2):
        super().__init__(channel, layers, block, kernel_size, in_planes, out_length)


class DecoderNet1d(_Network):
    """MDNC ``DecoderNet1d(channel, layers, out_size, block, kernel_size, in_length, out_planes)``."""

    config_class = DecoderConfig

    def __init__(self, channel: int, layers: Sequence[int], out_size: int, block: str = "bottleneck",
                 kernel_size: int = 3, in_length: int | None = 2, out_planes: int = 1):
        super().__init__(channel, layers, out_size, block, kernel_size, in_length, out_planes)

    @property
    def input_size(self) -> tuple[int, ...]:
        return self.config.input_size


class AE1d(_Network):
    """MDNC ``AE1d(channel, layers, block, kernel_size, in_planes, out_planes)``."""

    config_class = AEConfig

    def __init__(self, channel: int, layers: Sequence[int], block: str = "bottleneck", kernel_size: int = 3,
                 in_planes: int = 1, out_planes: int = 1):
        super().__init__(channel, layers, block, kernel_size, in_planes, out_planes)


class UNet1d(AE1d):
    """MDNC ``UNet1d(channel, layers, block, kernel_size, in_planes, out_planes)``."""

    config_class = UNetConfig


ARCHITECTURES = {cls.config_class.arch: cls for cls in (BlockPlain1d, BlockBottleneck1d, EncoderNet1d, DecoderNet1d,
                                                       AE1d, UNet1d)}


def from_config(config) -> nn.Module:
    """Build the reference network of a config (a config object or a dict with ``arch``)."""
    config = coerce_config(config)
    return ARCHITECTURES[config.arch](**config.kwargs())


encnet12, encnet32, encnet47, encnet62 = (make_preset(f"encnet{n}", from_config) for n in (12, 32, 47, 62))
decnet13, decnet33, decnet48, decnet63 = (make_preset(f"decnet{n}", from_config) for n in (13, 33, 48, 63))
ae16, ae32, ae44, ae65, ae83 = (make_preset(f"ae{n}", from_config) for n in (16, 32, 44, 65, 83))
unet16, unet32, unet44, unet65, unet83 = (make_preset(f"unet{n}", from_config) for n in (16, 32, 44, 65, 83))

"""PyTorch reference of MDNC's ``EncoderNet1d`` (``mdnc.modules.resnet``), written from its spec.

Its ``state_dict()`` keys and shapes are exactly the original library's, so MDNC checkpoints
load with ``strict=True`` and checkpoints saved here load into MDNC. Input ``(B, C, L)``.
Arguments and input shapes are validated by ``flax_resnet1d.config`` (shared with the Flax
port) so both implementations reject the same things with the same messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flax_resnet1d.config import EncoderConfig, make_preset

__all__ = ["BlockPlain1d", "BlockBottleneck1d", "EncoderNet1d", "encnet12", "encnet32", "encnet47", "encnet62",
           "from_config"]


def _norm_act_conv(in_planes: int, out_planes: int, kernel_size: int, stride: int, padding: int) -> nn.Sequential:
    """MDNC ``res_branch`` in the 'new' order: InstanceNorm(affine) -> PReLU(per channel) -> Conv."""
    return nn.Sequential(
        nn.InstanceNorm1d(in_planes, affine=True),
        nn.PReLU(num_parameters=in_planes),
        nn.Conv1d(in_planes, out_planes, kernel_size, stride=stride, padding=padding, bias=False),
    )


class _ResidualBlock1d(nn.Module):
    """``branch(x) + in_node(x)``; ``in_node`` (strided 1x1 conv + norm) only when the shape changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, branch: Sequence[tuple[int, int, int, int]]):
        super().__init__()
        planes = in_planes
        for i, (out, kernel_size, conv_stride, padding) in enumerate(branch, start=1):
            self.add_module(f"conv{i}", _norm_act_conv(planes, out, kernel_size, conv_stride, padding))
            planes = out
        self.convs = len(branch)
        if stride > 1 or in_planes != out_planes:
            self.in_node = nn.Sequential(
                nn.Conv1d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False),
                nn.InstanceNorm1d(out_planes, affine=True),
            )
        else:
            self.in_node = None

    def forward(self, x):
        res = x
        for i in range(1, self.convs + 1):
            res = getattr(self, f"conv{i}")(res)
        return res + (x if self.in_node is None else self.in_node(x))


class BlockPlain1d(_ResidualBlock1d):
    """Plain block: k-conv (in -> in), strided k-conv (in -> out)."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        k, p = kernel_size, padding
        super().__init__(in_planes, out_planes, stride, [(in_planes, k, 1, p), (out_planes, k, stride, p)])


class BlockBottleneck1d(_ResidualBlock1d):
    """Bottleneck block without channel reduction: 1x1 (in -> in), strided k (in -> in), 1x1 (in -> out)."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        k, p = kernel_size, padding
        super().__init__(in_planes, out_planes, stride,
                         [(in_planes, 1, 1, 0), (in_planes, k, stride, p), (out_planes, 1, 1, 0)])


BLOCKS = {"plain": BlockPlain1d, "bottleneck": BlockBottleneck1d}


class _ResStack1d(nn.Module):
    """MDNC ``_BlockResStkNd``: ``conv_list`` of stride-1 blocks, then the down-sampling ``conv_scale``."""

    def __init__(self, config: EncoderConfig, stage: int):
        super().__init__()
        blocks = []
        for index in range(config.layers[stage]):
            in_planes, out_planes, stride = config.block_args(stage, index)
            blocks.append(BLOCKS[config.block](in_planes, out_planes, config.kernel_size, stride, config.padding))
        self.conv_list = nn.ModuleList(blocks[:-1])
        self.conv_scale = blocks[-1]

    def forward(self, x):
        for layer in self.conv_list:
            x = layer(x)
        return self.conv_scale(x)


class EncoderNet1d(nn.Module):
    """MDNC ``EncoderNet1d(channel, layers, block, kernel_size, in_planes, out_length)``.

    ``forward(x)`` takes ``(B, in_planes, L)``; returns ``(B, out_length)``, or the feature map
    ``(B, C', L')`` when ``out_length`` is None or 0.
    """

    def __init__(self, channel: int, layers: Sequence[int], block: str = "bottleneck", kernel_size: int = 3,
                 in_planes: int = 1, out_length: int | None = 2):
        super().__init__()
        self.config = config = EncoderConfig(channel, layers, block, kernel_size, in_planes, out_length)
        channels = config.out_channels
        netbody = [nn.Conv1d(in_planes, channel, config.stem_kernel, stride=1, padding=config.stem_kernel // 2,
                             bias=False)]
        netbody += [_ResStack1d(config, stage) for stage in range(len(config.layers))]
        netbody.append(nn.Conv1d(channels, channels, kernel_size, stride=1, padding=config.padding, bias=True))
        if config.out_length is not None:
            netbody.append(nn.AdaptiveAvgPool1d(1))
        self.netbody = nn.ModuleList(netbody)
        self.fc = nn.Linear(channels, config.out_length) if config.out_length is not None else None

    @property
    def nlayers(self) -> int:
        return self.config.nlayers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.config.check_input_shape(tuple(x.shape), channel_axis=1)
        for layer in self.netbody:
            x = layer(x)
        if self.fc is None:
            return x
        return self.fc(torch.flatten(x, 1))


def from_config(config: EncoderConfig | dict) -> EncoderNet1d:
    """Build the reference network of a config (``EncoderConfig`` or its dict)."""
    c = EncoderConfig.coerce(config)
    return EncoderNet1d(c.channel, c.layers, c.block, c.kernel_size, c.in_planes, c.out_length)


encnet12 = make_preset("encnet12", from_config)
encnet32 = make_preset("encnet32", from_config)
encnet47 = make_preset("encnet47", from_config)
encnet62 = make_preset("encnet62", from_config)

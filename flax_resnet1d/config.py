"""Framework-free arguments of MDNC's 1D residual family: validation, plans and geometry.

Both implementations (the Flax modules and the PyTorch reference) validate their arguments
and their inputs here, so the two raise the same errors, before any tracing. Each config
builds its architecture's ``plan.NetPlan``, the one description of its structure and forward
flow; lengths are validated by walking that flow.
This module imports neither JAX nor torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import numbers
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from . import plan as P
from .errors import ConfigError, UsageError, first_line, input_file

BLOCK_DEPTH = {"plain": 2, "bottleneck": 3}  # convolutions on the residual branch
NORMALIZERS = ("batch", "inst", "pinst", "null")
ACTIVATORS = ("prelu", "relu", "null")
LAYER_ORDERS = ("new", "old")
SCALERS = ("down", "up")
MAX_SEARCHED_STAGES = 16  # min_length scans 2**(stages + 2) lengths: 16 stages take seconds, 30 would take days

# name -> (block, blocks per stage); EncoderNet1d presets (64 channels, 5 stages)
PRESETS = {
    "encnet12": ("plain", (1,) * 5),
    "encnet32": ("bottleneck", (2,) * 5),
    "encnet47": ("bottleneck", (3,) * 5),
    "encnet62": ("bottleneck", (4,) * 5),
}
# every 1D preset of MDNC: name -> (arch, block, layers); all with 64 channels
FAMILY_PRESETS = {
    **{name: ("EncoderNet1d", block, layers) for name, (block, layers) in PRESETS.items()},
    **{f"decnet{n + 1}": ("DecoderNet1d", block, layers)
       for n, (block, layers) in zip((12, 32, 47, 62), PRESETS.values())},
    **{f"{prefix}{n}": (arch, block, layers) for prefix, arch in (("ae", "AE1d"), ("unet", "UNet1d"))
       for n, block, layers in ((16, "plain", (2, 1, 1)), (32, "bottleneck", (2, 2, 2)),
                                (44, "bottleneck", (2,) * 4), (65, "bottleneck", (3,) * 4),
                                (83, "bottleneck", (3,) * 5))},
}


def _positive_int(owner: str, name: str, value: Any) -> int:
    """``value`` as a Python int (numpy integers accepted), or a TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{owner}: {name} must be positive, got {value}")
    return int(value)


def _optional_int(owner: str, name: str, value: Any) -> int | None:
    """None, or an int where 0 or less means None (MDNC's 'not set')."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int or None, got {value!r}")
    return int(value) if value > 0 else None


def _option(owner: str, name: str, value: Any, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{owner}: unknown {name} {value!r}; expected one of {list(allowed)}")
    return value


def normalize_block(block: Any, owner: str = "EncoderNet1d") -> str:
    """Return the canonical block name ('plain' or 'bottleneck'); case-insensitive as MDNC."""
    if not isinstance(block, str):
        raise TypeError(f"{owner}: block must be a str, got {type(block).__name__} {block!r}")
    name = block.casefold()
    if name not in BLOCK_DEPTH:
        raise ValueError(f"{owner}: unknown block {block!r}; expected one of {sorted(BLOCK_DEPTH)}")
    return name


def _layers(owner: str, layers: Any) -> tuple[int, ...]:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(f"{owner}: layers must be a sequence of ints, got {layers!r}")
    if len(layers) < 2:
        raise ValueError(f"{owner}: layers needs at least 2 stages, got {list(layers)}")
    return tuple(_positive_int(owner, f"layers[{i}] (blocks in stage {i + 1})", n) for i, n in enumerate(layers))


def kernel_geometry(kernel_size: int) -> tuple[int, int, int, int]:
    """MDNC's cal_kernel_padding: (block kernel, padding, stride, stem/last kernel)."""
    if kernel_size > 1:
        return kernel_size, kernel_size // 2, 2, kernel_size + 2
    return 1, 0, 1, 1


class _Config:
    """Shared behaviour of every config: dict round trip, input validation, lengths."""

    arch: ClassVar[str]

    @classmethod
    def from_dict(cls, d: dict):
        """The config of a dict of constructor arguments (a config file's, with an optional
        ``arch``): ConfigError naming the field and its value if it is not one."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{cls.arch} config: expected an object of constructor arguments, got "
                              f"{type(d).__name__}")
        d = dict(d)
        arch = d.pop("arch", cls.arch)
        if arch != cls.arch:
            raise ConfigError(f"{cls.arch} config: arch is {arch!r}")
        fields = dataclasses.fields(cls)
        unknown = set(d) - {f.name for f in fields}
        if unknown:
            raise ConfigError(f"{cls.arch} config: unknown fields {sorted(unknown)}")
        missing = [f.name for f in fields if f.name not in d and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{cls.arch} config: missing {', '.join(missing)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None

    def to_dict(self) -> dict:
        """The constructor arguments with ``arch``; an EncoderNet1d's dict has none (absent means
        EncoderNet1d), so its config files read as before the family existed."""
        d = self.kwargs()
        return d if self.arch == "EncoderNet1d" else {"arch": self.arch, **d}

    def kwargs(self) -> dict:
        """The constructor arguments (MDNC's names)."""
        d = dataclasses.asdict(self)
        if "layers" in d:
            d["layers"] = list(self.layers)
        return d

    # -- subclasses: plan, in_channels, out_channels ------------------------------------
    def plan(self) -> P.NetPlan:
        raise NotImplementedError

    def _walk(self, length: int, visit: Callable[[P.Node, int], None] | None = None) -> int:
        """Length of the last feature map for an input of ``length`` (the pool and fc after it keep
        it; a vector input is a length-1 map), following the plan's flow; raises plan.LengthProblem.
        ``visit(node, length)`` is called with each node applied and the length it sees."""
        plan = self.plan()
        saved: dict[str, int] = {}
        for step in plan.flow:
            if isinstance(step, P.Apply):
                leaf = plan.leaves[step.prefix]
                if visit is not None:
                    visit(leaf.node, length)
                length = (P.block_length(leaf.node, length, leaf.where) if isinstance(leaf.node, P.BlockPlan)
                          else P.layer_length(leaf.node, length, leaf.where))
            elif isinstance(step, P.VectorIn):
                length = 1
            elif isinstance(step, P.Save):
                saved[step.name] = length
            elif isinstance(step, P.CropTo):
                length = min(length, saved[step.length] if isinstance(step.length, str) else step.length)
            elif isinstance(step, P.ConcatSkip):
                length = min(length, saved[step.name])
        return length

    @property
    def has_batch_norm(self) -> bool:
        return P.has_batch_norm(self.plan())

    def _length_error(self, length: int, problem: P.LengthProblem) -> ValueError:
        text = str(problem)
        if text.startswith("too short"):
            minimum = self.min_length()
            return ValueError(
                f"{self.arch}: input length {length} is too short{self._depth_words()} ({text[len('too short: '):]}); "
                + (f"the minimum length is {minimum}" if minimum else "no length works for this configuration"))
        return ValueError(f"{self.arch}: input length {length}: {text}{self._mismatch_hint()}")

    def _depth_words(self) -> str:
        return f" for {len(self.layers)} stages with kernel_size={self.kernel_size}"

    def _mismatch_hint(self) -> str:
        return (f" (even kernel_size={self.kernel_size} changes the length; use an odd kernel_size or another "
                "input length)")

    def output_length(self, length: int) -> int:
        """Output length for an input of ``length``, or a ValueError naming the problem."""
        try:
            return self._walk(length)
        except P.LengthProblem as problem:
            raise self._length_error(length, problem) from None

    def activation_elements(self, length: int) -> tuple[int, int]:
        """(sum, largest) over the layers of the elements of each layer's output, per example, for an
        input of ``length`` (ignored for a vector input): what a backward pass keeps, and the largest
        tensor a forward pass holds. ValueError for a length the network refuses."""
        sizes: list[int] = []
        try:
            self._walk(length, lambda node, n: sizes.extend(_output_sizes(node, n)))
        except P.LengthProblem as problem:
            raise self._length_error(length, problem) from None
        return sum(sizes), max(sizes, default=0)

    def parameter_count(self) -> int:
        """Number of weights (every state-dict entry) of the network."""
        return sum(math.prod(row.torch_shape) for row in P.plan_rows(self.plan()))

    def min_length(self) -> int | None:
        """Smallest input length this network accepts, or None if no length works. A scan: the
        lengths a network takes need not be all those from the smallest on (an even kernel takes
        multiples of 2**stages only), and each stage at most halves the length."""
        if self._depth() > MAX_SEARCHED_STAGES:
            raise ConfigError(f"{self.arch}: {self._depth()} stages need inputs of about 2**{self._depth()} steps or "
                             f"more; input lengths are searched for at most {MAX_SEARCHED_STAGES} stages")
        for length in range(1, 2 ** (self._depth() + 2) + 16):
            try:
                self._walk(length)
                return length
            except P.LengthProblem:
                continue
        return None

    def _depth(self) -> int:
        return len(self.layers)

    def check_input_shape(self, shape: Sequence[int], channel_axis: int) -> int:
        """Validate a (B, C, L) or (B, L, C) input shape; return the output length."""
        layout = "(B, C, L)" if channel_axis == 1 else "(B, L, C)"
        if len(shape) != 3:
            raise ValueError(f"{self.arch}: input must be rank 3 {layout}, got shape {tuple(shape)}")
        channels = shape[channel_axis]
        if channels != self.in_channels:
            raise ValueError(f"{self.arch}: input has {channels} channels but {self._in_channels_name}="
                             f"{self.in_channels} (shape {tuple(shape)}, layout {layout})")
        return self.output_length(shape[2 if channel_axis == 1 else 1])

    _in_channels_name: ClassVar[str] = "in_planes"

    @property
    def in_channels(self) -> int:
        return self.in_planes

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Output shape in MDNC layout for an input shape in MDNC layout."""
        return (input_shape[0], self.out_channels, self.check_input_shape(input_shape, channel_axis=1))


def _output_sizes(node: P.Node, length: int) -> list[int]:
    """Elements per example of the output of each layer of ``node`` applied to ``length`` steps
    (a fused NormAct is one tensor; lengths already validated by the walk)."""
    if isinstance(node, P.BlockPlan):
        sizes, branch = [], length
        for _, _, seq in node.branches:
            branch = _seq_sizes(seq, branch, sizes)
        if node.shortcut is not None:
            _seq_sizes(node.shortcut, length, sizes)
        return sizes
    if isinstance(node, P.Conv):
        return [node.out_planes * P.conv_length(length, node.kernel_size, node.stride, node.padding)]
    if isinstance(node, P.Linear):
        return [node.out_features]
    return []  # the average pool: a vector per channel


def _seq_sizes(seq: P.Seq, length: int, sizes: list[int]) -> int:
    """Append the output elements of each layer of ``seq`` to ``sizes``; return its output length."""
    channels = 0
    for _, layer in seq.layers:
        if isinstance(layer, (P.Conv, P.Upsample)):
            length = P.layer_length(layer, length, "")
        channels = (layer.out_planes if isinstance(layer, P.Conv) else layer.norm.features
                    if isinstance(layer, P.NormAct) else getattr(layer, "features", channels))
        sizes.append(channels * length)
    return length


# -- standalone blocks ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _BlockConfig(_Config):
    """``BlockPlain1d`` / ``BlockBottleneck1d`` arguments, MDNC's names and defaults."""

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

    block: ClassVar[str]

    def __post_init__(self):
        owner = self.arch
        for name in ("in_planes", "out_planes", "kernel_size", "stride"):
            object.__setattr__(self, name, _positive_int(owner, name, getattr(self, name)))
        if isinstance(self.padding, bool) or not isinstance(self.padding, numbers.Integral) or self.padding < 0:
            raise ValueError(f"{owner}: padding must be a non-negative int, got {self.padding!r}")
        object.__setattr__(self, "padding", int(self.padding))
        object.__setattr__(self, "output_size", _optional_int(owner, "output_size", self.output_size))
        _option(owner, "normalizer", self.normalizer, NORMALIZERS)
        _option(owner, "activator", self.activator, ACTIVATORS)
        _option(owner, "layer_order", self.layer_order, LAYER_ORDERS)
        _option(owner, "scaler", self.scaler, SCALERS)
        if self.output_size is not None and self.scaler == "down":
            warnings.warn(f"{owner}: output_size={self.output_size} is ignored with scaler='down' (as in MDNC)",
                          stacklevel=4)
        if self.layer_order == "old" and self.normalizer == "null":
            warnings.warn(f"{owner}: layer_order='old' is ignored with normalizer='null' (as in MDNC: conv first)",
                          stacklevel=4)

    def plan(self) -> P.NetPlan:
        return P.NetPlan(self.arch, (("", None, P.block_plan(self.block, **self.kwargs())),), (P.Apply(""),))

    @property
    def out_channels(self) -> int:
        return self.out_planes

    def _depth(self) -> int:
        return 2

    def _depth_words(self) -> str:
        return ""

    def _mismatch_hint(self) -> str:
        return (f" (padding={self.padding} with kernel_size={self.kernel_size}; the branch keeps the shortcut's "
                f"length with padding={self.kernel_size // 2} and an odd kernel_size)")


@dataclasses.dataclass(frozen=True)
class BlockPlainConfig(_BlockConfig):
    arch: ClassVar[str] = "BlockPlain1d"
    block: ClassVar[str] = "plain"


@dataclasses.dataclass(frozen=True)
class BlockBottleneckConfig(_BlockConfig):
    arch: ClassVar[str] = "BlockBottleneck1d"
    block: ClassVar[str] = "bottleneck"


# -- networks --------------------------------------------------------------------------------
class _NetworkConfig(_Config):
    """Shared geometry of the networks (blocks always pinst / prelu / new)."""

    @property
    def block_depth(self) -> int:
        return BLOCK_DEPTH[self.block]

    @property
    def stride(self) -> int:
        return kernel_geometry(self.kernel_size)[2]

    @property
    def padding(self) -> int:
        return kernel_geometry(self.kernel_size)[1]

    @property
    def stem_kernel(self) -> int:
        return kernel_geometry(self.kernel_size)[3]

    def _stage(self, flax_prefix: str, label: str, in_planes: int, out_planes: int, stack_level: int,
               **kwargs) -> P.StagePlan:
        kwargs.setdefault("stride", self.stride)
        return P.stage_plan(flax_prefix, label, self.block, in_planes, out_planes, self.kernel_size, self.padding,
                            stack_level=stack_level, **kwargs)

    def _end_conv(self, in_planes: int, out_planes: int, bias: bool) -> P.Conv:
        return P.Conv(in_planes, out_planes, self.stem_kernel, 1, self.stem_kernel // 2, bias)


@dataclasses.dataclass(frozen=True)
class EncoderConfig(_NetworkConfig):
    """The constructor arguments of ``EncoderNet1d``, validated, plus derived geometry."""

    channel: int
    layers: tuple[int, ...]
    block: str = "bottleneck"
    kernel_size: int = 3
    in_planes: int = 1
    out_length: int | None = 2

    arch: ClassVar[str] = "EncoderNet1d"

    def __post_init__(self):
        for name in ("channel", "kernel_size", "in_planes"):
            object.__setattr__(self, name, _positive_int(self.arch, name, getattr(self, name)))
        object.__setattr__(self, "layers", _layers(self.arch, self.layers))
        object.__setattr__(self, "block", normalize_block(self.block, self.arch))
        object.__setattr__(self, "out_length", _optional_int(self.arch, "out_length", self.out_length))

    @property
    def nlayers(self) -> int:
        """Convolutions along the depth: stem + residual branches + final conv."""
        return self.block_depth * sum(self.layers) + 2

    @property
    def stage_channels(self) -> list[tuple[int, int]]:
        """(in, out) channels of each stage; the first keeps, the others double."""
        chans, c = [(self.channel, self.channel)], self.channel
        for _ in self.layers[1:]:
            chans.append((c, 2 * c))
            c *= 2
        return chans

    @property
    def out_channels(self) -> int:
        return self.stage_channels[-1][1]

    def block_args(self, stage: int, index: int) -> tuple[int, int, int]:
        """(in_planes, out_planes, stride) of block ``index`` in ``stage`` (0-based), read from the plan:
        as in MDNC, the first block changes the channels and the last one down-samples."""
        block = self.plan().node(f"netbody.{stage + 1}").blocks[index][2]
        first, last = block.branches[0][2].layers, block.branches[-1][2].layers
        conv_in = next(layer for _, layer in first if isinstance(layer, P.Conv))
        conv_out = next(layer for _, layer in last if isinstance(layer, P.Conv))
        stride = max(layer.stride for _, _, seq in block.branches for _, layer in seq.layers
                     if isinstance(layer, P.Conv))
        return conv_in.in_planes, conv_out.out_planes, stride

    def plan(self) -> P.NetPlan:
        n, c = len(self.layers), self.out_channels
        nodes = [("netbody.0", "stem", P.Conv(self.in_planes, self.channel, self.stem_kernel, 1,
                                              self.stem_kernel // 2))]
        nodes += [(f"netbody.{s + 1}", None, self._stage(f"stage{s + 1}", f"stage {s + 1}", cin, cout, self.layers[s]))
                  for s, (cin, cout) in enumerate(self.stage_channels)]
        nodes.append((f"netbody.{n + 1}", "final_conv", P.Conv(c, c, self.kernel_size, 1, self.padding, True)))
        if self.out_length is not None:
            nodes += [(f"netbody.{n + 2}", None, P.AvgPool()), ("fc", "fc", P.Linear(c, self.out_length))]
        flow: list[P.Step] = []
        for prefix, _, node in nodes:  # MDNC's netbody is one nn.Sequential, then fc: every node in order
            if isinstance(node, P.StagePlan):
                flow += P.stage_flow(prefix, node)
            else:
                flow.append(P.Pool(prefix) if isinstance(node, P.AvgPool) else P.Apply(prefix))
        return P.NetPlan(self.arch, tuple(nodes), tuple(flow))

    def feature_length(self, length: int) -> int:
        """Length of the final feature map for an input of ``length``, or ValueError."""
        return self.output_length(length)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        length = self.check_input_shape(input_shape, channel_axis=1)
        if self.out_length is not None:
            return (input_shape[0], self.out_length)
        return (input_shape[0], self.out_channels, length)


@dataclasses.dataclass(frozen=True)
class DecoderConfig(_NetworkConfig):
    """``DecoderNet1d(channel, layers, out_size, block, kernel_size, in_length, out_planes)``."""

    channel: int
    layers: tuple[int, ...]
    out_size: int
    block: str = "bottleneck"
    kernel_size: int = 3
    in_length: int | None = 2
    out_planes: int = 1

    arch: ClassVar[str] = "DecoderNet1d"

    def __post_init__(self):
        for name in ("channel", "out_size", "kernel_size", "out_planes"):
            object.__setattr__(self, name, _positive_int(self.arch, name, getattr(self, name)))
        object.__setattr__(self, "layers", _layers(self.arch, self.layers))
        object.__setattr__(self, "block", normalize_block(self.block, self.arch))
        object.__setattr__(self, "in_length", _optional_int(self.arch, "in_length", self.in_length))
        smallest = self.shapes[-1]
        if smallest < 2:  # every stage starts with an instance norm
            raise ValueError(f"{self.arch}: out_size={self.out_size} is too small for {len(self.layers)} stages "
                             f"with kernel_size={self.kernel_size}: the first stage would see length {smallest}; "
                             f"out_size must be > {self.stride ** len(self.layers)}" if self.stride > 1 else
                             f"{self.arch}: out_size={self.out_size} must be at least 2")

    @property
    def shapes(self) -> tuple[int, ...]:
        """MDNC's cal_scaled_shapes: out_size, then each ceil(previous / stride)."""
        shapes = [self.out_size]
        for _ in self.layers:
            if shapes[-1] // self.stride == 0:
                raise ValueError(f"{self.arch}: out_size={self.out_size} is too small for {len(self.layers)} "
                                 f"stages with kernel_size={self.kernel_size}")
            shapes.append(math.ceil(shapes[-1] / self.stride))
        return tuple(shapes)

    @property
    def channels(self) -> tuple[int, ...]:
        n = len(self.layers)
        return tuple(self.channel * 2 ** i for i in range(n - 1, -1, -1))

    @property
    def is_vector_input(self) -> bool:
        return self.in_length is not None

    @property
    def input_size(self) -> tuple[int, ...]:
        """The input shape without the batch: (in_length,) or (C, L) of a feature map."""
        return (self.in_length,) if self.is_vector_input else (self.channels[0], self.shapes[-1])

    @property
    def nlayers(self) -> int:
        return self.block_depth * sum(self.layers) + (3 if self.is_vector_input else 2)

    @property
    def in_channels(self) -> int:
        return self.channels[0]

    _in_channels_name: ClassVar[str] = "the first stage's channels (channel * 2 ** (len(layers) - 1))"

    @property
    def out_channels(self) -> int:
        return self.out_planes

    def plan(self) -> P.NetPlan:
        ch, shapes = self.channels, self.shapes
        nodes, flow = [], []
        if self.is_vector_input:  # a length-1 input: the output position j reads kernel tap s - 1 - j
            s = shapes[-1]
            nodes.append(("conv_in", "conv_in", P.Conv(self.in_length, ch[0], s, 1, s - 1, True)))
            flow += [P.VectorIn(), P.Apply("conv_in"), P.CropTo(s)]
        nodes.append(("conv_first", "conv_first", P.Conv(ch[0], ch[0], self.kernel_size, 1, self.padding)))
        flow.append(P.Apply("conv_first"))
        outs = ch[1:] + ch[-1:]
        for i, (n, target) in enumerate(zip(self.layers, shapes[-2::-1])):  # each stage cropped to its shape
            stage = self._stage(f"stage{i + 1}", f"stage {i + 1}", ch[i], outs[i], n, scaler="up")
            nodes.append((f"netbody.{i}", None, stage))
            flow += P.stage_flow(f"netbody.{i}", stage) + [P.CropTo(target)]
        nodes.append(("conv_last", "conv_last", self._end_conv(ch[-1], self.out_planes, True)))
        flow.append(P.Apply("conv_last"))
        return P.NetPlan(self.arch, tuple(nodes), tuple(flow))

    def check_input_shape(self, shape: Sequence[int], channel_axis: int) -> int:
        if not self.is_vector_input:
            return super().check_input_shape(shape, channel_axis)
        if len(shape) != 2 or shape[1] != self.in_length:
            raise ValueError(f"{self.arch}: input must be (B, in_length={self.in_length}), got shape {tuple(shape)}")
        return self._walk(1)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return (input_shape[0], self.out_planes, self.check_input_shape(input_shape, channel_axis=1))

    def min_length(self) -> int | None:
        return None if self.is_vector_input else super().min_length()


@dataclasses.dataclass(frozen=True)
class AEConfig(_NetworkConfig):
    """``AE1d(channel, layers, block, kernel_size, in_planes, out_planes)``."""

    channel: int
    layers: tuple[int, ...]
    block: str = "bottleneck"
    kernel_size: int = 3
    in_planes: int = 1
    out_planes: int = 1

    arch: ClassVar[str] = "AE1d"
    skips: ClassVar[bool] = False  # UNet1d: down stages export their hidden tensor, up stages concatenate it

    def __post_init__(self):
        for name in ("channel", "kernel_size", "in_planes", "out_planes"):
            object.__setattr__(self, name, _positive_int(self.arch, name, getattr(self, name)))
        object.__setattr__(self, "layers", _layers(self.arch, self.layers))
        object.__setattr__(self, "block", normalize_block(self.block, self.arch))

    @property
    def nlayers(self) -> int:
        return self.block_depth * self.layers[-1] + 2 * self.block_depth * sum(self.layers[:-1]) + 2

    @property
    def out_channels(self) -> int:
        return self.out_planes

    def plan(self) -> P.NetPlan:
        c, layers, ex = self.channel, self.layers, self.skips
        down = [self._stage("down1", "down stage 1", c, c, layers[0])]
        for j, n in enumerate(layers[1:-1]):
            down.append(self._stage(f"down{j + 2}", f"down stage {j + 2}", c, 2 * c, n))
            c *= 2
        middle = self._stage("middle", "the middle stage", c, c, layers[-1], hidden_planes=2 * c, scaler="up")
        up = []
        for j, n in enumerate(layers[-2:0:-1]):
            up.append(self._stage(f"up{j + 1}", f"up stage {j + 1}", c, c // 2, n, hidden_planes=c,
                                  ex_planes=c if ex else 0, scaler="up"))
            c //= 2
        up.append(self._stage(f"up{len(layers) - 1}", f"up stage {len(layers) - 1}", c, c, layers[0], hidden_planes=c,
                              ex_planes=c if ex else 0, stride=1))
        nodes = [("conv_first", "conv_first", self._end_conv(self.in_planes, self.channel, False))]
        nodes += [(f"conv_down_list.{i}", None, stage) for i, stage in enumerate(down)]
        nodes += [(f"conv_up_list.{i}", None, stage) for i, stage in enumerate(up)]  # registered before the middle
        nodes += [("conv_middle_up", None, middle), ("conv_final", "conv_final", self._end_conv(c, self.out_planes,
                                                                                                True))]
        # AE1d crops each up stage's input to the matching down stage's input; UNet1d concatenates
        # the tensor that down stage fed to its conv_scale.
        flow: list[P.Step] = [P.Apply("conv_first")]
        for i, stage in enumerate(down):
            route = f"down{i + 1}"
            flow += (P.stage_flow(f"conv_down_list.{i}", stage, save_hidden=route) if ex
                     else [P.Save(route)] + P.stage_flow(f"conv_down_list.{i}", stage))
        flow += P.stage_flow("conv_middle_up", middle)
        for i, stage in enumerate(up):
            route = f"down{len(down) - i}"
            flow += [P.ConcatSkip(route) if ex else P.CropTo(route)] + P.stage_flow(f"conv_up_list.{i}", stage)
        flow.append(P.Apply("conv_final"))
        return P.NetPlan(self.arch, tuple(nodes), tuple(flow))


@dataclasses.dataclass(frozen=True)
class UNetConfig(AEConfig):
    """``UNet1d(channel, layers, block, kernel_size, in_planes, out_planes)``."""

    arch: ClassVar[str] = "UNet1d"
    skips: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if 1 in self.layers[1:-1]:
            raise ValueError(
                f"{self.arch}: layers={list(self.layers)}: a 1 in layers[1:-1] makes that down stage export its "
                "input (half the channels) as the skip, which the matching up stage cannot take; MDNC builds this "
                "network and fails at its first forward (the unet16 preset). Use at least 2 blocks there")


CONFIGS = {cls.arch: cls for cls in (BlockPlainConfig, BlockBottleneckConfig, EncoderConfig, DecoderConfig, AEConfig,
                                     UNetConfig)}


def config_from_dict(d: dict) -> _Config:
    """The config of a dict with an ``arch`` field (class name; absent means ``EncoderNet1d``);
    ConfigError naming the field if it is not one."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"expected an object of constructor arguments, got {type(d).__name__}")
    arch = d.get("arch", "EncoderNet1d")
    if not isinstance(arch, str) or arch not in CONFIGS:
        raise ConfigError(f"unknown arch {arch!r}; expected one of {sorted(CONFIGS)}")
    return CONFIGS[arch].from_dict(d)


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few hundred bytes
MAX_CONFIG_DEPTH = 8  # a run's config.json nests 3 levels


def parse_json(raw: bytes | str, source: str) -> dict:
    """The JSON object of a config (``--config`` text, a checkpoint's or a run's config.json),
    checked at the edge: UTF-8, at most MAX_CONFIG_BYTES, nested at most MAX_CONFIG_DEPTH levels
    (counted before parsing, so no depth reaches the parser's recursion), an object; ConfigError
    naming ``source`` otherwise."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: {len(raw):,} bytes, more than a config's {MAX_CONFIG_BYTES:,}")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{source}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    brackets = re.sub(r'"(?:[^"\\]|\\.)*"', "", raw)  # strings removed: only their brackets nest
    depth, deepest = 0, 0
    for c in brackets:
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    if deepest > MAX_CONFIG_DEPTH:
        raise ConfigError(f"{source}: nested {deepest} levels deep, more than a config's {MAX_CONFIG_DEPTH}")
    try:
        value = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, or an integer beyond Python's digit limit
        raise ConfigError(f"{source}: invalid JSON ({first_line(e)})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(value).__name__}")
    return value


def read_json(path: str | os.PathLike, what: str = "") -> dict:
    """``parse_json`` of the file ``path`` (``what`` names it in errors, e.g. ``--config``), refused
    unread if it is not a regular file (a FIFO would block) or is larger than a config."""
    input_file(path, what, ConfigError)
    source = f"{what} {path}" if what else str(path)
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: {os.path.getsize(path):,} bytes, more than a config's {MAX_CONFIG_BYTES:,}")
    with open(path, "rb") as f:
        return parse_json(f.read(MAX_CONFIG_BYTES + 1), source)


def coerce_config(config) -> _Config:
    """A config object as is, or the config of its dict."""
    return config if isinstance(config, _Config) else config_from_dict(config)


def preset_config(name: str, *args, **kwargs) -> _Config:
    """Config of a named MDNC 1D preset (64 channels). Arguments after the preset's own
    (block, layers) are the architecture's, by name or in order: encnet (in_planes=1,
    out_length=2, kernel_size=3); decnet (out_size, kernel_size=3, in_length=2, out_planes=1);
    ae/unet (in_planes=1, out_planes=1, kernel_size=3)."""
    if name not in FAMILY_PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(FAMILY_PRESETS)}")
    arch, block, layers = FAMILY_PRESETS[name]
    order = PRESET_ARGS[arch]
    if len(args) > len(order):
        raise TypeError(f"{name}: at most {len(order)} positional arguments {order}, got {len(args)}")
    return CONFIGS[arch](channel=64, layers=layers, block=block, **dict(zip(order, args)), **kwargs)


PRESET_ARGS = {"EncoderNet1d": ("in_planes", "out_length", "kernel_size"),
               "DecoderNet1d": ("out_size", "kernel_size", "in_length", "out_planes"),
               "AE1d": ("in_planes", "out_planes", "kernel_size"), "UNet1d": ("in_planes", "out_planes", "kernel_size")}


def make_preset(name: str, build):
    """A timm-style factory ``name(*preset args, **kwargs)`` returning ``build(preset_config(...), **kwargs)``;
    keyword arguments that are not the architecture's (dtype, ...) go to ``build``."""
    arch, block, layers = FAMILY_PRESETS[name]
    fields = {f.name for f in dataclasses.fields(CONFIGS[arch])}

    def factory(*args, **kwargs):
        config_kwargs = {k: v for k, v in kwargs.items() if k in fields}
        return build(preset_config(name, *args, **config_kwargs),
                     **{k: v for k, v in kwargs.items() if k not in fields})

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (f"MDNC preset ``{name}`` ({arch}): 64 channels, {block} blocks {list(layers)}; "
                       f"arguments {PRESET_ARGS[arch]}.")
    return factory


# -- default inputs (verify, summary) ------------------------------------------------------
MIN_FEATURE_LENGTH = 6  # instance norm over very short final maps is ill-conditioned (as in the parity suite)


def default_length(config: _Config) -> int:
    """Input length for random inputs and summaries: the smallest power of two (else any
    length) giving a final feature length >= MIN_FEATURE_LENGTH."""
    start = config.min_length()
    if start is None:
        raise UsageError("no input length works for this configuration")
    for length in itertools.chain((2 ** p for p in range(4, 21)), range(start, 1 << 16)):
        try:
            if config.output_length(length) >= MIN_FEATURE_LENGTH:
                return length
        except ValueError:
            continue
    raise UsageError(f"no input length below {1 << 16} gives a final feature length >= {MIN_FEATURE_LENGTH}; "
                     "pass --length")


def input_shape(config, batch: int, length: int | None) -> tuple[int, ...]:
    """MDNC-layout input shape: (B, C, L), or (B, in_length) for a decoder's vector input."""
    if getattr(config, "is_vector_input", False):
        return (batch, config.in_length)
    return (batch, config.in_channels, length or default_length(config))


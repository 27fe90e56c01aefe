"""Framework-free plans of MDNC's 1D residual family: which layers each block and network
holds, in MDNC's ``nn.Sequential`` order, with their MDNC key and Flax path, and the forward
flow that runs them.

A plan is plain data (frozen dataclasses). The Flax modules (``model``), the PyTorch
reference (``torch_ref``), the weight port (``port.param_table``), ``summary`` and the input
validation in ``config`` all read it, so the structure and dataflow of every architecture are
written once. Parameter-free layers (ReLU, Upsample, InstanceNorm without affine) are in the
plan too: they take a Sequential index in MDNC and so shift the keys after them.
This module imports neither JAX nor torch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import NamedTuple, Union

FlaxPath = tuple[str, ...]


# -- layers --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Conv:
    in_planes: int
    out_planes: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = False


@dataclasses.dataclass(frozen=True)
class Norm:
    kind: str  # 'batch' (BatchNorm1d), 'inst' (InstanceNorm1d, no affine), 'pinst' (affine)
    features: int


@dataclasses.dataclass(frozen=True)
class Act:
    kind: str  # 'prelu' (one slope per channel) or 'relu'
    features: int


@dataclasses.dataclass(frozen=True)
class Upsample:
    """``nn.Upsample(mode='linear', align_corners=True)`` by ``scale_factor`` or to ``size``."""

    scale_factor: int | None
    size: int | None

    def out_length(self, length: int) -> int:
        return self.size if self.size is not None else length * self.scale_factor


@dataclasses.dataclass(frozen=True)
class NormAct:
    """A 'pinst' norm and the PReLU after it (``act``; None: no activation) as one layer, which
    the Flax port runs as one fused kernel. In MDNC they are two layers: Sequential indices i and
    i + 1, Flax scopes ``norm`` and ``act``."""

    norm: Norm
    act: Act | None = None

    def parts(self) -> tuple[tuple[str, Norm | Act], ...]:
        return (("norm", self.norm),) + (() if self.act is None else (("act", self.act),))


@dataclasses.dataclass(frozen=True)
class Linear:
    in_features: int
    out_features: int


@dataclasses.dataclass(frozen=True)
class AvgPool:
    """``AdaptiveAvgPool1d(1)``: no parameters, but a ModuleList index."""


Layer = Union[Conv, Norm, Act, Upsample]


@dataclasses.dataclass(frozen=True)
class Seq:
    """An ``nn.Sequential``: ``layers`` are ``(Flax name, layer)`` pairs in MDNC's order."""

    layers: tuple[tuple[str, Layer | NormAct], ...]

    def sequential(self) -> Iterator[tuple[str, Layer]]:
        """``(Flax name, layer)`` per ``nn.Sequential`` entry (the MDNC index is the position): a
        NormAct is its two layers."""
        for name, layer in self.layers:
            yield from layer.parts() if isinstance(layer, NormAct) else ((name, layer),)


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """A residual block: branch Seqs ``(MDNC name, Flax name, Seq)`` and the shortcut (``in_node``)."""

    kind: str  # 'plain' or 'bottleneck'
    branches: tuple[tuple[str, str, Seq], ...]
    shortcut: Seq | None

    def seqs(self) -> Iterator[tuple[str, str, Seq]]:
        yield from self.branches
        if self.shortcut is not None:
            yield "in_node", "shortcut", self.shortcut


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """MDNC ``_BlockResStkNd``, a container of blocks: ``(MDNC slot, Flax name, block)``, the last
    in slot ``conv_scale``. ``label`` names the stage in length errors."""

    blocks: tuple[tuple[str, str, BlockPlan], ...]
    label: str


Node = Union[Conv, Linear, AvgPool, StagePlan, BlockPlan]


# -- forward flow: the steps a network runs, in order ----------------------------------------
@dataclasses.dataclass(frozen=True)
class Apply:
    """Run the leaf node (Conv, Linear or residual block) at this MDNC prefix."""

    prefix: str


@dataclasses.dataclass(frozen=True)
class Pool:
    """``AdaptiveAvgPool1d(1)`` and flatten: ``(B, C, L)`` -> ``(B, C)``; the module sits at ``prefix``."""

    prefix: str


@dataclasses.dataclass(frozen=True)
class VectorIn:
    """A decoder's ``(B, in_length)`` input as a length-1 map of ``in_length`` channels."""


@dataclasses.dataclass(frozen=True)
class Save:
    """Keep the current tensor under ``name`` (a skip, or a length to crop to later)."""

    name: str


@dataclasses.dataclass(frozen=True)
class CropTo:
    """MDNC's middle crop to at most ``length`` positions (start ``(L - length) // 2``); a str
    is the name of a saved tensor, whose length is taken."""

    length: int | str


@dataclasses.dataclass(frozen=True)
class ConcatSkip:
    """Middle-crop the current tensor and the one saved under ``name`` to the shorter, then
    concatenate ``[x, skip]`` on channels."""

    name: str


Step = Union[Apply, Pool, VectorIn, Save, CropTo, ConcatSkip]


class Leaf(NamedTuple):
    """A node a flow applies: its MDNC prefix, Flax name (None: the model itself) and the name
    length errors give it."""

    prefix: str
    flax_name: str | None
    node: Conv | Linear | AvgPool | BlockPlan
    where: str


@dataclasses.dataclass(frozen=True)
class NetPlan:
    """A whole network: ``(MDNC prefix, Flax name, node)`` in MDNC's state-dict order, and the
    ``flow`` of its forward pass.

    A prefix ``name.i`` is entry ``i`` of the ModuleList ``name``; ``""`` is the model itself
    (a standalone block). Stages have no Flax name: their blocks sit at the top level, and the
    flow applies them one by one (prefix ``<stage>.conv_list.<i>`` or ``<stage>.conv_scale``).
    """

    arch: str
    nodes: tuple[tuple[str, str | None, Node], ...]
    flow: tuple[Step, ...]

    def node(self, prefix: str) -> Node:
        return next(node for p, _, node in self.nodes if p == prefix)

    @functools.cached_property
    def leaves(self) -> dict[str, Leaf]:
        """The nodes a flow can apply, by prefix: the blocks of each stage, every other node as is."""
        leaves = {}
        for prefix, flax_name, node in self.nodes:
            if isinstance(node, StagePlan):
                for i, (slot, block_name, block) in enumerate(node.blocks):
                    leaves[_join(prefix, slot)] = Leaf(_join(prefix, slot), block_name, block,
                                                       f"{node.label} block {i + 1}")
            else:
                leaves[prefix] = Leaf(prefix, flax_name, node, prefix or "the block")
        return leaves


def stage_flow(prefix: str, stage: StagePlan, save_hidden: str | None = None) -> list[Step]:
    """Apply the blocks of the stage at ``prefix`` in turn; ``save_hidden`` saves the tensor fed
    to ``conv_scale`` under that name (UNet1d's skip)."""
    steps: list[Step] = [Apply(_join(prefix, slot)) for slot, _, _ in stage.blocks]
    return steps[:-1] + [Save(save_hidden)] + steps[-1:] if save_hidden else steps


# -- the branch factory (MDNC's _BlockFactory) --------------------------------------------
def is_scaling(stride: int, output_size: int | None, scaler: str) -> bool:
    return (output_size is not None and scaler == "up") or stride > 1


def _norm_act(normalizer: str, activator: str, features: int, fuse: bool) -> list[tuple[str, Layer | NormAct]]:
    """The norm and the activation after it (``activator`` 'null': none); with ``fuse`` a 'pinst'
    norm and a PReLU or no activation are one NormAct (MDNC's new order: pre-activation)."""
    norm, act = Norm(normalizer, features), None if activator == "null" else Act(activator, features)
    if fuse and normalizer == "pinst" and activator != "relu":
        return [("norm_act", NormAct(norm, act))]
    return [("norm", norm)] + ([] if act is None else [("act", act)])


def residual_branch(in_planes: int, out_planes: int, kernel_size: int, stride: int, padding: int,
                    output_size: int | None, scaler: str, normalizer: str, activator: str, layer_order: str) -> Seq:
    """MDNC ``res_branch``: ``[Norm, Act] [Upsample] Conv [Norm, Act]``, as the options say."""
    up = scaler == "up" and is_scaling(stride, output_size, scaler)
    resample = [("upsample", Upsample(None if output_size is not None else stride, output_size))] if up else []
    conv = [("conv", Conv(in_planes, out_planes, kernel_size, 1 if up else stride, padding, normalizer == "null"))]
    if normalizer == "null":  # layer_order is ignored: always conv first
        act = [] if activator == "null" else [("act", Act(activator, out_planes))]
        return Seq(tuple(resample + conv + act))
    if layer_order == "new":
        return Seq(tuple(_norm_act(normalizer, activator, in_planes, fuse=True) + resample + conv))
    return Seq(tuple(resample + conv + _norm_act(normalizer, activator, out_planes, fuse=False)))


def shortcut_branch(in_planes: int, out_planes: int, stride: int, output_size: int | None, scaler: str,
                    normalizer: str, layer_order: str) -> Seq | None:
    """MDNC ``in_branch``: a 1x1 projection when the shape changes. With scaler 'up' the
    Upsample is there even at stride 1 (then the identity), shifting the keys by one."""
    if not (is_scaling(stride, output_size, scaler) or in_planes != out_planes):
        return None
    layers: list[tuple[str, Layer | NormAct]] = []
    if scaler == "up":
        layers.append(("upsample", Upsample(None if output_size is not None else stride, output_size)))
    layers.append(("conv", Conv(in_planes, out_planes, 1, 1 if scaler == "up" else stride, 0, normalizer == "null")))
    if normalizer != "null":
        layers += _norm_act(normalizer, "null", out_planes, fuse=layer_order == "new")
    return Seq(tuple(layers))


def block_plan(kind: str, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
               output_size: int | None = None, normalizer: str = "pinst", activator: str = "prelu",
               layer_order: str = "new", scaler: str = "down") -> BlockPlan:
    """``BlockPlain1d``: conv1 (k, in -> in), conv2 (k, in -> out, scaling).
    ``BlockBottleneck1d``: conv1 (1x1, in -> in), conv2 (k, in -> in, scaling), conv3 (1x1, in -> out)."""
    options = dict(normalizer=normalizer, activator=activator, layer_order=layer_order)
    plain = dict(output_size=None, scaler="down", **options)
    if kind == "plain":
        convs = [residual_branch(in_planes, in_planes, kernel_size, 1, padding, **plain),
                 residual_branch(in_planes, out_planes, kernel_size, stride, padding, output_size, scaler, **options)]
    else:
        convs = [residual_branch(in_planes, in_planes, 1, 1, 0, **plain),
                 residual_branch(in_planes, in_planes, kernel_size, stride, padding, output_size, scaler, **options),
                 residual_branch(in_planes, out_planes, 1, 1, 0, **plain)]
    branches = tuple((f"conv{i}", f"conv{i}", seq) for i, seq in enumerate(convs, start=1))
    return BlockPlan(kind, branches, shortcut_branch(in_planes, out_planes, stride, output_size, scaler, normalizer,
                                                     layer_order))


def stage_plan(flax_prefix: str, label: str, block: str, in_planes: int, out_planes: int, kernel_size: int,
               padding: int, stride: int, stack_level: int, hidden_planes: int | None = None, ex_planes: int = 0,
               scaler: str = "down") -> StagePlan:
    """MDNC ``_BlockResStkNd`` (networks always use pinst / prelu / new): ``stack_level - 1``
    stride-1 blocks (the first (in + ex) -> hidden, ex: a concatenated skip's channels), then
    ``conv_scale`` (hidden -> out) with the stride and scaler. Flax names ``<flax_prefix>_block<i>``."""
    hidden = hidden_planes or out_planes
    geometry = []
    for i in range(stack_level - 1):
        geometry.append((in_planes + ex_planes if i == 0 else hidden, hidden, 1, "down"))
    geometry.append((hidden if stack_level > 1 else in_planes + ex_planes, out_planes, stride, scaler))
    blocks = tuple(
        ("conv_scale" if i == stack_level - 1 else f"conv_list.{i}", f"{flax_prefix}_block{i + 1}",
         block_plan(block, cin, cout, kernel_size, s, padding, scaler=sc))
        for i, (cin, cout, s, sc) in enumerate(geometry))
    return StagePlan(blocks, label)


# -- parameters --------------------------------------------------------------------------
class ParamRow(NamedTuple):
    """One state-dict entry: MDNC key, Flax collection and path, PyTorch shape."""

    torch_key: str
    flax_path: FlaxPath
    torch_shape: tuple[int, ...]
    collection: str = "params"


# (MDNC suffix, Flax collection, Flax leaf, shape) per layer; BatchNorm's statistics in batch_stats.
def _layer_entries(layer) -> list[tuple[str, str, str, tuple[int, ...]]]:
    if isinstance(layer, Conv):
        entries = [("weight", "params", "kernel", (layer.out_planes, layer.in_planes, layer.kernel_size))]
        return entries + ([("bias", "params", "bias", (layer.out_planes,))] if layer.bias else [])
    if isinstance(layer, Linear):
        return [("weight", "params", "kernel", (layer.out_features, layer.in_features)),
                ("bias", "params", "bias", (layer.out_features,))]
    if isinstance(layer, Norm) and layer.kind != "inst":
        c = (layer.features,)
        entries = [("weight", "params", "scale", c), ("bias", "params", "bias", c)]
        if layer.kind == "batch":
            entries += [("running_mean", "batch_stats", "mean", c), ("running_var", "batch_stats", "var", c),
                        ("num_batches_tracked", "batch_stats", "num_batches_tracked", ())]
        return entries
    if isinstance(layer, Act) and layer.kind == "prelu":
        return [("weight", "params", "negative_slope", (layer.features,))]
    return []  # inst, relu, upsample, pool: no keys


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def node_rows(node, torch_prefix: str, flax_path: FlaxPath) -> Iterator[ParamRow]:
    """Rows of one plan node under an MDNC prefix and a Flax path, in state-dict order."""
    if isinstance(node, StagePlan):
        for slot, flax_name, block in node.blocks:
            yield from node_rows(block, _join(torch_prefix, slot), (flax_name,))
    elif isinstance(node, BlockPlan):
        for torch_name, flax_name, seq in node.seqs():
            yield from node_rows(seq, _join(torch_prefix, torch_name), flax_path + (flax_name,))
    elif isinstance(node, Seq):
        for index, (flax_name, layer) in enumerate(node.sequential()):
            yield from node_rows(layer, _join(torch_prefix, str(index)), flax_path + (flax_name,))
    else:
        for suffix, collection, leaf, shape in _layer_entries(node):
            yield ParamRow(_join(torch_prefix, suffix), flax_path + (leaf,), shape, collection)


def plan_rows(plan: NetPlan) -> list[ParamRow]:
    return [row for prefix, flax_name, node in plan.nodes
            for row in node_rows(node, prefix, () if flax_name is None else (flax_name,))]


def has_batch_norm(plan: NetPlan) -> bool:
    return any(row.collection == "batch_stats" for row in plan_rows(plan))


# -- lengths -------------------------------------------------------------------------------
class LengthProblem(ValueError):
    """A length that MDNC would fail on deep inside (raised before any tracing)."""


def conv_length(length: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a 1D convolution (PyTorch/XLA semantics, no dilation)."""
    return (length + 2 * padding - kernel) // stride + 1


def layer_length(layer: Layer, length: int, where: str) -> int:
    """Length after a layer; instance norms need at least 2 positions (torch raises on 1)."""
    if isinstance(layer, Conv):
        length = conv_length(length, layer.kernel_size, layer.stride, layer.padding)
    elif isinstance(layer, Upsample):
        length = layer.out_length(length)
    elif isinstance(layer, Norm) and layer.kind != "batch" and length < 2:
        raise LengthProblem(f"too short: {where} would see length {length}")
    if length < 1:
        raise LengthProblem(f"too short: {where} would see length {length}")
    return length


def seq_length(seq: Seq, length: int, where: str) -> int:
    for _, layer in seq.sequential():
        length = layer_length(layer, length, where)
    return length


def block_length(block: BlockPlan, length: int, where: str) -> int:
    """Output length of a block, or LengthProblem when branch and shortcut cannot add."""
    out = length
    for _, _, seq in block.branches:
        out = seq_length(seq, out, where)
    shortcut = length if block.shortcut is None else seq_length(block.shortcut, length, where)
    if out != shortcut:
        raise LengthProblem(f"residual shapes cannot add in {where}: branch length {out} vs shortcut length "
                            f"{shortcut}")
    return out

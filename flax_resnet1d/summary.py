"""Per-layer summary of a Flax model, in the style of ``torchsummary`` (as in MDNC's docs).

``summary(model, input_shape)`` traces ``model.init`` abstractly (``jax.eval_shape``: no
compilation, no compute, no memory for the weights) and records every module call with
``flax.linen.intercept_methods``. Rows are in forward post-order, children before the
block that contains them, as torchsummary's forward hooks produce them. Each row counts
only the parameters the module owns directly (0 for containers), so the rows add up to
the total, again as in torchsummary.

Shapes are shown in MDNC layout ``[batch, C, L]`` (Flax computes ``(B, L, C)``) so a table
can be compared line by line with the PyTorch model's torchsummary output. The row
sequence differs only where the two frameworks nest differently: torchsummary hides
``nn.Sequential`` but lists MDNC's stage containers and the average pool, while here the
norm-act-conv and shortcut wrappers are modules and the stages and the pool are not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .model import NormAct


@dataclasses.dataclass(frozen=True)
class LayerRow:
    index: int  # running index, 1-based, in forward post-order
    layer_type: str  # the Flax module's class name
    path: tuple[str, ...]  # the module's path in the variables tree; () is the model itself
    output_shape: tuple[int, ...]  # MDNC layout, batch first: (batch, C, L) or (batch, features)
    params: int  # parameters owned directly by this module

    @property
    def name(self) -> str:
        return f"{self.layer_type}-{self.index}"


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """The table as data; ``str(summary)`` is the printed table."""

    rows: list[LayerRow] = dataclasses.field(repr=False)
    input_shape: tuple[int, ...]  # (C, L), or (in_length,)
    batch_size: int
    total_params: int
    trainable_params: int
    nlayers: int | None
    input_bytes: int
    params_bytes: int

    def __str__(self) -> str:
        return self.text

    @property
    def text(self) -> str:
        width = 96
        line = f"{'Layer (type)':>24}  {'Output Shape':>18}  {'Param #':>12}   Flax path"
        out = [
            f"Input (C, L) = {self.input_shape}, batch {self.batch_size}. Output shapes in MDNC layout "
            "[batch, C, L]",
            "(Flax computes (B, L, C)) for line-by-line comparison with torchsummary of the PyTorch model.",
            "-" * width, line, "=" * width,
        ]
        for row in self.rows:
            shape = "[" + ", ".join(str(d) for d in row.output_shape) + "]"
            out.append(f"{row.name:>24}  {shape:>18}  {row.params:>12,}   {'/'.join(row.path) or '(model)'}")
        mb = 1024.0**2
        out += [
            "=" * width,
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.total_params - self.trainable_params:,}",
        ]
        if self.nlayers is not None:
            out.append(f"nlayers (convolutions along the depth): {self.nlayers}")
        out += [
            "-" * width,
            f"Input size (MB): {self.input_bytes / mb:.2f}",
            f"Params size (MB): {self.params_bytes / mb:.2f}",
            "-" * width,
        ]
        return "\n".join(out)


def summary(model: nn.Module, input_shape: Sequence[int], batch_size: int = -1, dtype: Any = jnp.float32
            ) -> ModelSummary:
    """Per-layer table of ``model`` for one input of ``input_shape = (C, L)`` (torchsummary's order),
    or ``(in_length,)`` for a decoder's vector input.

    The model is called on ``(batch, L, C)`` (a vector: ``(batch, in_length)``); ``batch_size=-1`` shows the batch as -1 (as
    torchsummary does) and traces with batch 1. Only abstract shapes are computed. Errors
    from the model (wrong channels, input too short) propagate unchanged.
    ``print(summary(...))`` shows the table; the result also holds the rows and totals.
    """
    if len(input_shape) not in (1, 2):
        raise ValueError(f"summary: input_shape must be (C, L) as in torchsummary (or (in_length,) for a vector "
                         f"input), got {tuple(input_shape)}")
    input_shape = tuple(int(d) for d in input_shape)
    traced_batch = batch_size if batch_size > 0 else 1
    calls: list[tuple[str, tuple[str, ...], Any]] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":  # a module's other methods are not layers
            module = context.module  # a fused NormAct: the two layers it runs, as torchsummary lists them
            for layer in module.layers if isinstance(module, NormAct) else (module,):
                calls.append((type(layer).__name__, tuple(layer.path), out))
        return out

    x = jax.ShapeDtypeStruct((traced_batch, *input_shape[::-1]), dtype)  # (C, L) -> (L, C)
    with nn.intercept_methods(record):
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)  # the key too is abstract

    rows = [LayerRow(i, layer_type, path, _mdnc_shape(out, batch_size), _own_params(variables, path))
            for i, (layer_type, path, out) in enumerate(calls, start=1)]
    leaves = jax.tree_util.tree_leaves_with_path(variables)
    # torchsummary counts parameters, not buffers: BatchNorm's batch_stats are left out, as its running stats are
    total = trainable = sum(int(np.prod(leaf.shape)) for key, leaf in leaves if key[0].key == "params")
    return ModelSummary(
        rows=rows,
        input_shape=input_shape,
        batch_size=batch_size,
        total_params=total,
        trainable_params=trainable,
        nlayers=getattr(model, "nlayers", None),
        input_bytes=traced_batch * int(np.prod(input_shape)) * jnp.dtype(dtype).itemsize,
        params_bytes=sum(int(np.prod(leaf.shape)) * leaf.dtype.itemsize for _, leaf in leaves),
    )


def _mdnc_shape(out: Any, batch_size: int) -> tuple[int, ...]:
    """(B, L, C) -> (batch, C, L); (B, F) stays; the batch shown as torchsummary shows it."""
    shape = tuple(out.shape)
    if len(shape) >= 3:  # channels-last -> channels-first
        shape = (shape[0], shape[-1], *shape[1:-1])
    return (batch_size, *shape[1:])


def _own_params(variables: Mapping, path: tuple[str, ...]) -> int:
    """Parameters stored directly in the module at ``path`` (not in its sub-modules)."""
    node = variables.get("params", {})
    for name in path:
        node = node.get(name, {}) if isinstance(node, Mapping) else {}
    return sum(int(np.prod(leaf.shape)) for leaf in node.values() if not isinstance(leaf, Mapping))

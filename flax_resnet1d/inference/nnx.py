"""Every network of the family as a Flax NNX module: the Linen module wrapped by
``flax.nnx.bridge.ToNNX``, initialised lazily on an example input, with the weights of a
checkpoint (any format ``convert`` reads) or a run when given. The result is an ordinary
``nnx.Module``: called on ``(B, L, C)`` inputs, split and merged, trained with ``nnx.Optimizer``;
its parameters are the Linen ones, so ``nnx.state`` round-trips through ``port``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..config import coerce_config, input_shape


def to_nnx(config: Any, variables: dict | None = None, seed: int = 0, **kwargs):
    """The NNX module of ``config`` (a family config or its dict): randomly initialised from
    ``seed``, or holding ``variables`` (Flax variables: ``params``, and ``batch_stats`` with
    BatchNorm). ``kwargs`` go to the Linen module (dtype, param_dtype, precision)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from flax.nnx import bridge

    from ..model import from_config
    from ..once import run_once
    from ..parity import to_flax_input

    config = coerce_config(config)
    linen = from_config(config, **kwargs)
    example = jnp.zeros(to_flax_input(np.zeros(input_shape(config, 1, None))).shape,
                        kwargs.get("param_dtype", jnp.float32))
    # The structure traced abstractly, the values from ``variables`` or one unoptimized compiled init.
    abstract = nnx.eval_shape(lambda: bridge.ToNNX(linen, rngs=nnx.Rngs(seed)).lazy_init(example))
    if variables is None:
        key = jax.random.key(seed)
        variables = run_once(linen.init, key, example)
    graphdef, state = nnx.split(abstract)
    state = jax.tree.map(lambda leaf: jax.random.key(seed) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                         else jnp.zeros(leaf.shape, leaf.dtype), state)  # the Rngs the module keeps
    nnx.replace_by_pure_dict(state, _merged(variables))
    return nnx.merge(graphdef, state)


def load_nnx(path: str | os.PathLike, config: Any = None, key: str | None = None):
    """The NNX module of a checkpoint (with ``config``/``key`` as for ``convert``) or run directory."""
    from .predictor import load_member

    member = load_member(path, None if config is None else coerce_config(config), key)
    return to_nnx(member.config, member.variables)


def _merged(variables: dict) -> dict:
    """Linen collections (``params``, ``batch_stats``) as one tree: ToNNX keeps each variable at
    its module's path, whatever its collection."""
    merged: dict = {}

    def merge(into: dict, tree: dict) -> None:
        for name, value in tree.items():
            if isinstance(value, dict):
                merge(into.setdefault(name, {}), value)
            else:
                into[name] = value

    for tree in variables.values():
        merge(merged, tree)
    return merged

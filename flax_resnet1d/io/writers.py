"""Writing checkpoints of the whole family: MDNC state dicts (``.pt``/``.pth``, ``.safetensors``)
and Flax variables with their config (``.msgpack``, Orbax), each checked against the network's
plan first and written through ``atomic`` (never a partial output)."""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import port
from ..config import coerce_config
from ..errors import CheckpointError
from . import atomic, manifest
from .atomic import OWN_OUTPUTS, as_os_error, atomic_output
from .formats import (CONFIG_NAME, FLAX_FORMATS, FORMAT_NAMES, TORCH_FORMATS, msgpack_config_path, orbax_checkpointer,
                      output_format, quiet_orbax_failures)
from .readers import HALF_DTYPES, check_weight_dtypes, checked

CAST_DTYPES = ("float32", "float64", "float16", "bfloat16")


# -- writing -------------------------------------------------------------------------------
def cast_arrays(arrays: Mapping[str, Any], dtype: str | None) -> dict[str, np.ndarray]:
    """numpy copies of ``arrays`` with floating ones cast to ``dtype`` (one of CAST_DTYPES)."""
    if dtype is None:
        return {k: port.as_numpy(v) for k, v in arrays.items()}
    if dtype not in CAST_DTYPES:
        raise CheckpointError(f"unsupported dtype {dtype!r}; expected one of {', '.join(CAST_DTYPES)}")
    target = _numpy_dtype(dtype)
    return {k: (a.astype(target) if np.issubdtype(a.dtype, np.floating) or a.dtype.name in HALF_DTYPES else a)
            for k, a in ((k, port.as_numpy(v)) for k, v in arrays.items())}


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # numpy's bfloat16, shipped with jax

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def write_state_dict(path: str | os.PathLike, state_dict: Mapping[str, Any], overwrite: bool = False,
                     dtype: str | None = None, config: Any = None) -> None:
    """Write an MDNC state dict to ``.pt``/``.pth`` (``torch.save``) or ``.safetensors``, atomically.

    The state dict is checked first against ``config`` (a family config or its dict; else the
    config its weights imply), so what is written loads into MDNC and ``torch_ref`` with
    ``strict=True``. ``dtype`` casts floating tensors.
    """
    path = Path(path)
    fmt = output_format(path)
    if fmt not in TORCH_FORMATS:
        raise CheckpointError(f"{path}: a state dict is written as .pt/.pth or .safetensors, not {FORMAT_NAMES[fmt]}")
    arrays = cast_arrays(port.strip_prefix(state_dict), dtype)
    check_weight_dtypes(path, arrays)
    if config is None:
        checked(path, port.infer_config, arrays)
    else:
        checked(path, port.check_state_dict, arrays, config)
    if fmt == "torch":
        data = _torch_bytes(path, arrays)
    else:
        import safetensors.numpy

        data = safetensors.numpy.save(arrays, metadata={"format": "pt"})
    with atomic_output(path, overwrite) as tmp:
        atomic.write_file(tmp, data)


def _torch_bytes(path: Path, arrays: Mapping[str, np.ndarray]) -> bytes:
    """``torch.save`` of the arrays as tensors, in memory: the file itself is written by
    ``write_file``, so a full disk is an OSError naming it (torch's writer reports only
    "unexpected pos ...")."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: writing PyTorch files needs torch: pip install 'flax-resnet1d[torch]'") from None

    def tensor(a: np.ndarray):
        a = np.ascontiguousarray(a).reshape(a.shape)  # ascontiguousarray makes a 0-d array (num_batches_tracked) 1-d
        if a.dtype.name == "bfloat16":  # torch cannot take ml_dtypes arrays: reinterpret the bits
            return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
        return torch.from_numpy(a)

    with warnings.catch_warnings():  # read-only arrays (msgpack, Orbax) are fine: torch.save only reads
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        tensors = {k: tensor(a) for k, a in arrays.items()}
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def save_flax(path: str | os.PathLike, variables: Mapping, config: Any, overwrite: bool = False) -> None:
    """Save Flax variables and their config (a family config or its dict): an Orbax checkpoint
    directory (config.json inside) or, for a ``.msgpack`` name, a flax.serialization file
    (``<name>.config.json`` beside), atomically."""
    path = Path(path)
    config = coerce_config(config)
    fmt = output_format(path)
    if fmt not in FLAX_FORMATS:
        raise CheckpointError(f"{path}: Flax variables are written as an Orbax directory or .msgpack, "
                              f"not {FORMAT_NAMES[fmt]}")
    collections = _tree_map(np.asarray, _device_get(variables if "params" in variables else {"params": variables}))
    check_weight_dtypes(path, dict(port.flatten_tree(collections)))
    # Every key and shape against the config, through the port's own check, on zero-stride
    # stand-ins of the leaves: its layout transposes then cost nothing.
    port.flax_to_torch(_tree_map(lambda a: np.broadcast_to(np.zeros((), a.dtype), a.shape), collections), config)
    config_json = (json.dumps(config.to_dict(), indent=2) + "\n").encode()
    if fmt == "orbax":
        with atomic_output(path, overwrite) as tmp:
            _orbax_save(path, tmp, collections)
            atomic.write_file(tmp / CONFIG_NAME, config_json)
            manifest.write_for_tree(tmp, "orbax")
        return
    from flax import serialization

    config_path = msgpack_config_path(path)
    data = serialization.msgpack_serialize(collections)
    with (atomic_output(path, overwrite) as tmp,
          atomic_output(config_path, overwrite, OWN_OUTPUTS["config"]) as tmp_config):
        atomic.write_file(tmp, data)
        atomic.write_file(tmp_config, config_json)


def _orbax_save(path: Path, tmp: Path, tree: Mapping) -> None:
    try:
        with quiet_orbax_failures(), orbax_checkpointer() as checkpointer:
            checkpointer.save(tmp.resolve(), tree)
    except Exception as e:  # tensorstore reports OS errors inside its own exception types
        raise as_os_error(e, path) from None


def _device_get(tree: Mapping) -> Mapping:
    """``tree`` with jax arrays fetched to host in one transfer (no jax import otherwise)."""
    if any(type(leaf).__module__.startswith("jax") for _, leaf in port.flatten_tree(tree)):
        import jax

        return jax.device_get(tree)
    return tree


def _tree_map(fn: Callable, tree: Mapping) -> dict:
    return {k: _tree_map(fn, v) if isinstance(v, Mapping) else fn(v) for k, v in tree.items()}


"""Reading checkpoints of the whole family safely.

``.pt``/``.pth`` are read with ``torch.load(weights_only=True)`` (a pickle needing any other object
is refused, never executed), ``.safetensors`` with ``safetensors.numpy``, Flax files with
``flax.serialization`` or Orbax. Readers return numpy arrays (float16/bfloat16 widened to float32
with a logged notice) checked against the network's plan, refuse NaN/Inf unless asked, and report
every problem as one ``CheckpointError`` line naming the file. torch, flax and orbax are imported
only when a format needs them.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import port
from ..config import coerce_config, config_from_dict, read_json
from ..errors import CheckpointError, first_line, input_file
from .formats import (CONFIG_NAME, FORMAT_NAMES, TORCH_FORMATS, expect_content, input_format, msgpack_config_path,
                      orbax_checkpointer, quiet_orbax_failures)

log = logging.getLogger(__name__)


HALF_DTYPES = ("float16", "bfloat16")


WEIGHT_DTYPES = ("float16", "bfloat16", "float32", "float64")  # what a checkpoint's weights may be


# A torch zip entry may inflate at most this much: torch.save stores entries uncompressed, and
# float weights never deflate 10x, so a higher ratio is a decompression bomb, refused unread.
MAX_ZIP_EXPANSION = 10


# -- reading -------------------------------------------------------------------------------
def load_state_dict(path: str | os.PathLike, key: str | None = None, allow_nonfinite: bool = False,
                    config: Any = None) -> dict[str, np.ndarray]:
    """MDNC state dict (numpy arrays, in MDNC key order) from a ``.pt``/``.pth``/``.safetensors`` file.

    Accepts a bare state dict or a training dict such as ``{'model': sd, 'optimizer': ...,
    'epoch': 3}``, where the state dict is ``key``'s entry, else the one entry that is a state
    dict of ``config``'s network (a family config or its dict), else of any network of the family;
    strips a ``module.`` prefix. Validated (keys and shapes) against ``config``, else against the
    network its weights imply (a DecoderNet1d or a block needs ``config``: see ``port.infer_config``).
    """
    path = Path(path)
    return _read_state_dict(path, key, allow_nonfinite, None if config is None else _coerce_config(config, path))[0]


def load_checkpoint(path: str | os.PathLike, key: str | None = None, allow_nonfinite: bool = False,
                    config: Any = None) -> tuple[dict[str, np.ndarray], Any]:
    """Any supported checkpoint -> (MDNC state dict of numpy arrays, its family config).

    The config comes from ``config`` (a family config or its dict, checked against the weights),
    else from a Flax checkpoint's config file, else from the weights alone.
    """
    path = Path(path)
    config = None if config is None else _coerce_config(config, path)
    fmt = input_format(path)
    if fmt in TORCH_FORMATS:
        return _read_state_dict(path, key, allow_nonfinite, config)
    if key is not None:
        raise CheckpointError(f"{path}: --key selects an entry of a PyTorch training checkpoint; "
                              f"this is {FORMAT_NAMES[fmt]}")
    _, config, state_dict = _read_flax(path, allow_nonfinite, config)
    return state_dict, config


def _coerce_config(config: Any, path: Path) -> Any:
    """A family config, or its dict read as one; a CheckpointError naming ``path`` if invalid."""
    try:
        return coerce_config(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid config for {path}: {e}") from None


def checked(path: Path, fn: Callable, *args):
    """``fn(*args)`` with a CheckpointError prefixed by the file name."""
    try:
        return fn(*args)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _read_state_dict(path: Path, key: str | None, allow_nonfinite: bool,
                     config: Any) -> tuple[dict[str, np.ndarray], Any]:
    fmt = input_format(path)
    if fmt not in TORCH_FORMATS:
        raise CheckpointError(f"{path}: is {FORMAT_NAMES[fmt]}, expected a .pt/.pth/.safetensors state dict")
    expect_content(path, fmt)
    tree = _torch_load(path) if fmt == "torch" else _safetensors_load(path)
    state_dict = port.strip_prefix(_select_state_dict(path, tree, key, config))
    state_dict = _to_float_arrays(path, state_dict.items())
    if config is None:
        config = checked(path, port.infer_config, state_dict)
    else:
        checked(path, port.check_state_dict, state_dict, config)
    _check_finite(path, state_dict, allow_nonfinite)
    # MDNC's state_dict() order (safetensors files keep keys sorted)
    return {row.torch_key: state_dict[row.torch_key] for row in port.param_table(config)}, config


def _torch_load(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading PyTorch files needs torch: pip install 'flax-resnet1d[torch]'") from None
    _check_zip_expansion(path)
    try:
        with warnings.catch_warnings():  # e.g. about pickle protocols: the outcome is what matters
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            needed = re.search(r"GLOBAL ([\w.]+)", str(e))
            detail = f" ({needed.group(1)})" if needed else ""
            raise CheckpointError(
                f"{path}: refused: unpickling it needs Python objects other than tensors and plain containers"
                f"{detail}; nothing was executed. If it is a whole pickled network (torch.save(net)) from a "
                "source you trust, load it where its original code is importable and save its weights: "
                "torch.save(torch.load(path, weights_only=False).state_dict(), 'state_dict.pt')"
            ) from None
        raise CheckpointError(f"{path}: corrupt PyTorch checkpoint ({first_line(e)})") from None
    except Exception as e:  # torch raises RuntimeError, OSError, EOFError, struct.error ... on bad bytes
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint ({first_line(e)})") from None


def _check_zip_expansion(path: Path) -> None:
    """Refuse a zip entry that would inflate more than MAX_ZIP_EXPANSION times (before reading it)."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        for entry in archive.infolist():
            if entry.compress_type != zipfile.ZIP_STORED and entry.file_size > MAX_ZIP_EXPANSION * max(
                    entry.compress_size, 1):
                raise CheckpointError(
                    f"{path}: refused: entry {entry.filename} would inflate from {entry.compress_size:,} to "
                    f"{entry.file_size:,} bytes (more than {MAX_ZIP_EXPANSION}x; torch.save does not compress)")


def _safetensors_load(path: Path) -> dict[str, np.ndarray]:
    import safetensors.numpy

    try:
        return safetensors.numpy.load_file(path)
    except Exception as e:  # SafetensorError, or numpy errors on inconsistent headers
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({first_line(e)})") from None


def _is_state_dict(value: Any) -> bool:
    """A non-empty mapping of names to arrays/tensors."""
    return (isinstance(value, Mapping) and bool(value)
            and all(isinstance(k, str) and hasattr(v, "shape") and hasattr(v, "dtype") for k, v in value.items()))


def _matches(state_dict: Mapping, config: Any) -> bool:
    """Whether ``state_dict`` is one of ``config``'s network (None: of any network its keys imply)."""
    try:
        sd = port.strip_prefix(state_dict)
        port.infer_config(sd) if config is None else port.check_state_dict(sd, config)
    except CheckpointError:
        return False
    return True


def _select_state_dict(path: Path, tree: Any, key: str | None, config: Any) -> Mapping:
    """The state dict in a bare state dict or a training checkpoint dict (see ``load_state_dict``)."""
    if key is not None:
        if not isinstance(tree, Mapping) or key not in tree:
            entries = ", ".join(map(repr, list(tree)[:10])) if isinstance(tree, Mapping) else type(tree).__name__
            raise CheckpointError(f"{path}: no entry {key!r} (entries: {entries})")
        if not _is_state_dict(tree[key]):
            raise CheckpointError(f"{path}: entry {key!r} is {_describe(tree[key])}, not a state dict")
        return tree[key]
    if _is_state_dict(tree):
        return tree
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{path}: holds {_describe(tree)}, not a state dict")
    candidates = [k for k, v in tree.items() if _is_state_dict(v)]
    matching = [k for k in candidates if _matches(tree[k], config)]
    if len(matching) == 1:
        return tree[matching[0]]
    entries = ", ".join(f"{k!r} ({_describe(v)})" for k, v in list(tree.items())[:10])
    network = "MDNC 1D network" if config is None else config.arch
    if matching:
        raise CheckpointError(f"{path}: several entries are {network} state dicts ({', '.join(map(repr, matching))}); "
                              "choose one with --key")
    if len(candidates) == 1:  # report why the only state dict does not fit
        return tree[candidates[0]]
    raise CheckpointError(f"{path}: no {network} state dict among its entries: {entries}; choose one with --key")


def _describe(value: Any) -> str:
    if _is_state_dict(value):
        return f"a state dict of {len(value)} tensors"
    if isinstance(value, Mapping):
        return f"a dict of {len(value)} entries"
    if hasattr(value, "shape"):
        return f"a tensor of shape {tuple(value.shape)}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _to_float_arrays(path: Path, items) -> dict[str, np.ndarray]:
    """numpy arrays; float16/bfloat16 cast to float32, with a notice; other dtypes refused."""
    out, cast = {}, {}
    for name, value in items:
        _check_dense(path, name, value)
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in HALF_DTYPES:
            check_weight_dtypes(path, {name: value})
        array = port.as_numpy(value)
        if dtype in HALF_DTYPES:
            array = array.astype(np.float32, copy=False)
            cast[dtype] = cast.get(dtype, 0) + 1
        out[name] = array
    if cast:
        what = " and ".join(f"{n} {dtype}" for dtype, n in cast.items())
        log.warning("%s: %s tensors cast to float32", path, what)
    return out


def _check_dense(path: Path, name: Any, value: Any) -> None:
    """A torch tensor holds its weights as a dense array: a sparse one (COO, CSR, ...) or a meta
    one (a shape without data) is refused by name, before any conversion."""
    name = "/".join(name) if isinstance(name, tuple) else name
    layout = str(getattr(value, "layout", "torch.strided")).removeprefix("torch.")
    if layout != "strided":
        raise CheckpointError(f"{path}: {name} is a {layout} tensor; weights must be dense tensors "
                              "(save tensor.to_dense())")
    if getattr(value, "is_meta", False):
        raise CheckpointError(f"{path}: {name} is a meta tensor, which holds no data (a model built on the meta "
                              "device); save the weights of a materialized model")


def check_weight_dtypes(path: str | os.PathLike, arrays: Mapping[Any, Any]) -> None:
    """Weights are real floating point: an integer, boolean or complex tensor is refused by name
    (torch's integer BatchNorm counter ``num_batches_tracked`` excepted)."""
    for name, a in arrays.items():
        name = "/".join(name) if isinstance(name, tuple) else name
        dtype = str(a.dtype).removeprefix("torch.")
        if dtype in WEIGHT_DTYPES or (name.endswith("num_batches_tracked") and "int" in dtype):
            continue
        raise CheckpointError(f"{path}: {name} has dtype {dtype}; weights must be floating point "
                              f"({'/'.join(WEIGHT_DTYPES)})")


def _check_finite(path: Path, arrays: Mapping[str, np.ndarray], allow_nonfinite: bool) -> None:
    bad = []
    for name, a in arrays.items():
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad.append(f"{name} ({int(np.isnan(a).sum())} NaN, {int(np.isinf(a).sum())} Inf)")
    if bad and not allow_nonfinite:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(f"{path}: non-finite weights in {len(bad)} tensors: {', '.join(bad[:5])}{more}; "
                              "refused (`flax-resnet1d convert --allow-nonfinite`, or allow_nonfinite=True, accepts them)")
    if bad:
        log.warning("%s: non-finite weights in %d tensors, accepted", path, len(bad))


def load_flax(path: str | os.PathLike, allow_nonfinite: bool = False) -> tuple[dict, Any]:
    """Flax variables (``params``, and ``batch_stats`` with BatchNorm; numpy leaves) and their
    family config, from an Orbax directory or a ``.msgpack`` file.

    The config file is read back when present and checked against the weights; without one,
    the config is inferred from them where they determine it (``port.config_from_variables``).
    """
    variables, config, _ = _read_flax(Path(path), allow_nonfinite, None)
    return variables, config


def _read_flax(path: Path, allow_nonfinite: bool,
               config: Any) -> tuple[dict, Any, dict[str, np.ndarray]]:
    """(variables: params and any batch_stats, config, the same weights as an MDNC state dict)."""
    fmt = input_format(path)
    if fmt == "orbax":
        variables, config_path = _orbax_load(path), path / CONFIG_NAME
    elif fmt == "msgpack":
        variables, config_path = _msgpack_load(path), msgpack_config_path(path)
    else:
        raise CheckpointError(f"{path}: is {FORMAT_NAMES[fmt]}, expected a Flax checkpoint (Orbax directory or .msgpack)")
    if not isinstance(variables, Mapping) or not variables:
        raise CheckpointError(f"{path}: holds {_describe(variables)}, not Flax variables")
    collections = variables if "params" in variables else {"params": variables}  # BatchNorm adds batch_stats
    for name, tree in collections.items():
        if not isinstance(tree, Mapping):
            raise CheckpointError(f"{path}: {name!r} is {_describe(tree)}, not a parameter tree")
    collections = {name: _map_leaves(path, tree) for name, tree in collections.items()}
    if config is None:
        config = (_read_config(config_path) if config_path.exists()
                  else checked(path, port.config_from_variables, collections["params"]))
    state_dict = checked(path, port.flax_to_torch, collections, config)  # every key and shape against the config
    _check_finite(path, state_dict, allow_nonfinite)
    return collections, config, state_dict


def _map_leaves(path: Path, params: Mapping) -> dict:
    """Nested dict with numpy leaves (half precision widened); refuses non-array leaves."""
    flat = list(port.flatten_tree(params))
    for p, leaf in flat:
        if not all(isinstance(name, str) for name in p):
            raise CheckpointError(f"{path}: parameter tree has a key that is not a name: {p!r}")
        if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
            raise CheckpointError(f"{path}: parameter {'/'.join(p)} is {_describe(leaf)}, not an array")
    arrays = _to_float_arrays(path, flat)
    tree: dict = {}
    for p, array in arrays.items():
        node = tree
        for name in p[:-1]:
            node = node.setdefault(name, {})
        node[p[-1]] = array
    return tree


def _read_config(path: Path) -> Any:
    """The family config a Flax checkpoint's config file holds (checked by ``config.read_json``:
    a regular UTF-8 file, a JSON object of little depth)."""
    try:
        return config_from_dict(read_json(path))
    except (OSError, ValueError) as e:  # ConfigError is a ValueError
        raise CheckpointError(f"{path}: invalid config file ({first_line(e).removeprefix(f'{path}: ')})") from None


def _orbax_load(path: Path) -> Any:
    if not any((path / name).exists() for name in ("_METADATA", "_CHECKPOINT_METADATA")):
        raise CheckpointError(f"{path}: is a directory but not an Orbax checkpoint (no _METADATA file)")
    check_regular_tree(path)
    try:
        with quiet_orbax_failures(), orbax_checkpointer() as checkpointer:
            return checkpointer.restore(path.resolve())
    except Exception as e:  # tensorstore/orbax raise many kinds on missing or corrupt files
        raise CheckpointError(f"{path}: corrupt or incomplete Orbax checkpoint ({first_line(e)})") from None


def check_regular_tree(directory: Path) -> None:
    """Every entry under ``directory`` (links followed) is a regular file or a directory: a FIFO,
    device or socket inside a checkpoint would block or never end the read that reaches it."""
    for root, dirs, files in os.walk(directory, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            entry = os.path.join(root, name)
            if not os.path.isdir(entry):
                input_file(entry, "", CheckpointError)


def _msgpack_load(path: Path) -> Any:
    from flax import serialization

    expect_content(path, "msgpack")
    try:
        return serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises ExtraData, FormatError, ValueError, ... on bad bytes
        raise CheckpointError(f"{path}: corrupt or truncated msgpack file ({first_line(e)})") from None


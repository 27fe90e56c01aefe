"""Reading and writing EncoderNet1d checkpoints, PyTorch and Flax, safely and atomically.

Formats, chosen by the file name (a file with another suffix is recognised by content when read):

- PyTorch ``.pt``/``.pth``: read with ``torch.load(weights_only=True)`` (a pickle needing any
  other object is refused, never executed); written with ``torch.save`` as a bare MDNC state
  dict, which MDNC and ``torch_ref`` load with ``strict=True``.
- ``.safetensors``: read and written with ``safetensors.numpy``.
- Flax ``.msgpack``: ``flax.serialization`` bytes of ``{'params': ...}``, with the config beside
  it in ``<name>.config.json``.
- Flax Orbax checkpoint: a directory (any other name) holding ``{'params': ...}`` saved by Orbax,
  with ``config.json`` inside.

Readers return numpy arrays (float16/bfloat16 cast to float32 with a logged notice) and refuse
NaN/Inf unless asked. Every problem is one ``CheckpointError`` line naming the file. Writers go
through a temporary path in the destination's directory and an atomic rename: a failure or
Ctrl-C leaves neither a partial output nor a temporary (a killed process may leave its hidden
``.NAME.*.tmp`` directory, never a partial NAME), and an existing output is replaced only with
``overwrite=True``.

Only numpy is imported here; torch, flax and orbax are imported when a format needs them.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import fnmatch
import io
import json
import logging
import os
import pickle
import re
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import port
from .config import EncoderConfig, coerce_config, config_from_dict
from .port import CheckpointError

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"
MSGPACK_SUFFIX = ".msgpack"
ORBAX_SUFFIX = ".orbax"  # optional; a name without a suffix is an Orbax directory too
CONFIG_NAME = "config.json"  # inside an Orbax checkpoint directory
HALF_DTYPES = ("float16", "bfloat16")
CAST_DTYPES = ("float32", "float64", "float16", "bfloat16")
WEIGHT_DTYPES = ("float16", "bfloat16", "float32", "float64")  # what a checkpoint's weights may be
FORMAT_NAMES = {"torch": "a PyTorch checkpoint", "safetensors": "a safetensors file",
                "msgpack": "a Flax msgpack file", "orbax": "an Orbax checkpoint directory"}
TORCH_FORMATS = ("torch", "safetensors")  # MDNC state dicts
FLAX_FORMATS = ("orbax", "msgpack")  # Flax variables + config
# Top-level entries of an Orbax checkpoint directory (Orbax's own, plus our config.json).
ORBAX_ENTRIES = ("_CHECKPOINT_METADATA", "_METADATA", "_sharding", "commit_success.txt", "manifest.ocdbt", "d",
                 "ocdbt.process_*", "array_metadatas", "descriptor", CONFIG_NAME)
# A torch zip entry may inflate at most this much: torch.save stores entries uncompressed, and
# float weights never deflate 10x, so a higher ratio is a decompression bomb, refused unread.
MAX_ZIP_EXPANSION = 10

# What a file's first bytes say it is (see _sniff), as the predicate of an error message.
_CONTENT = {
    "empty": "is empty (0 bytes)",
    "torch": "is a PyTorch checkpoint",
    "pickle": "is a Python pickle",
    "npz": "is a NumPy .npz archive",
    "zip": "is a zip archive without PyTorch's data.pkl",
    "badzip": "is truncated or corrupt (unreadable zip archive)",
    "npy": "is a NumPy .npy array",
    "safetensors": "is a safetensors file",
    "msgpack": "looks like a msgpack (Flax) file",
    "hdf5": "is an HDF5 file",
    "gzip": "is gzip-compressed",
    "text": "is a text file",
    "unknown": "holds unrecognised bytes",
}
# Content kinds each reader accepts (a legacy, non-zip torch file is a pickle).
_READABLE = {"torch": ("torch", "pickle"), "safetensors": ("safetensors",), "msgpack": ("msgpack",)}


# -- formats -------------------------------------------------------------------------------
def output_format(path: str | os.PathLike) -> str:
    """Format written for ``path``: 'torch', 'safetensors', 'msgpack' or 'orbax'."""
    suffix = Path(path).suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return "torch"
    if suffix == SAFETENSORS_SUFFIX:
        return "safetensors"
    if suffix == MSGPACK_SUFFIX:
        return "msgpack"
    if suffix in ("", ORBAX_SUFFIX) or Path(path).is_dir():
        return "orbax"
    raise CheckpointError(f"{path}: unknown output format {suffix!r}: use .pt/.pth or .safetensors (PyTorch), "
                          f".msgpack (Flax) or a directory name without a suffix (Orbax)")


def input_format(path: str | os.PathLike) -> str:
    """Format of an existing checkpoint: by suffix, by content for other suffixes."""
    path = Path(path)
    if path.is_dir():
        return "orbax"
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES or suffix in (SAFETENSORS_SUFFIX, MSGPACK_SUFFIX):
        return output_format(path)
    kind = _sniff(path)
    for fmt, kinds in _READABLE.items():
        if kind in kinds:
            return fmt
    raise CheckpointError(f"{path}: {_CONTENT[kind]}, not a checkpoint of a known kind "
                          f"(.pt/.pth, .safetensors, .msgpack or an Orbax directory)")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied")


def _sniff(path: Path) -> str:
    """What the file's first bytes say it is: a key of ``_CONTENT``."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "empty"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except Exception:  # BadZipFile, NotImplementedError (garbled method field), OSError, ...
            return "badzip"
        if any(name.endswith("data.pkl") for name in names):
            return "torch"
        return "npz" if names and all(name.endswith(".npy") for name in names) else "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:  # PROTO opcode
        return "pickle"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"  # 8-byte header length, then the JSON header
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF):  # msgpack map
        return "msgpack"
    return "text" if _is_text(head) else "unknown"


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut by the 512-byte window
            return False
        text = head[:e.start].decode("utf-8")
    return all(c.isprintable() or c.isspace() for c in text)


def _expect_content(path: Path, fmt: str) -> None:
    kind = _sniff(path)
    if kind not in _READABLE[fmt]:
        raise CheckpointError(f"{path}: {_CONTENT[kind]}, not {FORMAT_NAMES[fmt]}")


# -- reading -------------------------------------------------------------------------------
def load_state_dict(path: str | os.PathLike, key: str | None = None,
                    allow_nonfinite: bool = False) -> dict[str, np.ndarray]:
    """MDNC state dict (numpy arrays, in MDNC key order) from a ``.pt``/``.pth``/``.safetensors`` file.

    Accepts a bare state dict or a training dict such as ``{'model': sd, 'optimizer': ...,
    'epoch': 3}``, where the state dict is the one entry matching EncoderNet1d or ``key``;
    strips a ``module.`` prefix. Validated against EncoderNet1d (keys and shapes).
    """
    return _read_state_dict(Path(path), key, allow_nonfinite, None)[0]


def load_checkpoint(path: str | os.PathLike, key: str | None = None, allow_nonfinite: bool = False,
                    config: EncoderConfig | dict | None = None) -> tuple[dict[str, np.ndarray], EncoderConfig]:
    """Any supported checkpoint -> (MDNC state dict of numpy arrays, config).

    The config comes from ``config`` (checked against the weights), else from a Flax
    checkpoint's config file, else from the weights alone.
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


def _coerce_config(config: EncoderConfig | dict, path: Path) -> EncoderConfig:
    try:
        return coerce_config(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid config for {path}: {e}") from None


def _checked(path: Path, fn: Callable, *args):
    """``fn(*args)`` with a CheckpointError prefixed by the file name."""
    try:
        return fn(*args)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _read_state_dict(path: Path, key: str | None, allow_nonfinite: bool,
                     config: EncoderConfig | None) -> tuple[dict[str, np.ndarray], EncoderConfig]:
    fmt = input_format(path)
    if fmt not in TORCH_FORMATS:
        raise CheckpointError(f"{path}: is {FORMAT_NAMES[fmt]}, expected a .pt/.pth/.safetensors state dict")
    _expect_content(path, fmt)
    tree = _torch_load(path) if fmt == "torch" else _safetensors_load(path)
    state_dict = port.strip_prefix(_select_state_dict(path, tree, key, config))
    state_dict = _to_float_arrays(path, state_dict.items())
    if config is None:
        config = _checked(path, port.infer_config, state_dict)
    else:
        _checked(path, port.check_state_dict, state_dict, config)
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
        raise CheckpointError(f"{path}: corrupt PyTorch checkpoint ({_first_line(e)})") from None
    except Exception as e:  # torch raises RuntimeError, OSError, EOFError, struct.error ... on bad bytes
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint ({_first_line(e)})") from None


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
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({_first_line(e)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


def _is_state_dict(value: Any) -> bool:
    """A non-empty mapping of names to arrays/tensors."""
    return (isinstance(value, Mapping) and bool(value)
            and all(isinstance(k, str) and hasattr(v, "shape") and hasattr(v, "dtype") for k, v in value.items()))


def _matches(state_dict: Mapping, config: EncoderConfig | None) -> bool:
    try:
        sd = port.strip_prefix(state_dict)
        port.infer_config(sd) if config is None else port.check_state_dict(sd, config)
    except CheckpointError:
        return False
    return True


def _select_state_dict(path: Path, tree: Any, key: str | None, config: EncoderConfig | None) -> Mapping:
    """The state dict in a bare state dict or a training checkpoint dict."""
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
    if matching:
        raise CheckpointError(f"{path}: several entries are EncoderNet1d state dicts ({', '.join(map(repr, matching))}); "
                              "choose one with --key")
    if len(candidates) == 1:  # report why the only state dict does not fit
        return tree[candidates[0]]
    raise CheckpointError(f"{path}: no EncoderNet1d state dict among its entries: {entries}; choose one with --key")


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


def load_flax(path: str | os.PathLike, allow_nonfinite: bool = False) -> tuple[dict, EncoderConfig]:
    """Flax ``{'params': ...}`` (numpy leaves) and config from an Orbax directory or a ``.msgpack`` file.

    The config file is read back when present and checked against the weights; otherwise the
    config is inferred from them.
    """
    variables, config, _ = _read_flax(Path(path), allow_nonfinite, None)
    return variables, config


def _read_flax(path: Path, allow_nonfinite: bool,
               config: EncoderConfig | None) -> tuple[dict, EncoderConfig, dict[str, np.ndarray]]:
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
                  else _checked(path, port.config_from_variables, collections["params"]))
    state_dict = _checked(path, port.flax_to_torch, collections, config)  # every key and shape against the config
    _check_finite(path, state_dict, allow_nonfinite)
    return collections, config, state_dict


def msgpack_config_path(path: str | os.PathLike) -> Path:
    """``model.msgpack`` -> ``model.config.json``."""
    return Path(path).with_suffix(".config.json")


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


def _read_config(path: Path) -> EncoderConfig:
    try:
        return config_from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: invalid config file ({_first_line(e)})") from None


def _orbax_load(path: Path) -> Any:
    if not any((path / name).exists() for name in ("_METADATA", "_CHECKPOINT_METADATA")):
        raise CheckpointError(f"{path}: is a directory but not an Orbax checkpoint (no _METADATA file)")
    try:
        with quiet_orbax_failures(), _orbax_checkpointer() as checkpointer:
            return checkpointer.restore(path.resolve())
    except Exception as e:  # tensorstore/orbax raise many kinds on missing or corrupt files
        raise CheckpointError(f"{path}: corrupt or incomplete Orbax checkpoint ({_first_line(e)})") from None


def _msgpack_load(path: Path) -> Any:
    from flax import serialization

    _expect_content(path, "msgpack")
    try:
        return serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises ExtraData, FormatError, ValueError, ... on bad bytes
        raise CheckpointError(f"{path}: corrupt or truncated msgpack file ({_first_line(e)})") from None


def _orbax_checkpointer():
    """Synchronous Orbax checkpointer without compression.

    Measured in benchmarks/convert_speed.py (fresh processes, encnet32, 55 MiB): the default
    StandardCheckpointer (async, zstd) saves in ~0.5 s and restores in ~0.2 s; synchronous
    and uncompressed, ~0.25 s and ~0.1 s. zstd gains 7% on float weights at most of the
    cost, and the async machinery only adds threads when the caller waits for the write
    anyway. The format stays Orbax's default (OCDBT, zarr2), so Orbax itself restores it.
    """
    import orbax.checkpoint as ocp

    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False))


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

    The state dict is checked first against ``config`` (else the config its weights imply), so
    what is written loads into MDNC and ``torch_ref`` with ``strict=True``. ``dtype`` casts
    floating tensors.
    """
    path = Path(path)
    fmt = output_format(path)
    if fmt not in TORCH_FORMATS:
        raise CheckpointError(f"{path}: a state dict is written as .pt/.pth or .safetensors, not {FORMAT_NAMES[fmt]}")
    arrays = cast_arrays(port.strip_prefix(state_dict), dtype)
    check_weight_dtypes(path, arrays)
    if config is None:
        _checked(path, port.infer_config, arrays)
    else:
        _checked(path, port.check_state_dict, arrays, config)
    if fmt == "torch":
        data = _torch_bytes(path, arrays)
    else:
        import safetensors.numpy

        data = safetensors.numpy.save(arrays, metadata={"format": "pt"})
    with _atomic_output(path, overwrite) as tmp:
        write_file(tmp, data)


def _torch_bytes(path: Path, arrays: Mapping[str, np.ndarray]) -> bytes:
    """``torch.save`` of the arrays as tensors, in memory: the file itself is written by
    ``write_file``, so a full disk is an OSError naming it (torch's writer reports only
    "unexpected pos ...")."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: writing PyTorch files needs torch: pip install 'flax-resnet1d[torch]'") from None

    def tensor(a: np.ndarray):
        if a.dtype.name == "bfloat16":  # torch cannot take ml_dtypes arrays: reinterpret the bits
            return torch.from_numpy(np.ascontiguousarray(a).view(np.uint16)).view(torch.bfloat16)
        return torch.from_numpy(np.ascontiguousarray(a))

    with warnings.catch_warnings():  # read-only arrays (msgpack, Orbax) are fine: torch.save only reads
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        tensors = {k: tensor(a) for k, a in arrays.items()}
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def save_flax(path: str | os.PathLike, variables: Mapping, config: EncoderConfig | dict,
              overwrite: bool = False) -> None:
    """Save Flax variables and their config: an Orbax checkpoint directory (config.json inside)
    or, for a ``.msgpack`` name, a flax.serialization file (``<name>.config.json`` beside), atomically."""
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
        with _atomic_output(path, overwrite) as tmp:
            _orbax_save(path, tmp, collections)
            write_file(tmp / CONFIG_NAME, config_json)
        return
    from flax import serialization

    config_path = msgpack_config_path(path)
    data = serialization.msgpack_serialize(collections)
    with (_atomic_output(path, overwrite) as tmp,
          _atomic_output(config_path, overwrite, OWN_OUTPUTS["config"]) as tmp_config):
        write_file(tmp, data)
        write_file(tmp_config, config_json)


def _orbax_save(path: Path, tmp: Path, tree: Mapping) -> None:
    try:
        with quiet_orbax_failures(), _orbax_checkpointer() as checkpointer:
            checkpointer.save(tmp.resolve(), tree)
    except Exception as e:  # tensorstore reports OS errors inside its own exception types
        raise as_os_error(e, path) from None


# strerror -> errno of the OS errors a write can meet, to recognise them inside library messages.
_WRITE_ERRNOS = {os.strerror(code): code for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                                                      errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ENOTDIR,
                                                      errno.EIO)}


def as_os_error(error: BaseException, path: str | os.PathLike) -> Exception:
    """A library's write failure as an OSError at the user's ``path`` when its message names an OS
    error (tensorstore, Orbax), else a CheckpointError with its first line."""
    if isinstance(error, OSError) and error.errno is not None:
        return OSError(error.errno, error.strerror, str(path))
    text = str(error)
    for strerror, code in _WRITE_ERRNOS.items():
        if strerror.lower() in text.lower():
            return OSError(code, strerror, str(path))
    return CheckpointError(f"{path}: writing failed ({_first_line(error)})")


@contextlib.contextmanager
def quiet_orbax_failures() -> Iterator[None]:
    """Keep a failed Orbax read or write to the one error it raises.

    While the block runs, Orbax's own error logs (each failing worker thread logs the whole
    traceback through absl) are held back. And Orbax reads and writes all arrays concurrently;
    when one fails it closes its event loop while tensorstore still finishes the others. Later,
    their callbacks hit the closed loop ("Exception ignored ... Event loop is closed") and their
    tasks are collected with errors nobody retrieved ("Task exception was never retrieved"),
    both printed on stderr, some after the call has returned: hooks installed once drop exactly
    those two.
    """
    previous = sys.unraisablehook
    if not getattr(previous, "drops_orbax_noise", False):
        def unraisablehook(unraisable):
            if not (isinstance(unraisable.exc_value, RuntimeError)
                    and str(unraisable.exc_value) == "Event loop is closed"):
                previous(unraisable)

        unraisablehook.drops_orbax_noise = True
        sys.unraisablehook = unraisablehook
        logging.getLogger("asyncio").addFilter(
            lambda record: not (record.getMessage() == "Task exception was never retrieved" and record.exc_info
                                and "tensorstore" in str(record.exc_info[1]).lower()))
    absl = logging.getLogger("absl")
    level, absl.level = absl.level, logging.CRITICAL
    try:
        yield
    finally:
        absl.level = level


def _device_get(tree: Mapping) -> Mapping:
    """``tree`` with jax arrays fetched to host in one transfer (no jax import otherwise)."""
    if any(type(leaf).__module__.startswith("jax") for _, leaf in port.flatten_tree(tree)):
        import jax

        return jax.device_get(tree)
    return tree


def _tree_map(fn: Callable, tree: Mapping) -> dict:
    return {k: _tree_map(fn, v) if isinstance(v, Mapping) else fn(v) for k, v in tree.items()}


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Write and fsync ``data``: a complete file on disk, or an OSError."""
    with errors_named(path):
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def errors_named(path: str | os.PathLike, temporary: str | os.PathLike | None = None) -> Iterator[None]:
    """An OSError raised in the block names the user's ``path`` where it would name no file (a
    failed ``write()``) or our ``temporary`` (any path starting with it)."""
    try:
        yield
    except OSError as e:
        if e.filename is not None and (temporary is None or not str(e.filename).startswith(str(temporary))):
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None


# -- what --overwrite may replace ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OwnOutput:
    """What one of our writers leaves at its output path; ``--overwrite`` replaces nothing else.

    A file is recognised by its content (``_sniff`` kinds), a directory by the exact set of
    top-level names the writer creates (fnmatch patterns) and one name every such directory has
    (an empty directory qualifies: nothing is lost).
    """

    what: str
    contents: tuple[str, ...] = ()
    entries: tuple[str, ...] = ()
    required: str = ""
    makes_parents: bool = False  # creates missing parent directories

    def owns(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.entries)

    def foreign(self, path: Path) -> str | None:
        """Why ``path`` is not such an output, or None if it is one (or empty: nothing to lose)."""
        if path.is_symlink():
            return "it is a symbolic link"
        if not self.entries:
            if not path.is_file():
                return "it is a directory" if path.is_dir() else "it is not a regular file"
            kind = "config" if "config" in self.contents and _reads_as_config(path) else _sniff(path)
            return None if kind in self.contents else f"it {_CONTENT[kind]}"
        if not path.is_dir():
            return "it is a file, not a directory"
        names = sorted(os.listdir(path))
        other = [name for name in names if not self.owns(name)]
        if other:
            more = f" and {len(other) - 3} more" if len(other) > 3 else ""
            return f"it holds {', '.join(other[:3])}{more}, which flax-resnet1d does not write there"
        if names and self.required not in names:
            return f"it has no {self.required}"
        return None


OWN_OUTPUTS = {
    "torch": OwnOutput("a PyTorch checkpoint", contents=("torch", "pickle", "empty")),
    "safetensors": OwnOutput("a safetensors file", contents=("safetensors", "empty")),
    "msgpack": OwnOutput("a Flax msgpack file", contents=("msgpack", "empty")),
    "orbax": OwnOutput("an Orbax checkpoint directory", entries=ORBAX_ENTRIES, required="_METADATA"),
    "config": OwnOutput("a config file", contents=("config", "empty")),  # beside a .msgpack
}


def check_output(path: str | os.PathLike, overwrite: bool, own: OwnOutput | None = None,
                 inputs: tuple[str | os.PathLike, ...] = ()) -> None:
    """Refuse an output that cannot be created, or whose existing contents ``overwrite`` must not
    replace: anything but ``own`` (default: what the format's writer writes) or anything holding
    one of ``inputs``."""
    path = Path(path)
    own = own or OWN_OUTPUTS[output_format(path)]
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise CheckpointError(f"{path}: {existing} is not a directory")
    if existing != path.parent and not own.makes_parents:
        raise CheckpointError(f"{path}: output directory {path.parent} does not exist")
    if not (path.exists() or path.is_symlink()):
        return
    why = own.foreign(path)
    if why:
        raise CheckpointError(f"{path}: exists and is not {own.what} written by flax-resnet1d ({why}); "
                              "--overwrite replaces nothing else: choose another name")
    if not overwrite:
        raise CheckpointError(f"{path}: already exists; pass --overwrite (overwrite=True) to replace it")
    resolved = path.resolve()
    for source in inputs:
        if resolved == Path(source).resolve() or resolved in Path(source).resolve().parents:
            raise CheckpointError(f"{path}: not replaced: it holds the input {source}")


def _reads_as_config(path: Path) -> bool:
    try:
        EncoderConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, AttributeError):
        return False
    return True


def remove_own_entries(path: str | os.PathLike, own: OwnOutput) -> None:
    """Delete the entries of directory ``path`` that ``own``'s writer creates (after ``check_output``)."""
    for entry in Path(path).iterdir():
        if own.owns(entry.name):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


# -- atomic replacement ----------------------------------------------------------------------
_TEMPORARIES: set[Path] = set()  # holders not yet removed; the rest go at exit
atexit.register(lambda: [shutil.rmtree(holder, ignore_errors=True) for holder in list(_TEMPORARIES)])
_HOLDER_NAME_BYTES = 100  # of DST's name in the holder's: a 255-byte DST name must still fit


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A private hidden directory beside ``path``, removed on exit whatever happens (including
    KeyboardInterrupt); an OSError inside names ``path``, never the temporary. Writers (Orbax
    among them) create what they write inside it, and one rmtree removes whatever they left."""
    prefix = "." + path.name.encode()[:_HOLDER_NAME_BYTES].decode(errors="ignore") + "."
    with errors_named(path, path.parent / prefix):
        holder = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    _TEMPORARIES.add(holder)
    try:
        with errors_named(path, holder):
            yield holder
    finally:
        _remove_temporary(holder)


@contextlib.contextmanager
def _atomic_output(path: Path, overwrite: bool, own: OwnOutput | None = None) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on success rename it to ``path``.

    On any failure the temporary is removed and ``path`` is untouched. With ``overwrite`` an
    existing ``path`` (checked by ``check_output``) is moved aside first and deleted only once
    the new one is in place.
    """
    check_output(path, overwrite, own)
    with _temporary_beside(path) as holder:
        yield holder / "new"
        _replace(holder / "new", path, overwrite, holder / "old")


@contextlib.contextmanager
def replaced_when_written(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file beside ``path`` that replaces it once the body returns: a kill or an
    error never leaves a half-written ``path``. For our own result files (metrics, plots, benchmark
    tables), which are replaced without the ownership checks of ``--overwrite``. ``suffix`` keeps
    the extension for writers that infer the format from it."""
    path = Path(path)
    with _temporary_beside(path) as holder:
        new = holder / f"new{suffix}"
        yield new
        os.replace(new, path)


def _remove_temporary(holder: Path) -> None:
    """rmtree that a second Ctrl-C does not cut short; what a writer's thread adds later goes at exit."""
    for _ in range(3):
        try:
            shutil.rmtree(holder, ignore_errors=True)
        except KeyboardInterrupt:
            continue
        if not holder.exists():
            _TEMPORARIES.discard(holder)
            return


def _replace(new: Path, path: Path, overwrite: bool, old: Path) -> None:
    if not (overwrite and path.exists()):
        if path.exists():
            raise CheckpointError(f"{path}: appeared while writing; not overwritten")
        os.rename(new, path)
        return
    if not (path.is_dir() or new.is_dir()):
        os.replace(new, path)
        return
    # rename cannot replace a non-empty directory: move the old one aside (into the temporary
    # holder, removed with it), and back if the new one cannot take its place
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise

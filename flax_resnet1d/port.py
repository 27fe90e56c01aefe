"""Two-way weight porting between MDNC/PyTorch state dicts and Flax variables, for every
architecture of the family.

The name map is the architecture's plan (``flax_resnet1d.plan``) read as a table: one
``ParamRow`` per state-dict entry, giving the MDNC key, the Flax collection (``params``, or
``batch_stats`` for BatchNorm's running statistics and ``num_batches_tracked``) and path, and
the PyTorch shape. The only layout change is for ``kernel`` leaves: PyTorch stores Conv1d
weights ``(out, in, k)`` and Linear weights ``(out, in)``, Flax ``(k, in, out)`` and
``(in, out)``: both a reversal of the axes. ``num_batches_tracked`` is int64 in PyTorch and
int32 in Flax (JAX's default integer). Everything else is copied as is, so a round trip is
bit-exact. No torch import: tensors are accepted through ``numpy()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from . import plan as P
from .config import (ACTIVATORS, CONFIGS, LAYER_ORDERS, NORMALIZERS, SCALERS, AEConfig, EncoderConfig, UNetConfig,
                     coerce_config)
from .errors import CheckpointError
from .plan import FlaxPath, ParamRow

__all__ = ["ParamRow", "CheckpointError", "param_table", "torch_to_flax", "flax_to_torch", "infer_config",
           "config_from_variables", "check_state_dict", "strip_prefix", "as_numpy", "flatten_tree"]


def to_flax_layout(flax_path: FlaxPath, array: np.ndarray) -> np.ndarray:
    """PyTorch layout -> Flax layout (reverse the axes of kernels; the batch counter as int32)."""
    if flax_path[-1] == "kernel":
        return np.ascontiguousarray(np.transpose(array))
    return array.astype(np.int32) if flax_path[-1] == "num_batches_tracked" else array


def to_torch_layout(flax_path: FlaxPath, array: np.ndarray) -> np.ndarray:
    """Flax layout -> PyTorch layout (the inverse of ``to_flax_layout``)."""
    if flax_path[-1] == "kernel":
        return np.ascontiguousarray(np.transpose(array))
    return array.astype(np.int64) if flax_path[-1] == "num_batches_tracked" else array


def param_table(config) -> list[ParamRow]:
    """Every state-dict entry of the network, in MDNC ``state_dict()`` order."""
    return P.plan_rows(coerce_config(config).plan())



def as_numpy(value: Any) -> np.ndarray:
    """A torch tensor (bfloat16 widened to float32, as numpy has none) or array-like as numpy."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` prefix DataParallel/DDP adds to every key."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _mismatches(state_dict: Mapping[str, Any], config, unexpected=()) -> list[str]:
    """'N missing keys: ...' etc., one item per kind of problem; empty when the state dict fits."""
    expected = {row.torch_key: row.torch_shape for row in param_table(config)}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected] + list(unexpected)
    mismatched = [f"{k}: checkpoint {tuple(np.shape(state_dict[k]))} vs expected {expected[k]}"
                  for k in expected if k in state_dict and tuple(np.shape(state_dict[k])) != expected[k]]
    return [(title, items) for title, items in
            (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if items]


def check_state_dict(state_dict: Mapping[str, Any], config, unexpected: list[str] = (), max_listed: int = 20) -> None:
    """Raise one CheckpointError listing every missing, unexpected or mis-shaped key."""
    config = coerce_config(config)
    problems = []
    for title, items in _mismatches(state_dict, config, unexpected):
        more = f" ... and {len(items) - max_listed} more" if len(items) > max_listed else ""
        problems.append(f"{len(items)} {title}: " + ", ".join(items[:max_listed]) + more)
    if problems:
        raise CheckpointError(f"state dict does not match {config_str(config)}: " + "; ".join(problems))


def config_str(config) -> str:
    """``Arch(arg=value, ...)``."""
    return f"{config.arch}(" + ", ".join(f"{k}={v!r}" for k, v in config.kwargs().items()) + ")"


# -- config inference --------------------------------------------------------------------
def _shape(sd: Mapping, key: str) -> tuple[int, ...] | None:
    return tuple(np.shape(sd[key])) if key in sd else None


def _stages(sd: Mapping, prefix: str) -> list[int]:
    """Blocks per stage of the stages ``prefix.0``, ``prefix.1``, ... (``prefix`` alone: one stage)."""
    counts, names = [], ([prefix] if not prefix.endswith(".") else (f"{prefix}{i}" for i in itertools.count()))
    for name in names:
        if not any(k.startswith(f"{name}.conv_scale.") for k in sd):
            break
        counts.append(1 + len({k.split(".")[len(name.split(".")) + 1] for k in sd if k.startswith(f"{name}.conv_list.")}))
    return counts


def _block_kind(sd: Mapping, prefix: str) -> str:
    start = f"{prefix}.conv3." if prefix else "conv3."
    return "bottleneck" if any(k.startswith(start) for k in sd) else "plain"


def _built(cls, kwargs: dict):
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"state dict implies an invalid {cls.arch}: {e}") from None


def _first_conv_kernel(sd: Mapping, key: str) -> int:
    shape = _shape(sd, key)
    if shape is None or len(shape) != 3:
        raise CheckpointError(f"{key} must be a Conv1d weight (out, in, k), got {shape}")
    return shape[-1]


def _infer_encoder(sd: Mapping) -> EncoderConfig:
    stem = _shape(sd, "netbody.0.weight")
    if len(stem) != 3:
        raise CheckpointError(f"netbody.0.weight must be a Conv1d weight (out, in, k), got shape {stem}")
    channel, in_planes, _ = stem
    layers = [n for n in itertools.takewhile(bool, (_stages(sd, f"netbody.{s}") for s in itertools.count(1)))]
    layers = [n[0] for n in layers]
    final = f"netbody.{len(layers) + 1}.weight"
    if len(layers) < 2 or final not in sd or len(np.shape(sd[final])) != 3:
        raise CheckpointError(f"not an EncoderNet1d state dict: found {len(layers)} residual stages and "
                              f"{'no' if final not in sd else 'a malformed'} final conv '{final}'")
    fc = _shape(sd, "fc.weight") or _shape(sd, "fc.bias")  # a missing fc.weight is reported by name, below
    return _built(EncoderConfig, dict(channel=int(channel), layers=tuple(layers), block=_block_kind(sd, "netbody.1.conv_scale"),
                                      kernel_size=int(np.shape(sd[final])[-1]), in_planes=int(in_planes),
                                      out_length=int(fc[0]) if fc else None))


def _end_kernel_to_kernel_size(stem_kernel: int) -> int:
    return stem_kernel - 2 if stem_kernel > 1 else 1


def _decoder_needs_config(sd: Mapping) -> CheckpointError:
    """The error for a DecoderNet1d state dict: its out_size is not in the weights."""
    layers = _stages(sd, "netbody.")
    first = _shape(sd, "conv_first.weight")
    in_length = _shape(sd, "conv_in.weight")
    channel = first[0] // 2 ** (len(layers) - 1) if layers else 0
    determined = dict(channel=channel, layers=layers, block=_block_kind(sd, "netbody.0.conv_scale"),
                      kernel_size=_first_conv_kernel(sd, "conv_first.weight"),
                      in_length=in_length[1] if in_length else None, out_planes=(_shape(sd, "conv_last.weight") or [0])[0])
    smallest = f"; conv_in's kernel says the smallest shape is {in_length[2]}" if in_length else ""
    return CheckpointError(f"DecoderNet1d state dict ({', '.join(f'{k}={v!r}' for k, v in determined.items())}): "
                           f"out_size is not in the weights{smallest}; give the config (Python: config=...; "
                           "CLI: --config '{\"arch\": \"DecoderNet1d\", ...}')")


def _infer_autoencoder(sd: Mapping):
    first = _shape(sd, "conv_first.weight")
    down, middle = _stages(sd, "conv_down_list."), _stages(sd, "conv_middle_up")
    kwargs = dict(channel=first[0], layers=tuple(down + middle), block=_block_kind(sd, "conv_down_list.0.conv_scale"),
                  kernel_size=_end_kernel_to_kernel_size(_first_conv_kernel(sd, "conv_first.weight")),
                  in_planes=first[1], out_planes=(_shape(sd, "conv_final.weight") or [0])[0])
    # UNet1d's up stages take the skip too: their first block sees twice the channels.
    matching = [cls for cls in (AEConfig, UNetConfig) if _fits(sd, cls, kwargs)]
    return _built(matching[0] if matching else AEConfig, kwargs)


def _fits(sd: Mapping, cls, kwargs: dict) -> bool:
    try:
        return not _mismatches(sd, cls(**kwargs))
    except (TypeError, ValueError):
        return False


def _infer_block(sd: Mapping):
    """Blocks: the options are told apart by which keys exist and their Sequential indices;
    stride, padding and output_size never are, so the config must be given."""
    kind = _block_kind(sd, "")
    cls = CONFIGS["BlockBottleneck1d" if kind == "bottleneck" else "BlockPlain1d"]
    conv_keys = [k for k in sd if k.startswith("conv1.") and len(np.shape(sd[k])) == 3]
    last_keys = [k for k in sd if k.startswith(f"conv{3 if kind == 'bottleneck' else 2}.") and len(np.shape(sd[k])) == 3]
    middle_keys = [k for k in sd if k.startswith("conv2.") and len(np.shape(sd[k])) == 3]
    if not (conv_keys and last_keys and middle_keys):
        raise CheckpointError(f"{cls.arch} state dict without its convolution weights (keys: {', '.join(list(sd)[:8])})")
    in_planes, out_planes = np.shape(sd[conv_keys[0]])[1], np.shape(sd[last_keys[0]])[0]
    kernel_size = np.shape(sd[middle_keys[0]])[-1]
    matching = []
    for normalizer, activator, layer_order, scaler, stride in itertools.product(NORMALIZERS, ACTIVATORS, LAYER_ORDERS,
                                                                               SCALERS, (1, 2)):
        if normalizer == "null" and layer_order == "old":
            continue  # the same network as 'new'
        kwargs = dict(in_planes=int(in_planes), out_planes=int(out_planes), kernel_size=int(kernel_size),
                      stride=stride, padding=int(kernel_size) // 2, normalizer=normalizer, activator=activator,
                      layer_order=layer_order, scaler=scaler)
        if _fits(sd, cls, kwargs):
            matching.append(f"normalizer={normalizer!r}, activator={activator!r}, layer_order={layer_order!r}, "
                            f"scaler={scaler!r}, {'stride=1' if stride == 1 else 'stride>1 or output_size'}")
    if not matching:
        raise CheckpointError(f"not a {cls.arch} state dict of in_planes={in_planes}, out_planes={out_planes}, "
                              f"kernel_size={kernel_size} under any options (keys: {', '.join(list(sd)[:8])})")
    raise CheckpointError(f"{cls.arch}(in_planes={in_planes}, out_planes={out_planes}, kernel_size={kernel_size}) "
                          f"state dict: stride, padding and output_size are not in the weights, and its keys fit "
                          f"{len(matching)} option sets: " + "; ".join(f"({m})" for m in matching)
                          + f"; give the config (Python: config=...; CLI: --config '{{\"arch\": \"{cls.arch}\", ...}}')")


def infer_config(state_dict: Mapping[str, Any]):
    """Recover the architecture and its constructor arguments from MDNC keys and shapes alone.

    EncoderNet1d, AE1d and UNet1d are fully determined by their weights. A DecoderNet1d's
    ``out_size`` and a block's stride, padding and output_size are not: those raise a
    CheckpointError naming what the weights determine and asking for the config.
    """
    sd = strip_prefix(state_dict)
    if "netbody.0.weight" in sd:
        config = _infer_encoder(sd)
    elif "conv_first.weight" in sd and "conv_last.weight" in sd:
        raise _decoder_needs_config(sd)
    elif "conv_first.weight" in sd and "conv_final.weight" in sd:
        config = _infer_autoencoder(sd)
    elif any(k.startswith("conv1.") for k in sd) and any(k.startswith("conv2.") for k in sd):
        config = _infer_block(sd)
    else:
        sample = ", ".join(list(sd)[:5]) or "none"
        raise CheckpointError(f"not an EncoderNet1d state dict: no 'netbody.0.weight' (first keys: {sample}); "
                              "nor one of DecoderNet1d, AE1d, UNet1d or a block")
    check_state_dict(sd, config)
    return config


def config_from_variables(variables: Mapping[str, Any]) -> EncoderConfig:
    """Recover an EncoderNet1d's constructor arguments from a Flax variables tree (or bare params).

    The other architectures need their config (saved beside every Flax checkpoint written here).
    """
    params = variables.get("params", variables)
    try:
        _, in_planes, channel = np.shape(params["stem"]["kernel"])
        stages = sorted({int(name[len("stage"):].split("_")[0]) for name in params if name.startswith("stage")})
        layers = tuple(sum(name.startswith(f"stage{s}_") for name in params) for s in stages)
        block = "bottleneck" if "conv3" in params["stage1_block1"] else "plain"
        kernel_size = np.shape(params["final_conv"]["kernel"])[0]
        out_length = int(np.shape(params["fc"]["kernel"])[1]) if "fc" in params else None
        return EncoderConfig(int(channel), layers, block, int(kernel_size), int(in_planes), out_length)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"not EncoderNet1d Flax parameters ({type(e).__name__}: {e}); other architectures "
                              "need their config") from None


# -- conversion -----------------------------------------------------------------------------
def flatten_tree(tree: Mapping[str, Any], prefix: FlaxPath = ()) -> Iterator[tuple[FlaxPath, Any]]:
    """(path, leaf) pairs of a nested mapping such as Flax params, depth first."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from flatten_tree(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def torch_to_flax(state_dict: Mapping[str, Any], config=None) -> dict:
    """MDNC state dict (torch tensors or numpy arrays) -> Flax ``{'params': ...}``, plus
    ``'batch_stats'`` where the network has BatchNorm.

    ``config``: a config object or a dict with ``arch`` (absent: EncoderNet1d); None infers it.
    Strict: a missing, unexpected or mis-shaped key raises CheckpointError listing all of
    them. dtypes are kept (cast with ``jax.tree.map`` if needed).
    """
    sd = strip_prefix(state_dict)
    config = infer_config(sd) if config is None else coerce_config(config)
    check_state_dict(sd, config)
    variables: dict = {}
    for row in param_table(config):
        node = variables.setdefault(row.collection, {})
        for name in row.flax_path[:-1]:
            node = node.setdefault(name, {})
        node[row.flax_path[-1]] = to_flax_layout(row.flax_path, as_numpy(sd[row.torch_key]))
    return variables


def flax_to_torch(variables: Mapping[str, Any], config=None) -> dict[str, np.ndarray]:
    """Flax variables (or bare params) -> MDNC state dict of numpy arrays, in MDNC key order.

    Load it in torch with ``{k: torch.from_numpy(v) for k, v in sd.items()}`` and ``strict=True``.
    """
    collections = variables if "params" in variables else {"params": variables}
    config = config_from_variables(collections) if config is None else coerce_config(config)
    rows = param_table(config)
    leaves = {(collection, *path): leaf for collection, tree in collections.items()
              for path, leaf in flatten_tree(tree)}
    named = {row.torch_key: to_torch_layout(row.flax_path, as_numpy(leaves[(row.collection, *row.flax_path)]))
             for row in rows if (row.collection, *row.flax_path) in leaves}
    known = {(row.collection, *row.flax_path) for row in rows}
    unexpected = ["/".join(p[1:] if p[0] == "params" else p) for p in leaves if p not in known]
    check_state_dict(named, config, unexpected=unexpected)
    return named

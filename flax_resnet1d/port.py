"""Two-way weight porting between MDNC/PyTorch state dicts and Flax variables.

The whole name map lives in ``param_table``: one row per parameter, generated from the
config, giving the MDNC key, the Flax path and the PyTorch shape. The only layout change
is for ``kernel`` leaves: PyTorch stores Conv1d weights ``(out, in, k)`` and Linear weights
``(out, in)``, Flax ``(k, in, out)`` and ``(in, out)``: both are a reversal of the axes.
Everything else (norm scale/bias, PReLU slopes, biases) is copied as is, so a round trip
is bit-exact. No torch import: tensors are accepted through ``numpy()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from .config import EncoderConfig

FlaxPath = tuple[str, ...]

# Sub-layer rows: (MDNC key suffix, Flax sub-path). Sequential indices are MDNC's.
_NORM_ACT_CONV = (("0.weight", ("norm", "scale")), ("0.bias", ("norm", "bias")),
                  ("1.weight", ("act", "negative_slope")), ("2.weight", ("conv", "kernel")))
_SHORTCUT = (("0.weight", ("conv", "kernel")), ("1.weight", ("norm", "scale")), ("1.bias", ("norm", "bias")))


class ParamRow(NamedTuple):
    torch_key: str
    flax_path: FlaxPath
    torch_shape: tuple[int, ...]

    @property
    def flax_shape(self) -> tuple[int, ...]:
        return to_flax_layout(self.flax_path, np.empty(self.torch_shape, np.int8)).shape


def to_flax_layout(flax_path: FlaxPath, array: np.ndarray) -> np.ndarray:
    """PyTorch layout -> Flax layout (reverse the axes of kernels)."""
    return np.ascontiguousarray(np.transpose(array)) if flax_path[-1] == "kernel" else array


to_torch_layout = to_flax_layout  # reversing axes is its own inverse


def param_table(config: EncoderConfig) -> list[ParamRow]:
    """Every parameter of the network, in MDNC ``state_dict()`` order."""
    rows = [ParamRow("netbody.0.weight", ("stem", "kernel"), (config.channel, config.in_planes, config.stem_kernel))]
    for stage, num_blocks in enumerate(config.layers):
        for index in range(num_blocks):
            in_planes, out_planes, stride = config.block_args(stage, index)
            slot = f"conv_list.{index}" if index < num_blocks - 1 else "conv_scale"
            torch_prefix = f"netbody.{stage + 1}.{slot}"
            flax_block = f"stage{stage + 1}_block{index + 1}"
            for conv, (out, kernel) in enumerate(_branch_convs(config, in_planes, out_planes), start=1):
                shapes = {"scale": (in_planes,), "bias": (in_planes,), "negative_slope": (in_planes,),
                          "kernel": (out, in_planes, kernel)}
                rows += [ParamRow(f"{torch_prefix}.conv{conv}.{suffix}", (flax_block, f"conv{conv}", *sub),
                                  shapes[sub[-1]]) for suffix, sub in _NORM_ACT_CONV]
            if stride > 1 or in_planes != out_planes:
                shapes = {"kernel": (out_planes, in_planes, 1), "scale": (out_planes,), "bias": (out_planes,)}
                rows += [ParamRow(f"{torch_prefix}.in_node.{suffix}", (flax_block, "shortcut", *sub), shapes[sub[-1]])
                         for suffix, sub in _SHORTCUT]
    c, final = config.out_channels, len(config.layers) + 1
    rows += [ParamRow(f"netbody.{final}.weight", ("final_conv", "kernel"), (c, c, config.kernel_size)),
             ParamRow(f"netbody.{final}.bias", ("final_conv", "bias"), (c,))]
    if config.out_length is not None:
        rows += [ParamRow("fc.weight", ("fc", "kernel"), (config.out_length, c)),
                 ParamRow("fc.bias", ("fc", "bias"), (config.out_length,))]
    return rows


def _branch_convs(config: EncoderConfig, in_planes: int, out_planes: int) -> list[tuple[int, int]]:
    """(out channels, kernel) of each conv on a block's residual branch."""
    k = config.kernel_size
    if config.block == "plain":
        return [(in_planes, k), (out_planes, k)]
    return [(in_planes, 1), (in_planes, k), (out_planes, 1)]


class CheckpointError(ValueError):
    """A state dict or variables tree that does not match the expected network."""


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


def check_state_dict(state_dict: Mapping[str, Any], config: EncoderConfig, unexpected: list[str] = (),
                     max_listed: int = 20) -> None:
    """Raise one CheckpointError listing every missing, unexpected or mis-shaped key."""
    expected = {row.torch_key: row.torch_shape for row in param_table(config)}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected] + list(unexpected)
    mismatched = [f"{k}: checkpoint {tuple(np.shape(state_dict[k]))} vs expected {expected[k]}"
                  for k in expected if k in state_dict and tuple(np.shape(state_dict[k])) != expected[k]]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            more = f" ... and {len(items) - max_listed} more" if len(items) > max_listed else ""
            problems.append(f"{len(items)} {title}: " + ", ".join(items[:max_listed]) + more)
    if problems:
        raise CheckpointError(f"state dict does not match EncoderNet1d{_config_str(config)}: " + "; ".join(problems))


def _config_str(config: EncoderConfig) -> str:
    return "(" + ", ".join(f"{k}={v!r}" for k, v in config.to_dict().items()) + ")"


def infer_config(state_dict: Mapping[str, Any]) -> EncoderConfig:
    """Recover the constructor arguments from MDNC keys and shapes alone."""
    sd = strip_prefix(state_dict)
    if "netbody.0.weight" not in sd:
        sample = ", ".join(list(sd)[:5]) or "none"
        raise CheckpointError(f"not an EncoderNet1d state dict: no 'netbody.0.weight' (first keys: {sample})")
    stem = tuple(np.shape(sd["netbody.0.weight"]))
    if len(stem) != 3:
        raise CheckpointError(f"netbody.0.weight must be a Conv1d weight (out, in, k), got shape {stem}")
    channel, in_planes, _ = stem
    layers = []
    while f"netbody.{len(layers) + 1}.conv_scale.conv1.0.weight" in sd:
        stage = len(layers) + 1
        layers.append(1 + len({k.split(".")[3] for k in sd if k.startswith(f"netbody.{stage}.conv_list.")}))
    final = f"netbody.{len(layers) + 1}.weight"
    if len(layers) < 2 or final not in sd or len(np.shape(sd[final])) != 3:
        raise CheckpointError(f"not an EncoderNet1d state dict: found {len(layers)} residual stages and "
                              f"{'no' if final not in sd else 'a malformed'} final conv '{final}'")
    block = "bottleneck" if "netbody.1.conv_scale.conv3.0.weight" in sd else "plain"
    kernel_size = int(np.shape(sd[final])[-1])
    out_length = int(np.shape(sd["fc.weight"])[0]) if "fc.weight" in sd else None
    try:
        config = EncoderConfig(int(channel), tuple(layers), block, kernel_size, int(in_planes), out_length)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"state dict implies an invalid EncoderNet1d: {e}") from None
    check_state_dict(sd, config)
    return config


def config_from_variables(variables: Mapping[str, Any]) -> EncoderConfig:
    """Recover the constructor arguments from a Flax variables tree (or bare params)."""
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
        raise CheckpointError(f"not EncoderNet1d Flax parameters: {type(e).__name__}: {e}") from None


def flatten_tree(tree: Mapping[str, Any], prefix: FlaxPath = ()) -> Iterator[tuple[FlaxPath, Any]]:
    """(path, leaf) pairs of a nested mapping such as Flax params, depth first."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from flatten_tree(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def torch_to_flax(state_dict: Mapping[str, Any], config: EncoderConfig | dict | None = None) -> dict:
    """MDNC state dict (torch tensors or numpy arrays) -> Flax ``{'params': ...}``.

    Strict: a missing, unexpected or mis-shaped key raises CheckpointError listing all of
    them. dtypes are kept (cast with ``jax.tree.map`` if needed).
    """
    sd = strip_prefix(state_dict)
    config = infer_config(sd) if config is None else EncoderConfig.coerce(config)
    check_state_dict(sd, config)
    params: dict = {}
    for row in param_table(config):
        node = params
        for name in row.flax_path[:-1]:
            node = node.setdefault(name, {})
        node[row.flax_path[-1]] = to_flax_layout(row.flax_path, as_numpy(sd[row.torch_key]))
    return {"params": params}


def flax_to_torch(variables: Mapping[str, Any], config: EncoderConfig | dict | None = None) -> dict[str, np.ndarray]:
    """Flax variables (or bare params) -> MDNC state dict of numpy arrays, in MDNC key order.

    Load it in torch with ``{k: torch.from_numpy(v) for k, v in sd.items()}`` and ``strict=True``.
    """
    params = variables.get("params", variables)
    config = config_from_variables(params) if config is None else EncoderConfig.coerce(config)
    rows = param_table(config)
    leaves = dict(flatten_tree(params))
    named = {row.torch_key: to_torch_layout(row.flax_path, as_numpy(leaves[row.flax_path]))
             for row in rows if row.flax_path in leaves}
    known = {row.flax_path for row in rows}
    check_state_dict(named, config, unexpected=["/".join(p) for p in leaves if p not in known])
    return named

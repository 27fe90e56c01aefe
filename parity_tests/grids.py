"""The configurations the parity suite runs on: one covering-array generator and the grids built
with it, one per family of factors.

A strength-2 covering array holds every pair of levels of any two factors in at least one row:
each grid has as many rows as the product of its two largest level counts (16, 16 and 20 cases
instead of the full products' 2048, 36864 and 960).

- ``ENCODER_GRID``: EncoderNet1d by block, kernel size, depth, in_planes, out_length;
- ``BLOCK_GRID``: BlockPlain1d / BlockBottleneck1d by every option, scaling (none / stride 2 /
  output_size), channel change, kernel size, and BatchNorm eval or train mode;
- ``NETWORK_GRID``: the architectures (EncoderNet1d, DecoderNet1d with a vector or a feature-map
  input, AE1d, UNet1d) by block, kernel size and depth, at odd/even non-power-of-two lengths
  (depth-4 bottleneck decoders in float64 only: ``deep_bottleneck_decoder_in_float32``);

each also by input-length parity, dtype and port direction (torch->flax: random MDNC weights
loaded into Flax; flax->torch: random Flax variables exported to MDNC's state dict).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from flax_resnet1d.config import (AEConfig, BlockBottleneckConfig, BlockPlainConfig, DecoderConfig, EncoderConfig,
                                  UNetConfig)


def covering_array(factors: Mapping[str, Sequence], avoid: Callable[[dict], bool] | None = None) -> list[dict]:
    """Rows ``{factor: level}`` holding every pair of levels of any two factors; deterministic.

    In-parameter-order growth (IPOG, Lei et al. 2007): the full product of the two factors
    with the most levels, then one factor at a time, each row takes the level that covers the
    most pairs not covered yet (ties: the level used least so far), and the pairs still missing
    go into rows added for them. Entries no pair needs take the level used least. No row makes
    ``avoid`` true; it also sees partial rows (the factors set so far).
    """
    names = sorted(factors, key=lambda name: -len(factors[name]))
    sizes = [len(factors[name]) for name in names]

    def allowed(row: list) -> bool:
        return avoid is None or not avoid({names[i]: factors[names[i]][v] for i, v in enumerate(row) if v is not None})

    rows = [list(row) for row in itertools.product(*(range(size) for size in sizes[:2])) if allowed(list(row))]
    for f in range(2, len(names)):
        missing = {(g, v, w) for g in range(f) for v in range(sizes[g]) for w in range(sizes[f])}
        used = [0] * sizes[f]
        for row in rows:
            level = max((w for w in range(sizes[f]) if allowed([*row, w])),
                        key=lambda w: (sum((g, row[g], w) in missing for g in range(f)), -used[w]))
            row.append(level)
            used[level] += 1
            missing -= {(g, row[g], level) for g in range(f)}
        for g, v, w in sorted(missing):
            row = next((row for row in rows if row[f] == w and row[g] is None and allowed([*row[:g], v, *row[g + 1:]])),
                       None)
            if row is None:
                row = [None] * f + [w]
                rows.append(row)
            row[g] = v
    for f, size in enumerate(sizes):
        used = [sum(row[f] == w for row in rows) for w in range(size)]
        for row in (row for row in rows if row[f] is None):
            row[f] = min((w for w in range(size) if allowed([*row[:f], w, *row[f + 1:]])), key=lambda w: used[w])
            used[row[f]] += 1
    return [{name: factors[name][row[names.index(name)]] for name in factors} for row in rows]


def missing_pairs(factors: Mapping[str, Sequence], rows: Sequence[Mapping]) -> list[str]:
    """The pairs of levels that no row holds, as ``"a=x, b=y"`` (none for a covering array)."""
    seen = {(a, row[a], b, row[b]) for row in rows for a, b in itertools.combinations(factors, 2)}
    return [f"{a}={x!r}, {b}={y!r}" for a, b in itertools.combinations(factors, 2)
            for x in factors[a] for y in factors[b] if (a, x, b, y) not in seen]


def fewest_rows(factors: Mapping[str, Sequence]) -> int:
    """No covering array is smaller: the two factors with the most levels need all their pairs."""
    return math.prod(sorted((len(levels) for levels in factors.values()), reverse=True)[:2])


class ParityCase(NamedTuple):
    """One comparison of Flax against torch_ref: a configuration, its input, dtype and port direction."""

    arch: str  # the architecture (a DecoderNet1d with its kind of input)
    setting: str  # the rest of the configuration, for the test id
    config: Any
    x: np.ndarray  # the input in MDNC's layout: (B, C, L), or a vector decoder's (B, in_length)
    dtype: str
    direction: str  # "torch->flax" or "flax->torch"
    train: bool  # BatchNorm in train mode: the updated running statistics are compared too
    seed: int  # of the weights, the input and the cotangent
    source: str  # the parity log's label
    levels: dict  # the covering array's row the case is built from

    @property
    def id(self) -> str:
        return "-".join((self.arch, self.setting, self.dtype, self.direction.replace("->", "2")))


class Grid(NamedTuple):
    name: str
    factors: dict
    cases: list[ParityCase]
    avoid: Callable[[dict], bool] | None  # rows the grid leaves out


COMMON = {"parity": ("even", "odd"), "dtype": ("float32", "float64"), "direction": ("torch->flax", "flax->torch")}
KERNEL_SIZES = (1, 3, 5, 7)


def with_parity(length: int, odd: bool) -> int:
    return length + (length % 2 != odd)


# -- EncoderNet1d ---------------------------------------------------------------------------
ENCODER_FACTORS = {"block": ("plain", "bottleneck"), "kernel_size": KERNEL_SIZES, "depth": (2, 3, 4, 5),
                   "in_planes": (1, 2, 3, 4), "out_length": (None, 3), **COMMON}


def encoder_length(config: EncoderConfig, odd: bool, rng: np.random.Generator) -> int:
    """A random input length of the given parity whose final feature length is at least 6: instance
    norm over shorter maps amplifies rounding (in float32 *either* framework then strays from the
    float64 result by more than the bound), which would measure conditioning rather than parity."""
    length = max(config.min_length(), 8) + int(rng.integers(0, 8))
    while length % 2 != odd or config.feature_length(length) < 6:
        length += 1
    return length


def encoder_case(index: int, levels: dict) -> ParityCase:
    """Channels and blocks per stage vary with the index, so that stride-1 blocks (``conv_list``)
    and identity shortcuts occur too."""
    seed, depth = 1000 + index, levels["depth"]
    config = EncoderConfig(channel=(4, 6, 8)[index % 3], layers=tuple(1 + ((index + s) % 3 == 0) for s in range(depth)),
                           block=levels["block"], kernel_size=levels["kernel_size"], in_planes=levels["in_planes"],
                           out_length=levels["out_length"])
    rng = np.random.default_rng(seed)
    length = encoder_length(config, levels["parity"] == "odd", rng)
    x = rng.normal(0.3, 2.0, size=(2, config.in_planes, length))
    setting = (f"{config.block}-k{config.kernel_size}-d{depth}-in{config.in_planes}-out{config.out_length}-"
               f"{levels['parity']}")
    return ParityCase("EncoderNet1d", setting, config, x, levels["dtype"], levels["direction"], False, seed,
                      levels["direction"], levels)


# -- blocks ---------------------------------------------------------------------------------
BLOCK_FACTORS = {"block": ("plain", "bottleneck"), "normalizer": ("batch", "inst", "pinst", "null"),
                 "activator": ("prelu", "relu", "null"), "layer_order": ("new", "old"), "scaler": ("down", "up"),
                 "scaling": ("none", "stride", "output_size"), "channels": ("same", "change"),
                 "kernel_size": KERNEL_SIZES, **COMMON, "mode": ("eval", "train")}
OPTIONS = ("normalizer", "activator", "layer_order", "scaler")


def block_case(index: int, levels: dict) -> ParityCase:
    seed, k = 1600 + index, levels["kernel_size"]
    rng = np.random.default_rng(seed)
    length = with_parity(9 + int(rng.integers(0, 8)), levels["parity"] == "odd")
    in_planes = 3 + int(rng.integers(0, 3))
    cls = BlockPlainConfig if levels["block"] == "plain" else BlockBottleneckConfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # options MDNC ignores: output_size with 'down', 'old' with 'null'
        config = cls(in_planes=in_planes, out_planes=in_planes + (2 if levels["channels"] == "change" else 0),
                     kernel_size=k, padding=k // 2, stride=1 if levels["scaling"] == "none" else 2,
                     output_size=2 * length + 3 if levels["scaling"] == "output_size" else None,
                     **{name: levels[name] for name in OPTIONS})
    x = rng.normal(0.3, 2.0, size=(2, in_planes, length))
    setting = "-".join([*(levels[name] for name in (*OPTIONS, "scaling", "channels")), f"k{k}", levels["parity"],
                        levels["mode"]])
    return ParityCase(config.arch, setting, config, x, levels["dtype"], levels["direction"], levels["mode"] == "train",
                      seed, f"blocks {levels['mode']}", levels)


# -- the networks ---------------------------------------------------------------------------
NETWORK_FACTORS = {"arch": ("EncoderNet1d", "DecoderNet1d-vector", "DecoderNet1d-map", "AE1d", "UNet1d"),
                   "block": ("plain", "bottleneck"), "depth": (2, 3, 4), "kernel_size": KERNEL_SIZES, **COMMON}


def network_config_and_input(index: int, levels: dict, rng: np.random.Generator):
    """Lengths keep the smallest feature map at 8 or more (shorter instance norms measure
    conditioning, not parity: see ``encoder_length``); non-powers of two, so the middle crops."""
    arch, k, depth = levels["arch"], levels["kernel_size"], levels["depth"]
    stride = 2 if k > 1 else 1
    layers = [1 + ((index + stage) % 3 == 0) for stage in range(depth)]
    shared = {"channel": (4, 5, 6)[index % 3], "block": levels["block"], "kernel_size": k}
    base = with_parity(8 * stride ** depth + int(rng.integers(0, 9)), levels["parity"] == "odd")
    if arch == "EncoderNet1d":
        config = EncoderConfig(layers=layers, in_planes=2, out_length=(None, 3)[index % 2], **shared)
        return config, rng.normal(0.3, 2.0, size=(2, 2, base))
    if arch.startswith("DecoderNet1d"):
        vector = arch.endswith("vector")
        config = DecoderConfig(layers=layers, out_size=base, in_length=3 if vector else None, out_planes=2, **shared)
        if vector:
            return config, rng.normal(0.3, 2.0, size=(2, 3))
        channels, length = config.input_size  # a longer map is cropped after the first stage
        return config, rng.normal(0.3, 2.0, size=(2, channels, length + index % 2))
    if arch == "UNet1d":
        layers = [layers[0]] + [2] * (depth - 2) + [layers[-1]]  # a 1 in layers[1:-1] cannot run (MDNC's bug)
    cls = AEConfig if arch == "AE1d" else UNetConfig
    return cls(layers=layers, in_planes=2, out_planes=3, **shared), rng.normal(0.3, 2.0, size=(2, 2, base))


def deep_bottleneck_decoder_in_float32(levels: dict) -> bool:
    """Float32 rounding through a depth-4 bottleneck DecoderNet1d (some 30 instance norms) takes
    *either* framework's float32 output, against float64, close to the float32 bound and past it
    for some draws: that measures conditioning, not parity. Such decoders run in float64 only."""
    return (str(levels.get("arch")).startswith("DecoderNet1d") and levels.get("block") == "bottleneck"
            and levels.get("depth") == 4 and levels.get("dtype") == "float32")


def network_case(index: int, levels: dict) -> ParityCase:
    seed = 1700 + index
    config, x = network_config_and_input(index, levels, np.random.default_rng(seed))
    setting = f"{levels['block']}-k{levels['kernel_size']}-d{levels['depth']}-{levels['parity']}"
    return ParityCase(levels["arch"], setting, config, x, levels["dtype"], levels["direction"], False, seed,
                      f"networks {levels['arch']}", levels)


def grid(name: str, factors: dict, case, avoid=None) -> Grid:
    rows = covering_array(factors, avoid)
    return Grid(name, factors, [case(index, levels) for index, levels in enumerate(rows)], avoid)


ENCODER_GRID = grid("EncoderNet1d", ENCODER_FACTORS, encoder_case)
BLOCK_GRID = grid("blocks", BLOCK_FACTORS, block_case)
NETWORK_GRID = grid("networks", NETWORK_FACTORS, network_case, avoid=deep_bottleneck_decoder_in_float32)
GRIDS = (ENCODER_GRID, BLOCK_GRID, NETWORK_GRID)

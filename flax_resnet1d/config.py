"""Framework-free description of an ``EncoderNet1d``: arguments, validation and geometry.

Both implementations (the Flax modules and the PyTorch reference) validate their
arguments and their inputs here, so the two raise the same errors, before any tracing.
This module imports neither JAX nor torch.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any

BLOCK_DEPTH = {"plain": 2, "bottleneck": 3}  # convolutions on the residual branch
PRESETS = {  # name -> (block, blocks per stage); all use 64 channels and 5 stages
    "encnet12": ("plain", (1,) * 5),
    "encnet32": ("bottleneck", (2,) * 5),
    "encnet47": ("bottleneck", (3,) * 5),
    "encnet62": ("bottleneck", (4,) * 5),
}


def _positive_int(name: str, value: Any) -> int:
    """``value`` as a Python int (numpy integers accepted), or a TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"EncoderNet1d: {name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"EncoderNet1d: {name} must be positive, got {value}")
    return int(value)


def normalize_block(block: Any) -> str:
    """Return the canonical block name ('plain' or 'bottleneck'); case-insensitive as MDNC."""
    if not isinstance(block, str):
        raise TypeError(f"EncoderNet1d: block must be a str, got {type(block).__name__} {block!r}")
    name = block.casefold()
    if name not in BLOCK_DEPTH:
        raise ValueError(f"EncoderNet1d: unknown block {block!r}; expected one of {sorted(BLOCK_DEPTH)}")
    return name


def conv_length(length: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a 1D convolution (PyTorch/XLA semantics, no dilation)."""
    return (length + 2 * padding - kernel) // stride + 1


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """The constructor arguments of ``EncoderNet1d``, validated, plus derived geometry."""

    channel: int
    layers: tuple[int, ...]
    block: str = "bottleneck"
    kernel_size: int = 3
    in_planes: int = 1
    out_length: int | None = 2

    def __post_init__(self):
        for name in ("channel", "kernel_size", "in_planes"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        if isinstance(self.layers, (str, bytes)) or not isinstance(self.layers, Sequence):
            raise TypeError(f"EncoderNet1d: layers must be a sequence of ints, got {self.layers!r}")
        if len(self.layers) < 2:
            raise ValueError(f"EncoderNet1d: layers needs at least 2 stages, got {list(self.layers)}")
        layers = tuple(_positive_int(f"layers[{i}] (blocks in stage {i + 1})", n) for i, n in enumerate(self.layers))
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "block", normalize_block(self.block))
        out_length = self.out_length
        if out_length is not None:
            if isinstance(out_length, bool) or not isinstance(out_length, numbers.Integral):
                raise TypeError(f"EncoderNet1d: out_length must be an int or None, got {out_length!r}")
            out_length = int(out_length) if out_length > 0 else None  # MDNC: 0 means "no FC head"
        object.__setattr__(self, "out_length", out_length)

    @classmethod
    def coerce(cls, config: EncoderConfig | dict) -> EncoderConfig:
        return config if isinstance(config, cls) else cls.from_dict(config)

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"EncoderNet1d config: unknown fields {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        return d

    # -- derived geometry (MDNC's cal_kernel_padding) -------------------------------
    @property
    def block_depth(self) -> int:
        return BLOCK_DEPTH[self.block]

    @property
    def nlayers(self) -> int:
        """Convolutions along the depth: stem + residual branches + final conv."""
        return self.block_depth * sum(self.layers) + 2

    @property
    def stride(self) -> int:
        return 2 if self.kernel_size > 1 else 1

    @property
    def padding(self) -> int:
        return self.kernel_size // 2

    @property
    def stem_kernel(self) -> int:
        return self.kernel_size + 2 if self.kernel_size > 1 else 1

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
        """(in_planes, out_planes, stride) of block ``index`` in ``stage`` (0-based).

        As in MDNC, the first block changes the channels and the last one down-samples.
        """
        cin, cout = self.stage_channels[stage]
        last = index == self.layers[stage] - 1
        return (cin if index == 0 else cout), cout, (self.stride if last else 1)

    # -- input validation --------------------------------------------------------------
    def feature_length(self, length: int) -> int:
        """Length of the final feature map for an input of ``length``, or ValueError.

        Checks what PyTorch would fail on deep inside: every instance norm needs at least
        2 positions, and the residual branch and shortcut of each block must have the same
        length (they do not for even kernels on some lengths).
        """
        problem = self._walk(length)
        if problem is None:
            return self._final_length(length)
        if problem.startswith("too short"):
            minimum = self.min_length()
            raise ValueError(
                f"EncoderNet1d: input length {length} is too short for {len(self.layers)} stages "
                f"with kernel_size={self.kernel_size} ({problem[len('too short: '):]}); "
                + (f"the minimum length is {minimum}" if minimum else "no length works for this configuration")
            )
        raise ValueError(f"EncoderNet1d: input length {length}: {problem}")

    def min_length(self) -> int | None:
        """Smallest input length this network accepts, or None if no length works."""
        for length in range(1, 2 ** (len(self.layers) + 2) + 16):  # each stage at most halves
            if self._walk(length) is None:
                return length
        return None

    def _final_length(self, length: int) -> int:
        length = conv_length(length, self.stem_kernel, 1, self.stem_kernel // 2)
        for stage, n in enumerate(self.layers):
            for index in range(n):
                _, _, stride = self.block_args(stage, index)
                length = self._block_length(length, stride)[0]
        return conv_length(length, self.kernel_size, 1, self.padding)

    def _block_length(self, length: int, stride: int) -> tuple[int, int, list[int]]:
        """(branch output, shortcut output, lengths entering each instance norm)."""
        k, p = self.kernel_size, self.padding
        if self.block == "plain":
            mid = conv_length(length, k, 1, p)
            out = conv_length(mid, k, stride, p)
            norms = [length, mid]
        else:
            mid = conv_length(length, k, stride, p)
            out = mid
            norms = [length, length, mid]
        shortcut = conv_length(length, 1, stride, 0)
        return out, shortcut, norms

    def _walk(self, length: int) -> str | None:
        length = conv_length(length, self.stem_kernel, 1, self.stem_kernel // 2)
        for stage, n in enumerate(self.layers):
            for index in range(n):
                cin, cout, stride = self.block_args(stage, index)
                out, shortcut, norms = self._block_length(length, stride)
                if min(norms + [out]) < 2:  # instance norm of a single position is undefined
                    return f"too short: stage {stage + 1} block {index + 1} would see length {min(norms + [out])}"
                if out != shortcut:
                    return (
                        f"residual shapes cannot add in stage {stage + 1} block {index + 1}: branch length "
                        f"{out} vs shortcut length {shortcut} (even kernel_size={self.kernel_size} changes the "
                        "length; use an odd kernel_size or another input length)"
                    )
                length = out
        return None

    def check_input_shape(self, shape: Sequence[int], channel_axis: int) -> int:
        """Validate a (B, C, L) or (B, L, C) input shape; return the output feature length."""
        layout = "(B, C, L)" if channel_axis == 1 else "(B, L, C)"
        if len(shape) != 3:
            raise ValueError(f"EncoderNet1d: input must be rank 3 {layout}, got shape {tuple(shape)}")
        channels = shape[channel_axis]
        if channels != self.in_planes:
            raise ValueError(
                f"EncoderNet1d: input has {channels} channels but in_planes={self.in_planes} "
                f"(shape {tuple(shape)}, layout {layout})"
            )
        return self.feature_length(shape[2 if channel_axis == 1 else 1])


def preset_config(name: str, in_planes: int = 1, out_length: int | None = 2, kernel_size: int = 3) -> EncoderConfig:
    """Config of a named MDNC preset (64 channels, 5 stages)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    block, layers = PRESETS[name]
    return EncoderConfig(64, layers, block, kernel_size, in_planes, out_length)


def make_preset(name: str, build):
    """A timm-style factory ``name(in_planes=1, out_length=2, kernel_size=3, **kwargs)``
    returning ``build(preset_config(...), **kwargs)``."""
    block = PRESETS[name][0]

    def factory(in_planes: int = 1, out_length: int | None = 2, kernel_size: int = 3, **kwargs):
        return build(preset_config(name, in_planes, out_length, kernel_size), **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"MDNC preset ``{name}``: 64 channels, 5 stages of {block} blocks {PRESETS[name][1]}."
    return factory

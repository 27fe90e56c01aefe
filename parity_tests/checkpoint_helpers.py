"""Small random EncoderNet1d checkpoints in every format, for the checkpoint I/O, CLI and fuzz tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flax_resnet1d import port
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.io import formats, writers
from flax_resnet1d.parity import random_state_dict

# Small but complete: a stride-1 block (conv_list), a down-sampling one (conv_scale), a shortcut conv.
SMALL_CONFIG = EncoderConfig(channel=4, layers=(2, 1), block="bottleneck", kernel_size=3, in_planes=2, out_length=3)
# File name of each format's checkpoint as written by ``write_all_formats``.
FORMAT_FILES = {"torch": "model.pt", "safetensors": "model.safetensors", "orbax": "model_orbax",
                "msgpack": "model.msgpack"}


def small_state_dict(dtype: str = "float32", seed: int = 0, config: EncoderConfig = SMALL_CONFIG) -> dict:
    """Random (non-initial) MDNC state dict of numpy arrays."""
    return {k: v.astype(dtype) for k, v in random_state_dict(config, seed).items()}


def write_checkpoint(path: Path, state_dict: dict, config: EncoderConfig = SMALL_CONFIG) -> Path:
    """Write ``state_dict`` in the format ``path`` names (PyTorch or Flax)."""
    if formats.output_format(path) in formats.TORCH_FORMATS:
        writers.write_state_dict(path, state_dict)
    else:
        writers.save_flax(path, port.torch_to_flax(state_dict, config), config)
    return path


def write_all_formats(directory: Path, state_dict: dict) -> dict[str, Path]:
    """Format name -> path of ``state_dict`` written in that format."""
    return {fmt: write_checkpoint(directory / name, state_dict) for fmt, name in FORMAT_FILES.items()}


def leftovers(directory: Path) -> list[str]:
    """Temporary files or directories a writer left behind (hidden '.<name>.*.tmp')."""
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def assert_same_state_dict(actual: dict, expected: dict) -> None:
    """Same keys in the same order, same dtypes, bit-identical values."""
    assert list(actual) == list(expected)
    for key in expected:
        a, e = np.asarray(actual[key]), np.asarray(expected[key])
        assert a.dtype == e.dtype and a.shape == e.shape, key
        assert a.tobytes() == e.tobytes(), key

"""Small random checkpoints in every format, of SMALL_CONFIG (an EncoderNet1d) or of any network
of the family, for the checkpoint I/O, CLI and fuzz tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from conftest import FAMILY_MANIFEST

from flax_resnet1d import port
from flax_resnet1d.config import EncoderConfig, config_from_dict
from flax_resnet1d.io import formats, readers, writers
from flax_resnet1d.parity import random_state_dict

# Small but complete: a stride-1 block (conv_list), a down-sampling one (conv_scale), a shortcut conv.
SMALL_CONFIG = EncoderConfig(channel=4, layers=(2, 1), block="bottleneck", kernel_size=3, in_planes=2, out_length=3)
# File name of each format's checkpoint as written by ``write_all_formats``.
FORMAT_FILES = {"torch": "model.pt", "safetensors": "model.safetensors", "orbax": "model_orbax",
                "msgpack": "model.msgpack"}
# One small MDNC fixture (parity_tests/data/mdnc-family) per architecture; the blocks with BatchNorm.
FAMILY_EXAMPLES = {"BlockPlain1d": "plain_batch_prelu_new_down_s2", "BlockBottleneck1d": "bottleneck_batch_relu_old_up_s2",
                   "EncoderNet1d": "encnet_bottleneck_k5", "DecoderNet1d": "decnet_plain_vector",
                   "AE1d": "ae_bottleneck", "UNet1d": "unet_plain"}


def family_config(name: str):
    """The config of the family fixture ``name``, as its manifest gives it."""
    meta = FAMILY_MANIFEST[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # options MDNC ignores (layer_order with normalizer 'null')
        return config_from_dict({"arch": meta["arch"], **meta["kwargs"]})


def small_state_dict(dtype: str = "float32", seed: int = 0, config=SMALL_CONFIG) -> dict:
    """Random (non-initial) MDNC state dict of numpy arrays, its floating ones of ``dtype``."""
    return {k: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v
            for k, v in random_state_dict(config, seed).items()}


def write_checkpoint(path: Path, state_dict: dict, config=SMALL_CONFIG, overwrite: bool = False) -> Path:
    """Write ``state_dict`` of ``config``'s network in the format ``path`` names (PyTorch or Flax)."""
    if formats.output_format(path) in formats.TORCH_FORMATS:
        writers.write_state_dict(path, state_dict, overwrite=overwrite, config=config)
    else:
        writers.save_flax(path, port.torch_to_flax(state_dict, config), config, overwrite=overwrite)
    return path


def write_all_formats(directory: Path, state_dict: dict) -> dict[str, Path]:
    """Format name -> path of ``state_dict`` written in that format."""
    return {fmt: write_checkpoint(directory / name, state_dict) for fmt, name in FORMAT_FILES.items()}


def written_contents(path: Path) -> dict[str, bytes]:
    """What a writer left at ``path``, to compare two writes: each file's bytes (a ``.msgpack``'s
    config file too); of an Orbax directory its config.json and its arrays (Orbax's own files
    differ between two saves of the same arrays)."""
    path = Path(path)
    if path.is_dir():
        variables, _ = readers.load_flax(path)
        arrays = {"/".join(p): np.asarray(a) for p, a in port.flatten_tree(variables)}
        return {formats.CONFIG_NAME: (path / formats.CONFIG_NAME).read_bytes(),
                **{name: f"{a.dtype}{a.shape}".encode() + a.tobytes() for name, a in arrays.items()}}
    files = [path, formats.msgpack_config_path(path)] if formats.output_format(path) == "msgpack" else [path]
    return {file.name: file.read_bytes() for file in files}


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

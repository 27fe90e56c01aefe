"""flax_resnet1d.io: round trips through every format, what real checkpoints look like
(training dicts, ``module.`` prefixes, half precision), safety (pickles that need objects,
NaN/Inf), atomic writes and ``overwrite``. Bad files through the CLI: test_cli_convert.py."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_helpers import (FAMILY_EXAMPLES, FORMAT_FILES, SMALL_CONFIG, assert_same_state_dict, family_config,
                                leftovers, small_state_dict, write_all_formats, write_checkpoint, written_contents)

import torch_ref
from flax_resnet1d import port
from flax_resnet1d.config import CONFIGS
from flax_resnet1d.errors import CheckpointError
from flax_resnet1d.io import atomic, readers, writers

FORMATS = tuple(FORMAT_FILES)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_format_round_trips_bit_exactly(tmp_path, dtype):
    state_dict = small_state_dict(dtype, seed=1)
    for fmt, path in write_all_formats(tmp_path, state_dict).items():
        loaded, config = readers.load_checkpoint(path)
        assert config == SMALL_CONFIG, fmt
        assert_same_state_dict(loaded, state_dict)


def test_flax_loaders_return_variables_and_the_written_config(tmp_path):
    state_dict = small_state_dict(seed=2)
    variables = port.torch_to_flax(state_dict, SMALL_CONFIG)
    for name in ("orbax_dir", "model.msgpack"):
        writers.save_flax(tmp_path / name, variables, SMALL_CONFIG)
        loaded, config = readers.load_flax(tmp_path / name)
        assert config == SMALL_CONFIG
        assert_same_state_dict(port.flax_to_torch(loaded, config), state_dict)
    assert json.loads((tmp_path / "orbax_dir" / "config.json").read_text()) == SMALL_CONFIG.to_dict()
    assert json.loads((tmp_path / "model.config.json").read_text()) == SMALL_CONFIG.to_dict()


def test_flax_config_file_is_checked_against_the_weights(tmp_path):
    path = write_checkpoint(tmp_path / "model.msgpack", small_state_dict())
    (tmp_path / "model.config.json").write_text(json.dumps({**SMALL_CONFIG.to_dict(), "channel": 8}))
    with pytest.raises(CheckpointError, match=r"model.msgpack: .*shape mismatches: netbody.0.weight"):
        readers.load_flax(path)


def test_orbax_output_is_a_plain_orbax_checkpoint(tmp_path):
    """Users restore it with Orbax itself, no flax_resnet1d needed."""
    import orbax.checkpoint as ocp

    state_dict = small_state_dict(seed=3)
    path = write_checkpoint(tmp_path / "ckpt", state_dict)
    restored = ocp.StandardCheckpointer().restore(path.resolve())
    assert_same_state_dict(port.flax_to_torch(restored, SMALL_CONFIG), state_dict)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_written_state_dicts_load_into_the_reference_with_strict(tmp_path, arch, suffix, dtype):
    """Every tensor as MDNC has it, BatchNorm's 0-d integer num_batches_tracked included (torch
    would also load it 1-d, but our readers refuse that shape)."""
    config = family_config(FAMILY_EXAMPLES[arch])
    state_dict = small_state_dict(seed=4, config=config)
    path = tmp_path / f"model{suffix}"
    writers.write_state_dict(path, state_dict, dtype=dtype, config=config)
    if suffix == ".pt":
        tensors = torch.load(path, weights_only=True)
    else:
        import safetensors.torch

        tensors = safetensors.torch.load_file(path)
    net = torch_ref.from_config(config).to(getattr(torch, dtype))
    net.load_state_dict(tensors, strict=True)
    loaded = net.state_dict()
    for key, value in state_dict.items():
        expected = torch.from_numpy(np.asarray(value))
        expected = expected.to(getattr(torch, dtype)) if expected.is_floating_point() else expected
        assert (tensors[key].dtype, tensors[key].shape) == (expected.dtype, expected.shape), key
        assert torch.equal(loaded[key], expected), key


def _training_dict(state_dict: dict) -> dict:
    """What ``torch.save`` of a training loop's state typically holds."""
    net = torch_ref.from_config(SMALL_CONFIG)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(2, SMALL_CONFIG.in_planes, 16)).sum().backward()
    optimizer.step()
    tensors = {k: torch.from_numpy(v) for k, v in state_dict.items()}
    return {"model": tensors, "optimizer": optimizer.state_dict(), "epoch": 3, "best_acc": 0.91}


@pytest.mark.parametrize("prefix", ["", "module."])
def test_training_dict_state_dict_is_found_automatically(tmp_path, prefix):
    state_dict = small_state_dict(seed=5)
    checkpoint = _training_dict({prefix + k: v for k, v in state_dict.items()})
    torch.save(checkpoint, tmp_path / "train.pt")
    assert_same_state_dict(readers.load_state_dict(tmp_path / "train.pt"), state_dict)


def test_training_dict_with_two_state_dicts_needs_key(tmp_path):
    state_dict, ema = small_state_dict(seed=6), small_state_dict(seed=7)
    checkpoint = {**_training_dict(state_dict), "ema": {k: torch.from_numpy(v) for k, v in ema.items()}}
    torch.save(checkpoint, tmp_path / "train.pt")
    with pytest.raises(CheckpointError, match=r"several entries .*'model', 'ema'.*--key"):
        readers.load_state_dict(tmp_path / "train.pt")
    assert_same_state_dict(readers.load_state_dict(tmp_path / "train.pt", key="ema"), ema)
    with pytest.raises(CheckpointError, match=r"no entry 'weights' \(entries: 'model', 'optimizer'"):
        readers.load_state_dict(tmp_path / "train.pt", key="weights")
    with pytest.raises(CheckpointError, match=r"entry 'epoch' is an int, not a state dict"):
        readers.load_state_dict(tmp_path / "train.pt", key="epoch")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".msgpack"])
@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_is_read_as_float32_with_a_notice(tmp_path, caplog, suffix, half):
    state_dict = small_state_dict(seed=8)
    path = tmp_path / f"model{suffix}"
    write_checkpoint(path, writers.cast_arrays(state_dict, half))
    with caplog.at_level(logging.WARNING, logger="flax_resnet1d.io.readers"):
        loaded, _ = readers.load_checkpoint(path)
    assert f"{len(state_dict)} {half} tensors cast to float32" in caplog.text
    expected = {k: torch.from_numpy(v).to(getattr(torch, half)).float().numpy() for k, v in state_dict.items()}
    assert_same_state_dict(loaded, expected)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_weights_are_refused_unless_allowed(tmp_path, fmt, bad):
    state_dict = small_state_dict(seed=9)
    state_dict["netbody.1.conv_scale.conv2.2.weight"][0, 1, 2] = bad
    path = write_checkpoint(tmp_path / FORMAT_FILES[fmt], state_dict)
    with pytest.raises(CheckpointError, match=r"non-finite weights in 1 tensors: netbody.1.conv_scale.conv2.2.weight"):
        readers.load_checkpoint(path)
    loaded, _ = readers.load_checkpoint(path, allow_nonfinite=True)
    assert_same_state_dict(loaded, state_dict)


class _CreatesMarker:
    """Unpickling this calls ``open(marker, 'w')``: a file appears if the pickle is executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("container", ["torch zip", "torch legacy", "raw pickle"])
def test_pickles_needing_objects_are_refused_never_executed(tmp_path, container):
    marker = tmp_path / "executed"
    payload = {**{k: torch.from_numpy(v) for k, v in small_state_dict().items()}, "evil": _CreatesMarker(marker)}
    path = tmp_path / "evil.pt"
    if container == "raw pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=container == "torch zip")
    with pytest.raises(CheckpointError, match=r"evil.pt: refused: unpickling it needs Python objects .*; nothing was executed"):
        readers.load_state_dict(path)
    assert not marker.exists()


# -- writing: atomicity and overwrite -----------------------------------------------------
def _write_partial_then_fail(path: Path, error: BaseException, directory: bool = False) -> None:
    if directory:
        path.mkdir()
        path = path / "partial"
    with open(path, "wb") as f:
        f.write(b"\0" * 100)
    raise error


def _fail_midway(monkeypatch, fmt: str, error: BaseException) -> None:
    """Make the format's writer write part of its output, then raise ``error``."""
    if fmt == "orbax":
        import orbax.checkpoint as ocp

        monkeypatch.setattr(ocp.Checkpointer, "save", lambda self, directory, *args, **kwargs:
                            _write_partial_then_fail(Path(directory), error, directory=True))
    else:  # every file format is serialized in memory, then written by atomic.write_file
        monkeypatch.setattr(atomic, "write_file", lambda path, data: _write_partial_then_fail(Path(path), error))


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk full", "Ctrl-C"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_write_leaves_no_partial_output(tmp_path, monkeypatch, fmt, existing, error):
    path = tmp_path / FORMAT_FILES[fmt]
    old = small_state_dict(seed=10)
    if existing:
        write_checkpoint(path, old)
    before = sorted(p.name for p in tmp_path.iterdir())
    _fail_midway(monkeypatch, fmt, error)
    with pytest.raises(type(error)):
        write_checkpoint(path, small_state_dict(seed=11), overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert leftovers(tmp_path) == []
    if existing:  # the old checkpoint is intact
        assert_same_state_dict(readers.load_checkpoint(path)[0], old)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_existing_output_is_replaced_only_with_overwrite(tmp_path, arch, fmt):
    """For every network of the family: its .msgpack's config file is ours to replace too."""
    config = family_config(FAMILY_EXAMPLES[arch])
    old, new = small_state_dict(seed=12, config=config), small_state_dict(seed=13, config=config)
    path = write_checkpoint(tmp_path / FORMAT_FILES[fmt], old, config)
    with pytest.raises(CheckpointError, match=r"already exists; pass --overwrite"):
        write_checkpoint(path, new, config)
    assert_same_state_dict(readers.load_checkpoint(path, config=config)[0], old)
    write_checkpoint(path, new, config, overwrite=True)
    assert_same_state_dict(readers.load_checkpoint(path, config=config)[0], new)
    (tmp_path / "fresh").mkdir()
    assert written_contents(path) == written_contents(write_checkpoint(tmp_path / "fresh" / path.name, new, config))
    assert leftovers(tmp_path) == []


def test_write_refuses_a_state_dict_of_another_network(tmp_path):
    state_dict = small_state_dict()
    del state_dict["fc.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing keys: fc.bias"):
        writers.write_state_dict(tmp_path / "model.pt", state_dict)
    assert list(tmp_path.iterdir()) == []


def test_flax_formats_and_safetensors_need_no_torch(tmp_path):
    """The io modules import without torch; only .pt/.pth needs it, and says so."""
    paths = write_all_formats(tmp_path, small_state_dict(seed=14))
    script = f"""
import sys
sys.modules["torch"] = None  # any 'import torch' now fails
from flax_resnet1d import errors
from flax_resnet1d.io import readers
for name in ("safetensors", "orbax", "msgpack"):
    readers.load_checkpoint({str(tmp_path)!r} + "/" + {FORMAT_FILES!r}[name])
try:
    readers.load_checkpoint({str(paths["torch"])!r})
except errors.CheckpointError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "reading PyTorch files needs torch: pip install 'flax-resnet1d[torch]'" in out

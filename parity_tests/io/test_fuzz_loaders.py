"""Fuzzing the checkpoint loaders (hypothesis): random bytes, random bytes behind each format's
magic header, truncations and byte flips of valid files in every format. The only acceptable
outcomes are a valid checkpoint or a clean ``CheckpointError``: no other exception, no crash.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from checkpoint_helpers import SMALL_CONFIG, small_state_dict, write_all_formats
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flax_resnet1d.errors import CheckpointError
from flax_resnet1d.io import readers

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SUFFIXES = (".pt", ".pth", ".safetensors", ".msgpack", ".bin")
# First bytes of each format, so that random tails reach the parsers behind the sniffing.
MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x04\x95", (200).to_bytes(8, "little") + b'{"fc.bias":{"dtype":"F32",',
         b"\x81\xa6params", b"\x82\xa6params\x81", b"\x93NUMPY")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, Path]:
    """A valid checkpoint in every format, plus torch's legacy (non-zip) format."""
    directory = tmp_path_factory.mktemp("valid")
    paths = write_all_formats(directory, small_state_dict())
    paths["torch legacy"] = directory / "legacy.pt"
    torch.save(torch.load(paths["torch"], weights_only=True), paths["torch legacy"], _use_new_zipfile_serialization=False)
    return paths


def load_or_clean_error(path: Path) -> bool:
    """True if the file loaded (then it must be a valid checkpoint), False on a CheckpointError."""
    try:
        state_dict, config = readers.load_checkpoint(path, allow_nonfinite=True)
    except CheckpointError as e:
        assert str(e) and "\n" not in str(e)
        return False
    assert config == SMALL_CONFIG and len(state_dict) == len(small_state_dict())
    return True


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes(workdir, data, suffix):
    path = workdir / f"random{suffix}"
    path.write_bytes(data)
    assert not load_or_clean_error(path)


@FUZZ
@given(magic=st.sampled_from(MAGIC), tail=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES))
@example(magic=b"\x82\xa6params\x81", tail=b"\x00\x00\x00\x00", suffix=".msgpack")  # {'params': {0: 0}, 0: 0}
def test_random_bytes_behind_a_format_header(workdir, magic, tail, suffix):
    path = workdir / f"headed{suffix}"
    path.write_bytes(magic + tail)
    assert not load_or_clean_error(path)


SINGLE_FILES = ("torch", "torch legacy", "safetensors", "msgpack")


@FUZZ
@given(fmt=st.sampled_from(SINGLE_FILES), fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files(valid, workdir, fmt, fraction):
    data = valid[fmt].read_bytes()
    path = workdir / f"truncated{valid[fmt].suffix}"
    path.write_bytes(data[: int(fraction * len(data))])
    assert not load_or_clean_error(path)


@FUZZ
@given(fmt=st.sampled_from(SINGLE_FILES), flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True),
                                                                     st.integers(1, 255)), min_size=1, max_size=8))
@example(fmt="torch", flips=[(0.90625, 64)])  # a zip directory entry with an unknown compression method
def test_corrupted_files(valid, workdir, fmt, flips):
    data = bytearray(valid[fmt].read_bytes())
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    path = workdir / f"corrupt{valid[fmt].suffix}"
    path.write_bytes(bytes(data))
    load_or_clean_error(path)


@settings(FUZZ, max_examples=25)
@given(choice=st.integers(0, 10**6), fraction=st.floats(0.0, 1.0, exclude_max=True), flip=st.booleans())
def test_corrupted_orbax_directories(valid, workdir, choice, fraction, flip):
    """Truncate or flip a byte in one file of an Orbax checkpoint (metadata, manifest or data)."""
    path = workdir / "orbax"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(valid["orbax"], path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    target = files[choice % len(files)]
    data = bytearray(target.read_bytes())
    if flip and data:
        data[int(fraction * len(data))] ^= 0xFF
    else:
        data = data[: int(fraction * len(data))]
    target.write_bytes(bytes(data))
    load_or_clean_error(path)

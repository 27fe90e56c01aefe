"""Shared pieces of the parity suite: the EncoderNet1d grid as a ``grid_case`` parameter (see
grids.py), random Flax weights, the MDNC fixtures, and a log of measured errors printed at the
end of the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest
from grids import ENCODER_GRID

from flax_resnet1d.config import CONFIGS, EncoderConfig
from flax_resnet1d.model import from_config
from flax_resnet1d.parity import dtype_context

DATA_DIR = Path(__file__).parent / "data"
MDNC_DIR = DATA_DIR / "mdnc"  # copies of ../shared/fixtures/mdnc (CI clones only the repository)
FAMILY_DIR = DATA_DIR / "mdnc-family"  # copies of ../shared/fixtures/mdnc-family

# One XLA compilation cache for the session, shared with the CLI processes the tests start (they
# inherit the variable): a resume test's three processes compile the same steps once, not three times.
SESSION_CACHE = None if "JAX_COMPILATION_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="jax-cache-")
if SESSION_CACHE is not None:  # a cache of the user's own is left as it is
    os.environ["JAX_COMPILATION_CACHE_DIR"] = SESSION_CACHE
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


def pytest_sessionfinish(session, exitstatus):
    if SESSION_CACHE is not None:
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)


def pytest_generate_tests(metafunc):
    """Any test taking ``grid_case`` runs once per case of the EncoderNet1d grid."""
    if "grid_case" in metafunc.fixturenames:
        metafunc.parametrize("grid_case", ENCODER_GRID.cases, ids=[case.id for case in ENCODER_GRID.cases])


def example_input_shape(config, batch: int = 1) -> tuple[int, ...]:
    """A valid Flax input shape: (B, L, C) at the smallest length, or a decoder's (B, in_length)."""
    if getattr(config, "is_vector_input", False):
        return (batch, config.in_length)
    return (batch, config.min_length(), config.in_channels)


def random_flax_variables(config, dtype: str, seed: int) -> dict:
    """Random, non-initial Flax variables (numpy leaves of ``dtype``) with the structure the Flax
    model itself declares (``jax.eval_shape`` of ``init``), independent of the port's table.

    Kernels ~ U(+-sqrt(3/fan_in)) (unit variance through a layer, yet beyond PyTorch's init
    bound); every per-channel vector (norm scale and bias, PReLU slope, conv/fc bias)
    ~ U(-0.5, 1.5): both signs, no value at its initial constant; BatchNorm running variances
    ~ U(0.5, 1.5), batch counts random. A different draw from ``parity.random_state_dict``, so
    the two directions see different weights.
    """
    model = from_config(config, param_dtype=dtype)
    x = jax.ShapeDtypeStruct(example_input_shape(config), dtype)
    with dtype_context(dtype):
        shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if path[-1].key == "kernel":  # (k, in, out) or (in, out): fan_in is all but the last axis
            bound = np.sqrt(3.0 / np.prod(leaf.shape[:-1]))
            return rng.uniform(-bound, bound, leaf.shape).astype(leaf.dtype)
        if path[-1].key == "num_batches_tracked":
            return np.asarray(rng.integers(0, 1000), leaf.dtype)
        if path[-1].key == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
        return rng.uniform(-0.5, 1.5, leaf.shape).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture
def make_flax_variables():
    return random_flax_variables


@contextlib.contextmanager
def _count_xla_compiles():
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def xla_compiles():
    """``with xla_compiles() as compiles:`` lists the XLA compilations run inside the block."""
    return _count_xla_compiles


# -- the MDNC fixtures ------------------------------------------------------------------
MANIFEST = json.loads((MDNC_DIR / "manifest.json").read_text())  # EncoderNet1d checkpoints
FAMILY_MANIFEST = json.loads((FAMILY_DIR / "manifest.json").read_text())  # every architecture


class MdncFixture(NamedTuple):
    """A checkpoint saved by MDNC, with its input, MDNC's outputs and what its manifest states."""

    name: str
    arch: str
    source: str  # the parity log's label
    config: Any
    kwargs: dict  # the constructor arguments, as in the manifest
    state_dict: dict  # torch tensors, as MDNC saved them
    arrays: dict  # x, y_float32, y_float64; with BatchNorm also y_train_float64 and stats_after.<key>
    keys: int
    params: int
    nlayers: int | None  # blocks have none
    input_shape: list
    output_shape: list
    has_batch_norm: bool


def load_mdnc_fixture(directory: Path, name: str) -> MdncFixture:
    import torch

    if directory == MDNC_DIR:
        meta = MANIFEST[name]
        arch, kwargs, source = "EncoderNet1d", meta["config"], "MDNC fixtures"
        config = EncoderConfig.from_dict(kwargs)
        keys, params, has_batch_norm = meta["n_state_dict_keys"], meta["n_params"], False
    else:
        meta = FAMILY_MANIFEST[name]
        arch, kwargs, source = meta["arch"], meta["kwargs"], f"family {meta['arch']}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # options MDNC ignores (layer_order with normalizer 'null')
            config = CONFIGS[arch](**kwargs)
        keys, params, has_batch_norm = meta["keys"], meta["params"], meta["has_batch_norm"]
    state_dict = torch.load(directory / f"{name}.pt", map_location="cpu", weights_only=True)
    return MdncFixture(name, arch, source, config, kwargs, state_dict, dict(np.load(directory / f"{name}.npz")), keys,
                       params, meta.get("nlayers"), meta["input_shape"], meta["output_shape"], has_batch_norm)


def fixture_param(directory: Path, name: str):
    arch = FAMILY_MANIFEST[name]["arch"] if directory == FAMILY_DIR else "EncoderNet1d"
    return pytest.param((directory, name), id=f"{arch}-{name}")


@pytest.fixture(params=[fixture_param(MDNC_DIR, name) for name in sorted(MANIFEST)]
                + [fixture_param(FAMILY_DIR, name) for name in sorted(FAMILY_MANIFEST)])
def mdnc_fixture(request) -> MdncFixture:
    """Each checkpoint of data/mdnc (EncoderNet1d) and data/mdnc-family (every architecture)."""
    return load_mdnc_fixture(*request.param)


@pytest.fixture(params=[fixture_param(FAMILY_DIR, name) for name, meta in sorted(FAMILY_MANIFEST.items())
                        if meta["has_batch_norm"]])
def batch_norm_fixture(request) -> MdncFixture:
    """The fixtures with BatchNorm (train-mode outputs and running statistics stored)."""
    return load_mdnc_fixture(*request.param)


# -- measured errors, printed at the end of the session -------------------------------
_PARITY_LOG: list = []  # (source, ParityRow)


@pytest.fixture
def parity_log() -> list:
    """Append ``(source, ParityRow)``; the worst errors per dtype and source are printed at the end."""
    return _PARITY_LOG


def pytest_terminal_summary(terminalreporter):
    if not _PARITY_LOG:
        return
    worst: dict = {}
    for source, row in _PARITY_LOG:
        key = (row.dtype, source, row.quantity)
        worst[key] = max(worst.get(key, 0.0), row.rel_err)
    quantities = ("output", "grad input", "grad params", "grad worst param", "running stats")
    write = terminalreporter.write_line
    terminalreporter.section("parity: worst max|a-b|/max|b| (reference: torch_ref)")
    write(f"{'dtype':<8} {'source':<30}" + "".join(f"{q:>18}" for q in quantities))
    for dtype, source in sorted({key[:2] for key in worst}):
        write(f"{dtype:<8} {source:<30}" + "".join(f"{worst[(dtype, source, q)]:>18.2e}" if (dtype, source, q) in worst
                                                   else f"{'-':>18}" for q in quantities))


# -- a user's data set and one real run on it, shared by the reliability tests ---------------------
@pytest.fixture(scope="session")
def user_data(tmp_path_factory) -> Path:
    """A .npz data set of the user's (train and test files)."""
    from train_helpers import save_npz, synthetic_dataset

    directory = tmp_path_factory.mktemp("data")
    save_npz(synthetic_dataset(), directory / "train.npz", directory / "test.npz")
    return directory


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, user_data) -> Path:
    """A real (one-epoch) run directory written by `flax-resnet1d train`."""
    from train_helpers import TINY_MODEL

    from flax_resnet1d import cli

    run_dir = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main(["train", "--dataset", str(user_data / "train.npz"), "--test-data", str(user_data / "test.npz"),
                     *TINY_MODEL, "--epochs", "1", "--out", str(run_dir)]) == 0
    return run_dir


# -- a trained run with recorded statistics (the inference tests) -----------------------------------
@pytest.fixture(scope="session")
def classifier_run(tmp_path_factory, user_data):
    """A tiny run on ``user_data`` with channel normalization (its recorded statistics are part of
    the preprocessing): (run directory, test series (N, C, L) as the user has them); 3 classes, 2
    channels, length 32."""
    from flax_resnet1d import cli

    run_dir = str(tmp_path_factory.mktemp("inference") / "run")
    assert cli.main(["train", "--dataset", str(user_data / "train.npz"), "--test-data", str(user_data / "test.npz"),
                     "--normalize", "channel", "--channel", "4", "--layers", "1", "1", "--block", "plain",
                     "--kernel-size", "3", "--epochs", "2", "--no-progress", "--out", run_dir]) == 0
    return run_dir, np.load(user_data / "test.npz")["x"]

"""Shared pieces of the parity suite: the covering grid of configurations, random Flax
weights, the MDNC fixtures, and a log of measured errors printed at the end of the run.

The grid is a strength-2 covering array: every pair of levels of any two factors (block,
kernel size, depth, in_planes, out_length, input-length parity, dtype, port direction)
occurs in at least one of its 16 cases, instead of the 2*4*4*4*2*2*2*2 = 4096 cases of the
full product.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pytest

from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.model import from_config
from flax_resnet1d.parity import dtype_context

DATA_DIR = Path(__file__).parent / "data"
MDNC_DIR = DATA_DIR / "mdnc"  # copies of ../shared/fixtures/mdnc (CI clones only the repository)
FAMILY_DIR = DATA_DIR / "mdnc-family"  # copies of ../shared/fixtures/mdnc-family

# Factor levels of the grid.
KERNEL_SIZES = (1, 3, 5, 7)
DEPTHS = (2, 3, 4, 5)
IN_PLANES = (1, 2, 3, 4)
BLOCKS = ("plain", "bottleneck")
OUT_LENGTHS = (None, 3)
LENGTH_PARITIES = ("even", "odd")
DTYPES = ("float32", "float64")
DIRECTIONS = ("torch->flax", "flax->torch")

# Multiplication in GF(4) = {0, 1, x, x+1} (addition is XOR).
_GF4_MUL = ((0, 0, 0, 0), (0, 1, 2, 3), (0, 2, 3, 1), (0, 3, 1, 2))


class GridCase(NamedTuple):
    index: int
    config: EncoderConfig
    length_parity: str
    dtype: str
    direction: str

    @property
    def id(self) -> str:
        c = self.config
        return (f"{c.block}-k{c.kernel_size}-d{len(c.layers)}-in{c.in_planes}-out{c.out_length}-"
                f"{self.length_parity}-{self.dtype}-{self.direction.replace('->', '2')}")

    @property
    def factors(self) -> tuple:
        c = self.config
        return (c.block, c.kernel_size, len(c.layers), c.in_planes, c.out_length, self.length_parity, self.dtype,
                self.direction)


def grid_cases() -> list[GridCase]:
    """16 cases from the orthogonal array OA(16, 5, 4, 2): columns j, i, i+j, i+2j, i+3j over GF(4).

    Three columns give the 4-level factors. Each of the other two carries two 2-level
    factors as its two bits (and the second one a third as their XOR); a bit of a column,
    or the XOR of its bits, still meets every level of every other column and every value
    of the column's other bit, so all pairs stay covered. Channels and blocks per stage vary
    with the case so that stride-1 blocks (``conv_list``) and identity shortcuts occur too.
    """
    cases = []
    for i in range(4):
        for j in range(4):
            index = len(cases)
            block_and_head, length_dtype = i ^ _GF4_MUL[2][j], i ^ _GF4_MUL[3][j]
            depth = DEPTHS[j]
            layers = tuple(1 + ((index + stage) % 3 == 0) for stage in range(depth))
            config = EncoderConfig(channel=(4, 6, 8)[index % 3], layers=layers, block=BLOCKS[block_and_head & 1],
                                   kernel_size=KERNEL_SIZES[i], in_planes=IN_PLANES[i ^ j],
                                   out_length=OUT_LENGTHS[block_and_head >> 1])
            cases.append(GridCase(index, config, LENGTH_PARITIES[length_dtype & 1], DTYPES[length_dtype >> 1],
                                  DIRECTIONS[(length_dtype & 1) ^ (length_dtype >> 1)]))
    return cases


GRID = grid_cases()


def pytest_generate_tests(metafunc):
    """Any test taking ``grid_case`` runs once per case of the covering grid."""
    if "grid_case" in metafunc.fixturenames:
        metafunc.parametrize("grid_case", GRID, ids=[case.id for case in GRID])


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
def grid() -> list[GridCase]:
    return GRID


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
MANIFEST = json.loads((MDNC_DIR / "manifest.json").read_text())


@pytest.fixture(params=sorted(MANIFEST))
def mdnc_fixture(request):
    """(name, manifest entry, state dict of torch tensors as saved by MDNC, npz with x, y_float32, y_float64)."""
    import torch

    name = request.param
    state_dict = torch.load(MDNC_DIR / f"{name}.pt", map_location="cpu", weights_only=True)
    return name, MANIFEST[name], state_dict, dict(np.load(MDNC_DIR / f"{name}.npz"))


FAMILY_MANIFEST = json.loads((FAMILY_DIR / "manifest.json").read_text())


def _family_fixture(name: str):
    import torch

    from flax_resnet1d.config import CONFIGS

    meta = FAMILY_MANIFEST[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # options MDNC ignores (layer_order with normalizer 'null')
        config = CONFIGS[meta["arch"]](**meta["kwargs"])
    state_dict = torch.load(FAMILY_DIR / f"{name}.pt", map_location="cpu", weights_only=True)
    return name, meta, config, state_dict, dict(np.load(FAMILY_DIR / f"{name}.npz"))


@pytest.fixture(params=sorted(FAMILY_MANIFEST))
def family_fixture(request):
    """(name, manifest entry, config, state dict as saved by MDNC, npz with x, y_float32, y_float64
    and, with BatchNorm, y_train_float64 and stats_after.<key>)."""
    return _family_fixture(request.param)


@pytest.fixture(params=sorted(name for name, meta in FAMILY_MANIFEST.items() if meta["has_batch_norm"]))
def batch_norm_fixture(request):
    """The family fixtures with BatchNorm (train-mode outputs and statistics stored)."""
    return _family_fixture(request.param)


def pairwise_cases(factors: dict[str, tuple], seed: int = 0, candidates: int = 64) -> list[dict]:
    """A strength-2 covering array, built greedily: every pair of levels of any two factors
    occurs in at least one case; each new case is the random candidate covering most pairs not
    yet covered. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    names = list(factors)
    uncovered = {((a, x), (b, y)) for i, a in enumerate(names) for b in names[i + 1:]
                 for x in range(len(factors[a])) for y in range(len(factors[b]))}
    cases = []
    while uncovered:
        best, best_pairs = None, set()
        for _ in range(candidates):
            pick = {name: int(rng.integers(len(factors[name]))) for name in names}
            # seed the candidate with one uncovered pair, so every round makes progress
            (a, x), (b, y) = sorted(uncovered)[int(rng.integers(len(uncovered)))]
            pick[a], pick[b] = x, y
            pairs = {((p, pick[p]), (q, pick[q])) for i, p in enumerate(names) for q in names[i + 1:]} & uncovered
            if len(pairs) > len(best_pairs):
                best, best_pairs = pick, pairs
        uncovered -= best_pairs
        cases.append({name: factors[name][level] for name, level in best.items()})
    return cases


def assert_covers_every_pair(factors: dict[str, tuple], cases: list[dict]) -> None:
    names = list(factors)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            seen = {(repr(case[a]), repr(case[b])) for case in cases}
            missing = {(repr(x), repr(y)) for x in factors[a] for y in factors[b]} - seen
            assert not missing, f"factors {a} and {b}: pairs {missing} never tested"


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

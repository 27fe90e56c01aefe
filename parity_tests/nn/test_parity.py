"""Forward outputs and gradients (input and every parameter) of the Flax port against the
PyTorch reference, one test over the cases of every grid (grids.py: EncoderNet1d, the blocks,
the networks), ids ``arch-setting-dtype-direction``, in both port directions:

- torch->flax: random reference weights (an MDNC state dict) loaded into Flax;
- flax->torch: random Flax variables exported to an MDNC state dict and loaded into torch.

Blocks in train mode also compare the updated BatchNorm running statistics. Bounds
(``parity.TOLERANCES``): max|a-b|/max|b| <= 1e-12 in float64; in float32 <= 1e-5 for outputs
and <= 1e-4 for gradients.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from grids import ENCODER_GRID, GRIDS, ParityCase, covering_array, fewest_rows, missing_pairs

from flax_resnet1d import parity, port
from flax_resnet1d.config import EncoderConfig

CASES = [case for grid in GRIDS for case in grid.cases]


@pytest.mark.parametrize("factors", [
    {"a": (0, 1, 2), "b": (0, 1, 2), "c": (0, 1, 2), "d": (0, 1, 2)},
    {f"bit{i}": (False, True) for i in range(10)},
    {"one": ("only",), "five": tuple("abcde"), "two": (None, 3), "three": (1, 2, 3), "four": (1.5, 2.5, 3.5, 4.5)},
], ids=["3^4", "2^10", "mixed"])
def test_covering_array_covers_every_pair_deterministically(factors):
    rows = covering_array(factors)
    assert not missing_pairs(factors, rows)
    assert all(list(row) == list(factors) and all(row[f] in factors[f] for f in factors) for row in rows)
    assert covering_array(factors) == rows
    assert len(rows) < math.prod(len(levels) for levels in factors.values())


def test_covering_array_builds_no_row_it_must_avoid():
    factors = {"a": (0, 1, 2), "b": (0, 1, 2), "c": (0, 1), "d": ("x", "y")}

    def avoid(levels: dict) -> bool:  # partial rows too: only the factors set so far
        return levels.get("a") == levels.get("b") == 0 and levels.get("c") == 0

    rows = covering_array(factors, avoid)
    assert not missing_pairs(factors, rows)
    assert not any(avoid(row) for row in rows)
    assert any(avoid(row) for row in covering_array(factors))


def test_missing_pairs_names_each_uncovered_pair():
    factors = {"a": (0, 1), "b": ("x", "y"), "c": (None, 3)}
    rows = [{"a": 0, "b": "x", "c": None}, {"a": 1, "b": "y", "c": 3}]
    assert missing_pairs(factors, rows) == ["a=0, b='y'", "a=1, b='x'", "a=0, c=3", "a=1, c=None", "b='x', c=3",
                                            "b='y', c=None"]


@pytest.mark.parametrize("grid", GRIDS, ids=lambda grid: grid.name)
def test_grid_covers_every_pair_of_factor_levels_in_fewest_rows(grid):
    assert not missing_pairs(grid.factors, [case.levels for case in grid.cases])
    assert grid.avoid is None or not any(grid.avoid(case.levels) for case in grid.cases)
    assert len(grid.cases) == fewest_rows(grid.factors)  # 16, 16 and 20: the suite stays within CI's time
    assert len({case.id for case in grid.cases}) == len(grid.cases)


def test_encoder_cases_are_their_rows():
    """The EncoderNet1d grid's configurations and inputs take the levels of their rows."""
    for case in ENCODER_GRID.cases:
        c, levels = case.config, case.levels
        realized = {"block": c.block, "kernel_size": c.kernel_size, "depth": len(c.layers), "in_planes": c.in_planes,
                    "out_length": c.out_length, "parity": ("even", "odd")[case.x.shape[-1] % 2], "dtype": case.dtype,
                    "direction": case.direction}
        assert realized == levels, case.id
        assert c.feature_length(case.x.shape[-1]) >= 6
    assert [len(levels) for levels in ENCODER_GRID.factors.values()] == [2, 4, 4, 4, 2, 2, 2, 2]


def reference_weights(case: ParityCase, make_flax_variables) -> dict:
    """The MDNC state dict both frameworks run: drawn for torch, or exported from random Flax variables."""
    if case.direction == "torch->flax":
        return parity.random_state_dict(case.config, case.seed)
    variables = make_flax_variables(case.config, case.dtype, case.seed)
    state_dict = port.flax_to_torch(variables, case.config)
    # check_parity runs Flax on torch_to_flax(state_dict): exactly these variables again.
    assert jax.tree.all(jax.tree.map(np.array_equal, port.torch_to_flax(state_dict, case.config), variables))
    if isinstance(case.config, EncoderConfig):  # an encoder's port also reads its config from the weights
        inferred = port.flax_to_torch(variables)
        assert list(inferred) == list(state_dict) and all(np.array_equal(inferred[k], state_dict[k]) for k in inferred)
        assert jax.tree.all(jax.tree.map(np.array_equal, port.torch_to_flax(state_dict), variables))
    return state_dict


@pytest.mark.filterwarnings("ignore:.* is ignored with :UserWarning")  # options MDNC ignores, as MDNC does
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_outputs_and_gradients_match_torch_ref(case, make_flax_variables, parity_log):
    state_dict = reference_weights(case, make_flax_variables)
    rows = parity.check_parity(state_dict, case.config, case.x, dtypes=(case.dtype,), seed=case.seed, train=case.train)
    parity_log.extend((case.source, row) for row in rows)
    stats = ["running stats"] if case.train and case.config.has_batch_norm else []
    assert [row.quantity for row in rows] == ["output", "grad input", "grad params", "grad worst param", *stats]
    failed = [row for row in rows if not row.passed]
    assert not failed, f"input {case.x.shape}: {failed}"

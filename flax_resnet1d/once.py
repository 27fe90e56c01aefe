"""Computations that run once, on small inputs: compiled without XLA's backend optimizations.

An initialization or a parity check runs its program a single time, so optimizing it (the
threefry code of an init, a deep network's gradients) takes far longer than running it
unoptimized; eager dispatch, op by op, is slower still. The HLO passes still run: the results
are those of the optimized program to rounding (parity_tests/nn/test_parity.py holds them to
1e-12 in float64 against the PyTorch reference).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

UNOPTIMIZED = {"xla_backend_optimization_level": 0}


def run_once(fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, one compilation of it without the backend's optimizations."""
    return jax.jit(fn).lower(*args).compile(UNOPTIMIZED)(*args)

"""Numerical parity between the Flax port and the PyTorch reference.

Used by the test suite, ``flax-resnet1d verify`` and the GPU suite. The metric is
``max|a - b| / max|b|`` per output, with the PyTorch reference as ``b``. Gradients are
of ``sum(y * cotangent)`` for a fixed random cotangent, with respect to the input and
every parameter; Flax gradients are mapped to MDNC keys through ``port.flax_to_torch``.

torch is imported lazily: only the reference side needs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from . import port
from .config import coerce_config
from .model import from_config
from .once import run_once

# max|a-b| / max|b| bounds: outputs and gradients, per dtype (CPU).
TOLERANCES = {"float64": {"output": 1e-12, "grad": 1e-12}, "float32": {"output": 1e-5, "grad": 1e-4}}
# With a float64 reference at hand (``flax-resnet1d verify``), a float32 bound is the larger of
# TOLERANCES and this many times the reference's own float32 error against its float64 result.
# Freshly initialised deep networks are ill-conditioned: for encnet62 (seed 0, L=256, B=2)
# PyTorch's float32 input gradient is 1.2e-2 away from its float64 one while Flax's is 3e-6
# away, so the two float32 results differ by the reference's own error and no fixed bound
# holds; the float64 comparison (1e-12) is what proves the port there. Across the parity grid
# (16 configurations, seeds 0 and 1) and the fresh presets (B 1 and 2, seeds 0 and 1), wherever
# the scaled bound exceeds the fixed one, Flax's float32 error against float64 was at most 1.0
# times PyTorch's and the two float32 results differed by at most 1.5 times it
# (benchmarks/verify_tolerance.py); 3 leaves a margin over the triangle inequality's 2.
REFERENCE_ERROR_FACTOR = 3


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a - b)))


def random_state_dict(config, seed: int = 0) -> dict[str, np.ndarray]:
    """float64 MDNC state dict with every parameter and running statistic away from its initial value.

    Norm scales ~ U(0.5, 1.5), norm biases and conv/fc biases ~ N(0, 0.1^2), PReLU slopes
    ~ U(-0.5, 0.5) (some negative), weights ~ N(0, 1/fan_in): non-trivial everywhere but
    keeping activations of order one through the depth. BatchNorm running means ~ N(0, 0.1^2),
    variances ~ U(0.5, 1.5), batch counts (int64) random.
    """
    rng = np.random.default_rng(seed)
    sd = {}
    for row in port.param_table(config):
        shape, leaf = row.torch_shape, row.flax_path[-1]
        if leaf == "kernel":
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
        elif leaf in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "negative_slope":
            value = rng.uniform(-0.5, 0.5, shape)
        elif leaf == "num_batches_tracked":
            value = np.int64(rng.integers(0, 1000))
        else:
            value = rng.normal(0.0, 0.1, shape)
        sd[row.torch_key] = value
    return sd


def cast_floats(tree, dtype):
    """Every floating leaf of ``tree`` as ``dtype`` (jnp arrays); integer leaves (batch counts) as they are."""
    return jax.tree.map(lambda a: jnp.asarray(a, dtype) if np.issubdtype(np.asarray(a).dtype, np.floating)
                        else jnp.asarray(a), tree)


def to_flax_input(x_mdnc: np.ndarray) -> np.ndarray:
    """(B, C, L) -> (B, L, C); a vector input (B, F) stays."""
    return x_mdnc if x_mdnc.ndim == 2 else np.swapaxes(x_mdnc, 1, 2)


to_mdnc_output = to_flax_input  # the same swap of the last two axes of a feature map


@contextlib.contextmanager
def dtype_context(dtype: str):
    """float64 needs x64 in JAX; enable it only around the computation."""
    with jax.enable_x64(dtype == "float64"):
        yield


@dataclasses.dataclass
class Outputs:
    """Forward output (MDNC layout), gradients by MDNC key, and (train mode) the updated BatchNorm statistics."""

    y: np.ndarray
    grad_x: np.ndarray  # MDNC layout, as the input
    grads: dict[str, np.ndarray]
    stats: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def flax_outputs(state_dict: Mapping, config, x_mdnc: np.ndarray, cotangent: np.ndarray, dtype: str,
                 compute_dtype=None, train: bool = False, **model_kwargs) -> Outputs:
    """Run the Flax port (``once.run_once``) on an MDNC-layout input; gradients mapped back to MDNC keys.

    ``dtype`` is that of the parameters and input; ``compute_dtype`` (e.g. ``jnp.bfloat16``)
    and ``model_kwargs`` (e.g. ``precision="highest"``) configure the model. ``train=True``
    runs BatchNorm in train mode and returns its updated statistics.
    """
    config = coerce_config(config)
    model = from_config(config, dtype=compute_dtype, **model_kwargs)
    with dtype_context(dtype):
        variables = cast_floats(port.torch_to_flax(state_dict, config), dtype)
        params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
        x = jnp.asarray(to_flax_input(np.asarray(x_mdnc)), dtype)
        ct = jnp.asarray(to_flax_input(cotangent), dtype)

        def forward_and_grads(params, x):
            def loss(params, x):
                y, updated = model.apply({"params": params, **state}, x, train=train, mutable=list(state))
                return jnp.sum(y * ct), (y, updated)

            (_, (y, updated)), (g_params, g_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
            return y, updated, g_params, g_x

        y, updated, g_params, g_x = jax.device_get(run_once(forward_and_grads, params, x))
    stat_rows = {row.torch_key for row in port.param_table(config) if row.collection != "params"}
    grads = {k: v for k, v in port.flax_to_torch({"params": g_params, **state}, config).items() if k not in stat_rows}
    stats = {k: v for k, v in port.flax_to_torch({"params": params, **updated}, config).items()
             if k in stat_rows} if train else {}
    return Outputs(to_mdnc_output(np.asarray(y)), to_mdnc_output(np.asarray(g_x)), grads, stats)


def torch_outputs(state_dict: Mapping, config, x_mdnc: np.ndarray, cotangent: np.ndarray, dtype: str,
                  device: str = "cpu", autocast: str | None = None, train: bool = False) -> Outputs:
    """Run the PyTorch reference (eval mode, or train mode with ``train=True``) on an MDNC-layout input.

    ``autocast="bfloat16"`` runs the forward under ``torch.autocast`` (mixed precision).
    """
    import torch

    import torch_ref

    torch_dtype = getattr(torch, dtype)
    net = torch_ref.from_config(coerce_config(config)).to(device=device, dtype=torch_dtype).train(train)
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state_dict.items()}, strict=True)
    x = torch.tensor(np.asarray(x_mdnc), dtype=torch_dtype, device=device, requires_grad=True)
    with torch.autocast(torch.device(device).type, getattr(torch, autocast or dtype), enabled=autocast is not None):
        y = net(x)
    (y.to(torch_dtype) * torch.as_tensor(cotangent, dtype=torch_dtype, device=device)).sum().backward()
    grads = {k: p.grad.detach().cpu().numpy() for k, p in net.named_parameters()}
    stats = {k: b.detach().cpu().numpy() for k, b in net.named_buffers()} if train else {}
    return Outputs(y.detach().to(torch_dtype).cpu().numpy(), x.grad.detach().cpu().numpy(), grads, stats)


@dataclasses.dataclass
class ParityRow:
    dtype: str
    quantity: str  # "output", "grad input", "grad params" (all, flattened), "grad worst param"
    abs_err: float
    rel_err: float
    tol: float
    worst: str = ""  # MDNC key of the parameter, for "grad worst param"
    basis: str = "fixed"  # how ``tol`` was chosen: TOLERANCES, or scaled by the reference's own error

    @property
    def passed(self) -> bool:
        return bool(self.rel_err <= self.tol)


def compare(ours: Outputs, ref: Outputs, dtype: str, tolerances: Mapping = TOLERANCES,
            exact: Outputs | None = None) -> list[ParityRow]:
    """Output, input-gradient and parameter-gradient errors of ``ours`` against ``ref``.

    Parameter gradients are scored twice: all tensors flattened into one vector, and the
    worst single tensor by its own scale. Some gradients are zero in exact arithmetic (a
    shortcut norm's bias feeding the next instance norm, which removes any constant), so
    their per-tensor ratio is rounding noise over rounding noise; tensors whose reference
    gradient is below ``1e4 * eps * max|grad|`` are scored only in the flattened row.

    With ``exact`` (the reference in float64), each bound is the larger of ``tolerances`` and
    REFERENCE_ERROR_FACTOR times ``ref``'s own error against ``exact``, per tensor for the
    worst-parameter row (which is then the tensor closest to its bound).
    """
    if set(ours.grads) != set(ref.grads):
        raise ValueError(f"gradient keys differ: {sorted(set(ours.grads) ^ set(ref.grads))}")
    tol = tolerances[dtype]
    keys = list(ref.grads)

    def flat(outputs: Outputs) -> np.ndarray:
        return np.concatenate([np.ravel(outputs.grads[k]) for k in keys])

    def row(quantity: str, a, b, b_exact, kind: str, worst: str = "") -> ParityRow:
        bound, basis = tol[kind], "fixed"
        if exact is not None and REFERENCE_ERROR_FACTOR * relative_error(b, b_exact) > bound:
            bound, basis = REFERENCE_ERROR_FACTOR * relative_error(b, b_exact), f"{REFERENCE_ERROR_FACTOR}x ref error"
        return ParityRow(dtype, quantity, _abs(a, b), relative_error(a, b), bound, worst, basis)

    def exact_of(get):
        return None if exact is None else get(exact)

    noise = 1e4 * np.finfo(dtype).eps * np.max(np.abs(flat(ref)))
    per_param = [row("grad worst param", ours.grads[k], ref.grads[k], exact_of(lambda o: o.grads[k]), "grad", k)
                 for k in keys if np.max(np.abs(ref.grads[k])) > noise]
    stats = [row("running stats", ours.stats[k], ref.stats[k], exact_of(lambda o: o.stats[k]), "grad", k)
             for k in ref.stats]
    return [
        row("output", ours.y, ref.y, exact_of(lambda o: o.y), "output"),
        row("grad input", ours.grad_x, ref.grad_x, exact_of(lambda o: o.grad_x), "grad"),
        row("grad params", flat(ours), flat(ref), exact_of(flat), "grad"),
        max(per_param, key=lambda r: r.rel_err / r.tol),
    ] + ([max(stats, key=lambda r: r.rel_err / r.tol)] if stats else [])


def _abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def check_parity(state_dict: Mapping, config, x_mdnc: np.ndarray, dtypes=("float32", "float64"), seed: int = 0,
                 train: bool = False, scaled: bool = False) -> list[ParityRow]:
    """Compare both implementations on ``x_mdnc`` for each dtype; returns one row per quantity.

    ``scaled``: float32 bounds scaled by the reference's own float32 error (see ``compare``),
    from one more reference run in float64 when float64 is not among ``dtypes``.
    """
    rng = np.random.default_rng(seed)
    config = coerce_config(config)
    cotangent = rng.normal(size=config.output_shape(x_mdnc.shape))
    refs = {dtype: torch_outputs(state_dict, config, x_mdnc, cotangent, dtype, train=train)
            for dtype in (*dtypes, *(("float64",) if scaled and "float64" not in dtypes else ()))}
    rows = []
    for dtype in dtypes:
        ours = flax_outputs(state_dict, config, x_mdnc, cotangent, dtype, train=train)
        rows += compare(ours, refs[dtype], dtype, exact=refs["float64"] if scaled and dtype != "float64" else None)
    return rows

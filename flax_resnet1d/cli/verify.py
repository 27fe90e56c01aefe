"""``flax-resnet1d verify``: prove on the spot that both implementations compute the same function
from a checkpoint (outputs and gradients, float32 and float64)."""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import memory
from ..config import MIN_FEATURE_LENGTH, input_shape
from ..errors import UsageError, input_file
from ..io import readers
from .options import add_config_argument, add_key_argument, parse_config
from .table import format_table

PARITY_DTYPES = ("float32", "float64")
# |x| beyond this: squares summed over a length reach float32's 3.4e38 (instance norm statistics)
MAX_INPUT_MAGNITUDE = 1e15


def register(subparsers: argparse._SubParsersAction) -> None:
    verify = subparsers.add_parser(
        "verify", help="check that the Flax port and the PyTorch reference agree on a checkpoint",
        description="Build both implementations from CHECKPOINT (PyTorch or Flax), run them on random inputs "
                    "(and on --input) in float32 and float64, and compare outputs and gradients (input and every "
                    "parameter) as max|a-b| and max|a-b|/max|b|. Exit 0 if all pass, 1 on a parity failure.")
    verify.add_argument("checkpoint", metavar="CHECKPOINT")
    verify.add_argument("--input", metavar="X.npy|X.npz",
                        help="also compare on this (B, C, L) array, (B, in_length) for a DecoderNet1d with in_length "
                             "(an .npz: its 'x' entry or its only array)")
    verify.add_argument("--seed", type=int, help="seed of the random input and cotangent (default: fresh, printed)")
    verify.add_argument("--batch", type=int, default=2, help="batch size of the random input (default: 2)")
    verify.add_argument("--length", type=int,
                        help=f"length of the random input (default: a power of two giving a final feature length "
                             f">= {MIN_FEATURE_LENGTH})")
    add_key_argument(verify)
    add_config_argument(verify)
    verify.set_defaults(func=run_verify)


def read_input(path: str, config: Any) -> np.ndarray:
    """An MDNC-layout input from ``.npy`` or ``.npz`` ('x' or the only entry), validated for ``config``."""
    file = Path(path)
    input_file(file, "--input")
    memory.check_array_file(file, None, "--input", UsageError)  # headers first: nothing allocated for a lying one
    try:
        loaded = np.load(file, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                loaded = _pick_array(file, loaded)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UsageError(f"--input {path}: not a .npy/.npz array file ({readers.first_line(e)})") from None
    return _validated_input(path, np.asarray(loaded), config)


def _pick_array(file: Path, archive) -> np.ndarray:
    if not all(name.endswith(".npy") for name in archive.zip.namelist()):  # e.g. a torch .pt is a zip too
        raise UsageError(f"--input {file}: not a .npy/.npz array file (a zip archive of other files)")
    names = list(archive.files)
    if "x" in names:
        return archive["x"]
    if len(names) == 1:
        return archive[names[0]]
    raise UsageError(f"--input {file}: holds {names[:10]}; name the input 'x' or keep one array")


def _validated_input(path: str, x: np.ndarray, config: Any) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise UsageError(f"--input {path}: dtype {x.dtype} is not numeric")
    try:
        config.check_input_shape(x.shape, channel_axis=1)
    except ValueError as e:
        raise UsageError(f"--input {path}: {e}") from None
    if x.shape[0] == 0:
        raise UsageError(f"--input {path}: holds no examples (shape {x.shape})")
    check_verify_memory(config, x.shape, f"verify --input {path} {x.shape}")
    if not np.isfinite(x).all():
        raise UsageError(f"--input {path}: contains NaN or Inf")
    if np.abs(x).max() > MAX_INPUT_MAGNITUDE:
        raise UsageError(f"--input {path}: values up to {np.abs(x).max():.3g} overflow float32 in the instance norms' "
                         f"squares (keep |x| <= {MAX_INPUT_MAGNITUDE:g})")
    return x.astype(np.float64)


def check_verify_memory(config: Any, shape: tuple[int, ...], what: str) -> None:
    """UsageError with the estimate if verifying on an input of ``shape`` cannot fit in memory."""
    memory.check_fits(memory.verify_bytes(config, shape), what, memory.host_available(), UsageError,
                      "use a smaller --batch or --length")


def run_verify(args: argparse.Namespace) -> int:
    try:
        import torch_ref  # noqa: F401  (the reference side of the comparison)
    except ImportError:
        raise UsageError("verify runs the PyTorch reference: pip install 'flax-resnet1d[torch]'") from None
    from tqdm import tqdm

    from ..parity import REFERENCE_ERROR_FACTOR, check_parity

    for name in ("batch", "length"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed must be in 0..2**32-1, got {args.seed}")
    config = parse_config(args.config) if args.config else None
    state_dict, config = readers.load_checkpoint(args.checkpoint, args.key, config=config)
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    shape = input_shape(config, args.batch, args.length)
    try:
        config.check_input_shape(shape, channel_axis=1)
    except ValueError as e:
        raise UsageError(f"--length {shape[-1]}: {e}") from None
    check_verify_memory(config, shape, f"verify --batch {shape[0]}" + ("" if len(shape) == 2 else f" --length {shape[-1]}"))
    inputs = [(f"random {shape}", np.random.default_rng(seed).standard_normal(shape))]
    if args.input:
        x = read_input(args.input, config)
        inputs.append((f"{Path(args.input).name} {x.shape}", x))

    print(f"{args.checkpoint}: {config.arch} {json.dumps(config.to_dict())}, "
          f"{sum(a.size for a in state_dict.values()):,} parameters; seed {seed}")
    rows = []
    with tqdm(total=len(inputs), desc="verify", unit="input", file=sys.stderr, disable=None) as progress:
        for label, x in inputs:
            rows += [(label, row) for row in check_parity(state_dict, config, x, PARITY_DTYPES, seed, scaled=True)]
            progress.update()
    print(format_table(("input", "dtype", "quantity", "max abs err", "max rel err", "tolerance", "tolerance from",
                        "result"),
                       [(label, r.dtype, r.quantity + (f" ({r.worst})" if r.worst else ""), f"{r.abs_err:.2e}",
                         f"{r.rel_err:.2e}", f"{r.tol:.1e}", r.basis, "PASS" if r.passed else "FAIL")
                        for label, r in rows]))
    failed = sum(not r.passed for _, r in rows)
    print(f"FAIL: {failed} of {len(rows)} comparisons exceed the tolerance" if failed
          else f"PASS: all {len(rows)} comparisons within tolerance")
    print(f"tolerance from: fixed = {_fixed_bounds()}; {REFERENCE_ERROR_FACTOR}x ref error = {REFERENCE_ERROR_FACTOR} "
          "times PyTorch's own float32 error against its float64 result, where that is larger (an ill-conditioned "
          "network: the float64 rows prove the port)")
    return 1 if failed else 0


def _fixed_bounds() -> str:
    from ..parity import TOLERANCES

    return ", ".join(f"{dtype} {t['output']:g} outputs / {t['grad']:g} gradients" for dtype, t in TOLERANCES.items())


"""``flax-resnet1d convert | verify | summary``: move checkpoints between PyTorch and Flax, and
prove on the spot that both implementations compute the same function from them."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from . import checkpoint_io, port
from .cli import UsageError
from .config import FAMILY_PRESETS, EncoderConfig, config_from_dict, preset_config

PARITY_DTYPES = ("float32", "float64")
# |x| beyond this: squares summed over a length reach float32's 3.4e38 (instance norm statistics)
MAX_INPUT_MAGNITUDE = 1e15
MIN_FEATURE_LENGTH = 6  # instance norm over very short final maps is ill-conditioned (as in the parity suite)


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert", help="convert a checkpoint: PyTorch (.pt/.pth/.safetensors) <-> Flax (Orbax dir/.msgpack)",
        description="Convert a checkpoint of MDNC's 1D family (EncoderNet1d, DecoderNet1d, AE1d, UNet1d, blocks). "
                    "SRC and DST formats follow their names: .pt/.pth and "
                    ".safetensors are MDNC state dicts, .msgpack is a flax.serialization file, any other name an "
                    "Orbax checkpoint directory. The config is written beside Flax outputs (config.json).")
    convert.add_argument("src", metavar="SRC", help="checkpoint to read")
    convert.add_argument("dst", metavar="DST", help="checkpoint to write (atomically)")
    _add_config_argument(convert)
    _add_key_argument(convert)
    convert.add_argument("--dtype", choices=checkpoint_io.CAST_DTYPES,
                         help="cast the weights on export (default: as read; float16/bfloat16 are read as float32)")
    convert.add_argument("--overwrite", action="store_true",
                         help="replace DST if it exists and flax-resnet1d wrote it (refused otherwise)")
    convert.add_argument("--allow-nonfinite", action="store_true", help="accept NaN/Inf weights")
    convert.set_defaults(func=run_convert)

    verify = subparsers.add_parser(
        "verify", help="check that the Flax port and the PyTorch reference agree on a checkpoint",
        description="Build both implementations from CHECKPOINT (PyTorch or Flax), run them on random inputs "
                    "(and on --input) in float32 and float64, and compare outputs and gradients (input and every "
                    "parameter) as max|a-b| and max|a-b|/max|b|. Exit 0 if all pass, 1 on a parity failure.")
    verify.add_argument("checkpoint", metavar="CHECKPOINT")
    verify.add_argument("--input", metavar="X.npy|X.npz",
                        help="also compare on this (B, C, L) array (an .npz: its 'x' entry or its only array)")
    verify.add_argument("--seed", type=int, help="seed of the random input and cotangent (default: fresh, printed)")
    verify.add_argument("--batch", type=int, default=2, help="batch size of the random input (default: 2)")
    verify.add_argument("--length", type=int,
                        help=f"length of the random input (default: a power of two giving a final feature length "
                             f">= {MIN_FEATURE_LENGTH})")
    _add_key_argument(verify)
    _add_config_argument(verify)
    verify.set_defaults(func=run_verify)

    summary = subparsers.add_parser(
        "summary", help="per-layer table of a checkpoint's network or of a preset",
        description="Print the per-layer table (output shape, parameter count) and totals.")
    summary.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?")
    summary.add_argument("--preset", choices=sorted(FAMILY_PRESETS), help="a preset instead of a checkpoint")
    summary.add_argument("--out-length", type=int, default=2,
                         help="with --preset: an encnet's output vector length, 0 for the feature map (default: 2); "
                              "a decnet's out_size")
    summary.add_argument("--input-shape", metavar="C,L",
                         help="input channels and length (default: the network's in_planes and a power-of-two length)")
    _add_key_argument(summary)
    _add_config_argument(summary)
    summary.set_defaults(func=run_summary)


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="JSON",
                        help="constructor arguments as JSON text or a .json file, with 'arch' (the MDNC class; "
                             "default EncoderNet1d); checked against the weights (default: inferred from them, "
                             "which a DecoderNet1d's out_size and a block's stride/padding need)")


def _add_key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", help="entry of a PyTorch training checkpoint dict holding the state dict "
                                      "(default: the one entry that is an EncoderNet1d state dict)")


# -- convert -------------------------------------------------------------------------------
def run_convert(args: argparse.Namespace) -> int:
    src, dst = Path(args.src), Path(args.dst)
    out_format = checkpoint_io.output_format(dst)
    if dst.exists() and src.resolve() == dst.resolve():
        raise UsageError(f"{dst}: SRC and DST are the same")
    checkpoint_io.check_output(dst, args.overwrite, inputs=(src,))  # before reading: fail fast
    if out_format == "msgpack":
        checkpoint_io.check_output(checkpoint_io.msgpack_config_path(dst), args.overwrite,
                                   checkpoint_io.OWN_OUTPUTS["config"], inputs=(src,))
    config = parse_config(args.config) if args.config else None
    start = time.perf_counter()
    state_dict, config = checkpoint_io.load_checkpoint(src, args.key, args.allow_nonfinite, config)
    state_dict = checkpoint_io.cast_arrays(state_dict, args.dtype)
    if out_format in checkpoint_io.TORCH_FORMATS:
        checkpoint_io.write_state_dict(dst, state_dict, overwrite=args.overwrite, config=config)
    else:
        checkpoint_io.save_flax(dst, port.torch_to_flax(state_dict, config), config, overwrite=args.overwrite)
    dtypes = ", ".join(sorted({a.dtype.name for a in state_dict.values()}))
    count = sum(a.size for a in state_dict.values())
    print(f"wrote {dst} ({checkpoint_io.FORMAT_NAMES[out_format]}, {count:,} parameters, {dtypes}) "
          f"in {time.perf_counter() - start:.2f} s")
    print(f"config: {json.dumps(config.to_dict())}")
    return 0


def parse_config(text: str) -> EncoderConfig:
    """``--config``: JSON text, or the path of a JSON file (a Flax checkpoint's config.json works);
    its ``arch`` field names the architecture (absent: EncoderNet1d)."""
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise UsageError(f"--config {text}: neither JSON text nor an existing .json file")
        text = path.read_text()
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--config: invalid JSON ({e})") from None
    if not isinstance(fields, dict):
        raise UsageError(f"--config: expected a JSON object of constructor arguments, got {type(fields).__name__}")
    try:
        return config_from_dict(fields)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--config: {e}") from None


# -- verify --------------------------------------------------------------------------------
def default_length(config: EncoderConfig) -> int:
    """Input length for random inputs and summaries: the smallest power of two (else any
    length) giving a final feature length >= MIN_FEATURE_LENGTH."""
    start = config.min_length()
    if start is None:
        raise UsageError("no input length works for this configuration")
    for length in itertools.chain((2 ** p for p in range(4, 21)), range(start, 1 << 16)):
        try:
            if config.output_length(length) >= MIN_FEATURE_LENGTH:
                return length
        except ValueError:
            continue
    raise UsageError(f"no input length below {1 << 16} gives a final feature length >= {MIN_FEATURE_LENGTH}; "
                     "pass --length")


def read_input(path: str, config: EncoderConfig) -> np.ndarray:
    """A (B, C, L) array from ``.npy`` or ``.npz`` ('x' or the only entry), validated for ``config``."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--input {path}: " + ("is a directory" if file.is_dir() else "no such file"))
    try:
        loaded = np.load(file, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                loaded = _pick_array(file, loaded)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UsageError(f"--input {path}: not a .npy/.npz array file ({checkpoint_io._first_line(e)})") from None
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


def _validated_input(path: str, x: np.ndarray, config: EncoderConfig) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise UsageError(f"--input {path}: dtype {x.dtype} is not numeric")
    try:
        config.check_input_shape(x.shape, channel_axis=1)
    except ValueError as e:
        raise UsageError(f"--input {path}: {e}") from None
    if not np.isfinite(x).all():
        raise UsageError(f"--input {path}: contains NaN or Inf")
    if x.shape[0] == 0:
        raise UsageError(f"--input {path}: holds no examples (shape {x.shape})")
    if np.abs(x).max() > MAX_INPUT_MAGNITUDE:
        raise UsageError(f"--input {path}: values up to {np.abs(x).max():.3g} overflow float32 in the instance norms' "
                         f"squares (keep |x| <= {MAX_INPUT_MAGNITUDE:g})")
    return x.astype(np.float64)


def run_verify(args: argparse.Namespace) -> int:
    try:
        import torch_ref  # noqa: F401  (the reference side of the comparison)
    except ImportError:
        raise UsageError("verify runs the PyTorch reference: pip install 'flax-resnet1d[torch]'") from None
    from tqdm import tqdm

    from .parity import REFERENCE_ERROR_FACTOR, check_parity

    for name in ("batch", "length"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed must be in 0..2**32-1, got {args.seed}")
    config = parse_config(args.config) if args.config else None
    state_dict, config = checkpoint_io.load_checkpoint(args.checkpoint, args.key, config=config)
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    shape = input_shape(config, args.batch, args.length)
    try:
        config.check_input_shape(shape, channel_axis=1)
    except ValueError as e:
        raise UsageError(f"--length {shape[-1]}: {e}") from None
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
    from .parity import TOLERANCES

    return ", ".join(f"{dtype} {t['output']:g} outputs / {t['grad']:g} gradients" for dtype, t in TOLERANCES.items())


def input_shape(config, batch: int, length: int | None) -> tuple[int, ...]:
    """MDNC-layout input shape: (B, C, L), or (B, in_length) for a decoder's vector input."""
    if getattr(config, "is_vector_input", False):
        return (batch, config.in_length)
    return (batch, config.in_channels, length or default_length(config))


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Plain text, columns aligned: easy to read in a terminal and to paste."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, tuple("-" * w for w in widths), *rows]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


# -- summary -------------------------------------------------------------------------------
def parse_input_shape(text: str) -> tuple[int, int]:
    try:
        channels, length = (int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--input-shape {text!r}: expected C,L (two integers, e.g. 3,128)") from None
    if channels < 1 or length < 1:
        raise UsageError(f"--input-shape {text!r}: C and L must be positive")
    return channels, length


def preset_arguments(name: str, shape: tuple[int, int] | None, out_length: int) -> dict:
    """--preset's arguments: in_planes from --input-shape; encnet out_length, decnet out_size from --out-length."""
    arch = FAMILY_PRESETS[name][0]
    if arch == "DecoderNet1d":
        return {"out_size": out_length}
    kwargs = {"in_planes": shape[0] if shape else 1}
    return {**kwargs, "out_length": out_length} if arch == "EncoderNet1d" else kwargs


def run_summary(args: argparse.Namespace) -> int:
    from .model import from_config
    from .summary import summary

    if (args.checkpoint is None) == (args.preset is None):
        raise UsageError("give either a CHECKPOINT or --preset NAME")
    shape = parse_input_shape(args.input_shape) if args.input_shape else None
    if args.preset:
        config = preset_config(args.preset, **preset_arguments(args.preset, shape, args.out_length))
    else:
        config = parse_config(args.config) if args.config else None
        _, config = checkpoint_io.load_checkpoint(args.checkpoint, args.key, config=config)
    shape = shape or input_shape(config, 1, None)[1:]
    try:
        config.check_input_shape((1, *shape), channel_axis=1)
    except ValueError as e:
        raise UsageError(f"--input-shape {','.join(map(str, shape))}: {e}") from None
    print(summary(from_config(config), shape))
    return 0

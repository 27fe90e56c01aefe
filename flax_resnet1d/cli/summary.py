"""``flax-resnet1d summary``: the per-layer table of a checkpoint's network, a run's or a preset's."""

from __future__ import annotations

import argparse

from ..config import FAMILY_PRESETS, input_shape, preset_config
from ..errors import UsageError
from ..io import readers
from .options import add_config_argument, add_key_argument, parse_config


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = subparsers.add_parser(
        "summary", help="per-layer table of a checkpoint's network, a run's or a preset's",
        description="Print the per-layer table (output shape, parameter count) and totals.")
    summary.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?",
                         help="a checkpoint, or a run directory of train (its network, at the length it trains on)")
    summary.add_argument("--preset", choices=sorted(FAMILY_PRESETS), help="a preset instead of a checkpoint")
    summary.add_argument("--out-length", type=int, default=2,
                         help="with --preset: an encnet's output vector length, 0 for the feature map (default: 2); "
                              "a decnet's out_size")
    summary.add_argument("--input-shape", metavar="C,L",
                         help="input channels and length (default: the network's input channels and a power-of-two "
                              "length; a DecoderNet1d with in_length takes a vector of that length)")
    add_key_argument(summary)
    add_config_argument(summary)
    summary.set_defaults(func=run_summary)


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
    from ..model import from_config
    from ..summary import summary

    if (args.checkpoint is None) == (args.preset is None):
        raise UsageError("give either a CHECKPOINT or --preset NAME")
    shape = parse_input_shape(args.input_shape) if args.input_shape else None
    if args.preset:
        config, length = preset_config(args.preset, **preset_arguments(args.preset, shape, args.out_length)), None
    else:
        config, length = _network_of(args)
    shape = shape or input_shape(config, 1, length)[1:]
    try:
        config.check_input_shape((1, *shape), channel_axis=1)
    except ValueError as e:
        raise UsageError(f"--input-shape {','.join(map(str, shape))}: {e}") from None
    print(summary(from_config(config), shape))
    return 0


def _network_of(args: argparse.Namespace) -> tuple:
    """CHECKPOINT's family config, and the length to show it at by default: a run directory's is
    the length its network trains on (None: the network's own default)."""
    from ..training import run_files  # training's imports, not needed for a preset

    if not run_files.is_run_directory(args.checkpoint):
        config = parse_config(args.config) if args.config else None
        return readers.load_checkpoint(args.checkpoint, args.key, config=config)[1], None
    if args.config or args.key:
        raise UsageError(f"{args.checkpoint} is a run directory: its config.json gives the network, "
                         "so --config and --key do not apply")
    run = run_files.load_config(args.checkpoint)
    return run.model, run.data.length

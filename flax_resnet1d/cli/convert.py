"""``flax-resnet1d convert``: move a checkpoint between PyTorch and Flax formats."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .. import port
from ..errors import UsageError
from ..io import atomic, formats, readers, writers
from .options import add_config_argument, add_key_argument, parse_config


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert", help="convert a checkpoint: PyTorch (.pt/.pth/.safetensors) <-> Flax (Orbax dir/.msgpack)",
        description="Convert a checkpoint of MDNC's 1D family (EncoderNet1d, DecoderNet1d, AE1d, UNet1d, blocks). "
                    "SRC and DST formats follow their names: .pt/.pth and "
                    ".safetensors are MDNC state dicts, .msgpack is a flax.serialization file, any other name an "
                    "Orbax checkpoint directory. The config is written beside Flax outputs (config.json).")
    convert.add_argument("src", metavar="SRC", help="checkpoint to read")
    convert.add_argument("dst", metavar="DST", help="checkpoint to write (atomically)")
    add_config_argument(convert)
    add_key_argument(convert)
    convert.add_argument("--dtype", choices=writers.CAST_DTYPES,
                         help="cast the weights on export (default: as read; float16/bfloat16 are read as float32)")
    convert.add_argument("--overwrite", action="store_true",
                         help="replace DST if it exists and flax-resnet1d wrote it (refused otherwise)")
    convert.add_argument("--allow-nonfinite", action="store_true", help="accept NaN/Inf weights")
    convert.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    src, dst = Path(args.src), Path(args.dst)
    out_format = formats.output_format(dst)
    if dst.exists() and src.resolve() == dst.resolve():
        raise UsageError(f"{dst}: SRC and DST are the same")
    atomic.check_output(dst, args.overwrite, inputs=(src,))  # before reading: fail fast
    if out_format == "msgpack":
        atomic.check_output(formats.msgpack_config_path(dst), args.overwrite,
                                   atomic.OWN_OUTPUTS["config"], inputs=(src,))
    config = parse_config(args.config) if args.config else None
    start = time.perf_counter()
    state_dict, config = readers.load_checkpoint(src, args.key, args.allow_nonfinite, config)
    state_dict = writers.cast_arrays(state_dict, args.dtype)
    if out_format in formats.TORCH_FORMATS:
        writers.write_state_dict(dst, state_dict, overwrite=args.overwrite, config=config)
    else:
        writers.save_flax(dst, port.torch_to_flax(state_dict, config), config, overwrite=args.overwrite)
    dtypes = ", ".join(sorted({a.dtype.name for a in state_dict.values()}))
    count = sum(a.size for a in state_dict.values())
    print(f"wrote {dst} ({formats.FORMAT_NAMES[out_format]}, {count:,} parameters, {dtypes}) "
          f"in {time.perf_counter() - start:.2f} s")
    print(f"config: {json.dumps(config.to_dict())}")
    return 0


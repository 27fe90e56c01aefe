"""``flax-resnet1d predict``: predictions of a run, a checkpoint or an ensemble on new series."""

from __future__ import annotations

import argparse
import time

from ..training import data
from .options import add_config_argument, add_key_argument, parse_config

INPUT_HELP = (".npz (array x), .npy, .ts (the UCR/UEA archive's format), .tsv (the UCR 2018 archive's: a label, "
              "ignored, then the series, a line each) or .csv (one series a row); "
              "(N, C, L) or (N, L, C) as --layout says, (N, L) for one channel")
LAYOUT_HELP = "axes of X and of output signals (default: those of the data the run trained on, else NCL)"


def add_model_arguments(parser: argparse.ArgumentParser, several: bool) -> None:
    """MODEL(s) and what reads a bare checkpoint: --config, --key, --normalize."""
    parser.add_argument("models", metavar="MODEL", nargs="+" if several else None,
                        help="a run directory (applies its own preprocessing) or a checkpoint convert reads"
                             + ("; several: an ensemble, their outputs averaged" if several else ""))
    add_config_argument(parser)
    add_key_argument(parser)
    parser.add_argument("--normalize", choices=("series", "none"),
                        help="a bare checkpoint's input normalization (default none; a run uses its own)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="predict classes, values or signals for new series",
        description="Run trained networks on the series of --input and write their predictions to --out "
                    "(format by name): a classifier's labels (the data set's class names when the run recorded "
                    "them) and class probabilities, a regression's values, another network's signals in the "
                    "input's layout. Several MODELs: an ensemble whose outputs are averaged.")
    add_model_arguments(p, several=True)
    p.add_argument("--input", required=True, metavar="X", help=INPUT_HELP)
    p.add_argument("--out", required=True, metavar="PRED", help=".npz or .csv, written atomically")
    p.add_argument("--layout", choices=data.LAYOUTS, help=LAYOUT_HELP)
    p.add_argument("--task", choices=("classification", "regression"),
                   help="an EncoderNet1d with out_length: class probabilities (default) or raw values")
    p.add_argument("--batch-size", type=int, default=256, help="series per batch (bounds the memory)")
    p.add_argument("--overwrite", action="store_true", help="replace PRED if it is a prediction file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)


def load_predictor(args: argparse.Namespace):
    """The Predictor of MODEL(s) with --config, --key, --normalize, --task and --layout."""
    from ..inference.predictor import Predictor

    models = args.models if isinstance(args.models, list) else [args.models]
    config = parse_config(args.config) if args.config else None
    return Predictor.load(*models, config=config, key=args.key, normalize=args.normalize,
                          task=getattr(args, "task", None), layout=args.layout)


def read_series(path: str, predictor):
    """--input's series as ``predictor`` takes them (its layout; a list: channels-last series)."""
    from ..inference import inputs

    member = predictor.members[0]
    x = inputs.read_inputs(path, predictor.layout, vector=member.config.in_length if member.is_vector_input else None)
    if not isinstance(x, list) and x.ndim == 3 and predictor.layout == "NCL":
        x = x.swapaxes(1, 2)  # read_inputs gives channels-last series
    return x


def run_predict(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..inference import results

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    results.output_suffix(args.out)  # before loading anything
    start = time.perf_counter()
    predictor = load_predictor(args)
    member = predictor.members[0]
    results.check_prediction_output(args.out, args.overwrite, predictor.task, member.config.out_channels)
    x = read_series(args.input, predictor)
    outputs = predictor.outputs(x, args.batch_size, progress=None if not args.no_progress else False,
                                source=args.input)
    labels = predictor.labels(outputs) if predictor.task == "classification" else None
    results.write_predictions(args.out, predictor.task, outputs, labels, predictor.classes, args.overwrite)
    what = {"classification": "labels and class probabilities", "regression": "values", "signal": "signals"}
    print(f"wrote {args.out}: {what[predictor.task]} of {len(outputs)} series from {len(predictor.members)} "
          f"model{'s' if len(predictor.members) > 1 else ''} in {time.perf_counter() - start:.2f} s")
    return 0

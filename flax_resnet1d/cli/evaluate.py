"""``flax-resnet1d eval``: loss and accuracy of a run's newest checkpoint."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from ..config import EncoderConfig
from ..errors import DataError
from ..training import data
from .table import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    e = subparsers.add_parser("eval", help="evaluate a run's newest checkpoint",
                              description="Loss and accuracy of RUN_DIR's newest readable checkpoint on its data "
                                          "set's train and test splits, or on --data.")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--data", metavar="FILE.npz", help="evaluate on these arrays (x, y) instead")
    e.add_argument("--layout", choices=data.LAYOUTS, default="NCL", help="axes of --data's x")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(func=run_eval)


def check_takes(model: EncoderConfig, x: np.ndarray, path: str, layout: str) -> None:
    """DataError unless the run's network takes ``x`` (N, L, C): its channels, and its length
    (shorter series are zero-padded to the network's minimum, as in training)."""
    if x.shape[2] != model.in_planes:
        raise DataError(f"--data {path}: x has {x.shape[2]} channels (layout {layout}) but the run's network takes "
                        f"{model.in_planes}")
    try:
        model.feature_length(max(x.shape[1], model.min_length() or 0))
    except ValueError as e:
        raise DataError(f"--data {path}: {e}") from None


def run_eval(args: argparse.Namespace) -> int:
    from ..training import loop, run_files, steps

    # every input checked (config, data, memory) before the checkpoint is read
    config = run_files.load_config(args.run_dir)
    dataset = loop.model_inputs(data.load(config.data), config.model)
    if args.data:  # normalized as the run's data (with its training statistics for "channel")
        x, y = data.read_arrays(args.data, args.layout, "--data")
        check_takes(config.model, x, args.data, args.layout)
        data.check_labels(y, config.model.out_length, f"{args.data}: --data label")
        name = os.path.basename(args.data)
        splits = {name: (data.pad_end(dataset.normalization(x).astype(np.float32), config.model.min_length() or 0), y)}
    else:
        name = dataset.name
        splits = {"train": (dataset.x_train, dataset.y_train), "test": (dataset.x_test, dataset.y_test)}
    steps.check_memory(config, max(x.shape[1] for x, _ in splits.values()), training=False)
    config, state, epoch = run_files.restore_run(args.run_dir)
    results = loop.evaluate_splits(config, state, splits)
    if args.json:
        print(json.dumps({"run_dir": args.run_dir, "data": name, "epoch": epoch,
                          **{split: {"loss": r.loss, "accuracy": r.accuracy, "examples": r.count}
                             for split, r in results.items()}}))
        return 0
    print(f"{args.run_dir}: {name}, checkpoint of epoch {epoch}/{config.epochs}")
    print(format_table(("split", "examples", "loss", "accuracy"),
                       [(split, str(r.count), f"{r.loss:.4f}", f"{r.accuracy:.4f}") for split, r in results.items()]))
    return 0


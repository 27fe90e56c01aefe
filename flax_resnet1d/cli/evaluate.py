"""``flax-resnet1d eval``: loss and the task's metrics of a run's newest checkpoint."""

from __future__ import annotations

import argparse
import json
import os

from ..errors import DataError, TrainingError
from ..training import data
from .table import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    e = subparsers.add_parser("eval", help="evaluate a run's newest checkpoint",
                              description="Loss and the task's metrics (classify: accuracy; regress: RMSE, MAE "
                                          "and R^2 in the targets' units; signal: SNR in dB and RMSE) of RUN_DIR's "
                                          "newest readable checkpoint on its data set's train and test splits, or "
                                          "on --data.")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--data", metavar="FILE.npz|FILE.tsv",
                   help="evaluate on these arrays (x, and y as the run's) instead, or a classifier on a UCR .tsv")
    e.add_argument("--layout", choices=data.LAYOUTS, default="NCL", help="axes of --data's x")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(func=run_eval)


def check_takes(config, dataset, path: str, layout: str) -> None:
    """DataError unless the run's network takes ``dataset``'s inputs (channels, length, as
    training pads them) and outputs its targets' shape."""
    from ..training import loop

    if not dataset.is_vector and dataset.in_planes != config.model.in_channels:
        raise DataError(f"--data {path}: x has {dataset.in_planes} channels (layout {layout}) but the run's network "
                        f"takes {config.model.in_channels}")
    try:
        loop.check_model_takes(config, dataset)
    except TrainingError as e:
        raise DataError(f"--data {path} (layout {layout}): {e}") from None


def run_eval(args: argparse.Namespace) -> int:
    from ..training import loop, run_files, steps

    # every input checked (config, data, memory) before the checkpoint is read
    config = run_files.load_config(args.run_dir)
    dataset = loop.model_inputs(data.load(config.data), config.model)
    if args.data:
        name = os.path.basename(args.data)
        x, y = data.load_like(dataset, args.data, args.layout, config.data.max_length)
        padded = data.Dataset(name, x, y, x, y, dataset.classes, task=dataset.task)  # as the run's inputs
        padded = loop.model_inputs(padded, config.model)
        check_takes(config, padded, args.data, args.layout)
        splits = {name: (padded.x_train, y)}
    else:
        name = dataset.name
        splits = {"train": (dataset.x_train, dataset.y_train), "test": (dataset.x_test, dataset.y_test)}
    steps.check_memory(config, max(x.shape[1] for x, _ in splits.values()), training=False)
    config, state, epoch = run_files.restore_run(args.run_dir)
    results = loop.evaluate_splits(config, state, splits, target_scale=dataset.target_scale)
    if args.json:
        print(json.dumps({"run_dir": args.run_dir, "data": name, "epoch": epoch, "task": config.task,
                          **{split: {"loss": r.loss, **r.metrics, "examples": r.count}
                             for split, r in results.items()}}))
        return 0
    metrics = list(next(iter(results.values())).metrics)
    print(f"{args.run_dir}: {name} ({config.task}), checkpoint of epoch {epoch}/{config.epochs}")
    print(format_table(("split", "examples", "loss", *metrics),
                       [(split, str(r.count), f"{r.loss:.4g}", *(f"{r.metrics[m]:.4f}" for m in metrics))
                        for split, r in results.items()]))
    return 0


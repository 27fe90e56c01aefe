"""Test accuracy on the UCR/UEA sets shipped in aeon, next to the published ResNet results.

    python benchmarks/accuracy.py [--datasets GunPoint ArrowHead ...] [--seeds 0 1 2]

For each data set: train with ``flax_resnet1d.train.fit`` (the code path of ``flax-resnet1d
train``) once per seed, and report the test accuracy of the last epoch (no model selection
on the test set) as mean +- std (population) over the seeds, with the training time per run.
Writes ``benchmarks/results/accuracy.json``, ``accuracy.md`` and ``accuracy.png``.

The published column is ResNet of Ismail Fawaz et al. 2019, "Deep learning for time series
classification: a review" (DMKD 33:917-963), from its companion repository hfawaz/dl-4-tsc
(commit eb2953e): results/results-uea-avg-std.csv (UCR 2015 archive) and
results/results-mts-avg-std.csv (Baydogan's MTS archive), mean (std) of 10 runs. That ResNet
is 3 blocks (64/128/128 filters, kernels 8/5/3, BatchNorm, no down-sampling) trained 1500
epochs with Adam (ReduceLROnPlateau), keeping the weights of the lowest *training* loss.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import jax
import numpy as np

from flax_resnet1d import data, train
from flax_resnet1d.commands_train import DEFAULT_MODEL
from flax_resnet1d.config import EncoderConfig

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# Published ResNet test accuracy, % mean (std) over 10 runs; None: not in the 2019 review.
PUBLISHED = {
    "GunPoint": (99.1, 0.7),  # "Gun_Point" in the UCR 2015 archive
    "ArrowHead": (84.5, 1.2),
    "ItalyPowerDemand": (96.3, 0.4),
    "OSULeaf": (97.9, 0.8),
    "ACSF1": None,  # UCR 2018 addition
    "PickupGestureWiimoteZ": None,  # UCR 2018 addition
    "BasicMotions": None,  # UEA 2018 multivariate archive
    "JapaneseVowels": (99.2, 0.3),  # Baydogan's MTS archive (same 270/370 split)
}

# One network for every set, the `flax-resnet1d train` default: 3 stages (32/64/128 channels)
# of one bottleneck block, kernel 9. Epochs per set are what fits this 2-core machine (shared
# with other jobs) in minutes; the published runs take 1500 epochs.
MODEL = DEFAULT_MODEL
EPOCHS = {"GunPoint": 40, "ArrowHead": 100, "ItalyPowerDemand": 40, "OSULeaf": 100, "ACSF1": 60,
          "PickupGestureWiimoteZ": 100, "BasicMotions": 40, "JapaneseVowels": 40}
BATCH_SIZE = 16
LR = 1e-3


def run(name: str, seeds: list[int], scratch: str) -> dict:
    dataset = data.load_archive(name)
    model = EncoderConfig(**MODEL, in_planes=dataset.in_planes, out_length=dataset.num_classes)
    runs = []
    for seed in seeds:
        config = train.TrainConfig(model, data.DataSpec(name), epochs=EPOCHS[name], batch_size=BATCH_SIZE, lr=LR,
                                   schedule="cosine", seed=seed, ckpt_every=EPOCHS[name], keep=1)
        run_dir = os.path.join(scratch, f"{name}-{seed}")
        start = time.perf_counter()
        result = train.fit(config, dataset, run_dir, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        last = result.history[-1]
        runs.append({"seed": seed, "test_accuracy": last["test_accuracy"], "train_accuracy": last["train_accuracy"],
                     "final_train_loss": last["train_loss"], "seconds": round(seconds, 1),
                     "compile_seconds": round(result.compile_seconds, 1),
                     "step_ms_median": float(np.median([h["step_time_ms"] for h in result.history])),
                     "history": result.history})
        print(f"{name} seed {seed}: test accuracy {100 * last['test_accuracy']:.1f}% in {seconds:.0f} s "
              f"(compile {result.compile_seconds:.0f} s)", flush=True)
        if seed == seeds[0]:
            shutil.copy(os.path.join(run_dir, train.CURVE_FILE), os.path.join(RESULTS, f"accuracy-{name}.png"))
    accuracies = 100 * np.array([r["test_accuracy"] for r in runs])
    return {"dataset": name, "train": len(dataset.y_train), "test": len(dataset.y_test),
            "length": dataset.length, "channels": dataset.in_planes, "classes": dataset.num_classes,
            "normalize": dataset.normalization.how,
            "epochs": EPOCHS[name], "mean": float(accuracies.mean()), "std": float(accuracies.std()),
            "published": PUBLISHED[name], "seconds_per_run": float(np.mean([r["seconds"] for r in runs])),
            "runs": runs}


def markdown(results: list[dict], meta: dict) -> str:
    lines = [f"Test accuracy (%), last epoch, mean +- std over seeds {meta['seeds']}; {meta['machine']}.", "",
             "| data set | train/test | length x channels | classes | normalization | epochs | ours | "
             "published ResNet | time per run (s) | compile (s) | ms/step |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        published = "n/a" if r["published"] is None else f"{r['published'][0]:.1f} +- {r['published'][1]:.1f}"
        lines.append(f"| {r['dataset']} | {r['train']}/{r['test']} | {r['length']} x {r['channels']} | "
                     f"{r['classes']} | {r['normalize']} | {r['epochs']} | {r['mean']:.1f} +- {r['std']:.1f} | "
                     f"{published} | "
                     f"{r['seconds_per_run']:.0f} | {np.mean([x['compile_seconds'] for x in r['runs']]):.0f} | "
                     f"{np.mean([x['step_ms_median'] for x in r['runs']]):.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["dataset"] for r in results]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(x - 0.2, [r["mean"] for r in results], 0.4, yerr=[r["std"] for r in results], capsize=3,
           label="flax-resnet1d (3 seeds, minutes on 2 CPU cores)")
    published = [r["published"] for r in results]
    ax.bar(x + 0.2, [p[0] if p else 0 for p in published], 0.4, yerr=[p[1] if p else 0 for p in published],
           capsize=3, label="ResNet, Ismail Fawaz et al. 2019 (10 runs, 1500 epochs)")
    for i, p in enumerate(published):
        if p is None:
            ax.text(x[i] + 0.2, 2, "n/a", ha="center", fontsize=8)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set(ylabel="test accuracy (%)", ylim=(0, 105))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(data.ARCHIVE_DATASETS), choices=data.ARCHIVE_DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the JSON")
    args = parser.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "accuracy.json")
    previous = {}
    if os.path.exists(path):  # keep data sets measured earlier and not rerun now
        with open(path) as f:
            previous = {r["dataset"]: r for r in json.load(f)["results"]}
    with tempfile.TemporaryDirectory() as scratch:
        for name in [] if args.report_only else args.datasets:
            previous[name] = run(name, args.seeds, scratch)
    results = [previous[name] for name in data.ARCHIVE_DATASETS if name in previous]
    meta = {"machine": f"{cpu_name()}, {os.cpu_count()} cores (shared with other jobs)",
            "jax": jax.__version__, "seeds": args.seeds, "model": MODEL, "batch_size": BATCH_SIZE, "lr": LR,
            "optimizer": "adam", "schedule": "cosine"}
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    with open(os.path.join(RESULTS, "accuracy.md"), "w") as f:
        f.write(markdown(results, meta))
    plot(results, os.path.join(RESULTS, "accuracy.png"))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()

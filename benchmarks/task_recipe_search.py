"""The regression and signal recipes' study, on training data only: each set's training split
loses a fixed 25% holdout (``--test-fraction 0.25`` of a ``.npz``: ``data.load_npz``'s seeded
permutation), a variant of the default recipe trains on the rest, and the holdout scores it.

- regress: Covid3Month, CardanoSentiment and tasks.py's sinusoid-frequency set; holdout RMSE in
  the targets' units, next to the holdout RMSE of the remaining series' mean;
- signal: tasks.py's denoising (GunPoint's z-normalized series, ``--noise 0.5``) with UNet1d and
  AE1d; SNR gain (dB) on the holdout series with fixed noise of std 0.5.

Appends one JSON line per run to ``benchmarks/results/task_recipe_search.jsonl`` and skips a
(set, variant, seed) already there, so an interrupted study continues; ``task_recipe_search.md``
summarizes it (mean per set and variant). docs/recipe.md quotes it.

    python benchmarks/task_recipe_search.py --sets CardanoSentiment --variants default epochs100 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from tasks import DENOISE_SET, NOISE, REGRESSION, denoised_gain, fit, rmse, sinusoid_set

from flax_resnet1d.io import atomic
from flax_resnet1d.training import data

RESULTS = Path(__file__).resolve().parent / "results" / "task_recipe_search.jsonl"
HOLDOUT = 0.25
SIGNAL_SETS = ("UNet1d", "AE1d")  # the denoising set, trained with each network
# Variants of the recipe: the options given over its defaults (600 epochs within 12000 steps, weight decay 0.1).
VARIANTS = {"default": {}, "epochs200": {"epochs": 200}, "epochs100": {"epochs": 100}, "epochs50": {"epochs": 50},
            "wd1": {"weight_decay": 1.0}, "epochs100-wd1": {"epochs": 100, "weight_decay": 1.0},
            "channel32": {"channel": 32}, "epochs100-channel32": {"epochs": 100, "channel": 32}}


def training_split(name: str, folder: str) -> dict:
    """The options that train on ``name``'s training split less the holdout (a .npz of its raw
    series and targets), normalized as ``train`` normalizes the set."""
    path = os.path.join(folder, f"{name}.npz")
    if name == "sinusoid-frequency":
        path = sinusoid_set(folder)[0]
        return {"dataset": path, "test_fraction": HOLDOUT}
    if name in SIGNAL_SETS:  # tasks.py's denoising: the archive's z-normalized series, no y (x is the target)
        np.savez(path, x=np.swapaxes(data.load_archive(DENOISE_SET).x_train, 1, 2))
        return {"dataset": path, "test_fraction": HOLDOUT, "arch": name, "noise": NOISE, "normalize": "none"}
    raw = data.load_archive(name, normalize="none")
    np.savez(path, x=np.swapaxes(raw.x_train, 1, 2), y=raw.y_train[:, 0])
    return {"dataset": path, "test_fraction": HOLDOUT, "normalize": data.default_normalization(name)}


def score(name: str, result, dataset: data.Dataset, config) -> dict:
    """The holdout's metric of a finished run, with its trivial baseline."""
    if name in SIGNAL_SETS:
        clean = dataset.x_test
        noisy = clean + NOISE * np.random.default_rng(7).standard_normal(clean.shape).astype(np.float32)
        gain, _ = denoised_gain(config, result.state, noisy, clean)
        return {"holdout_snr_gain_db": gain}
    units = dataset.target_scale.units
    y_fit, y_holdout = units(dataset.y_train), units(dataset.y_test)
    return {"holdout_rmse": result.history[-1]["test_rmse"],
            "holdout_mean_predictor_rmse": rmse(np.broadcast_to(y_fit.mean(0), y_holdout.shape), y_holdout)}


def done(path: Path) -> set:
    if not path.exists():
        return set()
    return {(r["set"], r["variant"], r["seed"]) for r in map(json.loads, path.read_text().splitlines())}


def summary(path: Path) -> str:
    """A markdown table of the holdout metric, mean over seeds, per set (rows) and variant (columns)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    lines = ["# Regression and signal recipe study: holdout scores (25% of each training split)", "",
             "Mean over seeds (the number of seeds in brackets); regress: RMSE in the targets' units (lower is better), "
             "signal: SNR gain in dB (higher is better). Written by `task_recipe_search.py`.", "",
             "| set | " + " | ".join(variants) + " | training-mean predictor |", "|---" * (len(variants) + 2) + "|"]
    for name in dict.fromkeys(r["set"] for r in records):
        cells = []
        for variant in variants:
            runs = [r for r in records if r["set"] == name and r["variant"] == variant]
            values = [r.get("holdout_rmse", r.get("holdout_snr_gain_db")) for r in runs]
            cells.append(f"{np.mean(values):.4g} ({len(values)})" if values else "")
        baseline = next(r.get("holdout_mean_predictor_rmse") for r in records if r["set"] == name)
        lines.append(f"| {name} | {' | '.join(cells)} | {'' if baseline is None else f'{baseline:.4g}'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=[*REGRESSION, *SIGNAL_SETS], choices=[*REGRESSION, *SIGNAL_SETS])
    parser.add_argument("--variants", nargs="+", default=["default", "epochs100"], choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    finished = done(args.results)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.sets:
            given = training_split(name, folder)
            for variant in args.variants:
                for seed in args.seeds:
                    if (name, variant, seed) in finished:
                        continue
                    start = time.perf_counter()
                    result, dataset, config = fit({**given, **VARIANTS[variant], "seed": seed},
                                                  os.path.join(folder, f"{name}-{variant}-{seed}"), None)
                    seconds = time.perf_counter() - start
                    steps = config.epochs * -(-len(dataset.x_train) // config.batch_size)
                    record = {"set": name, "variant": variant, "over": VARIANTS[variant], "seed": seed,
                              "epochs": config.epochs, "steps": steps, "weight_decay": config.weight_decay,
                              "channel": config.model.channel, "fit/holdout": [len(dataset.x_train), len(dataset.x_test)],
                              **score(name, result, dataset, config), "train_loss": result.history[-1]["train_loss"],
                              "seconds": round(seconds, 1), "compile": round(result.compile_seconds, 1),
                              "ms_step": round(1000 * (seconds - result.compile_seconds) / steps, 1)}
                    print(json.dumps(record), flush=True)
                    with args.results.open("a") as f:
                        f.write(json.dumps(record) + "\n")
    atomic.write_text(args.results.with_suffix(".md"), summary(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

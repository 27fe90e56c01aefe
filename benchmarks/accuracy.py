"""Test accuracy of the default recipe on the UCR/UEA sets shipped in aeon, next to the published ResNet.

    python benchmarks/accuracy.py [--datasets GunPoint ArrowHead ...] [--seeds 0 1 2] [--epochs-scale 2]
    python benchmarks/accuracy.py --proxies [--seeds 0]              # every proxy (benchmarks/proxies.py)
    python benchmarks/accuracy.py --datasets OSULeaf@2 --over batch_size=4 --tag bs4   # a lever: recipe_search.jsonl

For each data set: train once per seed exactly as ``flax-resnet1d train --dataset NAME --seed S``
does with no other flag (``run_config.train_config``: the settings of ``training.recipe``),
and report the test accuracy of the last epoch (nothing is selected on the test set) as mean +- std
(population) over the seeds, with the wall time per run, and the accuracy of the seeds' ensemble
(their test probabilities averaged, as Ismail Fawaz et al. 2019 ensemble their runs; each run keeps
its last epoch's test probabilities). Writes ``benchmarks/results/accuracy.json`` (``--results``),
``accuracy.md`` and ``accuracy.png`` (bars and every run's learning curve), and each set's seed-0
curve as ``accuracy-<set>.png``. ``--epochs-scale F`` trains F times the recipe's epochs instead and
files the runs under ``longer`` (the evidence that a set has plateaued), leaving the main table as is.
A stored entry keeps the runs of the seeds not given now, if they trained the same recipe.

The proxies (``proxies.py``: ``NAME@K``, a set's training split cut to K series per class, and the
synthetic ``Synthetic50x2`` and ``Periodic50x2``) train the same way, a Dataset with fewer training series, and get a
table of their own, next to the recipe on the full split. Every row has the 1-NN baselines
(Euclidean and DTW, ``proxies.baselines``). ``--over KEY=VALUE`` (``train`` options, JSON values)
measures a lever instead: each run is appended to ``recipe_search.jsonl`` under ``--tag``, and the
tables are left as they are.

The published column is ResNet of Ismail Fawaz et al. 2019, "Deep learning for time series
classification: a review" (DMKD 33:917-963), from its companion repository hfawaz/dl-4-tsc:
results/results-uea-avg-std.csv (commit eb2953e; UCR 2015 archive) and
results/results-mts-avg-std.csv (Baydogan's MTS archive), mean (std) of 10 runs; ACSF1 and
PickupGestureWiimoteZ from results/results-ucr-128.csv (commit 4c2cdff; UCR 2018 archive), mean and
sample std of its 5 runs. That ResNet is 3 blocks (64/128/128 filters, kernels 8/5/3, BatchNorm, no
down-sampling) trained 1500 epochs with Adam (ReduceLROnPlateau), keeping the weights of the lowest
*training* loss.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time

import jax
import numpy as np
import proxies  # this directory is on sys.path: accuracy.py runs as a script
from suite import cpu_fields

from flax_resnet1d.io import atomic
from flax_resnet1d.training import data, loop, recipe, run_files
from flax_resnet1d.training.run_config import data_spec, sized, train_config

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SEARCH = os.path.join(RESULTS, "recipe_search.jsonl")

# Published ResNet test accuracy, % mean (std); None: no ResNet result in dl-4-tsc.
PUBLISHED = {
    "GunPoint": (99.1, 0.7),  # "Gun_Point" in the UCR 2015 archive
    "ArrowHead": (84.5, 1.2),
    "ItalyPowerDemand": (96.3, 0.4),
    "OSULeaf": (97.9, 0.8),
    "ACSF1": (91.6, 2.6),  # results-ucr-128.csv: 93, 92, 93, 93, 87
    "PickupGestureWiimoteZ": (70.4, 3.0),  # results-ucr-128.csv: 72, 66, 70, 74, 70
    "BasicMotions": None,  # UEA 2018 multivariate archive: not in any dl-4-tsc result file
    "JapaneseVowels": (99.2, 0.3),  # Baydogan's MTS archive (same 270/370 split)
    "PigCVP": (91.8, 1.2),  # results-ucr-128.csv: 91, 93, 90, 92, 93
    "PigArtPressure": (99.1, 0.5),  # results-ucr-128.csv: 99, 99, 99, 99, 100
    "PigAirwayPressure": (40.6, 4.4),  # results-ucr-128.csv: 43, 33, 43, 43, 40
}


def loaded(name: str, over: dict | None = None) -> tuple[data.Dataset, data.DataSpec]:
    """The data set ``name`` and its spec as ``train --dataset NAME`` builds them; a proxy is its
    Dataset with the spec of its archive set (or of a .npz, for a synthetic set). The series are as
    loaded: ``data.capped(dataset, spec.max_length)`` resamples the long ones as ``data.load`` does,
    and ``sized`` as the recipe does."""
    given = {k: v for k, v in (over or {}).items() if k == "max_length"}  # the data options of a lever
    if name in proxies.UNSEEN:
        return proxies.unseen(name), data_spec({**given, "dataset": f"{name}.npz"})
    if not proxies.is_proxy(name):
        return data.load_archive(name), data_spec({**given, "dataset": name})
    source = f"{name}.npz" if name in proxies.SYNTHETIC else name.split("@")[0]
    return proxies.load(name), data_spec({**given, "dataset": source})


def run(name: str, seeds: list[int], scratch: str, machine: str, epochs_scale: float = 1.0, results: str = RESULTS,
        over: dict | None = None, tag: str | None = None) -> dict:
    loaded_set, spec = loaded(name, over)
    spec, dataset = sized(over or {}, spec, data.capped(loaded_set, spec.max_length))
    runs = []
    for seed in seeds:
        given = {**(over or {}), "seed": seed}
        if epochs_scale != 1:
            given["epochs"] = round(epochs_scale * train_config(given, spec, dataset).epochs)
        config = train_config(given, spec, dataset)
        run_dir = os.path.join(scratch, f"{name}-{seed}")
        start = time.perf_counter()
        result = loop.fit(config, dataset, run_dir, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        last = result.history[-1]
        runs.append({"seed": seed, "test_accuracy": last["test_accuracy"], "train_accuracy": last["train_accuracy"],
                     "test_probabilities": test_probabilities(config, result.state, dataset),
                     "final_train_loss": last["train_loss"], "seconds": round(seconds, 1),
                     "compile_seconds": round(result.compile_seconds, 1),
                     "step_ms_median": float(np.median([h["step_time_ms"] for h in result.history])),
                     "history": curve(result.history)})
        print(f"{name} seed {seed}: test accuracy {100 * last['test_accuracy']:.1f}% after {config.epochs} epochs "
              f"in {seconds:.0f} s (compile {result.compile_seconds:.0f} s)", flush=True)
        if tag is not None:
            search_record(name, tag, over or {}, config, runs[-1], last, machine)
        elif seed == 0 and epochs_scale == 1 and not proxies.is_proxy(name):  # the curve the docs name
            shutil.copy(os.path.join(run_dir, run_files.CURVE_FILE), os.path.join(results, f"accuracy-{name}.png"))
    return summarized({"dataset": name, "train": len(dataset.y_train), "test": len(dataset.y_test),
                       "test_labels": dataset.y_test.tolist(),
                       "length": loaded_set.length, "input_length": dataset.length,
                       "channels": dataset.in_planes, "classes": dataset.num_classes,
                       "normalize": dataset.normalization.how, "kernel_size": config.model.kernel_size,
                       "augment": config.augment, "shift": config.shift,
                       "epochs": config.epochs, "machine": machine,
                       "steps": result.history[-1]["step"], "published": PUBLISHED.get(name), "runs": runs,
                       **proxies.baselines(dataset)})


def search_record(name: str, tag: str, over: dict, config, measured: dict, last: dict, machine: str) -> None:
    """One lever run as a line of ``recipe_search.jsonl`` (the keys of the earlier records)."""
    model = {k: getattr(config.model, k) for k in recipe.MODEL}
    record = {"name": name, "tag": tag, "seed": config.seed, "over": over,
              "model": {**model, "layers": list(model["layers"])},
              "note": f"issue 37 lever: {over or 'the recipe'} on {name}",
              "machine": machine,
              "test": last["test_accuracy"], "train_loss": last["train_loss"], "train_acc": last["train_accuracy"],
              "epochs": config.epochs, "batch_size": config.batch_size, "steps": last["step"],
              "step_ms_median": measured["step_ms_median"], "seconds": measured["seconds"],
              "date": time.strftime("%Y-%m-%d")}
    stored = open(SEARCH).read() if os.path.exists(SEARCH) else ""
    atomic.write_text(SEARCH, stored + json.dumps(record) + "\n")


CURVE_KEYS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")


def curve(history: list[dict]) -> list[dict]:
    """A run's history as accuracy.json keeps it: the epochs evaluated on the test set (the curves),
    their losses and accuracies to 4 significant digits (every epoch's timings and learning rate
    made the file 27 MB)."""
    return [{k: h[k] if k == "epoch" else float(f"{h[k]:.4g}") for k in CURVE_KEYS if k in h}
            for h in history if "test_accuracy" in h]


def dumped(value) -> str:
    """``value`` as JSON, indented, each innermost list or object (a history row, a row of
    probabilities) on one line."""
    return re.sub(r"[\[{][^\[\]{}]*[\]}]", lambda m: re.sub(r"\n\s*", " ", m.group(0)), json.dumps(value, indent=1))


def test_probabilities(config, state, dataset: data.Dataset) -> list[list[float]]:
    """The class probabilities of the test set (rounded to 1e-6: the JSON stays small)."""
    padded = loop.model_inputs(dataset, config.model)
    logits = loop.evaluate_splits(config, state, {"test": (padded.x_test, padded.y_test)})["test"].logits
    logits = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return np.round(probabilities, 6).tolist()


def ensemble_accuracy(entry: dict) -> float | None:
    """Test accuracy (%) of the runs' mean probabilities; None if a run kept none (older entries)."""
    if "test_labels" not in entry or not all("test_probabilities" in r for r in entry["runs"]):
        return None
    mean = np.mean([r["test_probabilities"] for r in entry["runs"]], axis=0)
    return float(100 * np.mean(mean.argmax(axis=1) == np.asarray(entry["test_labels"])))


def summarized(entry: dict) -> dict:
    """``entry`` with the mean +- std (population) of its runs' test accuracy, their ensemble's
    accuracy and their mean time."""
    accuracies = 100 * np.array([r["test_accuracy"] for r in entry["runs"]])
    return {**entry, "mean": float(accuracies.mean()), "std": float(accuracies.std()),
            "ensemble": ensemble_accuracy(entry),
            "seconds_per_run": float(np.mean([r["seconds"] for r in entry["runs"]]))}


def merged(stored: dict | None, measured: dict, same_recipe: bool) -> dict:
    """``measured`` with the stored runs of the seeds not rerun now, if they trained the same
    recipe for as many epochs, with the same shifts: ``--seeds 2`` adds a seed to an entry instead of
    replacing it."""
    if stored is None or not same_recipe or any(stored.get(k) != measured[k] for k in ("epochs", "augment", "shift")) \
            or kernel(stored) != kernel(measured):
        return measured
    rerun = {r["seed"] for r in measured["runs"]}
    runs = sorted([r for r in stored["runs"] if r["seed"] not in rerun] + measured["runs"], key=lambda r: r["seed"])
    return summarized({**measured, "runs": runs})


def verdict(r: dict, ours: str = "mean") -> str:
    """``r[ours]`` against the published mean: 'above', 'within 1 std', or the shortfall in stds."""
    if r["published"] is None or r.get(ours) is None:
        return "n/a"
    mean, std = r["published"]
    if r[ours] >= mean:
        return "above"
    return "within 1 std" if mean - r[ours] <= std else f"below ({(mean - r[ours]) / std:.1f} std)"


def lengths(r: dict) -> str:
    """The length column: the series' length, and the one the network saw where resampled."""
    return f"{r['length']}" if r.get("input_length", r["length"]) == r["length"] else \
        f"{r['length']} -> {r['input_length']}"


def kernel(r: dict) -> int:
    """The kernel a row's network had (an accuracy row, or a step_time.py row); rows stored before it
    was recorded all had 9."""
    return r.get("kernel_size", 9)


def shifts(r: dict) -> str:
    """The shifts column: the strength, or 'no'."""
    return f"{r['shift']:.0%}" if r["augment"] == "shift" else "no"


def baseline_cells(r: dict) -> str:
    """The 1-NN Euclidean and DTW columns of a row ('-' where not computed)."""
    return " | ".join("-" if r.get(k) is None else f"{r[k]:.1f}" for k in ("nn_euclidean", "nn_dtw"))


def markdown(results: list[dict], longer: list[dict], meta: dict, full: dict | None = None) -> str:
    """The tables; ``full`` (name -> entry) gives a proxy's full-split row where ``results`` lacks it."""
    results, proxied = [r for r in results if not proxies.is_proxy(r["dataset"])], \
        [r for r in results if proxies.is_proxy(r["dataset"])]
    lines = [f"Test accuracy (%) of the default recipe, last epoch, mean +- std over seeds {meta['seeds']}; "
             f"{meta['machine']} (a row measured on another machine says which). Shifts: the most a random "
             "shift moves a series (`recipe.shift_strength`), or no shifts where a one-step shift moves a class's "
             "mean series nearest another class's (`recipe.class_changed_by_shift`). "
             "Ensemble: the seeds' test probabilities averaged. 1-NN: nearest training series, Euclidean on the "
             "network's inputs (z-normalized series; per channel for the multivariate sets), and DTW with a "
             f"Sakoe-Chiba band of {proxies.DTW_BAND:.0%} of the length on the "
             f"series average-pooled to at most {proxies.DTW_LENGTH} steps (`proxies.baselines`).", "",
             "| data set | train/test | length x channels | classes | kernel | epochs (steps) | shifts | ours | "
             "ensemble | 1-NN ED | 1-NN DTW | published ResNet | vs published | ensemble vs published | "
             "time per run (s) | compile (s) | ms/step |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    if not results:  # proxies measured into a --results of their own
        lines = lines[:1]
    def elsewhere(r: dict) -> str:  # the row's machine, or how the header's was shared for it
        if r["machine"] == meta["machine"]:
            return ""
        shared = r["machine"].startswith(meta["machine"] + ", ")
        return f" ({r['machine'][len(meta['machine']) + 2:] if shared else r['machine']})"

    for r in results:
        published = "n/a" if r["published"] is None else f"{r['published'][0]:.1f} +- {r['published'][1]:.1f}"
        lines.append(f"| {r['dataset']} | {r['train']}/{r['test']} | {lengths(r)} x {r['channels']} | "
                     f"{r['classes']} | {kernel(r)} | {r['epochs']} ({r['steps']}) | {shifts(r)} | "
                     f"{r['mean']:.1f} +- {r['std']:.1f} | "
                     f"{'-' if r.get('ensemble') is None else format(r['ensemble'], '.1f')} | "
                     f"{baseline_cells(r)} | {published} | {verdict(r)} | {verdict(r, 'ensemble')} | "
                     f"{r['seconds_per_run']:.0f}{elsewhere(r)} | "
                     f"{np.mean([x['compile_seconds'] for x in r['runs']]):.0f} | "
                     f"{np.mean([x['step_ms_median'] for x in r['runs']]):.1f} |")
    if proxied:
        main = {**(full or {}), **{r["dataset"]: r for r in results}}
        lines += ["", "Proxies (`benchmarks/proxies.py`): NAME@K is NAME's training split cut to K series per class "
                  f"(stratified, seed {proxies.SUBSAMPLE_SEED}, the same for every training seed), the test split "
                  "untouched; Synthetic50x2: 50 classes of 3 shapes each, moved up to 5% from their class's positions, "
                  "2 training series a class, length 2000; Periodic50x2: 50 classes of a beat each, repeated from a "
                  "random phase, the same sizes. Full split: the recipe on the whole training split (the eight sets' "
                  "table, as measured there).", "",
                  "| data set | train/test | length x channels | classes | kernel | epochs (steps) | shifts | seeds | "
                  "ours | ensemble | 1-NN ED | 1-NN DTW | full split | time per run (s) | ms/step |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in proxied:
            full = main.get(r["dataset"].split("@")[0]) if "@" in r["dataset"] else None  # synthetic: no full split
            lines.append(f"| {r['dataset']} | {r['train']}/{r['test']} | {lengths(r)} x {r['channels']} | "
                         f"{r['classes']} | {kernel(r)} | {r['epochs']} ({r['steps']}) | "
                         f"{shifts(r)} | {[x['seed'] for x in r['runs']]} | "
                         f"{r['mean']:.1f} +- {r['std']:.1f} | "
                         f"{'-' if r.get('ensemble') is None else format(r['ensemble'], '.1f')} | "
                         f"{baseline_cells(r)} | {'-' if full is None else format(full['mean'], '.1f')} | "
                         f"{r['seconds_per_run']:.0f}{elsewhere(r)} | "
                         f"{np.mean([x['step_ms_median'] for x in r['runs']]):.1f} |")
    if longer:
        lines += ["", "Longer budgets (`--epochs-scale`), the recipe of their date otherwise:", "",
                  "| data set | epochs (steps) | shifts | seeds | ours | recipe's budget | time per run (s) |",
                  "|---|---|---|---|---|---|---|"]
        main = {r["dataset"]: r for r in results}
        for r in longer:
            base = main.get(r["dataset"])
            base_text = "-" if base is None else f"{base['mean']:.1f} +- {base['std']:.1f} ({base['epochs']} epochs)"
            lines.append(f"| {r['dataset']} | {r['epochs']} ({r['steps']}) | {shifts(r)} | "
                         f"{[x['seed'] for x in r['runs']]} | {r['mean']:.1f} +- {r['std']:.1f} | {base_text} | "
                         f"{r['seconds_per_run']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: str) -> None:
    """Bars (ours vs published) above every run's test-accuracy curve, one panel per data set, 4 a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(results) // 4)  # curve panels, 4 a row
    fig = plt.figure(figsize=(12, 3.2 + 2.4 * rows))
    grid = fig.add_gridspec(1 + rows, 4, height_ratios=(1.3, *[1] * rows))
    ax = fig.add_subplot(grid[0, :])
    names, x = [r["dataset"] for r in results], np.arange(len(results))
    ax.bar(x - 0.2, [r["mean"] for r in results], 0.4, yerr=[r["std"] for r in results], capsize=3,
           label="flax-resnet1d default recipe (3 seeds, 2 CPU cores)")
    published = [r["published"] for r in results]
    ax.bar(x + 0.2, [p[0] if p else 0 for p in published], 0.4, yerr=[p[1] if p else 0 for p in published],
           capsize=3, label="ResNet, Ismail Fawaz et al. 2019 (1500 epochs, GPU)")
    ensembles = [(i, r["ensemble"]) for i, r in enumerate(results) if r.get("ensemble") is not None]
    if ensembles:
        ax.scatter([x[i] - 0.2 for i, _ in ensembles], [e for _, e in ensembles], marker="_", s=300, color="k",
                   zorder=3, label="ensemble of the seeds")
    for i, p in enumerate(published):
        if p is None:
            ax.text(x[i] + 0.2, 2, "n/a", ha="center", fontsize=8)
    ax.set_xticks(x, names, rotation=15, ha="right")
    ax.set(ylabel="test accuracy (%)", ylim=(0, 105))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    for i, r in enumerate(results):
        curve = fig.add_subplot(grid[1 + i // 4, i % 4])
        for run in r["runs"]:
            rows = [h for h in run["history"] if "test_accuracy" in h]
            curve.plot([h["epoch"] for h in rows], [100 * h["test_accuracy"] for h in rows], lw=1,
                       label=f"seed {run['seed']}")
        if r["published"]:
            curve.axhspan(r["published"][0] - r["published"][1], r["published"][0] + r["published"][1], color="C1",
                          alpha=0.2, label="published +- std")
        curve.set_title(r["dataset"], fontsize=9)
        curve.set(xlabel="epoch", ylim=(max(0, r["mean"] - 30), 100.5))
        curve.tick_params(labelsize=7)
        curve.grid(alpha=0.3)
        if i == 0:
            curve.set_ylabel("test accuracy (%)")
            curve.legend(fontsize=6)
    fig.tight_layout()
    atomic.save_figure(fig, path, dpi=90)


def plot_proxies(results: list[dict], path: str, full: dict | None = None) -> None:
    """Bars per proxy: ours (mean +- std over seeds), 1-NN Euclidean and DTW, the recipe on the full
    split (from ``results``, else ``full``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = {**(full or {}), **{r["dataset"]: r for r in results if not proxies.is_proxy(r["dataset"])}}
    rows = [r for r in results if proxies.is_proxy(r["dataset"])]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(rows)), 4.5))
    ax.bar(x - 0.3, [r["mean"] for r in rows], 0.2, yerr=[r["std"] for r in rows], capsize=2, label="default recipe")
    for k, (key, label) in enumerate((("nn_euclidean", "1-NN Euclidean"), ("nn_dtw", "1-NN DTW"))):
        ax.bar(x - 0.1 + 0.2 * k, [r.get(key) or 0 for r in rows], 0.2, label=label)
    full = [main.get(r["dataset"].split("@")[0]) for r in rows]
    ax.bar(x + 0.3, [f["mean"] if f else 0 for f in full], 0.2, label="default recipe, full training split")
    ax.set_xticks(x, [r["dataset"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 105))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic.save_figure(fig, path, dpi=90)


def cpu_name() -> str:
    """The model name plus family/model: the same "AMD EPYC" name covers Zen 3, 4 and 5 machines
    that differ 1.8x in speed and in how they round."""
    fields = cpu_fields()
    if not {"model name", "cpu family", "model"} <= fields.keys():
        return platform.processor() or platform.machine()
    return f"{fields['model name']} (family {fields['cpu family']} model {fields['model']})"


def recipe_fields() -> dict:
    """The recipe's settings as accuracy.json's meta records them."""
    return {"model": recipe.MODEL, "training": recipe.TRAINING, "epochs": recipe.EPOCHS,
            "max_steps": recipe.MAX_STEPS, "min_epochs": recipe.MIN_EPOCHS, "min_steps": recipe.MIN_STEPS,
            "shift_strengths": list(recipe.SHIFT_STRENGTHS), "step_ms": list(recipe.STEP_MS),
            "step_budget_s": recipe.STEP_BUDGET_S, "max_length": recipe.MAX_LENGTH,
            "resample_loss": recipe.RESAMPLE_LOSS, "resampled_kernel_size": recipe.RESAMPLED_KERNEL_SIZE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+",
                        choices=data.CLASSIFICATION_DATASETS + proxies.UNSEEN + tuple(proxies.names()),
                        help="default: the eight archive sets aeon ships (none with --proxies)")
    parser.add_argument("--proxies", action="store_true", help="every proxy (proxies.names()) too")
    parser.add_argument("--over", nargs="+", default=[], metavar="KEY=VALUE",
                        help="train options over the recipe's (JSON values): a lever, filed in recipe_search.jsonl")
    parser.add_argument("--tag", help="the lever's tag in recipe_search.jsonl (required with --over)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="train this many times the recipe's epochs; filed under 'longer'")
    parser.add_argument("--machine-note", default="", help="appended to the machine line, e.g. how it was shared")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the JSON")
    parser.add_argument("--results", default=RESULTS, help="directory of accuracy.json/.md/.png (default: %(default)s)")
    args = parser.parse_args()
    names = (args.datasets or ([] if args.proxies else list(data.CLASSIFICATION_DATASETS))) + \
        (proxies.names() if args.proxies else [])
    over = {k: _json_or_text(v) for k, _, v in (o.partition("=") for o in args.over)}
    if (args.over or args.tag) and not (args.over and args.tag):
        parser.error("--over and --tag go together: a lever is filed under its tag")
    os.makedirs(args.results, exist_ok=True)
    path = os.path.join(args.results, "accuracy.json")
    machine = f"{cpu_name()}, {os.cpu_count()} cores{args.machine_note}"
    with tempfile.TemporaryDirectory() as scratch:
        measured = [run(name, args.seeds, scratch, machine, args.epochs_scale, args.results, over, args.tag)
                    for name in ([] if args.report_only else names)]
    if args.tag:  # a lever's runs are in recipe_search.jsonl; the tables stay the recipe's
        return
    stored = {"results": [], "longer": []}
    if os.path.exists(path):  # keep what was measured earlier (or meanwhile, by another run) and not rerun now
        with open(path) as f:
            stored = {**stored, **json.load(f)}
    # entries from before the shift strength and machine were recorded: the stored recipe's shift, the stored machine
    stored_meta = stored.get("meta", {})
    before = {"shift": stored_meta.get("training", {}).get("shift"), "machine": stored_meta.get("machine")}
    for r in stored["results"] + stored["longer"]:  # entries from before curve() kept every epoch
        r["runs"] = [{**run, "history": curve(run["history"])} for run in r["runs"]]
    results = {r["dataset"]: {**before, **r} for r in stored["results"]}
    longer = {(r["dataset"], r["epochs"]): {**before, **r} for r in stored["longer"]}
    same_recipe = all(stored.get("meta", {}).get(k) == v for k, v in recipe_fields().items())
    for r in measured:
        table, key = (results, r["dataset"]) if args.epochs_scale == 1 else (longer, (r["dataset"], r["epochs"]))
        table[key] = merged(table.get(key), r, same_recipe)
    for name, r in results.items():  # entries from before the baselines were recorded
        if "nn_euclidean" not in r:
            results[name] = {**r, **proxies.baselines(loaded(name)[0])}
    order = {name: i for i, name in enumerate(data.ARCHIVE_DATASETS + proxies.UNSEEN + tuple(proxies.names()))}
    results = sorted(results.values(), key=lambda r: order[r["dataset"]])
    longer = sorted(longer.values(), key=lambda r: (order[r["dataset"]], r["epochs"]))
    meta = {"machine": machine, "jax": jax.__version__,
            "seeds": sorted({run["seed"] for r in results for run in r["runs"]}), **recipe_fields(),
            "date": time.strftime("%Y-%m-%d")}
    if args.report_only:  # the stored runs were measured where and when the stored meta says
        meta.update({k: v for k, v in stored.get("meta", {}).items() if k in ("machine", "jax", "date")})
    full = {}  # the eight sets' rows of the main table, for proxies measured into another --results
    main_table = os.path.join(RESULTS, "accuracy.json")
    if os.path.abspath(args.results) != os.path.abspath(RESULTS) and os.path.exists(main_table):
        with open(main_table) as f:
            full = {r["dataset"]: r for r in json.load(f)["results"]}
    text = markdown(results, longer, meta, full)
    # Through temporaries: a kill mid-write must not lose the stored runs the next invocation merges with.
    atomic.write_text(path, dumped({"meta": meta, "results": results, "longer": longer}))
    atomic.write_text(os.path.join(args.results, "accuracy.md"), text)
    if any(not proxies.is_proxy(r["dataset"]) for r in results):
        plot([r for r in results if not proxies.is_proxy(r["dataset"])], os.path.join(args.results, "accuracy.png"))
    if any(proxies.is_proxy(r["dataset"]) for r in results):
        plot_proxies(results, os.path.join(args.results, "accuracy-proxies.png"), full)
    print(text)


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


if __name__ == "__main__":
    main()

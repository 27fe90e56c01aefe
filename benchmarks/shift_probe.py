"""Are the recipe's training shifts label-preserving on a data set? Two measurements:

    python benchmarks/shift_probe.py [--dataset ItalyPowerDemand] [--seeds 0 1] [--shifts -2 -1 0 1 2]

1. Train ``--dataset`` with the default recipe (``train_config``, as ``flax-resnet1d train`` does),
   once with ``--augment shift`` and once with ``--augment none``, then report each class's test
   accuracy with every test series shifted by k steps (``data.shifted``: the vacated steps repeat
   the edge value, as in training).
   If a shift of k steps turns one class into another for the unaugmented classifier, the class
   lives in the timing, and training on shifted copies teaches the network to ignore it.
2. Without training, on every archive set of ``accuracy.py``: the leave-one-out nearest class
   mean accuracy of the training series, as they are and shifted by the recipe's largest shift
   (10% of the length) either way, which does not single out the sets the shifts hurt; and the
   recipe's rule (``recipe.shift_margins``): the class means moved one step, whose smallest
   margin (distance to another class's mean over distance to its own) is below 1 exactly where
   the recipe drops the shifts.

Writes ``benchmarks/results/shift_probe.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
from accuracy import PUBLISHED, RESULTS, cpu_name  # this directory is on sys.path: run as a script

from flax_resnet1d.io import atomic
from flax_resnet1d.training import data, loop, recipe
from flax_resnet1d.training.run_config import data_spec, train_config

SETTINGS = {"augment shift": {"augment": "shift"}, "augment none": {"augment": "none"}}  # the recipe otherwise


def shifted_test_accuracy(name: str, seeds: list[int], shifts: list[int], scratch: str) -> dict:
    """{setting: {seed: {shift: [accuracy of class 0, class 1, ..., all]}}} on the test split."""
    dataset, spec = data.load_archive(name), data_spec({"dataset": name})
    x, y = dataset.x_test, dataset.y_test
    out = {}
    for setting, given in SETTINGS.items():
        for seed in seeds:
            config = train_config({**given, "seed": seed}, spec, dataset)
            state = loop.fit(config, dataset, os.path.join(scratch, f"{setting}-{seed}"),
                              progress=sys.stderr.isatty()).state
            moved = {k: (data.shifted(x, np.full(len(y), k)), y) for k in shifts}
            logits = {k: e.logits for k, e in loop.evaluate_splits(config, state, moved).items()}
            out.setdefault(setting, {})[seed] = {
                k: [float(np.mean(p.argmax(1)[y == c] == c)) for c in range(dataset.num_classes)]
                + [float(np.mean(p.argmax(1) == y))] for k, p in logits.items()}
            print(f"{name} {setting} seed {seed}: " + ", ".join(
                f"{k:+d}: {100 * v[-1]:.1f}%" for k, v in out[setting][seed].items()), flush=True)
    return out


def class_mean_accuracy(x: np.ndarray, y: np.ndarray, shift: int = 0) -> float:
    """Share of the (N, L, C) series that, shifted by ``shift`` steps, are nearest (Euclidean) to
    their own class's mean over the other series (leave-one-out)."""
    classes = np.unique(y)
    sums = np.stack([x[y == c].sum(0) for c in classes])
    counts = np.array([(y == c).sum() for c in classes], dtype=np.float64)
    own = classes[None, :] == y[:, None]  # (N, classes)
    means = (sums[None] - own[..., None, None] * x[:, None]) / (counts[None] - own)[..., None, None]
    moved = data.shifted(x, np.full(len(y), shift))
    nearest = classes[np.argmin(((moved[:, None] - means) ** 2).sum((2, 3)), axis=1)]
    return float(np.mean(nearest == y))


def class_mean_table() -> list[dict]:
    rows = []
    for name in PUBLISHED:
        dataset = data.load_archive(name)  # normalized as training sees it
        x = dataset.x_train.astype(np.float64)
        reach = int(recipe.TRAINING["shift"] * x.shape[1])
        rows.append({"dataset": name, "length": dataset.length, "reach": reach,
                     **{str(k): class_mean_accuracy(x, dataset.y_train, k) for k in (-reach, 0, reach)},
                     "one_step_margin": float(recipe.shift_margins(x, dataset.y_train)[0].min()),
                     "recipe_shifts": recipe.class_changed_by_shift(x, dataset.y_train) is None})
    return rows


def markdown(name: str, probe: dict, shifts: list[int], rows: list[dict], machine: str) -> str:
    lines = [f"{name}: test accuracy (%) per class with every test series shifted by k steps "
             f"(class 0 / class 1 / ... / all); {machine}.", "",
             "| setting | seed | " + " | ".join(f"k = {k:+d}" for k in shifts) + " |",
             "|---|---|" + "---|" * len(shifts)]
    for setting, seeds in probe.items():
        for seed, by_shift in seeds.items():
            lines.append(f"| {setting} | {seed} | " + " | ".join(
                " / ".join(f"{100 * a:.1f}" for a in v) for v in by_shift.values()) + " |")
    lines += ["", "Training series nearest to their own class's leave-one-out mean (%), shifted by the "
              "recipe's largest shift (10% of the length) either way; and the recipe's rule: the smallest "
              "one-step margin of the class means (below 1: no shifts):", "",
              "| data set | length | shift | -shift | as they are | +shift | one-step margin | recipe shifts |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        values = [r[str(k)] for k in (-r["reach"], 0, r["reach"])]
        lines.append(f"| {r['dataset']} | {r['length']} | {r['reach']} | "
                     + " | ".join(f"{100 * v:.1f}" for v in values)
                     + f" | {r['one_step_margin']:.2f} | {'yes' if r['recipe_shifts'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(name: str, probe: dict, shifts: list[int], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (setting, seeds), style in zip(probe.items(), ("-", "--")):
        for seed, by_shift in seeds.items():
            per_class = np.array(list(by_shift.values()))[:, :-1]
            for c in range(per_class.shape[1]):
                ax.plot(shifts, 100 * per_class[:, c], style, marker="o", color=f"C{c}",
                        label=f"{setting}, class {c}" if seed == min(seeds) else None)
    ax.set(xlabel="test series shifted by k steps", ylabel="class test accuracy (%)", title=name, xticks=shifts)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic.save_figure(fig, path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ItalyPowerDemand", choices=tuple(PUBLISHED))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--shifts", type=int, nargs="+", default=[-2, -1, 0, 1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        probe = shifted_test_accuracy(args.dataset, args.seeds, args.shifts, scratch)
    rows = class_mean_table()
    machine = cpu_name()
    atomic.write_text(os.path.join(RESULTS, "shift_probe.json"), json.dumps(
        {"dataset": args.dataset, "machine": machine, "settings": SETTINGS, "test_shifts": probe,
         "class_means": rows}, indent=1))
    text = markdown(args.dataset, probe, args.shifts, rows, machine)
    atomic.write_text(os.path.join(RESULTS, "shift_probe.md"), text)
    plot(args.dataset, probe, args.shifts, os.path.join(RESULTS, "shift_probe.png"))
    print(text)


if __name__ == "__main__":
    main()

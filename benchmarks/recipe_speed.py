"""The speed a user who switches gets: the recipe's classifier training end to end on GunPoint
(epochs/s, data order, shifts, label smoothing, cosine AdamW and the test evaluations included),
``flax-resnet1d train``'s JAX loop against the same recipe written with ``torch_ref`` +
``torch.optim`` (eager and ``torch.compile``), in one run.

Both take the batches, shifts and schedule of ``training.batching`` and ``recipe``; the first
epoch (compilation) is reported apart, the steady epochs/s is the median over the rest.
Writes ``benchmarks/results/recipe_speed.{json,md}``.

    python benchmarks/recipe_speed.py                 # 40 epochs each
    python benchmarks/recipe_speed.py --epochs 3 --out /tmp/speed   # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from flax_resnet1d.io import atomic
from flax_resnet1d.training import batching, data, loop
from flax_resnet1d.training.run_config import data_spec, train_config

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def jax_run(config, dataset) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        result = loop.fit(config, dataset, run_dir, progress=False)
        total = time.perf_counter() - start
    seconds = [h["epoch_time_s"] for h in result.history]
    return {"first_epoch_s": seconds[0] + result.compile_seconds, "compile_s": result.compile_seconds,
            "steady_epochs_per_s": 1 / statistics.median(seconds[1:]), "total_s": total,
            "final_test_accuracy": result.history[-1]["test_accuracy"]}


def torch_run(config, dataset, compiled: bool) -> dict:
    """The recipe in PyTorch: the same order, shifts, masked label-smoothed cross-entropy, AdamW
    and per-step cosine schedule; the test set evaluated at the same epochs."""
    import torch

    import torch_ref

    torch.manual_seed(config.seed)
    net = torch_ref.from_config(config.model)
    model = torch.compile(net) if compiled else net
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(dataset.y_train) / config.batch_size)
    total = config.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))
    as_torch = lambda x: torch.from_numpy(np.ascontiguousarray(np.swapaxes(x, 1, 2)))  # noqa: E731
    x_test = as_torch(dataset.x_test)
    seconds, accuracy = [], None
    start_all = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        net.train()
        order = batching.epoch_order(config.seed, epoch, len(dataset.y_train))
        for batch in batching.batches(dataset.x_train, dataset.y_train, order, config.batch_size,
                                      augment=batching.augmentation(config, epoch)):
            mask = torch.from_numpy(batch["mask"])
            optimizer.zero_grad(set_to_none=True)
            losses = torch.nn.functional.cross_entropy(model(as_torch(batch["x"])), torch.from_numpy(batch["y"]).long(),
                                                       reduction="none", label_smoothing=config.label_smoothing)
            (torch.sum(losses * mask) / torch.sum(mask)).backward()
            optimizer.step()
            schedule.step()
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            net.eval()
            with torch.no_grad():
                accuracy = float((model(x_test).argmax(1).numpy() == dataset.y_test).mean())
        seconds.append(time.perf_counter() - start)
    return {"first_epoch_s": seconds[0], "steady_epochs_per_s": 1 / statistics.median(seconds[1:]),
            "total_s": time.perf_counter() - start_all, "final_test_accuracy": accuracy}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    given = {"dataset": "GunPoint", "epochs": args.epochs}
    spec = data_spec(given)
    dataset = data.load(spec)
    config = train_config(given, spec, dataset)
    dataset = loop.model_inputs(dataset, config.model)
    rows = {"JAX (flax-resnet1d train)": jax_run(config, dataset),
            "torch_ref + torch.optim, eager": torch_run(config, dataset, compiled=False),
            "torch_ref + torch.optim, torch.compile": torch_run(config, dataset, compiled=True)}
    jax_speed = rows["JAX (flax-resnet1d train)"]["steady_epochs_per_s"]
    for row in rows.values():
        row["jax_speedup"] = jax_speed / row["steady_epochs_per_s"]
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other jobs",
               "date": time.strftime("%Y-%m-%d"), "epochs": args.epochs, "recipe": config.to_dict(), "rows": rows}
    lines = [f"# Recipe end to end: GunPoint, {args.epochs} epochs ({results['machine']}, {results['date']})", "",
             "| implementation | first epoch (s, compile included) | steady epochs/s | JAX speed-up | test accuracy |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['first_epoch_s']:.2f} | {r['steady_epochs_per_s']:.1f} | {r['jax_speedup']:.2f}x | "
              f"{r['final_test_accuracy']:.3f} |" for name, r in rows.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "recipe_speed.json", json.dumps(results, indent=1) + "\n")
    atomic.write_text(args.out / "recipe_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train-step time of the recipe's classifier against the series length: the measurement behind
``recipe.step_ms`` (the time model the recipe's step budget uses).

For each length (channel count and kernel) it trains the recipe's network exactly as ``flax-resnet1d train``
does (``train_config`` + ``loop.fit``, batch ``recipe.BATCH_SIZE``, shifts on) on random series for a
few epochs and takes the median of the epochs' ``step_time_ms`` (training seconds of an epoch over
its steps: batching and shifts included, the test evaluations and compilation not). Then it fits
``ms = a + b * batch * length * (1 + c * (channels - 1)) * (1 + d * max(0, kernel - 9))``, the form of
``recipe.step_ms``, by least squares on relative errors (the channel and kernel terms apart, each from
the rows that vary it), and prints both. Writes ``benchmarks/results/step_time.{json,md}``.

    python benchmarks/step_time.py                                  # lengths 128 ... 2000, 1 channel
    python benchmarks/step_time.py --lengths 512 1000 2000 --kernels 9 15 25 --out benchmarks/results/kernel
    python benchmarks/step_time.py --lengths 64 128 --channels 1 --steps 8 --out /tmp/st   # smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
from accuracy import cpu_name, kernel  # this directory is on sys.path: step_time.py runs as a script

from flax_resnet1d.io import atomic
from flax_resnet1d.training import data, loop, recipe
from flax_resnet1d.training.run_config import train_config

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
STEPS_PER_EPOCH = 4


def random_dataset(length: int, channels: int, classes: int = 10) -> data.Dataset:
    """Random-normal series, ``STEPS_PER_EPOCH`` full batches of training series and one of test."""
    rng = np.random.default_rng(0)
    n = STEPS_PER_EPOCH * recipe.BATCH_SIZE
    split = lambda k: (rng.standard_normal((k, length, channels)).astype(np.float32),  # noqa: E731
                       (np.arange(k) % classes).astype(np.int32))
    return data.Dataset(f"random-{length}x{channels}", *split(n), *split(recipe.BATCH_SIZE),
                        classes=tuple(str(c) for c in range(classes)))


def measure(length: int, channels: int, steps: int, kernel_size: int = recipe.MODEL["kernel_size"]) -> dict:
    dataset = random_dataset(length, channels)
    epochs = 1 + math.ceil(steps / STEPS_PER_EPOCH)  # the first epoch's steps are not counted
    config = train_config({"seed": 0, "epochs": epochs, "augment": "shift", "kernel_size": kernel_size},
                          data.DataSpec("random.npz"), dataset)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        result = loop.fit(config, dataset, run_dir, progress=False)
        seconds = time.perf_counter() - start
    ms = [h["step_time_ms"] for h in result.history[1:]]
    return {"length": length, "channels": channels, "kernel_size": kernel_size, "batch": config.batch_size,
            "steps": len(ms) * STEPS_PER_EPOCH,
            "step_ms_median": float(np.median(ms)), "step_ms_min": float(np.min(ms)),
            "step_ms_max": float(np.max(ms)), "compile_s": round(result.compile_seconds, 1),
            "seconds": round(seconds, 1)}


def fitted(rows: list[dict]) -> tuple[float, float, float, float]:
    """``(a, b, c, d)`` of ``ms = a + b * batch * length * (1 + c * (channels - 1)) * (1 + d * max(0, kernel -
    9))``, least squares on relative errors without the c-d cross term (c or d is 0 where one channel
    count or kernel was measured)."""
    work = np.array([r["batch"] * r["length"] for r in rows], float)
    channels = work * np.array([r["channels"] - 1 for r in rows])
    wider = work * np.array([max(0, kernel(r) - recipe.MODEL["kernel_size"]) for r in rows])
    ms = np.array([r["step_ms_median"] for r in rows])
    design = np.stack([np.ones_like(work), work, channels, wider], axis=1) / ms[:, None]
    (a, b, bc, bd), *_ = np.linalg.lstsq(design, np.ones_like(ms), rcond=None)
    return float(a), float(b), float(bc / b), float(bd / b)


def predicted(fit: tuple[float, float, float, float], r: dict) -> float:
    return recipe.step_ms(r["batch"], r["length"], r["channels"], kernel(r), fit)


def markdown(rows: list[dict], fit: tuple[float, float, float, float], meta: dict) -> str:
    a, b, c, d = fit
    lines = [f"Median train-step time (ms) of the recipe's classifier, batch {recipe.BATCH_SIZE}, shifts on; "
             f"{meta['machine']}; {meta['date']}. Fit: ms = {a:.2f} + {b * 1e3:.4f}e-3 * batch * length * "
             f"(1 + {c:.4f} * (channels - 1)) * (1 + {d:.4f} * max(0, kernel - {recipe.MODEL['kernel_size']})); "
             "`recipe.step_ms` (the budget's model) next to it.", "",
             "| length | channels | kernel | steps timed | median ms | min | max | fit | recipe.step_ms | "
             "compile (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['length']} | {r['channels']} | {kernel(r)} | {r['steps']} | {r['step_ms_median']:.1f} | "
                     f"{r['step_ms_min']:.1f} | {r['step_ms_max']:.1f} | {predicted(fit, r):.1f} | "
                     f"{recipe.step_ms(r['batch'], r['length'], r['channels'], kernel(r)):.1f} | "
                     f"{r['compile_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[128, 256, 512, 1024, 2000])
    parser.add_argument("--channels", nargs="+", type=int, default=[1])
    parser.add_argument("--kernels", nargs="+", type=int, default=[recipe.MODEL["kernel_size"]])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per shape (after a first epoch)")
    parser.add_argument("--machine-note", default="", help="appended to the machine line, e.g. how it was shared")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="rewrite the table from the JSON")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "step_time.json")
    if args.report_only:
        with open(path) as f:
            stored = json.load(f)
        rows, meta = stored["rows"], stored["meta"]
    else:
        rows = []
        for channels in args.channels:
            for kernel_size in args.kernels:
                for length in args.lengths:
                    rows.append(measure(length, channels, args.steps, kernel_size))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        meta = {"machine": f"{cpu_name()}, {os.cpu_count()} cores{args.machine_note}",
                "date": time.strftime("%Y-%m-%d")}
    fit = fitted(rows)
    text = markdown(rows, fit, meta)
    record = {"meta": meta, "fit": dict(zip(("a_ms", "b_ms", "c", "d"), fit)), "rows": rows}
    atomic.write_text(path, json.dumps(record, indent=1))
    atomic.write_text(os.path.join(args.out, "step_time.md"), text)
    print(text)


if __name__ == "__main__":
    main()

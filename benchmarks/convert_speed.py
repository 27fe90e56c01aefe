"""How long ``flax-resnet1d convert`` takes for the seed-size model (encnet32, ~14.4M parameters),
file to file, in both directions; and what the Orbax writer options cost.

Every measurement is a fresh process, because that is how convert runs: one conversion per
process, so first-call costs (Orbax's thread pools, tensorstore contexts, the JAX backend) count.
Per case it reports, as medians (and min/max) over ``--repeats`` processes:

- conversion: ``cli.main(["convert", SRC, DST])`` after the libraries are imported (read,
  validate, port, write, fsync/rename);
- imports: torch / jax+flax / orbax / safetensors as that case needs them;
- process: wall time of ``python -m flax_resnet1d convert SRC DST``, interpreter start included.

Writes benchmarks/results/convert_speed.{json,md}.  Usage: python benchmarks/convert_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from suite import cpu_fields  # this directory is on sys.path: convert_speed.py runs as a script
from tqdm import tqdm

from flax_resnet1d import port
from flax_resnet1d.config import preset_config
from flax_resnet1d.io import formats, writers
from flax_resnet1d.parity import random_state_dict

RESULTS = Path(__file__).parent / "results"
TARGET_S = 2.0
# (source, destination) file names; the formats follow the names as in the CLI.
CASES = [("model.pt", "out_orbax"), ("model.pt", "out.msgpack"), ("model_orbax", "out.pt"),
         ("model.safetensors", "out_orbax"), ("model_orbax", "out.safetensors"), ("model.msgpack", "out.pt")]
IMPORTS = {"torch": "torch", "safetensors": "safetensors.numpy", "orbax": "orbax.checkpoint",
           "msgpack": "flax.serialization"}

# Child process: import what the case needs (timed), then run the conversion (timed).
CONVERT_CHILD = """
import importlib, json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
from flax_resnet1d import cli
for module in sys.argv[3:]:
    importlib.import_module(module)
t1, c1 = time.perf_counter(), time.process_time()
code = cli.main(["convert", sys.argv[1], sys.argv[2]])
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"imports_s": t1 - t0, "conversion_s": t2 - t1, "conversion_cpu_s": c2 - c1, "exit": code}))
"""

# Orbax writer options compared on the same params (a fresh process per measurement).
ORBAX_OPTIONS = {
    "StandardCheckpointer() (async, zstd, zarr2)": "ocp.StandardCheckpointer()",
    "Checkpointer(PyTreeCheckpointHandler()) (sync, zstd, zarr2)": "ocp.Checkpointer(ocp.PyTreeCheckpointHandler())",
    "sync, no compression, zarr2 (used)": "ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False))",
    "sync, no compression, zarr3": "ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False, "
                                   "use_zarr3=True))",
}
ORBAX_CHILD = """
import json, shutil, sys, time
import numpy as np
import orbax.checkpoint as ocp
from flax_resnet1d.io import readers
variables, _ = readers.load_flax(sys.argv[1])
target = sys.argv[2]
t0 = time.perf_counter()
with {make} as checkpointer:
    checkpointer.save(target, variables)
    if hasattr(checkpointer, "wait_until_finished"):
        checkpointer.wait_until_finished()
t1 = time.perf_counter()
with {make} as checkpointer:
    restored = checkpointer.restore(target)
t2 = time.perf_counter()
size = sum(p.stat().st_size for p in __import__("pathlib").Path(target).rglob("*") if p.is_file())
print(json.dumps({{"save_s": t1 - t0, "restore_s": t2 - t1, "bytes": size}}))
"""


def machine() -> dict:
    cpu = cpu_fields().get("model name", platform.processor())
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
    versions = {}
    for name in ("jax", "flax", "orbax.checkpoint", "torch", "safetensors", "numpy"):
        module = __import__(name, fromlist=["__version__"])
        versions[name] = getattr(module, "__version__", "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_kb / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions}


def fmt_of(name: str) -> str:
    return formats.output_format(name)


def needed_imports(src: str, dst: str) -> list[str]:
    return sorted({IMPORTS[fmt] for fmt in (fmt_of(src), fmt_of(dst))})


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.with_suffix(".config.json").unlink(missing_ok=True)


def run_json(argv: list[str]) -> dict:
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    config = preset_config("encnet32")
    state_dict = {k: v.astype(np.float32) for k, v in random_state_dict(config, seed=0).items()}
    n_params = sum(a.size for a in state_dict.values())
    work = Path(tempfile.mkdtemp(prefix="convert_speed_"))
    load_before = os.getloadavg()
    try:
        writers.write_state_dict(work / "model.pt", state_dict)
        writers.write_state_dict(work / "model.safetensors", state_dict)
        for name in ("model_orbax", "model.msgpack"):
            writers.save_flax(work / name, port.torch_to_flax(state_dict, config), config)

        conversions = []
        progress = tqdm(total=len(CASES) * 2 * args.repeats + len(ORBAX_OPTIONS) * args.repeats, desc="convert_speed")
        for src, dst in CASES:
            children, walls = [], []
            for _ in range(args.repeats):
                remove(work / dst)
                children.append(run_json([sys.executable, "-c", CONVERT_CHILD, str(work / src), str(work / dst),
                                          *needed_imports(src, dst)]))
                progress.update()
                remove(work / dst)
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "flax_resnet1d", "convert", str(work / src), str(work / dst)],
                               check=True, capture_output=True)
                walls.append(time.perf_counter() - start)
                progress.update()
            assert all(child["exit"] == 0 for child in children)
            conversions.append({"source": src, "destination": dst, "direction": f"{fmt_of(src)} -> {fmt_of(dst)}",
                                "conversion_s": stats([c["conversion_s"] for c in children]),
                                "conversion_cpu_s": stats([c["conversion_cpu_s"] for c in children]),
                                "imports_s": stats([c["imports_s"] for c in children]),
                                "process_s": stats(walls)})

        orbax = []
        for label, make in ORBAX_OPTIONS.items():
            runs = []
            for _ in range(args.repeats):
                remove(work / "orbax_option")
                runs.append(run_json([sys.executable, "-c", ORBAX_CHILD.format(make=make), str(work / "model_orbax"),
                                      str(work / "orbax_option")]))
                progress.update()
            orbax.append({"options": label, "save_s": stats([r["save_s"] for r in runs]),
                          "restore_s": stats([r["restore_s"] for r in runs]), "bytes": runs[-1]["bytes"]})
        progress.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {"model": "encnet32 (in_planes=1, out_length=2), float32, random weights", "parameters": n_params,
              "bytes_float32": 4 * n_params, "repeats": args.repeats, "target_s": TARGET_S,
              "machine": machine(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "conversions": conversions, "orbax_options": orbax}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "convert_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "convert_speed.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    m = r["machine"]

    def cell(s: dict) -> str:
        return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"

    lines = [
        "# Checkpoint conversion speed (`flax-resnet1d convert`)", "",
        f"Model: {r['model']}, {r['parameters']:,} parameters ({r['bytes_float32'] / 2**20:.1f} MiB).",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        f"Load average (1/5/15 min) before: {', '.join(f'{x:.1f}' for x in r['load_average_before'])}; after: "
        f"{', '.join(f'{x:.1f}' for x in r['load_average_after'])} (the machine is shared; see min for the "
        "unloaded cost).",
        f"Seconds, median (min-max) of {r['repeats']} fresh processes each. *conversion*: the convert command "
        "itself once its libraries are imported (read, validate, port, write, fsync, rename); *imports*: "
        "flax_resnet1d plus torch/orbax/safetensors/flax.serialization as the case needs; *process*: "
        f"`python -m flax_resnet1d convert SRC DST` end to end. Target: conversion < {r['target_s']:.0f} s.", "",
        "*conversion CPU*: CPU time of all its threads, which a loaded machine inflates less than wall time.", "",
        "| source | destination | conversion | conversion CPU | imports | process | conversion < target |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in r["conversions"]:
        ok = "yes" if c["conversion_s"]["median"] < r["target_s"] else "NO"
        lines.append(f"| `{c['source']}` | `{c['destination']}` | {cell(c['conversion_s'])} "
                     f"| {cell(c['conversion_cpu_s'])} | {cell(c['imports_s'])} | {cell(c['process_s'])} | {ok} |")
    lines += ["", "Orbax writer options on the same parameters (fresh process each; save includes waiting for the "
              "write to finish):", "", "| options | save | restore | size MiB |", "|---|---|---|---|"]
    for o in r["orbax_options"]:
        lines.append(f"| {o['options']} | {cell(o['save_s'])} | {cell(o['restore_s'])} | {o['bytes'] / 2**20:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

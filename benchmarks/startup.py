"""Start-up of ``flax-resnet1d``: wall time of short commands, and the heavy libraries each imports,
for two trees side by side in one run (by default the tree before the lazy imports, a git
worktree at /work/baseline, and this one).

Every measurement is a fresh ``python -m flax_resnet1d ...`` (or ``python -c "import
flax_resnet1d"``) process with ``PYTHONPATH`` set to the tree, as a user's command runs: one
warm-up, then ``--repeats`` timed runs, the trees alternating so that a change in the machine's
load hits both; the CPU time of each process (user + system, all threads) is recorded too, as
load inflates it less than wall time. One more run per command under ``-X importtime`` lists the
modules it imported. The load average is recorded before and after (the machine may be shared).

Writes benchmarks/results/startup.{json,md}.  Usage: python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
from convert_speed import machine  # this directory is on sys.path: startup.py runs as a script
from suite import machine_name
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FIXTURE = ROOT / "parity_tests" / "data" / "mdnc" / "bottleneck_k3_c16_l222.pt"
HEAVY = ("torch", "jax", "flax", "optax", "orbax", "matplotlib", "tensorstore")
# name -> the command line after `python`; {work} is a per-tree scratch directory
COMMANDS = {
    "import flax_resnet1d": ["-c", "import flax_resnet1d"],
    "flax-resnet1d --help": ["-m", "flax_resnet1d", "--help"],
    "summary --preset encnet32": ["-m", "flax_resnet1d", "summary", "--preset", "encnet32"],
    "convert .pt -> .msgpack": ["-m", "flax_resnet1d", "convert", str(FIXTURE), "{work}/out.msgpack"],
    "convert .msgpack -> .safetensors": ["-m", "flax_resnet1d", "convert", "{work}/src.msgpack",
                                         "{work}/out.safetensors"],
}
OUTPUTS = ("out.msgpack", "out.config.json", "out.safetensors")


def command(tree: dict, name: str) -> list[str]:
    return [sys.executable, *(arg.format(work=tree["work"]) for arg in COMMANDS[name])]


def run(tree: dict, name: str, *python_flags: str) -> subprocess.CompletedProcess:
    """One fresh process of ``name`` in ``tree``, its outputs removed first (convert refuses to overwrite)."""
    for output in OUTPUTS:
        (tree["work"] / output).unlink(missing_ok=True)
    argv = command(tree, name)
    done = subprocess.run([argv[0], *python_flags, *argv[1:]], cwd=tree["root"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tree["root"])})
    if done.returncode != 0:
        raise RuntimeError(f"{tree['label']}: {name}: exit {done.returncode}: {done.stderr[-2000:]}")
    return done


def imported_packages(tree: dict, name: str) -> list[str]:
    """Top-level packages ``name`` imported, from ``-X importtime`` (one line per module on stderr)."""
    stderr = run(tree, name, "-X", "importtime").stderr
    modules = {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
               if line.startswith("import time:") and "[us]" not in line}  # not the header
    return sorted({module.split(".")[0] for module in modules})


def check_tree(tree: dict) -> None:
    """The tree's own package is the one imported (not the virtual environment's editable install)."""
    done = subprocess.run([sys.executable, "-c", "import flax_resnet1d; print(flax_resnet1d.__file__)"],
                          cwd=tree["root"], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(tree["root"])})
    if not Path(done.stdout.strip()).resolve().is_relative_to(tree["root"].resolve()):
        raise RuntimeError(f"{tree['label']}: imports {done.stdout.strip()}, not from {tree['root']}")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Start-up time of `flax-resnet1d`",
        "",
        f"Machine: {result['machine_name']} ({m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB); "
        f"Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        f"Trees: before = `{result['trees']['before']}`, after = `{result['trees']['after']}` "
        f"(`{result['commits']['after']}`).",
        f"Load: `{result['uptime_before']}` before, `{result['uptime_after']}` after (a shared machine: "
        "min is the least disturbed run).",
        f"Seconds of wall time per fresh process, median (min) of {result['repeats']} runs after a warm-up, "
        "`python -m flax_resnet1d ...` with PYTHONPATH set to the tree; *CPU s*: median user + system time of "
        "the process (all threads). *Heavy imports*: which of "
        f"{', '.join(HEAVY)} the command imported (`-X importtime`).",
        "",
        "| command | before s | after s | after / before | CPU s before | CPU s after | heavy imports before | "
        "heavy imports after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["commands"].items():
        before, after = row["before"], row["after"]
        lines.append(f"| `{name}` | {before['median_s']:.2f} ({before['min_s']:.2f}) | {after['median_s']:.2f} "
                     f"({after['min_s']:.2f}) | {after['median_s'] / before['median_s']:.2f} | "
                     f"{before['median_cpu_s']:.2f} | {after['median_cpu_s']:.2f} | "
                     f"{', '.join(before['heavy']) or 'none'} | {', '.join(after['heavy']) or 'none'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, default=Path("/work/baseline"), help="the tree to compare against")
    parser.add_argument("--after", type=Path, default=ROOT)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats {args.repeats}: at least 5")

    work = Path(tempfile.mkdtemp(prefix="startup_"))
    trees = {label: {"label": label, "root": root.resolve(), "work": work / label}
             for label, root in (("before", args.before), ("after", args.after))}
    times: dict[str, dict[str, list[float]]] = {name: {label: [] for label in trees} for name in COMMANDS}
    cpu_times: dict[str, dict[str, list[float]]] = {name: {label: [] for label in trees} for name in COMMANDS}
    imported: dict[str, dict[str, list[str]]] = {name: {} for name in COMMANDS}
    uptime_before, load_before = uptime(), os.getloadavg()
    try:
        for tree in trees.values():
            check_tree(tree)
            tree["work"].mkdir()
            run(tree, "convert .pt -> .msgpack")  # the source of the .msgpack case, written by the tree itself
            for output in ("msgpack", "config.json"):
                shutil.copy(tree["work"] / f"out.{output}", tree["work"] / f"src.{output}")
        with tqdm(total=len(COMMANDS) * len(trees) * (args.repeats + 2), desc="startup", unit="process") as progress:
            for name in COMMANDS:
                for tree in trees.values():
                    imported[name][tree["label"]] = imported_packages(tree, name)
                    run(tree, name)  # warm-up: the file cache
                    progress.update(2)
                for _ in range(args.repeats):
                    for tree in trees.values():
                        start, cpu_start = time.perf_counter(), children_cpu_s()
                        run(tree, name)
                        times[name][tree["label"]].append(time.perf_counter() - start)
                        cpu_times[name][tree["label"]].append(children_cpu_s() - cpu_start)
                        progress.update()
    finally:
        shutil.rmtree(work)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine_name": machine_name(jax.devices("cpu")[0]), "machine": machine(),
        "trees": {label: str(tree["root"]) for label, tree in trees.items()},
        "commits": {label: subprocess.run(["git", "-C", str(tree["root"]), "describe", "--always", "--dirty"],
                                          capture_output=True, text=True).stdout.strip()
                    for label, tree in trees.items()},
        "uptime_before": uptime_before, "uptime_after": uptime(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "repeats": args.repeats,
        "commands": {name: {label: {"median_s": statistics.median(values), "min_s": min(values),
                                    "max_s": max(values), "runs_s": values,
                                    "median_cpu_s": statistics.median(cpu_times[name][label]),
                                    "heavy": [p for p in imported[name][label] if p in HEAVY],
                                    "imported": imported[name][label]}
                            for label, values in times[name].items()}
                     for name in COMMANDS},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "startup.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

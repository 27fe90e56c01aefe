"""Speed of the JAX port against the PyTorch reference, side by side in one run.

For each workload (model config, batch, length) and each variant (JAX jit float32 / bf16,
torch eager float32 / bf16 autocast, ``torch.compile``; on a GPU also the pinned-float32 and
TF32 paths) it measures

- forward latency and the full train step (cross-entropy for the classifiers, MSE against a
  target series for the AE1d/UNet1d workloads, backward, Adam update): median, min and max over
  ``--repeats`` calls after warm-up, and samples/s;
- first-call compile time (JAX: trace + lower + compile; torch.compile: first call minus a
  steady call), and peak memory of the timed calls (host RSS high-water over the starting
  RSS on the CPU; allocator peak on a GPU; XLA's own buffer sizes for JAX);
- achieved GFLOP/s (and GB/s) from XLA's cost analysis of the same computation, against the
  machine's peaks measured in the same run (a large matmul under XLA and torch, a large
  copy);
- the ratios issue 15's targets are stated in, per workload (``target_summary``): step against
  torch eager and ``torch.compile`` (and the most reachable at the matmul peak), step GFLOP/s
  over forward GFLOP/s, peak memory against ``torch.compile``, bf16 times of both frameworks.

Writes ``<out>/<machine>.json``, ``<machine>.md`` (tables) and ``<machine>.png`` (bar chart).

    python benchmarks/suite.py                 # CPU workloads, results in benchmarks/results/
    python benchmarks/suite.py --quick         # fewer repeats, small peak probes: a fast sanity run
    python benchmarks/suite.py --quick --workload "B=1 L=128" --variant jax --variant "torch eager"   # a subset
    python benchmarks/suite.py --gpu           # the GPU workloads and variants (on CPU: says no GPU)
    JAX_PLATFORMS=cpu python benchmarks/suite.py --gpu --smoke --out /tmp/bench   # tiny sizes

``run_suite(workloads, out_dir, ...)`` is the same thing as a function (benchmarks/gpu_suite.py
calls it through ``run_for_gpu_suite``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from flax_resnet1d.config import AEConfig, EncoderConfig, UNetConfig, config_from_dict, preset_config
from flax_resnet1d.io import atomic
from flax_resnet1d.model import from_config
from flax_resnet1d.training import steps

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NUM_CLASSES = 32  # the spec example's out_length; every workload classifies into this many classes
LEARNING_RATE = 1e-3


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    config: object  # a family config: EncoderNet1d (classify), AE1d or UNet1d (a signal target)
    batch: int
    length: int
    forward: bool = True  # also time the forward pass (the big GPU training shapes time only the step)
    cpu_bf16: bool = False  # also run the bf16 variants (JAX bf16, torch bf16 autocast) on a CPU

    @property
    def task(self) -> str:
        return "classify" if self.config.arch == "EncoderNet1d" else "signal"

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Random inputs (B, L, C) and targets: labels, or a target series (B, L, C') for a signal."""
        rng = np.random.default_rng(0)
        x = rng.normal(size=(self.batch, self.length, self.config.in_planes)).astype(np.float32)
        if self.task == "classify":
            return x, rng.integers(0, NUM_CLASSES, self.batch).astype(np.int32)
        return x, rng.normal(size=(self.batch, self.length, self.config.out_planes)).astype(np.float32)


SPEC_EXAMPLE = EncoderConfig(64, (2,) * 5, "bottleneck", 3, 3, NUM_CLASSES)  # EncoderNet1d(64, [2]*5, in_planes=3, out_length=32)
ENCNET62 = preset_config("encnet62", in_planes=1, out_length=NUM_CLASSES)
SMALL = EncoderConfig(8, (1, 1), "bottleneck", 3, 3, NUM_CLASSES)

CPU_WORKLOADS = [
    Workload("spec B=32 L=128", SPEC_EXAMPLE, 32, 128, cpu_bf16=True),
    Workload("spec B=16 L=4096", SPEC_EXAMPLE, 16, 4096, cpu_bf16=True),
    Workload("spec B=1 L=128", SPEC_EXAMPLE, 1, 128),
    Workload("encnet62 B=32 L=1024", ENCNET62, 32, 1024, cpu_bf16=True),
]
GPU_WORKLOADS = CPU_WORKLOADS + [
    Workload("spec B=256 L=1024", SPEC_EXAMPLE, 256, 1024, forward=False),
    Workload("spec B=1024 L=128", SPEC_EXAMPLE, 1024, 128, forward=False),
]
# Signal-to-signal training (issue 35): an MDNC preset at B=16 L=1024, and the signal recipe's size
# (16 channels, 3 levels, kernel 9) at GunPoint's length.
SIGNAL_RECIPE = {"channel": 16, "layers": (2, 2, 2), "block": "bottleneck", "kernel_size": 9}
SIGNAL_WORKLOADS = [
    Workload("ae32 B=16 L=1024", preset_config("ae32", 1, 1), 16, 1024),
    Workload("unet32 B=16 L=1024", preset_config("unet32", 1, 1), 16, 1024),
    Workload("ae recipe B=16 L=150", AEConfig(**SIGNAL_RECIPE), 16, 150),
    Workload("unet recipe B=16 L=150", UNetConfig(**SIGNAL_RECIPE), 16, 150),
]
CPU_WORKLOADS += SIGNAL_WORKLOADS
SMOKE_WORKLOADS = [Workload("small B=4 L=32", SMALL, 4, 32, cpu_bf16=True), Workload("small B=1 L=32", SMALL, 1, 32)]


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    framework: str  # "jax" or "torch"
    dtype: str = "float32"  # compute dtype: JAX's model dtype, torch's autocast dtype (parameters stay float32)
    precision: str | None = None  # JAX matmul precision: None = the backend's default
    compiled: bool = False  # torch.compile
    tf32: bool | None = None  # torch: False pins float32, True allows TF32, None keeps torch's defaults


CPU_VARIANTS = [
    Variant("jax f32", "jax"),
    Variant("jax bf16", "jax", dtype="bfloat16"),
    Variant("torch eager", "torch"),
    Variant("torch.compile", "torch", compiled=True),
    Variant("torch eager bf16", "torch", dtype="bfloat16"),  # torch.autocast("cpu", torch.bfloat16)
]
GPU_VARIANTS = [
    Variant("jax f32 highest", "jax", precision="highest"),
    Variant("jax default (tf32)", "jax"),
    Variant("jax bf16", "jax", dtype="bfloat16"),
    Variant("torch eager f32", "torch", tf32=False),
    Variant("torch eager default", "torch"),
    Variant("torch.compile f32", "torch", compiled=True, tf32=False),
    Variant("torch.compile default", "torch", compiled=True),
]
BASELINE = {"cpu": "torch eager", "gpu": "torch eager f32"}  # speed-ups are relative to this variant
# The variants the issue's targets compare, by role (see target_summary).
ROLES = {
    "cpu": {"jax": "jax f32", "eager": "torch eager", "compiled": "torch.compile", "jax_bf16": "jax bf16",
            "torch_bf16": "torch eager bf16"},
    "gpu": {"jax": "jax f32 highest", "eager": "torch eager f32", "compiled": "torch.compile f32", "jax_bf16": "jax bf16",
            "torch_bf16": None},
}


# -- timing and memory -------------------------------------------------------------------------------

WARMUP_MIN_S = 1.0  # warm-up runs at least this long: small calls need dozens before their times settle


def time_calls(call: Callable[[], object], sync: Callable[[object], object], warmup: int, repeats: int) -> dict:
    """Median/min/max seconds of ``repeats`` synchronized calls after at least ``warmup`` warm-up calls
    lasting at least ``WARMUP_MIN_S`` together (allocator caches, thread pools and clocks settle)."""
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < WARMUP_MIN_S:
        sync(call())
        done += 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(call())
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


class HostPeak:
    """Peak resident memory of this process during a block, over ``baseline_kib`` (the resident
    memory before the model, data and optimizer were created; each measurement runs in a fresh
    process, so nothing of another framework or variant is resident).

    Linux resets the high-water mark when 5 is written to /proc/self/clear_refs, so compile-time
    peaks before the block do not count; elsewhere the block's peak is not measurable (None).
    """

    def __init__(self, baseline_kib: int | None):
        self.baseline_kib = baseline_kib
        self.peak_bytes = None

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.supported = self.baseline_kib is not None
        except OSError:
            self.supported = False
        return self

    def __exit__(self, *exc):
        if self.supported:
            self.peak_bytes = max(0, _status_kib("VmHWM") - self.baseline_kib) * 1024


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def xla_memory(compiled) -> dict:
    """The executable's buffers; ``total_bytes`` (arguments + outputs + temporaries, less donated
    outputs) is its device-memory footprint, exact for one call (JAX cannot reset the allocator's
    peak between measurements, so on a GPU this stands for JAX's peak memory)."""
    stats = compiled.memory_analysis()
    sizes = {"temp_bytes": stats.temp_size_in_bytes, "argument_bytes": stats.argument_size_in_bytes,
             "output_bytes": stats.output_size_in_bytes, "alias_bytes": stats.alias_size_in_bytes}
    sizes["total_bytes"] = sizes["temp_bytes"] + sizes["argument_bytes"] + sizes["output_bytes"] - sizes["alias_bytes"]
    return sizes


def xla_cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # older jax returns one dict per device
    return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


# -- JAX ------------------------------------------------------------------------------------------

def _jax_sync(out):
    return jax.block_until_ready(out)


def _precision_context(precision: str | None):
    return jax.default_matmul_precision(precision) if precision else contextlib.nullcontext()


def measure_jax(workload: Workload, variant: Variant, device, warmup: int, repeats: int, baseline_kib) -> dict:
    config = workload.config
    model = from_config(config, dtype=jnp.bfloat16 if variant.dtype == "bfloat16" else None)
    x_host, y_host = workload.arrays()
    result = {}
    with jax.default_device(device), _precision_context(variant.precision):
        x, y = jax.device_put(x_host, device), jax.device_put(y_host, device)
        params = jax.jit(model.init)(jax.random.key(0), x[:1])["params"]
        if workload.forward:
            variables = {"params": params}
            start = time.perf_counter()
            forward = jax.jit(model.apply).lower(variables, x).compile()
            result["forward"] = {"compile_s": time.perf_counter() - start, **xla_cost(forward),
                                 "xla_memory": xla_memory(forward)}
            with HostPeak(baseline_kib) as peak:
                result["forward"].update(time_calls(lambda: forward(variables, x), _jax_sync, warmup, repeats))
            result["forward"]["host_peak_bytes"] = peak.peak_bytes
        state = steps.TrainState.create(apply_fn=model.apply, params=params,
                                        tx=steps.make_optimizer("adam", LEARNING_RATE))
        batch = {"x": x, "y": y, "mask": jnp.ones((workload.batch,), jnp.float32)}
        start = time.perf_counter()
        task = steps.Task(workload.task, "cross_entropy" if workload.task == "classify" else "mse")
        step = steps.jit_train_step(steps.data_parallel_mesh([device]), task).lower(state, batch).compile()  # as `train`
        result["train"] = {"compile_s": time.perf_counter() - start, **xla_cost(step), "xla_memory": xla_memory(step)}

        def train_call():
            nonlocal state
            state, metrics = step(state, batch)
            return metrics

        with HostPeak(baseline_kib) as peak:
            result["train"].update(time_calls(train_call, _jax_sync, warmup, repeats))
        result["train"]["host_peak_bytes"] = peak.peak_bytes
    return result


# -- PyTorch --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _torch_tf32(enabled: bool | None):
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if enabled is not None:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def measure_torch(workload: Workload, variant: Variant, device: str, warmup: int, repeats: int, baseline_kib
                  ) -> dict:
    import torch

    import torch_ref

    config = workload.config
    if variant.compiled:  # a cold compile, as JAX's: no graphs or kernels from inductor's on-disk caches
        torch._inductor.config.fx_graph_cache = False
        torch._functorch.config.enable_autograd_cache = False
    torch.manual_seed(0)
    net = torch_ref.from_config(config).to(device)
    x_host, y_host = workload.arrays()
    x = torch.as_tensor(np.ascontiguousarray(np.swapaxes(x_host, 1, 2)), device=device)  # MDNC's (B, C, L)
    y = torch.as_tensor(y_host if workload.task == "classify" else np.ascontiguousarray(np.swapaxes(y_host, 1, 2)),
                        device=device)
    loss_fn = torch.nn.functional.cross_entropy if workload.task == "classify" else torch.nn.functional.mse_loss
    model = torch.compile(net) if variant.compiled else net
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)

    def sync(_):
        if device == "cuda":
            torch.cuda.synchronize()

    def autocast():  # bf16 variants: autocast's mixed precision (float32 parameters, bf16 matmuls and convolutions)
        return torch.autocast(device, torch.bfloat16, enabled=variant.dtype == "bfloat16")

    def forward():
        with torch.inference_mode(), autocast():
            return model(x)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        optimizer.step()
        return loss

    result = {}
    phases = [("forward", forward)] if workload.forward else []
    with _torch_tf32(variant.tf32):
        for phase, call in phases + [("train", train_step)]:
            start = time.perf_counter()
            sync(call())
            first = time.perf_counter() - start
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with HostPeak(baseline_kib) as peak:
                timing = time_calls(call, sync, warmup, repeats)
            result[phase] = {**timing, "host_peak_bytes": peak.peak_bytes,
                             # first call minus a steady call: graph capture and code generation
                             "compile_s": max(0.0, first - timing["median_s"]) if variant.compiled else None}
            if device == "cuda":
                result[phase]["device_peak_bytes"] = torch.cuda.max_memory_allocated()
    return result


# -- the machine's peaks --------------------------------------------------------------------------

def measure_peaks(device, torch_device: str, quick: bool, repeats: int) -> dict:
    """Peak throughput of this machine, measured now: matmul (float32 on CPU, bf16 on GPU) and copy."""
    import torch

    gpu = device.platform == "gpu"
    n = (8192 if gpu else 4096) // (2 if quick else 1)
    dtype, torch_dtype = (jnp.bfloat16, torch.bfloat16) if gpu else (jnp.float32, torch.float32)
    flops = 2.0 * n**3
    with jax.default_device(device):
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        matmul = jax.jit(lambda a, b: a @ b)
        xla = time_calls(lambda: matmul(a, a), _jax_sync, 2, repeats)
        # a copy that reads and writes 1 GiB (GPU) / 256 MiB (CPU) in place, so no fresh pages are touched
        words = (2**28 if gpu else 2**26) // (4 if quick else 1)
        buf = jnp.ones((words,), jnp.float32)
        scale = jax.jit(lambda v: v * 1.0000001, donate_argnums=0)

        def copy():
            nonlocal buf
            buf = scale(buf)
            return buf

        copy_t = time_calls(copy, _jax_sync, 2, repeats)
    ta = torch.randn(n, n, dtype=torch_dtype, device=torch_device)

    def torch_sync(_):
        if torch_device == "cuda":
            torch.cuda.synchronize()

    torch_t = time_calls(lambda: ta @ ta, torch_sync, 2, repeats)
    kind = "bf16" if gpu else "f32"
    return {
        f"xla_{kind}_matmul_gflops": flops / xla["min_s"] / 1e9,
        f"torch_{kind}_matmul_gflops": flops / torch_t["min_s"] / 1e9,
        "copy_gbs": 2 * 4 * words / copy_t["min_s"] / 1e9,
        "matmul_n": n,
        "peak_gflops": flops / xla["min_s"] / 1e9,  # the reference for "% of peak"
    }


# -- environment ------------------------------------------------------------------------------------

def cpu_fields() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "cpu family", ...); {} where unreadable."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}


def machine_name(device) -> str:
    if device.platform == "gpu":
        return "gpu-" + re.sub(r"[^a-z0-9]+", "-", device.device_kind.lower()).strip("-")
    model = cpu_fields().get("model name") or platform.processor() or platform.machine()
    model = re.sub(r"\((r|tm|R|TM)\)|cpu|processor|@.*", "", model, flags=re.IGNORECASE)
    return f"cpu-{len(os.sched_getaffinity(0))}core-" + re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")


def environment(device, torch_device: str) -> dict:
    import flax
    import optax
    import torch

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__, "torch": torch.__version__,
        "device": f"{device.platform}: {device.device_kind}",
        "gpu_present": device.platform == "gpu" and torch_device == "cuda",
        "cpu_cores_available": len(os.sched_getaffinity(0)),
        # XLA's CPU runtime sizes its intra-op thread pool to the cores available to the process
        "xla_cpu_threads": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", ""),
        "load_average_start": os.getloadavg(),
    }
    if env["gpu_present"]:
        env["gpu_name"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    return env


# -- the suite ------------------------------------------------------------------------------------

def run_suite(workloads: list[Workload], out_dir: Path | str, *, variants: list[Variant] | None = None,
              gpu: bool | None = None, quick: bool = False, repeats: int = 10, warmup: int = 2,
              machine: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Measure every workload with every variant; write ``<machine>.json/.md/.png`` to ``out_dir``.

    ``gpu=None`` uses a GPU when both JAX and torch see one; ``gpu=True`` selects the GPU variants
    even without one (they then run on the CPU and the results say that no GPU is present).
    """
    import torch

    jax_gpus = [d for d in jax.devices() if d.platform == "gpu"]
    gpu_present = bool(jax_gpus) and torch.cuda.is_available()
    gpu = gpu_present if gpu is None else gpu
    on_gpu = gpu_present and gpu  # GPU variants requested and a GPU to run them on
    device = jax_gpus[0] if on_gpu else jax.devices("cpu")[0]
    torch_device = "cuda" if on_gpu else "cpu"
    variants = variants or (GPU_VARIANTS if gpu else CPU_VARIANTS)
    env = environment(device, torch_device)
    if gpu and not gpu_present:
        log("no GPU present: running the GPU variants on the CPU (code paths only; these are not GPU numbers)")
    log(f"device {env['device']}; XLA CPU threads {env['xla_cpu_threads']}, torch threads {env['torch_threads']}; "
        f"load average {env['load_average_start'][0]:.2f}")
    peaks = measure_peaks(device, torch_device, quick, repeats)
    log("peaks: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    rows = []
    tasks = [(w, v) for w in workloads for v in variants if v.dtype != "bfloat16" or gpu or w.cpu_bf16]
    for workload, variant in tqdm(tasks, desc="benchmarks", unit="run", file=sys.stderr):
        measured = run_worker(workload, variant, on_gpu, warmup, repeats)
        rows.append({"workload": workload.name, "config": workload.config.to_dict(), "batch": workload.batch,
                     "length": workload.length, "variant": variant.name, **measured})
    _add_derived(rows, peaks, BASELINE["gpu" if gpu else "cpu"])
    env["load_average_end"] = os.getloadavg()
    if machine is None:  # never let a quick, smoke or stand-in run overwrite a machine's full results
        machine = machine_name(device) + ("-gpu-variants-no-gpu" if gpu and not gpu_present else "") + (
            "-quick" if quick else "")
    results = {"machine": machine, "environment": env, "peaks": peaks,
               "settings": {"repeats": repeats, "warmup": warmup, "quick": quick, "learning_rate": LEARNING_RATE,
                            "optimizer": "Adam (optax.adam / torch.optim.Adam defaults)",
                            "flops_source": "XLA cost analysis of the JAX float32 computation"},
               "rows": rows}
    results["targets"] = target_summary(results)
    write_results(results, Path(out_dir))
    return results


def run_worker(workload: Workload, variant: Variant, gpu: bool, warmup: int, repeats: int) -> dict:
    """One measurement in a fresh process (``--worker``): clean memory high-water marks and cold
    compiles, with no threads, caches or freed memory left over from other variants."""
    task = {"workload": {**dataclasses.asdict(workload), "config": workload.config.to_dict()},
            "variant": dataclasses.asdict(variant), "gpu": gpu, "warmup": warmup, "repeats": repeats}
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(task)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{workload.name} / {variant.name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_main(task_json: str) -> None:
    """``--worker``: measure one (workload, variant) and print the result as one JSON line."""
    task = json.loads(task_json)
    spec = task["workload"]
    workload = Workload(**{**spec, "config": config_from_dict(spec["config"])})
    variant = Variant(**task["variant"])
    timing = (task["warmup"], task["repeats"])
    if variant.framework == "jax":
        device = jax.devices("gpu" if task["gpu"] else "cpu")[0]  # starts the backend before the baseline
        measured = measure_jax(workload, variant, device, *timing, baseline_kib=_status_kib("VmRSS"))
    else:
        import torch  # noqa: F401  (imported before the baseline is read)

        measured = measure_torch(workload, variant, "cuda" if task["gpu"] else "cpu", *timing,
                                 baseline_kib=_status_kib("VmRSS"))
    print(json.dumps(measured))


def _add_derived(rows: list[dict], peaks: dict, baseline: str) -> None:
    """samples/s, achieved GFLOP/s and GB/s, % of peak, speed-up over the baseline variant.

    The work of a workload is counted once, by XLA's cost analysis of the JAX float32 computation,
    and divided by each variant's median time (torch computes the same function).
    """
    work = {}
    for row in rows:
        for phase in ("forward", "train"):
            if phase in row and "flops" in row[phase] and row["variant"].startswith("jax") and "bf16" not in row["variant"]:
                work.setdefault((row["workload"], phase), (row[phase]["flops"], row[phase]["bytes"]))
    base = {(r["workload"], p): r[p]["median_s"] for r in rows if r["variant"] == baseline for p in ("forward", "train")
            if p in r}
    for row in rows:
        for phase in ("forward", "train"):
            if phase not in row:
                continue
            m = row[phase]
            m["samples_per_s"] = row["batch"] / m["median_s"]
            flops, nbytes = work.get((row["workload"], phase), (None, None))
            if flops:
                m["gflops"] = flops / m["median_s"] / 1e9
                m["percent_of_peak"] = 100 * m["gflops"] / peaks["peak_gflops"]
                m["gbs"] = nbytes / m["median_s"] / 1e9
            if (row["workload"], phase) in base:
                m["speedup_vs_baseline"] = base[(row["workload"], phase)] / m["median_s"]


def target_summary(results: dict) -> list[dict]:
    """Per workload, the quantities issue 15's targets are stated in (None where a variant did not run):

    - ``step_vs_compiled`` / ``step_vs_eager``: torch's train-step time over JAX's (targets >= 1.25, >= 1.5);
      ``step_vs_compiled_at_peak``: the same if JAX's step ran at 100% of the measured XLA matmul peak
      (its FLOPs / the peak), the most any implementation of these FLOPs can reach here;
    - ``fastest_torch_f32_vs_jax``: the fastest float32 torch variant's time over JAX's, forward and
      step (target: >= 1, no torch variant ahead);
    - ``step_over_forward_gflops``: the train step's GFLOP/s over the forward's (target >= 0.75);
    - ``peak_memory_vs_compiled``: JAX's train-step peak memory over ``torch.compile``'s (target <= 1);
    - ``bf16``: JAX bf16 and torch bf16 (autocast) times, forward and step.
    """
    roles = ROLES["gpu" if results["environment"]["gpu_present"] else "cpu"]
    by = {(r["workload"], r["variant"]): r for r in results["rows"]}
    torch_f32 = [v for v in dict.fromkeys(r["variant"] for r in results["rows"])
                 if v.startswith("torch") and "bf16" not in v and v != roles["torch_bf16"]]
    peak_key = "device_peak_bytes" if results["environment"]["gpu_present"] else "host_peak_bytes"

    def get(workload, variant, phase, key="median_s"):
        row = by.get((workload, variant))
        return row[phase].get(key) if row and phase in row else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    summary = []
    for workload in dict.fromkeys(r["workload"] for r in results["rows"]):
        jax_step, compiled_step = get(workload, roles["jax"], "train"), get(workload, roles["compiled"], "train")
        flops = get(workload, roles["jax"], "train", "flops")
        floor_s = flops / (results["peaks"]["peak_gflops"] * 1e9) if flops else None
        fastest = {}
        for phase in ("forward", "train"):
            times = [t for t in (get(workload, v, phase) for v in torch_f32) if t is not None]
            fastest[phase] = ratio(min(times), get(workload, roles["jax"], phase)) if times else None
        jax_peak = get(workload, roles["jax"], "train", peak_key)
        if results["environment"]["gpu_present"] and by.get((workload, roles["jax"])):
            jax_peak = by[(workload, roles["jax"])]["train"]["xla_memory"]["total_bytes"]
        summary.append({
            "workload": workload,
            "step_vs_compiled": ratio(compiled_step, jax_step),
            "step_vs_eager": ratio(get(workload, roles["eager"], "train"), jax_step),
            "step_floor_s": floor_s,
            "step_vs_compiled_at_peak": ratio(compiled_step, floor_s),
            "fastest_torch_f32_vs_jax": fastest,
            "step_over_forward_gflops": ratio(get(workload, roles["jax"], "train", "gflops"),
                                              get(workload, roles["jax"], "forward", "gflops")),
            "peak_memory_vs_compiled": ratio(jax_peak, get(workload, roles["compiled"], "train", peak_key)),
            "bf16": {f"{side}_{phase}_s": get(workload, roles[side], phase) for side in ("jax_bf16", "torch_bf16")
                     for phase in ("forward", "train")},
        })
    return summary


# -- reports ---------------------------------------------------------------------------------------

def _ms(m: dict) -> str:
    return f"{m['median_s'] * 1e3:.1f} ({m['min_s'] * 1e3:.1f}-{m['max_s'] * 1e3:.1f})"


def _mb(value) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def markdown(results: dict) -> str:
    env, peaks = results["environment"], results["peaks"]
    lines = [f"# Benchmarks: {results['machine']}", "",
             f"{env['date']}; {env['device']}; {env['platform']}; jax {env['jax']}, flax {env['flax']}, "
             f"torch {env['torch']}. XLA CPU threads {env['xla_cpu_threads']}, torch threads {env['torch_threads']}. "
             f"Load average at start {env['load_average_start'][0]:.2f}, at end {env['load_average_end'][0]:.2f}.",
             f"XLA_FLAGS={env['XLA_FLAGS']!r}, GLIBC_TUNABLES={env['GLIBC_TUNABLES']!r}.", "",
             "Peaks measured in this run: " + ", ".join(f"{k} = {v:.0f}" for k, v in peaks.items()) + ".", "",
             f"Times in ms: median (min-max) of {results['settings']['repeats']} calls after "
             f"at least {results['settings']['warmup']} warm-up calls lasting at least {WARMUP_MIN_S:.0f} s. GFLOP/s = XLA's FLOP count of the float32 "
             "computation / median time; % of the XLA matmul peak above. Speed-up is over "
             f"`{BASELINE['gpu' if env['gpu_present'] else 'cpu']}`. Each measurement runs in a fresh process. "
             "Peak MB on a CPU: the process's resident-memory high-water mark during the timed calls minus its "
             "resident memory before the model was built (parameters, optimizer state, activations, allocator "
             "caches and compiled code); on a GPU, torch's allocator peak and, for JAX, the executable's buffers "
             "(arguments + outputs + temporaries). XLA temp MB: XLA's temporaries alone.", ""]
    for phase, title in (("train", "Train step (loss, backward, Adam)"), ("forward", "Forward")):
        lines += [f"## {title}", "",
                  "| workload | variant | ms | samples/s | GFLOP/s | % peak | speed-up | compile s | peak MB | XLA temp MB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in results["rows"]:
            if phase not in row:
                continue
            m = row[phase]
            compile_s = "-" if m.get("compile_s") is None else f"{m['compile_s']:.1f}"
            peak = m.get("device_peak_bytes") if env["gpu_present"] else m.get("host_peak_bytes")
            if env["gpu_present"] and "xla_memory" in m:
                peak = m["xla_memory"]["total_bytes"]
            lines.append(
                f"| {row['workload']} | {row['variant']} | {_ms(m)} | {m['samples_per_s']:.0f} | "
                f"{m.get('gflops', 0):.0f} | {m.get('percent_of_peak', 0):.0f} | "
                f"{m.get('speedup_vs_baseline', float('nan')):.2f} | {compile_s} | {_mb(peak)} | "
                f"{_mb(m['xla_memory']['temp_bytes']) if 'xla_memory' in m else '-'} |")
        lines.append("")
    lines += _targets_markdown(results)
    return "\n".join(lines)


def _fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _targets_markdown(results: dict) -> list[str]:
    roles = ROLES["gpu" if results["environment"]["gpu_present"] else "cpu"]
    lines = ["## Targets (issue 15)", "",
             f"Ratios of this run's medians. Step vs `{roles['compiled']}` / `{roles['eager']}`: torch's step time over "
             f"`{roles['jax']}`'s (targets >= 1.25 / >= 1.5); *at peak*: `{roles['compiled']}`'s time over JAX's FLOPs at "
             "100% of the XLA matmul peak above, the most any implementation of these FLOPs reaches on this machine. "
             "Fastest torch f32: the fastest float32 torch variant's time over JAX's (>= 1: JAX ahead; target: no "
             "torch variant ahead). Step/forward GFLOP/s: target >= 0.75. Peak memory: JAX's train-step peak over "
             f"`{roles['compiled']}`'s (target <= 1). bf16: `{roles['jax_bf16']}` and `{roles['torch_bf16']}` medians "
             "in ms (forward / step).", "",
             "| workload | step vs compile | step vs eager | step vs compile at peak | fastest torch f32 vs JAX (fwd / step) "
             "| step/forward GFLOP/s | peak memory vs compile | JAX bf16 ms (fwd / step) | torch bf16 ms (fwd / step) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in results.get("targets") or target_summary(results):
        bf16 = t["bf16"]
        ms = {k: None if v is None else v * 1e3 for k, v in bf16.items()}
        lines.append(
            f"| {t['workload']} | {_fmt(t['step_vs_compiled'])} | {_fmt(t['step_vs_eager'])} | "
            f"{_fmt(t['step_vs_compiled_at_peak'])} | {_fmt(t['fastest_torch_f32_vs_jax']['forward'])} / "
            f"{_fmt(t['fastest_torch_f32_vs_jax']['train'])} | {_fmt(t['step_over_forward_gflops'])} | "
            f"{_fmt(t['peak_memory_vs_compiled'])} | {_fmt(ms['jax_bf16_forward_s'], '.1f')} / "
            f"{_fmt(ms['jax_bf16_train_s'], '.1f')} | {_fmt(ms['torch_bf16_forward_s'], '.1f')} / "
            f"{_fmt(ms['torch_bf16_train_s'], '.1f')} |")
    return lines + [""]


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    width = 0.8 / len(variants)
    for ax, phase, title in zip(axes, ("train", "forward"), ("train step", "forward")):
        for i, variant in enumerate(variants):
            # NaN where a variant did not run on a workload: no bar and no label (not a 0.00 bar)
            speedups = [next((r[phase].get("speedup_vs_baseline", np.nan) for r in rows
                              if r["workload"] == w and r["variant"] == variant and phase in r), np.nan)
                        for w in workloads]
            bars = ax.bar(np.arange(len(workloads)) + i * width, speedups, width, label=variant)
            ax.bar_label(bars, labels=["" if np.isnan(s) else f"{s:.2f}" for s in speedups], fontsize=7, padding=1)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(workloads)) + 0.4 - width / 2, workloads, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(f"speed-up over {BASELINE['gpu' if results['environment']['gpu_present'] else 'cpu']} "
                      "(higher is better)")
        ax.set_title(f"{title}: {results['machine']}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    atomic.save_figure(fig, path, dpi=110)


def write_results(results: dict, out_dir: Path) -> None:
    """JSON, markdown and PNG, each written to a temporary name and renamed into place."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / results["machine"]
    atomic.write_text(f"{stem}.json", json.dumps(results, indent=1) + "\n")
    atomic.write_text(f"{stem}.md", markdown(results))
    plot(results, f"{stem}.png")


def run_for_gpu_suite(out_dir: Path, gpu: bool, smoke: bool, log: Callable[[str], None]) -> tuple[dict, str]:
    """The GPU issue's benchmarks for benchmarks/gpu_suite.py: (results, markdown)."""
    workloads = SMOKE_WORKLOADS if smoke else GPU_WORKLOADS
    results = run_suite(workloads, out_dir, gpu=True, quick=smoke, repeats=3 if smoke else 10,
                        warmup=1 if smoke else 2, log=log)
    return results, markdown(results)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory (default benchmarks/results)")
    parser.add_argument("--gpu", action="store_true", help="GPU workloads and variants (on a machine without a GPU "
                        "they run on the CPU and the results say so)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up, small peak probes")
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes (checks the code paths)")
    parser.add_argument("--repeats", type=int, help="timed calls per measurement (default 10, --quick 3)")
    parser.add_argument("--workload", action="append", help="run only workloads whose name contains this (repeatable)")
    parser.add_argument("--variant", action="append", help="run only variants whose name contains this (repeatable)")
    parser.add_argument("--machine", help="name of the results files (default: derived from the device)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one measurement, see run_worker
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    workloads = SMOKE_WORKLOADS if args.smoke else GPU_WORKLOADS if args.gpu else CPU_WORKLOADS
    if args.workload:
        workloads = [w for w in workloads if any(s in w.name for s in args.workload)]
        if not workloads:
            parser.error(f"no workload matches {args.workload}")
    variants = None
    if args.variant:
        variants = [v for v in (GPU_VARIANTS if args.gpu else CPU_VARIANTS) if any(s in v.name for s in args.variant)]
        if not variants:
            parser.error(f"no variant matches {args.variant}")
    short = args.quick or args.smoke
    machine = args.machine or (f"{machine_name(jax.devices()[0])}-smoke" if args.smoke else None)
    results = run_suite(workloads, args.out, variants=variants, gpu=args.gpu or None, quick=short, machine=machine,
                        repeats=args.repeats or (3 if short else 10), warmup=1 if short else 2)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU evidence in one run: parity of the Flax port against the PyTorch reference on the GPU
(pinned float32, float64, the frameworks' default TF32 paths, bf16, GPU vs CPU JAX) and the
benchmark suite's GPU workloads. Writes ``gpu_suite.json`` and ``gpu_suite.md`` to ``--out``.

    PYTHONPATH=. python benchmarks/gpu_suite.py --out "$OUT"          # on the GPU machine
    JAX_PLATFORMS=cpu python benchmarks/gpu_suite.py --smoke --out /tmp/gpu   # no GPU: CPU stand-in

Without a GPU it says so in its results and runs every code path on the CPU (small sizes
with ``--smoke``), so the script itself is tested in CI's absence of a GPU.

Errors are ``max|a-b| / max|b|``. Every variant is also scored against the float64 CPU
reference ("truth"); the tolerance a variant meets is the smallest power of ten above its
worst error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from flax_resnet1d import port
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.parity import TOLERANCES, compare, flax_outputs, random_state_dict, torch_outputs

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "parity_tests" / "data" / "mdnc"
if not FIXTURES.is_dir():  # a checkout beside ../shared (development)
    FIXTURES = REPO.parent / "shared" / "fixtures" / "mdnc"
# Randomized configs beside the fixtures: both blocks, kernels 1/3/5/7, feature-map and vector heads.
RANDOM_CASES = [
    (EncoderConfig(16, (2, 1, 2), "bottleneck", 3, 3, 7), 4, 75),
    (EncoderConfig(8, (1, 2, 1, 1), "plain", 5, 2, None), 3, 96),
    (EncoderConfig(12, (1, 1), "bottleneck", 7, 1, 4), 5, 41),
    (EncoderConfig(8, (2, 2), "plain", 1, 4, 3), 2, 16),
    (EncoderConfig(64, (2,) * 5, "bottleneck", 3, 3, 32), 8, 128),  # the spec's example
]


def gpu_devices() -> tuple[list, bool]:
    """(JAX GPU devices, torch CUDA available)."""
    try:
        jax_gpus = jax.devices("gpu")
    except RuntimeError:
        jax_gpus = []
    try:
        import torch

        torch_cuda = torch.cuda.is_available()
    except ImportError:
        torch_cuda = False
    return jax_gpus, torch_cuda


def environment(jax_gpus: list, torch_cuda: bool) -> dict:
    import flax
    import optax
    import torch

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "torch": torch.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "gpu_present": bool(jax_gpus and torch_cuda),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if torch_cuda:
        env.update(torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   gpu_name=torch.cuda.get_device_name(0))
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        env["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as e:
        env["nvidia_smi"] = f"unavailable ({type(e).__name__})"
    return env


@contextlib.contextmanager
def torch_tf32(enabled: bool):
    """Set both torch TF32 switches (matmul and cuDNN convolutions), restoring them after."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def torch_default_tf32():
    """torch's own defaults: TF32 for cuDNN convolutions, not for matmuls."""
    with torch_tf32(False):
        import torch

        torch.backends.cudnn.allow_tf32 = True
        yield


def cases(smoke: bool):
    """(name, state dict, config, x (B, C, L)) for the fixtures and the randomized configs."""
    rng = np.random.default_rng(0)
    fixtures = sorted(FIXTURES.glob("*.pt"))
    for path in fixtures[:1] if smoke else fixtures:
        from flax_resnet1d.io.readers import load_state_dict

        sd = load_state_dict(path)
        x = np.load(path.with_suffix(".npz"))["x"].astype(np.float64)
        yield path.stem, sd, port.infer_config(sd), x
    for i, (config, batch, length) in enumerate(RANDOM_CASES[:1] if smoke else RANDOM_CASES):
        x = rng.normal(size=(batch, config.in_planes, length))
        yield f"random{i}_{config.block}_k{config.kernel_size}_c{config.channel}", random_state_dict(config, i), config, x


def variants(jax_gpu, jax_cpu, torch_device: str):
    """name -> function(sd, config, x, cotangent) -> Outputs. Precision is pinned per variant."""
    on_gpu = contextlib.nullcontext if jax_gpu is None else (lambda: jax.default_device(jax_gpu))

    def jax_run(dtype, device_ctx, **kwargs):
        def run(sd, config, x, ct):
            with device_ctx():
                return flax_outputs(sd, config, x, ct, dtype, **kwargs)
        return run

    def torch_run(dtype, tf32_ctx, autocast=None):
        def run(sd, config, x, ct):
            with tf32_ctx():
                return torch_outputs(sd, config, x, ct, dtype, device=torch_device, autocast=autocast)
        return run

    pinned = lambda: torch_tf32(False)  # noqa: E731
    return {
        "jax f32 highest": jax_run("float32", on_gpu, precision="highest"),
        "torch f32 no-tf32": torch_run("float32", pinned),
        "jax f64": jax_run("float64", on_gpu),
        "torch f64": torch_run("float64", pinned),
        "jax f32 default (TF32)": jax_run("float32", on_gpu),
        "torch f32 default (TF32 convs)": torch_run("float32", torch_default_tf32),
        "jax bf16 compute": jax_run("float32", on_gpu, compute_dtype=jnp.bfloat16),
        "torch bf16 autocast": torch_run("float32", pinned, autocast="bfloat16"),
        "jax f32 highest on CPU": jax_run("float32", lambda: jax.default_device(jax_cpu), precision="highest"),
    }


# (ours, reference, dtype of the noise floor, required tolerances or None = measured only)
PAIRS = [
    ("jax f32 highest", "torch f32 no-tf32", "float32", TOLERANCES["float32"]),
    ("jax f64", "torch f64", "float64", TOLERANCES["float64"]),
    ("jax f32 highest", "jax f32 highest on CPU", "float32", TOLERANCES["float32"]),
    ("jax f32 default (TF32)", "torch f32 default (TF32 convs)", "float32", None),
    ("jax bf16 compute", "torch bf16 autocast", "float32", None),
]


def run_parity(jax_gpu, jax_cpu, torch_device: str, smoke: bool, log) -> list[dict]:
    rows = []
    runners = variants(jax_gpu, jax_cpu, torch_device)
    for name, sd, config, x in cases(smoke):
        t0 = time.perf_counter()
        ct = np.random.default_rng(1).normal(size=(
            (x.shape[0], config.out_length) if config.out_length is not None
            else (x.shape[0], config.out_channels, config.feature_length(x.shape[2]))))
        truth = torch_outputs(sd, config, x, ct, "float64", device="cpu")
        results = {v: run(sd, config, x, ct) for v, run in runners.items()}
        for v, out in results.items():
            for r in compare(out, truth, "float32" if "f64" not in v else "float64"):
                rows.append(dict(case=name, ours=v, ref="truth (torch f64 CPU)", quantity=r.quantity,
                                 abs_err=r.abs_err, rel_err=r.rel_err, tol=None, passed=None))
        for ours, ref, dtype, tol in PAIRS:
            for r in compare(results[ours], results[ref], dtype, {dtype: tol or TOLERANCES[dtype]}):
                rows.append(dict(case=name, ours=ours, ref=ref, quantity=r.quantity, abs_err=r.abs_err,
                                 rel_err=r.rel_err, tol=r.tol if tol is not None else None,
                                 passed=r.passed if tol is not None else None))
        log(f"parity {name}: {time.perf_counter() - t0:.1f}s")
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Worst error per (ours, ref, quantity) over all cases, with the tolerance met."""
    worst: dict[tuple, dict] = {}
    for r in rows:
        key = (r["ours"], r["ref"], r["quantity"])
        if key not in worst or r["rel_err"] > worst[key]["rel_err"]:
            worst[key] = r
    out = []
    for (ours, ref, quantity), r in worst.items():
        met = 10.0 ** math.ceil(math.log10(r["rel_err"])) if r["rel_err"] > 0 else 0.0
        passed = all(x["passed"] for x in rows if (x["ours"], x["ref"], x["quantity"]) == (ours, ref, quantity)
                     and x["passed"] is not None) if r["tol"] is not None else None
        out.append(dict(ours=ours, ref=ref, quantity=quantity, worst_rel_err=r["rel_err"], worst_case=r["case"],
                        tolerance_met=met, required=r["tol"], passed=passed))
    return out


def markdown(env: dict, summary: list[dict], bench_md: str | None) -> str:
    lines = ["# GPU suite results", "", f"- device: {env.get('gpu_name') or 'no GPU present (CPU stand-in run)'}",
             f"- nvidia-smi: {env['nvidia_smi']}",
             f"- jax {env['jax']}, flax {env['flax']}, optax {env['optax']}, torch {env['torch']}"
             + (f" (CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')})" if env.get("torch_cuda") else ""),
             f"- date: {env['date']}", "", "## Parity (worst over all cases)", "",
             "| ours | reference | quantity | worst rel. error | tolerance met | required | result |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        result = "" if s["passed"] is None else ("PASS" if s["passed"] else "FAIL")
        required = "" if s["required"] is None else f"{s['required']:.0e}"
        lines.append(f"| {s['ours']} | {s['ref']} | {s['quantity']} | {s['worst_rel_err']:.2e} | "
                     f"{s['tolerance_met']:.0e} | {required} | {result} |")
    if bench_md:
        lines += ["", "## Benchmarks", "", bench_md]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for gpu_suite.json / .md")
    parser.add_argument("--smoke", action="store_true",
                        help="one fixture and one random case, tiny benchmark sizes (CPU stand-in)")
    parser.add_argument("--skip-bench", action="store_true", help="parity only")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "gpu_suite.log"

    def log(msg):
        print(msg, flush=True)
        with open(log_path, "a") as f:
            f.write(msg + "\n")

    jax_gpus, torch_cuda = gpu_devices()
    env = environment(jax_gpus, torch_cuda)
    if not env["gpu_present"]:
        log("NO GPU PRESENT: running every code path on the CPU as a stand-in; these are not GPU results.")
    jax_gpu = jax_gpus[0] if jax_gpus else None
    rows = run_parity(jax_gpu, jax.devices("cpu")[0], "cuda" if torch_cuda else "cpu", args.smoke, log)
    summary = summarize(rows)
    bench, bench_md = None, None
    if not args.skip_bench:
        bench, bench_md = run_benchmarks(args.out, gpu=env["gpu_present"], smoke=args.smoke, log=log)
    results = dict(environment=env, parity_summary=summary, parity_rows=rows, benchmarks=bench)
    (args.out / "gpu_suite.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "gpu_suite.md").write_text(markdown(env, summary, bench_md))
    failed = [s for s in summary if s["passed"] is False]
    for s in failed:
        log(f"FAIL {s['ours']} vs {s['ref']} {s['quantity']}: {s['worst_rel_err']:.2e} > {s['required']:.0e}")
    log(f"wrote {args.out / 'gpu_suite.json'} and gpu_suite.md; parity {'FAILED' if failed else 'passed'}")
    return 1 if failed else 0


def run_benchmarks(out_dir: Path, gpu: bool, smoke: bool, log):
    """The benchmark suite's GPU workloads (benchmarks/suite.py), same script as on CPU."""
    sys.path.insert(0, str(REPO))
    from benchmarks import suite

    return suite.run_for_gpu_suite(out_dir, gpu=gpu, smoke=smoke, log=log)


if __name__ == "__main__":
    sys.exit(main())

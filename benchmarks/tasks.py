"""Every task against honest baselines, with the default recipe (3 seeds, mean +- std):

- regression: Covid3Month and CardanoSentiment (the archive's regression sets aeon ships) and a
  set with a known answer (a noisy sinusoid's frequency): test RMSE in the targets' units against
  the training-mean predictor and ridge regression (RidgeCV, its alpha chosen by leave-one-out on
  the training split) on the z-normalized series;
- denoising: UNet1d and AE1d trained with ``--noise 0.5`` on an archive set's z-normalized series
  (the series itself the target), scored on its test series with fixed noise of std 0.5: SNR gain
  over the noisy input, against the best moving average and Savitzky-Golay filter chosen on the
  training split; a picture of noisy / clean / denoised;
- fine-tuning: a classifier pretrained on one archive set, fine-tuned on another (``--init``, the
  head re-initialized) against training from scratch with the same budget: test accuracy per epoch.

Nothing is selected on test data. Writes ``benchmarks/results/tasks.{json,md,png}`` and
``tasks-denoise.png``.

    python benchmarks/tasks.py                    # the default recipe's epochs, 3 seeds (long on a CPU)
    python benchmarks/tasks.py --epochs 100       # every run capped at 100 epochs (the results say so)
    python benchmarks/tasks.py --finetune-seeds 0 1 # fine-tuning with seeds 0-1 only (each pretrains ~5-10 min)
    python benchmarks/tasks.py --only finetuning --finetune-seeds 2   # add a seed, keep the rest of tasks.json
    python benchmarks/tasks.py --smoke --out /tmp/tasks   # 2 epochs, 1 seed: checks the code paths
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from flax_resnet1d.io import atomic
from flax_resnet1d.training import data, loop
from flax_resnet1d.training.run_config import data_spec, sized, train_config

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REGRESSION = ("Covid3Month", "CardanoSentiment", "sinusoid-frequency")
DENOISE_SET, NOISE = "GunPoint", 0.5
DENOISE_ARCHS = ("UNet1d", "AE1d")
PRETRAIN, FINETUNE, FINETUNE_EPOCHS = "OSULeaf", "ArrowHead", 100  # both univariate; the head differs (6 vs 3 classes)


def sinusoid_set(folder: str) -> str:
    """A regression set with a known answer: y = the frequency (1-10 cycles) of a sinusoid of
    random phase and amplitude in noise of std 0.5, 128 steps; 400 train, 200 test series."""
    rng = np.random.default_rng(123)
    paths = []
    for split, n in (("train", 400), ("test", 200)):
        frequency = rng.uniform(1, 10, n)
        t = np.arange(128) / 128
        x = (rng.uniform(0.5, 2, (n, 1)) * np.sin(2 * np.pi * frequency[:, None] * t + rng.uniform(0, 2 * np.pi, (n, 1)))
             + 0.5 * rng.standard_normal((n, 128)))
        paths.append(os.path.join(folder, f"sinusoid-{split}.npz"))
        np.savez(paths[-1], x=x[:, None, :], y=frequency)
    return paths


def fit(given: dict, run_dir: str, capped: int | None) -> tuple[loop.FitResult, data.Dataset, object]:
    """``train``'s own path: the options given, the recipe for the rest (epochs capped if asked)."""
    spec = data_spec(given, given.get("arch"))
    spec, dataset = sized(given, spec, data.load(spec))
    config = train_config({**given, **({"epochs": capped} if capped else {})}, spec, dataset,
                          *given.get("_init", (None, None)))
    return loop.fit(config, dataset, run_dir, progress=False), dataset, config


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def regression(name: str, folder: str, seeds: list[int], capped: int | None) -> dict:
    from sklearn.linear_model import RidgeCV

    if name == "sinusoid-frequency":
        train, test = sinusoid_set(folder)
        given = {"dataset": train, "test_data": test}
    else:
        given = {"dataset": name}
    networks = []
    for seed in seeds:
        result, dataset, config = fit({**given, "seed": seed}, os.path.join(folder, f"{name}-{seed}"), capped)
        networks.append(result.history[-1]["test_rmse"])
    units = dataset.target_scale.units
    y_train, y_test = units(dataset.y_train), units(dataset.y_test)
    series = [data.znormalize(x, axis=1).reshape(len(x), -1) for x in (dataset.x_train, dataset.x_test)]
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(series[0], y_train)
    return {"task": "regress", "data": name, "epochs": config.epochs, "train": len(y_train), "test": len(y_test),
            "network_rmse": networks, "mean_predictor_rmse": rmse(np.broadcast_to(y_train.mean(0), y_test.shape), y_test),
            "ridge_rmse": rmse(ridge.predict(series[1]), y_test), "ridge_alpha": float(ridge.alpha_)}


def snr_db(estimate: np.ndarray, clean: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(clean ** 2) / np.sum((estimate - clean) ** 2)))


def denoised_gain(config, state, noisy: np.ndarray, clean: np.ndarray) -> tuple[float, np.ndarray]:
    """The SNR gain (dB) of the network's outputs for ``noisy`` over ``noisy`` itself, and the outputs."""
    outputs = loop.evaluate_splits(config, state, {"noisy": (noisy, clean)})["noisy"].outputs
    return snr_db(outputs, clean) - snr_db(noisy, clean), outputs


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 1, the ends averaged over the steps that exist."""
    kernel = np.ones(window)
    sums = np.apply_along_axis(lambda s: np.convolve(s, kernel, "same"), 1, x)
    counts = np.convolve(np.ones(x.shape[1]), kernel, "same")[None, :, None]
    return sums / counts


def best_filters(noisy: np.ndarray, clean: np.ndarray) -> dict:
    """The moving-average window and Savitzky-Golay (window, order) of the best SNR on the given
    (training) series."""
    from scipy.signal import savgol_filter

    windows = range(3, 32, 2)
    ma = max(windows, key=lambda w: snr_db(moving_average(noisy, w), clean))
    sg = max(((w, o) for w in windows for o in (1, 2, 3, 4) if o < w),
             key=lambda p: snr_db(savgol_filter(noisy, p[0], p[1], axis=1), clean))
    return {"moving_average": lambda x: moving_average(x, ma), "savitzky_golay": lambda x: savgol_filter(
        x, sg[0], sg[1], axis=1), "chosen": {"moving_average_window": ma, "savitzky_golay": list(sg)}}


def denoising(arch: str, folder: str, seeds: list[int], capped: int | None) -> dict:
    archive = data.load_archive(DENOISE_SET)
    rng = np.random.default_rng(7)  # the fixed noise of the scored series
    noisy_train = archive.x_train + NOISE * rng.standard_normal(archive.x_train.shape).astype(np.float32)
    noisy_test = archive.x_test + NOISE * rng.standard_normal(archive.x_test.shape).astype(np.float32)
    filters = best_filters(noisy_train, archive.x_train)
    np.savez(os.path.join(folder, "denoise-train.npz"), x=np.swapaxes(archive.x_train, 1, 2))  # no y: x is the target
    np.savez(os.path.join(folder, "denoise-test.npz"), x=np.swapaxes(archive.x_test, 1, 2))
    given = {"dataset": os.path.join(folder, "denoise-train.npz"), "test_data": os.path.join(folder, "denoise-test.npz"),
             "arch": arch, "noise": NOISE, "normalize": "none"}  # the archive's z-normalized series as they are
    gains, example = [], None
    for seed in seeds:
        result, dataset, config = fit({**given, "seed": seed}, os.path.join(folder, f"{arch}-{seed}"), capped)
        gain, outputs = denoised_gain(config, result.state, noisy_test, archive.x_test)
        gains.append(gain)
        example = example if example is not None else outputs[0, :, 0]
    noisy_snr = snr_db(noisy_test, archive.x_test)
    return {"task": "signal", "data": f"{DENOISE_SET} + noise {NOISE}", "arch": arch, "epochs": config.epochs,
            "noisy_snr_db": noisy_snr, "network_gain_db": gains,
            **{f"{name}_gain_db": snr_db(f(noisy_test), archive.x_test) - noisy_snr
               for name, f in filters.items() if name != "chosen"}, "filters": filters["chosen"],
            "example": {"noisy": noisy_test[0, :, 0].tolist(), "clean": archive.x_test[0, :, 0].tolist(),
                        "denoised": example.tolist()}}


def finetuning(folder: str, seeds: list[int], capped: int | None) -> dict:
    from flax_resnet1d.training import run_files

    curves = {"fine-tuned": [], "from scratch": []}
    for seed in seeds:
        pretrained = os.path.join(folder, f"pretrain-{seed}")
        fit({"dataset": PRETRAIN, "seed": seed}, pretrained, capped)
        _, init, sha256 = run_files.read_init(pretrained)
        budget = min(FINETUNE_EPOCHS, capped or FINETUNE_EPOCHS)
        for name, extra in (("fine-tuned", {"init": pretrained, "_init": (init, sha256)}), ("from scratch", {})):
            result, _, _ = fit({"dataset": FINETUNE, "seed": seed, "epochs": budget, "eval_every": 1, **extra},
                               os.path.join(folder, f"{name}-{seed}"), None)
            curves[name].append([h.get("test_accuracy") for h in result.history if h["epoch"] >= 1])
    return {"task": "classify", "pretrain": PRETRAIN, "data": FINETUNE, "epochs": budget, "curves": curves,
            "final_test_accuracy": {k: [c[-1] for c in v] for k, v in curves.items()}}


def mean_std(values) -> str:
    return f"{np.mean(values):.4g} +- {np.std(values):.2g}"


def markdown(results: dict) -> str:
    lines = [f"# Tasks ({results['machine']}, {results['date']})", "", results["note"], "",
             "## Regression: test RMSE in the targets' units", "",
             "| data | train/test | epochs | network | training mean | RidgeCV (z-normalized series) |",
             "|---|---|---|---|---|---|"]
    for r in results["regression"]:
        lines.append(f"| {r['data']} | {r['train']}/{r['test']} | {r['epochs']} | {mean_std(r['network_rmse'])} | "
                     f"{r['mean_predictor_rmse']:.4g} | {r['ridge_rmse']:.4g} |")
    lines += ["", f"## Denoising: SNR gain over the noisy input (dB), {DENOISE_SET} test series + noise std {NOISE}", "",
              "| network | epochs | noisy input SNR | network | best moving average | best Savitzky-Golay |",
              "|---|---|---|---|---|---|"]
    for r in results["denoising"]:
        lines.append(f"| {r['arch']} | {r['epochs']} | {r['noisy_snr_db']:.2f} | {mean_std(r['network_gain_db'])} | "
                     f"{r['moving_average_gain_db']:.2f} (window {r['filters']['moving_average_window']}) | "
                     f"{r['savitzky_golay_gain_db']:.2f} (window, order {r['filters']['savitzky_golay']}) |")
    f = results["finetuning"]
    lines += ["", f"## Fine-tuning: {f['pretrain']} -> {f['data']}, {f['epochs']} epochs, final test accuracy", "",
              "| start | test accuracy |", "|---|---|"]
    lines += [f"| {name} | {mean_std(values)} |" for name, values in f["final_test_accuracy"].items()]
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_reg, ax_dn, ax_ft) = plt.subplots(1, 3, figsize=(15, 4))
    regression = results["regression"]
    names = [r["data"] for r in regression]
    for i, (label, key) in enumerate((("network", "network_rmse"), ("training mean", "mean_predictor_rmse"),
                                      ("RidgeCV", "ridge_rmse"))):
        ratio = [np.mean(r[key]) / r["mean_predictor_rmse"] for r in regression]
        ax_reg.bar(np.arange(len(names)) + 0.27 * (i - 1), ratio, 0.27, label=label)
    ax_reg.set(xticks=range(len(names)), xticklabels=names, ylabel="test RMSE / training-mean RMSE",
               title="regression (lower is better)")
    denoise = results["denoising"]
    labels = [r["arch"] for r in denoise] + ["moving average", "Savitzky-Golay"]
    values = [np.mean(r["network_gain_db"]) for r in denoise] + [denoise[0]["moving_average_gain_db"],
                                                                   denoise[0]["savitzky_golay_gain_db"]]
    ax_dn.bar(labels, values, color=["C0"] * len(denoise) + ["C7", "C7"])
    ax_dn.set(ylabel="SNR gain (dB)", title=f"denoising {DENOISE_SET}, noise {NOISE}")
    for name, curves in results["finetuning"]["curves"].items():
        curve = np.asarray(curves, float)
        ax_ft.plot(np.arange(1, curve.shape[1] + 1), curve.mean(0), label=name)
    ax_ft.set(xlabel="epoch", ylabel="test accuracy", title=f"{results['finetuning']['pretrain']} -> "
              f"{results['finetuning']['data']}")
    for ax in (ax_reg, ax_ft):
        ax.legend()
    fig.tight_layout()
    atomic.save_figure(fig, out / "tasks.png", dpi=100)
    example = denoise[0]["example"]
    fig, ax = plt.subplots(figsize=(8, 3))
    for key, style in (("noisy", dict(color="0.7")), ("clean", dict(color="k")), ("denoised", dict(color="C0"))):
        ax.plot(example[key], label=key, **style)
    ax.set(xlabel="step", title=f"{denoise[0]['arch']} on a {DENOISE_SET} test series")
    ax.legend()
    fig.tight_layout()
    atomic.save_figure(fig, out / "tasks-denoise.png", dpi=100)


def with_stored_finetuning(stored: dict, measured: dict) -> dict:
    """``measured`` fine-tuning runs with ``stored``'s runs of the seeds not rerun, in seed order."""
    keep = [i for i, seed in enumerate(stored["seeds"]) if seed not in measured["seeds"]]
    order = sorted([(stored["seeds"][i], "stored", i) for i in keep]
                   + [(seed, "measured", i) for i, seed in enumerate(measured["seeds"])])
    source = {"stored": stored, "measured": measured}
    curves = {name: [source[s]["curves"][name][i] for _, s, i in order] for name in measured["curves"]}
    return {**measured, "seeds": [seed for seed, _, _ in order], "curves": curves,
            "final_test_accuracy": {k: [c[-1] for c in v] for k, v in curves.items()},
            "seconds": stored.get("seconds", 0) + measured["seconds"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="cap every run at this many epochs (default: the recipe's)")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", help="fine-tune with these seeds only (default: "
                        "all; each pretrains OSULeaf with the recipe, the longest run here)")
    parser.add_argument("--only", nargs="+", choices=("regression", "denoising", "finetuning"),
                        help="rerun these parts only; the others, and the stored fine-tuning runs of seeds not "
                             "rerun, are kept from OUT/tasks.json")
    parser.add_argument("--smoke", action="store_true", help="2 epochs, 1 seed: checks the code paths")
    args = parser.parse_args(argv)
    seeds, capped = (list(range(1)), 2) if args.smoke else (list(range(args.seeds)), args.epochs)
    finetune_seeds = seeds if args.finetune_seeds is None else args.finetune_seeds
    parts = args.only or ("regression", "denoising", "finetuning")
    stored = json.loads((args.out / "tasks.json").read_text()) if args.only else {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        jobs = [("regression", lambda n=n: regression(n, folder, seeds, capped)) for n in REGRESSION]
        jobs += [("denoising", lambda a=a: denoising(a, folder, seeds, capped)) for a in DENOISE_ARCHS]
        jobs += [("finetuning", lambda: {**finetuning(folder, finetune_seeds, capped), "seeds": finetune_seeds})]
        results = {**stored, **{part: [] for part in parts if part != "finetuning"}}
        for kind, job in tqdm([job for job in jobs if job[0] in parts], desc="tasks", unit="job"):
            job_start = time.perf_counter()
            value = {**job(), "seconds": round(time.perf_counter() - job_start)}  # all its seeds' runs
            if kind == "finetuning":
                results[kind] = with_stored_finetuning(stored[kind], value) if kind in stored else value
            else:
                results[kind].append(value)
    finetune_seeds = results["finetuning"]["seeds"]
    finetune_note = f" (fine-tuning: seeds {finetune_seeds})" if finetune_seeds != seeds else ""
    results.update(machine=f"{platform.machine()} {os.cpu_count()} cores", date=time.strftime("%Y-%m-%d"),
                   seconds=stored.get("seconds", 0) + round(time.perf_counter() - start), seeds=seeds,
                   finetune_seeds=finetune_seeds, epochs_cap=capped,
                   note=(f"Default recipe{f', every run capped at {capped} epochs' if capped else ''}; seeds "
                         f"{seeds}{finetune_note}; mean +- std over seeds. Measured on a shared machine (other "
                         "jobs running)."))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "tasks.json", json.dumps(results, indent=1) + "\n")
    atomic.write_text(args.out / "tasks.md", markdown(results))
    plot(results, args.out)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

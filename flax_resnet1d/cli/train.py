"""``flax-resnet1d train``: train any network of the family, from scratch or from a checkpoint, on a
UCR/UEA set or the user's arrays, for the task its data implies (classify, regress, signal)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from ..config import FAMILY_PRESETS
from ..errors import UsageError
from ..training import data, distributed, recipe, run_config
from ..training.run_config import (DATA_OPTIONS, MODEL_OPTIONS, TRAINING_OPTIONS, data_spec, given_arch, sized,
                                   train_config)
from .options import add_config_argument, parse_config

INIT_OPTIONS = ("init", "config")


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = run_config.TrainConfig.__dataclass_fields__
    default = {**{name: defaults[name].default for name in TRAINING_OPTIONS}, **recipe.TRAINING}
    p = subparsers.add_parser(
        "train", help="train a network of the family (from scratch or a checkpoint) on a UCR/UEA set or your arrays",
        description="Train any network of the family with jit-compiled JAX, for the task the data implies: "
                    "classify (integer labels y (N,)), regress (float targets y (N,) or (N, K)) or signal (a "
                    "target series y (N, C', L), or none: reconstruct x). Writes RUN_DIR/config.json, "
                    "metrics.jsonl (one line per epoch), learning_curve.png and Orbax checkpoints. "
                    "Same seed and data give identical metrics; --resume RUN_DIR continues a killed run "
                    "exactly. Options left out take their defaults (or, with --resume, the run's).",
        argument_default=argparse.SUPPRESS)  # only the options given appear in args
    where = p.add_argument_group("run directory").add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="RUN_DIR", help="directory of a new run")
    where.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest readable checkpoint")
    p.add_argument("--overwrite", action="store_true", help="with --out: replace a run directory that train wrote (nothing else)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    d = p.add_argument_group("data")
    d.add_argument("--dataset", metavar="NAME|FILE.npz|FILE.tsv",
                   help=f"an archive set (classification: {', '.join(data.CLASSIFICATION_DATASETS)}; default "
                        f"GunPoint; regression: {', '.join(data.REGRESSION_DATASETS)}), a .npz with x (N, C, L) "
                        "(a DecoderNet1d's: vectors (N, F)) and y: integer labels (N,), float targets (N,) or "
                        "(N, K), a target series (N, C', L), or none (an auto-encoder's: x itself); or a UCR 2018 "
                        "archive split NAME_TRAIN.tsv (a label, then the series, per tab-separated line)")
    d.add_argument("--task", choices=data.TASKS, help="override the task the targets imply")
    d.add_argument("--test-data", metavar="FILE.npz|FILE.tsv",
                   help="test arrays for a .npz --dataset, or the NAME_TEST.tsv of a .tsv one")
    d.add_argument("--test-fraction", type=float,
                   help="without --test-data: fraction of a .npz or .tsv data set held out for testing (default 0.2)")
    d.add_argument("--layout", choices=data.LAYOUTS, help="axes of the .npz x: N,C,L (MDNC, default) or N,L,C")
    d.add_argument("--normalize", choices=data.NORMALIZATIONS,
                   help="series: z-normalize each channel of each series (UCR convention; default for univariate "
                        "sets and .npz); channel: standardize each channel with training-set statistics (default "
                        f"for {', '.join(data.MULTIVARIATE_DATASETS)}); none")
    d.add_argument("--max-length", type=int, metavar="STEPS",
                   help=f"resample series longer than this to this many steps (linear interpolation, after the "
                        f"normalization; prediction does the same), classify and regress; 0: keep every length "
                        f"(default: {recipe.MAX_LENGTH} where resampling to it keeps "
                        f"{100 * (1 - recipe.RESAMPLE_LOSS):.0f}%% of the training series' energy)")

    default_model = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                             for k, v in recipe.MODEL.items())
    signal_model = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                            for k, v in recipe.SIGNAL_MODEL.items())
    m = p.add_argument_group(f"model (default: {default_model}, --kernel-size {recipe.RESAMPLED_KERNEL_SIZE} for "
                                 f"series the recipe resamples; for signal targets --arch {recipe.ARCHS['signal']} "
                                 f"{signal_model})")
    m.add_argument("--arch", choices=run_config.TRAIN_ARCHS, help="the network; its channels and outputs come from "
                                                                  "the data")
    m.add_argument("--preset", choices=sorted(FAMILY_PRESETS), help="an MDNC preset (64 channels, kernel 3)")
    m.add_argument("--channel", type=int, help="channels of the first stage (doubled by each later stage)")
    m.add_argument("--layers", type=int, nargs="+", metavar="N", help="blocks per stage, at least 2 stages")
    m.add_argument("--block", choices=("plain", "bottleneck"))
    m.add_argument("--kernel-size", type=int, help="odd kernel; 1 disables down-sampling")
    i = p.add_argument_group("start from a checkpoint")
    i.add_argument("--init", metavar="CHECKPOINT",
                   help="start from these weights: a .pt/.pth/.safetensors MDNC state dict (or training dict), a "
                        "Flax .msgpack or Orbax directory, or another run's directory; the network is the "
                        "checkpoint's (a classifier's or regressor's head of another size is re-initialized)")
    add_config_argument(i)
    i.add_argument("--freeze", choices=run_config.FREEZE, help="body: train only the head (fc) (default none)")

    t = p.add_argument_group("optimization")
    t.add_argument("--epochs", type=int, help=f"default {recipe.EPOCHS}, fewer if that makes more than "
                                              f"{recipe.MAX_STEPS} steps (at least {recipe.MIN_EPOCHS})")
    t.add_argument("--batch-size", type=int, help=f"global batch, a multiple of the devices (default "
                                                   f"{default['batch_size']})")
    t.add_argument("--optimizer", choices=run_config.OPTIMIZERS, help=f"default {default['optimizer']}")
    t.add_argument("--lr", type=float, help=f"peak learning rate (default {default['lr']})")
    t.add_argument("--schedule", choices=run_config.SCHEDULES, help=f"default {default['schedule']}")
    t.add_argument("--warmup-epochs", type=int, help="linear warm-up from 0 for the warmup schedules")
    t.add_argument("--momentum", type=float, help=f"sgd momentum (default {default['momentum']})")
    t.add_argument("--weight-decay", type=float, help=f"adamw decoupled decay (default {default['weight_decay']})")
    t.add_argument("--augment", choices=run_config.AUGMENTATIONS,
                   help=f"shift: move each training series by a random number of steps (default {default['augment']}; "
                        "none where one step moves a class's mean series nearest another class's)")
    t.add_argument("--shift", type=float, help=f"largest shift, a fraction of the series length (default "
                                               f"{default['shift']})")
    t.add_argument("--augment-fraction", type=float, help=f"augment only this first fraction of the epochs (default "
                                                          f"{default['augment_fraction']})")
    t.add_argument("--stretch", type=float,
                   help="resample each shifted series by a random factor within 1 +- this, its features lasting "
                        f"longer or shorter (default {default['stretch']})")
    t.add_argument("--label-smoothing", type=float, help=f"classify (default {default['label_smoothing']})")
    t.add_argument("--loss", choices=("mse", "l1"), help="regress and signal (default mse)")
    t.add_argument("--noise", type=float, metavar="SIGMA",
                   help="add Gaussian noise of this std (normalized units) to the inputs each step, the target "
                        "clean: denoising (default 0)")
    t.add_argument("--seed", type=int, help=f"parameter init and data order (default {default['seed']})")
    t.add_argument("--dtype", choices=run_config.COMPUTE_DTYPES,
                   help=f"compute dtype; parameters stay float32 (default {default['dtype']})")
    t.add_argument("--eval-every", type=int, help=f"test-set metrics every N epochs, and at the end (default: "
                                                  f"{recipe.EVALUATIONS} times a run)")
    t.add_argument("--ckpt-every", type=int, help=f"checkpoint every N epochs, and at the end (default: "
                                                  f"{recipe.CHECKPOINTS} times a run)")
    t.add_argument("--keep", type=int, help=f"checkpoints kept (default {default['keep']})")

    h = p.add_argument_group("several processes (jax.distributed; start every process with the same arguments)")
    h.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, which serves the coordinator")
    h.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    h.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    h.add_argument("--distributed", action="store_true",
                   help="take coordinator, count and id from the cluster (SLURM, Open MPI, Kubernetes, Cloud TPU)")
    h.add_argument("--connect-timeout", type=float, metavar="S",
                   help=f"give up reaching the coordinator after S seconds (default "
                        f"{distributed.DEFAULT_CONNECT_TIMEOUT:g})")
    h.add_argument("--heartbeat-timeout", type=float, metavar="S",
                   help="stop when another process has been silent for S seconds (default "
                        f"{distributed.DEFAULT_HEARTBEAT_TIMEOUT:g})")
    p.set_defaults(func=run_train)


@distributed.launch  # jax.distributed from the flags above, before any other JAX call
def run_train(args: argparse.Namespace) -> int:
    from ..training import loop, run_files

    given = vars(args)
    if "resume" in given:
        run_dir = given["resume"]
        extra = [f"--{k.replace('_', '-')}" for k in (*TRAINING_OPTIONS, *DATA_OPTIONS, *MODEL_OPTIONS, *INIT_OPTIONS,
                                                      "overwrite") if k in given]
        if extra:
            raise UsageError(f"--resume continues {run_dir} with its own config.json; drop {' '.join(extra)}")
        config = run_files.load_config(run_dir)
        dataset = data.load(config.data)
    else:
        run_dir = given["out"]
        init, init_sha256 = _read_init(given)
        spec = data_spec(given, init.arch if init is not None else given_arch(given))
        dataset = data.load(spec)
        full_length = dataset.length
        spec, dataset = sized(given, spec, dataset)
        config = train_config(given, spec, dataset, init, init_sha256)
        if init is not None and init.arch == "EncoderNet1d" and init.out_length != config.model.out_length:
            print(f"--init: its head (fc) outputs {init.out_length}, the data needs {config.model.out_length}: "
                  "fc re-initialized")
        if (config.task == "classify" and "augment" not in given
                and config.augment != recipe.TRAINING["augment"]):  # the recipe's shift check
            a, b = (dataset.classes[i] for i in recipe.class_changed_by_shift(dataset.x_train, dataset.y_train))
            print(f"recipe: no random shifts, since class {a}'s mean series moved one step is nearer class {b}'s "
                  "than its own (timing tells the classes apart); --augment shift forces them")
        if run_config.recipe_resampled(given, spec):
            print(f"recipe: the series resampled from {full_length} to {dataset.length} steps, since that keeps "
                  f"{1 - recipe.RESAMPLE_LOSS:.0%} of their energy or more; --max-length sets it (0: keep them)")
            if init is None and "kernel_size" not in given and "preset" not in given:
                print(f"recipe: kernel {config.model.kernel_size} for the resampled series, to reach along their "
                      "shapes; --kernel-size sets it")
        if config.task == "classify" and "shift" not in given and config.augment == "shift" \
                and config.shift != recipe.TRAINING["shift"]:  # the recipe's neighbour check
            print(f"recipe: random shifts of up to {config.shift:.0%} of the length, since moved that far more "
                  "training series lie nearest one of their own class; --shift sets it")
    start = time.perf_counter()
    inputs = () if "resume" in given else data.input_files(spec)  # a run directory holding them is not replaced
    result = loop.fit(config, dataset, run_dir, resume="resume" in given, overwrite=given.get("overwrite", False),
                      inputs=inputs, progress=not given.get("no_progress"))
    seconds = time.perf_counter() - start
    if result.resumed_from is not None:
        print(f"resumed {run_dir} after epoch {result.resumed_from}")
    trained = [h for h in result.history if h["epoch"] > (result.resumed_from or 0)]
    if trained:
        last = result.history[-1]
        metric = run_config.METRICS[config.task][0]
        print(f"{dataset.name}: epoch {last['epoch']}: test {metric} {last[f'test_{metric}']:.4f} "
              f"(loss {last['test_loss']:.4g}), train {metric} {last[f'train_{metric}']:.4f}; "
              f"{len(trained)} epochs in {seconds:.1f} s (compile {result.compile_seconds:.1f} s, "
              f"{np.median([h['step_time_ms'] for h in trained]):.1f} ms/step); run in {run_dir}")
    return 0


def _read_init(given: dict):
    """(family config, sha256) of --init's checkpoint (None, None without one)."""
    from ..training import run_files

    if "init" not in given:
        if "config" in given:
            raise UsageError("--config describes the network of --init's checkpoint; it needs --init")
        return None, None
    _, config, sha256 = run_files.read_init(given["init"], parse_config(given["config"]) if "config" in given
                                            else None)
    return config, sha256

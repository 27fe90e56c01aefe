"""``flax-resnet1d train | eval | export``: train a classifier on a UCR/UEA set or the user's
arrays, evaluate a run, and hand its weights to PyTorch users as an MDNC state dict."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from . import checkpoint_io, data, distributed, recipe, train
from .cli import UsageError
from .config import PRESETS, EncoderConfig, preset_config

PRESET_KERNEL_SIZE = 3  # the MDNC presets' own
TRAINING_OPTIONS = ("epochs", "batch_size", "optimizer", "lr", "schedule", "warmup_epochs", "momentum",
                    "weight_decay", "augment", "shift", "augment_fraction", "label_smoothing", "seed", "dtype",
                    "eval_every", "ckpt_every", "keep")
DATA_OPTIONS = ("dataset", "test_data", "test_fraction", "layout", "normalize")
MODEL_OPTIONS = ("preset", "channel", "layers", "block", "kernel_size")
TORCH_CHECK_TOLERANCE = 1e-5  # max|torch - jax| / max|jax| of the float32 logits


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = train.TrainConfig.__dataclass_fields__
    default = {**{name: defaults[name].default for name in TRAINING_OPTIONS}, **recipe.TRAINING}
    p = subparsers.add_parser(
        "train", help="train a classifier on a UCR/UEA data set or your own arrays",
        description="Train an EncoderNet1d classifier with jit-compiled JAX. Writes RUN_DIR/config.json, "
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
    d.add_argument("--dataset", metavar="NAME|FILE.npz",
                   help=f"an archive set ({', '.join(data.ARCHIVE_DATASETS)}; default GunPoint) or a .npz with "
                        "x (N, C, L) and integer labels y (0..K-1)")
    d.add_argument("--test-data", metavar="FILE.npz", help="test arrays for a .npz --dataset")
    d.add_argument("--test-fraction", type=float,
                   help="without --test-data: fraction of a .npz data set held out for testing (default 0.2)")
    d.add_argument("--layout", choices=data.LAYOUTS, help="axes of the .npz x: N,C,L (MDNC, default) or N,L,C")
    d.add_argument("--normalize", choices=data.NORMALIZATIONS,
                   help="series: z-normalize each channel of each series (UCR convention; default for univariate "
                        "sets and .npz); channel: standardize each channel with training-set statistics (default "
                        f"for {', '.join(data.MULTIVARIATE_DATASETS)}); none")

    default_model = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                             for k, v in recipe.MODEL.items())
    m = p.add_argument_group(f"model (default: {default_model})")
    m.add_argument("--preset", choices=sorted(PRESETS), help="an MDNC preset (64 channels, 5 stages, kernel 3)")
    m.add_argument("--channel", type=int, help="channels of the first stage (doubled by each later stage)")
    m.add_argument("--layers", type=int, nargs="+", metavar="N", help="blocks per stage, at least 2 stages")
    m.add_argument("--block", choices=("plain", "bottleneck"))
    m.add_argument("--kernel-size", type=int, help="odd kernel; 1 disables down-sampling")

    t = p.add_argument_group("optimization")
    t.add_argument("--epochs", type=int, help=f"default {recipe.EPOCHS}, fewer if that makes more than "
                                              f"{recipe.MAX_STEPS} steps (at least {recipe.MIN_EPOCHS})")
    t.add_argument("--batch-size", type=int, help=f"global batch, a multiple of the devices (default "
                                                   f"{default['batch_size']})")
    t.add_argument("--optimizer", choices=train.OPTIMIZERS, help=f"default {default['optimizer']}")
    t.add_argument("--lr", type=float, help=f"peak learning rate (default {default['lr']})")
    t.add_argument("--schedule", choices=train.SCHEDULES, help=f"default {default['schedule']}")
    t.add_argument("--warmup-epochs", type=int, help="linear warm-up from 0 for the warmup schedules")
    t.add_argument("--momentum", type=float, help=f"sgd momentum (default {default['momentum']})")
    t.add_argument("--weight-decay", type=float, help=f"adamw decoupled decay (default {default['weight_decay']})")
    t.add_argument("--augment", choices=train.AUGMENTATIONS,
                   help=f"shift: move each training series by a random number of steps (default {default['augment']}; "
                        "none where one step moves a class's mean series nearest another class's)")
    t.add_argument("--shift", type=float, help=f"largest shift, a fraction of the series length (default "
                                               f"{default['shift']})")
    t.add_argument("--augment-fraction", type=float, help=f"augment only this first fraction of the epochs (default "
                                                          f"{default['augment_fraction']})")
    t.add_argument("--label-smoothing", type=float, help=f"default {default['label_smoothing']}")
    t.add_argument("--seed", type=int, help=f"parameter init and data order (default {default['seed']})")
    t.add_argument("--dtype", choices=tuple(train.DTYPES), help="compute dtype; parameters stay float32 (default "
                                                                f"{default['dtype']})")
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

    e = subparsers.add_parser("eval", help="evaluate a run's newest checkpoint",
                              description="Loss and accuracy of RUN_DIR's newest readable checkpoint on its data "
                                          "set's train and test splits, or on --data.")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--data", metavar="FILE.npz", help="evaluate on these arrays (x, y) instead")
    e.add_argument("--layout", choices=data.LAYOUTS, default="NCL", help="axes of --data's x")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(func=run_eval)

    x = subparsers.add_parser(
        "export", help="write a run's weights as an MDNC state dict (.pt/.safetensors)",
        description="Write RUN_DIR's newest checkpoint as a state dict that MDNC and torch_ref load with "
                    "strict=True, then (if torch is installed) check that torch_ref reproduces the JAX test "
                    f"accuracy exactly and the logits to {TORCH_CHECK_TOLERANCE:g}; exit 1 if not.")
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("dst", metavar="DST", help=".pt/.pth or .safetensors, written atomically")
    x.add_argument("--overwrite", action="store_true",
                   help="replace DST if it exists and is a state dict file (refused otherwise)")
    x.add_argument("--no-check", action="store_true", help="skip the PyTorch check")
    x.set_defaults(func=run_export)


# -- train -------------------------------------------------------------------------------------

@distributed.launch  # jax.distributed from the flags above, before any other JAX call
def run_train(args: argparse.Namespace) -> int:
    given = vars(args)
    if "resume" in given:
        run_dir = given["resume"]
        extra = [f"--{k.replace('_', '-')}" for k in (*TRAINING_OPTIONS, *DATA_OPTIONS, *MODEL_OPTIONS, "overwrite")
                 if k in given]
        if extra:
            raise UsageError(f"--resume continues {run_dir} with its own config.json; drop {' '.join(extra)}")
        config = train.load_config(run_dir)
        dataset = data.load(config.data)
    else:
        run_dir = given["out"]
        spec = data_spec(given)
        dataset = data.load(spec)
        config = train_config(given, spec, dataset)
        if "augment" not in given and config.augment != recipe.TRAINING["augment"]:  # the recipe's shift check
            a, b = (dataset.classes[i] for i in recipe.class_changed_by_shift(dataset.x_train, dataset.y_train))
            print(f"recipe: no random shifts, since class {a}'s mean series moved one step is nearer class {b}'s "
                  "than its own (timing tells the classes apart); --augment shift forces them")
        # only once every setting is valid; by process 0 alone
        distributed.on_primary("prepare_run_dir", prepare_run_dir, run_dir, given.get("overwrite", False), spec)
    start = time.perf_counter()
    result = train.fit(config, dataset, run_dir, resume="resume" in given, progress=not given.get("no_progress"))
    seconds = time.perf_counter() - start
    if result.resumed_from is not None:
        print(f"resumed {run_dir} after epoch {result.resumed_from}")
    if result.history:
        last = result.history[-1]
        trained = sum(1 for h in result.history if h["epoch"] > (result.resumed_from or 0))
        print(f"{dataset.name}: epoch {last['epoch']}: test accuracy {last['test_accuracy']:.4f} "
              f"(loss {last['test_loss']:.4f}), train accuracy {last['train_accuracy']:.4f}; "
              f"{trained} epochs in {seconds:.1f} s (compile {result.compile_seconds:.1f} s, "
              f"{np.median([h['step_time_ms'] for h in result.history]):.1f} ms/step); run in {run_dir}")
    return 0


def train_config(given: dict, spec: data.DataSpec, dataset: data.Dataset) -> train.TrainConfig:
    """The run's settings: the options given (argparse names), the recipe for the others."""
    options = {k: given[k] for k in TRAINING_OPTIONS if k in given}
    training = recipe.training(dataset.x_train, dataset.y_train, options)
    return train.TrainConfig(model_config(given, dataset), spec, **training)


def prepare_run_dir(run_dir: str, overwrite: bool, spec: data.DataSpec) -> None:
    """Refuse to mix a new run into an existing one; --overwrite deletes only what a run writes
    there, and never a directory holding the run's own data files."""
    if os.path.isdir(run_dir) and not os.listdir(run_dir):
        return
    if not overwrite and os.path.isdir(run_dir) and train.RUN_OUTPUT.foreign(Path(run_dir)) is None:
        raise UsageError(f"--out {run_dir} already holds a run; continue it with --resume {run_dir}, "
                         "or replace it with --overwrite")
    checkpoint_io.check_output(run_dir, overwrite, train.RUN_OUTPUT, inputs=data.input_files(spec))
    if os.path.isdir(run_dir):
        checkpoint_io.remove_own_entries(run_dir, train.RUN_OUTPUT)


def data_spec(given: dict) -> data.DataSpec:
    source = given.get("dataset", "GunPoint")
    if source.endswith(".npz"):  # absolute paths: eval and --resume may run from another directory
        test = given.get("test_data")
        return data.DataSpec(os.path.abspath(source), given.get("layout", "NCL"), test and os.path.abspath(test),
                             given.get("test_fraction", 0.2), given.get("normalize", "series"))
    npz_only = [f"--{k.replace('_', '-')}" for k in ("test_data", "test_fraction", "layout") if k in given]
    if npz_only:
        raise UsageError(f"{' '.join(npz_only)} apply to a .npz --dataset, not to the archive set {source}")
    name = data.archive_name(source)
    return data.DataSpec(name, normalize=given.get("normalize", data.default_normalization(name)))


def model_config(given: dict, dataset: data.Dataset) -> EncoderConfig:
    """The network: --preset or --channel/--layers/--block/--kernel-size, sized to the data."""
    try:
        if "preset" in given:
            clash = [f"--{k}" for k in ("channel", "layers", "block") if k in given]
            if clash:
                raise UsageError(f"--preset {given['preset']} fixes the channels, layers and block; drop "
                                 f"{' '.join(clash)}")
            return preset_config(given["preset"], dataset.in_planes, dataset.num_classes,
                                 given.get("kernel_size", PRESET_KERNEL_SIZE))
        model = {k: given.get(k, v) for k, v in recipe.MODEL.items()}
        return EncoderConfig(model["channel"], tuple(model["layers"]), model["block"], model["kernel_size"],
                             dataset.in_planes, dataset.num_classes)
    except (TypeError, ValueError) as e:
        if isinstance(e, UsageError):
            raise
        raise UsageError(str(e)) from None


# -- eval ---------------------------------------------------------------------------------------

def run_eval(args: argparse.Namespace) -> int:
    from .commands_convert import format_table

    config, state, epoch = train.restore_run(args.run_dir)
    dataset = train.model_inputs(data.load(config.data), config.model)
    if args.data:  # normalized as the run's data (with its training statistics for "channel")
        x, y = data.read_arrays(args.data, args.layout)
        data.check_labels(y, config.model.out_length, f"{args.data}: label")
        name = os.path.basename(args.data)
        splits = {name: (data.pad_end(dataset.normalization(x).astype(np.float32), config.model.min_length() or 0), y)}
    else:
        name = dataset.name
        splits = {"train": (dataset.x_train, dataset.y_train), "test": (dataset.x_test, dataset.y_test)}
    results = train.evaluate_splits(config, state, splits)
    if args.json:
        print(json.dumps({"run_dir": args.run_dir, "data": name, "epoch": epoch,
                          **{split: {"loss": r.loss, "accuracy": r.accuracy, "examples": r.count}
                             for split, r in results.items()}}))
        return 0
    print(f"{args.run_dir}: {name}, checkpoint of epoch {epoch}/{config.epochs}")
    print(format_table(("split", "examples", "loss", "accuracy"),
                       [(split, str(r.count), f"{r.loss:.4f}", f"{r.accuracy:.4f}") for split, r in results.items()]))
    return 0


# -- export -------------------------------------------------------------------------------------

def run_export(args: argparse.Namespace) -> int:
    from . import port

    checkpoint_io.check_output(args.dst, args.overwrite)  # before any work
    config, state, epoch = train.restore_run(args.run_dir)
    state_dict = port.flax_to_torch(state.params, config.model)
    checkpoint_io.write_state_dict(args.dst, state_dict, overwrite=args.overwrite)
    print(f"wrote {args.dst}: MDNC EncoderNet1d state dict ({len(state_dict)} tensors, "
          f"{sum(a.size for a in state_dict.values()):,} parameters) from epoch {epoch} of {args.run_dir}")
    if args.no_check:
        return 0
    try:
        import torch_ref  # noqa: F401
    except ImportError:
        print("PyTorch check skipped: torch is not installed (pip install 'flax-resnet1d[torch]')")
        return 0
    dataset = train.model_inputs(data.load(config.data), config.model)
    float32 = train.float32_state(config, state)
    jax_test = train.evaluate_splits(config, float32, {"test": (dataset.x_test, dataset.y_test)})["test"]
    torch_logits = torch_ref_logits(checkpoint_io.load_state_dict(args.dst), config.model, dataset.x_test)
    torch_accuracy = float(np.mean(np.argmax(torch_logits, axis=1) == dataset.y_test))
    error = float(np.max(np.abs(torch_logits - jax_test.logits)) / np.max(np.abs(jax_test.logits)))
    passed = torch_accuracy == jax_test.accuracy and error <= TORCH_CHECK_TOLERANCE
    print(f"torch_ref on {dataset.name} test ({len(dataset.y_test)} series): accuracy {torch_accuracy:.4f} vs JAX "
          f"{jax_test.accuracy:.4f}; logits max|torch-jax|/max|jax| = {error:.1e} (tolerance "
          f"{TORCH_CHECK_TOLERANCE:g}): {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def torch_ref_logits(state_dict: dict, model: EncoderConfig, x_nlc: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """float32 logits of the PyTorch reference loaded with strict=True, for (N, L, C) inputs."""
    import torch

    import torch_ref

    net = torch_ref.from_config(model).eval()
    net.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state_dict.items()}, strict=True)
    x = torch.from_numpy(np.ascontiguousarray(np.swapaxes(x_nlc, 1, 2), np.float32))
    with torch.no_grad():
        return torch.cat([net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()

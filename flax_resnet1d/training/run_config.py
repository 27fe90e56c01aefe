"""What determines a run: ``TrainConfig`` (validated, saved as ``config.json``) and the builder
from a user's options, which the command line and the benchmarks share."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from ..config import CONFIGS, FAMILY_PRESETS, config_from_dict, preset_config
from ..errors import ConfigError, TrainingError, UsageError
from . import data, recipe
from .data import TASKS, DataSpec

OPTIMIZERS = ("adam", "adamw", "sgd")
LOSSES = {"classify": ("cross_entropy",), "regress": ("mse", "l1"), "signal": ("mse", "l1")}
# The networks each task trains: a classifier's or regressor's head is EncoderNet1d's fc; a signal
# target is a series, the output of every other member of the family (blocks: through the Python API).
TASK_ARCHS = {"classify": ("EncoderNet1d",), "regress": ("EncoderNet1d",),
              "signal": ("AE1d", "UNet1d", "DecoderNet1d", "BlockPlain1d", "BlockBottleneck1d")}
TRAIN_ARCHS = ("EncoderNet1d", "AE1d", "UNet1d", "DecoderNet1d")  # --arch
FREEZE = ("none", "body")
# Each task's epoch metrics besides the loss, its headline (progress bar, learning curve) first;
# evaluating a regression adds r2.
METRICS = {"classify": ("accuracy",), "regress": ("rmse", "mae"), "signal": ("snr_db", "rmse")}
SCHEDULES = ("constant", "cosine", "warmup", "warmup_cosine")
AUGMENTATIONS = ("none", "shift")
COMPUTE_DTYPES = ("float32", "bfloat16")  # names only: the command line reads this module without JAX


def compute_dtype(name: str):
    """The model's ``dtype`` for a compute dtype name: None for float32 (the parameters' own)."""
    import jax.numpy as jnp

    return {"float32": None, "bfloat16": jnp.bfloat16}[name]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run; saved as ``config.json`` in the run directory. The task
    is the data's (``data.task``; absent in runs before tasks: classify)."""

    model: Any  # a family config (flax_resnet1d.config)
    data: DataSpec
    epochs: int = 40
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_epochs: int = 0
    momentum: float = 0.9  # sgd
    weight_decay: float = 1e-2  # adamw (torch.optim.AdamW's default)
    seed: int = 0
    dtype: str = "float32"
    ckpt_every: int = 10
    keep: int = 3
    eval_every: int = 1
    augment: str = "none"
    shift: float = 0.1
    augment_fraction: float = 1.0  # the first ``ceil(augment_fraction * epochs)`` epochs are augmented
    label_smoothing: float = 0.0
    loss: str = "cross_entropy"  # of the task: LOSSES
    stretch: float = 0.0  # shifted series also resampled by a random factor in 1 +- stretch
    noise: float = 0.0  # std of the Gaussian noise added to the inputs each step (normalized units)
    init: str | None = None  # the checkpoint the run started from (absolute path), and its sha256
    init_sha256: str | None = None
    freeze: str = "none"  # body: train only the head (fc)

    @property
    def task(self) -> str:
        return self.data.task or "classify"

    def __post_init__(self):
        if not isinstance(self.model, tuple(CONFIGS.values())) or not isinstance(self.data, DataSpec):
            raise TrainingError(f"model and data must be a family config and a DataSpec, got "
                                f"{type(self.model).__name__} and {type(self.data).__name__}")
        for name in ("lr", "momentum", "weight_decay", "label_smoothing", "shift", "augment_fraction", "stretch",
                     "noise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TrainingError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("ckpt_every", 1), ("keep", 1), ("warmup_epochs", 0),
                              ("seed", 0), ("eval_every", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TrainingError(f"{name} must be an int, got {type(value).__name__} {value!r}")
            if value < minimum:
                raise TrainingError(f"{name} must be at least {minimum}, got {value}")
        if self.seed >= 2**32:  # numpy's and JAX's seeds
            raise TrainingError(f"seed must be below 2**32, got {self.seed}")
        for name, value, high in (("momentum", self.momentum, 1), ("weight_decay", self.weight_decay, math.inf),
                                  ("label_smoothing", self.label_smoothing, 1), ("shift", self.shift, 1),
                                  ("stretch", self.stretch, 1), ("noise", self.noise, math.inf)):
            if not (math.isfinite(value) and 0 <= value < high):
                raise TrainingError(f"{name} must be a finite number in [0, {high}), got {value}")
        if not (math.isfinite(self.augment_fraction) and 0 < self.augment_fraction <= 1):
            raise TrainingError(f"augment_fraction must be a finite number in (0, 1], got {self.augment_fraction}")
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
                                     ("dtype", self.dtype, COMPUTE_DTYPES), ("augment", self.augment, AUGMENTATIONS)):
            if value not in choices:
                raise TrainingError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
        for name in ("loss", "freeze"):
            if not isinstance(getattr(self, name), str):
                raise TrainingError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("init", "init_sha256"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise TrainingError(f"{name} must be a string or null, got {getattr(self, name)!r}")
        self._check_task()
        if not (math.isfinite(self.lr) and self.lr > 0):  # inf trains to NaN
            raise TrainingError(f"lr must be positive and finite, got {self.lr}")
        if self.schedule.startswith("warmup") and not 0 < self.warmup_epochs < self.epochs:
            raise TrainingError(f"schedule {self.schedule!r} needs 0 < --warmup-epochs < --epochs "
                                f"({self.warmup_epochs}, {self.epochs})")

    def _check_task(self) -> None:
        """The task, its loss, its network and the options that apply to it agree."""
        task, arch = self.task, self.model.arch
        if task not in TASKS:
            raise TrainingError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        if arch not in TASK_ARCHS[task]:
            raise TrainingError(f"the task {task} (what the data's targets imply, or --task) trains "
                                f"{' or '.join(TASK_ARCHS[task][:3])}, not {arch}; {TASK_HINT[task]}")
        if self.loss not in LOSSES[task]:
            raise TrainingError(f"loss {self.loss!r} does not apply to the task {task}; expected one of "
                                f"{', '.join(LOSSES[task])}")
        if task != "classify" and self.label_smoothing:
            raise TrainingError(f"label smoothing applies to classify, not to the task {task}")
        if self.data.vector and self.augment != "none":
            raise TrainingError(f"--augment {self.augment} moves series; a DecoderNet1d's inputs are vectors")
        if self.stretch and self.augment == "none":
            raise TrainingError(f"stretch {self.stretch} resamples the shifted series; it needs --augment shift, "
                                f"got --augment none")
        if self.freeze not in FREEZE:
            raise TrainingError(f"unknown freeze {self.freeze!r}; expected one of {', '.join(FREEZE)}")
        if self.freeze == "body" and arch != "EncoderNet1d":
            raise TrainingError(f"--freeze body trains only a classifier's or regressor's head (EncoderNet1d's fc); "
                                f"{arch} has none")
        if self.freeze == "body" and not self.model.out_length:
            raise TrainingError("--freeze body needs a head: this EncoderNet1d has out_length None (no fc)")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(model=self.model.to_dict(), data=self.data.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> TrainConfig:
        """The config a run's config.json holds, every field checked (type, range, choice):
        ConfigError naming the field, its value and ``source`` (the file), if given."""
        try:
            if not isinstance(d, dict):
                raise TrainingError(f"expected a JSON object of settings, got {type(d).__name__}")
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown, missing = sorted(set(d) - fields), [name for name in ("model", "data") if name not in d]
            if unknown or missing:
                raise TrainingError(f"unknown fields {unknown}" if unknown else f"missing {' and '.join(missing)}")
            if not isinstance(d["model"], dict):
                raise TrainingError(f"model: expected an object of constructor arguments, got {type(d['model']).__name__}")
            return cls(**{**d, "model": config_from_dict(d["model"]), "data": DataSpec.from_dict(d["data"])})
        except (TypeError, ValueError, UsageError) as e:
            raise ConfigError(f"{source}: {e}" if source else str(e)) from None


TASK_HINT = {"classify": "classification needs EncoderNet1d (integer labels y (N,))",
             "regress": "regression needs EncoderNet1d (float targets y (N,) or (N, K))",
             "signal": "a target series y (N, C', L) or none (x itself) needs AE1d, UNet1d or DecoderNet1d "
                       "(or pass --task for other targets)"}


PRESET_KERNEL_SIZE = 3  # the MDNC presets' own

TRAINING_OPTIONS = ("epochs", "batch_size", "optimizer", "lr", "schedule", "warmup_epochs", "momentum",
                    "weight_decay", "augment", "shift", "augment_fraction", "stretch", "label_smoothing", "loss", "noise",
                    "seed", "dtype", "eval_every", "ckpt_every", "keep", "freeze")
DATA_OPTIONS = ("dataset", "test_data", "test_fraction", "layout", "normalize", "task", "max_length")
MODEL_OPTIONS = ("arch", "preset", "channel", "layers", "block", "kernel_size")


def train_config(given: dict, spec: data.DataSpec, dataset: data.Dataset, init: Any = None,
                 init_sha256: str | None = None) -> TrainConfig:
    """The run's settings: the options given (argparse names), the recipe for the others; with
    ``init`` (the family config of ``given['init']``'s weights) the network is the checkpoint's."""
    options = {k: given[k] for k in TRAINING_OPTIONS if k in given}
    model = model_config(given, dataset, recipe_resampled(given, spec)) if init is None else \
        init_model_config(given, dataset, init)
    training = recipe.training(dataset.x_train, dataset.y_train, options, dataset.task,
                               getattr(model, "kernel_size", recipe.MODEL["kernel_size"]))
    spec = dataclasses.replace(spec, task=dataset.task)
    origin = {} if init is None else {"init": os.path.abspath(given["init"]), "init_sha256": init_sha256}
    return TrainConfig(model, spec, **training, **origin)


def data_spec(given: dict, arch: str | None = None) -> data.DataSpec:
    """Where the data comes from; ``arch`` (the network's, when known before the data: --arch,
    --preset, --init) makes a .npz's 2-D x vectors for a DecoderNet1d."""
    source = given.get("dataset", "GunPoint")
    task = given.get("task")
    if source.endswith(data.USER_FILES):  # absolute paths: eval and --resume may run from another directory
        if source.endswith(".tsv") and "layout" in given:
            raise UsageError(f"--layout applies to a .npz's x; {source} holds one univariate series a line")
        test = given.get("test_data")
        return data.DataSpec(os.path.abspath(source), given.get("layout", "NCL"), test and os.path.abspath(test),
                             given.get("test_fraction", 0.2), given.get("normalize", "series"), task=task,
                             vector=arch == "DecoderNet1d", max_length=max_length(given))
    npz_only = [f"--{k.replace('_', '-')}" for k in ("test_data", "test_fraction", "layout") if k in given]
    if npz_only:
        raise UsageError(f"{' '.join(npz_only)} apply to a .npz or .tsv --dataset, not to the archive set {source}")
    name = data.archive_name(source)
    return data.DataSpec(name, normalize=given.get("normalize", data.default_normalization(name)), task=task,
                         max_length=max_length(given))


def max_length(given: dict) -> int | None:
    """--max-length, 0 (or none given) for none; ``sized`` applies the recipe's where none is given."""
    return given.get("max_length") or None


def sized(given: dict, spec: data.DataSpec, dataset: data.Dataset) -> tuple[data.DataSpec, data.Dataset]:
    """Without --max-length, a classifier's or regressor's series resampled to ``recipe.input_length``
    of its training split where shorter, recorded in the spec (eval and predict resample the same)."""
    if "max_length" in given or not dataset.resamplable:
        return spec, dataset
    length = recipe.input_length(dataset.x_train)
    if length >= dataset.length:
        return spec, dataset
    return dataclasses.replace(spec, max_length=length), data.capped(dataset, length)


def recipe_resampled(given: dict, spec: data.DataSpec) -> bool:
    """Whether ``sized`` resampled the series to the recipe's length (no --max-length given)."""
    return "max_length" not in given and spec.max_length is not None


def given_arch(given: dict) -> str | None:
    """The architecture --arch or --preset names (None: the task's default)."""
    if "preset" in given:
        arch = FAMILY_PRESETS[given["preset"]][0]
        if given.get("arch", arch) != arch:
            raise UsageError(f"--preset {given['preset']} is a {arch}, not --arch {given['arch']}")
        return arch
    return given.get("arch")


def data_arguments(arch: str, dataset: data.Dataset) -> dict:
    """The constructor arguments of ``arch`` that the data determines: channels, outputs, lengths."""
    if arch == "EncoderNet1d":
        return {"in_planes": dataset.in_planes, "out_length": dataset.outputs}
    if arch == "DecoderNet1d":
        if not dataset.is_vector:
            raise UsageError("a DecoderNet1d trains from vectors x (N, F) of a .npz --dataset (with --arch "
                             "DecoderNet1d or a decnet preset), not from series")
        return {"in_length": dataset.in_planes, "out_size": dataset.y_train.shape[1],
                "out_planes": dataset.y_train.shape[2]}
    return {"in_planes": dataset.in_planes, "out_planes": dataset.outputs}


def model_config(given: dict, dataset: data.Dataset, resampled: bool = False) -> Any:
    """The network: --preset or --arch with --channel/--layers/--block/--kernel-size (the task's
    recipe for those left out, for series it ``resampled`` if so), sized to the data."""
    arch = given_arch(given) or recipe.ARCHS[dataset.task]
    if arch not in TASK_ARCHS[dataset.task]:
        raise UsageError(f"the task {dataset.task} (what the data's targets imply, or --task) trains "
                         f"{' or '.join(TASK_ARCHS[dataset.task][:3])}, not {arch}; {TASK_HINT[dataset.task]}")
    try:
        if "preset" in given:
            clash = [f"--{k}" for k in ("channel", "layers", "block") if k in given]
            if clash:
                raise UsageError(f"--preset {given['preset']} fixes the channels, layers and block; drop "
                                 f"{' '.join(clash)}")
            return preset_config(given["preset"], **data_arguments(arch, dataset),
                                 kernel_size=given.get("kernel_size", PRESET_KERNEL_SIZE))
        defaults = recipe.model(dataset.task, resampled)
        model = {k: given.get(k, defaults[k]) for k in ("channel", "layers", "block", "kernel_size")}
        return CONFIGS[arch](**{**model, "layers": tuple(model["layers"])}, **data_arguments(arch, dataset))
    except (TypeError, ValueError) as e:
        if isinstance(e, UsageError):
            raise
        raise UsageError(str(e)) from None


def init_model_config(given: dict, dataset: data.Dataset, init: Any) -> Any:
    """The checkpoint's network, refusing model options that contradict it, with a new head
    (``fc``) where a classifier's or regressor's outputs differ from the data's."""
    arch = given_arch(given)
    if arch is not None and arch != init.arch:
        raise UsageError(f"--init {given['init']} holds a {init.arch}, not the {arch} "
                         f"{'--preset ' + given['preset'] if 'preset' in given else '--arch'} asks for")
    preset = preset_config(given["preset"], **data_arguments(init.arch, dataset)) if "preset" in given else None
    for name in ("channel", "layers", "block", "kernel_size"):
        wanted = getattr(preset, name) if preset is not None and name != "kernel_size" else given.get(name)
        if wanted is not None and (tuple(wanted) if name == "layers" else wanted) != getattr(init, name, None):
            raise UsageError(f"--{name.replace('_', '-')} {wanted} contradicts --init {given['init']}, whose "
                             f"{init.arch} has {name}={getattr(init, name, None)}; drop it")
    if init.arch not in TASK_ARCHS[dataset.task]:
        raise UsageError(f"--init {given['init']} holds a {init.arch}, which does not train the task {dataset.task}; "
                         f"{TASK_HINT[dataset.task]}")
    fitted = data_arguments(init.arch, dataset)
    head = {"out_length": fitted.pop("out_length")} if init.arch == "EncoderNet1d" else {}
    misfit = {k: (getattr(init, k), v) for k, v in fitted.items() if getattr(init, k) != v}
    if misfit:
        raise UsageError(f"--init {given['init']}: the data does not fit its {init.arch}: "
                         + ", ".join(f"{k}={ours} but the data needs {theirs}" for k, (ours, theirs) in misfit.items()))
    if head and not init.out_length:
        raise UsageError(f"--init {given['init']}: its EncoderNet1d has no head (out_length={init.out_length}) to "
                         f"re-initialize for the data's {head['out_length']} outputs")
    return dataclasses.replace(init, **head)

"""What determines a run: ``TrainConfig`` (validated, saved as ``config.json``) and the builder
from a user's options, which the command line and the benchmarks share."""

from __future__ import annotations

import dataclasses
import math
import os

from ..config import EncoderConfig, preset_config
from ..errors import ConfigError, TrainingError, UsageError
from . import data, recipe
from .data import DataSpec

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup", "warmup_cosine")
AUGMENTATIONS = ("none", "shift")
COMPUTE_DTYPES = ("float32", "bfloat16")  # names only: the command line reads this module without JAX


def compute_dtype(name: str):
    """The model's ``dtype`` for a compute dtype name: None for float32 (the parameters' own)."""
    import jax.numpy as jnp

    return {"float32": None, "bfloat16": jnp.bfloat16}[name]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run; saved as ``config.json`` in the run directory."""

    model: EncoderConfig
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

    def __post_init__(self):
        if not isinstance(self.model, EncoderConfig) or not isinstance(self.data, DataSpec):
            raise TrainingError(f"model and data must be an EncoderConfig and a DataSpec, got "
                                f"{type(self.model).__name__} and {type(self.data).__name__}")
        for name in ("lr", "momentum", "weight_decay", "label_smoothing", "shift", "augment_fraction"):
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
                                  ("label_smoothing", self.label_smoothing, 1), ("shift", self.shift, 1)):
            if not (math.isfinite(value) and 0 <= value < high):
                raise TrainingError(f"{name} must be a finite number in [0, {high}), got {value}")
        if not (math.isfinite(self.augment_fraction) and 0 < self.augment_fraction <= 1):
            raise TrainingError(f"augment_fraction must be a finite number in (0, 1], got {self.augment_fraction}")
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
                                     ("dtype", self.dtype, COMPUTE_DTYPES), ("augment", self.augment, AUGMENTATIONS)):
            if value not in choices:
                raise TrainingError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
        if not (math.isfinite(self.lr) and self.lr > 0):  # inf trains to NaN
            raise TrainingError(f"lr must be positive and finite, got {self.lr}")
        if self.schedule.startswith("warmup") and not 0 < self.warmup_epochs < self.epochs:
            raise TrainingError(f"schedule {self.schedule!r} needs 0 < --warmup-epochs < --epochs "
                                f"({self.warmup_epochs}, {self.epochs})")

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
            return cls(**{**d, "model": EncoderConfig.from_dict(d["model"]), "data": DataSpec.from_dict(d["data"])})
        except (TypeError, ValueError, UsageError) as e:
            raise ConfigError(f"{source}: {e}" if source else str(e)) from None


PRESET_KERNEL_SIZE = 3  # the MDNC presets' own

TRAINING_OPTIONS = ("epochs", "batch_size", "optimizer", "lr", "schedule", "warmup_epochs", "momentum",
                    "weight_decay", "augment", "shift", "augment_fraction", "label_smoothing", "seed", "dtype",
                    "eval_every", "ckpt_every", "keep")
DATA_OPTIONS = ("dataset", "test_data", "test_fraction", "layout", "normalize")
MODEL_OPTIONS = ("preset", "channel", "layers", "block", "kernel_size")


def train_config(given: dict, spec: data.DataSpec, dataset: data.Dataset) -> TrainConfig:
    """The run's settings: the options given (argparse names), the recipe for the others."""
    options = {k: given[k] for k in TRAINING_OPTIONS if k in given}
    training = recipe.training(dataset.x_train, dataset.y_train, options)
    return TrainConfig(model_config(given, dataset), spec, **training)


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


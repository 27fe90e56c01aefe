"""Predictions of trained networks: ``Predictor.load(path, ...)`` reads a run directory or any
checkpoint ``convert`` reads, and ``predict`` / ``predict_proba`` / ``outputs`` run it on new series.

What a prediction is depends on the network (``TASKS``): a classifier (an ``EncoderNet1d`` with
``out_length``) gives class probabilities and labels (the data set's class names when a run
recorded them, else class indices); the same network read with ``task="regression"`` gives its
raw outputs (values in the target's units); every other network gives a signal (a feature map,
a decoder's or autoencoder's output) in the input's layout.

A run applies its own preprocessing: each series resampled (linear interpolation) to the length
the run trained on when it has another, normalized as in training (with the run's recorded
statistics for ``channel``), and zero-padded at the end to the network's minimum length. A bare
checkpoint applies only the normalization ``normalize`` names (none by default). Several models
form an ensemble: their outputs (probabilities, values, signals) are averaged, as the ensembles
of Ismail Fawaz et al. (2019) average their members'; members must agree on the task, the classes
and the input they take.

Normalization runs inside the compiled function in float32, the same function ``serving``
exports, so a served artifact gives what ``predict`` gives.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..config import coerce_config
from ..errors import CheckpointError, DataError, UsageError
from ..training.data import LAYOUTS, Normalization, resampled

TASKS = ("classification", "regression", "signal")
BATCH_SIZE = 256


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static argument of the compiled function
class Member:
    """One trained network with what its inputs go through before it."""

    source: str  # the run directory or checkpoint it came from
    config: Any  # its family config
    variables: dict  # Flax variables (params, and batch_stats with BatchNorm), numpy leaves
    normalization: Normalization = Normalization("none")
    length: int | None = None  # series are resampled to this length (a run's), None: taken as given
    classes: tuple[str, ...] | None = None  # a classifier's class names (None: the class indices)
    pad: bool = False  # zero-pad short series at the end to the network's minimum length (as a run trained)
    layout: str | None = None  # the axes of the series a run trained on, as its user gave them
    task: str | None = None  # a run's (TASKS); None: the network's (``task_of``)
    units: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # a run's target (mean, std): outputs -> units

    @property
    def is_classifier(self) -> bool:
        return self.config.arch == "EncoderNet1d" and bool(self.config.out_length)

    @property
    def is_vector_input(self) -> bool:
        return bool(getattr(self.config, "is_vector_input", False))


def load_member(path: str | os.PathLike, config: Any = None, key: str | None = None,
                normalize: str | None = None) -> Member:
    """A run directory (its newest checkpoint and preprocessing) or a checkpoint file or directory
    of any format ``convert`` reads (with ``config``/``key`` where the weights need them)."""
    from ..training.run_files import is_run_directory

    path = str(path)
    if is_run_directory(path):
        if config is not None or key is not None or normalize is not None:
            given = [name for name, value in (("config", config), ("key", key), ("normalize", normalize)) if value]
            raise UsageError(f"{path}: a run directory holds its own config and preprocessing; drop "
                             f"{', '.join(given)}")
        return _load_run(path)
    from .. import port
    from ..io import readers

    if normalize == "channel":
        raise UsageError(f"{path}: normalization 'channel' needs a training set's statistics, which only a run "
                         "records; use 'series' or 'none'")
    if normalize not in (None, "series", "none"):
        raise UsageError(f"unknown normalization {normalize!r}; expected series or none")
    state_dict, config = readers.load_checkpoint(path, key, config=config)
    if normalize == "series" and getattr(config, "is_vector_input", False):
        raise UsageError(f"{path}: a DecoderNet1d with a vector input takes no series normalization")
    return Member(path, config, port.torch_to_flax(state_dict, config), Normalization(normalize or "none"))


def _load_run(path: str) -> Member:
    import jax

    from ..training import data, run_files

    train_config, state, _ = run_files.restore_run(path)
    spec = train_config.data
    normalization, length = spec.normalization, spec.length
    units = None if spec.target_mean is None else (spec.target_mean, spec.target_std)
    if normalization is None:  # a run from before statistics were recorded: its data gives them
        dataset = data.load(spec)
        normalization, length = dataset.normalization, dataset.length
    classes = spec.classes  # None in older runs: labels are then the class indices
    return Member(path, train_config.model, jax.device_get(state.variables()), normalization, length, classes,
                  pad=True, layout=spec.layout, task=RUN_TASKS[train_config.task], units=units)


RUN_TASKS = {"classify": "classification", "regress": "regression", "signal": "signal"}  # training's -> ours


def member_task(member: Member) -> str:
    """What ``member`` predicts: its run's task, else its network's (``task_of``)."""
    return member.task or task_of(member.config)


def check_members(members: Sequence[Member], task: str) -> None:
    """CheckpointError unless the ensemble's members agree on task, classes and input."""
    first = members[0]
    for member in members[1:]:
        problem = None
        if member_task(member) != member_task(first) or member.is_classifier != first.is_classifier or (
                not first.is_classifier and member.config.arch != first.config.arch):
            problem = (f"is a {member.config.arch} ({member_task(member)}) but {first.source} a "
                       f"{first.config.arch} ({member_task(first)})")
        elif first.is_classifier and member.config.out_length != first.config.out_length:
            problem = f"has {member.config.out_length} outputs but {first.source} {first.config.out_length}"
        elif first.is_classifier and None not in (member.classes, first.classes) and member.classes != first.classes:
            problem = f"has the classes {list(member.classes)} but {first.source} {list(first.classes)}"
        elif (member.is_vector_input, member.config.in_channels) != (first.is_vector_input, first.config.in_channels):
            problem = (f"takes {_input_words(member)} but {first.source} {_input_words(first)}")
        elif None not in (member.length, first.length) and member.length != first.length:
            problem = f"takes series of length {member.length} but {first.source} of length {first.length}"
        elif not first.is_classifier and member.config.out_channels != first.config.out_channels:
            problem = f"outputs {member.config.out_channels} channels but {first.source} {first.config.out_channels}"
        if problem:
            raise CheckpointError(f"ensemble members disagree: {member.source} {problem}")


def _input_words(member: Member) -> str:
    config = member.config
    return f"vectors of {config.in_length}" if member.is_vector_input else f"{config.in_channels} channels"


def task_of(config: Any, regression: bool = False) -> str:
    """``classification`` (``regression`` if asked) for an EncoderNet1d with ``out_length``, else ``signal``."""
    if config.arch == "EncoderNet1d" and config.out_length:
        return "regression" if regression else "classification"
    return "signal"


# -- the compiled function -------------------------------------------------------------------
def normalized(x, normalization: Normalization):
    """``normalization`` of ``(B, L, C)`` inputs in their dtype, as ``training.data`` does in float64
    (population statistics; a constant channel becomes zeros)."""
    import jax.numpy as jnp

    if normalization.how == "series":
        centered = x - jnp.mean(x, axis=1, keepdims=True)
        std = jnp.sqrt(jnp.mean(jnp.square(centered), axis=1, keepdims=True))
        return centered / jnp.where(std > 0, std, 1)
    if normalization.how == "channel":
        return (x - jnp.asarray(normalization.mean, x.dtype)) / jnp.asarray(normalization.std, x.dtype)
    return x


def padded_length(member: Member, length: int) -> int:
    """The length the network sees for series of ``length``: a run's are padded to its minimum."""
    return max(length, member.config.min_length() or 0) if member.pad else length


def model_input(member: Member, x):
    """What the network takes: ``(B, L, C)`` inputs normalized and (a run's) zero-padded at the
    end to its minimum length; a vector input ``(B, F)`` normalized as one series."""
    import jax.numpy as jnp

    if member.is_vector_input:  # normalized as a run trained on it: a series of F steps, one channel
        return normalized(x[:, :, None], member.normalization)[..., 0]
    x = normalized(x, member.normalization)
    pad = padded_length(member, x.shape[1]) - x.shape[1]
    return jnp.pad(x, ((0, 0), (0, pad), (0, 0))) if pad > 0 else x


def member_output(member: Member, variables: dict, x, task: str):
    """One member's prediction on channels-last ``x``: probabilities, values or a signal ``(B, L', C')``."""
    import jax

    from ..model import from_config

    y = from_config(member.config).apply(variables, model_input(member, x))
    if task == "classification":
        return jax.nn.softmax(y, axis=-1)
    return y if member.units is None else y * jax.numpy.asarray(member.units[1], y.dtype) + jax.numpy.asarray(
        member.units[0], y.dtype)  # the run's standardized targets back in their units


def ensemble_output(members: Sequence[Member], task: str, variables: Sequence[dict], x):
    """The members' mean output on channels-last ``x`` (float32, the members' variables as given)."""
    outputs = [member_output(m, v, x, task) for m, v in zip(members, variables)]
    return sum(outputs[1:], outputs[0]) / len(outputs)


class Predictor:
    """One trained network, or an ensemble of them, with its preprocessing (see the module doc).

    ``layout`` is the axes of the series given to it and of the signals it returns: ``NCL``
    (MDNC's ``(N, C, L)``) or ``NLC``; a 2-D array is ``(N, L)``, one channel. Default: the layout
    of the data the (first) run trained on, else ``NCL``.
    """

    def __init__(self, members: Sequence[Member], task: str | None = None, layout: str | None = None):
        if not members:
            raise UsageError("a Predictor needs at least one model")
        layout = layout or next((m.layout for m in members if m.layout), "NCL")
        if layout not in LAYOUTS:
            raise DataError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        members = tuple(members)
        default = member_task(members[0])
        if task is None:
            task = default
        if task not in TASKS:
            raise UsageError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        if task != default and {task, default} != {"classification", "regression"}:
            raise UsageError(f"{members[0].source}: a {members[0].config.arch} predicts a {default}, not {task}")
        check_members(members, task)
        self.members, self.task, self.layout = members, task, layout

    @classmethod
    def load(cls, *paths: str | os.PathLike, config: Any = None, key: str | None = None,
             normalize: str | None = None, task: str | None = None, layout: str | None = None) -> Predictor:
        """From run directories or checkpoints (several: an ensemble). ``config`` (a family config
        or its dict) and ``key`` select and check a checkpoint's weights as for ``convert``;
        ``normalize`` (``series`` or ``none``, the default) applies to bare checkpoints."""
        config = None if config is None else coerce_config(config)
        return cls([load_member(path, config, key, normalize) for path in paths], task, layout)

    # -- what it takes and gives ----------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...] | None:
        """A classifier's class names (the first member's that records them), else None."""
        return next((m.classes for m in self.members if m.classes is not None), None)

    @property
    def num_classes(self) -> int:
        return self.members[0].config.out_length if self.task == "classification" else 0

    @property
    def length(self) -> int | None:
        """The series length the ensemble resamples to (a run's), or None."""
        return next((m.length for m in self.members if m.length is not None), None)

    def input_shape(self, batch: int, length: int | None = None) -> tuple[int, ...]:
        """The shape of ``batch`` series as given, in ``layout``: the run's length unless ``length``."""
        member = self.members[0]
        if member.is_vector_input:
            return (batch, member.config.in_length)
        length = length or self.length
        if length is None:
            raise UsageError(f"{member.source}: the input length is not recorded; give it")
        channels = member.config.in_channels
        return (batch, channels, length) if self.layout == "NCL" else (batch, length, channels)

    def channels_last(self, x: np.ndarray | Sequence[np.ndarray], source: str = "x") -> np.ndarray:
        """The series as the compiled function takes them: ``(N, L, C)`` float32, resampled to the
        run's length (a list of ``(L_i, C)`` series is resampled, or must share a length), checked
        against the networks. ``x`` in ``layout`` (a list: channels-last series)."""
        member = self.members[0]
        if isinstance(x, (list, tuple)):
            series = [np.asarray(s, np.float64) for s in x]
            if self.length is None and len({len(s) for s in series}) > 1:
                raise DataError(f"{source}: series of several lengths, and no run records the length to resample "
                                "them to")
            x = np.stack([resampled(s, self.length) if self.length else s for s in series])
        else:
            x = np.asarray(x)
            if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
                raise DataError(f"{source}: inputs must be numeric, got dtype {x.dtype}")
            if member.is_vector_input:
                return self._checked(x.astype(np.float32), source)
            if x.ndim == 2:
                x = x[:, :, None]
            elif x.ndim == 3 and self.layout == "NCL":
                x = np.swapaxes(x, 1, 2)
            if x.ndim == 3 and self.length and x.shape[1] != self.length:
                x = np.stack([resampled(np.asarray(s, np.float64), self.length) for s in x])
        return self._checked(np.asarray(x, np.float32), source)

    def _checked(self, x: np.ndarray, source: str) -> np.ndarray:
        if len(x) == 0:
            raise DataError(f"{source}: no series")
        if not np.isfinite(x).all():
            raise DataError(f"{source}: the inputs hold NaN/Inf or values beyond float32's range")
        for member in self.members:
            if member.is_vector_input:
                if x.ndim != 2 or x.shape[1] != member.config.in_length:
                    raise DataError(f"{source}: {member.source} takes vectors (N, {member.config.in_length}), "
                                    f"got shape {x.shape}")
                continue
            if x.ndim != 3:
                raise DataError(f"{source}: {member.source} takes series (N, C, L) or (N, L), got shape {x.shape}")
            try:
                member.config.check_input_shape((len(x), padded_length(member, x.shape[1]), x.shape[2]),
                                                channel_axis=2)
            except ValueError as e:
                raise DataError(f"{source}: {member.source}: {e}") from None
        return x

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the outputs for channels-last inputs of ``x_shape``, in ``layout``."""
        import jax

        out = jax.eval_shape(self._core, jax.ShapeDtypeStruct((1, *x_shape[1:]), np.float32)).shape
        out = (x_shape[0], *out[1:])
        return out if len(out) == 2 or self.layout == "NLC" else (out[0], out[2], out[1])

    def _core(self, x, variables=None):
        """The mean output on channels-last float32 ``x``, of ``variables`` (default: the members' own,
        as constants of the computation)."""
        variables = self._variables if variables is None else variables
        return ensemble_output(self.members, self.task, variables, x)

    @functools.cached_property
    def _variables(self) -> list[dict]:
        return [_float32(m.variables) for m in self.members]

    def function(self) -> Callable:
        """The pure prediction function of float32 inputs ``x`` in ``layout`` (the run's length),
        weights and preprocessing included, giving what ``outputs`` gives: what ``serving`` exports."""
        vector = self.members[0].is_vector_input

        def predict(x):
            nlc = x if vector or self.layout == "NLC" else x.swapaxes(1, 2)
            y = self._core(nlc)
            return y if y.ndim == 2 or self.layout == "NLC" else y.swapaxes(1, 2)

        return predict


    def outputs(self, x, batch_size: int = BATCH_SIZE, progress: bool | None = False, source: str = "x") -> np.ndarray:
        """The ensemble's mean output: probabilities ``(N, K)``, values ``(N, K)`` or signals in
        ``layout``. Batches of ``batch_size`` (one compilation; the last batch padded), under a
        progress bar with ``progress`` (None: on a terminal)."""
        from tqdm.auto import tqdm

        from .. import memory

        x = self.channels_last(x, source)
        out_shape = self.output_shape(x.shape)
        batch = min(batch_size, len(x))
        steps = sum(memory.eval_step_bytes(m.config, batch, padded_length(m, x.shape[1]))
                    for m in self.members if not m.is_vector_input)
        memory.check_fits(4 * int(np.prod(out_shape)) + steps, f"predicting {source} ({out_shape[0]} series)",
                          memory.host_available(), DataError, "split the input or lower --batch-size")
        out = np.empty(out_shape, np.float32)
        for start in tqdm(range(0, len(x), batch), desc="predict", unit="batch", file=sys.stderr,
                          disable=None if progress is None else not progress):
            chunk = x[start:start + batch]
            padding = np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)
            padded = chunk if len(chunk) == batch else np.concatenate([chunk, padding])
            y = np.asarray(_compiled_ensemble()(self.members, self.task, self._variables, padded))[:len(chunk)]
            out[start:start + len(chunk)] = y if y.ndim == 2 or self.layout == "NLC" else y.swapaxes(1, 2)
        return out

    def predict_proba(self, x, batch_size: int = BATCH_SIZE, progress: bool | None = False) -> np.ndarray:
        """Class probabilities ``(N, K)``, averaged over the ensemble (classifiers only)."""
        if self.task != "classification":
            raise UsageError(f"predict_proba: the model predicts a {self.task}, not classes")
        return self.outputs(x, batch_size, progress)

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """The class of each row of ``probabilities``: its name, or its index without recorded names."""
        index = np.argmax(probabilities, axis=1)
        return np.asarray(self.classes)[index] if self.classes is not None else index

    def predict(self, x, batch_size: int = BATCH_SIZE, progress: bool | None = False) -> np.ndarray:
        """Labels of a classifier, else ``outputs`` (values, signals)."""
        y = self.outputs(x, batch_size, progress)
        return self.labels(y) if self.task == "classification" else y


@functools.cache
def _compiled_ensemble():
    """``ensemble_output`` jitted once for every predictor (the members and task static, the weights
    arguments rather than constants: nothing to fold), so predictors of the same members share it."""
    import jax

    return jax.jit(ensemble_output, static_argnums=(0, 1))


def _float32(variables: dict) -> dict:
    """Floating leaves as float32 (a float64 checkpoint predicts as the float32 function serves)."""
    import jax

    return jax.tree.map(lambda a: np.asarray(a, np.float32) if np.issubdtype(np.asarray(a).dtype, np.floating)
                        else np.asarray(a), variables)

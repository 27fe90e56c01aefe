"""The default recipe: every setting of ``flax-resnet1d train`` a user leaves out.

Chosen once for all data sets, from the training split only (its size and length, whether a shift
changes its classes, how far a shift may move them), never from test data; docs/recipe.md gives the
measurements behind each choice. Framework-free, like ``plan``: ``run_config.train_config`` applies
it for the CLI and the benchmarks, and ``config.json`` records what it chose.
"""

from __future__ import annotations

import math

import numpy as np

from .data import resampled, shifted

# 2 stages (64, 128 channels) of one bottleneck block, kernel 9: MDNC's fewest down-samplings (length / 4).
MODEL = {"channel": 64, "layers": [1, 1], "block": "bottleneck", "kernel_size": 9}
# signal: a U-Net of 3 levels (16, 32 channels, bottleneck blocks, kernel 9); its skips carry the
# fine detail a denoised or reconstructed series needs, which an AE1d must squeeze through its middle.
SIGNAL_MODEL = {"channel": 16, "layers": [2, 2, 2], "block": "bottleneck", "kernel_size": 9}
ARCHS = {"classify": "EncoderNet1d", "regress": "EncoderNet1d", "signal": "UNet1d"}  # each task's default network
# Series longer than MAX_LENGTH are resampled to it where that keeps them (docs/recipe.md#input-length):
# interpolated back to their length, they differ from the training series by at most RESAMPLE_LOSS of
# their energy. The network then sees a long, smooth series' shapes at a quarter of the steps, its
# kernels covering 4x as much of them, at a quarter of the time a step; a spiky one keeps its steps.
MAX_LENGTH = 512
RESAMPLE_LOSS = 0.5
# ...and trained with a wider kernel, whose reach along the resampled series' shapes tells PigCVP's
# pigs apart (3 seeds: 88.4 +- 1.4 against kernel 9's 83.7 +- 0.8; docs/recipe.md#kernel).
RESAMPLED_KERNEL_SIZE = 15
BATCH_SIZE = 16
EPOCHS = 600
MAX_STEPS = 12000  # large training sets get fewer epochs...
MIN_EPOCHS = 20  # ...but at least this many passes
MIN_STEPS = 2400  # small ones more epochs: a set of 2 series a class trains 600 steps in 600 epochs
# The time rule (docs/recipe.md#time): a train step of MODEL with kernel K at batch B on series of L
# steps and C channels takes at most a + b * B * L * (1 + c * (C - 1)) * (1 + d * max(0, K - 9)) ms on the
# 2-core CPU, (a, b, c, d) = STEP_MS, with the machine to itself (narrower kernels, unmeasured, are not
# counted faster); a run's steps are capped to fit STEP_BUDGET_S, which leaves room for the host being
# 40% slower (measured within an hour), for evaluation and for start-up in 10 minutes.
STEP_MS = (5.0, 5.4e-3, 0.01, 0.085)
STEP_BUDGET_S = 400
# The shifts' strength (docs/recipe.md#shift-strength): the default, or a stronger one where moving
# series that far makes more of them find their class's other series (leave-one-out 1-NN) on the
# training split; a neighbour check of at most NEIGHBOUR_SERIES series (its cost grows with their square).
SHIFT_STRENGTHS = (0.1, 0.3)
NEIGHBOUR_SERIES = 256
NEIGHBOUR_MOVES = 50  # moves tried each way at the strongest strength, at most
EVALUATIONS = 50  # test-set evaluations per run (and the last epoch): the learning curve's points
CHECKPOINTS = 10  # checkpoints per run (and the last epoch)

TRAINING = {"batch_size": BATCH_SIZE, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1, "schedule": "cosine",
            "augment": "shift", "shift": 0.1, "stretch": 0.0, "augment_fraction": 0.7, "label_smoothing": 0.1}
# Regression and signal tasks: the classifier's optimization, without what is a classifier's
# (label smoothing), and without shifts for regression (a shift may change a target read off the
# series' timing; nothing in the data says) and signals (the target moves with them: no gain).
TASK_TRAINING = {"classify": {**TRAINING, "loss": "cross_entropy"},
                 "regress": {**TRAINING, "loss": "mse", "label_smoothing": 0.0, "augment": "none"},
                 "signal": {**TRAINING, "loss": "mse", "label_smoothing": 0.0, "augment": "none"}}


def model(task: str, resampled: bool = False) -> dict:
    """The default network of ``task`` (``ARCHS``): its channel, layers, block, kernel_size; a
    classifier's or regressor's kernel is ``RESAMPLED_KERNEL_SIZE`` wide where the recipe ``resampled``
    its series (``input_length``)."""
    if task == "signal":
        return SIGNAL_MODEL
    return {**MODEL, "kernel_size": RESAMPLED_KERNEL_SIZE} if resampled else MODEL


def step_ms(batch_size: int, length: int, channels: int, kernel_size: int = MODEL["kernel_size"],
            coefficients: tuple[float, float, float, float] = STEP_MS) -> float:
    """The time model: milliseconds a train step of ``MODEL`` with ``kernel_size`` takes on the 2-core CPU
    (``coefficients`` (a, b, c, d): ``STEP_MS``, or a fit of ``benchmarks/step_time.py``)."""
    a, b, c, d = coefficients
    wider = max(0, kernel_size - MODEL["kernel_size"])
    return a + b * batch_size * length * (1 + c * (channels - 1)) * (1 + d * wider)


def max_steps(batch_size: int = BATCH_SIZE, length: int = 1, channels: int = 1,
              kernel_size: int = MODEL["kernel_size"]) -> int:
    """``MAX_STEPS``, or as many steps as ``step_ms`` fits in ``STEP_BUDGET_S`` if fewer."""
    return min(MAX_STEPS, int(1e3 * STEP_BUDGET_S // step_ms(batch_size, length, channels, kernel_size)))


def epochs_for(num_train: int, batch_size: int = BATCH_SIZE, length: int = 1, channels: int = 1,
               kernel_size: int = MODEL["kernel_size"]) -> int:
    """``EPOCHS``, or enough for ``MIN_STEPS`` steps if more, over ``num_train`` series of ``length``
    steps and ``channels``; as many as fit in ``max_steps`` if fewer (at least ``MIN_EPOCHS``)."""
    batch_size = max(1, batch_size)  # a bad batch size is TrainConfig's error to raise
    per_epoch = math.ceil(num_train / batch_size)
    wanted = max(EPOCHS, math.ceil(MIN_STEPS / per_epoch))
    return max(MIN_EPOCHS, min(wanted, max_steps(batch_size, length, channels, kernel_size) // per_epoch))


def checked_series(n: int) -> np.ndarray:
    """The indices of the training series the recipe's checks read: all, or ``NEIGHBOUR_SERIES`` of
    them (a fixed choice; the checks' cost grows with their number)."""
    if n <= NEIGHBOUR_SERIES:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, NEIGHBOUR_SERIES, replace=False))


def resample_loss(x: np.ndarray, length: int) -> float:
    """The energy of ``x`` (at most ``NEIGHBOUR_SERIES`` series, a fixed choice) that resampling to
    ``length`` steps loses: sum ||x - back||^2 / sum ||x||^2, ``back`` resampled to ``length`` and back."""
    x = np.asarray(x[checked_series(len(x))], np.float64)
    back = np.stack([resampled(resampled(s, length), x.shape[1]) for s in x])
    return float(((x - back) ** 2).sum() / max((x**2).sum(), np.finfo(np.float64).tiny))


def input_length(x_train: np.ndarray) -> int:
    """The length the recipe trains on: ``MAX_LENGTH`` where the training series are longer and
    resampling to it loses at most ``RESAMPLE_LOSS`` of their energy; else their own."""
    length = x_train.shape[1]
    return MAX_LENGTH if length > MAX_LENGTH and resample_loss(x_train, MAX_LENGTH) <= RESAMPLE_LOSS else length


def shift_margins(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each class (rows) with its mean series moved one step earlier and later (columns,
    edge-filled like the shifts): the distance to the nearest other class's mean over the distance
    to its own, and that other class's index. Below 1, the move turns the class into another."""
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes]).astype(np.float64)
    flat = means.reshape(len(classes), -1)
    ratios, nearest = np.empty((len(classes), 2)), np.empty((len(classes), 2), dtype=int)
    for j, step in enumerate((-1, 1)):
        moved = shifted(means, np.full(len(classes), step)).reshape(len(classes), -1)
        # squared distances ||moved_a - mean_b||^2 without a (K, K, L, C) array
        distance = (moved**2).sum(1)[:, None] + (flat**2).sum(1)[None, :] - 2 * moved @ flat.T
        own = np.diag(distance).copy()
        np.fill_diagonal(distance, np.inf)
        nearest[:, j] = distance.argmin(1)
        with np.errstate(divide="ignore", invalid="ignore"):  # own 0: the move changes nothing
            ratios[:, j] = np.sqrt(np.maximum(distance.min(1), 0) / np.maximum(own, 0))
    return ratios, nearest


def class_changed_by_shift(x: np.ndarray, y: np.ndarray) -> tuple[int, int] | None:
    """A pair of classes ``(a, b)`` such that class ``a``'s mean series, moved one step (either
    way), lies nearer class ``b``'s mean than its own; None if none.

    Such a pair means the classes differ in timing (ItalyPowerDemand's winter and summer days),
    so the shifts would teach the network to ignore what tells them apart; the recipe then trains
    without them. One step is the smallest move a shift makes; a larger one blurs the means into
    each other even where the shifts help.
    """
    ratios, nearest = shift_margins(x, y)
    classes = np.unique(y)
    changed = np.argwhere(ratios.T < 1)  # (move, class) pairs, the earlier move first
    if not changed.size:
        return None
    j, a = changed[0]
    return int(classes[a]), int(classes[nearest[a, j]])


def neighbour_accuracies(x: np.ndarray, y: np.ndarray, strengths=SHIFT_STRENGTHS) -> list[float]:
    """For each strength: the leave-one-out 1-NN accuracy of the series ``x`` (at most
    ``NEIGHBOUR_SERIES`` of them, a fixed choice), the distance of two series being the least squared
    Euclidean one over moves of the second by up to ``strength`` of the length, edge-filled like the
    shifts (every ``max(1, moves // NEIGHBOUR_MOVES)`` steps)."""
    keep = checked_series(len(x))
    x, y = np.asarray(x[keep], np.float64), y[keep]
    n, length = x.shape[:2]
    flat = x.reshape(n, -1)
    norms = (flat**2).sum(1)
    limits = [round(s * length) for s in strengths]
    stride = max(1, limits[-1] // NEIGHBOUR_MOVES)
    nearest = [np.full((n, n), np.inf) for _ in strengths]
    for move in range(-limits[-1] // stride * stride, limits[-1] + 1, stride):
        moved = shifted(x, np.full(n, move)).reshape(n, -1)
        distance = norms[:, None] + (moved**2).sum(1)[None, :] - 2 * flat @ moved.T
        for best, limit in zip(nearest, limits):
            if abs(move) <= limit:
                np.minimum(best, distance, out=best)
    accuracies = []
    for best in nearest:
        np.fill_diagonal(best, np.inf)
        accuracies.append(float(np.mean(y[best.argmin(1)] == y)))
    return accuracies


def shift_strength(x: np.ndarray, y: np.ndarray) -> float:
    """The strength of ``SHIFT_STRENGTHS`` of the best ``neighbour_accuracies``, the weaker on a tie:
    the stronger shifts only where moving series that far makes them find their own class more often."""
    accuracies = neighbour_accuracies(x, y)
    return SHIFT_STRENGTHS[int(np.argmax(accuracies))]


def training(x_train: np.ndarray, y_train: np.ndarray, given: dict, task: str = "classify",
             kernel_size: int = MODEL["kernel_size"]) -> dict:
    """Training settings for the training split ``(x_train, y_train)`` of ``task``, whose network has
    ``kernel_size``: ``given`` (the user's options, TrainConfig field names) over the recipe's."""
    settings = {**TASK_TRAINING[task], **given}
    if task == "classify" and "augment" not in given and class_changed_by_shift(x_train, y_train):
        settings["augment"] = "none"
    if task == "classify" and settings["augment"] == "shift" and "shift" not in given:
        settings["shift"] = shift_strength(x_train, y_train)
    # the time rule is MODEL's: a signal network's or a vector input's steps are capped by MAX_STEPS alone
    length, channels = x_train.shape[1:] if task != "signal" and x_train.ndim == 3 else (1, 1)
    epochs = given.get("epochs", epochs_for(len(x_train), settings["batch_size"], length, channels, kernel_size))
    return {"epochs": epochs, "eval_every": max(1, epochs // EVALUATIONS), "ckpt_every": max(1, epochs // CHECKPOINTS),
            **settings}

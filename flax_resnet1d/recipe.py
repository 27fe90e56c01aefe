"""The default recipe: every setting of ``flax-resnet1d train`` a user leaves out.

Chosen once for all data sets, from the training split's size only, never from test data;
README "Training recipe" gives the measurements behind each choice. Framework-free, like
``plan``: the CLI and ``benchmarks/accuracy.py`` read it, and ``config.json`` records what it chose.
"""

from __future__ import annotations

import math

# 2 stages (64, 128 channels) of one bottleneck block, kernel 9: MDNC's fewest down-samplings (length / 4).
MODEL = {"channel": 64, "layers": [1, 1], "block": "bottleneck", "kernel_size": 9}
BATCH_SIZE = 16
EPOCHS = 600
MAX_STEPS = 12000  # large training sets get fewer epochs...
MIN_EPOCHS = 20  # ...but at least this many passes
EVALUATIONS = 50  # test-set evaluations per run (and the last epoch): the learning curve's points
CHECKPOINTS = 10  # checkpoints per run (and the last epoch)

TRAINING = {"batch_size": BATCH_SIZE, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1, "schedule": "cosine",
            "augment": "shift", "shift": 0.1, "augment_fraction": 0.7, "label_smoothing": 0.1}


def epochs_for(num_train: int, batch_size: int = BATCH_SIZE) -> int:
    """``EPOCHS``, or as many as fit in ``MAX_STEPS`` steps over ``num_train`` series (at least ``MIN_EPOCHS``)."""
    steps_per_epoch = math.ceil(num_train / max(1, batch_size))  # a bad batch size is TrainConfig's error to raise
    return max(MIN_EPOCHS, min(EPOCHS, MAX_STEPS // steps_per_epoch))


def training(num_train: int, given: dict) -> dict:
    """Training settings for a training split of ``num_train`` series: ``given`` (the user's
    options, TrainConfig field names) over the recipe's."""
    settings = {**TRAINING, **given}
    epochs = given.get("epochs", epochs_for(num_train, settings["batch_size"]))
    return {"epochs": epochs, "eval_every": max(1, epochs // EVALUATIONS), "ckpt_every": max(1, epochs // CHECKPOINTS),
            **settings}

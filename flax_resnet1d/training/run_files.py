"""The run directory: ``config.json``, ``metrics.jsonl`` (one line per epoch),
``learning_curve.png`` and Orbax checkpoints under ``checkpoints/<epoch>``; saving, restoring
(an unreadable checkpoint is moved aside and the previous one used) and plotting. Process 0
alone writes the files; every process takes part in each Orbax save and restore."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time

import jax
import numpy as np

from ..errors import TrainingError
from ..io import atomic, formats
from . import distributed
from .run_config import TrainConfig
from .steps import TrainState, create_state

log = logging.getLogger(__name__)

TIMING_KEYS = ("epoch_time_s", "step_time_ms")  # the only metrics that differ between identical runs
CONFIG_FILE, METRICS_FILE, CURVE_FILE = "config.json", "metrics.jsonl", "learning_curve.png"
CHECKPOINT_DIR, CORRUPT_DIR = "checkpoints", "corrupt_checkpoints"
# Everything a run writes in its directory (temporaries end in .tmp-<pid>): `train --out
# --overwrite` replaces a directory holding only these, with config.json, and nothing else.
RUN_OUTPUT = atomic.OwnOutput("a run directory", entries=(CONFIG_FILE, METRICS_FILE, CURVE_FILE, CHECKPOINT_DIR,
                                                          CORRUPT_DIR, "*.tmp-*"), required=CONFIG_FILE,
                              makes_parents=True)


def append_text(path: str, text: str) -> None:
    with atomic.errors_named(path), open(path, "a") as f:
        f.write(text)
        f.flush()


def save_config(run_dir: str, config: TrainConfig) -> None:
    os.makedirs(run_dir, exist_ok=True)
    atomic.write_text(os.path.join(run_dir, CONFIG_FILE), json.dumps(config.to_dict(), indent=2) + "\n")


def load_config(run_dir: str) -> TrainConfig:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise TrainingError(f"{run_dir} is not a run directory: no {CONFIG_FILE}")
    try:
        with open(path) as f:
            return TrainConfig.from_dict(json.load(f))
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise TrainingError(f"{path} is not a valid run config: {e}") from None


def read_metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def state_digest(state: TrainState) -> str:
    """sha256 of every array of the state, in tree order: catches silently damaged checkpoints."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(state)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def checkpoint_manager(run_dir: str, keep: int):
    """Orbax manager over ``run_dir/checkpoints``: one ``<epoch>`` directory per checkpoint.

    Orbax writes each checkpoint into ``<epoch>.orbax-checkpoint-tmp`` and renames it
    when complete, so a kill mid-save leaves only a temporary directory, which is never
    restored. Saves are synchronous: on accelerators the next train step donates the state's buffers.
    """
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    try:
        with formats.quiet_orbax_failures():
            return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "meta"))
    except Exception as e:  # e.g. a read-only or full file system, in Orbax's words
        raise atomic.as_os_error(e, directory) from None


def save_checkpoint(manager, epoch: int, state: TrainState, history: list[dict]) -> None:
    import orbax.checkpoint as ocp

    meta = {"epoch": epoch, "step": int(state.step), "digest": state_digest(state), "history": history}
    try:
        with formats.quiet_orbax_failures():
            manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)))
    except Exception as e:  # tensorstore reports a full disk inside its own exception types
        raise atomic.as_os_error(e, os.path.join(str(manager.directory), str(epoch))) from None


def restore_checkpoint(manager, run_dir: str, target: TrainState, quarantine: bool = False
                       ) -> tuple[TrainState, dict] | None:
    """The newest readable checkpoint as (state, meta), or None if there is none.

    An unreadable checkpoint (damaged or missing files, digest mismatch) is skipped with a
    warning in favour of the previous one. With ``quarantine`` (when training resumes and
    will write those epochs again) the skipped ones are moved to ``run_dir/corrupt_checkpoints``
    once an older one has restored. If none restores, nothing is moved and TrainingError says why.
    """
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    unreadable = {}
    for epoch in sorted(manager.all_steps(), reverse=True):
        try:
            with formats.quiet_orbax_failures():  # the warning below is the whole report
                restored = manager.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                          meta=ocp.args.JsonRestore()))
            state, meta = restored["state"], restored["meta"]
            if meta["digest"] != state_digest(state):
                raise ValueError("its arrays do not match the digest recorded when it was saved")
        except Exception as e:  # orbax/tensorstore/json raise many types for damaged files
            unreadable[epoch] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log.warning("warning: checkpoint of epoch %d in %s is unreadable (%s); trying the previous one",
                        epoch, run_dir, unreadable[epoch])
            continue
        if quarantine and unreadable:  # once, by process 0, after every process has read the checkpoints
            distributed.on_primary("quarantine", _quarantine, run_dir, sorted(unreadable))
            manager.reload()
        return state, meta
    if unreadable:
        raise TrainingError(f"no checkpoint in {run_dir} is readable: "
                            + "; ".join(f"epoch {e}: {why}" for e, why in unreadable.items()))
    return None


def _quarantine(run_dir: str, epochs: list[int]) -> None:
    for bad in epochs:
        corrupt = os.path.join(run_dir, CORRUPT_DIR, f"{bad}-{time.strftime('%Y%m%dT%H%M%S')}")
        os.makedirs(os.path.dirname(corrupt), exist_ok=True)
        shutil.move(os.path.join(run_dir, CHECKPOINT_DIR, str(bad)), corrupt)
        log.warning("warning: moved the unreadable checkpoint of epoch %d to %s", bad, corrupt)


def restore_run(run_dir: str) -> tuple[TrainConfig, TrainState, int]:
    """(config, state, epoch) of a run's newest readable checkpoint, for eval and export."""
    config = load_config(run_dir)
    manager = checkpoint_manager(run_dir, config.keep)
    # Parameter and optimizer-state shapes do not depend on the input length or the schedule.
    target = create_state(config, config.model.min_length() or 1, steps_per_epoch=1)
    restored = restore_checkpoint(manager, run_dir, target)
    manager.close()
    if restored is None:
        raise TrainingError(f"{run_dir} has no checkpoint yet")
    return config, restored[0], restored[1]["epoch"]


def read_init(path: str, config=None) -> tuple[dict, object, str]:
    """(Flax variables, family config, sha256) of the checkpoint a run starts from: any file or
    directory ``io.load_checkpoint`` reads (``config`` where the weights do not determine it), or
    another run's directory (its newest readable checkpoint). The sha256 is of the file's bytes,
    or of a directory's files (relative paths and bytes, in sorted order)."""
    from .. import port
    from ..io import readers

    if os.path.isfile(os.path.join(path, CONFIG_FILE)):  # a run directory
        run_config, state, epoch = restore_run(path)
        if config is not None and config != run_config.model:
            raise TrainingError(f"--config contradicts the network of the run {path}: {run_config.model.to_dict()}")
        return (jax.device_get(state.variables()), run_config.model,
                tree_sha256(os.path.join(path, CHECKPOINT_DIR, str(epoch))))
    state_dict, config = readers.load_checkpoint(path, config=config)
    return port.torch_to_flax(state_dict, config), config, tree_sha256(path)


def tree_sha256(path: str) -> str:
    """sha256 of a file, or of a directory's files (relative paths and contents, sorted)."""
    digest = hashlib.sha256()
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    for file in files:
        if file != path:
            digest.update(os.path.relpath(file, path).encode() + b"\0")
        with atomic.errors_named(file), open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


LOSS_NAMES = {"cross_entropy": "cross-entropy", "mse": "mean squared error", "l1": "mean absolute error"}
METRIC_AXES = {"accuracy": {"ylim": (0, 1.02)}, "rmse": {"yscale": "log"}, "snr_db": {}}
METRIC_NAMES = {"accuracy": "accuracy", "rmse": "RMSE (target units)", "snr_db": "SNR (dB)"}


def plot_learning_curve(history: list[dict], path: str, title: str, loss: str = "cross_entropy",
                        metric: str = "accuracy") -> None:
    """Loss (log scale) and the task's headline ``metric`` of the train and test splits per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "test"):  # test: the evaluated epochs (every eval_every)
        rows = [h for h in history if f"{split}_loss" in h]
        ax_loss.plot([h["epoch"] for h in rows], [h[f"{split}_loss"] for h in rows], label=split)
        ax_acc.plot([h["epoch"] for h in rows], [h[f"{split}_{metric}"] for h in rows], label=split)
    ax_loss.set(xlabel="epoch", ylabel=LOSS_NAMES[loss], yscale="log", title="loss")
    ax_acc.set(xlabel="epoch", ylabel=METRIC_NAMES[metric], title=METRIC_NAMES[metric], **METRIC_AXES[metric])
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic.save_figure(fig, path, dpi=100)


"""The run directory: ``config.json``, ``metrics.jsonl`` (one line per epoch),
``learning_curve.png`` and Orbax checkpoints under ``checkpoints/<epoch>``; claiming it for one
writer, saving, restoring (an unreadable checkpoint is moved aside and the previous one used)
and plotting. Process 0 alone writes the files and the manifest (``io.manifest``) that lists
them: nothing but what it lists is ever replaced or deleted, and nothing outside the run
directory is written (a link inside it is refused). Every process takes part in each Orbax
save and restore."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import jax
import numpy as np

from ..config import read_json
from ..errors import TrainingError
from ..io import atomic, formats, readers
from ..io.manifest import Manifest, exclusive, holds_nothing
from . import distributed
from .run_config import TrainConfig
from .steps import TrainState, create_state

T = TypeVar("T")

log = logging.getLogger(__name__)

TIMING_KEYS = ("epoch_time_s", "step_time_ms")  # the only metrics that differ between identical runs
CONFIG_FILE, METRICS_FILE, CURVE_FILE = "config.json", "metrics.jsonl", "learning_curve.png"
CHECKPOINT_DIR, CORRUPT_DIR = "checkpoints", "corrupt_checkpoints"
RUN_OUTPUT = atomic.OwnOutput("a run directory", kind="run", makes_parents=True)


# -- claiming the directory --------------------------------------------------------------------
@contextlib.contextmanager
def claim(run_dir: str, resume: bool, overwrite: bool = False, inputs: tuple[str, ...] = ()) -> Iterator[Manifest]:
    """Hold ``run_dir`` as its one writer for the block: its manifest, with a new run's
    predecessor (``overwrite``) deleted. Everything is checked before anything is written, and
    again once the lock is held: the directory holds nothing flax-resnet1d did not write
    (links included) and, for a new run, no run unless ``overwrite``, and none of ``inputs``."""
    _claimable(run_dir, resume, overwrite, inputs)
    os.makedirs(run_dir, exist_ok=True)
    with exclusive(run_dir, "train"):
        own = _claimable(run_dir, resume, overwrite, inputs)
        own.remove() if not resume else own.settle()
        own.add(CHECKPOINT_DIR + "/")
        yield own


def _claimable(run_dir: str, resume: bool, overwrite: bool, inputs: tuple[str, ...]) -> Manifest:
    path = Path(run_dir)
    if resume:
        own = Manifest.read(path) or _legacy_manifest(path)
        other = own.foreign()
        if other:
            raise TrainingError(f"{run_dir} holds {atomic.listed(other)}, which flax-resnet1d did not write "
                                "(it follows no link and writes nothing outside the run directory): move them out "
                                "before resuming")
        return own
    if path.is_dir() and not path.is_symlink():
        own = Manifest.read(path)
        if own is None and holds_nothing(path):
            return Manifest(path, "run")
        if own is not None and CONFIG_FILE not in own.files and not own.foreign():
            return own  # a start interrupted before its config.json: nothing to lose
        if not overwrite and RUN_OUTPUT.foreign(path) is None:
            raise TrainingError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                                "(resume=True), or replace it with --overwrite (overwrite=True)")
    atomic.check_output(run_dir, overwrite, RUN_OUTPUT, inputs=inputs)
    return Manifest.read(path) if path.is_dir() else Manifest(path, "run")


def _legacy_manifest(path: Path) -> Manifest:
    """The manifest of a run written before manifests (flax-resnet1d < 0.2), from the names and
    layout it wrote: its three files and the Orbax checkpoints under its two directories."""
    files = {name for name in (CONFIG_FILE, METRICS_FILE, CURVE_FILE)
             if (path / name).is_file() and not (path / name).is_symlink()}
    for directory in (CHECKPOINT_DIR, CORRUPT_DIR):
        if not (path / directory).is_dir() or (path / directory).is_symlink():
            continue
        files.add(directory + "/")
        for entry in (path / directory).iterdir():
            if entry.is_dir() and not entry.is_symlink() and (entry / "_CHECKPOINT_METADATA").is_file():
                files.update(p.relative_to(path).as_posix() for p in entry.rglob("*")
                             if p.is_file() and not any(q.is_symlink() for q in (p, *p.parents)))
    return Manifest(path, "run", files)


# -- the run's files ------------------------------------------------------------------------------
def append_text(path: str, text: str) -> None:
    with atomic.errors_named(path), open(path, "a") as f:
        f.write(text)
        f.flush()


def save_config(own: Manifest, config: TrainConfig) -> None:
    own.add(CONFIG_FILE)
    atomic.write_text(own.root / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")


def write_metrics(own: Manifest, history: list[dict]) -> None:
    own.add(METRICS_FILE)
    atomic.write_text(own.root / METRICS_FILE, "".join(json.dumps(h) + "\n" for h in history))


def append_metrics(own: Manifest, record: dict) -> None:
    append_text(str(own.root / METRICS_FILE), json.dumps(record) + "\n")


def load_config(run_dir: str) -> TrainConfig:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise TrainingError(f"{run_dir} is not a run directory: no {CONFIG_FILE}")
    return TrainConfig.from_dict(read_json(path, "run config"), source=path)


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


def checkpoint_manager(run_dir: str, writer: bool = True):
    """Orbax manager over ``run_dir/checkpoints``: one ``<epoch>`` directory per checkpoint.

    Orbax writes each checkpoint into ``<epoch>.orbax-checkpoint-tmp-*`` and renames it when
    complete, so a kill mid-save leaves only a temporary directory, which is never restored.
    Saves are synchronous: on accelerators the next train step donates the state's buffers.
    Old checkpoints are retired by ``retire``, not by Orbax (which deletes any integer-named
    directory). A reader's manager (``writer=False``) creates and deletes nothing.
    """
    import orbax.checkpoint as ocp

    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    if not writer and not os.path.isdir(directory):
        raise TrainingError(f"{run_dir} has no checkpoint yet")

    def manager():
        with formats.quiet_orbax_failures():  # and its warnings about a read-only manager
            options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=writer,
                                                   read_only=not writer)
            return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "meta"))

    try:
        return manager() if writer else _despite_retirement(manager, directory)
    except Exception as e:  # e.g. a read-only or full file system, in Orbax's words
        raise atomic.as_os_error(e, directory) from None


def checkpoint_dir(epoch: int) -> str:
    """Where ``epoch``'s checkpoint lies in the run directory."""
    return f"{CHECKPOINT_DIR}/{epoch}"


def save_checkpoint(manager, own: Manifest | None, epoch: int, state: TrainState, history: list[dict]) -> None:
    """Save ``epoch``'s checkpoint (recorded in ``own``, the writer's manifest; None elsewhere),
    which the writer has recorded as begun (``Manifest.begin``) before the epoch's first step:
    every process writes its part only after that step, which needs them all."""
    import orbax.checkpoint as ocp

    meta = {"epoch": epoch, "step": int(state.step), "digest": state_digest(state), "history": history}
    try:
        with formats.quiet_orbax_failures():
            manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)))
    except Exception as e:  # tensorstore reports a full disk inside its own exception types
        error = atomic.as_os_error(e, os.path.join(str(manager.directory), str(epoch)))
        if isinstance(error, OSError) or not distributed.is_multiprocess():
            raise error from None
        raise  # with several processes most likely a lost peer's collective: the heartbeat names it
    if own is not None:
        own.commit(checkpoint_dir(epoch))


def retire(manager, own: Manifest, keep: int) -> None:
    """Delete the tool's checkpoints older than the newest ``keep``. Each is first renamed out of
    its epoch's name, so that a reader sees a checkpoint whole or not at all, never half-deleted."""
    for epoch in own.steps(CHECKPOINT_DIR)[:-keep]:
        retired = f"{CHECKPOINT_DIR}/.{epoch}.retired"
        if os.path.isdir(os.path.join(own.root, CHECKPOINT_DIR, str(epoch))):
            own.move(f"{CHECKPOINT_DIR}/{epoch}", retired)
        else:  # killed between move's rename and its manifest update: the entries name a directory gone
            own.remove(f"{CHECKPOINT_DIR}/{epoch}")
        own.remove(retired)
    manager.reload()


def restore_checkpoint(manager, run_dir: str, target: TrainState, own: Manifest | None = None,
                       ) -> tuple[TrainState, dict] | None:
    """The newest readable checkpoint as (state, meta), or None if there is none.

    An unreadable checkpoint (damaged or missing files, digest mismatch) is skipped with a
    warning in favour of the previous one; one that disappears while it is read was retired by
    the run's writer, and the newest is looked up again. With ``own`` (the writer's manifest,
    when training resumes and will write those epochs again) the skipped ones are moved to
    ``run_dir/corrupt_checkpoints`` once an older one has restored. If none restores, nothing is
    moved and TrainingError says why.
    """
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    unreadable = {}
    for _ in range(_ROTATIONS):
        steps, listed = _steps(manager, run_dir)
        rotated = listed and not steps  # listed, gone from the disk: retired meanwhile
        for epoch in steps[::-1]:
            if epoch in unreadable:
                continue
            try:
                readers.check_regular_tree(Path(run_dir, CHECKPOINT_DIR, str(epoch)))  # a FIFO would block the read
                with formats.quiet_orbax_failures():  # the warning below is the whole report
                    restored = manager.restore(epoch, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
                state, meta = restored["state"], restored["meta"]
                if meta["digest"] != state_digest(state):
                    raise ValueError("its arrays do not match the digest recorded when it was saved")
            except Exception as e:  # orbax/tensorstore/json raise many types for damaged files
                if not os.path.isdir(os.path.join(run_dir, CHECKPOINT_DIR, str(epoch))):
                    rotated = True  # retired by the writer while we read it: not damaged
                    break
                unreadable[epoch] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                log.warning("warning: checkpoint of epoch %d in %s is unreadable (%s); trying the previous one",
                            epoch, run_dir, unreadable[epoch])
                continue
            if unreadable:  # once, by process 0, after every process has read the checkpoints
                distributed.on_primary("quarantine", _quarantine, own, sorted(unreadable))
                manager.reload()
            return state, meta
        if not rotated:
            break
    if unreadable:
        raise TrainingError(f"no checkpoint in {run_dir} is readable: "
                            + "; ".join(f"epoch {e}: {why}" for e, why in unreadable.items()))
    return None


_ROTATIONS = 5  # times a reader looks again after the writer retired the checkpoint it was reading


def _steps(manager, run_dir: str) -> tuple[list[int], bool]:
    """(Orbax's checkpoints on disk that the run's manifest lists, all of them in a run without
    one; whether the manifest lists any). The manifest is read first: a checkpoint the writer
    adds meanwhile is found on disk, one it retires is not."""
    own = Manifest.read(run_dir)
    listed = None if own is None else set(own.steps(CHECKPOINT_DIR))

    def on_disk() -> set[int]:
        manager.reload()
        return set(manager.all_steps())

    steps = _despite_retirement(on_disk, os.path.join(run_dir, CHECKPOINT_DIR))
    return sorted(steps if listed is None else steps & listed), bool(listed)


def _despite_retirement(read: Callable[[], T], directory: str) -> T:
    """``read()``, again (up to ``_ROTATIONS`` times) while it fails on a file gone from ``directory``
    that still exists: a checkpoint the run's writer retired while Orbax listed the directory."""
    for attempt in range(_ROTATIONS):
        try:
            return read()
        except Exception as e:
            vanished = getattr(atomic.as_os_error(e, directory), "errno", None) == errno.ENOENT
            if not vanished or not os.path.isdir(directory) or attempt == _ROTATIONS - 1:
                raise


def _quarantine(own: Manifest | None, epochs: list[int]) -> None:
    if own is None:  # a reader: nothing is moved
        return
    for bad in epochs:
        corrupt = f"{CORRUPT_DIR}/{bad}-{time.strftime('%Y%m%dT%H%M%S')}"
        own.move(f"{CHECKPOINT_DIR}/{bad}", corrupt)
        log.warning("warning: moved the unreadable checkpoint of epoch %d to %s", bad, own.root / corrupt)


def restore_run(run_dir: str) -> tuple[TrainConfig, TrainState, int]:
    """(config, state, epoch) of a run's newest readable checkpoint, for eval and export: read
    only (a checkpoint the run's writer retires meanwhile is not mistaken for a damaged one)."""
    config = load_config(run_dir)
    manager = checkpoint_manager(run_dir, writer=False)
    # Parameter and optimizer-state shapes do not depend on the input length or the schedule.
    target = create_state(config, config.model.min_length() or 1, steps_per_epoch=1)
    restored = restore_checkpoint(manager, run_dir, target)
    manager.close()
    if restored is None:
        raise TrainingError(f"{run_dir} has no checkpoint yet")
    return config, restored[0], restored[1]["epoch"]


def is_run_directory(path: str | os.PathLike) -> bool:
    """A training run's directory (config.json and checkpoints/), not an Orbax checkpoint
    directory, which holds a config.json of its own."""
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isdir(os.path.join(path, CHECKPOINT_DIR))


def read_init(path: str, config=None) -> tuple[dict, object, str]:
    """(Flax variables, family config, sha256) of the checkpoint a run starts from: any file or
    directory ``io.load_checkpoint`` reads (``config`` where the weights do not determine it), or
    another run's directory (its newest readable checkpoint). The sha256 is of the file's bytes,
    or of a directory's files (relative paths and bytes, in sorted order)."""
    from .. import port

    if is_run_directory(path):
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


def plot_learning_curve(own: Manifest, history: list[dict], title: str, loss: str = "cross_entropy",
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
    fig.suptitle(title, parse_math=False)  # the title holds user text (a file name): "$" is not TeX
    fig.tight_layout()
    own.add(CURVE_FILE)
    atomic.save_figure(fig, own.root / CURVE_FILE, dpi=100)


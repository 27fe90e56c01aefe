"""Kill -9 a real training process mid-run, resume it, and get the uninterrupted run bit for bit:
a classifier, and a denoising AE1d with noise and shifts drawn from (seed, epoch)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from train_helpers import assert_same_state, save_npz, synthetic_dataset, without_timing

from flax_resnet1d import cli
from flax_resnet1d.training import run_files

EPOCHS = 12
KILL_AFTER_CHECKPOINT = 3


TASK_ARGS = {"classify": [], "signal": ["--arch", "AE1d", "--noise", "0.3", "--augment", "shift", "--loss", "l1"]}


def _train_args(tmp_path, run_dir, task: str) -> list[str]:
    return ["train", "--dataset", str(tmp_path / "train.npz"), "--test-data", str(tmp_path / "test.npz"),
            "--channel", "4", "--layers", "1", "1", "--block", "plain", "--kernel-size", "3",
            "--epochs", str(EPOCHS), "--batch-size", "8", "--lr", "3e-3", "--ckpt-every", "1", "--keep", "2",
            *TASK_ARGS[task], "--no-progress", "--out", str(run_dir)]


@pytest.mark.parametrize("task", sorted(TASK_ARGS))
def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(tmp_path, task):
    dataset = synthetic_dataset()
    save_npz(dataset, tmp_path / "train.npz", tmp_path / "test.npz")
    if task == "signal":  # the series as targets: an auto-encoder of the training inputs
        for split, x in (("train", dataset.x_train), ("test", dataset.x_test)):
            np.savez(tmp_path / f"{split}.npz", x=np.swapaxes(x, 1, 2))
    assert cli.main(_train_args(tmp_path, tmp_path / "uninterrupted", task)) == 0

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "flax_resnet1d"]
    process = subprocess.Popen(command + _train_args(tmp_path, killed, task), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    checkpoint = killed / run_files.CHECKPOINT_DIR / str(KILL_AFTER_CHECKPOINT)
    deadline = time.monotonic() + 300
    while not checkpoint.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, f"training ended before it could be killed: {process.communicate()}"
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    checkpoints = sorted(int(name) for name in os.listdir(killed / run_files.CHECKPOINT_DIR) if name.isdigit())
    assert KILL_AFTER_CHECKPOINT <= checkpoints[-1] < EPOCHS, checkpoints  # killed mid-run

    resumed = subprocess.run(command + ["train", "--resume", str(killed), "--no-progress"], capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {killed} after epoch {checkpoints[-1]}" in resumed.stdout
    assert "Traceback" not in resumed.stderr

    reference = run_files.read_metrics(str(tmp_path / "uninterrupted"))
    assert [h["epoch"] for h in reference] == list(range(1, EPOCHS + 1))
    assert without_timing(run_files.read_metrics(str(killed))) == without_timing(reference)
    _, state, epoch = run_files.restore_run(str(killed))
    _, reference_state, reference_epoch = run_files.restore_run(str(tmp_path / "uninterrupted"))
    assert epoch == reference_epoch == EPOCHS
    assert_same_state(state, reference_state)
    print(f"killed after checkpoint {checkpoints[-1]} of {EPOCHS}; resumed run identical to the uninterrupted one")

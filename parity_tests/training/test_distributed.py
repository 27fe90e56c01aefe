"""``flax-resnet1d train`` across real processes: ``jax.distributed`` on 127.0.0.1, gloo collectives.

Every test starts real ``python -m flax_resnet1d train`` subprocesses (free ports chosen here,
every process time-limited and killed in a ``finally``) on a tiny network and data set:

- 2 processes x 1 device and 2 processes x 2 simulated devices vs 1 process x 1 device: the
  same epochs, losses and final parameters to float32 rounding (the gradient all-reduce
  sums in another order), the same test accuracy, and ``eval`` of the runs agrees;
- SIGKILL of one process mid-run: the survivor exits non-zero within the heartbeat bound,
  naming the lost process; ``--resume`` on every process (after a half-written and a corrupt
  checkpoint were added) ends bit-identical to an uninterrupted 2-process run;
- bad setups exit 2 with one line: unreachable coordinator, --process-id out of range (and
  other malformed cluster flags, a busy coordinator port), processes with other arguments or
  data, a batch the devices do not divide, one process failing alone;
- JAX's private client API (key-value store, barriers) gone or changed: one ``DistributedError``
  naming the JAX version and what is missing.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import jax
import jax._src.distributed as jax_distributed
import pytest
from flax.traverse_util import flatten_dict
from train_helpers import (assert_same_state, corrupt_files, dead_shortcut_biases, save_npz, synthetic_dataset,
                           without_timing)

from flax_resnet1d import cli
from flax_resnet1d.errors import DistributedError
from flax_resnet1d.io.manifest import Manifest
from flax_resnet1d.parity import relative_error
from flax_resnet1d.training import distributed, run_files, steps

EPOCHS = 3
TOLERANCE = 1e-5  # max|a-b|/max|b|: epoch losses, each parameter tensor, eval losses (float32)
HEARTBEAT = 4.0  # --heartbeat-timeout of the fault tests, seconds
EXIT_SLACK = 20.0  # on top of the heartbeat: a poll interval, process exit, and 2 busy shared cores
PROCESS_TIMEOUT = 240.0  # no test process may run longer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    save_npz(synthetic_dataset(), directory / "train.npz", directory / "test.npz")
    (directory / "other").mkdir()  # same file names, other training data: only the data hash tells
    save_npz(synthetic_dataset(seed=1), directory / "other" / "train.npz", directory / "other" / "unused.npz")
    shutil.copy(directory / "test.npz", directory / "other" / "test.npz")
    return directory


def _train_args(data_dir: Path, run_dir: Path, *extra: str, dataset: str = "train.npz") -> list[str]:
    return ["train", "--dataset", str(data_dir / dataset), "--test-data", str(data_dir / "test.npz"),
            "--channel", "4", "--layers", "1", "1", "--block", "plain", "--kernel-size", "3",
            "--epochs", str(EPOCHS), "--batch-size", "16", "--lr", "3e-2", "--ckpt-every", str(EPOCHS), "--keep", "2",
            "--no-progress", "--out", str(run_dir), *extra]


class Cluster:
    """``flax-resnet1d`` subprocesses, one per argument list, with process id and coordinator
    appended; output to files (a full pipe must never block a process)."""

    def __init__(self, log_dir: Path, devices_per_process: int = 1):
        self.log_dir, self.devices = log_dir, devices_per_process
        self.processes: list[subprocess.Popen] = []
        self.started = 0.0

    def start(self, argv_per_process: list[list[str]], distributed: bool = True) -> Cluster:
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(self.devices), PYTHONUNBUFFERED="1")
        address = f"127.0.0.1:{_free_port()}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        for i, argv in enumerate(argv_per_process):
            cluster = (["--coordinator", address, "--num-processes", str(len(argv_per_process)), "--process-id", str(i)]
                       if distributed else [])
            with open(self.log_dir / f"{i}.out", "w") as out, open(self.log_dir / f"{i}.err", "w") as err:
                self.processes.append(subprocess.Popen([sys.executable, "-m", "flax_resnet1d", *argv, *cluster],
                                                       stdout=out, stderr=err, env=env))
        return self

    def wait(self, process: int | None = None) -> list[int]:
        """Return codes (of one process, or all), each process waited for at most PROCESS_TIMEOUT."""
        chosen = self.processes if process is None else [self.processes[process]]
        return [p.wait(timeout=max(1.0, PROCESS_TIMEOUT - (time.monotonic() - self.started))) for p in chosen]

    def output(self, i: int, stream: str = "err") -> str:
        return (self.log_dir / f"{i}.{stream}").read_text()

    def kill_all(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                p.wait()


@contextlib.contextmanager
def cluster(log_dir: Path, argv_per_process: list[list[str]], devices_per_process: int = 1, distributed: bool = True):
    c = Cluster(log_dir, devices_per_process)
    try:
        yield c.start(argv_per_process, distributed)
    finally:
        c.kill_all()


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory) -> dict[str, Path]:
    """Run directories: 'one' (1 process x 1 device, in this process), '2x1' and '2x2'
    (2 processes x 1 or 2 devices), trained at the same time."""
    root = tmp_path_factory.mktemp("runs")
    layouts = {"2x1": 1, "2x2": 2}
    with contextlib.ExitStack() as stack:
        clusters = {name: stack.enter_context(cluster(root / f"{name}-logs", [_train_args(data_dir, root / name)] * 2,
                                                      devices))
                    for name, devices in layouts.items()}
        assert jax.device_count() == 1
        assert cli.main(_train_args(data_dir, root / "one")) == 0
        for name, c in clusters.items():
            codes = c.wait()
            assert codes == [0, 0], f"{name}: " + "\n".join(c.output(i)[-3000:] for i in range(2))
            assert all("Traceback" not in c.output(i) for i in range(2))
    return {name: root / name for name in ("one", *layouts)}


@functools.cache  # the one-process reference is compared twice
def _eval_json(run_dir: Path) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["eval", str(run_dir), "--json"]) == 0
    return json.loads(out.getvalue())


@pytest.mark.parametrize("layout", ["2x1", "2x2"])
def test_processes_match_one_process(layout, runs):
    one, many = runs["one"], runs[layout]
    reference, metrics = run_files.read_metrics(str(one)), run_files.read_metrics(str(many))
    assert [h["epoch"] for h in metrics] == list(range(1, EPOCHS + 1))  # process 0 alone wrote them
    assert (many / run_files.CURVE_FILE).is_file()
    loss_error = max(relative_error(h[k], r[k]) for h, r in zip(metrics, reference)
                     for k in ("train_loss", "test_loss"))
    assert [h["test_accuracy"] for h in metrics] == [h["test_accuracy"] for h in reference]

    config, state, epoch = run_files.restore_run(str(many))
    _, reference_state, _ = run_files.restore_run(str(one))
    assert epoch == EPOCHS
    a, b = flatten_dict(jax.device_get(state.params)), flatten_dict(jax.device_get(reference_state.params))
    dead = dead_shortcut_biases(config.model)  # zero gradient in exact arithmetic: compared through the outputs
    param_error = max(relative_error(a[path], b[path]) for path in b if path not in dead)

    evaluation, reference_evaluation = _eval_json(many), _eval_json(one)
    eval_error = max(relative_error(evaluation[s]["loss"], reference_evaluation[s]["loss"]) for s in ("train", "test"))
    print(f"{layout} vs 1 process x 1 device, {EPOCHS} epochs: losses {loss_error:.1e}, parameters {param_error:.1e}, "
          f"eval losses {eval_error:.1e}; test accuracy {[h['test_accuracy'] for h in metrics]}")
    assert loss_error <= TOLERANCE and param_error <= TOLERANCE and eval_error <= TOLERANCE
    assert all(evaluation[s]["accuracy"] == reference_evaluation[s]["accuracy"] for s in ("train", "test"))
    initial = flatten_dict(jax.device_get(steps.create_state(config, 32, 1).params))
    assert relative_error(b[("fc", "kernel")], initial[("fc", "kernel")]) > 1e-3  # compared after training


def test_sigkill_one_process_then_resume_matches_uninterrupted_run(data_dir, runs, tmp_path):
    run_dir = tmp_path / "killed"
    args = _train_args(data_dir, run_dir, "--ckpt-every", "1", "--heartbeat-timeout", str(HEARTBEAT))
    checkpoints = run_dir / run_files.CHECKPOINT_DIR
    with cluster(tmp_path / "logs", [args, args]) as c:
        while not (checkpoints / "2").is_dir() and all(p.poll() is None for p in c.processes):
            assert time.monotonic() - c.started < PROCESS_TIMEOUT
            time.sleep(0.01)
        assert all(p.poll() is None for p in c.processes), c.output(0)[-2000:] + c.output(1)[-2000:]
        c.processes[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        [code] = c.wait(0)
        exit_seconds = time.monotonic() - killed
        survivor = c.output(0)
    print(f"survivor exited {exit_seconds:.1f} s after the SIGKILL (heartbeat timeout {HEARTBEAT:g} s), code {code}")
    assert code == 1, survivor[:2000] + "\n...\n" + survivor[-1000:]
    assert "lost process 1 of 2" in survivor and "Traceback" not in survivor
    assert exit_seconds < HEARTBEAT + EXIT_SLACK
    kept = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert 2 <= kept[-1] < EPOCHS, kept

    # A save cut short leaves a temporary directory (never restored); the newest complete
    # checkpoint is damaged too: process 0 alone moves it aside, the previous one is used.
    Manifest.read(run_dir).begin(f"{run_files.CHECKPOINT_DIR}/{kept[-1] + 1}")
    (checkpoints / f"{kept[-1] + 1}.orbax-checkpoint-tmp" / "state").mkdir(parents=True, exist_ok=True)
    assert corrupt_files(checkpoints / str(kept[-1]) / "state") > 0
    resume = ["train", "--resume", str(run_dir), "--no-progress"]
    with cluster(tmp_path / "resume-logs", [resume, resume]) as c:
        codes = c.wait()
        outputs = [c.output(i) for i in range(2)]
        assert codes == [0, 0], "\n".join(o[-3000:] for o in outputs)
        assert f"resumed {run_dir} after epoch {kept[-2]}" in c.output(0, "out")
    assert "moved the unreadable checkpoint" in outputs[0] and "moved the unreadable" not in outputs[1]
    assert len(os.listdir(run_dir / run_files.CORRUPT_DIR)) == 1

    uninterrupted = runs["2x1"]
    assert without_timing(run_files.read_metrics(str(run_dir))) == without_timing(run_files.read_metrics(str(uninterrupted)))
    _, state, epoch = run_files.restore_run(str(run_dir))
    _, reference_state, _ = run_files.restore_run(str(uninterrupted))
    assert epoch == EPOCHS
    assert_same_state(state, reference_state)
    print(f"resumed from epoch {kept[-2]} (epoch {kept[-1]} corrupt): metrics and state bit-identical to the "
          "uninterrupted 2-process run")


def test_unreachable_coordinator(data_dir, tmp_path):
    argv = _train_args(data_dir, tmp_path / "run", "--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes",
                       "2", "--process-id", "1", "--connect-timeout", "2")
    with cluster(tmp_path / "logs", [argv], distributed=False) as c:
        [code] = c.wait()
        seconds = time.monotonic() - c.started
    assert code == 2, c.output(0)[-2000:]
    assert "unreachable after 2 s" in c.output(0) and len(c.output(0).strip().splitlines()) == 1
    assert seconds < 2 + EXIT_SLACK


@pytest.mark.parametrize("flags, message", [
    (["--num-processes", "2", "--process-id", "2"], "--process-id 2 is out of range for --num-processes 2 (0..1)"),
    (["--num-processes", "2"], "--coordinator, --num-processes and --process-id go together"),
    (["--num-processes", "2", "--process-id", "0", "--coordinator", "127.0.0.1"], "is not HOST:PORT"),
    (["--num-processes", "2", "--process-id", "0"], "process 0 cannot serve the coordinator on port"),
], ids=["id out of range", "incomplete", "no port", "port in use"])
def test_bad_cluster_flags(flags, message, data_dir, tmp_path, capsys):
    with socket.socket() as busy:  # checked before JAX starts: safe in this process
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        coordinator = [] if "--coordinator" in flags or "--process-id" not in flags else [
            "--coordinator", f"127.0.0.1:{busy.getsockname()[1]}"]
        assert cli.main(_train_args(data_dir, tmp_path / "run", *flags, *coordinator)) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("first, second, message", [
    ([], ["--epochs", str(EPOCHS + 1)], "process 1 of 2 started with other arguments (config) than process 0"),
    ([], ["other"], "process 1 of 2 started with other data than process 0"),
    (["--batch-size", "6"], ["--batch-size", "6"], "batch size 6 must be a multiple of the 4 devices"),
    ([], ["missing.npz"], "missing.npz: no such file"),  # process 1 alone fails; process 0 learns it from the heartbeat
], ids=["arguments", "data", "batch", "one fails alone"])
def test_bad_setup_stops_every_process(first, second, message, data_dir, tmp_path):
    run_dir, heartbeat = tmp_path / "run", ["--heartbeat-timeout", str(HEARTBEAT)]
    if second == ["other"]:
        second_args = _train_args(data_dir / "other", run_dir, *heartbeat)
    elif second == ["missing.npz"]:
        second_args = _train_args(data_dir, run_dir, *heartbeat, dataset="missing.npz")
    else:
        second_args = _train_args(data_dir, run_dir, *heartbeat, *second)
    with cluster(tmp_path / "logs", [_train_args(data_dir, run_dir, *heartbeat, *first), second_args],
                 devices_per_process=2) as c:
        codes = c.wait()
        errors = [c.output(i) for i in range(2)]
    assert codes == [2, 2], errors
    for error in errors:
        assert message in error and len(error.strip().splitlines()) == 1, error
    assert not (run_dir / run_files.CHECKPOINT_DIR).is_dir() or not os.listdir(run_dir / run_files.CHECKPOINT_DIR)


def test_the_installed_jax_has_the_private_client_api():
    assert distributed._client() is None  # this process never starts jax.distributed


@pytest.mark.parametrize("global_state, missing", [
    (None, "jax._src.distributed.global_state.client"),
    (types.SimpleNamespace(), "jax._src.distributed.global_state.client"),
    (types.SimpleNamespace(client=types.SimpleNamespace(
        **dict.fromkeys(("key_value_set", "blocking_key_value_get", "wait_at_barrier"), print))),
     "the distributed client's key_value_dir_get()"),
], ids=["no global_state", "no client", "no key_value_dir_get"])
def test_a_changed_private_client_api_is_one_clear_error(global_state, missing, monkeypatch):
    if global_state is None:
        monkeypatch.delattr(jax_distributed, "global_state")
    else:
        monkeypatch.setattr(jax_distributed, "global_state", global_state)
    for use in (distributed._client, distributed.is_multiprocess, lambda: distributed.check_same_setup({})):
        with pytest.raises(DistributedError) as error:
            use()
        assert str(error.value) == (f"JAX {jax.__version__} lacks {missing}, which training uses to coordinate "
                                    f"processes (known to work with JAX {distributed.CLIENT_TESTED_JAX})")

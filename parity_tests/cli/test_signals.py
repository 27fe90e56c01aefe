"""Signals end every command with the shell's status and one line, temporaries removed
(issue 34, kind 3): real signals sent to the installed command at several delays, and the
signal a library swallows (raised inside a garbage-collection callback) in-process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from checkpoint_helpers import leftovers, small_state_dict, write_checkpoint
from cli_helpers import run
from conftest import MANIFEST, MDNC_DIR

from flax_resnet1d import interrupts
from flax_resnet1d.cli import summary as cli_summary
from flax_resnet1d.io import atomic
from flax_resnet1d.io.manifest import Manifest
from flax_resnet1d.training import run_files

FIXTURE = MDNC_DIR / f"{sorted(MANIFEST)[0]}.pt"
# command -> its arguments (a long run to resume for train) and a delay per signal, spread over its life
COMMANDS = {
    "verify": (["verify", FIXTURE, "--seed", "0"], (1.0, 3.0, 5.0)),
    "convert": (["convert", FIXTURE, "{tmp}/out_orbax"], (0.3, 0.8, 1.3)),
    "eval": (["eval", "{run}"], (0.4, 1.2, 2.0)),
    "export": (["export", "{run}", "{tmp}/out.pt"], (0.5, 2.0, 3.5)),
    "train": (["train", "--resume", "{run}", "--no-progress"], (1.0, 2.5, 4.0)),
}
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


@pytest.fixture
def long_run(tmp_path, tiny_run) -> Path:
    """A copy of the one-epoch run that --resume continues for many epochs, saving each (a signal
    then often lands inside an Orbax save)."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    config = run_dir / "config.json"
    text = config.read_text().replace('"epochs": 1,', '"epochs": 5000,')
    config.write_text(re.sub(r'"ckpt_every": \d+', '"ckpt_every": 1', text))
    return run_dir


@pytest.mark.parametrize(("command", "signum", "delay"),
                         [(c, s, COMMANDS[c][1][i]) for c in COMMANDS for i, s in enumerate(SIGNALS)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_a_signal_ends_the_command_with_its_status_and_one_line(tmp_path, long_run, command, signum, delay):
    argv = [str(a).format(tmp=tmp_path, run=long_run) for a in COMMANDS[command][0]]
    process = subprocess.Popen([sys.executable, "-m", "flax_resnet1d", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    # The delay counts from when the program handles signals (all three at once; Python itself
    # catches SIGINT from its start), not from Python's start-up, slow on a loaded machine, during
    # which the default actions apply.
    deadline = time.monotonic() + 60
    while not _catches(process.pid, signal.SIGTERM) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    assert process.poll() is None, f"{command} ended before the signal: {process.communicate()}"
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    assert err.splitlines() == [f"flax-resnet1d {command}: {WORDS[signum]}"], err
    assert leftovers(tmp_path) == [] and leftovers(long_run) == []
    assert Manifest.read(long_run).foreign() == []  # the run stays the tool's: resumable, replaceable
    if command == "train":
        assert run_files.read_metrics(str(long_run))  # complete lines only


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler installed for ``signum`` (Linux: SigCgt)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signum - 1) & 1)


def _swallowed_sigterm() -> None:
    """SIGTERM arriving while Python runs a __del__: its exception is printed and dropped."""
    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)

    Finalized()


def test_a_swallowed_signal_still_fails_the_command(monkeypatch, capsys):
    """The command carries on after the swallowed exception; it must not exit 0."""
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: None)  # pytest's would fail the test on it

    def command(args) -> int:
        _swallowed_sigterm()
        print("finished")
        return 0

    monkeypatch.setattr(cli_summary, "run_summary", command)  # registered when main builds its parser
    assert run(capsys, "summary", "--preset", "encnet12") == (143, "finished\n", "flax-resnet1d summary: terminated\n")
    assert interrupts.received() is None  # nothing left pending for the caller's later writes


def test_nothing_is_committed_after_a_swallowed_signal(tmp_path, monkeypatch, capsys):
    src = write_checkpoint(tmp_path / "model.msgpack", small_state_dict(seed=2))
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: None)
    write_file = atomic.write_file

    def written_then_signalled(path, data):
        write_file(path, data)
        _swallowed_sigterm()

    monkeypatch.setattr(atomic, "write_file", written_then_signalled)
    assert run(capsys, "convert", src, tmp_path / "out.pt") == (143, "", "flax-resnet1d convert: terminated\n")
    assert not (tmp_path / "out.pt").exists() and leftovers(tmp_path) == []

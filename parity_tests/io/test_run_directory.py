"""A run directory is the tool's by its manifest, never by its names (issue 34, kinds 1, 2, 4):

1. the tool deletes only what its manifest lists, after checking that the whole tree holds
   nothing else; it checks everything before touching an existing run; an interrupted start is
   recognisably its own and can be replaced or resumed; a run written before manifests resumes;
2. nothing is written, moved or deleted through a link inside a run directory;
4. one writer per run directory (a second one gets the holder's pid), and a reader is not
   misled by a checkpoint the writer retires while it reads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_exit_2, run, snapshot
from train_helpers import TINY_MODEL

from flax_resnet1d.io.manifest import LOCK_FILE, MANIFEST_FILE, Manifest
from flax_resnet1d.training import loop, run_files


def _train(user_data: Path, run_dir: Path, *extra) -> list:
    return ["train", "--dataset", user_data / "train.npz", "--test-data", user_data / "test.npz", *TINY_MODEL,
            "--epochs", "1", "--out", run_dir, *extra]


def _copy(tiny_run: Path, run_dir: Path) -> Path:
    shutil.copytree(tiny_run, run_dir)
    return run_dir


# -- 1. nothing of the user's is deleted -----------------------------------------------------------
def _own_config_json(d: Path) -> None:
    d.mkdir()
    (d / "config.json").write_text('{"my": "experiment"}')


def _own_config_and_ckpts(d: Path) -> None:
    _own_config_json(d)
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "best.ckpt").write_bytes(os.urandom(64))


def _user_file_in(where: str):
    def build(d: Path, tiny_run: Path) -> None:
        _copy(tiny_run, d)
        (d / where).write_text("mine")
    return build


def _user_step(d: Path, tiny_run: Path) -> None:
    _copy(tiny_run, d)
    shutil.copytree(d / "checkpoints" / "1", d / "checkpoints" / "0")  # integer-named, but not the tool's


def _users_config(d: Path, _) -> None:
    _own_config_json(d)


def _users_config_and_ckpts(d: Path, _) -> None:
    _own_config_and_ckpts(d)


ALIEN = (_users_config, _users_config_and_ckpts)  # not runs at all
USER_DIRECTORIES = {  # --out RUN --overwrite over a directory the tool must not empty -> what the line names
    "a config.json of the user's": (_users_config, r"holds config.json and no \.flax-resnet1d"),
    "config.json + checkpoints/*.ckpt": (_users_config_and_ckpts, r"holds checkpoints, config.json"),
    "a file in RUN/checkpoints": (_user_file_in("checkpoints/notes.txt"), r"holds checkpoints/notes.txt"),
    "a file inside an Orbax checkpoint": (_user_file_in("checkpoints/1/state/notes.txt"),
                                         r"holds checkpoints/1/state/notes.txt"),
    "a name like a temporary": (_user_file_in("results.tmp-123"), r"holds results.tmp-123"),
    "a checkpoint the tool did not write": (_user_step, r"holds checkpoints/0/"),
}


RUNS_WITH_USER_FILES = [case for case, (build, _) in USER_DIRECTORIES.items() if build not in ALIEN]  # resumable


@pytest.mark.parametrize(("case", "mode"), [(case, "--overwrite") for case in USER_DIRECTORIES]
                         + [(case, "--resume") for case in RUNS_WITH_USER_FILES])
def test_a_directory_holding_the_users_files_is_refused_untouched(tmp_path, capsys, tiny_run, user_data, case, mode):
    build, pattern = USER_DIRECTORIES[case]
    run_dir = tmp_path / "run"
    build(run_dir, tiny_run)
    before = snapshot(tmp_path)
    argv = _train(user_data, run_dir, "--overwrite") if mode == "--overwrite" else ["train", "--resume", run_dir,
                                                                                    "--no-progress"]
    assert_one_line_exit_2(run(capsys, *argv), pattern)
    assert snapshot(tmp_path) == before


REFUSED_BEFORE_TOUCHING = {  # what `--out RUN --overwrite` fails on -> (extra arguments, devices, the line)
    "memory": (["--batch-size", "1000000000"], 1, r"a train step of batch size 1000000000"),
    "devices": (["--batch-size", "7"], 2, r"batch size 7 .*2 devices"),
}


@pytest.mark.parametrize("case", list(REFUSED_BEFORE_TOUCHING))
def test_overwrite_that_fails_its_checks_keeps_the_old_run(tmp_path, capsys, tiny_run, user_data, case):
    extra, devices, pattern = REFUSED_BEFORE_TOUCHING[case]
    run_dir = _copy(tiny_run, tmp_path / "run")
    before = snapshot(run_dir)
    argv = _train(user_data, run_dir, "--overwrite", *extra)
    if devices == 1:
        result = run(capsys, *argv)
    else:  # devices are set when JAX starts: another process
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        done = subprocess.run([sys.executable, "-m", "flax_resnet1d", *map(str, argv)], capture_output=True,
                              text=True, env=env, timeout=300)
        result = (done.returncode, done.stdout, done.stderr)
    assert_one_line_exit_2(result, pattern)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("stop_in", ["save_config", "_compiled_steps"])
def test_an_interrupted_start_can_be_replaced_and_resumed(tmp_path, capsys, tiny_run, user_data, monkeypatch,
                                                          stop_in):
    """Ctrl-C before config.json is written, and after: the directory left is the tool's."""
    run_dir = _copy(tiny_run, tmp_path / "run")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(loop, stop_in, interrupted)
        assert run(capsys, *_train(user_data, run_dir, "--overwrite"))[0] == 130
    if stop_in == "save_config":  # nothing but the tool's bookkeeping: a plain --out takes it
        assert sorted(os.listdir(run_dir)) == [MANIFEST_FILE, LOCK_FILE, "checkpoints"]
        assert run(capsys, *_train(user_data, run_dir))[0] == 0
    else:
        assert run(capsys, "train", "--resume", run_dir, "--no-progress")[0] == 0
    assert [h["epoch"] for h in run_files.read_metrics(str(run_dir))] == [1]
    assert run(capsys, *_train(user_data, run_dir, "--overwrite", "--seed", "3"))[0] == 0
    assert Manifest.read(run_dir).foreign() == []


def test_retention_deletes_only_the_tools_files(tmp_path):
    """What --keep retires goes file by file from the manifest: a user's file keeps its folder."""
    root = tmp_path / "run"
    (root / "checkpoints" / "1" / "state").mkdir(parents=True)
    (root / "checkpoints" / "1" / "state" / "array").write_bytes(b"tool")
    own = Manifest(root, "run", {"checkpoints/"})
    own.begin("checkpoints/1")
    own.commit("checkpoints/1")
    (root / "checkpoints" / "1" / "state" / "mine.txt").write_text("user")
    own.move("checkpoints/1", "checkpoints/.1.retired")
    own.remove("checkpoints/.1.retired")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        MANIFEST_FILE, "checkpoints/.1.retired/state/mine.txt"]
    assert Manifest.read(root).foreign() == ["checkpoints/.1.retired/"]


def test_a_run_written_before_manifests_resumes_but_is_not_overwritten(tmp_path, capsys, tiny_run, user_data):
    run_dir = _copy(tiny_run, tmp_path / "run")
    (run_dir / MANIFEST_FILE).unlink()
    assert_one_line_exit_2(run(capsys, *_train(user_data, run_dir, "--overwrite")),
                           r"no \.flax-resnet1d\.json listing what flax-resnet1d wrote there")
    config = run_files.load_config(run_dir)
    (run_dir / "config.json").write_text((run_dir / "config.json").read_text().replace('"epochs": 1,',
                                                                                        '"epochs": 2,'))
    assert config.epochs == 1 and run(capsys, "train", "--resume", run_dir, "--no-progress")[0] == 0
    assert Manifest.read(run_dir).foreign() == [] and Manifest.read(run_dir).steps("checkpoints") == [1, 2]


def test_export_checks_its_data_before_writing(tmp_path, capsys, user_data):
    data = tmp_path / "data"
    shutil.copytree(user_data, data)
    run_dir = tmp_path / "run"
    assert run(capsys, *_train(data, run_dir))[0] == 0
    shutil.move(data, tmp_path / "moved")
    assert_one_line_exit_2(run(capsys, "export", run_dir, tmp_path / "model.pt"), r"train\.npz")
    assert not (tmp_path / "model.pt").exists()


def test_a_title_with_tex_is_plotted_as_text(tmp_path, capsys, user_data):
    """A data set's file name reaches the learning curve's title; "$...$" in it is not TeX."""
    data = tmp_path / r"x$\frac{a}$_{b.npz"
    shutil.copy(user_data / "train.npz", data)
    assert run(capsys, *_train(user_data, tmp_path / "run")[:-2], "--dataset", data, "--out", tmp_path / "run")[0] == 0
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 0


def test_eval_creates_nothing(tmp_path, capsys, tiny_run):
    run_dir = _copy(tiny_run, tmp_path / "run")
    shutil.rmtree(run_dir / "checkpoints")
    before = snapshot(tmp_path)
    assert_one_line_exit_2(run(capsys, "eval", run_dir), r"has no checkpoint yet")
    assert snapshot(tmp_path) == before


# -- 2. links ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("link", ["checkpoints", "corrupt_checkpoints", "checkpoints/1/state"])
@pytest.mark.parametrize("mode", ["--overwrite", "--resume"])
def test_a_link_inside_a_run_is_refused(tmp_path, capsys, tiny_run, user_data, link, mode):
    run_dir = _copy(tiny_run, tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    if (run_dir / link).exists():
        shutil.move(run_dir / link, elsewhere)
    else:
        (elsewhere / "1").mkdir(parents=True)  # an integer-named directory retention or quarantine could take
    (run_dir / link).symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(tmp_path)
    argv = _train(user_data, run_dir, "--overwrite") if mode == "--overwrite" else ["train", "--resume", run_dir,
                                                                                    "--no-progress"]
    assert_one_line_exit_2(run(capsys, *argv), rf"{re.escape(link)} \(a symbolic link\)")
    assert snapshot(tmp_path) == before


# -- 4. one writer, and readers ---------------------------------------------------------------------
def _cli(*argv, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flax_resnet1d", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_one_writer_at_a_time_and_readers_during_retention(tmp_path, tiny_run, user_data):
    """While a run trains (a checkpoint every epoch, one kept), a second `--out` and a `--resume`
    are refused naming the writer's pid, and `eval` always finds a checkpoint."""
    run_dir = tmp_path / "run"
    writer = _cli("train", "--dataset", user_data / "train.npz", "--test-data", user_data / "test.npz", *TINY_MODEL,
                  "--epochs", "400", "--ckpt-every", "1", "--keep", "1", "--out", run_dir)
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("[0-9]*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert writer.poll() is None, writer.communicate()
        second = [_cli(*_train(user_data, run_dir, "--overwrite")), _cli("train", "--resume", run_dir)]
        readers = [_cli("eval", run_dir, "--json") for _ in range(3)]
        for process in second:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 2 and len(err.splitlines()) == 1, err
            assert f"is in use by process {writer.pid} (flax-resnet1d train)" in err, err
        for process in readers:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0 and '"epoch"' in out, err
    finally:
        writer.terminate()
        _, err = writer.communicate(timeout=60)
    assert writer.returncode == 143 and err.strip().splitlines() == ["flax-resnet1d train: terminated"], err
    epochs = [h["epoch"] for h in run_files.read_metrics(str(run_dir))]
    assert epochs == list(range(1, len(epochs) + 1))  # each epoch once
    assert Manifest.read(run_dir).foreign() == []


@pytest.mark.parametrize("mode", ["--overwrite", "--resume"])
def test_a_temporary_left_by_kill_9_is_the_tools(tmp_path, capsys, tiny_run, user_data, mode):
    """What a kill -9 while plotting leaves (atomic.py's hidden holder) is recognised and cleared."""
    run_dir = _copy(tiny_run, tmp_path / "run")
    holder = run_dir / ".learning_curve.png.k9x2ab7q.tmp"
    holder.mkdir()
    (holder / "new.png").write_bytes(b"\x89PNG half")
    argv = _train(user_data, run_dir, "--overwrite") if mode == "--overwrite" else ["train", "--resume", run_dir,
                                                                                    "--no-progress"]
    assert run(capsys, *argv)[0] == 0
    assert not holder.exists()
    assert Manifest.read(run_dir).foreign() == []

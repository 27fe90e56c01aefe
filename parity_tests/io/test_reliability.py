"""The reliability rules of the CLI, one table per kind of failure, over commands and formats:

1. ``--overwrite`` replaces only what flax-resnet1d wrote, never a directory holding an input;
2. an operating-system error (full disk, read-only directory, 255-byte name, a path component
   that is a file) is one line naming the user's path, exit 2, nothing half-written;
3. bad data and hyper-parameters are refused up front, and resume refuses changed data;
4. ``verify`` passes a correct port of an ill-conditioned (freshly initialised) network and
   still fails a broken one.

Disk full is real: the file-size limit (RLIMIT_FSIZE, no root or mount needed) makes the
kernel fail every writer's ``write`` (Python's, torch's, tensorstore's) with EFBIG. Read-only is
injected (as root, permissions do not stop writes): every way our writers create files or
directories under the destination raises EROFS.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import re
import resource
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_helpers import SMALL_CONFIG, leftovers, small_state_dict, write_checkpoint
from cli_helpers import assert_one_line_exit_2, run, snapshot
from train_helpers import TINY_MODEL

import torch_ref
from flax_resnet1d import cli, errors, parity
from flax_resnet1d.config import EncoderConfig, preset_config
from flax_resnet1d.io import atomic, writers
from flax_resnet1d.training import data

# Large enough that every format's file exceeds FILE_SIZE_LIMIT (a full disk part-way through).
BIG_CONFIG = EncoderConfig(16, (1, 1), "bottleneck", 3, in_planes=2, out_length=3)
FILE_SIZE_LIMIT = 4 * 1024


# -- 1. --overwrite never destroys a user's files ----------------------------------------------
def _dir_with_notes(path: Path) -> None:
    path.mkdir()
    (path / "notes.txt").write_text("my notes")


def _orbax_plus_user_file(path: Path) -> None:
    write_checkpoint(path, small_state_dict())
    (path / "notes.txt").write_text("my notes")


FOREIGN_DESTINATIONS = {  # DST name -> what is there before `convert SRC DST --overwrite`
    "ckpt": (_dir_with_notes, r"ckpt: exists and is not an Orbax checkpoint directory .*holds notes.txt"),
    "ckpt_plus": (_orbax_plus_user_file, r"ckpt_plus: exists and is not an Orbax .*holds notes.txt"),
    "model.pt": (lambda p: p.write_text("a text file"), r"model.pt: exists and is not a PyTorch checkpoint .*text"),
    "dir.pt": (_dir_with_notes, r"dir.pt: exists and is not a PyTorch checkpoint .*it is a directory"),
    "model.safetensors": (lambda p: p.write_bytes(b"\x00" * 64), r"is not a safetensors file"),
    "model.msgpack": (lambda p: p.write_text("a text file"), r"model.msgpack: exists and is not a Flax msgpack"),
    "side.msgpack": (lambda p: p.with_suffix(".config.json").write_bytes(bytes(range(256))),
                     r"side.config.json: exists and is not a config file"),
    "notes.msgpack": (lambda p: p.with_suffix(".config.json").write_text('{"my": "settings"}'),
                      r"notes.config.json: exists and is not a config file .*it is a text file"),
}


@pytest.mark.parametrize("dst_name", list(FOREIGN_DESTINATIONS))
def test_convert_overwrite_refuses_what_it_did_not_write(tmp_path, capsys, dst_name):
    build, pattern = FOREIGN_DESTINATIONS[dst_name]
    src = write_checkpoint(tmp_path / "src.safetensors", small_state_dict(seed=1))
    (tmp_path / "out").mkdir()
    build(tmp_path / "out" / dst_name)
    before = snapshot(tmp_path)
    assert_one_line_exit_2(run(capsys, "convert", src, tmp_path / "out" / dst_name, "--overwrite"), pattern)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("dst_name", ["ckpt", "model.pt", "model.safetensors", "model.msgpack"])
def test_convert_never_replaces_a_destination_holding_its_source(tmp_path, capsys, dst_name):
    """An Orbax checkpoint of ours with SRC moved inside, or SRC itself as DST."""
    dst = write_checkpoint(tmp_path / dst_name, small_state_dict(seed=2))
    src = dst / "src.pt" if dst.is_dir() else dst
    if dst.is_dir():
        write_checkpoint(src, small_state_dict(seed=3))
    before = snapshot(tmp_path)
    assert_one_line_exit_2(run(capsys, "convert", src, dst, "--overwrite"), r"holds src.pt|SRC and DST are the same")
    assert snapshot(tmp_path) == before


def test_train_overwrite_keeps_the_data_inside_the_run_directory(tmp_path, capsys, tiny_run, user_data):
    """The issue's case (RUN/mydata.npz) and the data hidden in a directory the run writes."""
    for where in ("mydata.npz", "checkpoints/mydata.npz"):
        run_dir = tmp_path / where.replace("/", "_")
        shutil.copytree(tiny_run, run_dir, dirs_exist_ok=True)
        data_file = run_dir / where
        data_file.write_bytes((user_data / "train.npz").read_bytes())
        before = snapshot(run_dir)
        assert_one_line_exit_2(run(capsys, "train", "--dataset", data_file, *TINY_MODEL, "--epochs", "1",
                                   "--out", run_dir, "--overwrite"),
                               rf"{run_dir}: (not replaced: it holds the input {data_file}|exists and is not a run "
                               r"directory .*holds (checkpoints/)?mydata.npz)")
        assert snapshot(run_dir) == before


def test_train_overwrite_refuses_a_directory_it_did_not_write(tmp_path, capsys, user_data):
    _dir_with_notes(tmp_path / "notes_dir")
    before = snapshot(tmp_path)
    assert_one_line_exit_2(run(capsys, "train", "--dataset", user_data / "train.npz", *TINY_MODEL,
                               "--out", tmp_path / "notes_dir", "--overwrite"),
                           r"notes_dir: exists and is not a run directory .*holds notes.txt")
    assert snapshot(tmp_path) == before


def test_train_overwrite_replaces_its_own_run(tmp_path, capsys, tiny_run, user_data):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    assert run(capsys, "train", "--dataset", user_data / "train.npz", "--test-data", user_data / "test.npz",
               *TINY_MODEL, "--epochs", "1", "--seed", "1", "--out", run_dir, "--overwrite")[0] == 0
    assert '"seed": 1' in (run_dir / "config.json").read_text()


def test_export_overwrite_refuses_a_directory(tmp_path, capsys, tiny_run):
    _dir_with_notes(tmp_path / "model.pt")
    before = snapshot(tmp_path)
    assert_one_line_exit_2(run(capsys, "export", tiny_run, tmp_path / "model.pt", "--overwrite"),
                           r"model.pt: exists and is not a PyTorch checkpoint .*it is a directory")
    assert snapshot(tmp_path) == before


# -- 2. operating-system errors: one line naming the user's path, exit 2 -----------------------
@contextlib.contextmanager
def disk_full():
    """Files stop growing at FILE_SIZE_LIMIT bytes: write() fails with EFBIG, as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@contextlib.contextmanager
def read_only(directory: Path, monkeypatch):
    """Creating anything under ``directory`` fails with EROFS (mkdir, os.open, open for writing)."""
    inside = str(directory.resolve())

    def guard(function, is_write):
        def guarded(path, *args, **kwargs):
            if isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(inside) and is_write(
                    *args, **kwargs):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return function(path, *args, **kwargs)
        return guarded

    def writing_mode(mode="r", *args, **kwargs):
        return any(c in mode for c in "wax+")

    def writing_flags(flags=os.O_RDONLY, *args, **kwargs):
        return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))

    with monkeypatch.context() as patch:
        patch.setattr(os, "mkdir", guard(os.mkdir, lambda *a, **k: True))
        patch.setattr(os, "open", guard(os.open, writing_flags))
        patch.setattr(builtins, "open", guard(builtins.open, writing_mode))
        patch.setattr(io, "open", guard(io.open, writing_mode))
        yield


def _convert_command(dst_name: str):
    def command(tmp_path: Path, out: Path, tiny_run: Path, user_data: Path) -> list:
        src = write_checkpoint(tmp_path / "src.pt", {k: v.astype("float32") for k, v in
                                                     parity.random_state_dict(BIG_CONFIG, 0).items()}, BIG_CONFIG)
        return ["convert", src, out / dst_name]
    return command


COMMANDS = {  # name -> argv writing into directory `out`, and the output path an error must name
    **{f"convert to {name}": _convert_command(name) for name in ("model.pt", "model.safetensors", "model.msgpack",
                                                                  "ckpt")},
    "export": lambda tmp_path, out, tiny_run, user_data: ["export", "--no-check", tiny_run, out / "model.pt"],
    "train": lambda tmp_path, out, tiny_run, user_data: [
        "train", "--dataset", user_data / "train.npz", *TINY_MODEL, "--channel", "16", "--epochs", "1",
        "--out", out / "run"],
}


FAULTS = ("disk full", "read-only", "name too long", "parent is a file")


@pytest.mark.parametrize("command, fault", [(c, f) for c in COMMANDS for f in FAULTS
                                            if (c, f) != ("train", "name too long")])  # run files have short names
def test_os_errors_are_one_line_naming_the_users_path(tmp_path, capsys, monkeypatch, tiny_run, user_data, command,
                                                      fault):
    out = tmp_path / "out"
    out.mkdir()
    if fault == "parent is a file":
        (tmp_path / "file").write_text("not a directory")
        out = tmp_path / "file"
    argv = COMMANDS[command](tmp_path, out, tiny_run, user_data)
    if fault == "name too long":  # 255 bytes is the limit: the name itself fits (and .msgpack's config), ours must too
        argv[-1] = out / ("n" * (250 - len(Path(argv[-1]).name)) + Path(argv[-1]).name)
    dst = Path(argv[-1])
    context = (disk_full() if fault == "disk full" else read_only(out, monkeypatch) if fault == "read-only"
               else contextlib.nullcontext())
    before = snapshot(out) if out.is_dir() else None
    with context:
        result = run(capsys, *argv)
    if fault == "name too long":
        assert result[0] == 0, result[2]
        assert dst.exists() and leftovers(out) == []
        return
    expected = {"disk full": "File too large", "read-only": "Read-only file system",
                "parent is a file": "is not a directory"}[fault]
    err = assert_one_line_exit_2(result, re.escape(str(dst if fault != "parent is a file" else dst)) + r".*: ")
    assert expected in err and ".tmp" not in err, err
    if before is not None and command != "train":  # nothing half-written, no temporary left
        assert snapshot(out) == before
    elif before is not None:  # train: no half-written checkpoint among the readable ones
        assert not (dst / "checkpoints" / "1").exists()


# -- 3. bad data and hyper-parameters are refused up front ----------------------------------------
def _npz(x, y):
    def build(path: Path) -> Path:
        np.savez(path, x=x, y=y)
        return path
    return build


RNG = np.random.default_rng(0)
X = RNG.normal(size=(30, 2, 32))
BAD_DATA = {
    "labels with gaps": (_npz(X, np.array([0, 1, 7] * 10)), r"training labels skip 2, 3, 4, 5, 6 of 0..7"),
    "one class": (_npz(X, np.zeros(30, int)), r"training labels hold one class \(0\)"),
    "beyond float32 unnormalized": (_npz(X * 1e300, np.arange(30) % 3), r"beyond float32's range with --normalize none"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_refused_before_training(tmp_path, capsys, case):
    build, pattern = BAD_DATA[case]
    path = build(tmp_path / "data.npz")
    extra = ["--normalize", "none"] if "unnormalized" in case else []
    assert_one_line_exit_2(run(capsys, "train", "--dataset", path, *TINY_MODEL, *extra, "--out", tmp_path / "run"),
                           pattern)
    assert not (tmp_path / "run").exists()


def test_huge_finite_values_normalize_as_any_other_scale(tmp_path):

    for how in ("series", "channel"):
        np.savez(tmp_path / "x.npz", x=X, y=np.arange(30) % 3)
        small = data.load_npz(str(tmp_path / "x.npz"), normalize=how)
        np.savez(tmp_path / "x.npz", x=X * 1e300, y=np.arange(30) % 3)
        huge = data.load_npz(str(tmp_path / "x.npz"), normalize=how)
        np.testing.assert_allclose(huge.x_train, small.x_train, rtol=1e-6, atol=1e-6)
        assert np.abs(huge.x_train).max() > 1


BAD_SETTINGS = [
    (["--lr", "inf"], r"lr must be positive and finite, got inf"),
    (["--lr", "nan"], r"lr must be positive and finite, got nan"),
    (["--seed", "-1"], r"seed must be at least 0, got -1"),
    (["--seed", str(2**40)], r"seed must be below 2\*\*32"),
    (["--momentum", "1.5", "--optimizer", "sgd"], r"momentum must be a finite number in \[0, 1\), got 1.5"),
    (["--weight-decay", "-1"], r"weight_decay must be a finite number"),
    (["--augment-fraction", "0"], r"augment_fraction must be a finite number in \(0, 1\], got 0.0"),
    (["--max-length", "1"], r"max length must be an integer of at least 2 or null, got 1"),
    (["--stretch", "1"], r"stretch must be a finite number in \[0, 1\), got 1.0"),
    (["--stretch", "0.1", "--augment", "none"], r"stretch 0.1 resamples the shifted series; it needs --augment shift"),
    (["--warmup-epochs", "-2"], r"warmup_epochs must be at least 0"),
    (["--epochs", "x"], r"argument --epochs: invalid int value: 'x' \(see flax-resnet1d train --help\)"),
    (["--test-fraction", "nan"], r"test fraction must be between 0 and 1, got nan"),
]


@pytest.mark.parametrize("command", cli.COMMAND_MODULES)
def test_every_command_prints_its_help(capsys, command):
    # help texts are %-formatted by argparse: a bare '%' in one (e.g. a formatted percentage) is a traceback
    name = {"evaluate": "eval"}.get(command, command)
    code, out, err = run(capsys, name, "--help")
    assert (code, err) == (0, "") and out.startswith(f"usage: flax-resnet1d {name} "), err


@pytest.mark.parametrize("extra, pattern", BAD_SETTINGS, ids=[" ".join(e) for e, _ in BAD_SETTINGS])
def test_bad_hyper_parameters_are_one_line(tmp_path, capsys, user_data, extra, pattern):
    assert_one_line_exit_2(run(capsys, "train", "--dataset", user_data / "train.npz", *TINY_MODEL, *extra,
                               "--out", tmp_path / "run"), pattern)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_changed_data(tmp_path, capsys, tiny_run, user_data):
    run_dir, data_dir = tmp_path / "run", tmp_path / "data"
    data_dir.mkdir()
    for name in ("train.npz", "test.npz"):
        (data_dir / name).write_bytes((user_data / name).read_bytes())
    assert run(capsys, "train", "--dataset", data_dir / "train.npz", "--test-data", data_dir / "test.npz",
               *TINY_MODEL, "--epochs", "2", "--ckpt-every", "1", "--out", run_dir)[0] == 0
    with np.load(data_dir / "train.npz") as f:
        x, y = f["x"].copy(), f["y"]
    x[0, 0, 0] += 1.0
    np.savez(data_dir / "train.npz", x=x, y=y)
    before = snapshot(run_dir)
    for argv in (["train", "--resume", run_dir], ["eval", run_dir]):
        assert_one_line_exit_2(run(capsys, *argv), r"train.npz and .*test.npz: the data changed since the run "
                                                   r"recorded it")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("fmt", ["model.pt", "model.safetensors", "model.msgpack"])
@pytest.mark.parametrize("dtype", ["int64", "complex64", "bool"])
def test_weights_of_a_non_float_dtype_are_refused(tmp_path, capsys, fmt, dtype):
    state_dict = small_state_dict()
    state_dict["fc.weight"] = state_dict["fc.weight"].astype(dtype)
    src = tmp_path / fmt
    if fmt == "model.pt":
        torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, src)
    elif fmt == "model.safetensors":
        import safetensors.numpy

        safetensors.numpy.save_file(state_dict, str(src))
    else:
        from flax import serialization

        from flax_resnet1d import port

        flax = port.torch_to_flax(small_state_dict(), SMALL_CONFIG)
        flax["params"]["fc"]["kernel"] = flax["params"]["fc"]["kernel"].astype(dtype)
        src.write_bytes(serialization.msgpack_serialize(flax))
    with pytest.raises(errors.CheckpointError, match=rf"has dtype {dtype}; weights must be floating point"):
        writers.write_state_dict(tmp_path / "direct.pt", state_dict)
    assert_one_line_exit_2(run(capsys, "convert", src, tmp_path / "out.pt"), rf"has dtype {dtype}")
    assert not (tmp_path / "out.pt").exists() and not (tmp_path / "direct.pt").exists()


BAD_VERIFY = [
    (["--seed", "-1"], r"--seed must be in 0..2\*\*32-1, got -1"),
    (["--length", "0"], r"--length must be positive, got 0"),
    (["--batch", "-3"], r"--batch must be positive, got -3"),
    (["--input", "{d}/empty.npy"], r"empty.npy: holds no examples"),
    (["--input", "{d}/huge.npy"], r"huge.npy: values up to 1e\+30 .*float32"),
]


@pytest.mark.parametrize("extra, pattern", BAD_VERIFY, ids=[" ".join(e) for e, _ in BAD_VERIFY])
def test_verify_arguments_are_checked_before_any_library_sees_them(tmp_path, capsys, extra, pattern):
    src = write_checkpoint(tmp_path / "model.pt", small_state_dict())
    np.save(tmp_path / "empty.npy", np.zeros((0, 2, 32)))
    np.save(tmp_path / "huge.npy", np.full((1, 2, 32), 1e30))
    assert_one_line_exit_2(run(capsys, "verify", src, *[a.format(d=tmp_path) for a in extra]), pattern)


# -- 4. verify: no false FAIL on an ill-conditioned correct port, no false PASS ----------------------
def _fresh_state_dict(config: EncoderConfig, seed: int) -> dict:
    torch.manual_seed(seed)
    return {k: v.numpy() for k, v in torch_ref.from_config(config).state_dict().items()}


def test_verify_passes_a_freshly_initialised_preset_with_default_options(tmp_path, capsys):
    src = tmp_path / "fresh.pt"
    torch.save({k: torch.from_numpy(v) for k, v in _fresh_state_dict(preset_config("encnet12"), 0).items()}, src)
    code, out, _ = run(capsys, "verify", src, "--seed", 0, "--batch", 1)
    assert code == 0, out
    assert "random (1, 1, 256)" in out and "tolerance from" in out


def test_scaled_float32_tolerance_still_fails_a_broken_port():
    """The issue's case, a fresh encnet62 at verify's default length. On the Zen 4 EPYC PyTorch's own
    float32 input gradient is 1.2e-2 away from its float64 one (Flax's: 3e-6), so the fixed bound
    cannot hold there; other CPUs round less. The premise is therefore built, not measured: a
    reference whose input gradient is a known 2e-3 off fails the fixed bound and passes the scaled
    one. On every machine the scaled bound passes the real port against the real reference and
    fails the same port with a float32-only error."""
    config = preset_config("encnet62")
    state_dict = {k: v.astype(np.float64) for k, v in _fresh_state_dict(config, 0).items()}
    rng = np.random.default_rng(0)
    x, cotangent = rng.standard_normal((2, 1, 256)), rng.normal(size=(2, 2))
    ref32, ref64 = (parity.torch_outputs(state_dict, config, x, cotangent, d) for d in ("float32", "float64"))
    ours = parity.flax_outputs(state_dict, config, x, cotangent, "float32")

    def failing(candidate, ref, exact=None):
        return [r.quantity for r in parity.compare(candidate, ref, "float32", exact=exact) if not r.passed]

    assert failing(ours, ref32, exact=ref64) == []
    off = rng.standard_normal(x.shape)
    coarse_grad_x = ref64.grad_x + 2e-3 * np.abs(ref64.grad_x).max() * off / np.abs(off).max()
    coarse_ref32 = parity.Outputs(ref32.y, coarse_grad_x, ref32.grads)
    assert parity.relative_error(coarse_grad_x, ref64.grad_x) > 10 * parity.TOLERANCES["float32"]["grad"]
    assert "grad input" in failing(ours, coarse_ref32)
    assert "grad input" not in failing(ours, coarse_ref32, exact=ref64)
    broken = parity.Outputs(ours.y, ours.grad_x + 0.05 * np.abs(ours.grad_x).max() * rng.standard_normal(x.shape),
                            ours.grads)
    assert failing(broken, ref32, exact=ref64) == ["grad input"]
    assert "grad input" in failing(broken, coarse_ref32, exact=ref64)


@pytest.mark.parametrize("kind", ["text", "figure"])
def test_a_result_file_is_never_half_written(tmp_path, monkeypatch, kind):
    """accuracy.json/.md, learning curves and benchmark plots: interrupted mid-write, the previous
    file stays whole and no temporary is left; the next write replaces it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure
    import matplotlib.pyplot as plt

    path = tmp_path / f"results.{'md' if kind == 'text' else 'png'}"
    path.write_bytes(b"the previous results")

    def write():
        if kind == "text":
            atomic.write_text(str(path), "the new results")
        else:
            atomic.save_figure(plt.figure(), str(path), dpi=20)

    def half_then_interrupted(target):
        Path(target).write_bytes(b"half")
        raise KeyboardInterrupt

    owner, name, fake = {"text": (atomic, "write_file", lambda target, data: half_then_interrupted(target)),
                         "figure": (matplotlib.figure.Figure, "savefig",
                                    lambda fig, target, **options: half_then_interrupted(target))}[kind]
    with monkeypatch.context() as patch:
        patch.setattr(owner, name, fake)
        with pytest.raises(KeyboardInterrupt):
            write()
    assert path.read_bytes() == b"the previous results" and list(tmp_path.iterdir()) == [path]
    write()
    assert path.read_bytes().startswith(b"the new results" if kind == "text" else b"\x89PNG")
    assert list(tmp_path.iterdir()) == [path] and plt.get_fignums() == []


def test_a_failed_write_leaves_no_temporary_though_a_writer_thread_goes_on(tmp_path):
    """Orbax's tensorstore threads finish the other arrays of a failed write after the error reached
    us, creating their directories inside the removed temporary again: it is removed again."""
    destination = tmp_path / "ckpt"

    def late_array(holder: Path):  # as tensorstore does: mkdir -p, then the file
        time.sleep(0.05)
        (holder / "new" / "ocdbt.process_0" / "d").mkdir(parents=True, exist_ok=True)
        (holder / "new" / "ocdbt.process_0" / "d" / "late").write_bytes(b"an array")

    with pytest.raises(OSError, match="ckpt"):
        with atomic.atomic_output(destination, overwrite=False) as new:
            writer = threading.Thread(target=late_array, args=(new.parent,))
            writer.start()
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    writer.join()
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_newest_checkpoint_costs_one_warning_line(tmp_path, capsys, user_data):
    """In a real process, where Orbax's worker threads print whatever nothing catches."""
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    assert run(capsys, "train", "--dataset", user_data / "train.npz", "--test-data", user_data / "test.npz",
               *TINY_MODEL, "--epochs", "2", "--ckpt-every", "1", "--out", run_dir)[0] == 0
    for file in (run_dir / "checkpoints" / "2" / "state").rglob("*"):
        if file.is_file():
            file.write_bytes(np.random.default_rng(0).integers(0, 256, max(file.stat().st_size, 16), np.uint8).tobytes())
    done = subprocess.run([sys.executable, "-m", "flax_resnet1d", "eval", str(run_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "checkpoint of epoch 1/2" in done.stdout
    assert len(done.stderr.splitlines()) == 1 and "checkpoint of epoch 2 in" in done.stderr, done.stderr


def test_hostile_pt_files_are_refused_with_a_way_out(tmp_path, capsys):
    """A deflate bomb is refused before inflating; a whole pickled network gets the recipe for
    its state_dict() (and is never unpickled)."""
    import zipfile

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (64 << 20))
    assert bomb.stat().st_size < 1 << 20
    assert_one_line_exit_2(run(capsys, "convert", bomb, tmp_path / "out"),
                           r"bomb.pt: refused: entry archive/data.pkl would inflate from [\d,]+ to 67,108,864 bytes")
    whole = tmp_path / "whole.pt"
    torch.save(torch_ref.from_config(SMALL_CONFIG), whole)
    assert_one_line_exit_2(run(capsys, "convert", whole, tmp_path / "out"),
                           r"whole.pt: refused: .*nothing was executed\. .*torch.save\(torch.load\(path, "
                           r"weights_only=False\).state_dict\(\), 'state_dict.pt'\)")
    assert not (tmp_path / "out").exists()


def test_a_diverging_run_stops_with_one_line(tmp_path, capsys, user_data):
    assert_one_line_exit_2(run(capsys, "train", "--dataset", user_data / "train.npz", *TINY_MODEL, "--optimizer", "sgd",
                               "--lr", "1e30", "--schedule", "constant", "--epochs", "3", "--out", tmp_path / "run"),
                           r"the training loss is (nan|inf) in epoch 1: the run diverged \(lr 1e\+30, sgd\)")


@pytest.mark.parametrize("dst_name", ["out.pt", "out_orbax"])
def test_sigterm_during_convert_removes_the_temporary(tmp_path, capsys, monkeypatch, dst_name):
    """`kill` unwinds like Ctrl-C: exit 143, no output, no hidden temporary."""
    src = write_checkpoint(tmp_path / "model.msgpack", small_state_dict(seed=4))
    write_file = atomic.write_file

    def killed(path, data):
        write_file(path, data[:10])
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(atomic, "write_file", killed)  # Orbax: the config.json written after the arrays
    handler = signal.getsignal(signal.SIGTERM)
    assert run(capsys, "convert", src, tmp_path / dst_name) == (143, "", "flax-resnet1d convert: terminated\n")
    assert not (tmp_path / dst_name).exists() and leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is handler  # the caller's handler is back

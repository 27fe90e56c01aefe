"""Inputs checked at the edge (issue 34, kinds 5-7), one table per kind, over the commands that
read each input: every case exits 2 with one line naming the input and the problem, no
traceback, nothing written.

5. labels that would wrap in the int32 cast, or size a set by the largest label; sizes beyond
   memory (estimated from the plan and the array headers, before anything is allocated);
6. configs (``--config``, an Orbax checkpoint's config.json, a run's config.json) of another
   encoding, nesting or field type; series of length 0; sparse and meta tensors; array headers
   declaring more than the file holds; ``eval --data`` of another channel count;
7. FIFOs and other non-regular files wherever a file is read (in a subprocess with a timeout:
   a hang fails, it does not block the suite), timeouts of nan or inf, a newline in a path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from checkpoint_helpers import small_state_dict, write_checkpoint
from cli_helpers import assert_one_line_exit_2, run, snapshot
from train_helpers import TINY_MODEL

from flax_resnet1d import errors, memory
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.training.data import DataSpec

HUGE_SHAPE = (2_000_000, 2, 2_000_000)  # 58.2 TiB of float64: beyond any machine's memory


@pytest.fixture(scope="module")
def inputs(user_data) -> Path:
    """test_reliability's user data (2 channels, 3 classes), and a checkpoint of SMALL_CONFIG."""
    write_checkpoint(user_data / "model.safetensors", small_state_dict())
    return user_data


def _refused(capsys, tmp_path: Path, argv: list, pattern: str, *also: Path) -> str:
    """Run ``argv``; exit 2, one line matching ``pattern``, and nothing under ``tmp_path`` (and
    the directories ``also``) written, changed or removed."""
    before = [snapshot(d) for d in (tmp_path, *also)]
    err = assert_one_line_exit_2(run(capsys, *argv), pattern)
    assert [snapshot(d) for d in (tmp_path, *also)] == before, "the refused command changed a directory"
    return err


def _commands(data: Path, test: Path | None, run_dir: Path, out: Path) -> dict[str, list]:
    """The commands that read a user's .npz: as training data, as test data, as eval --data (as
    labels: fractional float targets alone would make the task regress)."""
    return {"train --dataset": ["train", "--dataset", data, "--task", "classify", *TINY_MODEL, "--epochs", "1",
                                "--out", out],
            "train --test-data": ["train", "--dataset", test, "--test-data", data, *TINY_MODEL, "--epochs", "1",
                                  "--out", out],
            "eval --data": ["eval", run_dir, "--data", data]}


# -- 5. labels checked before the int32 cast ------------------------------------------------------
X = np.random.default_rng(0).normal(size=(30, 2, 32))
LABELS = {  # y (30 labels of classes 0..2 and one bad one) -> what the message says
    "int64 2**32": (np.int64, 2**32, r"label y\[7\] = 4294967296 \(int64\) is beyond 2147483647"),
    "uint32 0xFFFFFFFF": (np.uint32, 0xFFFFFFFF, r"label y\[7\] = 4294967295 \(uint32\) is beyond"),
    "uint64 2**64-1": (np.uint64, 2**64 - 1, r"label y\[7\] = 18446744073709551615 \(uint64\) is beyond"),
    "float64 2**32": (np.float64, 2.0**32, r"label y\[7\] = 4294967296.0 \(float64\) is beyond"),
    "float32 1e30": (np.float32, 1e30, r"label y\[7\] = 1e\+30 \(float32\) is beyond"),
    "int16 -1": (np.int16, -1, r"labels must be 0..K-1; y\[7\] = -1 is negative"),
    "float 2.5": (np.float64, 2.5, r"labels must be integers; y\[7\] = 2.5"),
}
SPLIT_WORDS = {"train --dataset": "training", "train --test-data": "test", "eval --data": "--data"}


@pytest.mark.parametrize("command", list(SPLIT_WORDS))
@pytest.mark.parametrize("case", list(LABELS))
def test_labels_that_would_wrap_are_refused(tmp_path, capsys, inputs, tiny_run, command, case):
    dtype, bad, pattern = LABELS[case]
    y = (np.arange(30) % 3).astype(dtype)
    y[7] = bad
    np.savez(tmp_path / "bad.npz", x=X, y=y)
    argv = _commands(tmp_path / "bad.npz", inputs / "train.npz", tiny_run, tmp_path / "run")[command]
    err = _refused(capsys, tmp_path, argv, rf"bad.npz: {SPLIT_WORDS[command]} {pattern}", tiny_run.parent)
    assert not (tmp_path / "run").exists(), err


@pytest.mark.parametrize("labels, pattern", [
    ([0, 1, 2**31 - 1], r"training labels skip 2, 3, 4, 5, 6 and 2147483640 more of 0..2147483647"),
    ([0, 2**31 - 2, 2**31 - 1], r"training labels skip 1, 2, 3, 4, 5 and 2147483640 more of 0..2147483647"),
])
def test_the_largest_label_sizes_nothing(tmp_path, capsys, labels, pattern):
    """A label of 2**31-1 once built a set of 2**31 integers (killed for memory)."""
    np.savez(tmp_path / "big.npz", x=X, y=np.array(labels * 10, np.int64))
    _refused(capsys, tmp_path, ["train", "--dataset", tmp_path / "big.npz", *TINY_MODEL, "--out", tmp_path / "run"],
             pattern)


# -- 5. sizes beyond memory, refused with the estimate ----------------------------------------------
def _lying_npy(path: Path, shape=HUGE_SHAPE) -> Path:
    """A .npy whose header declares ``shape`` (float64) but which holds 64 bytes of data."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
        f.write(bytes(64))
    return path


def _lying_npz(path: Path) -> Path:
    """An .npz of a lying x (see ``_lying_npy``) and a good y."""
    x = _lying_npy(path.with_suffix(".x.npy"))
    buffer = path.with_suffix(".y.npy")
    np.save(buffer, np.arange(30) % 3)
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(x, "x.npy")
        archive.write(buffer, "y.npy")
    x.unlink()
    buffer.unlink()
    return path


def _edited_run(tiny_run: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``tiny_run`` whose config.json ``edit`` changed (a dict -> None)."""
    copy = tmp_path / "edited"
    shutil.copytree(tiny_run, copy)
    config = json.loads((copy / "config.json").read_text())
    edit(config)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


NEEDS = r"needs about [\d.]+ [KMGTP]iB of memory, more than the [\d.]+ [KMGTP]?i?B available"
MEMORY = {  # command (formatted with the inputs) -> what the message says
    "train --batch-size": (["train", "--dataset", "{train}", *TINY_MODEL, "--batch-size", "1000000000", "--out",
                            "{out}"], rf"a train step of batch size 1000000000 .*{NEEDS}"),
    "verify --batch": (["verify", "{ckpt}", "--batch", "1000000000"], rf"verify --batch 1000000000 --length \d+ {NEEDS}"),
    "verify --length": (["verify", "{ckpt}", "--length", "1000000000000"], rf"--length 1000000000000 {NEEDS}"),
    "verify --input (lying .npy)": (["verify", "{ckpt}", "--input", "{npy}"],
                                    (r"x.npy: its header declares shape \(2000000, 2, 2000000\) float64 \(58.2 TiB\) "
                                     r"but the file holds 64 B for it: truncated or corrupt; refused before allocating")),
    "verify --input (lying .npz)": (["verify", "{ckpt}", "--input", "{npz}"],
                                    r"bad.npz: x: its header declares shape \(2000000, 2, 2000000\) float64"),
    "train --dataset (lying .npz)": (["train", "--dataset", "{npz}", *TINY_MODEL, "--out", "{out}"],
                                     r"bad.npz: x: its header declares shape"),
    "train --test-data (lying .npz)": (["train", "--dataset", "{train}", "--test-data", "{npz}", *TINY_MODEL, "--out",
                                        "{out}"], r"bad.npz: x: its header declares shape"),
    "eval --data (lying .npz)": (["eval", "{run}", "--data", "{npz}"], r"bad.npz: x: its header declares shape"),
    "eval batch size": (["eval", "{big_batch_run}"], rf"an evaluation step of batch size 1000000000000 .*{NEEDS}"),
}


@pytest.mark.parametrize("case", list(MEMORY))
def test_sizes_beyond_memory_are_refused_before_allocating(tmp_path, capsys, inputs, tiny_run, case):
    argv, pattern = MEMORY[case]
    paths = {"ckpt": inputs / "model.safetensors", "npy": _lying_npy(tmp_path / "x.npy"),
             "npz": _lying_npz(tmp_path / "bad.npz"), "train": inputs / "train.npz", "out": tmp_path / "run",
             "run": tiny_run}
    if "{big_batch_run}" in argv:
        paths["big_batch_run"] = _edited_run(tiny_run, tmp_path, lambda c: c.update(batch_size=10**12))
    _refused(capsys, tmp_path, [str(a).format(**paths) for a in argv], pattern)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("batch_size, channel, refused", [(16, 4, False), (10**9, 4, True), (16, 10**6, True)])
def test_check_memory_refuses_a_step_beyond_memory(training, batch_size, channel, refused):
    """``steps.check_memory``, which train calls before it writes anything (eval: see MEMORY)."""
    from flax_resnet1d.training import run_config, steps

    config = run_config.TrainConfig(EncoderConfig(channel, (1, 1), "plain", 3, 2, 3), DataSpec("a.npz"),
                                    batch_size=batch_size)
    mesh = steps.data_parallel_mesh(jax.devices()[:1])
    if not refused:
        steps.check_memory(config, 64, mesh, training=training)
        return
    step = "a train step" if training else "an evaluation step"
    with pytest.raises(errors.TrainingError, match=rf"^{step} of batch size {batch_size} over 1 device on series of 64 "
                                                   rf"steps \(EncoderNet1d of [\d,]+ weights\) {NEEDS}"):
        steps.check_memory(config, 64, mesh, training=training)


def test_train_step_estimate_is_a_lower_bound_of_what_xla_allocates():
    """A refusal is never a run that would have fitted: the estimate stays below the bytes XLA's
    compiled train step takes (arguments, outputs, temporaries), and near them."""
    from flax_resnet1d.training import run_config, steps

    model, batch, length = EncoderConfig(4, (1, 2), "bottleneck", 3, 2, 3), 16, 64
    config = run_config.TrainConfig(model, DataSpec("a.npz"), batch_size=batch)
    mesh = steps.data_parallel_mesh(jax.devices()[:1])
    example = {"x": np.zeros((batch, length, 2), np.float32), "y": np.zeros(batch, np.int32),
               "mask": np.ones(batch, np.float32)}
    compiled = steps.jit_train_step(mesh).lower(steps.create_state(config, length, 1), example).compile()
    analysis = compiled.memory_analysis()
    xla = analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
    estimate = memory.train_step_bytes(model, batch, length, config.optimizer)
    assert xla / 2 < estimate <= xla, (estimate, xla)


def test_out_of_memory_errors_are_one_line():
    class XlaRuntimeError(RuntimeError):  # jaxlib's, matched by name: the CLI imports no JAX to report it
        pass

    assert errors.out_of_memory(MemoryError("Unable to allocate 72.8 TiB for an array")).startswith(
        "out of memory (Unable to allocate 72.8 TiB")
    assert "out of device memory (RESOURCE_EXHAUSTED: Out of memory" in errors.out_of_memory(
        XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.0TiB.\nmore"))
    assert errors.out_of_memory(XlaRuntimeError("INTERNAL: other")) is None
    assert errors.out_of_memory(ValueError("RESOURCE_EXHAUSTED")) is None


# -- 6. configs: one schema check at the edge -----------------------------------------------------
DEEP = "[" * 100_000 + "]" * 100_000
CONFIG_TEXTS = {  # --config contents -> what the message says
    "latin-1": ('{"channel": 4, "layers": [2, 1], "block": "b\xf6ttleneck"}'.encode("latin-1"),
                r"not UTF-8 text \(byte 0xf6 at offset 44\)"),
    "nested 100000 deep": ('{"channel": ' + DEEP + "}", r"nested 100001 levels deep, more than a config's 8"),
    "a list": ("[4, [2, 1]]", r"expected a JSON object, got list"),
    "channel 0": ('{"channel": 0, "layers": [2, 1]}', r"EncoderNet1d: channel must be positive, got 0"),
    "unknown block": ('{"channel": 4, "layers": [2, 1], "block": "dense"}', r"EncoderNet1d: unknown block 'dense'"),
    "layers a string": ('{"channel": 4, "layers": "21"}', r"EncoderNet1d: layers must be a sequence of ints, got '21'"),
    "arch a number": ('{"arch": 5, "channel": 4}', r"unknown arch 5"),
    "a 5000-digit channel": ('{"channel": 1' + "0" * 5000 + "}", r"invalid JSON \(Exceeds the limit"),
}
CONFIG_COMMANDS = {"verify": ["verify", "{ckpt}", "--config", "{config}"],
                   "summary": ["summary", "{ckpt}", "--config", "{config}"],
                   "convert": ["convert", "{ckpt}", "{out}", "--config", "{config}"]}


@pytest.mark.parametrize("command", list(CONFIG_COMMANDS))
@pytest.mark.parametrize("case", list(CONFIG_TEXTS))
def test_config_files_are_checked_at_the_edge(tmp_path, capsys, inputs, command, case):
    content, pattern = CONFIG_TEXTS[case]
    config = tmp_path / "config.json"
    config.write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = [a.format(ckpt=inputs / "model.safetensors", out=tmp_path / "out.pt", config=config)
            for a in CONFIG_COMMANDS[command]]
    _refused(capsys, tmp_path, argv, r"--config .*config.json: " + pattern if case in ("latin-1", "nested 100000 deep",
                                                                                       "a list", "a 5000-digit channel")
             else r"--config: " + pattern)


@pytest.mark.parametrize("case", ["nested 100000 deep", "channel 0", "a 5000-digit channel"])
def test_config_text_is_checked_at_the_edge(tmp_path, capsys, inputs, case):
    content, pattern = CONFIG_TEXTS[case]
    _refused(capsys, tmp_path, ["verify", inputs / "model.safetensors", "--config", content], r"--config: " + pattern)


@pytest.mark.parametrize("command", ["verify", "summary", "convert"])
@pytest.mark.parametrize("case", ["latin-1", "nested 100000 deep", "channel 0", "unknown block"])
def test_orbax_config_files_are_checked_at_the_edge(tmp_path, capsys, command, case):
    content, pattern = CONFIG_TEXTS[case]
    checkpoint = write_checkpoint(tmp_path / "model", small_state_dict())
    (checkpoint / "config.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = {"verify": ["verify", checkpoint], "summary": ["summary", checkpoint],
            "convert": ["convert", checkpoint, tmp_path / "out.pt"]}[command]
    _refused(capsys, tmp_path, argv, r"model/config.json: invalid config file \(" + pattern)


RUN_CONFIG_EDITS = {  # a hand-edited run config.json -> what the message says
    "data.source 5": (lambda c: c["data"].update(source=5), r"data source must be a non-empty string, got int 5"),
    "data.digest 123": (lambda c: c["data"].update(digest=123),
                        r"data digest must be a non-empty string or null, got int 123"),
    "test_fraction '0.2'": (lambda c: c["data"].update(test_fraction="0.2"),
                            r"test fraction must be a number, got str '0.2'"),
    "layout NCHW": (lambda c: c["data"].update(layout="NCHW"), r"unknown data layout 'NCHW'"),
    "channel 0": (lambda c: c["model"].update(channel=0), r"EncoderNet1d: channel must be positive, got 0"),
    "block dense": (lambda c: c["model"].update(block="dense"), r"EncoderNet1d: unknown block 'dense'"),
    "model a list": (lambda c: c.update(model=[4, [1, 1]]), r"expected an object of constructor arguments, got list"),
    "lr '1e-3'": (lambda c: c.update(lr="1e-3"), r"lr must be a number, got str '1e-3'"),
    "epochs 1.5": (lambda c: c.update(epochs=1.5), r"epochs must be an int, got float 1.5"),
    "unknown field": (lambda c: c.update(learning_rate=1), r"unknown fields \['learning_rate'\]"),
    "no data": (lambda c: c.pop("data"), r"missing data"),
}


@pytest.mark.parametrize("command", ["eval", "export", "train --resume"])
@pytest.mark.parametrize("case", list(RUN_CONFIG_EDITS))
def test_run_config_fields_are_checked(tmp_path, capsys, tiny_run, command, case):
    edit, pattern = RUN_CONFIG_EDITS[case]
    run_dir = _edited_run(tiny_run, tmp_path, edit)
    argv = {"eval": ["eval", run_dir], "export": ["export", run_dir, tmp_path / "out.pt"],
            "train --resume": ["train", "--resume", run_dir, "--no-progress"]}[command]
    _refused(capsys, tmp_path, argv, pattern)


EMPTY_SERIES = {"length 0": np.zeros((30, 2, 0)), "no channels": np.zeros((30, 0, 32))}


@pytest.mark.parametrize("command", list(SPLIT_WORDS))
@pytest.mark.parametrize("case", list(EMPTY_SERIES))
def test_series_of_length_0_are_refused(tmp_path, capsys, inputs, tiny_run, command, case):
    np.savez(tmp_path / "empty.npz", x=EMPTY_SERIES[case], y=np.arange(30) % 3)
    argv = _commands(tmp_path / "empty.npz", inputs / "train.npz", tiny_run, tmp_path / "run")[command]
    _refused(capsys, tmp_path, argv, r"empty.npz: x holds series of length \d+ with \d+ channels \(layout NCL\); both "
                                     r"must be at least 1", tiny_run.parent)


@pytest.mark.parametrize("shape", [(2, 2, 0), (2, 0, 32)])
def test_verify_input_of_length_0_is_refused(tmp_path, capsys, inputs, shape):
    np.save(tmp_path / "x.npy", np.zeros(shape))
    _refused(capsys, tmp_path, ["verify", inputs / "model.safetensors", "--input", tmp_path / "x.npy"],
             r"--input .*x.npy: EncoderNet1d: input (length 0 is too short|has 0 channels)")


def _sparse(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_sparse()


def _meta(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to("meta")


@pytest.mark.parametrize("command", ["verify", "summary", "convert"])
@pytest.mark.parametrize("make, kind", [(_sparse, "a sparse_coo tensor"), (_meta, "a meta tensor")])
def test_sparse_and_meta_tensors_are_named(tmp_path, capsys, command, make, kind):
    state_dict = {k: torch.from_numpy(v) for k, v in small_state_dict().items()}
    key = next(k for k in state_dict if k.endswith("weight"))
    state_dict[key] = make(state_dict[key])
    torch.save(state_dict, tmp_path / "model.pt")
    argv = {"verify": ["verify", tmp_path / "model.pt"], "summary": ["summary", tmp_path / "model.pt"],
            "convert": ["convert", tmp_path / "model.pt", tmp_path / "out.safetensors"]}[command]
    _refused(capsys, tmp_path, argv, rf"model.pt: {key} is {kind}")


def test_eval_data_of_another_channel_count(tmp_path, capsys, tiny_run):
    np.savez(tmp_path / "three.npz", x=np.random.default_rng(1).normal(size=(12, 3, 32)), y=np.arange(12) % 3)
    _refused(capsys, tmp_path, ["eval", tiny_run, "--data", tmp_path / "three.npz"],
             r"--data .*three.npz: x has 3 channels \(layout NCL\) but the run's network takes 2", tiny_run.parent)


# -- 7. FIFOs and other non-regular files, refused unread -------------------------------------------
FIFO_CASES = {  # name -> (argv with {fifo} (a FIFO), {ckpt}, {train}, {run}, {dir}; what the message says)
    "train --dataset": (["train", "--dataset", "{fifo}.npz", *TINY_MODEL, "--out", "{dir}/run"], "{fifo}.npz"),
    "train --test-data": (["train", "--dataset", "{train}", "--test-data", "{fifo}.npz", *TINY_MODEL, "--out",
                           "{dir}/run"], "{fifo}.npz"),
    "eval --data": (["eval", "{run}", "--data", "{fifo}.npz"], "{fifo}.npz"),
    "verify --input": (["verify", "{ckpt}", "--input", "{fifo}.npy"], "--input {fifo}.npy"),
    "verify --config": (["verify", "{ckpt}", "--config", "{fifo}.json"], "--config {fifo}.json"),
    "summary --config": (["summary", "{ckpt}", "--config", "{fifo}.json"], "--config {fifo}.json"),
    "verify CHECKPOINT": (["verify", "{fifo}.pt"], "{fifo}.pt"),
    "summary CHECKPOINT": (["summary", "{fifo}.safetensors"], "{fifo}.safetensors"),
    "convert SRC": (["convert", "{fifo}.msgpack", "{dir}/out.pt"], "{fifo}.msgpack"),
    "convert SRC (no suffix: sniffed)": (["convert", "{fifo}.bin", "{dir}/out.pt"], "{fifo}.bin"),
    "msgpack config file": (["summary", "{dir}/model.msgpack"], "{dir}/model.config.json"),
    "Orbax config.json": (["summary", "{dir}/orbax"], "{dir}/orbax/config.json"),
    "Orbax _METADATA": (["verify", "{dir}/orbax_meta"], "{dir}/orbax_meta/_METADATA"),
    "char device": (["verify", "{ckpt}", "--input", "/dev/zero"], "--input /dev/zero"),
}
FIFO_SCRIPT = r"""
import contextlib, io, json, signal, sys
from flax_resnet1d import cli

class Hung(BaseException):
    pass

def alarm(signum, frame):
    raise Hung

signal.signal(signal.SIGALRM, alarm)
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    signal.alarm(20)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
    except Hung:
        code = "hung"
    signal.alarm(0)
    print(json.dumps({"case": name, "code": code, "err": err.getvalue()}), flush=True)
"""


@pytest.fixture(scope="module")
def fifo_results(tmp_path_factory, inputs, tiny_run) -> dict[str, tuple[dict, str]]:
    """Every FIFO case run in one subprocess (one JAX start-up), each under a 20 s alarm and all
    under a timeout: case -> (its result, the message it must contain)."""
    directory = tmp_path_factory.mktemp("fifos")
    os.mkfifo(directory / "fifo")
    for suffix in (".npz", ".npy", ".json", ".pt", ".safetensors", ".msgpack", ".bin"):
        os.mkfifo(directory / f"fifo{suffix}")
    write_checkpoint(directory / "model.msgpack", small_state_dict())
    (directory / "model.config.json").unlink()
    os.mkfifo(directory / "model.config.json")
    for name, replaced in (("orbax", "config.json"), ("orbax_meta", "_METADATA")):
        write_checkpoint(directory / name, small_state_dict())
        (directory / name / replaced).unlink()
        os.mkfifo(directory / name / replaced)
    paths = {"fifo": directory / "fifo", "ckpt": inputs / "model.safetensors", "train": inputs / "train.npz",
             "run": tiny_run, "dir": directory}
    cases = {name: [str(a).format(**paths) for a in argv] for name, (argv, _) in FIFO_CASES.items()}
    try:
        out = subprocess.run([sys.executable, "-c", FIFO_SCRIPT, json.dumps(cases)], capture_output=True, text=True,
                             timeout=120, check=False).stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    results = {r["case"]: r for r in map(json.loads, filter(None, out.splitlines()))}
    assert not (directory / "run").exists() and not (directory / "out.pt").exists()
    return {name: (results.get(name, {"code": "no result", "err": out[-2000:]}), where.format(**paths))
            for name, (_, where) in FIFO_CASES.items()}


@pytest.mark.parametrize("case", list(FIFO_CASES))
def test_fifos_and_devices_are_refused_unread(fifo_results, case):
    result, where = fifo_results[case]
    assert result["code"] == 2, result
    err = result["err"]
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{where}: " in err and "not a regular file; refused without reading it" in err, err


TIMEOUTS = ["nan", "inf", "-inf", "0", "-1", "1e300"]


@pytest.mark.parametrize("option", ["--connect-timeout", "--heartbeat-timeout"])
@pytest.mark.parametrize("value", TIMEOUTS)
def test_timeouts_that_never_end_are_refused(tmp_path, capsys, inputs, option, value):
    _refused(capsys, tmp_path, ["train", "--dataset", inputs / "train.npz", *TINY_MODEL, "--out", tmp_path / "run",
                                f"{option}={value}"], rf"{option} must be a number of seconds in \(0, 86400\], got ")


NEWLINE_CASES = {  # a missing input whose name holds a newline (and an escape), per command
    "verify": ["verify", "{p}.pt"],
    "verify --input": ["verify", "{ckpt}", "--input", "{p}.npy"],
    "summary --config": ["summary", "{ckpt}", "--config", "{p}.json"],
    "convert": ["convert", "{p}.safetensors", "{dir}/out.pt"],
    "train --dataset": ["train", "--dataset", "{p}.npz", *TINY_MODEL, "--out", "{dir}/run"],
    "eval --data": ["eval", "{run}", "--data", "{p}.npz"],
}


@pytest.mark.parametrize("case", list(NEWLINE_CASES))
def test_a_newline_in_a_path_stays_on_one_line(tmp_path, capsys, inputs, tiny_run, case):
    name = str(tmp_path / "two\nlines\x1b[31m")
    argv = [a.format(p=name, ckpt=inputs / "model.safetensors", dir=tmp_path, run=tiny_run) for a in NEWLINE_CASES[case]]
    err = _refused(capsys, tmp_path, argv, r"two\\nlines\\x1b\[31m\.\w+: ", tiny_run.parent)
    assert "\x1b" not in err


@pytest.mark.parametrize("text, shown", [("a\nb", "a\\nb"), ("tab\there", "tab\\there"), ("bell\x07", "bell\\x07"),
                                         ("sep\u2028", "sep\\u2028"), ("unicode é 日本 ok", "unicode é 日本 ok")])
def test_one_line_escapes_control_characters_only(text, shown):
    assert errors.one_line(text) == shown
    assert str(errors.DataError(f"{text}: bad")) == f"{shown}: bad"

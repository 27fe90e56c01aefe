"""``flax-resnet1d train --init`` from an MDNC checkpoint of each architecture, in a subprocess:
epoch 0 of metrics.jsonl is torch_ref's loss of that checkpoint on the same raw arrays
(``--normalize none``: F.cross_entropy / F.mse_loss exactly), config.json records the
checkpoint's path and sha256, and ``export`` writes a state dict torch_ref loads strictly.
Then every task's usage errors: one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from checkpoint_helpers import FAMILY_EXAMPLES, family_config
from conftest import FAMILY_DIR, MDNC_DIR

import torch_ref
from flax_resnet1d import cli
from flax_resnet1d.parity import relative_error
from flax_resnet1d.training import run_files

LENGTHS = {"EncoderNet1d": 20, "AE1d": 32, "UNet1d": 28}  # the fixtures' own input lengths


def fixture_arrays(config, n: int, seed: int) -> dict[str, np.ndarray]:
    """Random inputs of the fixture's network and targets of its output's shape (MDNC layout)."""
    rng = np.random.default_rng(seed)
    if config.arch == "DecoderNet1d":
        x = rng.standard_normal((n, config.in_length))
    else:
        x = 2 + 3 * rng.standard_normal((n, config.in_planes, LENGTHS[config.arch]))  # not normalized: raw units
    if config.arch == "EncoderNet1d":
        return {"x": x, "y": np.arange(n) % config.out_length}
    return {"x": x, "y": 5 * rng.standard_normal(config.output_shape(x.shape))}


def torch_loss(config, checkpoint, arrays) -> float:
    net = torch_ref.from_config(config).eval()
    net.load_state_dict(torch.load(checkpoint, weights_only=True), strict=True)
    with torch.no_grad():
        out = net(torch.from_numpy(arrays["x"].astype(np.float32)))
        if config.arch == "EncoderNet1d":
            return torch.nn.functional.cross_entropy(out, torch.from_numpy(arrays["y"])).item()
        return torch.nn.functional.mse_loss(out, torch.from_numpy(arrays["y"].astype(np.float32))).item()


@pytest.mark.parametrize("arch", ["EncoderNet1d", "DecoderNet1d", "AE1d", "UNet1d"])
def test_init_from_an_mdnc_checkpoint_of_each_architecture(arch, tmp_path, capsys):
    name = FAMILY_EXAMPLES[arch]
    config, checkpoint = family_config(name), FAMILY_DIR / f"{name}.pt"
    train = fixture_arrays(config, 24, 0)
    np.savez(tmp_path / "train.npz", **train)
    np.savez(tmp_path / "test.npz", **fixture_arrays(config, 8, 1))
    run_dir = tmp_path / "run"
    needs_config = ["--config", json.dumps(config.to_dict())] if arch == "DecoderNet1d" else []
    command = [sys.executable, "-m", "flax_resnet1d", "train", "--dataset", str(tmp_path / "train.npz"),
               "--test-data", str(tmp_path / "test.npz"), "--init", str(checkpoint), *needs_config,
               "--normalize", "none", "--epochs", "1", "--batch-size", "8", "--no-progress", "--out", str(run_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    initial, first = run_files.read_metrics(str(run_dir))
    expected = torch_loss(config, checkpoint, train)
    with capsys.disabled():  # capsys holds the commands' output below
        print(f"{arch}: epoch-0 loss {initial['train_loss']:.6g} vs torch_ref {expected:.6g}: "
              f"{relative_error(initial['train_loss'], expected):.1e}")
    assert (initial["epoch"], initial["step"], first["epoch"]) == (0, 0, 1)
    assert relative_error(initial["train_loss"], expected) <= 1e-5
    recorded = run_files.load_config(str(run_dir))
    assert recorded.model == config and recorded.init == str(checkpoint.resolve())
    assert recorded.init_sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert recorded.task == ("classify" if arch == "EncoderNet1d" else "signal")

    assert cli.main(["eval", str(run_dir), "--json"]) == 0  # the task's metrics
    evaluated = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(evaluated["test"]) == ({"loss", "accuracy", "examples"} if arch == "EncoderNet1d"
                                      else {"loss", "snr_db", "rmse", "examples"})
    assert evaluated["test"]["loss"] == first["test_loss"]  # the checkpoint of epoch 1
    assert cli.main(["export", str(run_dir), str(tmp_path / "exported.pt")]) == 0
    assert "PASS" in capsys.readouterr().out
    net = torch_ref.from_config(config)
    net.load_state_dict(torch.load(tmp_path / "exported.pt", weights_only=True), strict=True)


def test_a_new_head_is_initialized_with_a_notice(tmp_path, capsys):
    config = family_config(FAMILY_EXAMPLES["EncoderNet1d"])
    arrays = fixture_arrays(config, 24, 0)
    np.savez(tmp_path / "five.npz", x=arrays["x"], y=np.arange(24) % 5)  # 5 classes, the checkpoint's head has 3
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--dataset", str(tmp_path / "five.npz"), "--init", str(FAMILY_DIR /
                     "encnet_bottleneck_k5.pt"), "--freeze", "body", "--epochs", "1", "--batch-size", "8",
                     "--no-progress", "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "--init: its head (fc) outputs 3, the data needs 5: fc re-initialized" in out
    assert run_files.load_config(str(run_dir)).model.out_length == 5
    assert cli.main(["eval", str(run_dir), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["test"]) == {"loss", "accuracy", "examples"}


def test_an_orbax_directory_initializes_a_run_and_summary_shows_the_run(tmp_path, capsys):
    # an Orbax directory holds a config.json too: it must not be taken for a run directory
    config = family_config(FAMILY_EXAMPLES["EncoderNet1d"])
    orbax_dir, run_dir = tmp_path / "weights", tmp_path / "run"
    assert cli.main(["convert", str(FAMILY_DIR / "encnet_bottleneck_k5.pt"), str(orbax_dir)]) == 0
    arrays = fixture_arrays(config, 24, 0)
    np.savez(tmp_path / "three.npz", x=arrays["x"], y=np.arange(24) % 3)
    assert cli.main(["train", "--dataset", str(tmp_path / "three.npz"), "--init", str(orbax_dir), "--epochs", "1",
                     "--batch-size", "8", "--no-progress", "--out", str(run_dir)]) == 0
    run = run_files.load_config(str(run_dir))
    assert (run.model, run.init_sha256) == (config, run_files.tree_sha256(str(orbax_dir)))
    capsys.readouterr()
    assert cli.main(["summary", str(orbax_dir), "--input-shape", f"{config.in_channels},{run.data.length}"]) == 0
    checkpoint_table = capsys.readouterr().out
    assert cli.main(["summary", str(run_dir)]) == 0  # the run's network, at the length it trains on
    assert capsys.readouterr().out == checkpoint_table
    assert cli.main(["summary", str(run_dir), "--key", "model"]) == 2
    assert "is a run directory: its config.json gives the network" in capsys.readouterr().err


def _npz(tmp_path, name: str, **arrays) -> str:
    np.savez(tmp_path / name, **arrays)
    return str(tmp_path / name)


SERIES = np.random.default_rng(0).standard_normal((20, 1, 32))
LABELS = np.arange(20) % 2
AE_CHECKPOINT, FEATURES = str(FAMILY_DIR / "ae_bottleneck.pt"), str(MDNC_DIR / "plain_k5_c8_l1211_features.pt")


@pytest.mark.parametrize("data, args, message", [
    ({"x": SERIES, "y": LABELS}, ["--arch", "AE1d"], "the task classify (what the data's targets imply, or --task) "
                                                     "trains EncoderNet1d, not AE1d"),
    ({"x": SERIES, "y": SERIES}, ["--arch", "EncoderNet1d"], "the task signal (what the data's targets imply"),
    ({"x": SERIES, "y": np.where(np.arange(20) == 3, np.nan, 0.5 + LABELS)}, [], "y contains 1 NaN/Inf values"),
    ({"x": SERIES, "y": SERIES[:, :, :30]}, ["--arch", "AE1d"], "has targets per example (L, C channels-last) "
                                                                "(30, 1) but the AE1d outputs (32, 1)"),
    ({"x": SERIES, "y": LABELS}, ["--task", "signal"], "task signal needs targets (N, C', L) in x's layout"),
    ({"x": SERIES}, ["--init", AE_CHECKPOINT, "--arch", "UNet1d"], f"--init {AE_CHECKPOINT} holds a AE1d, not the "
                                                                   "UNet1d --arch asks for"),
    ({"x": SERIES}, ["--init", AE_CHECKPOINT], "the data does not fit its AE1d: in_planes=2 but the data needs 1"),
    ({"x": np.repeat(SERIES, 2, axis=1), "y": LABELS}, ["--init", FEATURES],
     "its EncoderNet1d has no head (out_length=None) to re-initialize for the data's 2 outputs"),
    ({"x": np.repeat(SERIES, 2, axis=1), "y": LABELS}, ["--init", FEATURES, "--channel", "16"],
     "--channel 16 contradicts --init"),
    ({"x": SERIES, "y": LABELS}, ["--config", "{}"], "--config describes the network of --init's checkpoint"),
    ({"x": SERIES, "y": LABELS}, ["--loss", "l1"], "loss 'l1' does not apply to the task classify"),
    ({"x": SERIES, "y": 0.5 + LABELS}, ["--label-smoothing", "0.1"], "label smoothing applies to classify"),
    ({"x": SERIES}, ["--arch", "AE1d", "--freeze", "body"], "--freeze body trains only a classifier's or regressor's"),
    ({"x": SERIES[:, 0, :5], "y": SERIES}, ["--arch", "DecoderNet1d", "--augment", "shift"],
     "--augment shift moves series; a DecoderNet1d's inputs are vectors"),
])
def test_task_usage_errors_are_one_line(data, args, message, tmp_path, capsys):
    code = cli.main(["train", "--dataset", _npz(tmp_path, "d.npz", **data), *args, "--epochs", "1", "--no-progress",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()  # refused before anything is written

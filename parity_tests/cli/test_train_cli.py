"""``flax-resnet1d train | eval | export`` end to end on GunPoint, and their usage errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from train_helpers import save_npz, synthetic_dataset

import torch_ref
from flax_resnet1d import cli
from flax_resnet1d.config import preset_config
from flax_resnet1d.parity import relative_error
from flax_resnet1d.training import data, loop, run_files


@pytest.fixture(scope="module")
def gunpoint_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("gunpoint") / "run")
    assert cli.main(["train", "--dataset", "gunpoint", "--epochs", "10", "--ckpt-every", "4", "--no-progress",
                     "--out", run_dir]) == 0
    return run_dir


def test_train_writes_a_complete_run(gunpoint_run, capsys):
    config = run_files.load_config(gunpoint_run)
    assert config.data == data.with_digest(data.DataSpec("GunPoint"), data.load_archive("GunPoint"))  # digest recorded
    assert (config.model.in_planes, config.model.out_length) == (1, 2)
    assert [h["epoch"] for h in run_files.read_metrics(gunpoint_run)] == list(range(1, 11))
    assert cli.main(["eval", gunpoint_run, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epoch"] == 10 and result["test"]["examples"] == 150 and result["train"]["examples"] == 50
    assert result["test"]["accuracy"] == run_files.read_metrics(gunpoint_run)[-1]["test_accuracy"]


def test_export_reproduces_the_jax_test_accuracy_in_torch(gunpoint_run, tmp_path, capsys):
    config, state, _ = run_files.restore_run(gunpoint_run)
    ds = loop.model_inputs(data.load(config.data), config.model)
    jax_test = loop.evaluate_splits(config, state, {"test": (ds.x_test, ds.y_test)})["test"]
    assert jax_test.accuracy > 0.8  # a trained model, not chance
    x = torch.from_numpy(np.ascontiguousarray(np.swapaxes(ds.x_test, 1, 2)))
    for suffix in (".pt", ".safetensors"):
        dst = str(tmp_path / f"model{suffix}")
        assert cli.main(["export", gunpoint_run, dst]) == 0
        assert "PASS" in capsys.readouterr().out
        if suffix == ".pt":
            state_dict = torch.load(dst, weights_only=True)
        else:
            import safetensors.torch

            state_dict = safetensors.torch.load_file(dst)
        net = torch_ref.from_config(config.model).eval()
        net.load_state_dict(state_dict, strict=True)
        with torch.no_grad():
            logits = net(x).numpy()
        assert float(np.mean(logits.argmax(1) == ds.y_test)) == jax_test.accuracy
        assert relative_error(logits, jax_test.logits) <= 1e-5


def test_eval_on_user_arrays(gunpoint_run, tmp_path, capsys):
    ds = data.load_archive("GunPoint")
    np.savez(tmp_path / "some.npz", x=np.swapaxes(ds.x_test[:20], 1, 2), y=ds.y_test[:20])
    assert cli.main(["eval", gunpoint_run, "--data", str(tmp_path / "some.npz")]) == 0
    out = capsys.readouterr().out
    assert "some.npz" in out and " 20 " in out


def test_train_on_npz_files(tmp_path, capsys):
    save_npz(synthetic_dataset(), tmp_path / "train.npz", tmp_path / "test.npz")
    run_dir = str(tmp_path / "run")
    assert cli.main(["train", "--dataset", str(tmp_path / "train.npz"), "--test-data", str(tmp_path / "test.npz"),
                     "--channel", "4", "--layers", "1", "1", "--block", "plain", "--kernel-size", "3",
                     "--epochs", "1", "--batch-size", "8", "--optimizer", "sgd", "--schedule", "constant",
                     "--no-progress", "--out", run_dir]) == 0
    config = run_files.load_config(run_dir)
    assert (config.model.in_planes, config.model.out_length, config.optimizer) == (2, 3, "sgd")
    assert "train.npz: epoch 1: test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--dataset", "GunPoint", "--preset", "encnet12", "--channel", "8"], "--preset encnet12 fixes the channels"),
    (["--dataset", "GunPoint", "--layers", "3"], "layers needs at least 2 stages"),
    (["--dataset", "GunPoint", "--test-fraction", "0.3"], "--test-fraction apply to a .npz or .tsv --dataset"),
    (["--dataset", "GunPoint", "--schedule", "warmup"], "needs 0 < --warmup-epochs < --epochs"),
    (["--dataset", "GunPoint", "--batch-size", "0"], "batch_size must be at least 1"),
])
def test_train_usage_errors(args, message, tmp_path, capsys):
    assert cli.main(["train", *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_run_directory_guards(gunpoint_run, tmp_path, capsys):
    assert cli.main(["train", "--out", gunpoint_run]) == 2
    assert f"already holds a run; continue it with --resume {gunpoint_run}" in capsys.readouterr().err
    assert cli.main(["train", "--out", gunpoint_run, "--overwrite", "--lr", "-1"]) == 2  # invalid: nothing replaced
    assert "lr must be positive" in capsys.readouterr().err and run_files.load_config(gunpoint_run).lr == 1e-3
    assert cli.main(["train", "--resume", gunpoint_run, "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    assert cli.main(["train", "--out", str(other), "--overwrite"]) == 2
    assert "is not a run directory" in capsys.readouterr().err and (other / "precious.txt").exists()
    assert cli.main(["eval", str(other)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert cli.main(["export", gunpoint_run, str(other / "precious.txt")]) == 2
    assert "unknown output format '.txt'" in capsys.readouterr().err and (other / "precious.txt").read_text() == "keep me"


def test_short_series_are_padded_to_the_network_minimum():
    ds = data.load_archive("ItalyPowerDemand")  # 24 steps; a 5-stage kernel-3 preset needs 33
    model = preset_config("encnet12", ds.in_planes, ds.num_classes)
    padded = loop.model_inputs(ds, model)
    assert padded.length == model.min_length() == 33
    model.feature_length(padded.length)  # accepted

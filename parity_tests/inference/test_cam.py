"""Class activation maps: the identity that defines them (the map's mean over the feature
positions plus the class's bias is the class's logit) in float64, and ``explain`` end to end."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from flax_resnet1d import Predictor, cli
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.inference.cam import member_maps
from flax_resnet1d.inference.predictor import Member, model_input
from flax_resnet1d.model import from_config
from flax_resnet1d.parity import dtype_context
from flax_resnet1d.training.data import Normalization

CONFIGS = [EncoderConfig(4, (1, 2), "plain", 5, in_planes=2, out_length=3),
           EncoderConfig(4, (2, 1, 1), "bottleneck", 3, in_planes=1, out_length=4)]


@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "bottleneck"])
def test_the_map_mean_plus_the_bias_is_the_logit_in_float64(config, make_flax_variables):
    variables = make_flax_variables(config, "float64", seed=3)
    member = Member("random", config, variables, Normalization("series"))
    x = np.random.default_rng(0).standard_normal((5, 40, config.in_planes)) * 4 + 1
    with dtype_context("float64"):
        logits = np.asarray(jax.jit(lambda v, x: from_config(config).apply(v, model_input(member, x)))(variables, x))
        for chosen in (None, 1):
            maps, _, index = jax.jit(member_maps, static_argnums=(0, 3))(member, variables, x, chosen)
            maps, index = np.asarray(maps), np.asarray(index)
            assert maps.dtype == np.float64 and maps.shape == (5, config.feature_length(40))
            expected = logits[np.arange(5), index]
            cam_logit = maps.mean(axis=1) + variables["params"]["fc"]["bias"][index]
            error = np.max(np.abs(cam_logit - expected)) / np.max(np.abs(expected))
            print(f"CAM identity, {config.block}, class {chosen}: {error:.2e}")
            assert error <= 1e-12
        assert (index == 1).all() and not np.allclose(maps[0], maps[0].mean())  # maps that vary along time


def test_explain_writes_the_maps_and_their_picture(classifier_run, tmp_path):
    run_dir, x_test = classifier_run
    np.save(tmp_path / "x.npy", x_test[:4])
    out = tmp_path / "cam.npz"
    assert cli.main(["explain", run_dir, "--input", str(tmp_path / "x.npy"), "--out", str(out), "--class", "2"]) == 0
    cams = np.load(out)
    assert cams["cam"].shape == (4, 32) and list(cams["label"]) == ["2"] * 4 and (cams["class_index"] == 2).all()
    logits = Predictor.load(run_dir, task="regression").predict(x_test[:4])
    assert np.allclose(cams["logits"], logits, rtol=1e-5, atol=1e-6)
    bias = jax.device_get(Predictor.load(run_dir).members[0].variables)["params"]["fc"]["bias"]
    assert np.allclose(cams["cam_features"].mean(1) + bias[2], logits[:, 2], rtol=1e-5, atol=1e-5)
    assert (tmp_path / "cam.png").read_bytes().startswith(b"\x89PNG")

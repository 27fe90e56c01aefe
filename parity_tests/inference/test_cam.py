"""Class activation maps: the identity that defines them (the map's mean over the feature
positions plus the class's bias is the class's logit) in float64, and ``explain`` end to end."""

from __future__ import annotations

import jax
import numpy as np

from flax_resnet1d import Predictor, cli
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.inference.cam import member_maps
from flax_resnet1d.inference.predictor import Member, model_input
from flax_resnet1d.model import from_config
from flax_resnet1d.parity import dtype_context
from flax_resnet1d.training.data import Normalization

def test_the_map_mean_plus_the_bias_is_the_logit_in_float64(make_flax_variables):
    config = EncoderConfig(4, (1, 2), "bottleneck", 5, in_planes=2, out_length=3)
    variables = make_flax_variables(config, "float64", seed=3)
    member = Member("random", config, variables, Normalization("series"))
    x = np.random.default_rng(0).standard_normal((6, 40, config.in_planes)) * 4 + 1
    chosen = np.arange(6) % config.out_length  # every class
    with dtype_context("float64"):
        logits = np.asarray(jax.jit(lambda v, x: from_config(config).apply(v, model_input(member, x)))(variables, x))
        maps, _, index = jax.jit(member_maps, static_argnums=0)(member, variables, x, chosen)
    maps = np.asarray(maps)
    assert maps.dtype == np.float64 and maps.shape == (6, config.feature_length(40))
    assert (np.asarray(index) == chosen).all()
    expected = logits[np.arange(6), chosen]
    cam_logit = maps.mean(axis=1) + variables["params"]["fc"]["bias"][chosen]
    error = np.max(np.abs(cam_logit - expected)) / np.max(np.abs(expected))
    print(f"CAM identity (float64): {error:.2e}")
    assert error <= 1e-12
    assert not np.allclose(maps, maps.mean(axis=1, keepdims=True))  # maps that vary along time


def test_explain_writes_the_maps_and_their_picture(classifier_run, tmp_path):
    run_dir, x_test = classifier_run
    np.save(tmp_path / "x.npy", x_test[:4])
    out = tmp_path / "cam.npz"
    assert cli.main(["explain", run_dir, "--input", str(tmp_path / "x.npy"), "--out", str(out)]) == 0
    cams = np.load(out)
    predictor = Predictor.load(run_dir, task="regression")
    logits = predictor.predict(x_test[:4])
    assert cams["cam"].shape == (4, 32) and (cams["class_index"] == logits.argmax(1)).all()  # the predicted class
    assert list(cams["label"]) == [str(k) for k in logits.argmax(1)]
    assert np.allclose(cams["logits"], logits, rtol=1e-5, atol=1e-6)
    bias = predictor.members[0].variables["params"]["fc"]["bias"][cams["class_index"]]
    assert np.allclose(cams["cam_features"].mean(1) + bias, logits.max(1), rtol=1e-5, atol=1e-5)
    assert (tmp_path / "cam.png").read_bytes().startswith(b"\x89PNG")

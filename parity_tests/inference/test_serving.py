"""Serving artifacts: a ``.jaxexport`` runs in a fresh process in which this package, flax and
torch cannot be imported, and gives ``predict``'s outputs at any batch size; a ``.onnx`` gives
them in onnxruntime; both from a run (with its preprocessing) and from a bare MDNC checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from checkpoint_helpers import FAMILY_EXAMPLES, family_config

from conftest import FAMILY_DIR

from flax_resnet1d import Predictor, cli
from flax_resnet1d.parity import relative_error

# What a service runs: jax alone (the docs' consumer), behind an import blocker.
CONSUMER = """
import sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("flax_resnet1d", "flax", "torch", "torch_ref"):
            raise ImportError(f"{name} may not be imported here")

sys.meta_path.insert(0, Blocker())
import jax
import numpy as np

exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
assert exported.platforms == ("cpu", "cuda"), exported.platforms  # lowered for both, whatever ran the export
inputs = np.load(sys.argv[2])
np.savez(sys.argv[3], **{name: np.asarray(exported.call(x)) for name, x in inputs.items()})
assert not any(m.partition(".")[0] in ("flax_resnet1d", "flax", "torch") for m in sys.modules), "imported"
"""

BATCHES = (1, 7, 33)


def model_args(source: str, classifier_run) -> tuple[list[str], Predictor]:
    """The CLI's MODEL arguments and the Predictor they name: the tiny run, or an MDNC checkpoint
    (series normalization where it takes series)."""
    if source == "run":
        return [classifier_run[0]], Predictor.load(classifier_run[0])
    name = FAMILY_EXAMPLES[source]
    config = family_config(name)
    path = str(FAMILY_DIR / f"{name}.pt")
    normalize = "none" if getattr(config, "is_vector_input", False) else "series"
    return ([path, "--config", json.dumps(config.to_dict()), "--normalize", normalize],
            Predictor.load(path, config=config, normalize=normalize))


def random_inputs(predictor: Predictor, length: int | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"b{n}": (rng.standard_normal(predictor.input_shape(n, length)) * 3 + 1).astype(np.float32)
            for n in BATCHES}


def predicted(predictor: Predictor, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``predict``'s outputs of each batch, from one call on all of them (series are independent)."""
    outputs = predictor.outputs(np.concatenate(list(inputs.values())))
    ends = np.cumsum([len(x) for x in inputs.values()])
    return dict(zip(inputs, np.split(outputs, ends[:-1])))


@pytest.mark.parametrize("source", ["run", "BlockPlain1d"])
def test_jax_export_runs_without_this_package(source, classifier_run, tmp_path, capsys):
    args, predictor = model_args(source, classifier_run)
    length = None if source == "run" else 24
    artifact = tmp_path / "model.jaxexport"
    assert cli.main(["export", *args, str(artifact), "--no-check"]
                    + ([] if length is None else ["--length", str(length)])) == 0
    if source != "run":  # an existing artifact: replaced with --overwrite only
        assert cli.main(["export", *args, str(artifact), "--no-check", "--length", str(length)]) == 2
        assert "already exists" in capsys.readouterr().err
        assert cli.main(["export", *args, str(artifact), "--no-check", "--length", str(length), "--overwrite"]) == 0
    inputs = random_inputs(predictor, length)
    np.savez(tmp_path / "x.npz", **inputs)
    subprocess.run([sys.executable, "-c", CONSUMER, str(artifact), str(tmp_path / "x.npz"), str(tmp_path / "y.npz")],
                   check=True, cwd=tmp_path)
    served, expected = np.load(tmp_path / "y.npz"), predicted(predictor, inputs)
    for name, x in inputs.items():
        assert served[name].shape[0] == x.shape[0]
        error = relative_error(served[name], expected[name])
        with capsys.disabled():
            print(f"\n.jaxexport vs predict, {source}, batch {x.shape[0]}: {error:.2e}")
        assert error <= 1e-6


@pytest.mark.parametrize("source", ["run", "DecoderNet1d"])
def test_onnx_in_onnxruntime_equals_predict(source, classifier_run, tmp_path, capsys):
    import onnxruntime

    args, predictor = model_args(source, classifier_run)
    artifact = tmp_path / "model.onnx"
    assert cli.main(["export", *args, str(artifact)]) == 0
    assert "PASS" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    inputs = random_inputs(predictor, None)
    expected = predicted(predictor, inputs)
    for name, x in inputs.items():
        error = relative_error(session.run(None, {"x": x})[0], expected[name])
        with capsys.disabled():
            print(f"\n.onnx vs predict, {source}, batch {x.shape[0]}: {error:.2e}")
        assert error <= 1e-5

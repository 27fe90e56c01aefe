"""``predict`` and ``explain`` from the command line: the prediction files, and bad input as one
line on stderr with exit code 2 and no output file left behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from checkpoint_helpers import FAMILY_EXAMPLES, family_config, small_state_dict, write_checkpoint
from conftest import FAMILY_DIR

from flax_resnet1d import Predictor, cli
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.parity import relative_error


def test_predict_writes_labels_and_probabilities(classifier_run, tmp_path, capsys):
    run_dir, x_test = classifier_run
    np.save(tmp_path / "x.npy", x_test[:5])
    for models, out in (([run_dir], "pred.npz"), ([run_dir, run_dir], "pred.csv")):  # an ensemble of one run twice
        assert cli.main(["predict", *models, "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / out),
                         "--no-progress"]) == 0
    expected = Predictor.load(run_dir).predict_proba(x_test[:5])
    npz = np.load(tmp_path / "pred.npz")
    assert relative_error(npz["probabilities"], expected) <= 1e-6 and list(npz["classes"]) == ["0", "1", "2"]
    assert list(npz["labels"]) == [str(i) for i in expected.argmax(1)]
    rows = (tmp_path / "pred.csv").read_text().splitlines()
    assert rows[0] == "label,0,1,2" and len(rows) == 6
    assert np.allclose([[float(v) for v in row.split(",")[1:]] for row in rows[1:]], expected, rtol=1e-6)


def fixture_args(arch: str) -> list[str]:
    name = FAMILY_EXAMPLES[arch]
    return [str(FAMILY_DIR / f"{name}.pt"), "--config", json.dumps(family_config(name).to_dict())]


BAD_INPUTS = {  # id: (the command line's arguments, given the tiny run and tmp_path; what stderr must say)
    "another architecture than its input": (lambda run, tmp: [*fixture_args("DecoderNet1d"), "--input", tmp("series")],
                                            "takes vectors (N, 5), got an array of shape (3, 2, 32)"),
    "another channel count": (lambda run, tmp: [run, "--input", tmp("three_channels")],
                              "input has 3 channels but in_planes=2"),
    "too short for the depth": (lambda run, tmp: [*fixture_args("EncoderNet1d"), "--input", tmp("short")],
                                "is too short"),
    "ensemble members that disagree": (lambda run, tmp: [run, tmp("two_classes.pt"), "--input", tmp("series")],
                                       "ensemble members disagree"),
    "a .npy header declaring more than memory": (lambda run, tmp: [run, "--input", tmp("huge.npy")],
                                                 "loading it needs about 2.9 TiB of memory, more than the"),
    "an output of an unknown format": (lambda run, tmp: [run, "--input", tmp("series"), "--out", tmp("pred.txt")],
                                       "unknown output format '.txt'"),
}


@pytest.fixture
def bad_files(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "series.npy", rng.standard_normal((3, 2, 32)))
    np.save(tmp_path / "three_channels.npy", rng.standard_normal((3, 3, 32)))
    np.save(tmp_path / "short.npy", rng.standard_normal((3, 2, 3)))
    config = EncoderConfig(4, (1, 1), "plain", 3, in_planes=2, out_length=2)
    write_checkpoint(tmp_path / "two_classes.pt", small_state_dict(config=config), config)
    with open(tmp_path / "huge.npy", "wb") as f:  # 1.6 TB declared and held, as a sparse file: no disk used
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 2, 10**5)})
        f.truncate(f.tell() + 8 * 2 * 10**11)
    return lambda name: str(tmp_path / (name if "." in name else f"{name}.npy"))


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(case, classifier_run, bad_files, tmp_path, capsys):
    args, says = BAD_INPUTS[case]
    args = args(classifier_run[0], bad_files)
    out = [] if "--out" in args else ["--out", str(tmp_path / "pred.npz")]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["predict", *args, *out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flax-resnet1d predict: error: ") and says in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary


def test_explain_refuses_a_network_without_class_maps(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((2, 2, 32)))
    assert cli.main(["explain", *fixture_args("AE1d"), "--input", str(tmp_path / "x.npy"),
                     "--out", str(tmp_path / "cam.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "need one EncoderNet1d classifier" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]

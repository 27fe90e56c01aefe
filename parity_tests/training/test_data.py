"""Data sets: the UCR/UEA sets shipped in aeon (offline), z-normalization, padding, and the
user's .npz arrays with their errors."""

from __future__ import annotations

import json
import os
import socket
import sys
import warnings

import aeon.datasets
import numpy as np
import pytest

from flax_resnet1d import cli, errors
from flax_resnet1d.training import data

# name: (train N, test N, channels, length after padding, classes) of the archive's own files.
ARCHIVE = {
    "GunPoint": (50, 150, 1, 150, 2),
    "ArrowHead": (36, 175, 1, 251, 3),
    "ItalyPowerDemand": (67, 1029, 1, 24, 2),
    "OSULeaf": (200, 242, 1, 427, 6),
    "ACSF1": (100, 100, 1, 1460, 10),
    "PickupGestureWiimoteZ": (50, 50, 1, 361, 10),  # variable length 29..361
    "BasicMotions": (40, 40, 6, 100, 4),
    "JapaneseVowels": (270, 370, 12, 29, 9),  # variable length 7..29
}
VARIABLE_LENGTH = ("PickupGestureWiimoteZ", "JapaneseVowels")


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("name", sorted(ARCHIVE))
def test_archive_sets_load_offline(name, offline):
    n_train, n_test, channels, length, classes = ARCHIVE[name]
    ds = data.load_archive(name)
    assert ds.x_train.shape == (n_train, length, channels) and ds.x_test.shape == (n_test, length, channels)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.num_classes == classes == len(set(ds.y_train)) and set(ds.y_test) <= set(range(classes))
    assert ds.normalization.how == ("channel" if channels > 1 else "series")
    for split, x in (("train", ds.x_train), ("test", ds.x_test)):
        assert np.isfinite(x).all()
        if ds.normalization.how == "series" and name not in VARIABLE_LENGTH:  # per series and channel
            np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-5)
            std = x.std(axis=1)
            assert np.all((np.abs(std - 1) < 1e-4) | (std == 0))
    if ds.normalization.how == "channel" and name not in VARIABLE_LENGTH:  # with the training steps' statistics
        np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1)), 0, atol=1e-5)
        np.testing.assert_allclose(ds.x_train.std(axis=(0, 1)), 1, atol=1e-4)


@pytest.mark.parametrize("name", VARIABLE_LENGTH)
def test_variable_length_series_are_normalized_over_their_observed_steps_then_resampled(name):
    ds = data.load_archive(name)
    raw = {}
    for split in ("TRAIN", "TEST"):
        path = os.path.join(os.path.dirname(aeon.datasets.__file__), "data", name, f"{name}_{split}.ts")
        raw[split] = [np.asarray(s, np.float64).T for s in aeon.datasets.load_from_ts_file(path)[0]]
    assert len({len(s) for s in raw["TRAIN"]}) > 1  # the set does vary in length
    observed = np.concatenate(raw["TRAIN"])
    if ds.normalization.how == "channel":  # statistics of the observed training steps, not of interpolated ones
        np.testing.assert_allclose(ds.normalization.mean, observed.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(ds.normalization.std, observed.std(axis=0), rtol=1e-12)
    for x, series in ((ds.x_train, raw["TRAIN"]), (ds.x_test, raw["TEST"])):
        for i in (0, int(np.argmin([len(s) for s in series]))):  # the shortest is stretched the most
            s = series[i]
            mean, std = (s.mean(axis=0), s.std(axis=0)) if ds.normalization.how == "series" else (
                ds.normalization.mean, ds.normalization.std)
            expected = np.stack([np.interp(np.linspace(0, len(s) - 1, ds.length), np.arange(len(s)), c)
                                 for c in ((s - mean) / std).T], axis=1)
            np.testing.assert_allclose(x[i], expected, rtol=1e-5, atol=1e-5)


def test_resampled_interpolates_between_the_kept_end_steps():
    ramp = np.stack([np.arange(5.0), 10 - 2 * np.arange(5.0)], axis=1)  # (5, 2), linear in time
    out = data.resampled(ramp, 9)
    np.testing.assert_allclose(out, np.stack([np.arange(9) / 2, 10 - np.arange(9.0)], axis=1), atol=1e-12)
    assert data.resampled(ramp, 5) is ramp
    np.testing.assert_array_equal(data.resampled(np.array([[3.0]]), 4), [[3.0]] * 4)  # one step: held


def test_labels_follow_the_archive_header_order():
    ds = data.load_archive("BasicMotions")
    assert ds.classes == ("standing", "running", "walking", "badminton")  # @classLabel order, not sorted
    ds = data.load_archive("PickupGestureWiimoteZ")
    assert ds.classes == tuple(str(i) for i in range(1, 11))  # "10" after "9", not after "1"


def test_dataset_names_are_case_insensitive_and_unknown_names_list_the_choices():
    assert data.archive_name("gunpoint") == "GunPoint"
    with pytest.raises(errors.DataError, match="unknown data set 'GunPoints'; available: GunPoint, ArrowHead"):
        data.archive_name("GunPoints")
    assert isinstance(errors.DataError("x"), ValueError) and isinstance(errors.DataError("x"), errors.UsageError)


def test_missing_aeon_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "aeon.datasets", None)  # makes the import fail
    with pytest.raises(errors.DataError, match=r"aeon package, which is not installed: pip install 'flax-resnet1d\[data\]'"):
        data.load_archive("GunPoint")


@pytest.mark.parametrize("how", data.NORMALIZATIONS)
def test_normalizations_of_user_arrays(how, tmp_path):
    x, y = _random()
    xt, yt = _random(n=10, seed=1)
    x = x * np.array([1.0, 5.0])[None, :, None] + 3.0  # channels of different level and scale
    ds = data.load_npz(_npz(tmp_path, x=x, y=y), normalize=how, test_path=_npz(tmp_path, "t.npz", x=xt, y=yt))
    raw_test = np.swapaxes(xt, 1, 2)
    np.testing.assert_allclose(ds.x_test, ds.normalization(raw_test), atol=1e-6)  # what eval --data applies
    if how == "series":
        np.testing.assert_allclose(ds.x_train.mean(axis=1), 0, atol=1e-5)
    elif how == "channel":
        steps = np.swapaxes(x, 1, 2).reshape(-1, 2)
        np.testing.assert_allclose(ds.normalization.mean, steps.mean(axis=0))
        np.testing.assert_allclose(ds.normalization.std, steps.std(axis=0))
        np.testing.assert_allclose(ds.x_train.reshape(-1, 2).std(axis=0), 1, atol=1e-5)
        assert np.abs(ds.x_train.mean(axis=1)).max() > 0.1  # series keep their own levels
    else:
        np.testing.assert_allclose(ds.x_train, np.swapaxes(x, 1, 2), rtol=1e-6)


def test_unknown_normalization(tmp_path):
    x, y = _random()
    with pytest.raises(errors.DataError, match="unknown normalization 'global'"):
        data.load_npz(_npz(tmp_path, x=x, y=y), normalize="global")


def test_pad_to_zero_pads_at_the_end():
    ds = data.load_archive("ItalyPowerDemand")
    padded = ds.pad_to(33)
    assert padded.x_train.shape[1] == 33 and np.all(padded.x_train[:, 24:] == 0)
    np.testing.assert_array_equal(padded.x_test[:, :24], ds.x_test)
    assert ds.pad_to(10).x_train is ds.x_train


def test_znormalize_is_per_series_and_channel():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (4, 50, 3))
    x[1, :, 2] = 7.0  # a constant channel
    z = data.znormalize(x, axis=1)
    np.testing.assert_allclose(z[0, :, 1], (x[0, :, 1] - x[0, :, 1].mean()) / x[0, :, 1].std())
    assert np.all(z[1, :, 2] == 0)


# -- the user's arrays --------------------------------------------------------------------

def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def _random(n=30, channels=2, length=40, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, channels, length)), rng.integers(0, classes, n)


@pytest.mark.parametrize("how", data.NORMALIZATIONS)
def test_long_series_are_resampled_to_max_length_as_prediction_resamples_the_raw_ones(how, tmp_path):
    x, y = _random(length=40)
    xt, yt = _random(n=10, length=40, seed=1)
    x, xt = (a * np.array([1.0, 5.0])[None, :, None] + 3.0 for a in (x, xt))
    path, test = _npz(tmp_path, x=x, y=y), _npz(tmp_path, "t.npz", x=xt, y=yt)
    full = data.load(data.DataSpec(path, test=test, normalize=how))
    ds = data.load(data.DataSpec(path, test=test, normalize=how, max_length=16))
    assert ds.x_train.shape == (30, 16, 2) and ds.x_test.shape == (10, 16, 2) and ds.x_test.dtype == np.float32
    raw_test = np.stack([data.resampled(s, 16) for s in np.swapaxes(xt, 1, 2)])  # prediction: resample, normalize
    np.testing.assert_allclose(ds.x_test, ds.normalization(raw_test), atol=1e-5)
    np.testing.assert_allclose(data.load_like(full, test, max_length=16)[0], ds.x_test, atol=1e-5)  # eval --data
    assert data.capped(full, 40) is full and data.load_like(full, test, max_length=40)[0].shape[1] == 40


def test_max_length_leaves_signals_and_vectors_and_refuses_nonsense(tmp_path):
    x, _ = _random(length=40)
    signal = data.load(data.DataSpec(_npz(tmp_path, x=x, y=x[:, :1]), max_length=16))  # a target series
    assert signal.task == "signal" and signal.length == 40
    vectors = data.load(data.DataSpec(_npz(tmp_path, "v.npz", x=x[:, 0], y=x[:, :, :8]), vector=True, max_length=16))
    assert vectors.x_train.shape[1] == 40
    for bad in (1, 2.5, True, "16"):
        with pytest.raises(errors.DataError, match="max length must be an integer of at least 2 or null"):
            data.DataSpec("d.npz", max_length=bad)


@pytest.mark.parametrize("layout", ["NCL", "NLC"])
def test_npz_layouts_give_the_same_data(layout, tmp_path):
    x, y = _random()
    path = _npz(tmp_path, x=x if layout == "NCL" else np.swapaxes(x, 1, 2), y=y)
    ds = data.load_npz(path, layout=layout, test_fraction=0.2)
    reference = data.load_npz(_npz(tmp_path, "ref.npz", x=x, y=y), test_fraction=0.2)
    np.testing.assert_array_equal(ds.x_train, reference.x_train)
    assert ds.x_train.shape == (24, 40, 2) and ds.x_test.shape == (6, 40, 2)
    assert ds.num_classes == 3


def test_npz_holdout_is_fixed_and_disjoint(tmp_path):
    x, y = _random(n=50)
    x[:, 0, 0] = np.arange(50)  # tag each example (kept through z-normalization as the rank)
    ds = data.load_npz(_npz(tmp_path, x=x, y=y), test_fraction=0.2)
    again = data.load_npz(_npz(tmp_path, "again.npz", x=x, y=y), test_fraction=0.2)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    train_rows = {tuple(r) for r in ds.x_train[:, 0, :]}
    assert len(ds.y_train) == 40 and not train_rows & {tuple(r) for r in ds.x_test[:, 0, :]}


def test_npz_with_separate_test_file_and_univariate_2d_x(tmp_path):
    x, y = _random(channels=1)
    xt, yt = _random(n=12, channels=1, seed=1)
    ds = data.load_npz(_npz(tmp_path, x=x[:, 0], y=y), test_path=_npz(tmp_path, "t.npz", x=xt[:, 0], y=yt))
    assert ds.x_train.shape == (30, 40, 1) and ds.x_test.shape == (12, 40, 1)
    np.testing.assert_allclose(ds.x_test[:, :, 0], data.znormalize(xt[:, 0], axis=1), atol=1e-6)  # series


def test_whole_number_float_labels_are_accepted(tmp_path):
    x, y = _random()
    ds = data.load_npz(_npz(tmp_path, x=x, y=y.astype(np.float64)))
    assert ds.y_train.dtype == np.int32


@pytest.mark.parametrize("change, message", [
    (lambda x, y: (x, y[:-1]), r"y must have shape \(N, ...\) matching x's 30 examples"),
    (lambda x, y: (x, np.where(np.arange(len(y)) == 4, -1, y)), r"y\[4\] = -1 is negative"),
    (lambda x, y: (x, y + 0.5), r"labels must be integers; y\[0\] = "),
    (lambda x, y: (x, y.astype(str)), "labels must be integers, got dtype <U"),
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 123, np.nan, x), y),
     r"x contains 1 NaN/Inf values \(first at example 1\)"),
    (lambda x, y: (x[..., None], y), r"x must have shape \(N, C, L\), \(N, L, C\) or \(N, L\)"),
    (lambda x, y: (x.astype(str), y), "x must be numeric"),
])
def test_bad_arrays_are_clear_errors(change, message, tmp_path):
    x, y = change(*_random())
    with pytest.raises(errors.DataError, match=message):
        data.load_npz(_npz(tmp_path, x=x, y=y), task="classify")  # fractional labels alone would imply regress


def test_test_labels_out_of_range(tmp_path):
    x, y = _random(classes=3)
    xt, yt = _random(n=5, seed=1)
    yt[2] = 3
    with pytest.raises(errors.DataError, match=r"test label 3 is out of range: the classes are 0..2"):
        data.load_npz(_npz(tmp_path, x=x, y=y), test_path=_npz(tmp_path, "t.npz", x=xt, y=yt))


@pytest.mark.parametrize("content, message", [
    (b"not a zip at all", "not a readable .npz file"),
    (None, r"task classify needs targets \(N,\) integer labels, got no y"),
])
def test_unreadable_npz(content, message, tmp_path):
    path = tmp_path / "bad.npz"
    if content is None:
        np.savez(path, x=np.ones((2, 3)))
    else:
        path.write_bytes(content)
    with pytest.raises(errors.DataError, match=message):
        data.load_npz(str(path), task="classify")


def test_pickled_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([object()], dtype=object), y=np.zeros(1, int))
    with pytest.raises(errors.DataError, match="not a readable .npz file"):
        data.load_npz(str(path))


def test_cli_reports_data_errors_in_one_line(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "NoSuchSet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "unknown data set 'NoSuchSet'; available: GunPoint" in err and "JapaneseVowels" in err


# -- the UCR 2018 archive's .tsv files -------------------------------------------------------------

def _tsv(tmp_path, name, labels, x) -> str:
    """A UCR 2018 archive file: the label, then the series, per tab-separated line."""
    path = str(tmp_path / name)
    np.savetxt(path, np.column_stack([labels, x]), delimiter="\t")
    return path


def test_a_tsv_split_loads_as_the_same_arrays_in_a_npz_with_its_labels_as_class_names(tmp_path):
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((6, 40)) * 3 + 1, rng.standard_normal((5, 40))
    labels, test_labels = [7, -1, 7, 2.5, -1, 2.5], [2.5, 7, 7, -1, 2.5]
    ds = data.load(data.DataSpec(_tsv(tmp_path, "S_TRAIN.tsv", labels, x),
                                 test=_tsv(tmp_path, "S_TEST.tsv", test_labels, xt)))
    assert ds.name == "S_TRAIN.tsv" and ds.classes == ("-1", "2.5", "7")
    assert ds.y_train.tolist() == [2, 0, 2, 1, 0, 1] and ds.y_test.tolist() == [1, 2, 2, 0, 1]
    as_npz = data.load_npz(_npz(tmp_path, x=x, y=ds.y_train), test_path=_npz(tmp_path, "t.npz", x=xt, y=ds.y_test))
    np.testing.assert_array_equal(ds.x_train, as_npz.x_train)
    np.testing.assert_array_equal(ds.x_test, as_npz.x_test)
    held = data.load_tsv(_tsv(tmp_path, "all.tsv", labels * 5, np.tile(x, (5, 1))), test_fraction=0.2)
    train, test = data.held_out("all.tsv", 30, 0.2)  # the .npz hold-out
    assert held.y_train.tolist() == [held.classes.index(data.label_names([c])[0]) for c in np.array(labels * 5)[train]]
    assert len(held.y_test) == len(test) == 6


@pytest.mark.parametrize("train, test, message", [
    ("1\t0.5\t0.7\n2\t0.1\n", None, "not a UCR .tsv file .* series of one length"),
    ("1\t0.5\tNaN\n2\t0.1\t0.3\n", None, "line 1 holds NaN or Inf: missing values and series of unequal length"),
    ("1\ta\tb\n", None, "not a UCR .tsv file"),
    ("1\n2\n", None, r"no series \(a line holds a label, then the series\)"),
    ("", None, r"no series \(a line holds a label, then the series\)"),
    ("1\t0.5\t0.7\n1\t0.1\t0.3\n", "1\t0.5\t0.7\n", r"the training labels hold one class \(1\)"),
    ("1\t0.5\t0.7\n2\t0.1\t0.3\n", "3\t0.5\t0.7\n",
     r"S_TEST.tsv: labels 3 are not among the training classes \(1, 2\)"),
    ("1\t0.5\t0.7\n2\t0.1\t0.3\n", "1\t0.5\t0.7\t0.9\n", r"test inputs have shape \(1, 3, 1\) but training"),
])
def test_bad_tsv_files_are_clear_errors(train, test, message, tmp_path):
    (tmp_path / "S_TRAIN.tsv").write_text(train)
    if test is not None:
        (tmp_path / "S_TEST.tsv").write_text(test)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's own warnings would be a second line on stderr
        with pytest.raises(errors.DataError, match=message):
            data.load_tsv(str(tmp_path / "S_TRAIN.tsv"), test and str(tmp_path / "S_TEST.tsv"))


@pytest.mark.parametrize("options, message", [
    (["--task", "regress"], "a .tsv holds labelled series (the UCR archive's), task classify, not regress"),
    (["--layout", "NLC"], "--layout applies to a .npz's x;"),
    (["--test-data", "{tmp}/T.npz"], "T.npz: the test file of a .tsv data set is a .tsv too"),
])
def test_train_refuses_what_a_tsv_cannot_be_in_one_line(options, message, tmp_path, capsys):
    path = _tsv(tmp_path, "S_TRAIN.tsv", [1, 2, 1, 2], np.random.default_rng(0).standard_normal((4, 30)))
    _npz(tmp_path, "T.npz", x=np.ones((2, 30)), y=np.array([0, 1]))
    options = [o.format(tmp=tmp_path) for o in options]
    code = cli.main(["train", "--dataset", path, *options, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_a_run_trained_on_tsv_files_evaluates_and_predicts_them_with_their_class_names(tmp_path, capsys):
    rng = np.random.default_rng(1)
    labels, test_labels = np.array([3, 1, 3, 1, 3, 1]), np.array([1, 3, 3, 1])
    bump = lambda labels: np.exp(-0.5 * ((np.arange(32) - 8 - 2 * labels[:, None]) / 2) ** 2)  # noqa: E731
    train = _tsv(tmp_path, "B_TRAIN.tsv", labels, bump(labels) + 0.1 * rng.standard_normal((6, 32)))
    test = _tsv(tmp_path, "B_TEST.tsv", test_labels, bump(test_labels) + 0.1 * rng.standard_normal((4, 32)))
    run = str(tmp_path / "run")
    assert cli.main(["train", "--dataset", train, "--test-data", test, "--channel", "4", "--epochs", "2",
                     "--no-progress", "--out", run]) == 0
    capsys.readouterr()
    assert cli.main(["eval", run, "--json"]) == 0 and cli.main(["eval", run, "--data", test, "--json"]) == 0
    own, given = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert given["B_TEST.tsv"] == own["test"]
    assert cli.main(["predict", run, "--input", test, "--out", str(tmp_path / "pred.csv")]) == 0
    rows = (tmp_path / "pred.csv").read_text().splitlines()
    assert rows[0] == "label,1,3" and len(rows) == 5 and {row.split(",")[0] for row in rows[1:]} <= {"1", "3"}

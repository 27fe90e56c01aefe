"""``flax-resnet1d convert / verify / summary``, in-process through ``cli.main`` (plus the README
walk-through and one error case as real subprocesses).

Every bad input of the conversion issue: exit code 2, one line on stderr, nothing on stdout,
no traceback, no output file and no temporary left behind.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_helpers import (SMALL_CONFIG, assert_same_state_dict, leftovers, small_state_dict, write_all_formats,
                                write_checkpoint)
from conftest import MANIFEST, MDNC_DIR

import torch_ref
from flax_resnet1d import parity
from flax_resnet1d.cli import main
from flax_resnet1d.cli.verify import PARITY_DTYPES
from flax_resnet1d.config import MIN_FEATURE_LENGTH, EncoderConfig, default_length, preset_config
from flax_resnet1d.errors import UsageError
from flax_resnet1d.io import atomic, readers

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(result: tuple[int, str, str], command: str, pattern: str) -> None:
    code, out, err = result
    assert "Traceback" not in err
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"flax-resnet1d {command}: error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]


def _fixture(name: str) -> Path:
    return MDNC_DIR / f"{name}.pt"


def _torch_file(state_dict: dict) -> bytes:
    """``torch.save`` bytes of a state dict (numpy or tensors)."""
    import io

    buffer = io.BytesIO()
    torch.save({k: torch.as_tensor(v) for k, v in state_dict.items()}, buffer)
    return buffer.getvalue()


# -- bad sources: name -> (build the file in a directory, pattern of the one-line error) ---------
def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(fmt: str):
    def build(d: Path) -> Path:
        path = write_all_formats(d, small_state_dict())[fmt]
        files = [p for p in path.rglob("*") if p.is_file() and p.parent.name == "d"] if path.is_dir() else [path]
        for file in files:  # Orbax: every data file
            file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
        return path
    return build


def _with(change):
    """A .pt state dict of the small network, modified by ``change(state_dict)``."""
    def build(d: Path) -> Path:
        state_dict = small_state_dict(seed=20)
        change(state_dict)
        return _write(d / "model.pt", _torch_file(state_dict))
    return build


def _legacy_truncated(d: Path) -> Path:
    path = d / "legacy.pt"
    torch.save({k: torch.from_numpy(v) for k, v in small_state_dict().items()}, path,
               _use_new_zipfile_serialization=False)
    return _write(path, path.read_bytes()[:3000])


def _npz(d: Path) -> Path:
    np.savez(d / "arrays.npz", x=np.random.default_rng(0).normal(size=(3, 4)))
    return (d / "arrays.npz").rename(d / "model.pt")


def _unsafe_pickle(d: Path) -> Path:
    path = d / "model.pt"
    torch.save(torch_ref.from_config(SMALL_CONFIG), path)  # the whole module, not its state_dict()
    return path


def _another_network(d: Path) -> Path:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    return _write(d / "mlp.pt", _torch_file(net.state_dict()))


def _set(key: str, value):
    def change(state_dict):
        if isinstance(value, float):
            state_dict[key].flat[1] = value
        else:
            state_dict[key] = value
    return change


def _no_state_dict(d: Path) -> Path:
    path = d / "train.pt"
    torch.save({"epoch": 3, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, path)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


BAD_SOURCES = {
    "missing file": (lambda d: d / "absent.pt", r"absent.pt: no such file or directory$"),
    "directory": (lambda d: _mkdir(d / "weights.pt"), r"weights.pt: is a directory but not an Orbax checkpoint"),
    "empty file": (lambda d: _write(d / "model.pt", b""), r"model.pt: is empty \(0 bytes\), not a PyTorch checkpoint"),
    "truncated .pt": (_truncated("torch"), r"model.pt: is truncated or corrupt \(unreadable zip archive\)"),
    "truncated legacy .pt": (_legacy_truncated, r"legacy.pt: corrupt or truncated PyTorch checkpoint"),
    "truncated .safetensors": (_truncated("safetensors"), r"corrupt or truncated safetensors file"),
    "truncated .msgpack": (_truncated("msgpack"), r"model.msgpack: corrupt or truncated msgpack file"),
    "truncated Orbax": (_truncated("orbax"), r"model_orbax: corrupt or incomplete Orbax checkpoint"),
    "random bytes": (lambda d: _write(d / "model.pt", np.random.default_rng(1).bytes(4096)),
                     r"model.pt: holds unrecognised bytes, not a PyTorch checkpoint"),
    ".npz renamed .pt": (_npz, r"model.pt: is a NumPy .npz archive, not a PyTorch checkpoint"),
    "text file": (lambda d: _write(d / "model.pt", b"epoch,loss\n1,0.53\n"), r"is a text file, not a PyTorch checkpoint"),
    "text, unknown suffix": (lambda d: _write(d / "notes.txt", b"hello\n"),
                             r"notes.txt: is a text file, not a checkpoint of a known kind"),
    "safetensors named .pt": (lambda d: write_all_formats(d, small_state_dict())["safetensors"].rename(d / "st.pt"),
                              r"st.pt: is a safetensors file, not a PyTorch checkpoint"),
    "pickled module": (_unsafe_pickle, r"refused: unpickling it needs Python objects other than tensors .*"
                                       r"\(torch_ref.EncoderNet1d\); nothing was executed"),
    "another network": (_another_network, r"mlp.pt: not an EncoderNet1d state dict: no 'netbody.0.weight' "
                                          r"\(first keys: 0.weight, 0.bias, 2.weight, 2.bias\)"),
    "missing key": (_with(lambda sd: sd.pop("netbody.1.conv_scale.in_node.1.bias")),
                    r"state dict does not match EncoderNet1d\(.*\): 1 missing keys: netbody.1.conv_scale.in_node.1.bias$"),
    "unexpected key": (_with(_set("netbody.1.conv_scale.extra.weight", np.ones(3, np.float32))),
                       r": 1 unexpected keys: netbody.1.conv_scale.extra.weight$"),
    "shape mismatch": (_with(_set("fc.weight", np.full((3, 5), 0.5, np.float32))),
                       r"1 shape mismatches: fc.weight: checkpoint \(3, 5\) vs expected \(3, 8\)$"),
    "NaN weights": (_with(_set("netbody.2.conv_scale.conv1.1.weight", np.nan)),
                    r"non-finite weights in 1 tensors: netbody.2.conv_scale.conv1.1.weight \(1 NaN, 0 Inf\); "
                    r"refused \(`flax-resnet1d convert --allow-nonfinite`"),
    "Inf weights": (_with(_set("fc.bias", -np.inf)), r"non-finite weights in 1 tensors: fc.bias \(0 NaN, 1 Inf\)"),
    "training dict without a state dict": (_no_state_dict, r"no MDNC 1D network state dict among its entries: "
                                                           r"'epoch' \(an int\), 'optimizer' \(a dict of 2 entries\)"),
}


@pytest.mark.parametrize("dst_name", ["converted", "converted.pt"])
@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_source_is_one_clean_line_and_exit_2(tmp_path, capsys, case, dst_name):
    build, pattern = BAD_SOURCES[case]
    (tmp_path / "in").mkdir()
    src = build(tmp_path / "in")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_usage_error(run_cli(capsys, "convert", src, out_dir / dst_name), "convert", pattern)
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("args, pattern", [
    (["{src}", "{out}/model.h5"], r"model.h5: unknown output format '.h5': use .pt/.pth or .safetensors"),
    (["{src}", "{out}/missing_dir/model.pt"], r"model.pt: output directory .*missing_dir does not exist"),
    (["{src}", "{src}", "--overwrite"], r"SRC and DST are the same"),
    (["{src}", "{out}/m", "--config", "{{channel: 4}}"], r"--config: invalid JSON"),
    (["{src}", "{out}/m", "--config", "absent.json"], r"--config absent.json: neither JSON text nor an existing"),
    (["{src}", "{out}/m", "--config", '{{"channel": 4, "layers": [2, 1], "colour": 1}}'],
     r"--config: EncoderNet1d config: unknown fields \['colour'\]"),
    (["{src}", "{out}/m", "--config", '{{"channel": 8, "layers": [2, 1], "in_planes": 2, "out_length": 3}}'],
     r"model.pt: state dict does not match EncoderNet1d\(channel=8, .*shape mismatches: netbody.0.weight: "
     r"checkpoint \(4, 2, 5\) vs expected \(8, 2, 5\)"),
    (["{flax}", "{out}/m.pt", "--key", "model"], r"--key selects an entry of a PyTorch training checkpoint"),
], ids=["unknown suffix", "no output dir", "same file", "bad JSON", "no config file", "unknown config field",
        "config of another network", "--key on Flax"])
def test_bad_arguments_are_one_clean_line_and_exit_2(tmp_path, capsys, args, pattern):
    paths = write_all_formats(tmp_path, small_state_dict())
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(src=paths["torch"], flax=paths["msgpack"], out=out) for a in args]
    assert_usage_error(run_cli(capsys, "convert", *argv), "convert", pattern)
    assert list(out.iterdir()) == []


# -- conversions ---------------------------------------------------------------------------
@pytest.mark.parametrize("fixture, flax_name, back_name", [
    ("bottleneck_k3_c16_l222", "flax_ckpt", "back.pt"),
    ("bottleneck_k3_c8_l22222", "flax.msgpack", "back.safetensors"),
    ("bottleneck_k7_c12_l31", "flax_ckpt", "back.safetensors"),
    ("plain_k5_c8_l1211_features", "flax.msgpack", "back.pt"),
])
def test_mdnc_checkpoint_to_flax_and_back_is_bit_exact(tmp_path, capsys, fixture, flax_name, back_name):
    code, out, _ = run_cli(capsys, "convert", _fixture(fixture), tmp_path / flax_name)
    assert code == 0
    assert f"{MANIFEST[fixture]['n_params']:,} parameters, float32" in out
    assert json.loads(out.splitlines()[-1].removeprefix("config: ")) == MANIFEST[fixture]["config"]
    assert run_cli(capsys, "convert", tmp_path / flax_name, tmp_path / back_name)[0] == 0

    original = torch.load(_fixture(fixture), weights_only=True)
    back, config = readers.load_checkpoint(tmp_path / back_name)
    assert_same_state_dict(back, {k: v.numpy() for k, v in original.items()})
    net = torch_ref.from_config(config)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)


@pytest.mark.parametrize("dst_name", ["out.pt", "out.msgpack"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64", "float32"])
def test_dtype_casts_on_export(tmp_path, capsys, dtype, dst_name):
    src = write_checkpoint(tmp_path / "model.safetensors", small_state_dict(seed=21))
    code, out, _ = run_cli(capsys, "convert", src, tmp_path / dst_name, "--dtype", dtype)
    assert code == 0 and f"parameters, {dtype})" in out
    if dst_name.endswith(".pt"):
        assert {t.dtype for t in torch.load(tmp_path / dst_name, weights_only=True).values()} == {getattr(torch, dtype)}
    else:
        from flax import serialization

        restored = serialization.msgpack_restore((tmp_path / dst_name).read_bytes())
        assert {a.dtype.name for a in restored["params"]["fc"].values()} == {dtype}


def test_config_json_is_accepted_when_it_matches(tmp_path, capsys):
    src = write_checkpoint(tmp_path / "model.pt", small_state_dict(seed=22))
    (tmp_path / "config.json").write_text(json.dumps(SMALL_CONFIG.to_dict()))
    for config in (json.dumps(SMALL_CONFIG.to_dict()), tmp_path / "config.json"):
        dst = tmp_path / f"flax_{len(list(tmp_path.iterdir()))}"
        assert run_cli(capsys, "convert", src, dst, "--config", config)[0] == 0
        assert json.loads((dst / "config.json").read_text()) == SMALL_CONFIG.to_dict()


def test_key_selects_the_state_dict_of_a_training_checkpoint(tmp_path, capsys):
    model, ema = small_state_dict(seed=23), small_state_dict(seed=24)
    torch.save({"model": {k: torch.from_numpy(v) for k, v in model.items()},
                "ema": {f"module.{k}": torch.from_numpy(v) for k, v in ema.items()}, "step": 1000}, tmp_path / "t.pt")
    assert_usage_error(run_cli(capsys, "convert", tmp_path / "t.pt", tmp_path / "m"), "convert",
                       r"several entries are MDNC 1D network state dicts \('model', 'ema'\); choose one with --key")
    assert run_cli(capsys, "convert", tmp_path / "t.pt", tmp_path / "m", "--key", "ema")[0] == 0
    assert_same_state_dict(readers.load_checkpoint(tmp_path / "m")[0], ema)


def test_allow_nonfinite_converts_nan_weights(tmp_path, capsys):
    state_dict = small_state_dict(seed=25)
    state_dict["fc.weight"][1, 2] = np.nan
    src = write_checkpoint(tmp_path / "model.pt", state_dict)
    assert run_cli(capsys, "convert", src, tmp_path / "m.msgpack")[0] == 2
    assert run_cli(capsys, "convert", src, tmp_path / "m.msgpack", "--allow-nonfinite")[0] == 0
    assert_same_state_dict(readers.load_checkpoint(tmp_path / "m.msgpack", allow_nonfinite=True)[0], state_dict)


# -- verify --------------------------------------------------------------------------------
def _table_rows(out: str) -> list[list[str]]:
    """Rows of the verify table (up to its PASS/FAIL line), split on runs of 2+ spaces."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("input "))
    end = next(i for i, line in enumerate(lines) if line.startswith(("PASS: ", "FAIL: ")))
    return [re.split(r"\s{2,}", line) for line in lines[start + 2:end]]


def test_verify_exits_1_on_a_parity_failure(tmp_path, capsys, monkeypatch):
    """A port whose float32 output is off by 1e-3 (relative), as a float32-only bug would be."""
    src = write_checkpoint(tmp_path / "model.pt", small_state_dict(seed=28))
    flax_outputs = parity.flax_outputs

    def broken(state_dict, config, x, cotangent, dtype, *args, **kwargs):
        outputs = flax_outputs(state_dict, config, x, cotangent, dtype, *args, **kwargs)
        if dtype == "float32":
            outputs.y = outputs.y + 1e-3 * np.abs(outputs.y).max()
        return outputs

    monkeypatch.setattr(parity, "flax_outputs", broken)
    code, out, _ = run_cli(capsys, "verify", src, "--seed", 4, "--batch", 1)
    assert code == 1
    failed = [r for r in _table_rows(out) if r[-1] == "FAIL"]
    assert [(r[1], r[2]) for r in failed] == [("float32", "output")]
    assert "FAIL: 1 of 8 comparisons exceed the tolerance" in out.splitlines()


@pytest.mark.parametrize("config", [
    SMALL_CONFIG, preset_config("encnet32"), EncoderConfig(8, (1, 1, 1), "plain", kernel_size=1),
    EncoderConfig(8, (1, 1, 1), "bottleneck", kernel_size=4), EncoderConfig(4, (1,) * 7, "bottleneck", kernel_size=7),
], ids=lambda c: f"{c.block}-k{c.kernel_size}-{len(c.layers)}stages")
def test_default_length_gives_a_final_feature_length_of_at_least_6(config):
    length = default_length(config)
    assert config.feature_length(length) >= MIN_FEATURE_LENGTH
    assert length == 256 if config == preset_config("encnet32") else length >= config.min_length()


def test_default_length_of_a_network_no_input_fits():
    """Even kernels in plain blocks: branch and shortcut lengths never match."""
    with pytest.raises(UsageError, match="no input length works for this configuration"):
        default_length(EncoderConfig(8, (1, 1), "plain", kernel_size=4))


@pytest.mark.parametrize("extra, pattern", [
    (["--input", "{d}/x3.npy"], r"--input .*x3.npy: EncoderNet1d: input has 3 channels but in_planes=2"),
    (["--input", "{d}/short.npy"], r"short.npy: EncoderNet1d: input length 2 is too short .* the minimum length is"),
    (["--input", "{d}/two.npz"], r"two.npz: holds \['a', 'b'\]; name the input 'x' or keep one array"),
    (["--input", "{d}/nan.npy"], r"nan.npy: contains NaN or Inf"),
    (["--input", "{d}/absent.npy"], r"absent.npy: no such file"),
    (["--input", "{d}/model.pt"], r"model.pt: not a .npy/.npz array file"),
    (["--length", "3"], r"--length 3: EncoderNet1d: input length 3 is too short"),
    (["--batch", "0"], r"--batch must be positive"),
], ids=["channels", "too short", "ambiguous npz", "NaN input", "missing input", "not an array", "length", "batch"])
def test_verify_bad_input_is_exit_2(tmp_path, capsys, extra, pattern):
    src = write_checkpoint(tmp_path / "model.pt", small_state_dict(seed=29))
    rng = np.random.default_rng(5)
    np.save(tmp_path / "x3.npy", rng.normal(size=(2, 3, 32)))
    np.save(tmp_path / "short.npy", rng.normal(size=(2, 2, 2)))
    np.savez(tmp_path / "two.npz", a=rng.normal(size=(2, 2, 32)), b=rng.normal(size=(2, 2, 32)))
    np.save(tmp_path / "nan.npy", np.where(rng.random((2, 2, 32)) < 0.1, np.nan, rng.normal(size=(2, 2, 32))))
    argv = [a.format(d=tmp_path) for a in extra]
    assert_usage_error(run_cli(capsys, "verify", src, *argv), "verify", pattern)


# -- summary -------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, total", [
    (["--preset", "encnet32", "--input-shape", "3,128", "--out-length", "32"], 14_401_568),  # the spec's example 1
    ([str(_fixture("plain_k5_c8_l1211_features"))], MANIFEST["plain_k5_c8_l1211_features"]["n_params"]),
])
def test_summary_prints_the_per_layer_table(capsys, argv, total):
    code, out, _ = run_cli(capsys, "summary", *argv)
    assert code == 0
    assert re.search(rf"Total params: {total:,}\b", out), out


@pytest.mark.parametrize("argv, pattern", [
    ([], r"give either a CHECKPOINT or --preset NAME"),
    (["{src}", "--preset", "encnet12"], r"give either a CHECKPOINT or --preset NAME"),
    (["--preset", "encnet12", "--input-shape", "3x128"], r"--input-shape '3x128': expected C,L"),
    (["{src}", "--input-shape", "3,64"], r"--input-shape 3,64: EncoderNet1d: input has 3 channels but in_planes=2"),
    (["{src}", "--input-shape", "2,4"], r"input length 4 is too short"),
    (["{d}/absent.pt"], r"absent.pt: no such file"),
], ids=["nothing", "both", "bad shape", "channels", "too short", "missing"])
def test_summary_bad_input_is_exit_2(tmp_path, capsys, argv, pattern):
    src = write_checkpoint(tmp_path / "model.pt", small_state_dict())
    assert_usage_error(run_cli(capsys, "summary", *[a.format(src=src, d=tmp_path) for a in argv]), "summary", pattern)


# -- real processes ------------------------------------------------------------------------
def _env() -> dict:
    """This interpreter's scripts (the flax-resnet1d console script) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run_cli_subprocess(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flax_resnet1d", *map(str, argv)], capture_output=True, text=True,
                          env=_env())


def _corrupt_orbax(d: Path) -> Path:
    """An Orbax checkpoint with a garbled manifest: all of Orbax's concurrent reads fail."""
    path = write_all_formats(d, small_state_dict())["orbax"]
    manifest = bytearray((path / "manifest.ocdbt").read_bytes())
    manifest[len(manifest) // 2] ^= 0xFF
    (path / "manifest.ocdbt").write_bytes(bytes(manifest))
    return path


@pytest.mark.parametrize("build, message", [
    (lambda d: d / "absent.pt", "absent.pt: no such file or directory"),
    (_corrupt_orbax, "model_orbax: corrupt or incomplete Orbax checkpoint ("),
], ids=["missing", "corrupt Orbax"])
def test_module_entry_point_reports_bad_input_in_one_line(tmp_path, build, message):
    """In a real process, where nothing else catches what background threads print."""
    done = run_cli_subprocess("convert", build(tmp_path), tmp_path / "out.pt")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"flax-resnet1d convert: error: {tmp_path}/{message}")


def test_ctrl_c_during_convert_exits_130_without_output(tmp_path, capsys, monkeypatch):
    src = write_checkpoint(tmp_path / "model.msgpack", small_state_dict(seed=31))

    def interrupted(path, data):
        Path(path).write_bytes(data[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "write_file", interrupted)
    code, out, err = run_cli(capsys, "convert", src, tmp_path / "out.pt")
    assert (code, out, err) == (130, "", "flax-resnet1d convert: interrupted\n")
    assert not (tmp_path / "out.pt").exists() and leftovers(tmp_path) == []


KILLED_MIDWAY = """
import os, signal, sys
from flax_resnet1d import cli
from flax_resnet1d.io import atomic

def write_half_then_die(path, data):
    with open(path, "wb") as out:
        out.write(data[:len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)

atomic.write_file = write_half_then_die
cli.main(["convert", *sys.argv[1:]])
"""


def test_killed_convert_leaves_no_destination(tmp_path):
    """SIGKILL in the middle of writing: DST never exists half-written; a rerun just works."""
    src = write_checkpoint(tmp_path / "model.safetensors", small_state_dict(seed=30))
    dst = tmp_path / "out.pt"
    done = subprocess.run([sys.executable, "-c", KILLED_MIDWAY, src, dst], capture_output=True, env=_env())
    assert done.returncode == -9
    assert not dst.exists()
    assert len(leftovers(tmp_path)) == 1  # the killed writer's hidden temporary, apart from DST
    assert run_cli_subprocess("convert", src, dst).returncode == 0
    assert_same_state_dict(readers.load_state_dict(dst), small_state_dict(seed=30))


def walkthrough_block() -> str:
    """The bash block of docs/checkpoints.md's walk-through (parity_tests/docs marks it no-run: it is checked here)."""
    page = (REPO / "docs" / "checkpoints.md").read_text()
    section = page.split("## Walk-through", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_docs_walkthrough_runs_as_written():
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough_block()], cwd=REPO, capture_output=True,
                          text=True, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "round trip bit-exact" in done.stdout
    # verify on the fixture with its stored input: every quantity, both dtypes, both inputs pass
    rows = _table_rows(done.stdout)
    name = "bottleneck_k3_c16_l222"
    length = default_length(EncoderConfig.from_dict(MANIFEST[name]["config"]))
    for source, dtype in itertools.product((f"random (2, 3, {length})", f"{name}.npz (4, 3, 64)"), PARITY_DTYPES):
        mine = [r for r in rows if r[0] == source and r[1] == dtype]
        assert {"output", "grad input", "grad params"} <= {r[2] for r in mine}
        assert any(r[2].startswith("grad worst param (netbody.") for r in mine)
        assert all(r[-1] == "PASS" and float(r[4]) <= float(r[5]) for r in mine), mine
    assert f"PASS: all {len(rows)} comparisons within tolerance" in done.stdout and len(rows) == 16

"""``flax-resnet1d convert | verify | summary`` on the whole family: MDNC fixtures of a
DecoderNet1d (out_size is not in its weights) and of a BatchNorm block (batch_stats and
num_batches_tracked), with ``--config`` holding ``arch`` where inference cannot decide; and
``--overwrite`` of every network's output in every format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from checkpoint_helpers import FAMILY_EXAMPLES, assert_same_state_dict, leftovers, written_contents
from conftest import FAMILY_DIR, FAMILY_MANIFEST

from flax_resnet1d.cli import main
from flax_resnet1d.config import CONFIGS
from flax_resnet1d.io import readers

CASES = ["decnet_plain_vector", "bottleneck_batch_relu_old_up_s2", "unet_plain"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def config_json(name: str) -> str:
    meta = FAMILY_MANIFEST[name]
    return json.dumps({"arch": meta["arch"], **meta["kwargs"]})


@pytest.mark.parametrize("name, flax_name, back_name", [(CASES[0], "flax_ckpt", "back.pt"),
                                                        (CASES[1], "flax.msgpack", "back.safetensors"),
                                                        (CASES[2], "flax_ckpt", "back.safetensors")])
def test_convert_to_flax_and_back_is_bit_exact(tmp_path, capsys, name, flax_name, back_name):
    src = FAMILY_DIR / f"{name}.pt"
    if FAMILY_MANIFEST[name]["arch"] != "UNet1d":  # inference cannot decide: one clear line, exit 2
        code, out, err = run_cli(capsys, "convert", src, tmp_path / flax_name)
        assert code == 2 and out == "" and len(err.splitlines()) == 1 and "give the config" in err
        assert not (tmp_path / flax_name).exists()
        code, out, _ = run_cli(capsys, "convert", src, tmp_path / flax_name, "--config", config_json(name))
    else:
        code, out, _ = run_cli(capsys, "convert", src, tmp_path / flax_name)
    assert code == 0
    written = json.loads(out.splitlines()[-1].removeprefix("config: "))
    assert written == {**written, **json.loads(config_json(name))}  # plus the defaults the manifest leaves out
    assert run_cli(capsys, "convert", tmp_path / flax_name, tmp_path / back_name)[0] == 0  # config read back
    original = torch.load(src, weights_only=True)
    back, _ = readers.load_checkpoint(tmp_path / back_name, config=json.loads(config_json(name)))
    assert set(back) == set(original)
    for key, tensor in original.items():
        assert back[key].dtype == tensor.numpy().dtype and np.array_equal(back[key], tensor.numpy()), key


@pytest.mark.parametrize("dst_name", ["out.pt", "out.safetensors", "out.msgpack", "out_orbax"])
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_converting_again_needs_overwrite_and_writes_the_same(tmp_path, capsys, arch, dst_name):
    """An existing DST is refused in one line; with --overwrite it is replaced (a new file or
    directory) by the same contents, a .msgpack's config file with it, holding MDNC's weights."""
    name = FAMILY_EXAMPLES[arch]
    src, dst = FAMILY_DIR / f"{name}.pt", tmp_path / dst_name
    convert = ["convert", src, dst, "--config", config_json(name)]
    assert run_cli(capsys, *convert)[0] == 0
    written, inode = written_contents(dst), dst.stat().st_ino
    code, out, err = run_cli(capsys, *convert)
    assert (code, out, len(err.splitlines())) == (2, "", 1), err
    assert err.startswith("flax-resnet1d convert: error: ") and f"{dst_name}: already exists; pass --overwrite" in err
    assert written_contents(dst) == written
    code, _, err = run_cli(capsys, *convert, "--overwrite")
    assert code == 0, err
    assert written_contents(dst) == written and dst.stat().st_ino != inode
    assert leftovers(tmp_path) == []
    mdnc = {k: v.numpy() for k, v in torch.load(src, weights_only=True).items()}
    assert_same_state_dict(readers.load_checkpoint(dst, config=json.loads(config_json(name)))[0], mdnc)


def test_verify_and_summary_take_the_config(capsys):
    name = CASES[0]
    src, config = FAMILY_DIR / f"{name}.pt", config_json(name)
    code, out, _ = run_cli(capsys, "verify", src, "--config", config, "--input", FAMILY_DIR / f"{name}.npz",
                           "--seed", 0)
    assert code == 0 and "PASS: all 16 comparisons within tolerance" in out
    code, out, _ = run_cli(capsys, "summary", src, "--config", config)
    assert code == 0 and "Total params: 3,122" in out and "nlayers (convolutions along the depth): 11" in out


def test_summary_of_a_family_preset(capsys):
    code, out, _ = run_cli(capsys, "summary", "--preset", "decnet33", "--out-length", 128)
    assert code == 0 and "Total params: 12,283,521" in out and "along the depth): 33" in out

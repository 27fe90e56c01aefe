"""flax_resnet1d.summary against the spec's torchsummary tables (copied into
parity_tests/data/spec_summaries.txt) and against forward hooks on the PyTorch reference."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import torch_ref
from flax_resnet1d import EncoderNet1d, port, summary
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.model import from_config

TORCH_LAYER = {"Conv": "Conv1d", "Conv1d": "Conv1d", "Dense": "Linear", "InstanceNorm1d": "InstanceNorm1d",
               "PReLU": "PReLU", "BatchNorm1d": "BatchNorm1d", "ReLU": "ReLU", "Upsample": "Upsample"}
# Flax class name -> the PyTorch layer it ports; other rows are containers
ROW = re.compile(r"^\s*(?P<type>\S+)-(?P<index>\d+)\s+\[(?P<shape>[-\d, ]+)\]\s+(?P<params>[\d,]+)$")


def spec_tables() -> dict:
    """out_length -> (nlayers, totals lines, rows [(type, shape, params)]) of the spec's examples."""
    tables = {}
    for section in (Path(__file__).parents[1] / "data" / "spec_summaries.txt").read_text().split("\n## ")[1:]:
        out_length = re.search(r"out_length=(\w+)\)", section).group(1)
        matches = [m for m in map(ROW.match, section.splitlines()) if m]
        assert [int(m["index"]) for m in matches] == list(range(1, len(matches) + 1))  # every row parsed
        rows = [(m["type"], tuple(int(d) for d in m["shape"].split(",")), int(m["params"].replace(",", "")))
                for m in matches]
        nlayers = int(re.search(r"along the depth is (\d+)\.", section).group(1))
        totals = re.findall(r"^(?:Total|Trainable) params: [\d,]+$", section, re.M)
        tables[None if out_length == "None" else int(out_length)] = (nlayers, totals, rows)
    return tables


SPEC = spec_tables()


def leaf_rows(rows) -> list[tuple[str, tuple[int, ...], int]]:
    return [(TORCH_LAYER[r.layer_type], r.output_shape, r.params) for r in rows if r.layer_type in TORCH_LAYER]


@pytest.mark.parametrize("out_length", [32, None])
def test_seed_examples_match_the_spec(out_length):
    nlayers, totals, spec_rows = SPEC[out_length]
    result = summary(EncoderNet1d(64, [2, 2, 2, 2, 2], in_planes=3, out_length=out_length), (3, 128))
    text = str(result)
    assert totals == [f"Total params: {result.total_params:,}", f"Trainable params: {result.trainable_params:,}"]
    assert all(line in text.splitlines() for line in totals)
    assert result.total_params == (14_401_568 if out_length else 14_368_768)
    assert result.nlayers == nlayers == 32 and f"nlayers (convolutions along the depth): {nlayers}" in text
    spec_leaves = [row for row in spec_rows if row[0] in TORCH_LAYER.values()]
    assert leaf_rows(result.rows) == spec_leaves
    assert len(spec_rows) == (128 if out_length else 126)


CONFIGS = [EncoderConfig(6, (1, 2, 1), "plain", 5, 2, None), EncoderConfig(4, (2, 1), "bottleneck", 1, 3, 7),
           EncoderConfig(5, (1, 1, 1, 1), "bottleneck", 7, 1, 3)]


def family_configs() -> list:
    from flax_resnet1d.config import config_from_dict

    return [config_from_dict(d) for d in (
        {"arch": "BlockPlain1d", "in_planes": 3, "out_planes": 5, "stride": 2, "scaler": "up", "normalizer": "batch",
         "activator": "relu", "layer_order": "old"},
        {"arch": "BlockBottleneck1d", "in_planes": 4, "out_planes": 4, "normalizer": "inst", "activator": "relu"},
        {"arch": "DecoderNet1d", "channel": 4, "layers": [1, 2], "out_size": 23, "in_length": 3},
        {"arch": "AE1d", "channel": 4, "layers": [1, 1, 2], "block": "plain", "kernel_size": 5},
        {"arch": "UNet1d", "channel": 4, "layers": [1, 2, 1], "kernel_size": 1, "in_planes": 2})]


@pytest.mark.parametrize("config", CONFIGS + family_configs(),
                         ids=lambda c: f"{c.arch}-k{c.kernel_size}-{getattr(c, 'block', '')}")
def test_rows_match_forward_hooks_on_the_reference(config):
    """Every Conv1d/norm/PReLU/ReLU/Upsample/Linear of torch_ref, in forward order: same shapes and counts."""
    net = torch_ref.from_config(config)
    seen = []
    for module in net.modules():
        if type(module).__name__ in TORCH_LAYER.values():
            module.register_forward_hook(lambda m, args, out: seen.append(
                (type(m).__name__, (-1, *out.shape[1:]), sum(p.numel() for p in m.parameters()))))
    shape = (config.in_length,) if getattr(config, "is_vector_input", False) else (config.in_channels,
                                                                                 config.min_length() + 9)
    with torch.no_grad():
        net(torch.randn(2, *shape))
    result = summary(from_config(config), shape)
    assert leaf_rows(result.rows) == seen and len(seen) > 4


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.block}-k{c.kernel_size}-out{c.out_length}")
def test_rows_are_post_order_and_add_up(config):
    result = summary(from_config(config), (config.in_planes, 40), batch_size=3)
    rows = result.rows
    assert [r.index for r in rows] == list(range(1, len(rows) + 1))
    assert rows[-1].path == () and rows[-1].layer_type == "EncoderNet1d"
    for r in rows:  # children (longer paths under r.path) come before their container
        assert all(c.index < r.index for c in rows if c.path[:len(r.path)] == r.path and c != r)
    assert all(r.output_shape[0] == 3 for r in rows)
    expected_total = sum(math.prod(row.torch_shape) for row in port.param_table(config))
    assert sum(r.params for r in rows) == result.total_params == result.trainable_params == expected_total
    assert result.params_bytes == 4 * expected_total


def test_summary_is_abstract(xla_compiles):
    """No XLA compilation (and so no compute): only jax.eval_shape tracing."""
    with xla_compiles() as compiles:
        summary(EncoderNet1d(16, [1, 1, 1], in_planes=2, out_length=5), (2, 4096))
    assert compiles == []


def test_bad_input_shapes_raise_clear_errors():
    model = EncoderNet1d(8, [1, 1, 1], in_planes=2)
    with pytest.raises(ValueError, match=r"input_shape must be \(C, L\)"):
        summary(model, (1, 2, 64))
    with pytest.raises(ValueError, match="input has 3 channels but in_planes=2"):
        summary(model, (3, 64))
    with pytest.raises(ValueError, match="the minimum length is"):
        summary(model, (2, 5))
    assert all(r.output_shape[0] == -1 for r in summary(model, (2, 64)).rows)


FAMILY_EXAMPLES = [  # the spec's section 6: (model kwargs, input (C, L) or (in_length,), params, nlayers)
    ("DecoderNet1d", dict(channel=64, layers=[2] * 5, in_length=32, out_size=128, out_planes=3), (32,), 12_407_043, 33),
    ("DecoderNet1d", dict(channel=64, layers=[2] * 5, in_length=None, out_size=128, out_planes=3), (1024, 4),
     12_274_947, 32),
    ("AE1d", dict(channel=64, layers=[2] * 5, in_planes=3, out_planes=3), (3, 101), 13_673_155, 56),
    ("UNet1d", dict(channel=64, layers=[2] * 5, in_planes=3, out_planes=3), (3, 128), 18_906_115, 56),
    ("BlockBottleneck1d", dict(in_planes=64, out_planes=128, stride=2, normalizer="batch"), (64, 33), 33_600, None),
    ("BlockPlain1d", dict(in_planes=64, out_planes=64, stride=2, scaler="up", layer_order="old"), (64, 33), 29_184,
     None),
]


@pytest.mark.parametrize("arch, kwargs, shape, params, nlayers", FAMILY_EXAMPLES, ids=[e[0] for e in FAMILY_EXAMPLES])
def test_family_examples_match_the_spec(arch, kwargs, shape, params, nlayers):
    import flax_resnet1d as fr

    result = summary(getattr(fr, arch)(**kwargs), shape)
    assert result.total_params == result.trainable_params == params  # torchsummary counts no buffers
    assert f"Total params: {params:,}" in str(result)
    assert result.nlayers == nlayers
    assert sum(p.numel() for p in getattr(torch_ref, arch)(**kwargs).parameters()) == params
    last = result.rows[-1].output_shape
    expected = {"DecoderNet1d": (-1, 3, 128), "AE1d": (-1, 3, 101), "UNet1d": (-1, 3, 128),
                "BlockBottleneck1d": (-1, 128, 17), "BlockPlain1d": (-1, 64, 66)}[arch]
    assert last == expected

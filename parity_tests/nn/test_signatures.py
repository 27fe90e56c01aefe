"""The constructor arguments are written out three times on purpose (the config dataclasses, the
Flax module fields, the torch_ref ``__init__`` signatures: each readable on its own and known to
IDEs); these tests hold the three equal, in order and defaults, and the presets' argument orders
consistent with them."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import torch_ref
from flax_resnet1d import config as C
from flax_resnet1d import model

# Flax fields that configure the computation, not the architecture
COMPUTE_FIELDS = {"dtype", "param_dtype", "precision", "parent", "name"}
ARCHS = sorted(C.CONFIGS)


def config_arguments(arch: str) -> list[tuple[str, object]]:
    """(name, default) of the config dataclass's fields, in order; no default: inspect.Parameter.empty."""
    return [(f.name, inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(C.CONFIGS[arch])]


def test_every_architecture_has_a_flax_and_a_torch_class():
    assert sorted(model.ARCHITECTURES) == sorted(torch_ref.ARCHITECTURES) == ARCHS
    for arch in ARCHS:
        assert model.ARCHITECTURES[arch].config_class is torch_ref.ARCHITECTURES[arch].config_class is C.CONFIGS[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_flax_fields_are_the_config_fields(arch):
    fields = [(f.name, inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
              for f in dataclasses.fields(model.ARCHITECTURES[arch]) if f.name not in COMPUTE_FIELDS]
    assert fields == config_arguments(arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_torch_signature_is_the_config_fields(arch):
    parameters = list(inspect.signature(torch_ref.ARCHITECTURES[arch].__init__).parameters.values())[1:]
    assert all(p.kind == p.POSITIONAL_OR_KEYWORD for p in parameters)
    assert [(p.name, p.default) for p in parameters] == config_arguments(arch)


@pytest.mark.parametrize("arch", sorted(C.PRESET_ARGS))
def test_preset_arguments_are_the_rest_of_the_config_fields(arch):
    """A preset fixes channel, layers and block; its arguments are the other fields, each once."""
    order = C.PRESET_ARGS[arch]
    assert len(set(order)) == len(order)
    assert set(order) == {name for name, _ in config_arguments(arch)} - {"channel", "layers", "block"}


def test_preset_docstring_lists_each_order_with_its_defaults():
    doc = " ".join(C.preset_config.__doc__.split())
    defaults = {arch: dict(config_arguments(arch)) for arch in C.PRESET_ARGS}
    for prefix, arch in (("encnet", "EncoderNet1d"), ("decnet", "DecoderNet1d"), ("ae/unet", "AE1d"),
                         ("ae/unet", "UNet1d")):
        listed = ", ".join(name if defaults[arch][name] is inspect.Parameter.empty else
                           f"{name}={defaults[arch][name]}" for name in C.PRESET_ARGS[arch])
        assert f"{prefix} ({listed})" in doc


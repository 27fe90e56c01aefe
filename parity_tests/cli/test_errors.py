"""Bad arguments and bad inputs raise the same clear ValueError/TypeError in the Flax model
and in the PyTorch reference: arguments at construction, inputs before any tracing or
compilation (in Flax also under jax.jit, from the shape check, never from XLA)."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
import torch

import torch_ref
from flax_resnet1d import EncoderNet1d, parity, port
from flax_resnet1d.config import EncoderConfig
from flax_resnet1d.model import from_config

VALID = dict(channel=4, layers=[1, 1], block="plain", kernel_size=3, in_planes=2, out_length=3)

BAD_ARGUMENTS = [  # (override of VALID, exception, what the message must say)
    (dict(layers=[2]), ValueError, "layers needs at least 2 stages, got [2]"),
    (dict(layers=[]), ValueError, "layers needs at least 2 stages"),
    (dict(layers=[2, 0, 1]), ValueError, "layers[1] (blocks in stage 2) must be positive, got 0"),
    (dict(layers=[2, -1]), ValueError, "layers[1] (blocks in stage 2) must be positive, got -1"),
    (dict(block="basic"), ValueError, "unknown block 'basic'; expected one of ['bottleneck', 'plain']"),
    (dict(block=None), TypeError, "block must be a str, got NoneType None"),
    (dict(channel=0), ValueError, "channel must be positive, got 0"),
    (dict(channel=-8), ValueError, "channel must be positive, got -8"),
    (dict(in_planes=0), ValueError, "in_planes must be positive, got 0"),
    (dict(kernel_size=-3), ValueError, "kernel_size must be positive, got -3"),
    (dict(kernel_size=0), ValueError, "kernel_size must be positive, got 0"),
    (dict(channel=8.0), TypeError, "channel must be an int, got float 8.0"),
    (dict(kernel_size="3"), TypeError, "kernel_size must be an int, got str '3'"),
    (dict(in_planes=True), TypeError, "in_planes must be an int, got bool True"),
    (dict(layers=[2, 1.5]), TypeError, "layers[1] (blocks in stage 2) must be an int, got float 1.5"),
    (dict(layers="22"), TypeError, "layers must be a sequence of ints, got '22'"),
    (dict(layers=2), TypeError, "layers must be a sequence of ints, got 2"),
    (dict(out_length=2.5), TypeError, "out_length must be an int or None, got 2.5"),
]


def raised(build) -> BaseException:
    with pytest.raises((ValueError, TypeError)) as error:
        build()
    return error.value


@pytest.mark.parametrize("override, exception, says", BAD_ARGUMENTS, ids=[str(o) for o, _, _ in BAD_ARGUMENTS])
def test_bad_arguments_raise_the_same_error_at_construction(override, exception, says):
    kwargs = {**VALID, **override}
    errors = [raised(lambda: EncoderNet1d(**kwargs)), raised(lambda: torch_ref.EncoderNet1d(**kwargs))]
    for error in errors:
        assert type(error) is exception and says in str(error)
    assert str(errors[0]) == str(errors[1])


# -- bad inputs --------------------------------------------------------------------------
def test_the_compile_counter_sees_compiles(xla_compiles):
    with xla_compiles() as compiles:
        jax.jit(lambda x: x * 3.0 + 1.0)(signal(3, 5))
    assert len(compiles) == 1


class BothImplementations:
    """One config built in both frameworks, called on the same input given in MDNC layout (B, C, L)."""

    def __init__(self, **kwargs):
        self.config = EncoderConfig(**{**VALID, **kwargs})
        self.flax = from_config(self.config)
        self.torch = torch_ref.from_config(self.config).eval()
        state_dict = parity.random_state_dict(self.config, seed=0)
        self.torch.load_state_dict({k: torch.from_numpy(v).float() for k, v in state_dict.items()})
        self.variables = jax.tree.map(np.float32, port.torch_to_flax(state_dict))

    def flax_errors(self, x_bcl: np.ndarray, xla_compiles) -> list[BaseException]:
        """The error of model.init, model.apply and both under jax.jit; asserts nothing compiled."""
        x = np.swapaxes(x_bcl, 1, 2) if x_bcl.ndim == 3 else x_bcl
        key = jax.random.key(0)
        calls = [lambda: self.flax.init(key, x), lambda: jax.jit(self.flax.init)(key, x),
                 lambda: self.flax.apply(self.variables, x), lambda: jax.jit(self.flax.apply)(self.variables, x)]
        with xla_compiles() as compiles:
            errors = [raised(call) for call in calls]
        assert compiles == [], "XLA compiled something before the input was rejected"
        return errors

    def torch_error(self, x_bcl: np.ndarray) -> BaseException:
        with torch.no_grad():
            return raised(lambda: self.torch(torch.from_numpy(x_bcl).float()))

    def run(self, x_bcl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Flax output, torch output) of a valid input."""
        with torch.no_grad():
            y_torch = self.torch(torch.from_numpy(x_bcl)).numpy()
        return np.asarray(jax.jit(self.flax.apply)(self.variables, np.swapaxes(x_bcl, 1, 2))), y_torch


def signal(*shape) -> np.ndarray:
    return np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)


def assert_same_message(flax_errors, torch_error, flax_shape=None, torch_shape=None):
    """Same ValueError from every Flax call and from torch. Input-shape messages name each
    framework's own layout and shape (given here); the rest must be identical."""
    def neutral(message: str, shape) -> str:
        if shape is not None:
            message = message.replace(str(tuple(shape)), "<shape>")
        return message.replace("(B, L, C)", "<layout>").replace("(B, C, L)", "<layout>")

    assert all(type(e) is ValueError for e in [*flax_errors, torch_error])
    assert len({str(e) for e in flax_errors}) == 1
    assert neutral(str(flax_errors[0]), flax_shape) == neutral(str(torch_error), torch_shape)


BAD_SHAPES = [  # (input shape in MDNC layout, what the message must say)
    ((2, 64), "input must be rank 3"),
    ((2, 2, 64, 1), "input must be rank 3"),
    ((2, 3, 64), "input has 3 channels but in_planes=2"),
    ((2, 1, 64), "input has 1 channels but in_planes=2"),
]


@pytest.mark.parametrize("shape, says", BAD_SHAPES, ids=[str(s) for s, _ in BAD_SHAPES])
def test_wrong_rank_or_channels(shape, says, xla_compiles):
    both = BothImplementations()
    x = signal(*shape)
    flax_shape = np.swapaxes(x, 1, 2).shape if x.ndim == 3 else x.shape
    flax_errors, torch_error = both.flax_errors(x, xla_compiles), both.torch_error(x)
    assert says in str(torch_error) and says in str(flax_errors[0])
    assert_same_message(flax_errors, torch_error, flax_shape, shape)


@pytest.mark.parametrize("kwargs", [dict(layers=[1, 1, 1]), dict(layers=[2, 1], block="bottleneck", kernel_size=5)],
                         ids=["plain-k3-d3", "bottleneck-k5-d2"])
def test_input_too_short_states_the_minimum_length_which_works(kwargs, xla_compiles):
    both = BothImplementations(**kwargs)
    minimum = both.config.min_length()
    x = signal(2, 2, minimum - 1)
    flax_errors, torch_error = both.flax_errors(x, xla_compiles), both.torch_error(x)
    assert_same_message(flax_errors, torch_error)
    assert f"input length {minimum - 1} is too short" in str(torch_error)
    assert f"the minimum length is {minimum}" in str(torch_error)
    y_flax, y_torch = both.run(signal(2, 2, minimum))
    assert y_flax.shape == y_torch.shape == (2, 3) and np.all(np.isfinite(y_flax))
    assert parity.relative_error(y_flax, y_torch) < 1e-3  # length 2 at the end: ill-conditioned, loose


def test_even_kernel_residual_mismatch_is_named_and_other_lengths_work(xla_compiles):
    """kernel_size=2 (stride 2, padding 1; stem kernel 4, padding 2, which lengthens by one):
    a strided branch on an even length is one longer than its shortcut, so the block cannot
    add; input lengths that keep every block's input odd work."""
    both = BothImplementations(layers=[1, 1], block="bottleneck", kernel_size=2)
    x = signal(2, 2, 39)
    flax_errors, torch_error = both.flax_errors(x, xla_compiles), both.torch_error(x)
    assert_same_message(flax_errors, torch_error)
    assert "residual shapes cannot add in stage 1 block 1: branch length 21 vs shortcut length 20" in str(torch_error)
    assert "use an odd kernel_size or another input length" in str(torch_error)
    y_flax, y_torch = both.run(signal(2, 2, 40))
    assert parity.relative_error(y_flax, y_torch) <= parity.TOLERANCES["float32"]["output"]


# -- the rest of the family ----------------------------------------------------------------
import flax_resnet1d as fr  # noqa: E402

FAMILY_VALID = {
    "BlockPlain1d": dict(in_planes=4, out_planes=4),
    "BlockBottleneck1d": dict(in_planes=4, out_planes=6, stride=2),
    "DecoderNet1d": dict(channel=4, layers=[1, 1], out_size=16, in_length=3),
    "AE1d": dict(channel=4, layers=[1, 1, 1]),
    "UNet1d": dict(channel=4, layers=[1, 2, 1]),
}
FAMILY_BAD_ARGUMENTS = [  # (arch, override, exception, what the message must say)
    ("BlockPlain1d", dict(normalizer="layer"), ValueError,
     "unknown normalizer 'layer'; expected one of ['batch', 'inst', 'pinst', 'null']"),
    ("BlockPlain1d", dict(activator="gelu"), ValueError, "unknown activator 'gelu'; expected one of ['prelu', 'relu'"),
    ("BlockBottleneck1d", dict(layer_order="middle"), ValueError, "unknown layer_order 'middle'"),
    ("BlockBottleneck1d", dict(scaler="sideways"), ValueError, "unknown scaler 'sideways'"),
    ("BlockPlain1d", dict(stride=0), ValueError, "stride must be positive, got 0"),
    ("BlockPlain1d", dict(padding=-1), ValueError, "padding must be a non-negative int, got -1"),
    ("DecoderNet1d", dict(out_size=4), ValueError, "out_size=4 is too small for 2 stages with kernel_size=3"),
    ("DecoderNet1d", dict(layers=[1]), ValueError, "layers needs at least 2 stages"),
    ("AE1d", dict(block="basic"), ValueError, "unknown block 'basic'"),
    ("UNet1d", dict(layers=[2, 1, 1]), ValueError, "a 1 in layers[1:-1] makes that down stage export its input"),
]


@pytest.mark.parametrize("arch, override, exception, says", FAMILY_BAD_ARGUMENTS,
                         ids=[f"{a}-{o}" for a, o, _, _ in FAMILY_BAD_ARGUMENTS])
def test_family_bad_arguments_raise_the_same_error_in_both(arch, override, exception, says):
    kwargs = {**FAMILY_VALID[arch], **override}
    errors = [raised(lambda: getattr(fr, arch)(**kwargs)), raised(lambda: getattr(torch_ref, arch)(**kwargs))]
    for error in errors:
        assert type(error) is exception and says in str(error), str(error)
    assert str(errors[0]) == str(errors[1])


def test_the_unet16_preset_is_refused_with_the_reason():
    for build in (fr.unet16, torch_ref.unet16):
        with pytest.raises(ValueError, match=r"the unet16 preset"):
            build()


@pytest.mark.parametrize("override, says", [(dict(output_size=9), "output_size=9 is ignored with scaler='down'"),
                                            (dict(normalizer="null", layer_order="old"),
                                             "layer_order='old' is ignored with normalizer='null'")])
def test_what_mdnc_ignores_is_accepted_with_a_warning(override, says):
    for build in (fr.BlockPlain1d, torch_ref.BlockPlain1d):
        with pytest.warns(UserWarning, match=re.escape(says)):
            build(4, 4, **override)


def family_errors(arch: str, kwargs: dict, x_mdnc: np.ndarray, xla_compiles) -> list[BaseException]:
    """The errors of Flax init / apply (also under jit; nothing compiled) and of torch on one input."""
    flax_model, net = getattr(fr, arch)(**kwargs), getattr(torch_ref, arch)(**kwargs).eval()
    x, key = (x_mdnc if x_mdnc.ndim == 2 else np.swapaxes(x_mdnc, 1, 2)), jax.random.key(0)
    with xla_compiles() as compiles:
        errors = [raised(lambda: flax_model.init(key, x)), raised(lambda: jax.jit(flax_model.init)(key, x))]
    assert compiles == []
    with torch.no_grad():
        errors.append(raised(lambda: net(torch.from_numpy(x_mdnc))))
    return errors


BAD_FAMILY_INPUTS = [  # (arch, kwargs, input shape in MDNC layout, what the message must say)
    ("BlockPlain1d", dict(in_planes=4, out_planes=4, kernel_size=5), (2, 4, 16),
     "residual shapes cannot add in the block: branch length 12 vs shortcut length 16 (padding=1 with kernel_size=5"),
    ("BlockBottleneck1d", dict(in_planes=4, out_planes=4, stride=2), (2, 4, 1), "input length 1 is too short"),
    ("DecoderNet1d", dict(channel=4, layers=[1, 1], out_size=16, in_length=3), (2, 4),
     "input must be (B, in_length=3), got shape (2, 4)"),
    ("AE1d", dict(channel=4, layers=[1, 1, 1]), (2, 2, 32), "input has 2 channels but in_planes=1"),
    ("UNet1d", dict(channel=4, layers=[1, 2, 1]), (2, 1, 3), "input length 3 is too short"),
]


@pytest.mark.parametrize("arch, kwargs, shape, says", BAD_FAMILY_INPUTS, ids=[a for a, _, _, _ in BAD_FAMILY_INPUTS])
def test_family_bad_inputs_are_named_before_tracing(arch, kwargs, shape, says, xla_compiles):
    errors = family_errors(arch, kwargs, signal(*shape), xla_compiles)
    assert all(type(e) is ValueError and says in str(e) for e in errors), [str(e) for e in errors]

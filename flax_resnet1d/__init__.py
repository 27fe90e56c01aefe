"""flax-resnet1d: MDNC's 1D residual family (``EncoderNet1d``, ``DecoderNet1d``, ``AE1d``,
``UNet1d`` and their blocks) in JAX/Flax, with two-way PyTorch checkpoint porting.
Importing this package never imports torch, and imports JAX and Flax only when a name that
needs them is first used (PEP 562): the command line starts without them."""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# The public names, each with the submodule that defines it.
_EXPORTS = {
    **dict.fromkeys(("FAMILY_PRESETS", "PRESETS", "AEConfig", "BlockBottleneckConfig", "BlockPlainConfig",
                     "DecoderConfig", "EncoderConfig", "UNetConfig", "config_from_dict", "preset_config"), "config"),
    **dict.fromkeys(("AE1d", "BatchNorm1d", "BlockBottleneck1d", "BlockPlain1d", "DecoderNet1d", "EncoderNet1d",
                     "InstanceNorm1d", "PReLU", "UNet1d", "ae16", "ae32", "ae44", "ae65", "ae83", "decnet13",
                     "decnet33", "decnet48", "decnet63", "encnet12", "encnet32", "encnet47", "encnet62",
                     "from_config", "unet16", "unet32", "unet44", "unet65", "unet83"), "model"),
    "summary": "summary",
    **dict.fromkeys(("Predictor",), "inference.predictor"),
    **dict.fromkeys(("export_jax", "export_onnx", "write_artifact"), "inference.serving"),
    **dict.fromkeys(("ClassActivationMaps", "class_activation_maps"), "inference.cam"),
    **dict.fromkeys(("load_nnx", "to_nnx"), "inference.nnx"),
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package's ``summary`` is the function, though ``flax_resnet1d.summary`` also names its
    module: importing a submodule binds the module on its package, which is declined for this one
    name, in any import order (``importlib.import_module`` still returns the module)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "summary" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

"""flax-resnet1d: MDNC's 1D residual family (``EncoderNet1d``, ``DecoderNet1d``, ``AE1d``,
``UNet1d`` and their blocks) in JAX/Flax, with two-way PyTorch checkpoint porting.
Importing this package never imports torch."""

from .config import (FAMILY_PRESETS, PRESETS, AEConfig, BlockBottleneckConfig, BlockPlainConfig, DecoderConfig,
                     EncoderConfig, UNetConfig, config_from_dict, preset_config)
from .model import (AE1d, BatchNorm1d, BlockBottleneck1d, BlockPlain1d, DecoderNet1d, EncoderNet1d, InstanceNorm1d,
                    PReLU, UNet1d, ae16, ae32, ae44, ae65, ae83, decnet13, decnet33, decnet48, decnet63, encnet12,
                    encnet32, encnet47, encnet62, from_config, unet16, unet32, unet44, unet65, unet83)
from .summary import summary  # the function; the module stays importable as flax_resnet1d.summary via sys.modules

__version__ = "0.1.0"
__all__ = ["FAMILY_PRESETS", "PRESETS", "AEConfig", "BlockBottleneckConfig", "BlockPlainConfig", "DecoderConfig",
           "EncoderConfig", "UNetConfig", "config_from_dict", "preset_config", "AE1d", "BatchNorm1d",
           "BlockBottleneck1d", "BlockPlain1d", "DecoderNet1d", "EncoderNet1d", "InstanceNorm1d", "PReLU", "UNet1d",
           "ae16", "ae32", "ae44", "ae65", "ae83", "decnet13", "decnet33", "decnet48", "decnet63", "encnet12",
           "encnet32", "encnet47", "encnet62", "from_config", "unet16", "unet32", "unet44", "unet65", "unet83",
           "summary"]

"""flax-resnet1d: MDNC's 1D residual encoder ``EncoderNet1d`` in JAX/Flax, with two-way
PyTorch checkpoint porting. Importing this package never imports torch."""

from .config import PRESETS, EncoderConfig, preset_config
from .model import (BlockBottleneck1d, BlockPlain1d, EncoderNet1d, InstanceNorm1d, PReLU, encnet12, encnet32,
                    encnet47, encnet62, from_config)
from .summary import summary  # the function; the module stays importable as flax_resnet1d.summary via sys.modules

__version__ = "0.1.0"
__all__ = ["PRESETS", "EncoderConfig", "preset_config", "BlockBottleneck1d", "BlockPlain1d", "EncoderNet1d",
           "InstanceNorm1d", "PReLU", "encnet12", "encnet32", "encnet47", "encnet62", "from_config", "summary"]

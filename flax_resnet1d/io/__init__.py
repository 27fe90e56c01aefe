"""Checkpoint files of every network of the family. ``formats``: which format a path is (by
name or content) and the Orbax settings; ``readers``: safe loading of MDNC state dicts
(``.pt``/``.pth``, ``.safetensors``) and Flax checkpoints (``.msgpack``, Orbax), checked against
the network; ``writers``: writing them, checked first; ``atomic``: outputs written atomically,
an existing one replaced only with ``overwrite`` and only when this package wrote it.

The functions to call from Python are here: ``load_checkpoint``, ``load_state_dict``,
``load_flax``, ``write_state_dict``, ``save_flax``.
"""

from .readers import load_checkpoint, load_flax, load_state_dict
from .writers import save_flax, write_state_dict

__all__ = ["load_checkpoint", "load_flax", "load_state_dict", "save_flax", "write_state_dict"]

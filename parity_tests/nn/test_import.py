"""``flax_resnet1d`` imports without torch (torch is only for the reference and .pt files).

A fresh interpreter gets a ``sys.meta_path`` finder that refuses ``torch`` (as on a machine
without it), then imports the package and every module in it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Modules that may need torch at import time (parity compares against it), and
# __main__, which runs the CLI when imported.
NOT_TORCH_FREE = {"flax_resnet1d.parity", "flax_resnet1d.__main__"}

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by test_import)")

    sys.meta_path.insert(0, NoTorch())
    try:
        import torch
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the torch blocker does not work")

    import flax_resnet1d
    skip = set(sys.argv[1:])
    names = [m.name for m in pkgutil.walk_packages(flax_resnet1d.__path__, "flax_resnet1d.") if m.name not in skip]
    for name in names:
        importlib.import_module(name)
    assert flax_resnet1d.summary.__module__ == "flax_resnet1d.summary"  # the function, exported
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torch_ref"))
    assert not leaked, leaked
    print("\\n".join(names))
    """
)


def test_package_and_its_modules_import_without_torch():
    result = subprocess.run([sys.executable, "-c", SCRIPT, *sorted(NOT_TORCH_FREE)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = set(result.stdout.split())
    assert {"flax_resnet1d.config", "flax_resnet1d.model", "flax_resnet1d.port", "flax_resnet1d.summary",
            "flax_resnet1d.cli"} <= imported

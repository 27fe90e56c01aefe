"""``flax_resnet1d`` imports without torch (torch is only for the reference and .pt files), and
starts light: the package and the command line import what a command needs, when it needs it.

A fresh interpreter gets a ``sys.meta_path`` finder that refuses ``torch`` (as on a machine
without it), then imports the package and every module in it. The start-up tests run each
case in a fresh interpreter too, as a user's command does.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

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


# Never needed to print help or a preset's summary: torch (.pt files, the reference), optax
# (training), orbax (checkpoints), matplotlib (learning curves), tensorstore (Orbax's storage).
HEAVY = ("torch", "torch_ref", "optax", "orbax", "matplotlib", "tensorstore")

IMPORTED_AFTER = textwrap.dedent(
    """
    import contextlib, io, sys

    code = sys.argv[1]
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code)
    print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
    """
)


def _imported_after(code: str) -> set[str]:
    """The top-level packages a fresh interpreter has imported once it ran ``code``."""
    result = subprocess.run([sys.executable, "-c", IMPORTED_AFTER, code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(result.stdout.split())


@pytest.mark.parametrize("code, not_imported", [
    ("import flax_resnet1d", (*HEAVY, "jax", "flax", "numpy")),
    ("from flax_resnet1d.cli import main; assert main(['--help']) == 0", (*HEAVY, "jax", "flax")),
    ("from flax_resnet1d.cli import main; assert main(['summary', '--preset', 'encnet32']) == 0", HEAVY),
], ids=["import", "--help", "summary --preset"])
def test_start_up_imports_only_what_is_needed(code, not_imported):
    imported = _imported_after(code)
    assert not imported & set(not_imported), sorted(imported & set(not_imported))


@pytest.mark.parametrize("first", [
    "import flax_resnet1d",
    "import flax_resnet1d.summary",
    "from flax_resnet1d.summary import ModelSummary",
    "import importlib; assert type(importlib.import_module('flax_resnet1d.summary')).__name__ == 'module'",
])
def test_the_package_summary_is_the_function_in_any_import_order(first):
    """``flax_resnet1d.summary`` is also a submodule, whose import binds it on the package."""
    code = f"""{first}
import flax_resnet1d as fr
assert fr.summary.__module__ == "flax_resnet1d.summary" and callable(fr.summary), fr.summary
import flax_resnet1d.summary
from flax_resnet1d import summary
assert summary is fr.summary and type(fr.summary(fr.encnet12(in_planes=1), (1, 64))).__name__ == "ModelSummary"
"""
    _imported_after(code)

"""``flax-resnet1d export``: hand a run's weights to PyTorch users as an MDNC state dict, checked
against ``torch_ref``."""

from __future__ import annotations

import argparse

import numpy as np

from ..config import EncoderConfig
from ..io import atomic, readers, writers

TORCH_CHECK_TOLERANCE = 1e-5  # max|torch - jax| / max|jax| of the float32 logits


def register(subparsers: argparse._SubParsersAction) -> None:
    x = subparsers.add_parser(
        "export", help="write a run's weights as an MDNC state dict (.pt/.safetensors)",
        description="Write RUN_DIR's newest checkpoint as a state dict that MDNC and torch_ref load with "
                    "strict=True, then (if torch is installed) check that torch_ref reproduces the JAX test "
                    f"accuracy exactly and the logits to {TORCH_CHECK_TOLERANCE:g}; exit 1 if not.")
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("dst", metavar="DST", help=".pt/.pth or .safetensors, written atomically")
    x.add_argument("--overwrite", action="store_true",
                   help="replace DST if it exists and is a state dict file (refused otherwise)")
    x.add_argument("--no-check", action="store_true", help="skip the PyTorch check")
    x.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from .. import port
    from ..training import data, loop, run_files, steps

    # everything checked before DST is written: its name, the run, and the check's data and memory
    atomic.check_output(args.dst, args.overwrite)
    config = run_files.load_config(args.run_dir)
    check = not args.no_check and _torch_installed()
    if check:
        dataset = loop.model_inputs(data.load(config.data), config.model)
        steps.check_memory(config, dataset.length, training=False)
    config, state, epoch = run_files.restore_run(args.run_dir)
    state_dict = port.flax_to_torch(state.params, config.model)
    writers.write_state_dict(args.dst, state_dict, overwrite=args.overwrite)
    print(f"wrote {args.dst}: MDNC EncoderNet1d state dict ({len(state_dict)} tensors, "
          f"{sum(a.size for a in state_dict.values()):,} parameters) from epoch {epoch} of {args.run_dir}")
    if not check:
        if not args.no_check:
            print("PyTorch check skipped: torch is not installed (pip install 'flax-resnet1d[torch]')")
        return 0
    float32 = steps.float32_state(config, state)
    jax_test = loop.evaluate_splits(config, float32, {"test": (dataset.x_test, dataset.y_test)})["test"]
    torch_logits = torch_ref_logits(readers.load_state_dict(args.dst), config.model, dataset.x_test)
    torch_accuracy = float(np.mean(np.argmax(torch_logits, axis=1) == dataset.y_test))
    error = float(np.max(np.abs(torch_logits - jax_test.logits)) / np.max(np.abs(jax_test.logits)))
    passed = torch_accuracy == jax_test.accuracy and error <= TORCH_CHECK_TOLERANCE
    print(f"torch_ref on {dataset.name} test ({len(dataset.y_test)} series): accuracy {torch_accuracy:.4f} vs JAX "
          f"{jax_test.accuracy:.4f}; logits max|torch-jax|/max|jax| = {error:.1e} (tolerance "
          f"{TORCH_CHECK_TOLERANCE:g}): {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def _torch_installed() -> bool:
    try:
        import torch_ref  # noqa: F401
    except ImportError:
        return False
    return True


def torch_ref_logits(state_dict: dict, model: EncoderConfig, x_nlc: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """float32 logits of the PyTorch reference loaded with strict=True, for (N, L, C) inputs."""
    import torch

    import torch_ref

    net = torch_ref.from_config(model).eval()
    net.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state_dict.items()}, strict=True)
    x = torch.from_numpy(np.ascontiguousarray(np.swapaxes(x_nlc, 1, 2), np.float32))
    with torch.no_grad():
        return torch.cat([net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


"""``flax-resnet1d export``: hand a run's weights to PyTorch users as an MDNC state dict, checked
against ``torch_ref``."""

from __future__ import annotations

import argparse

import numpy as np

from ..io import atomic, readers, writers

TORCH_CHECK_TOLERANCE = 1e-5  # max|torch - jax| / max|jax| of the float32 outputs


def register(subparsers: argparse._SubParsersAction) -> None:
    x = subparsers.add_parser(
        "export", help="write a run's weights as an MDNC state dict (.pt/.safetensors)",
        description="Write RUN_DIR's newest checkpoint as a state dict that MDNC and torch_ref load with "
                    "strict=True (BatchNorm's running statistics included), then (if torch is installed) check "
                    "that torch_ref reproduces the JAX test outputs to "
                    f"{TORCH_CHECK_TOLERANCE:g} (and a classifier's accuracy exactly); exit 1 if not.")
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
    state_dict = port.flax_to_torch(state.variables(), config.model)
    writers.write_state_dict(args.dst, state_dict, overwrite=args.overwrite, config=config.model)
    print(f"wrote {args.dst}: MDNC {config.model.arch} state dict ({len(state_dict)} tensors, "
          f"{sum(a.size for a in state_dict.values()):,} values) from epoch {epoch} of {args.run_dir}")
    if not check:
        if not args.no_check:
            print("PyTorch check skipped: torch is not installed (pip install 'flax-resnet1d[torch]')")
        return 0
    float32 = steps.float32_state(config, state)
    jax_test = loop.evaluate_splits(config, float32, {"test": (dataset.x_test, dataset.y_test)})["test"]
    torch_outputs = torch_ref_outputs(readers.load_state_dict(args.dst, config=config.model), config.model,
                                      dataset.x_test)
    error = float(np.max(np.abs(torch_outputs - jax_test.outputs)) / np.max(np.abs(jax_test.outputs)))
    passed = error <= TORCH_CHECK_TOLERANCE
    agreement = ""
    if config.task == "classify":
        torch_accuracy = float(np.mean(np.argmax(torch_outputs, axis=1) == dataset.y_test))
        passed = passed and torch_accuracy == jax_test.accuracy
        agreement = f"accuracy {torch_accuracy:.4f} vs JAX {jax_test.accuracy:.4f}; "
    print(f"torch_ref on {dataset.name} test ({len(dataset.y_test)} examples): {agreement}outputs "
          f"max|torch-jax|/max|jax| = {error:.1e} (tolerance {TORCH_CHECK_TOLERANCE:g}): {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def _torch_installed() -> bool:
    try:
        import torch_ref  # noqa: F401
    except ImportError:
        return False
    return True


def torch_ref_outputs(state_dict: dict, model, x_nlc: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """float32 outputs, channels-last as JAX's, of the PyTorch reference loaded with strict=True
    (eval mode), for (N, L, C) inputs or a DecoderNet1d's vectors (N, F)."""
    import torch

    import torch_ref
    from ..parity import to_flax_input, to_mdnc_output

    net = torch_ref.from_config(model).eval()
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, strict=True)
    x = torch.from_numpy(np.ascontiguousarray(to_flax_input(x_nlc), np.float32))  # the same swap both ways
    with torch.no_grad():
        out = torch.cat([net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()
    return out if out.ndim == 2 else to_mdnc_output(out)

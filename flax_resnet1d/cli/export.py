"""``flax-resnet1d export``: hand a run's weights to PyTorch users as an MDNC state dict, checked
against ``torch_ref``; or a run or checkpoint to a service as a ``.jaxexport`` or ``.onnx``
artifact of its whole prediction function, checked against ``predict``."""

from __future__ import annotations

import argparse
import time

import numpy as np

from ..errors import UsageError
from ..io import atomic, readers, writers
from ..training.data import LAYOUTS
from .predict import add_model_arguments, load_predictor

TORCH_CHECK_TOLERANCE = 1e-5  # max|torch - jax| / max|jax| of the float32 outputs
SERVING_CHECK_TOLERANCE = 1e-5  # max|artifact - predict| / max|predict|, float32


def register(subparsers: argparse._SubParsersAction) -> None:
    x = subparsers.add_parser(
        "export", help="write a run's weights as an MDNC state dict, or a run or checkpoint as a serving artifact",
        description="DST's format follows its name. .pt/.pth or .safetensors: RUN's newest checkpoint as a state "
                    "dict that MDNC and torch_ref load with strict=True (BatchNorm's running statistics included), "
                    "then (if torch is installed) checked: torch_ref must reproduce the JAX test outputs to "
                    f"{TORCH_CHECK_TOLERANCE:g} (and a classifier's accuracy exactly); exit 1 if not. .jaxexport "
                    "(jax.export, StableHLO for CPU and CUDA) or .onnx: the whole prediction function of a run or a checkpoint (weights, preprocessing, "
                    "softmax) for float32 series (N, C, L) or (N, L, C) (--layout) with any N, checked against "
                    f"predict on random series to {SERVING_CHECK_TOLERANCE:g}; a consumer needs only jax (or "
                    "onnxruntime).")
    add_model_arguments(x, several=False)
    x.add_argument("dst", metavar="DST", help=".pt/.pth, .safetensors, .jaxexport or .onnx, written atomically")
    x.add_argument("--layout", choices=LAYOUTS, help="axes of a serving artifact's input and signals (default: those "
                                                     "of the data the run trained on, else NCL)")
    x.add_argument("--length", type=int, help="a serving artifact's series length (default: the run's; a checkpoint's: "
                                              "the smallest with 6 final feature positions)")
    x.add_argument("--overwrite", action="store_true",
                   help="replace DST if it exists and is a file of DST's format (refused otherwise)")
    x.add_argument("--no-check", action="store_true", help="skip the check")
    x.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..inference import serving

    if serving.artifact_suffix(args.dst):
        return export_artifact(args)
    from ..training.run_files import is_run_directory

    if not is_run_directory(args.models):
        raise UsageError(f"{args.models}: not a run directory; a checkpoint becomes a state dict with convert "
                         f"(or a serving artifact: DST ending in {' or '.join(serving.SERVING_SUFFIXES)})")
    given = [f"--{name}" for name in ("config", "key", "normalize", "layout", "length")
             if getattr(args, name) is not None]
    if given:
        raise UsageError(f"{' '.join(given)} apply to a serving artifact (.jaxexport or .onnx), not to {args.dst}")
    return export_state_dict(args.models, args.dst, args.overwrite, args.no_check)


def export_artifact(args: argparse.Namespace) -> int:
    """A run or checkpoint as a .jaxexport or .onnx, then checked against predict."""
    from ..inference import serving

    serving.check_artifact_output(args.dst, args.overwrite)  # before any work
    if args.length is not None and args.length < 1:
        raise UsageError(f"--length must be at least 1, got {args.length}")
    start = time.perf_counter()
    predictor = load_predictor(args)
    length = serving.serving_length(predictor, args.length)
    size = serving.write_artifact(args.dst, predictor, length, args.overwrite)
    shape = ", ".join(["N", *map(str, predictor.input_shape(1, length)[1:])])
    print(f"wrote {args.dst}: {predictor.task} of float32 ({shape}) series, {size:,} bytes, in "
          f"{time.perf_counter() - start:.2f} s")
    if args.no_check:
        return 0
    x = np.random.default_rng(0).standard_normal(predictor.input_shape(3, length)).astype(np.float32)
    served = serving.run_artifact(args.dst, x)
    if served is None:
        print("check skipped: onnxruntime is not installed (pip install 'flax-resnet1d[serve]')")
        return 0
    expected = predictor.outputs(x)
    error = float(np.max(np.abs(served - expected)) / np.max(np.abs(expected)))
    passed = error <= SERVING_CHECK_TOLERANCE
    print(f"{args.dst} vs predict on 3 random series: max|a-b|/max|b| = {error:.1e} (tolerance "
          f"{SERVING_CHECK_TOLERANCE:g}): {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def export_state_dict(run_dir: str, dst: str, overwrite: bool, no_check: bool) -> int:
    from .. import port
    from ..training import data, loop, run_files, steps

    # everything checked before DST is written: its name, the run, and the check's data and memory
    atomic.check_output(dst, overwrite)
    config = run_files.load_config(run_dir)
    check = not no_check and _torch_installed()
    if check:
        dataset = loop.model_inputs(data.load(config.data), config.model)
        steps.check_memory(config, dataset.length, training=False)
    config, state, epoch = run_files.restore_run(run_dir)
    state_dict = port.flax_to_torch(state.variables(), config.model)
    writers.write_state_dict(dst, state_dict, overwrite=overwrite, config=config.model)
    print(f"wrote {dst}: MDNC {config.model.arch} state dict ({len(state_dict)} tensors, "
          f"{sum(a.size for a in state_dict.values()):,} values) from epoch {epoch} of {run_dir}")
    if not check:
        if not no_check:
            print("PyTorch check skipped: torch is not installed (pip install 'flax-resnet1d[torch]')")
        return 0
    float32 = steps.float32_state(config, state)
    jax_test = loop.evaluate_splits(config, float32, {"test": (dataset.x_test, dataset.y_test)})["test"]
    torch_outputs = torch_ref_outputs(readers.load_state_dict(dst, config=config.model), config.model,
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

"""Artifacts a service loads without this package: the whole prediction function of a
``Predictor`` (weights, preprocessing, the ensemble's mean, softmax) with a symbolic batch size,
taking float32 series in the predictor's layout at its length and giving what ``outputs`` gives.

- ``.jaxexport``: ``jax.export`` serialization (StableHLO) for CPU and CUDA; a consumer needs
  only ``jax``: ``jax.export.deserialize(blob).call(x)``.
- ``.onnx``: the same function built from ``torch_ref`` (the PyTorch reference, which the
  parity suite holds to the Flax networks) and exported by ``torch.onnx.export``; run it with
  ``onnxruntime``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..io import atomic
from .predictor import Member, Predictor, padded_length

SERVING_SUFFIXES = (".jaxexport", ".onnx")
PLATFORMS = ("cpu", "cuda")
# What --overwrite may replace, by content: neither format has a signature sniff knows (a
# flatbuffer starts with its root's offset, which may read as a msgpack map; ONNX with a field tag).
ARTIFACTS = {".jaxexport": atomic.OwnOutput("a jax.export file", contents=("unknown", "msgpack", "empty")),
             ".onnx": atomic.OwnOutput("an ONNX file", contents=("unknown", "text", "empty"))}
ONNX_OPSET = 18


def artifact_suffix(path: str | os.PathLike) -> str | None:
    """``.jaxexport`` or ``.onnx`` if ``path`` names a serving artifact, else None."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in SERVING_SUFFIXES else None


def check_artifact_output(path: str | os.PathLike, overwrite: bool) -> None:
    atomic.check_output(path, overwrite, ARTIFACTS[artifact_suffix(path)])


def serving_length(predictor: Predictor, length: int | None) -> int | None:
    """The series length the artifact takes: ``length``, else the run's, else the network's
    smallest input with a final feature length of at least ``MIN_FEATURE_LENGTH`` (None: a vector)."""
    from ..config import default_length

    member = predictor.members[0]
    if member.is_vector_input:
        return None
    if length is not None and predictor.length is not None and length != predictor.length:
        raise UsageError(f"--length {length}: {member.source} takes series of length {predictor.length}")
    length = length or predictor.length or default_length(member.config)
    predictor.channels_last(np.zeros(predictor.input_shape(1, length), np.float32))  # checks it
    return length


def export_jax(predictor: Predictor, length: int | None = None, platforms: tuple[str, ...] = PLATFORMS) -> bytes:
    """The serialized ``jax.export`` of ``predictor.function()`` for float32 ``(b, C, L)`` inputs
    (the predictor's layout) with a symbolic batch ``b``."""
    import jax
    from jax import export

    length = serving_length(predictor, length)
    shape = predictor.input_shape(1, length)
    symbolic = export.symbolic_shape(", ".join(["b", *map(str, shape[1:])]))
    exported = export.export(jax.jit(predictor.function()), platforms=platforms)(
        jax.ShapeDtypeStruct(symbolic, np.float32))
    return bytes(exported.serialize())


def write_artifact(path: str | os.PathLike, predictor: Predictor, length: int | None = None,
                   overwrite: bool = False) -> int:
    """Write ``predictor`` as ``path``'s serving format, atomically; returns its size in bytes."""
    suffix = artifact_suffix(path)
    if suffix is None:
        raise UsageError(f"{path}: not a serving artifact; expected a name ending in {' or '.join(SERVING_SUFFIXES)}")
    blob = export_jax(predictor, length) if suffix == ".jaxexport" else export_onnx(predictor, length)
    with atomic.atomic_output(Path(path), overwrite, ARTIFACTS[suffix]) as tmp:
        atomic.write_file(tmp, blob)
    return len(blob)


# -- ONNX --------------------------------------------------------------------------------------
def torch_module(predictor: Predictor):
    """``predictor.function()`` as a ``torch.nn.Module`` of ``torch_ref`` networks (float32)."""
    import torch

    from .. import port
    import torch_ref

    class Served(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.nets = torch.nn.ModuleList()
            for member in predictor.members:
                net = torch_ref.from_config(member.config).eval()
                state_dict = port.flax_to_torch(member.variables, member.config)
                net.load_state_dict({k: torch.from_numpy(np.array(v, np.float32 if v.dtype.kind == "f" else v.dtype))
                                     for k, v in state_dict.items()}, strict=True)
                self.nets.append(net)

        def forward(self, x):
            vector = predictor.members[0].is_vector_input
            ncl = x if vector or predictor.layout == "NCL" else x.transpose(1, 2)
            outputs = [_member_forward(member, net, ncl, predictor.task)
                       for member, net in zip(predictor.members, self.nets)]
            y = torch.stack(outputs).mean(dim=0)
            return y if y.dim() == 2 or predictor.layout == "NCL" else y.transpose(1, 2)

    return Served().eval()


def _member_forward(member: Member, net, x, task: str):
    """One member in torch on MDNC-layout ``x``: ``predictor.model_input``'s steps, then the network."""
    import torch

    vector = member.is_vector_input
    if vector:  # (N, F): normalized as one series of F steps, then the vector again
        x = x[:, None, :]
    how = member.normalization.how
    if how == "series":
        centered = x - x.mean(dim=2, keepdim=True)
        std = centered.square().mean(dim=2, keepdim=True).sqrt()
        x = centered / torch.where(std > 0, std, torch.ones_like(std))
    elif how == "channel":
        mean = torch.tensor(np.asarray(member.normalization.mean, np.float32))[:, None]
        std = torch.tensor(np.asarray(member.normalization.std, np.float32))[:, None]
        x = (x - mean) / std
    if vector:
        x = x[:, 0, :]
    else:
        pad = padded_length(member, x.shape[2]) - x.shape[2]
        if pad > 0:
            x = torch.nn.functional.pad(x, (0, pad))
    y = net(x)
    if task == "classification":
        return torch.softmax(y, dim=-1)
    if member.units is None:
        return y
    mean, std = (torch.tensor(np.asarray(v, np.float32)) for v in member.units)
    return y * std + mean if y.dim() == 2 else y * std[:, None] + mean[:, None]  # MDNC's (N, C, L) signals


def export_onnx(predictor: Predictor, length: int | None = None) -> bytes:
    """The ONNX model (dynamic batch) of ``predictor.function()``, from ``torch.onnx.export``."""
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
        import torch
    except ImportError:
        raise UsageError("writing .onnx needs torch and onnxscript: pip install 'flax-resnet1d[serve]'") from None
    import logging
    import warnings

    length = serving_length(predictor, length)
    module = torch_module(predictor)
    example = torch.from_numpy(np.zeros(predictor.input_shape(2, length), np.float32))
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # notes on the exporter's own internals (e.g. torchvision absent)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=["x"], output_names=["y"],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=ONNX_OPSET,
                                        verbose=False, report=False)
    finally:
        exporter_log.setLevel(level)
    return program.model_proto.SerializeToString()


def run_artifact(path: str | os.PathLike, x: np.ndarray) -> np.ndarray | None:
    """A written artifact's outputs on float32 ``x``, as a consumer computes them (None: a .onnx
    without onnxruntime installed)."""
    blob = Path(path).read_bytes()
    if artifact_suffix(path) == ".jaxexport":
        from jax import export

        return np.asarray(export.deserialize(bytearray(blob)).call(x))
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

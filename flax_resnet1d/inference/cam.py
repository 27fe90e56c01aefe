"""Class activation maps of ``EncoderNet1d`` classifiers (Zhou et al. 2016, as Ismail Fawaz et al.
2019 draw them for time series): the last feature map ``F`` (``(L', C')``, before the average
pool) weighted by the chosen class's ``fc`` column, ``cam_k(t) = sum_c F(t, c) W(c, k)``. As the
pool and ``fc`` are linear, the map's mean over the feature positions plus the class's bias is
the class's logit, the identity the tests check. Each map is given at the feature map's own
resolution and linearly interpolated (first and last positions kept) to the length of the input.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..errors import UsageError
from ..io import atomic
from ..training.data import resampled
from .predictor import Member, Predictor, model_input, padded_length

MAX_PLOTTED = 6  # series drawn in the picture
PLOT_OUTPUT = atomic.OwnOutput("a PNG image", contents=("png", "empty"))  # what explain's --overwrite replaces


@dataclasses.dataclass(frozen=True)
class ClassActivationMaps:
    maps: np.ndarray  # (N, L') at the feature map's resolution
    upsampled: np.ndarray  # (N, L) at the input's length
    classes: np.ndarray  # (N,) the class index each map is of
    logits: np.ndarray  # (N, K)

    def as_arrays(self, class_names) -> dict[str, np.ndarray]:
        """The arrays ``explain`` writes (``class_names``: the names of the classes, in order)."""
        return {"cam": self.upsampled, "cam_features": self.maps, "class_index": self.classes,
                "label": np.asarray(class_names)[self.classes], "logits": self.logits}


def member_maps(member: Member, variables: dict, x, class_index=None):
    """(maps ``(N, L')``, logits ``(N, K)``, class indices) of one EncoderNet1d classifier on
    channels-last ``x``, in the dtype of ``x`` and ``variables``; ``class_index`` None: each
    series' predicted class, else an int or an ``(N,)`` array of them."""
    import jax.numpy as jnp

    from ..model import from_config

    params = variables["params"]
    features_net = from_config(dataclasses.replace(member.config, out_length=None))
    features = features_net.apply({"params": {k: v for k, v in params.items() if k != "fc"}}, model_input(member, x))
    logits = from_config(member.config).apply(variables, model_input(member, x))
    index = jnp.argmax(logits, axis=1) if class_index is None else jnp.broadcast_to(class_index, (len(x),))
    weights = jnp.asarray(params["fc"]["kernel"])[:, index].T  # (N, C')
    return jnp.einsum("nlc,nc->nl", features, weights), logits, index


def class_index_of(predictor: Predictor, chosen: str | int | None) -> int | None:
    """A class given by name (``classes``) or index, as an index; None stays None."""
    if chosen is None:
        return None
    names = predictor.classes
    if names is not None and str(chosen) in names:
        return names.index(str(chosen))
    try:
        index = int(chosen)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < predictor.num_classes:
        listed = ", ".join(names) if names is not None else f"0..{predictor.num_classes - 1}"
        raise UsageError(f"--class {chosen}: not a class of the model (classes: {listed})")
    return index


def class_activation_maps(predictor: Predictor, x, chosen: str | int | None = None) -> ClassActivationMaps:
    """The maps of ``predictor`` (one EncoderNet1d classifier) on ``x`` (as ``predict`` takes it)
    for class ``chosen`` (a name or index; None: each series' predicted class)."""
    import jax

    if len(predictor.members) != 1 or predictor.task != "classification":
        raise UsageError("class activation maps need one EncoderNet1d classifier, not "
                         + (f"an ensemble of {len(predictor.members)}" if len(predictor.members) > 1
                            else f"a {predictor.members[0].config.arch} predicting a {predictor.task}"))
    member = predictor.members[0]
    x = predictor.channels_last(x)
    index = class_index_of(predictor, chosen)
    variables = jax.tree.map(lambda a: np.asarray(a, np.float32) if np.asarray(a).dtype.kind == "f" else a,
                             member.variables)
    maps, logits, indices = jax.jit(lambda v, x: member_maps(member, v, x, index))(variables, x)
    maps = np.asarray(maps)
    padded = padded_length(member, x.shape[1])
    upsampled = np.stack([resampled(m[:, None], padded)[:x.shape[1], 0] for m in maps])
    return ClassActivationMaps(maps, upsampled, np.asarray(indices), np.asarray(logits))


def plot_maps(path: str | os.PathLike, x: np.ndarray, cams: ClassActivationMaps, class_names, title: str) -> None:
    """The first ``MAX_PLOTTED`` series (channels-last ``x``), each line coloured by its map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    count = min(MAX_PLOTTED, len(x))
    fig, axes = plt.subplots(count, 1, figsize=(8, 1.8 * count + 0.6), squeeze=False, sharex=True)
    low, high = float(cams.upsampled[:count].min()), float(cams.upsampled[:count].max())
    norm = plt.Normalize(low, high if high > low else low + 1)
    for i, ax in enumerate(axes[:, 0]):
        t = np.arange(x.shape[1])
        for channel in x[i].T:
            points = np.stack([t, channel], axis=1)
            segments = np.stack([points[:-1], points[1:]], axis=1)
            lines = LineCollection(segments, cmap="jet", norm=norm, linewidths=2)
            lines.set_array((cams.upsampled[i][:-1] + cams.upsampled[i][1:]) / 2)
            ax.add_collection(lines)
        ax.autoscale()
        ax.set_ylabel(f"series {i}")
        ax.set_title(f"class {class_names[cams.classes[i]]}", fontsize=9, loc="right")
    axes[-1, 0].set_xlabel("time step")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="jet"), ax=axes[:, 0], label="class activation")
    fig.suptitle(title)
    atomic.save_figure(fig, path, dpi=100)

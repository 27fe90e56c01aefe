"""``flax-resnet1d explain``: class activation maps of a classifier on new series."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..training import data
from .predict import INPUT_HELP, LAYOUT_HELP, add_model_arguments, load_predictor, read_series


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain", help="class activation maps of an EncoderNet1d classifier",
        description="Class activation maps (Zhou et al. 2016) of MODEL on the series of --input: the last feature "
                    "map weighted by the class's fc row, for the predicted class or --class. Writes --out (.npz: "
                    "cam (N, L) at the input's length, cam_features (N, L') at the feature map's, class_index, label, "
                    "logits) and a picture of the first series coloured by their maps (--plot, default the same "
                    "name with .png).")
    add_model_arguments(p, several=False)
    p.add_argument("--input", required=True, metavar="X", help=INPUT_HELP)
    p.add_argument("--out", required=True, metavar="CAM.npz", help=".npz, written atomically")
    p.add_argument("--plot", metavar="PNG", help="the picture (default: --out with .png)")
    p.add_argument("--class", dest="chosen", metavar="C", help="a class name (or index); default: the predicted one")
    p.add_argument("--layout", choices=data.LAYOUTS, help=LAYOUT_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace --out and --plot if this command wrote them")
    p.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..inference import cam, results
    from ..io import atomic

    plot = Path(args.plot) if args.plot else Path(args.out).with_suffix(".png")
    results.output_suffix(args.out, (".npz",))
    if plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: expected a .png name")
    atomic.check_output(args.out, args.overwrite, results.OUTPUTS[".npz"])
    atomic.check_output(plot, args.overwrite, cam.PLOT_OUTPUT)
    predictor = load_predictor(args)
    x = read_series(args.input, predictor)
    maps = cam.class_activation_maps(predictor, x, args.chosen)
    series = predictor.channels_last(x, args.input)
    names = predictor.classes or tuple(str(i) for i in range(predictor.num_classes))
    results.write_npz(args.out, maps.as_arrays(names), args.overwrite)
    cam.plot_maps(plot, series, maps, names, f"class activation maps: {Path(args.models).name} on "
                                            f"{Path(args.input).name}")
    print(f"wrote {args.out} and {plot}: class activation maps of {len(series)} series")
    return 0

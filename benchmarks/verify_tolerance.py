"""The measurement behind ``flax-resnet1d verify``'s scaled float32 bounds (parity.REFERENCE_ERROR_FACTOR).

For each case, per quantity (output, input gradient, all parameter gradients, worst single
parameter): [d, e, ef] = [|flax32 - torch32|, |torch32 - torch64|, |flax32 - torch64|], each
as max|a-b|/max|b|. Cases: the EncoderNet1d parity grid (random non-initial weights, seeds 0 and 1, B=2) and
freshly initialised presets (torch_ref's init, seeds 0 and 1, B=1 and 2), at verify's default
length. One JSON line per case on stdout; committed run: results/verify_tolerance.jsonl.

    python benchmarks/verify_tolerance.py grid
    python benchmarks/verify_tolerance.py encnet12,encnet32,encnet62
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

import torch_ref
from flax_resnet1d import parity
from flax_resnet1d.config import default_length, preset_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "parity_tests"))  # not a package
from grids import ENCODER_GRID  # noqa: E402


def case(label, cfg, sd, B, seed):
    L = default_length(cfg)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, cfg.in_planes, L))
    out_shape = (B, cfg.out_length) if cfg.out_length is not None else (B, cfg.out_channels, cfg.feature_length(L))
    ct = rng.normal(size=out_shape)
    r32 = parity.torch_outputs(sd, cfg, x, ct, "float32"); r64 = parity.torch_outputs(sd, cfg, x, ct, "float64")
    f32 = parity.flax_outputs(sd, cfg, x, ct, "float32")
    res = {}
    for q, get in (("output", lambda o: o.y), ("grad input", lambda o: o.grad_x),
                   ("grad params", lambda o: np.concatenate([np.ravel(o.grads[k]) for k in r64.grads]))):
        d, e, ef = (parity.relative_error(get(f32), get(r32)), parity.relative_error(get(r32), get(r64)),
                    parity.relative_error(get(f32), get(r64)))
        res[q] = (d, e, ef)
    flat = np.concatenate([np.ravel(r64.grads[k]) for k in r64.grads])
    noise = 1e4 * np.finfo("float32").eps * np.max(np.abs(flat))
    worst = (0, 0, 0, "")
    for k in r64.grads:
        if np.max(np.abs(r32.grads[k])) <= noise: continue
        d, e = parity.relative_error(f32.grads[k], r32.grads[k]), parity.relative_error(r32.grads[k], r64.grads[k])
        ef = parity.relative_error(f32.grads[k], r64.grads[k])
        if d / max(e, 1e-4 / 3) > worst[0] / max(worst[1], 1e-4 / 3) or not worst[3]:
            worst = (d, e, ef, k)
    res["grad worst param"] = worst[:3]
    print(json.dumps({"case": label, "L": L, "B": B, "seed": seed,
                      **{q: [float(f"{v:.3g}") for v in r] for q, r in res.items()}}), flush=True)

which = sys.argv[1]
if which == "grid":
    for c in ENCODER_GRID.cases:
        for seed in (0, 1):
            case(c.id, c.config, parity.random_state_dict(c.config, seed), 2, seed)
else:
    for name in which.split(","):
        cfg = preset_config(name)
        for seed in (0, 1):
            torch.manual_seed(seed)
            sd = {k: v.numpy().astype(np.float64) for k, v in torch_ref.from_config(cfg).state_dict().items()}
            for B in (1, 2):
                case(f"{name} fresh", cfg, sd, B, seed)

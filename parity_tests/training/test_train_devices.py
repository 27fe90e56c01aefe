"""Data-parallel training over 8 (simulated CPU) devices matches 1 device to float32 rounding.

Runs in a subprocess: the device count is fixed when JAX starts. Both runs go through the
same ``loop.fit`` code path, differing only in the mesh; the gradient all-reduce sums the
per-device partial sums in another order, hence rounding-level differences. Parameters with
an exactly-zero gradient (``train_helpers.dead_shortcut_biases``) take Adam steps driven by
rounding noise, so they are compared through the logits (they do not change them) only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PARAM_TOLERANCE = 1e-5  # max|a-b|/max|b| per parameter tensor after 3 epochs (9 Adam steps)
LOSS_TOLERANCE = 1e-5  # epoch losses, and the test-set logits of the final weights

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from flax.traverse_util import flatten_dict
    from train_helpers import dead_shortcut_biases, synthetic_dataset, tiny_config
    from flax_resnet1d import errors
    from flax_resnet1d.training import batching, loop, steps
    from flax_resnet1d.parity import relative_error

    assert jax.device_count() == 8, jax.devices()
    dataset = synthetic_dataset()
    config = tiny_config(dataset, epochs=3)
    one_mesh, eight_mesh = steps.data_parallel_mesh(jax.devices()[:1]), steps.data_parallel_mesh()
    one = loop.fit(config, dataset, sys.argv[1] + "/one", mesh=one_mesh, progress=False)
    eight = loop.fit(config, dataset, sys.argv[1] + "/eight", mesh=eight_mesh, progress=False)

    leaf = jax.tree.leaves(eight.state.params)[0]
    batch = next(batching.batches(dataset.x_train, dataset.y_train, np.arange(16), 16))
    sharded = batching.shard_batch(batch, eight_mesh)["x"]
    try:
        steps.check_batch_size(12, eight_mesh)
        batch_error = None
    except errors.TrainingError as e:
        batch_error = str(e)
    a, b = flatten_dict(jax.device_get(eight.state.params)), flatten_dict(jax.device_get(one.state.params))
    dead = dead_shortcut_biases(config.model)
    errors = [relative_error(a[path], b[path]) for path in b if path not in dead]
    test = {"test": (dataset.x_test, dataset.y_test)}
    logits = [loop.evaluate_splits(config, r.state, test, one_mesh)["test"].logits for r in (eight, one)]
    print(json.dumps({
        "param_rel_err": max(errors), "compared": len(errors), "dead": len(dead),
        "logits_rel_err": relative_error(*logits),
        "params_moved": relative_error(jax.tree.leaves(b)[0], jax.tree.leaves(jax.device_get(
            steps.create_state(config, dataset.length, 3).params))[0]),
        "loss_rel_err": max(abs(x[k] - y[k]) / abs(y[k]) for x, y in zip(eight.history, one.history)
                            for k in ("train_loss", "test_loss")),
        "accuracies": [[x["test_accuracy"], y["test_accuracy"]] for x, y in zip(eight.history, one.history)],
        "param_devices": len(leaf.sharding.device_set), "param_replicated": leaf.sharding.is_fully_replicated,
        "batch_spec": str(sharded.sharding.spec), "batch_shard_rows": sorted({s.data.shape[0] for s in
                                                                         sharded.addressable_shards}),
        "batch_shards": len(sharded.addressable_shards), "batch_error": batch_error,
    }))
""")


def on_eight_devices(script: str, tmp_path) -> dict:
    """The JSON last line of ``script`` run in a process with 8 simulated CPU devices."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_eight_devices_match_one_device(tmp_path):
    result = on_eight_devices(SCRIPT, tmp_path)
    print(f"8 vs 1 devices after 3 epochs: params max rel err {result['param_rel_err']:.2e}, logits "
          f"{result['logits_rel_err']:.2e}, losses {result['loss_rel_err']:.2e}, test accuracies {result['accuracies']}")
    assert result["param_devices"] == 8 and result["param_replicated"]
    assert result["batch_spec"] == "P('batch',)" and result["batch_shards"] == 8
    assert result["batch_shard_rows"] == [2]  # 16 rows over 8 devices
    assert result["batch_error"] is not None and "multiple of the 8 devices" in result["batch_error"]
    assert result["params_moved"] > 1e-3  # training happened: the comparison is not of initial weights
    assert result["dead"] == 1 and result["compared"] > 10
    assert result["param_rel_err"] <= PARAM_TOLERANCE
    assert result["logits_rel_err"] <= LOSS_TOLERANCE
    assert result["loss_rel_err"] <= LOSS_TOLERANCE



TASKS_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import jax, numpy as np
    from train_helpers import synthetic_dataset
    from flax_resnet1d.config import AEConfig, BlockPlainConfig, EncoderConfig
    from flax_resnet1d.training import data, loop, run_config, steps

    assert jax.device_count() == 8, jax.devices()
    base = synthetic_dataset()
    power = lambda x: np.stack([np.mean(x ** 2, axis=(1, 2)), np.mean(x[:, :, 0], axis=1)], axis=1)
    regress = dataclasses.replace(base, y_train=power(base.x_train), y_test=power(base.x_test), task="regress")
    signal = dataclasses.replace(base, y_train=base.x_train, y_test=base.x_test, task="signal")
    runs = {"regress": (EncoderConfig(4, (1, 1), "plain", 3, 2, 2), regress, {}),
            "signal": (AEConfig(4, (1, 1), "plain", 3, 2, 2), signal, {"noise": 0.3, "augment": "shift"}),
            "batchnorm": (BlockPlainConfig(2, 2, normalizer="batch"), signal, {"noise": 0.3})}
    errors = {}
    for name, (model, dataset, settings) in runs.items():
        config = run_config.TrainConfig(model, data.DataSpec("synthetic.npz", task=dataset.task), epochs=2,
                                        batch_size=16, lr=3e-3, loss="mse", **settings)
        histories = [loop.fit(config, dataset, f"{sys.argv[1]}/{name}-{n}", mesh=steps.data_parallel_mesh(devices),
                              progress=False).history for n, devices in ((1, jax.devices()[:1]), (8, jax.devices()))]
        errors[name] = max(abs(x[k] - y[k]) / abs(y[k]) for x, y in zip(*histories) for k in x
                           if k.startswith(("train_", "test_")))
    print(json.dumps(errors))
""")


def test_every_task_on_eight_devices_matches_one_device(tmp_path):
    errors = on_eight_devices(TASKS_SCRIPT, tmp_path)
    print(f"8 vs 1 devices, every epoch metric, max relative difference: {errors}")
    assert set(errors) == {"regress", "signal", "batchnorm"}
    assert all(error <= LOSS_TOLERANCE for error in errors.values())

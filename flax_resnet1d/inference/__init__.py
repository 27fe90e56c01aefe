"""Using trained networks: ``predictor`` (predictions of a run, a checkpoint or an ensemble of
them, on new series), ``inputs`` (the series files it reads), ``results`` (the prediction files
it writes), ``serving`` (artifacts a service loads without this package: ``jax.export`` and
ONNX), ``cam`` (class activation maps of classifiers) and ``nnx`` (the networks as Flax NNX
modules). Nothing here is imported with the package: JAX and Flax load when a name is used."""

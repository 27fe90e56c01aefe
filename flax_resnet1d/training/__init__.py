"""Training a classifier with jit-compiled JAX: ``run_config`` (what determines a run), ``data``
and ``recipe`` (what it trains on, and how by default), ``steps`` and ``batching`` (the pure steps
and their batches), ``loop`` (``fit`` and evaluation), ``run_files`` (the run directory and its
checkpoints), ``distributed`` (several processes)."""

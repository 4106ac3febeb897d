import os

# Eight fake CPU devices for the sharding tests; everything else runs on device 0.
# Must be set before JAX initialises its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax

# Parity tests compare float32 results at 1e-4: ask XLA for full-precision matmuls.
jax.config.update("jax_default_matmul_precision", "highest")

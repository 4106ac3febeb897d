import os

# Eight fake CPU devices for the sharding tests; everything else runs on device 0.
# Tests are dominated by compiling tiny programs: XLA's backend optimisation level 0
# compiles about 3x faster (the programs run slower, which tiny models do not notice).
# Must be set before JAX initialises its backend.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax

# Parity tests compare float32 results at 1e-4: ask XLA for full-precision matmuls.
jax.config.update("jax_default_matmul_precision", "highest")

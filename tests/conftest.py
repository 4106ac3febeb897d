import os

import jax

# Parity tests compare float32 results at 1e-4: ask XLA for full-precision matmuls.
jax.config.update("jax_default_matmul_precision", "highest")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

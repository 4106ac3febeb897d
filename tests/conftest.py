import atexit
import os
import shutil
import tempfile

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

# The trainers jit their steps afresh on every run (nothing is memoised in the library), and
# many tests run the same tiny trainer: XLA's executables are kept on disk for this session
# only, so an identical program compiles once. Not shared with child processes.
_cache = tempfile.mkdtemp(prefix="spar_jax_xla_cache_")
atexit.register(shutil.rmtree, _cache, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

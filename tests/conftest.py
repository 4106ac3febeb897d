import atexit
import os
import shutil
import tempfile

from tests.xla import FAST_COMPILE

# Eight fake CPU devices for the sharding tests; everything else runs on device 0. Flags that
# compile faster (tests/xla.py). Must be set before JAX initialises its backend.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax

# Parity tests compare float32 results at 1e-4: ask XLA for full-precision matmuls.
jax.config.update("jax_default_matmul_precision", "highest")

# The trainers jit their steps afresh on every run (nothing is memoised in the library), and
# many tests run the same tiny trainer or start the same command in a child process: XLA's
# executables are kept on disk for this test session only, so an identical program compiles
# once. The first process to load this file (pytest, or the xdist controller) makes the
# folder and removes it at exit; pytest-xdist workers and the commands that tests start
# inherit it through JAX's environment variables. A size limit turns on JAX's file lock,
# which makes the folder safe for processes that read and write it at the same time.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="spar_jax_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ.update(
        JAX_COMPILATION_CACHE_DIR=_cache,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        JAX_COMPILATION_CACHE_MAX_SIZE=str(8 * 2**30),
    )
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_compilation_cache_max_size", 8 * 2**30)

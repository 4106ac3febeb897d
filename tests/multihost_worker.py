"""One process of the two-process test (tests/test_multihost.py); not a test itself.

    python tests/multihost_worker.py PORT PROCESS_ID OUT_DIR

Joins a 2-process JAX runtime on 127.0.0.1 (2 CPU devices each, gloo
collectives), runs sharded DPO steps on a (2, 2, 1) mesh over the 4 global
devices with each process feeding only its own rows, and writes the losses
from process 0 only.
"""

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax

jax.config.update("jax_default_matmul_precision", "highest")

from spar_jax import sharding  # noqa: E402


def main() -> None:
    port, process_id, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    sharding.initialize_distributed(f"127.0.0.1:{port}", 2, process_id, cpu_collectives=True)
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()

    from tests.test_sharded_training import dpo_setup, run_dpo

    mesh = sharding.make_mesh((2, 2, 1))
    losses = run_dpo(*dpo_setup(), mesh=mesh, local_rows=(process_id, 2))
    if sharding.is_main_process():
        with open(os.path.join(out_dir, "losses.json"), "w") as f:
            json.dump({"losses": losses, "devices": jax.device_count()}, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()

"""One process of the two-process test (tests/test_multihost.py); not a test itself.

    python tests/multihost_worker.py PORT PROCESS_ID OUT_DIR [TOY_DIR]

Joins a 2-process JAX runtime on 127.0.0.1 (2 CPU devices each, gloo
collectives), runs sharded DPO steps on a (2, 2, 1) mesh over the 4 global
devices with each process feeding only its own rows, and writes the losses
from process 0 only.
"""

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax

jax.config.update("jax_default_matmul_precision", "highest")

from spar_jax import sharding  # noqa: E402


def train(out_dir: str, toy_dir: str) -> None:
    """The real DPO trainer on a (2, 2, 1) mesh: each process reads its rows; one log."""
    from spar_jax import configs
    from spar_jax.training import dpo

    config = configs.load(os.path.join(os.path.dirname(__file__), "..", "configs", "dpo_demo.py"))
    for key, value in multihost_dpo_overrides(out_dir, toy_dir).items():
        config[key] = value
    config.mesh = (2, 2, 1)
    dpo.train_dpo(config, log=lambda _: None)


def multihost_dpo_overrides(out_dir: str, toy_dir: str) -> dict:
    """Config fields shared by the two-process run and its single-process reference."""
    return dict(
        out_dir=out_dir,
        toy_dir=toy_dir,
        max_steps=3,
        epochs=1,
        checkpoint_every=2,
        export=("native",),
        progress=False,
        eval_data="",
        fast_compile=True,
    )


def main() -> None:
    port, process_id, out_dir, toy_dir = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3],
        sys.argv[4],
    )
    sharding.initialize_distributed(f"127.0.0.1:{port}", 2, process_id, cpu_collectives=True)
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    train(out_dir, toy_dir)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()

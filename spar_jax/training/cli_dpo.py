"""`python -m spar_jax train-dpo`: see `spar_jax.training.cli`."""

from spar_jax.training.cli import run_command


def main(argv: list[str]) -> int:
    return run_command("dpo", argv)

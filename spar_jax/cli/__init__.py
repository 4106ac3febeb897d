"""Command-line entry points (`python -m spar_jax <command>`)."""

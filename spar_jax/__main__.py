"""`python -m spar_jax <command> [args]`; the commands are in `spar_jax.cli`."""

import sys

from spar_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())

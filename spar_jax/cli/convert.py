"""`python -m spar_jax convert`: Hugging Face checkpoint <-> native orbax checkpoint.

python -m spar_jax convert hf-to-native /ckpt/Meta-Llama-3-8B-Instruct /ckpt/llama3_8b --dtype bfloat16
python -m spar_jax convert native-to-hf /ckpt/llama3_8b /ckpt/llama3_8b_hf

A file tool for one process on one machine: it does not join a multi-host runtime (run it
once, outside the launchers).
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spar_jax convert", description=__doc__)
    parser.add_argument("direction", choices=["hf-to-native", "native-to-hf"])
    parser.add_argument("src", help="source checkpoint directory")
    parser.add_argument("dst", help="output directory")
    parser.add_argument(
        "--dtype", default=None, help="float32 | bfloat16 | float16 (default: keep)"
    )
    args = parser.parse_args(argv)

    from spar_jax import models
    from spar_jax.models import native

    if args.direction == "hf-to-native":
        cfg, params = models.load_hf(args.src, dtype=jnp.dtype(args.dtype or "float32"))
        native.save_native(cfg, params, args.dst)
    else:
        cfg, params = native.load_native(args.src)
        models.save_hf(cfg, params, args.dst, dtype=args.dtype)
    n = models.count_params(cfg)
    print(f"converted {cfg.family} model ({n:,} parameters) {args.src} -> {args.dst}")
    return 0

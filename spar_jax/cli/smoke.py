"""`python -m spar_jax smoke`: a tiny end-to-end check of the model stack on this machine.

Builds a model (a preset with random weights, or a local HF checkpoint),
runs a batched forward pass, then a prefill + token-by-token cached decode,
and checks the cached logits against the full forward pass.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spar_jax smoke", description=__doc__)
    parser.add_argument("--preset", default="tiny", help="model preset (ignored with --model)")
    parser.add_argument("--model", default=None, help="local Hugging Face checkpoint directory")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=64)
    args = parser.parse_args(argv)

    from spar_jax import models

    if args.model:
        cfg, params = models.load_hf(args.model)
    else:
        cfg = models.preset(args.preset)
        params = models.init_params(cfg, jax.random.key(0))
    print(
        f"model: {cfg.family}, {models.count_params(cfg):,} parameters, backend {jax.default_backend()}"
    )

    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (args.batch, args.length)), jnp.int32)
    mask = jnp.ones(tokens.shape, bool).at[1:, : args.length // 4].set(False)  # left padding

    forward = jax.jit(models.apply, static_argnums=0)
    logits, _ = forward(cfg, params, tokens, mask=mask)
    jax.block_until_ready(logits)
    start = time.perf_counter()
    logits, _ = forward(cfg, params, tokens, mask=mask)
    jax.block_until_ready(logits)
    seconds = time.perf_counter() - start
    print(
        f"forward: logits {tuple(logits.shape)}, {tokens.size / seconds:,.0f} tokens/s, "
        f"mean log-prob of random tokens {_mean_logprob(logits, tokens, mask):.3f} "
        f"(uniform: {-np.log(cfg.vocab_size):.3f})"
    )

    prefill = args.length // 2
    cache = models.init_cache(cfg, args.batch, args.length)
    step, cache = forward(cfg, params, tokens[:, :prefill], mask=mask[:, :prefill], cache=cache)
    pieces = [step]
    for t in range(prefill, args.length):
        step, cache = forward(
            cfg, params, tokens[:, t : t + 1], mask=mask[:, t : t + 1], cache=cache
        )
        pieces.append(step)
    cached = jnp.concatenate(pieces, axis=1)
    err = float(jnp.max(jnp.abs(jnp.where(mask[..., None], cached - logits, 0.0))))
    ok = err < 1e-3
    print(f"cached decode of {args.length - prefill} steps vs full forward: max |diff| {err:.2e}")
    print("smoke test", "passed" if ok else "FAILED")
    return 0 if ok else 1


def _mean_logprob(logits, tokens, mask) -> float:
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    m = mask[:, 1:] & mask[:, :-1]
    return float(jnp.sum(picked * m) / jnp.sum(m))

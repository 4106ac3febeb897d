"""The two compiled programs behind `generate`: prefill, then the decode loop.

`prefill` runs the model once over P distinct left-padded prompts [P, T] and
returns their last-position logits and a KV cache of P rows. `decode` copies
each cache row n times (the n samples of a prompt share its prefill), draws
the first token from the prefill logits and runs the rest of the generation
in one `lax.while_loop` on device, until every row has hit a stop token or
its token limit.

Both are `jax.jit` functions; the settings (temperature, top-p, top-k, token
limits, stop ids, rng) are arrays, so only shapes pick a program: prefill per
(batch bucket, length bucket), decode per (batch bucket, length bucket, n,
new-token bucket). `compile_count()` counts the programs traced so far.
"""

from __future__ import annotations

import collections
import functools
import logging

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from spar_jax import models
from spar_jax.models import KVCache, ModelConfig
from spar_jax.sampling.filters import sample_tokens

log = logging.getLogger(__name__)

_TRACES: collections.Counter = collections.Counter()  # program kind -> programs traced


def compile_count(kind: str | None = None) -> int:
    """Programs compiled by the sampler in this process ("prefill", "decode" or all)."""
    return _TRACES[kind] if kind else sum(_TRACES.values())


def _note_compile(kind: str, what: str) -> None:
    # Runs while jax traces (once per new shape signature), never per call.
    _TRACES[kind] += 1
    log.info("sampling: compiling %s program for %s (%d so far)", kind, what, compile_count())


@functools.partial(jax.jit, static_argnums=0, donate_argnums=4)
def prefill(
    cfg: ModelConfig, params, tokens: jax.Array, mask: jax.Array, cache: KVCache
) -> tuple[jax.Array, KVCache]:
    """Runs the model over left-padded prompts.

    Args:
      cfg: model config (static).
      params: model parameters.
      tokens: [P, T] int32 prompt ids, left-padded.
      mask: [P, T] bool, False at padding (a row may be all padding).
      cache: an empty `models.init_cache(cfg, P, T)` (donated). Passed in
        rather than made here so XLA cannot constant-fold work on its zeros.
    Returns:
      (logits [P, V] float32 at the last position, the filled KVCache of P
      rows and T slots). Only the last position is projected onto the vocabulary.
    """
    P, T = tokens.shape
    _note_compile("prefill", f"{P} prompts x {T} tokens")
    hidden, cache = models.apply(cfg, params, tokens, mask=mask, cache=cache, return_hidden=True)
    cache = _constrain(cache)
    dt = cfg.compute_dtype
    head = models.lm_head(cfg, params).astype(dt)  # [D, V]
    logits = jnp.einsum(
        "BD,DV->BV", hidden[:, -1], head, preferred_element_type=jnp.float32
    )  # [P, V]
    return logits, cache


@flax.struct.dataclass
class RowSettings:
    """Per-row sampling settings of one decode batch of B = P * n rows."""

    temperature: jax.Array  # [B] float32; 0 = greedy
    top_p: jax.Array  # [B] float32 in (0, 1]
    top_k: jax.Array  # [B] int32; 0 = off
    max_new: jax.Array  # [B] int32 token limit (stop token not counted)
    row_ids: jax.Array  # [B] int32 global row number, folded into the rng per row
    valid: jax.Array  # [B] bool; False for rows padding the batch to its bucket


@flax.struct.dataclass
class DecodeState:
    """The loop carry of `decode`."""

    cache: KVCache  # k, v [L, B, S, K, H]; mask [B, S]; index []
    logits: jax.Array  # [B, V] float32 next-token logits to draw from
    tokens: jax.Array  # [B, M] int32 kept tokens (stop excluded), 0 after
    logprobs: jax.Array  # [B, M] float32 log-prob of each kept token
    lengths: jax.Array  # [B] int32 tokens kept so far
    stopped: jax.Array  # [B] bool row ended on a stop token
    done: jax.Array  # [B] bool row needs no more tokens
    step: jax.Array  # [] int32 tokens drawn so far per row


_KV_AXES = ("layers", "batch", "cache_length", "kv_heads", "head_dim")


def _constrain(cache: KVCache) -> KVCache:
    """Shards the cache by its logical axes under `sharding.context(mesh, rules)`
    (rows on the data axes, KV heads on tensor); a no-op elsewhere."""
    return cache.replace(
        k=nn.with_logical_constraint(cache.k, _KV_AXES),
        v=nn.with_logical_constraint(cache.v, _KV_AXES),
        mask=nn.with_logical_constraint(cache.mask, ("batch", "cache_length")),
    )


def _grow(x: jax.Array, n: int, extra: int) -> jax.Array:
    """[L, P, T, ...] -> [L, P * n, T + extra, ...]: row p becomes rows p*n .. p*n+n-1."""
    x = jnp.repeat(x, n, axis=1)
    pad = [(0, 0)] * x.ndim
    pad[2] = (0, extra)
    return jnp.pad(x, pad)


def _take(state: DecodeState, keys, rows: RowSettings, stop_ids) -> tuple[DecodeState, jax.Array]:
    """Draws this step's token for every row and records it; also returns the tokens [B]."""
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, state.step)
    tok, logp = sample_tokens(step_keys, state.logits, rows.temperature, rows.top_p, rows.top_k)
    is_stop = jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)  # [B]
    keep = ~state.done & ~is_stop
    col = state.step  # == lengths for every row still running
    tokens = jax.lax.dynamic_update_slice(state.tokens, jnp.where(keep, tok, 0)[:, None], (0, col))
    logprobs = jax.lax.dynamic_update_slice(
        state.logprobs, jnp.where(keep, logp, 0.0)[:, None], (0, col)
    )
    lengths = state.lengths + keep
    stopped = state.stopped | (~state.done & is_stop)
    return state.replace(
        tokens=tokens,
        logprobs=logprobs,
        lengths=lengths,
        stopped=stopped,
        done=state.done | is_stop | (lengths >= rows.max_new),
        step=state.step + 1,
    ), jnp.where(keep, tok, 0)


@functools.partial(jax.jit, static_argnames=("cfg", "n", "max_new_bucket"))
def decode(
    cfg: ModelConfig,
    params,
    logits: jax.Array,
    cache: KVCache,
    rows: RowSettings,
    stop_ids: jax.Array,
    rng: jax.Array,
    *,
    n: int,
    max_new_bucket: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Samples up to `max_new_bucket` tokens for n copies of each prefilled prompt.

    Args:
      cfg: model config (static).
      params: model parameters.
      logits: [P, V] float32 prefill logits at each prompt's last token.
      cache: the prefill KVCache (P rows, T slots).
      rows: per-row settings for B = P * n rows, prompt-major.
      stop_ids: [Ns] int32 stop token ids, padded with -1.
      rng: a PRNG key; row r draws step s with fold_in(fold_in(rng, row_ids[r]), s).
      n: samples per prompt (static).
      max_new_bucket: M, the token buffer width (static); the loop itself
        stops at max(rows.max_new) or when every row is done.
    Returns:
      (tokens [B, M] int32, logprobs [B, M] float32, lengths [B] int32,
      stopped [B] bool); row r's output is tokens[r, :lengths[r]].
    """
    P, T = cache.mask.shape
    M = max_new_bucket
    _note_compile("decode", f"{P} prompts x {n} samples, {T} prompt + {M} new tokens")
    B = P * n
    full = _constrain(
        KVCache(
            k=_grow(cache.k, n, M),  # [L, B, T + M, K, H]
            v=_grow(cache.v, n, M),
            mask=_grow(cache.mask[None], n, M)[0],  # [B, T + M]
            index=cache.index,
        )
    )
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, rows.row_ids)  # [B]
    state = DecodeState(
        cache=full,
        logits=jnp.repeat(logits, n, axis=0),
        tokens=jnp.zeros((B, M), jnp.int32),
        logprobs=jnp.zeros((B, M), jnp.float32),
        lengths=jnp.zeros((B,), jnp.int32),
        stopped=jnp.zeros((B,), bool),
        done=~rows.valid,
        step=jnp.zeros((), jnp.int32),
    )
    limit = jnp.minimum(jnp.max(jnp.where(rows.valid, rows.max_new, 0)), M)

    def cond(s: DecodeState):
        return (s.step < limit) & ~jnp.all(s.done)

    def body(s: DecodeState):
        # Draw, then run the model on the drawn tokens for the next step's
        # logits (one forward more than needed at the very end, in exchange
        # for compiling the draw once).
        s, tok = _take(s, keys, rows, stop_ids)
        out, cache = models.apply(cfg, params, tok[:, None], cache=s.cache)  # [B, 1, V]
        return s.replace(cache=_constrain(cache), logits=out[:, 0])

    s = jax.lax.while_loop(cond, body, state)
    return s.tokens, s.logprobs, s.lengths, s.stopped

"""Log-probabilities of target tokens, from logits or straight from the final hidden states.

``sequence_logps(logits, targets, mask)`` is the reference definition. The trainers use
``sequence_logps_from_hidden(hidden, lm_head, targets, mask)``, which fuses the LM head, the
log-softmax and the target pick-up into one ``jax.custom_vjp`` (a "fused linear
cross-entropy", as in Liger-Kernel or Apple's cut-cross-entropy):

* forward: the vocabulary is scanned in chunks of ``chunk_size`` columns with a streaming
  logsumexp, so ``[B, T, V]`` float32 logits exist only when one chunk holds the whole
  vocabulary (8 x 2048 tokens over a 128k vocabulary would be 8 GiB);
* backward: written by hand as ``dlogits = (onehot(target) - softmax) * g`` per chunk, one
  elementwise pass feeding the two matmuls, where autodiff of the same forward would
  materialise the exponentials, the scatter of the target pick-up and their transposes.

With several chunks the backward recomputes each chunk's logits (one more LM-head matmul, the
price of the memory); with one chunk the logits are kept from the forward pass instead.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

# Fill value for vocabulary columns that must not count in a logsumexp; finite (unlike -inf)
# so that exp() and its gradient stay exactly 0 without inf - inf anywhere.
_NEG = float(jnp.finfo(jnp.float32).min)


def _f32(x: Any) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def token_counts(mask: jax.Array) -> jax.Array:
    """Number of scored tokens per sequence, ``[B, T] -> [B]`` float32 (the lengths losses take)."""
    return jnp.sum(_f32(mask), axis=-1)


def token_logps(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-token ``log softmax(logits)[target]`` in float32.

    Args:
      logits: ``[B, T, V]`` any float dtype.
      targets: ``[B, T]`` int, already shifted (``targets[:, t]`` is predicted by
        ``logits[:, t]``) and inside ``[0, V)``.

    Returns:
      ``[B, T]`` float32 log-probabilities.
    """
    logits = _f32(logits)  # softmax in float32: bf16 logsumexp over 128k entries is too coarse
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return target_logits - jax.nn.logsumexp(logits, axis=-1)


def _reduce_sequence(per_token: jax.Array, mask: jax.Array, average: bool) -> jax.Array:
    mask = _f32(mask)
    total = jnp.sum(jnp.where(mask != 0, per_token * mask, 0.0), axis=-1)
    if average:
        return total / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
    return total


def sequence_logps(
    logits: jax.Array, targets: jax.Array, mask: jax.Array, *, average: bool = False
) -> jax.Array:
    """``sum_t mask[t] * log p(targets[t])`` per sequence (or the mean over the masked tokens).

    Args:
      logits: ``[B, T, V]``; ``logits[:, t]`` predicts ``targets[:, t]``.
      targets: ``[B, T]`` int. Positions with ``mask == 0`` may hold anything (e.g. -100).
      mask: ``[B, T]`` bool/float, 1 on response tokens.
      average: divide by the token count ``token_counts(mask)`` (at least 1).

    Returns:
      ``[B]`` float32.
    """
    safe_targets = jnp.where(_f32(mask) != 0, targets, 0)  # -100 etc. must not index the vocab
    return _reduce_sequence(token_logps(logits, safe_targets), mask, average)


def sequence_logps_from_hidden(
    hidden: jax.Array,
    lm_head: jax.Array,
    targets: jax.Array,
    mask: jax.Array,
    *,
    chunk_size: int = 4096,
    average: bool = False,
) -> jax.Array:
    """``sequence_logps(hidden @ lm_head, targets, mask)``, fused and vocabulary-chunked.

    Args:
      hidden: ``[B, T, D]`` final hidden states (after the last norm).
      lm_head: ``[D, V]`` output projection (for tied embeddings pass ``embedding.T``).
      targets: ``[B, T]`` int, shifted as in ``sequence_logps``.
      mask: ``[B, T]``, 1 on scored tokens.
      chunk_size: vocabulary columns per step; ``V`` need not be a multiple of it. At least
        ``V`` means one chunk: plain logits, kept for the backward pass.
      average: mean over masked tokens instead of the sum.

    Returns:
      ``[B]`` float32, equal to ``sequence_logps`` on the full logits up to float rounding,
      and so are its gradients with respect to ``hidden`` and ``lm_head``.
    """
    safe_targets = jnp.where(_f32(mask) != 0, targets, 0)
    per_token = _fused_token_logps(hidden, lm_head, safe_targets, min(chunk_size, lm_head.shape[1]))
    return _reduce_sequence(per_token, mask, average)


# ---------------------------------------------------------------------------------------------
# The fused LM head + log-softmax, forward and backward
# ---------------------------------------------------------------------------------------------


def _chunk_logits(hidden, lm_head, i, chunk):
    """Chunk ``i``'s float32 logits ``[B, T, C]``, its weights ``[D, C]``, first column, mask.

    The last chunk is slid left to stay inside the vocabulary (no padded copy of lm_head); its
    columns already seen by the previous chunk are masked out (``_NEG``, zero probability).
    """
    vocab = lm_head.shape[1]
    nominal = i * chunk
    start = jnp.minimum(nominal, vocab - chunk)
    w = jax.lax.dynamic_slice_in_dim(lm_head, start, chunk, axis=1)  # [D, C]
    logits = jnp.einsum("BTD,DC->BTC", hidden, w, preferred_element_type=jnp.float32)
    column = start + jnp.arange(chunk)
    fresh = column >= nominal  # [C]
    return jnp.where(fresh, logits, _NEG), w, column, fresh


def _forward(hidden, lm_head, targets, chunk):
    """``(per-token logps [B, T], logsumexp [B, T], logits or None)``."""
    num_chunks = -(-lm_head.shape[1] // chunk)
    if num_chunks == 1:
        logits, _, _, _ = _chunk_logits(hidden, lm_head, 0, chunk)
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        return picked - lse, lse, logits

    def step(carry, i):
        running_max, running_sum, target_logit = carry  # [B, T] each
        logits, _, column, fresh = _chunk_logits(hidden, lm_head, i, chunk)
        new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1))
        running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(
            jnp.exp(logits - new_max[..., None]), axis=-1
        )
        hit = (targets[..., None] == column) & fresh  # [B, T, C], at most one True per row
        target_logit = target_logit + jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)
        return (new_max, running_sum, target_logit), None

    shape = targets.shape
    init = (jnp.full(shape, _NEG, jnp.float32), jnp.zeros(shape, jnp.float32))
    init = (*init, jnp.zeros(shape, jnp.float32))
    (running_max, running_sum, target_logit), _ = jax.lax.scan(step, init, jnp.arange(num_chunks))
    lse = running_max + jnp.log(running_sum)
    return target_logit - lse, lse, None


def _chunk_grads(hidden, w, logits, lse, targets, column, fresh, g):
    """``(d hidden [B, T, D], d w [D, C])`` of ``sum g * logp`` through one chunk."""
    hit = (targets[..., None] == column) & fresh
    # d logp / d logits = onehot(target) - softmax, times the incoming per-token gradient.
    dlogits = (jnp.where(hit, 1.0, 0.0) - jnp.exp(logits - lse[..., None])) * g[..., None]
    dlogits = dlogits.astype(w.dtype)
    f32 = jnp.float32
    d_hidden = jnp.einsum("BTC,DC->BTD", dlogits, w, preferred_element_type=f32)
    d_w = jnp.einsum("BTD,BTC->DC", hidden, dlogits, preferred_element_type=f32)
    return d_hidden, d_w


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _fused_token_logps(hidden, lm_head, targets, chunk):
    return _forward(hidden, lm_head, targets, chunk)[0]


def _fused_fwd(hidden, lm_head, targets, chunk):
    per_token, lse, logits = _forward(hidden, lm_head, targets, chunk)
    return per_token, (hidden, lm_head, targets, lse, logits)


def _fused_bwd(chunk, residuals, g):
    hidden, lm_head, targets, lse, logits = residuals
    g = _f32(g)
    vocab = lm_head.shape[1]
    if logits is not None:  # one chunk: the forward's logits, no recomputation
        column = jnp.arange(vocab)
        d_hidden, d_w = _chunk_grads(hidden, lm_head, logits, lse, targets, column, True, g)
        return d_hidden.astype(hidden.dtype), d_w.astype(lm_head.dtype), None

    def step(carry, i):
        d_hidden, d_w = carry
        logits, w, column, fresh = _chunk_logits(hidden, lm_head, i, chunk)
        dh, dw = _chunk_grads(hidden, w, logits, lse, targets, column, fresh, g)
        start = column[0]
        # Columns the slid last chunk shares with the previous one got zero gradient here
        # (masked logits have zero probability and never match a target), so adding is exact.
        old = jax.lax.dynamic_slice_in_dim(d_w, start, chunk, axis=1)
        d_w = jax.lax.dynamic_update_slice_in_dim(d_w, old + dw.astype(d_w.dtype), start, axis=1)
        return (d_hidden + dh, d_w), None

    # d_w needs no float32 accumulator: every column is written by exactly one chunk.
    init = (jnp.zeros(hidden.shape, jnp.float32), jnp.zeros(lm_head.shape, lm_head.dtype))
    num_chunks = -(-vocab // chunk)
    (d_hidden, d_w), _ = jax.lax.scan(step, init, jnp.arange(num_chunks))
    return d_hidden.astype(hidden.dtype), d_w, None


_fused_token_logps.defvjp(_fused_fwd, _fused_bwd)

"""Shared transformer primitives: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Einsum legend (used in every model file):
  B batch          T query length      S key length (cache slots)
  D model width    N query heads       K kv heads     G query heads per kv head
  H head dim       F feed-forward      V vocabulary   L layers

Every parameter carries logical axis names (`embed`, `heads`, `kv_heads`,
`head_dim`, `mlp`, `vocab`, `norm`, and `layers` for the scanned stack); the sharding
rules in the config map them to mesh axes.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spar_jax.models.config import ModelConfig

# Large negative instead of -inf, so a query with no visible key (a padding
# row) gets uniform attention instead of NaNs.
_MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


def _param(module: nn.Module, name: str, shape, axes, init, dtype):
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class RMSNorm(nn.Module):
    """Root-mean-square norm; statistics in float32 whatever the compute dtype."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [..., D] -> [..., D]
        scale = _param(
            self, "scale", (x.shape[-1],), ("norm",), nn.initializers.ones, self.cfg.weight_dtype
        )
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(
            jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps
        )
        # Cast back before scaling, as the reference implementations do.
        return x32.astype(self.cfg.compute_dtype) * scale.astype(self.cfg.compute_dtype)


def rope_inverse_frequencies(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies [R/2] for the rotary dimension R, float32.

    Computed in float32 numpy with the same operations as transformers, so
    the two agree bit for bit. `llama3` scaling (LLaMA-3.1) divides low
    frequencies by `factor` and interpolates the band between.
    """
    dim = cfg.rotary_dim
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / (np.float32(cfg.rope_theta) ** exponent)).astype(np.float32)
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq).astype(np.float32)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Rotates the first `cfg.rotary_dim` features of each head.

    Args:
      x: [B, T, N, H] queries or keys.
      positions: [B, T] integer positions.
    Returns:
      [B, T, N, H] in x's dtype. LLaMA rotates pairs (i, i + R/2) ("half"
      layout); GLM rotates adjacent pairs (2i, 2i + 1) ("interleaved").
    """
    rot = cfg.rotary_dim
    inv_freq = jnp.asarray(rope_inverse_frequencies(cfg))
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, R/2]
    cos = jnp.cos(angles)[:, :, None, :]  # [B, T, 1, R/2]
    sin = jnp.sin(angles)[:, :, None, :]
    x_rot = x[..., :rot].astype(jnp.float32)
    if cfg.rope_interleaved:
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        out = out.reshape(x_rot.shape)
    else:
        x1, x2 = jnp.split(x_rot, 2, axis=-1)
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    out = out.astype(x.dtype)
    if rot == x.shape[-1]:
        return out
    return jnp.concatenate([out, x[..., rot:]], axis=-1)


def _join_projections(x: jax.Array) -> bool:
    """Whether to run q/k/v (and gate/up) as one matmul over weights joined on the fly.

    Joining copies the weights once per call, which pays for itself when many tokens share
    it (training, prefill: one bigger matmul, one backward pass; a DPO step on the 2-core CPU
    ran about 20% faster, and on 8 fake devices the joined form moved no more data under FSDP
    and less under tensor parallelism at D=1024) but would double the weight traffic of a
    decode step, which reads each weight once for one token per row.
    """
    return x.shape[1] > 1


class Attention(nn.Module):
    """Grouped-query attention by grouped einsum; K/V are never repeated.

    `heads_major_cache` (decode with `write_at` only): the cache comes as keys [B, K, H, S]
    and values [B, K, S, H] instead of [B, S, K, H] each, so neither product with it reduces
    over the minor axis. The sampler's decode loop uses it on a CPU
    (`slots.heads_major_default`).
    """

    cfg: ModelConfig
    heads_major_cache: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,  # [B, T, D]
        positions: jax.Array,  # [B, T]
        allowed: tuple[jax.Array, jax.Array | None],  # ([B, T, T] new keys, [B, T, S] cache)
        kv: tuple[jax.Array, jax.Array] | None,  # ([B, S, K, H], [B, S, K, H]) cache
        write_at: jax.Array | None = None,  # [B] cache position of this token (T == 1)
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """Returns (output [B, T, D], this call's (k, v) [B, T, K, H] when decoding).

        With a cache, the queries attend to the cached slots and to the new
        tokens as two score blocks under one softmax; the layer never writes
        the cache (one `dynamic_update_slice` after the layer scan does), so
        a decode step does not copy the [B, S, K, H] cache per layer.

        With `write_at` (one token per row), the token's key and value are written into the
        cache first, at position write_at[b] of row b (out of range: nowhere), and the query
        attends over the cache alone (`allowed`'s cache mask covers the new position); the
        updated cache is returned. Inside a decode loop this lets XLA update the loop's cache
        in place: reading the old cache beside the write made it copy the cache twice per
        layer per step.
        """
        cfg = self.cfg
        D, N, K, H = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        init = nn.initializers.normal(0.02)
        pd = cfg.weight_dtype
        dt = cfg.compute_dtype
        w_q = _param(self, "q", (D, N, H), ("embed", "heads", "head_dim"), init, pd)
        w_k = _param(self, "k", (D, K, H), ("embed", "kv_heads", "head_dim"), init, pd)
        w_v = _param(self, "v", (D, K, H), ("embed", "kv_heads", "head_dim"), init, pd)
        w_o = _param(self, "o", (N, H, D), ("heads", "head_dim", "embed"), init, pd)

        x = x.astype(dt)
        if _join_projections(x):
            # One matmul for q, k and v: each kv head's G query heads, its key and its value
            # side by side, [D, K, G + 2, H]. Joined along the per-group axis, a sharded
            # kv-head axis stays aligned.
            G = cfg.num_groups
            w_qkv = jnp.concatenate(
                [w_q.reshape(D, K, G, H), w_k[:, :, None], w_v[:, :, None]], axis=2
            ).astype(dt)
            qkv = jnp.einsum("BTD,DKJH->BTKJH", x, w_qkv)  # [B, T, K, G + 2, H]
            q = qkv[:, :, :, :G].reshape(*x.shape[:2], N, H)  # [B, T, N, H]
            k, v = qkv[:, :, :, G], qkv[:, :, :, G + 1]  # [B, T, K, H] each
        else:
            q = jnp.einsum("BTD,DNH->BTNH", x, w_q.astype(dt))  # [B, T, N, H]
            k = jnp.einsum("BTD,DKH->BTKH", x, w_k.astype(dt))  # [B, T, K, H]
            v = jnp.einsum("BTD,DKH->BTKH", x, w_v.astype(dt))  # [B, T, K, H]
        if cfg.qkv_bias:
            zeros = nn.initializers.zeros
            q = q + _param(self, "q_bias", (N, H), ("heads", "head_dim"), zeros, pd).astype(dt)
            k = k + _param(self, "k_bias", (K, H), ("kv_heads", "head_dim"), zeros, pd).astype(dt)
            v = v + _param(self, "v_bias", (K, H), ("kv_heads", "head_dim"), zeros, pd).astype(dt)

        q = apply_rope(q, positions, cfg)
        k = apply_rope(k, positions, cfg)

        B, T = x.shape[:2]
        allowed_new, allowed_cache = allowed  # [B, T, T] or None, [B, T, S] or None
        major = self.heads_major_cache
        if major and write_at is None:
            raise ValueError("heads_major_cache is a decode layout: pass write_at (one token)")
        if write_at is not None:  # decode in place: allowed_new is not read
            q = q.reshape(B, T, K, cfg.num_groups, H)
            k_cache = _write_cache(kv[0], write_at, k[:, 0], key=True, heads_major=major)
            v_cache = _write_cache(kv[1], write_at, v[:, 0], key=False, heads_major=major)
            scores = _cache_scores(q, k_cache.astype(dt), major) * (H**-0.5)
            scores = jnp.where(
                allowed_cache[:, None, None], scores.astype(jnp.float32), _MASK_VALUE
            )
            probs = jax.nn.softmax(scores, axis=-1).astype(dt)
            out = _cache_values(probs, v_cache.astype(dt), major).reshape(B, T, N, H)
            return jnp.einsum("BTNH,NHD->BTD", out, w_o.astype(dt)), (k_cache, v_cache)
        if allowed_new is None:  # causal-only path, chosen by `transformer.apply`; no cache
            impl = "cudnn" if cfg.attention == "cudnn" else "xla"
            out = causal_attention(q, k, v, implementation=impl)
            return jnp.einsum("BTNH,NHD->BTD", out, w_o.astype(dt)), None
        q = q.reshape(B, T, K, cfg.num_groups, H)  # [B, T, K, G, H]
        scores = jnp.einsum("BTKGH,BSKH->BKGTS", q, k) * (H**-0.5)
        scores = jnp.where(allowed_new[:, None, None], scores.astype(jnp.float32), _MASK_VALUE)
        if kv is not None:
            k_cache, v_cache = kv
            old = _cache_scores(q, k_cache.astype(dt)) * (H**-0.5)
            old = jnp.where(allowed_cache[:, None, None], old.astype(jnp.float32), _MASK_VALUE)
            scores = jnp.concatenate([old, scores], axis=-1)
        probs = jax.nn.softmax(scores, axis=-1).astype(dt)
        if kv is not None:
            S = k_cache.shape[1]
            out = _cache_values(probs[..., :S], v_cache.astype(dt))
            out = out + jnp.einsum("BKGTS,BSKH->BTKGH", probs[..., S:], v)
            new_kv = (k.astype(k_cache.dtype), v.astype(v_cache.dtype))
        else:
            out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v)
            new_kv = None
        out = out.reshape(B, T, N, H)
        return jnp.einsum("BTNH,NHD->BTD", out, w_o.astype(dt)), new_kv


def _reduce_on_cpu(queries: int) -> bool:
    # A decode step (one query per row) against the cache, on a CPU. XLA's CPU backend runs
    # the batched dot of [G, H] x [H, S] as one small matmul call per (row, kv head); the
    # same products as one fused multiply-reduce are faster there (a 64-slot decode step of
    # a 4-layer model went from 15.5 to 10.7 ms). Accelerators keep the dot.
    return queries == 1 and jax.default_backend() == "cpu"


def _write_cache(
    cache: jax.Array, at: jax.Array, new: jax.Array, *, key: bool, heads_major: bool
) -> jax.Array:
    """Writes new [B, K, H] at cache position at[b] of each row b (out of range: dropped)."""
    rows, new = jnp.arange(cache.shape[0]), new.astype(cache.dtype)
    if not heads_major:  # [B, S, K, H]
        return cache.at[rows, at].set(new, mode="drop")
    if key:  # [B, K, H, S]
        return cache.at[rows, :, :, at].set(new, mode="drop")
    return cache.at[rows, :, at].set(new, mode="drop")  # [B, K, S, H]


def _cache_scores(q: jax.Array, k_cache: jax.Array, heads_major: bool = False) -> jax.Array:
    """[B, T, K, G, H] queries x cached keys [B, S, K, H] -> [B, K, G, T, S] scores.

    heads_major: keys [B, K, H, S] and T == 1, reduced over H (not the minor axis): XLA's CPU
    backend vectorises it along S, where a batched dot runs one tiny matmul per (row, head).
    """
    if heads_major:
        f32 = jnp.float32
        s = jnp.sum(q[:, 0, :, :, :, None].astype(f32) * k_cache[:, :, None].astype(f32), axis=3)
        return s[:, :, :, None].astype(q.dtype)  # [B, K, G, 1, S]
    if not _reduce_on_cpu(q.shape[1]):
        return jnp.einsum("BTKGH,BSKH->BKGTS", q, k_cache)
    f32 = jnp.float32
    s = jnp.sum(q[:, 0, None].astype(f32) * k_cache[:, :, :, None].astype(f32), axis=-1)
    return jnp.transpose(s, (0, 2, 3, 1))[:, :, :, None].astype(q.dtype)  # [B, K, G, 1, S]


def _cache_values(probs: jax.Array, v_cache: jax.Array, heads_major: bool = False) -> jax.Array:
    """[B, K, G, T, S] weights x cached values [B, S, K, H] -> [B, T, K, G, H].

    heads_major: values [B, K, S, H] and T == 1, reduced over S (vectorised along H).
    """
    if heads_major:
        f32 = jnp.float32
        p = probs[:, :, :, 0, :, None].astype(f32)  # [B, K, G, S, 1]
        out = jnp.sum(p * v_cache[:, :, None].astype(f32), axis=3)  # [B, K, G, H]
        return out[:, None].astype(probs.dtype)
    if not _reduce_on_cpu(probs.shape[3]):
        return jnp.einsum("BKGTS,BSKH->BTKGH", probs, v_cache)
    f32 = jnp.float32
    p = jnp.transpose(probs[:, :, :, 0], (0, 3, 1, 2)).astype(f32)  # [B, S, K, G]
    out = jnp.sum(p[..., None] * v_cache[:, :, :, None].astype(f32), axis=1)  # [B, K, G, H]
    return out[:, None].astype(probs.dtype)


def causal_attention(
    q: jax.Array,  # [B, T, N, H]
    k: jax.Array,  # [B, T, K, H]
    v: jax.Array,  # [B, T, K, H]
    implementation: str,
) -> jax.Array:  # [B, T, N, H]
    """Causal attention through `jax.nn.dot_product_attention` (cuDNN flash attention on GPU).

    No padding mask: with right padding every real query sees only real keys under the causal
    mask, so real positions are exact and padding positions (never targets) hold garbage. The
    score matrix is never materialised in HBM, which is what makes 2k-8k token training fit.
    """
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)


def is_right_padded(mask: jax.Array) -> jax.Array:
    """[] bool: every row of the [B, T] mask is real tokens followed by padding only."""
    return jnp.all(mask[:, :-1] >= mask[:, 1:])


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(x @ gate) * (x @ up))."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, D] -> [B, T, D]
        cfg = self.cfg
        D, F = cfg.hidden_size, cfg.intermediate_size
        init = nn.initializers.normal(0.02)
        pd, dt = cfg.weight_dtype, cfg.compute_dtype
        w_gate = _param(self, "gate", (D, F), ("embed", "mlp"), init, pd)
        w_up = _param(self, "up", (D, F), ("embed", "mlp"), init, pd)
        w_down = _param(self, "down", (F, D), ("mlp", "embed"), init, pd)
        x = x.astype(dt)
        if _join_projections(x):
            # Gate and up in one matmul, stacked on a new axis so a sharded F stays aligned.
            w_gate_up = jnp.stack([w_gate, w_up], axis=1).astype(dt)  # [D, 2, F]
            gate_up = jnp.einsum("BTD,DSF->BTSF", x, w_gate_up)
            gate, up = gate_up[:, :, 0], gate_up[:, :, 1]
        else:
            gate = jnp.einsum("BTD,DF->BTF", x, w_gate.astype(dt))
            up = jnp.einsum("BTD,DF->BTF", x, w_up.astype(dt))
        return jnp.einsum("BTF,FD->BTD", jax.nn.silu(gate) * up, w_down.astype(dt))

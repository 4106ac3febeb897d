"""The decoder stack shared by every family, and its pure-functional API.

`apply(cfg, params, tokens, ...)` is a plain function of arrays: the layers
run under one `lax.scan` over stacked parameters (so an 80-layer model
compiles one layer), optionally rematerialised, and the KV cache is an
explicit pytree passed in and returned.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from spar_jax.models.config import ModelConfig
from spar_jax.models.layers import MLP, Attention, RMSNorm, _param, is_right_padded

Params = Any  # nested dict of arrays

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


# Activation sharding names; they take effect under `sharding.context(mesh, rules)`
# and are no-ops elsewhere.
_ACT = ("batch", "length", "act_embed")


@flax.struct.dataclass
class KVCache:
    """Keys and values of every layer, written slot by slot.

    All rows share one write index: prompts are left-padded to a common
    length, so slot s holds the same step for every row and `mask` says
    which slots hold real tokens.
    """

    k: jax.Array  # [L, B, S, K, H]
    v: jax.Array  # [L, B, S, K, H]
    mask: jax.Array  # [B, S] bool: slot holds a real (non-padding) token
    index: jax.Array  # [] int32: next slot to write

    @property
    def max_length(self) -> int:
        return self.k.shape[2]

    def lengths(self) -> jax.Array:  # [B] real tokens seen per row
        return self.mask.sum(axis=-1, dtype=jnp.int32)


def init_cache(cfg: ModelConfig, batch: int, max_length: int, dtype=None) -> KVCache:
    """An empty cache for `batch` rows and `max_length` slots."""
    dtype = jnp.dtype(dtype or cfg.dtype)
    shape = (cfg.num_layers, batch, max_length, cfg.num_kv_heads, cfg.head_dim)
    return KVCache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        mask=jnp.zeros((batch, max_length), bool),
        index=jnp.zeros((), jnp.int32),
    )


def cache_bytes(cfg: ModelConfig, batch: int, max_length: int, dtype=None) -> int:
    """Bytes `init_cache(cfg, batch, max_length)` will allocate."""
    itemsize = jnp.dtype(dtype or cfg.dtype).itemsize
    kv = 2 * cfg.num_layers * batch * max_length * cfg.num_kv_heads * cfg.head_dim * itemsize
    return kv + batch * max_length + 4


class Block(nn.Module):
    """Pre-norm decoder layer (plus GLM-4-0414's post-sublayer norms)."""

    cfg: ModelConfig
    heads_major_cache: bool = False  # the cache's layout (Attention)

    @nn.compact
    def __call__(self, x, kv, positions, allowed, write_at=None):
        cfg = self.cfg
        h = RMSNorm(cfg, name="pre_attn_norm")(x)
        attn = Attention(cfg, self.heads_major_cache, name="attn")
        h, kv = attn(h, positions, allowed, kv, write_at)
        if cfg.post_norms:
            h = RMSNorm(cfg, name="post_attn_norm")(h)
        x = x + h
        h = MLP(cfg, name="mlp")(RMSNorm(cfg, name="pre_mlp_norm")(x))
        if cfg.post_norms:
            h = RMSNorm(cfg, name="post_mlp_norm")(h)
        return nn.with_logical_constraint(x + h, _ACT), kv


class Transformer(nn.Module):
    """Token embedding, L scanned blocks, final norm and LM head."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens, positions, allowed, kv, return_hidden=False):
        cfg = self.cfg
        embedding = _param(
            self,
            "embedding",
            (cfg.vocab_size, cfg.hidden_size),
            ("vocab", "embed"),
            nn.initializers.normal(0.02),
            cfg.weight_dtype,
        )
        x = jnp.take(embedding, tokens, axis=0).astype(cfg.compute_dtype)  # [B, T, D]
        x = nn.with_logical_constraint(x, _ACT)

        block = Block
        if cfg.remat_policy != "none":
            block = nn.remat(block, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=False)
        stack = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast),
            length=cfg.num_layers,
            unroll=min(cfg.scan_unroll, cfg.num_layers),
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        x, kv = stack(cfg, name="layers")(x, kv, positions, allowed)
        x = RMSNorm(cfg, name="final_norm")(x)
        if return_hidden:
            return x, kv
        if cfg.tie_embeddings:
            head = embedding.T  # [D, V]
        else:
            head = _param(
                self,
                "lm_head",
                (cfg.hidden_size, cfg.vocab_size),
                ("embed", "vocab"),
                nn.initializers.normal(0.02),
                cfg.weight_dtype,
            )
        dt = cfg.compute_dtype
        logits = jnp.einsum(
            "BTD,DV->BTV", x, head.astype(dt), preferred_element_type=jnp.float32
        )  # [B, T, V] float32
        return nn.with_logical_constraint(logits, ("batch", "length", "act_vocab")), kv


def lm_head(cfg: ModelConfig, params: Params) -> jax.Array:
    """The output projection [D, V] (the transposed embedding when tied)."""
    if cfg.tie_embeddings:
        return params["embedding"].T
    return params["lm_head"]


# How a batch's rows are padded, as a caller declares it to `apply` (None: not declared).
PADDINGS = (None, "left", "right")


def attention_impl(cfg: ModelConfig, *, cached: bool, padding: str | None = None) -> str:
    """The attention `apply` runs: "xla" (masked), or "cudnn" / "xla_causal" (causal only,
    right padding; see `ModelConfig.attention`).

    `attention="auto"` takes the fused kernel only for a batch declared right-padded
    (`padding="right"`, as the trainers' batches are): any other layout gets the masked path.

    Raises:
      ValueError: `attention="cudnn"` on a backend other than GPU.
    """
    if cached:
        return "xla"
    on_gpu = jax.default_backend() in ("gpu", "cuda", "rocm")
    if padding not in PADDINGS:
        raise ValueError(f"padding={padding!r}; use one of {PADDINGS} (None: not declared)")
    if cfg.attention == "auto":
        fused = on_gpu and cfg.dtype in ("bfloat16", "float16") and padding == "right"
        return "cudnn" if fused else "xla"
    if cfg.attention == "cudnn" and not on_gpu:
        raise ValueError(
            f"attention='cudnn' needs a GPU, but JAX's backend is {jax.default_backend()!r}; "
            "use attention='auto' or 'xla'"
        )
    return cfg.attention


def _positions_and_mask(tokens, positions, mask, cache):
    B, T = tokens.shape
    mask = jnp.ones((B, T), bool) if mask is None else mask.astype(bool)
    if positions is None:
        base = cache.lengths()[:, None] if cache is not None else 0
        # Left padding: the first real token of each row gets position 0.
        positions = base + jnp.maximum(jnp.cumsum(mask, axis=-1, dtype=jnp.int32) - 1, 0)
    return positions.astype(jnp.int32), mask


def apply(
    cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    positions: jax.Array | None = None,
    mask: jax.Array | None = None,
    cache: KVCache | None = None,
    *,
    return_hidden: bool = False,
    padding: str | None = None,
) -> tuple[jax.Array, KVCache | None]:
    """Runs the model on a batch of token ids.

    Args:
      cfg: the model config (static under jit).
      params: the parameter pytree (`init_params(...)` or `load_hf(...)`).
      tokens: [B, T] int token ids.
      positions: [B, T] positions; by default counted over `mask`, continuing
        from the tokens already in `cache`.
      mask: [B, T] bool, False at padding. Padding may be on either side, except under
        causal-only attention (`attention="cudnn"` / `"xla_causal"`, or "auto" on a GPU in
        16-bit with `padding="right"`; never with a cache), which needs right padding and
        returns NaN for the whole batch otherwise.
      cache: a `KVCache`; the tokens are written at `cache.index` and attend
        to every earlier real slot. The caller sizes the cache (writing past
        its end is not checked inside jit).
      return_hidden: return the final normed hidden states [B, T, D] instead
        of logits (for vocabulary-chunked losses).
      padding: "right" declares every row's real tokens to start at column 0, which
        lets `attention="auto"` take the fused kernel on a GPU; None (unknown) or "left"
        keep "auto" on the masked path.
    Returns:
      (logits [B, T, V] float32, the updated cache or None).
    """
    positions, mask = _positions_and_mask(tokens, positions, mask, cache)
    T = tokens.shape[1]
    impl = attention_impl(cfg, cached=cache is not None, padding=padding)
    fused = impl != "xla"  # causal only, never with a cache: no masks to build
    kv = None if cache is None else (cache.k, cache.v)
    if fused:
        cfg = cfg.replace(attention=impl)  # "auto" resolved for the layers
        allowed = (None, None)
    else:
        causal = jnp.tril(jnp.ones((T, T), bool))
        allowed_new = mask[:, None, :] & causal[None]  # [B, T, T]
        allowed = (allowed_new, None)
        if cache is not None:
            slots = jnp.arange(cache.max_length)
            old = cache.mask & (slots < cache.index)[None]  # [B, S]
            allowed = (
                allowed_new,
                jnp.broadcast_to(old[:, None, :], (old.shape[0], T, old.shape[1])),
            )

    out, new_kv = Transformer(cfg).apply(
        {"params": params}, tokens, positions, allowed, kv, return_hidden
    )
    if fused:
        # The fused kernel assumes right padding; any other layout poisons the whole output
        # with NaN (the trainers stop on it, naming the step and batch) instead of silently
        # letting real tokens attend to padding.
        out = jnp.where(is_right_padded(mask), out, jnp.nan)
    if cache is not None:
        start = (0, 0, cache.index, 0, 0)
        cache = KVCache(
            k=jax.lax.dynamic_update_slice(cache.k, new_kv[0], start),
            v=jax.lax.dynamic_update_slice(cache.v, new_kv[1], start),
            mask=jax.lax.dynamic_update_slice(cache.mask, mask, (0, cache.index)),
            index=cache.index + T,
        )
    return out, cache


def _init_boxed(cfg: ModelConfig, rng: jax.Array):
    tokens = jnp.zeros((1, 1), jnp.int32)
    positions = jnp.zeros((1, 1), jnp.int32)
    allowed = (jnp.ones((1, 1, 1), bool), None)
    return Transformer(cfg).init(rng, tokens, positions, allowed, None)["params"]


def init_params(cfg: ModelConfig, rng: jax.Array) -> Params:
    """Random parameters (normal(0.02) weights, unit norms, zero biases)."""
    return nn.meta.unbox(_init_boxed(cfg, rng))


def param_shapes(cfg: ModelConfig) -> Params:
    """`jax.ShapeDtypeStruct` of every parameter, without allocating."""
    return jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))


def logical_axes(cfg: ModelConfig) -> Params:
    """A pytree matching the params of `PartitionSpec`s of logical axis names."""
    boxed = jax.eval_shape(lambda: _init_boxed(cfg, jax.random.key(0)))
    return nn.get_partition_spec(boxed)


def count_params(cfg: ModelConfig) -> int:
    """Number of parameters, computed from shapes only."""
    return sum(x.size for x in jax.tree.leaves(param_shapes(cfg)))

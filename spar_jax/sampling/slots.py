"""The device side of the engine: a fixed set of decode slots and the two programs over them.

Each slot holds one sample in flight: its KV cache, its position, its sampling settings and
the tokens drawn so far. The cache is one `[B, S, K, H]` array per layer (a tuple, not one
stacked array), so a decode step writes each layer's new key and value in place and never
slices a layer out of a stack; the layers run unrolled over per-layer parameters
(`split_layers`). Attention reads only the first `view` slots of the cache, a length bucket
the host picks to cover the longest running slot. The decode loop carries those positions
(heads-major on a CPU, `heads_major_default`), writes each step's key and value before it
attends, and writes the view back once per call.

`extend` writes prompt tokens into slots (a prefill, or the rest of a prompt after a shared
prefix copied from another slot) and leaves their next-token logits; `decode` runs the
sampling loop on device until enough slots are free to refill, a slot outgrows the view, or
the step budget is spent. Only shapes pick a program: `extend` per (rows, tokens, copies,
view) bucket, `decode` per view bucket, and both per slot count.
"""

from __future__ import annotations

import collections
import functools
import logging
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from spar_jax.models import ModelConfig
from spar_jax.models.layers import RMSNorm
from spar_jax.models.transformer import Block, lm_head
from spar_jax.sampling.filters import sample_tokens

Layers = tuple[Any, ...]  # L per-layer parameter trees

log = logging.getLogger(__name__)
_TRACES: collections.Counter = collections.Counter()  # program kind -> programs traced


def compile_count(kind: str | None = None) -> int:
    """Programs compiled by the sampler in this process ("extend", "decode" or all)."""
    return _TRACES[kind] if kind else sum(_TRACES.values())


def _note_compile(kind: str, what: str) -> None:
    # Runs while jax traces (once per new shape signature), never per call.
    _TRACES[kind] += 1
    log.info("sampling: compiling %s program for %s (%d so far)", kind, what, compile_count())


_KV_AXES = ("batch", "cache_length", "kv_heads", "head_dim")


def split_layers(params) -> Layers:
    """The scanned layer stack [L, ...] as L per-layer trees (one copy, made once per engine)."""
    stacked = params["layers"]
    L = jax.tree.leaves(stacked)[0].shape[0]
    return tuple(jax.tree.map(lambda p, i=i: p[i], stacked) for i in range(L))


@flax.struct.dataclass
class Slots:
    """B decode slots of S cache positions each; M = S output columns."""

    k: tuple[jax.Array, ...]  # L x [B, S, K, H]
    v: tuple[jax.Array, ...]  # L x [B, S, K, H]
    lengths: jax.Array  # [B] int32 positions filled in the cache
    logits: jax.Array  # [B, V] float32 next-token logits
    temperature: jax.Array  # [B] float32; 0 = greedy
    top_p: jax.Array  # [B] float32
    top_k: jax.Array  # [B] int32; 0 = off
    max_new: jax.Array  # [B] int32 token limit (stop token not counted)
    stop_ids: jax.Array  # [B, Ns] int32, -1 = none
    keys: jax.Array  # [B, 2] uint32 raw key of the slot's sample; step s folds in s
    step: jax.Array  # [B] int32 tokens drawn so far
    tokens: jax.Array  # [B, M] int32 kept tokens (stop excluded)
    logprobs: jax.Array  # [B, M] float32 their log-probs under the untempered model
    count: jax.Array  # [B] int32 tokens kept
    stopped: jax.Array  # [B] bool ended on a stop token
    done: jax.Array  # [B] bool needs no more tokens (also true for an empty slot)


def init_slots(cfg: ModelConfig, slots: int, length: int, num_stop_ids: int) -> Slots:
    """B = `slots` empty slots of `length` cache positions, laid out by the sampling rules
    under `sharding.context` (slots over the data axes, KV heads over tensor)."""
    B, S = slots, length
    shape = (B, S, cfg.num_kv_heads, cfg.head_dim)
    dt = jnp.dtype(cfg.dtype)
    zeros = functools.partial(jnp.zeros, dtype=jnp.int32)
    state = Slots(
        k=tuple(jnp.zeros(shape, dt) for _ in range(cfg.num_layers)),
        v=tuple(jnp.zeros(shape, dt) for _ in range(cfg.num_layers)),
        lengths=zeros((B,)),
        logits=jnp.zeros((B, cfg.vocab_size), jnp.float32),
        temperature=jnp.zeros((B,), jnp.float32),
        top_p=jnp.ones((B,), jnp.float32),
        top_k=zeros((B,)),
        max_new=zeros((B,)),
        stop_ids=jnp.full((B, num_stop_ids), -1, jnp.int32),
        keys=jnp.zeros((B, 2), jnp.uint32),
        step=zeros((B,)),
        tokens=zeros((B, S)),
        logprobs=jnp.zeros((B, S), jnp.float32),
        count=zeros((B,)),
        stopped=jnp.zeros((B,), bool),
        done=jnp.ones((B,), bool),
    )
    mesh = _context_mesh()
    if mesh is None:
        return state
    rules = nn.get_logical_axis_rules()

    def put(x):
        axes = _KV_AXES if x.ndim == 4 else ("batch",) + (None,) * (x.ndim - 1)
        spec = nn.logical_to_mesh_axes(axes, rules)
        return jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))

    return jax.tree.map(put, state)


def _context_mesh() -> jax.sharding.Mesh | None:
    """The mesh of `sharding.context` (entered as `with mesh:`), or None."""
    if not jax.sharding.get_abstract_mesh().empty:
        return jax.sharding.get_mesh()
    from jax._src import mesh as mesh_lib  # where `with mesh:` records the mesh

    physical = mesh_lib.thread_resources.env.physical_mesh
    return None if physical.empty else physical


def _constrain(x: jax.Array, axes: tuple[str, ...] = _KV_AXES) -> jax.Array:
    # Slots on the data axes, KV heads on tensor, under `sharding.context`; else a no-op.
    return nn.with_logical_constraint(x, axes, mesh=_context_mesh())


def _layers(
    cfg, layers: Layers, x, positions, allowed, k_views, v_views, write_at=None, heads_major=False
):
    """Runs the unrolled blocks; returns (hidden [R, T, D], new (k, v) [R, T, K, H] per layer).

    With `write_at` (one token per row, `Attention`'s decode in place) the new keys and values
    go into the views, which come back updated instead; `heads_major` is their layout.
    """
    new = []
    block = Block(cfg, heads_major_cache=heads_major)
    for layer, kc, vc in zip(layers, k_views, v_views, strict=True):
        x, (k, v) = block.apply({"params": layer}, x, (kc, vc), positions, allowed, write_at)
        new.append((k, v))
    return x, new


def _head(cfg, top, hidden):  # [R, D] -> [R, V] float32
    x = RMSNorm(cfg).apply({"params": top["final_norm"]}, hidden)
    head = lm_head(cfg, top).astype(cfg.compute_dtype)
    return jnp.einsum("BD,DV->BV", x, head, preferred_element_type=jnp.float32)


@flax.struct.dataclass
class NewRows:
    """P prompt rows to write into slots, each row copied into up to R slots."""

    tokens: jax.Array  # [P, T] int32 right-padded tokens to append
    length: jax.Array  # [P] int32 real tokens in `tokens`
    start: jax.Array  # [P] int32 cache position of the first token (the shared prefix before it)
    source: jax.Array  # [P] int32 slot whose cache [0, start) holds the prefix
    dest: jax.Array  # [P, R] int32 slots to write, B (out of range) = none
    last: jax.Array  # [P] bool the row ends its prompt: set up sampling in `dest`
    temperature: jax.Array  # [P, R] float32
    top_p: jax.Array  # [P, R] float32
    top_k: jax.Array  # [P, R] int32
    max_new: jax.Array  # [P, R] int32
    stop_ids: jax.Array  # [P, R, Ns] int32
    keys: jax.Array  # [P, R, 2] uint32


@functools.partial(jax.jit, static_argnames=("cfg", "view"), donate_argnums=3)
def extend(cfg: ModelConfig, top, layers: Layers, state: Slots, rows: NewRows, *, view: int):
    """Appends `rows.tokens` to slots after a prefix copied from `rows.source`.

    Row p attends to the first `start[p]` cache positions of its source slot (read from
    the first `view` positions) and causally to its own
    tokens; its keys and values land in positions [start, start + T) of each `dest` slot,
    after the source prefix. Rows with `last` also leave their next-token logits and
    sampling settings in their slots, ready for `decode`. Returns the new Slots.
    """
    P, T = rows.tokens.shape
    R = rows.dest.shape[1]
    B = state.lengths.shape[0]
    _note_compile("extend", f"{P} rows x {T} tokens into {R} slots each, view {view}")
    dt = cfg.compute_dtype
    t = jnp.arange(T)
    positions = rows.start[:, None] + t[None]  # [P, T]
    real = t[None] < rows.length[:, None]  # [P, T]
    allowed_new = real[:, None, :] & (t[None, :, None] >= t[None, None, :])  # [P, T, T]
    # view >= 1 even without a prefix: the layers return new keys and values only when
    # they read a cache (a fully masked block adds exactly nothing to the softmax).
    allowed_cache = jnp.arange(view)[None, None] < rows.start[:, None, None]  # [P, 1, view]
    allowed_cache = jnp.broadcast_to(allowed_cache, (P, T, view))
    k_views = [k[rows.source, :view] for k in state.k]  # [P, view, K, H] each
    v_views = [v[rows.source, :view] for v in state.v]
    x = jnp.take(top["embedding"], rows.tokens, axis=0).astype(dt)  # [P, T, D]
    hidden, new = _layers(cfg, layers, x, positions, (allowed_new, allowed_cache), k_views, v_views)

    dest = rows.dest[:, :, None]  # [P, R, 1]
    at = positions[:, None, :]  # [P, 1, T]
    k_out, v_out = [], []
    for i, (k_new, v_new) in enumerate(new):
        k, v = state.k[i], state.v[i]
        # The prefix first (positions past `start` are overwritten or masked), then the
        # new tokens over it.
        pos = jnp.arange(view)[None, None]
        k = k.at[dest, pos].set(k_views[i][:, None], mode="drop")
        v = v.at[dest, pos].set(v_views[i][:, None], mode="drop")
        k = k.at[dest, at].set(k_new[:, None].astype(k.dtype), mode="drop")
        v = v.at[dest, at].set(v_new[:, None].astype(v.dtype), mode="drop")
        k_out.append(_constrain(k))
        v_out.append(_constrain(v))

    last_hidden = jnp.take_along_axis(hidden, (rows.length - 1)[:, None, None], axis=1)[:, 0]
    logits = _head(cfg, top, last_hidden)  # [P, V]
    # Slots of rows that do not end their prompt only take the cache and the new length.
    ready = jnp.where(rows.last[:, None], rows.dest, B)  # [P, R]

    def put(field, value):
        return field.at[ready].set(value, mode="drop")

    lengths = state.lengths.at[rows.dest].set(
        jnp.broadcast_to((rows.start + rows.length)[:, None], (P, R)), mode="drop"
    )
    return state.replace(
        k=tuple(k_out),
        v=tuple(v_out),
        lengths=lengths,
        logits=put(state.logits, jnp.broadcast_to(logits[:, None], (P, R, logits.shape[-1]))),
        temperature=put(state.temperature, rows.temperature),
        top_p=put(state.top_p, rows.top_p),
        top_k=put(state.top_k, rows.top_k),
        max_new=put(state.max_new, rows.max_new),
        stop_ids=put(state.stop_ids, rows.stop_ids),
        keys=put(state.keys, rows.keys),
        step=put(state.step, jnp.zeros((P, R), jnp.int32)),
        count=put(state.count, jnp.zeros((P, R), jnp.int32)),
        stopped=put(state.stopped, jnp.zeros((P, R), bool)),
        done=put(state.done, jnp.zeros((P, R), bool)),
    )


def _draw(state: Slots) -> tuple[Slots, jax.Array]:
    """Draws and records one token in every running slot; returns (state, tokens [B])."""
    B, M = state.tokens.shape
    keys = jax.random.wrap_key_data(state.keys)
    step_keys = jax.vmap(jax.random.fold_in)(keys, state.step)
    tok, logp = sample_tokens(step_keys, state.logits, state.temperature, state.top_p, state.top_k)
    is_stop = jnp.any(tok[:, None] == state.stop_ids, axis=-1)  # [B]
    running = ~state.done
    keep = running & ~is_stop
    col = jnp.where(keep, state.count, M)  # out of range: dropped
    rows = jnp.arange(B)
    count = state.count + keep
    return state.replace(
        tokens=state.tokens.at[rows, col].set(tok, mode="drop"),
        logprobs=state.logprobs.at[rows, col].set(logp, mode="drop"),
        count=count,
        step=state.step + running,
        stopped=state.stopped | (running & is_stop),
        done=state.done | is_stop | (count >= state.max_new),
    ), tok


def heads_major_default() -> bool:
    """Whether `decode` carries its cache view heads-major: on a CPU, where it measured faster.

    XLA's CPU backend runs the [B, S, K, H] cache's products as one tiny matmul per (row,
    head), or as multiply-reduces over the minor axis; heads-major (keys [B, K, H, S], values
    [B, K, S, H]) they reduce over a non-minor axis and vectorise along the other. A 64-slot
    step of a 4-layer width-128 model, view 192: 7.5 -> 6.3 ms. The transposes in and out cost
    one cache copy per decode call, not per step. Accelerators keep the cache's own layout
    (not measured there).
    """
    return jax.default_backend() == "cpu"


@functools.partial(jax.jit, static_argnames=("cfg", "view", "heads_major"), donate_argnums=3)
def decode(
    cfg: ModelConfig,
    top,
    layers: Layers,
    state: Slots,
    max_steps: jax.Array,
    free_target: jax.Array,
    *,
    view: int,
    heads_major: bool = False,
) -> tuple[Slots, jax.Array]:
    """Samples in every running slot until `free_target` slots are done, a running slot
    fills its `view`, every slot is done, or `max_steps` steps have run.

    Each step draws a token per running slot (slot b's step s uses
    fold_in(keys[b], s)), then runs the model on it, writing its key and value at the
    slot's next position. `heads_major` carries the view transposed inside the loop
    (`heads_major_default`); the results are the same. Returns (state, steps run []).
    """
    B, S = state.tokens.shape
    _note_compile("decode", f"{B} slots, view {view}")
    dt = cfg.compute_dtype
    window = jnp.arange(view)

    def cond(carry):
        s, n = carry
        fits = jnp.all(s.done | (s.lengths < view))
        return (n < max_steps) & ~jnp.all(s.done) & (jnp.sum(s.done) < free_target) & fits

    def body(carry):
        s, n = carry  # s holds the first `view` cache positions only
        s, tok = _draw(s)
        pos = s.lengths[:, None]  # [B, 1]
        x = jnp.take(top["embedding"], tok[:, None], axis=0).astype(dt)  # [B, 1, D]
        # The token's key and value are written at its position first, then it attends
        # over the cache up to and including that position (Attention's `write_at`).
        allowed = (None, (window[None] <= pos)[:, None])  # cache only: [B, 1, view]
        at = jnp.where(s.done, S, s.lengths)  # finished slots write nowhere (out of range)
        hidden, new = _layers(
            cfg, layers, x, pos, allowed, s.k, s.v, write_at=at, heads_major=heads_major
        )
        k_out = tuple(_constrain(k, k_axes) for k, _ in new)
        v_out = tuple(_constrain(v, v_axes) for _, v in new)
        s = s.replace(
            k=k_out, v=v_out, lengths=s.lengths + ~s.done, logits=_head(cfg, top, hidden[:, 0])
        )
        return s, n + 1

    # The loop carries the cache's first `view` positions (`cond` stops before a slot
    # outgrows them) and writes them back once: slicing the view inside the loop made XLA
    # copy it every step.
    k_order, v_order = ((0, 2, 3, 1), (0, 2, 1, 3)) if heads_major else ((0, 1, 2, 3),) * 2
    k_axes, v_axes = (tuple(_KV_AXES[i] for i in order) for order in (k_order, v_order))

    def take(full, order):
        return tuple(jnp.transpose(f[:, :view], order) for f in full)

    def put_back(full, part, order):
        inverse = tuple(order.index(i) for i in range(4))
        return tuple(
            _constrain(f.at[:, :view].set(jnp.transpose(p, inverse)))
            for f, p in zip(full, part, strict=True)
        )

    views = state.replace(k=take(state.k, k_order), v=take(state.v, v_order))
    out, steps = jax.lax.while_loop(cond, body, (views, jnp.zeros((), jnp.int32)))
    k, v = put_back(state.k, out.k, k_order), put_back(state.v, out.v, v_order)
    return out.replace(k=k, v=v), steps

"""Per-device memory planner: will this model, task and mesh fit, before anything is allocated?

    python -m spar_jax plan --preset llama3_8b --task dpo --mesh 1,-1,1 --devices 8 --device h100
    python -m spar_jax plan --config configs/dpo_demo.py --devices 1 --device-gib 16

The command lives in `spar_jax.cli.plan`; this module holds the arithmetic.

Parameters, optimizer state, gradients and the KV cache are counted exactly
from `jax.eval_shape` shapes and the sharding rules (each array's shard
shape on one device). Activations are an estimate of the peak inside one
training step (the arithmetic is in `activation_bytes` and docs/memory.md);
it is checked against XLA's own buffer assignment on the tiny config.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from spar_jax import sharding
from spar_jax.models import ModelConfig, attention_impl, logical_axes, param_shapes

GiB = 1024**3

# Memory of one JAX device (what `jax.devices()` lists), in GiB.
DEVICE_GIB = {
    "h100": 80,
    "h200": 141,
    "a100-40gb": 40,
    "a100-80gb": 80,
    "v4": 32,  # one v4 chip (2 TensorCores as one device)
    "v5e": 16,
    "v5p": 95,
}


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device, by what holds them."""

    task: str
    mesh: tuple[int, int, int]
    params: int
    optimizer: int
    gradients: int
    reference: int
    activations: int
    kv_cache: int
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return (
            self.params
            + self.optimizer
            + self.gradients
            + self.reference
            + self.activations
            + self.kv_cache
        )

    def fits(self, device_bytes: float, headroom: float = 0.9) -> bool:
        """True when the total is within `headroom` of the device memory (XLA needs scratch)."""
        return self.total <= headroom * device_bytes

    def format(self, device_bytes: float | None = None) -> str:
        rows = [
            ("params", self.params),
            ("optimizer state", self.optimizer),
            ("gradients", self.gradients),
            ("reference model", self.reference),
            ("activations (est.)", self.activations),
            ("KV cache", self.kv_cache),
            ("total", self.total),
        ]
        mesh = dict(zip(sharding.AXES, self.mesh, strict=True))
        lines = [f"{self.task} on mesh {mesh}: per-device memory"]
        lines += [f"  {name:<20} {size_str(n):>12}" for name, n in rows]
        lines += [f"  note: {n}" for n in self.notes]
        if device_bytes:
            verdict = "fits" if self.fits(device_bytes) else "DOES NOT FIT"
            lines.append(f"  device memory {size_str(device_bytes)} (90% usable): {verdict}")
        return "\n".join(lines)


def size_str(n: float) -> str:
    """Bytes as GiB, or MiB below a tenth of a GiB (tiny configs)."""
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 1024**2:.2f} MiB"


class _Sizes:
    """A stand-in mesh with axis sizes only: plans for meshes larger than this machine."""

    def __init__(self, shape: Sequence[int]):
        self.shape = dict(zip(sharding.AXES, shape, strict=True))


def shard_bytes(shape, dtype, spec: PartitionSpec, mesh_sizes: dict[str, int]) -> int:
    """Bytes of one device's shard of an array with mesh `spec`."""
    n = 1
    for i, dim in enumerate(shape):
        axes = spec[i] if i < len(spec) else None
        axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        n *= math.ceil(dim / math.prod(mesh_sizes[a] for a in axes))
    return n * jnp.dtype(dtype).itemsize


def param_bytes(cfg: ModelConfig, mesh_shape, rules=sharding.TRAIN_RULES, dtype=None) -> int:
    """Per-device bytes of the parameters (in `dtype`, default the params' dtype)."""
    sizes = _Sizes(mesh_shape)
    is_spec = lambda x: isinstance(x, PartitionSpec)  # noqa: E731
    specs = jax.tree.leaves(logical_axes(cfg), is_leaf=is_spec)
    shapes = jax.tree.leaves(param_shapes(cfg))
    total = 0
    for spec, s in zip(specs, shapes, strict=True):
        mesh_spec = sharding.logical_to_mesh(spec, rules, s.shape, sizes)
        total += shard_bytes(s.shape, dtype or s.dtype, mesh_spec, sizes.shape)
    return total


def _local(n: int, size: int) -> int:
    return n // size if n % size == 0 else n


def _fused_attention(cfg: ModelConfig) -> bool:
    """Whether training attention runs fused (cuDNN) on this backend; see `models.attention_impl`."""
    try:
        return attention_impl(cfg, cached=False, padding="right") == "cudnn"
    except ValueError:  # attention="cudnn" planned from a machine without a GPU
        return True


def activation_bytes(
    cfg: ModelConfig, mesh_shape, *, rows: int, length: int, chunk_size: int | None
) -> int:
    """Estimated peak activation bytes of one forward+backward on one device.

    rows: sequences in one micro-batch on the whole mesh (DPO: 2 x pairs).
    With remat "none" every layer keeps its intermediates for the backward
    pass; with a remat policy only the scan carry [b, T, D] per layer is
    kept and one layer's intermediates are rebuilt at a time. On top sits
    the log-softmax: [b, T, V] float32 logits plus their gradient, or one
    vocabulary chunk at a time when `chunk_size` is set.
    """
    data, fsdp, tensor = mesh_shape
    b = math.ceil(rows / (data * fsdp))
    T, D, F, H = length, cfg.hidden_size, _local(cfg.intermediate_size, tensor), cfg.head_dim
    N, K = _local(cfg.num_heads, tensor), _local(cfg.num_kv_heads, tensor)
    ab = cfg.compute_dtype.itemsize
    if _fused_attention(cfg):
        # Flash attention keeps only a float32 log-sum-exp per query row; the T x T scores
        # never reach memory.
        scores = b * N * T * 4
        layer = scores + b * T * ((2 * N + 2 * K) * H + 3 * F + 4 * D) * ab
    else:
        scores = b * N * T * T * 4  # float32 attention scores for one layer
        # One layer's saved intermediates: scores and probabilities, q/k/v/out,
        # gate/up/activation, and the normed inputs.
        layer = 2 * scores + b * T * ((2 * N + 2 * K) * H + 3 * F + 4 * D) * ab
    carry = b * T * D * ab
    if cfg.remat_policy == "none":
        # Saved for the backward pass: also the masked scores and the softmax's
        # exponentials (fitted to XLA's buffer assignment on the tiny config).
        stack = cfg.num_layers * (layer + 2 * scores) + 2 * scores
    else:
        stack = cfg.num_layers * carry + layer + scores
    vocab = _local(cfg.vocab_size, tensor)
    cols = min(chunk_size, vocab) if chunk_size else vocab
    head = 3 * b * T * cols * 4  # logits, log-softmax and their gradient in float32
    return stack + head


def plan(
    cfg: ModelConfig,
    mesh_shape: Sequence[int],
    *,
    task: str = "dpo",
    batch_size: int = 8,
    length: int = 2048,
    grad_accum_steps: int = 1,
    chunk_size: int | None = 4096,
    reference: str = "precompute",
    cache_length: int | None = None,
    master_dtype: str = "float32",
) -> MemoryPlan:
    """Per-device memory of a `task` ("dpo", "sft" or "sample") on `mesh_shape`.

    Training keeps float32 master weights (`master_dtype`) with AdamW's two
    moments in the same dtype; gradients match the master weights. `batch_size`
    counts pairs for DPO, sequences otherwise, per optimizer step.
    """
    mesh_shape = tuple(mesh_shape)
    notes = []
    if task == "sample":
        rules = sharding.SAMPLE_RULES
        params = param_bytes(cfg, mesh_shape, rules, cfg.compute_dtype)  # served in compute dtype
        data, fsdp, tensor = mesh_shape
        b = math.ceil(batch_size / (data * fsdp))
        S = cache_length or length
        kv = 2 * cfg.num_layers * b * S * _local(cfg.num_kv_heads, tensor) * cfg.head_dim
        kv *= cfg.compute_dtype.itemsize
        logits = b * cfg.vocab_size * 4 * 2
        return MemoryPlan(task, mesh_shape, params, 0, 0, 0, logits, kv, tuple(notes))
    if task not in ("dpo", "sft"):
        raise ValueError(f"task={task!r}; use dpo, sft or sample")
    rules = sharding.TRAIN_RULES
    params = param_bytes(cfg, mesh_shape, rules, master_dtype)
    optimizer = 2 * params
    # With accumulation the step holds the running sum and one micro-batch's gradients.
    gradients = params * (2 if grad_accum_steps > 1 else 1)
    ref = 0
    if task == "dpo" and reference == "online":
        ref = param_bytes(cfg, mesh_shape, rules, cfg.compute_dtype)
        notes.append("reference model held in memory (reference=online)")
    if batch_size % grad_accum_steps:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by grad_accum_steps={grad_accum_steps}"
        )
    rows = batch_size // grad_accum_steps * (2 if task == "dpo" else 1)
    acts = activation_bytes(cfg, mesh_shape, rows=rows, length=length, chunk_size=chunk_size)
    if cfg.compute_dtype != jnp.dtype(master_dtype):
        acts += param_bytes(cfg, mesh_shape, rules, cfg.compute_dtype)
        notes.append(f"{cfg.dtype} copy of the weights for compute")
    return MemoryPlan(task, mesh_shape, params, optimizer, gradients, ref, acts, 0, tuple(notes))

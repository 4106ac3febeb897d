"""Model configuration: one frozen dataclass for every supported family.

The config is static under `jax.jit` (it is hashable), so it holds only plain
Python values; dtypes are stored by name ("float32", "bfloat16").
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax.numpy as jnp

from spar_jax.errors import SparError

FAMILIES = ("llama", "glm", "glm4")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "xla_causal")


class ModelConfigError(SparError, ValueError):
    """A model config field with a value the models cannot take; the message names it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """LLaMA-3.1 `llama3` frequency scaling (the only scaling these families ship)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Decoder-only transformer hyper-parameters.

    The three families differ only in a few switches: GLM rotates the first
    `partial_rotary_factor` of each head with interleaved pairs, has q/k/v
    biases, and GLM-4-0414 (`glm4`) adds post-attention and post-MLP norms.
    """

    family: str = "llama"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: RopeScaling | None = None
    partial_rotary_factor: float = 1.0
    rope_interleaved: bool = False
    qkv_bias: bool = False
    post_norms: bool = False
    tie_embeddings: bool = False
    max_position_embeddings: int = 8192
    # Token ids carried for export and generation defaults.
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    # Numerics and compilation.
    dtype: str = "float32"  # activations / matmul inputs
    param_dtype: str = "float32"  # stored parameters
    remat_policy: str = "none"
    # Layers per iteration of the layer scan (`lax.scan(unroll=...)`); >= num_layers removes
    # the loop. Unrolling skips the per-iteration slicing and stacking of parameters and saved
    # activations (a 4-layer DPO step ran 14% faster on a 2-core CPU) but compile time grows
    # with it, so deep models keep 1.
    scan_unroll: int = 1
    # Attention without a KV cache (training, scoring): "xla" is the masked einsum + softmax
    # (any padding); "cudnn" is cuDNN's fused flash attention (GPU, 16-bit, right-padded rows);
    # "xla_causal" is the same causal-only contract through XLA (the fused path's semantics on
    # any backend); "auto" takes cudnn where it applies, else xla. Cached decoding is xla.
    attention: str = "auto"

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ModelConfigError(
                f"family={self.family!r} is not supported; use one of {FAMILIES}"
            )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers"):
            if getattr(self, name) <= 0:
                raise ModelConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_heads <= 0 or self.num_kv_heads <= 0:
            raise ModelConfigError("num_heads and num_kv_heads must be positive")
        if self.num_heads % self.num_kv_heads:
            raise ModelConfigError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.rotary_dim % 2 or self.rotary_dim <= 0:
            raise ModelConfigError(
                f"head_dim={self.head_dim} x partial_rotary_factor={self.partial_rotary_factor} "
                "must give a positive even rotary dimension"
            )
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ModelConfigError(f"{name}={getattr(self, name)!r}; use one of {DTYPES}")
        if self.scan_unroll < 1:
            raise ModelConfigError(
                f"scan_unroll={self.scan_unroll} must be >= 1 (1 = no unrolling)"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ModelConfigError(
                f"remat_policy={self.remat_policy!r}; use one of {REMAT_POLICIES}"
            )
        if self.attention not in ATTENTION_IMPLS:
            raise ModelConfigError(f"attention={self.attention!r}; use one of {ATTENTION_IMPLS}")
        if self.attention == "cudnn" and self.dtype == "float32":
            raise ModelConfigError(
                "attention='cudnn' needs dtype='bfloat16' or 'float16' (cuDNN has no float32 "
                "flash attention); use attention='auto' or 'xla' for float32"
            )
        object.__setattr__(self, "eos_token_ids", tuple(self.eos_token_ids))

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def num_groups(self) -> int:
        """Query heads per KV head (G in the einsum legend)."""
        return self.num_heads // self.num_kv_heads

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelConfigError(
                f"unknown ModelConfig fields {unknown}; known fields: {sorted(known)}"
            )
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

"""Pure-functional LLaMA-3 and GLM-4 models.

cfg, params = models.load_hf("path/to/checkpoint", dtype=jnp.bfloat16)
logits, cache = models.apply(cfg, params, tokens, positions=None, mask=None, cache=None)
models.save_hf(cfg, params, "out_dir")
"""

from spar_jax.models.config import ModelConfig, ModelConfigError, RopeScaling
from spar_jax.models.hf import CheckpointError, config_from_hf, config_to_hf, load_hf, save_hf
from spar_jax.models.presets import PRESETS
from spar_jax.models.presets import get as preset
from spar_jax.models.transformer import (
    KVCache,
    apply,
    attention_impl,
    cache_bytes,
    count_params,
    init_cache,
    init_params,
    lm_head,
    logical_axes,
    param_shapes,
)

__all__ = [
    "PRESETS",
    "CheckpointError",
    "KVCache",
    "ModelConfig",
    "ModelConfigError",
    "RopeScaling",
    "apply",
    "attention_impl",
    "cache_bytes",
    "config_from_hf",
    "config_to_hf",
    "count_params",
    "init_cache",
    "init_params",
    "lm_head",
    "load_hf",
    "logical_axes",
    "param_shapes",
    "preset",
    "save_hf",
]

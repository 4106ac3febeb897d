"""GLM-4 family: `GlmForCausalLM` (glm-4-9b-chat-hf) and `Glm4ForCausalLM` (GLM-4-0414).

Both are the shared decoder with three switches: rotary on the first
`partial_rotary_factor` (0.5) of each head with interleaved pairs, q/k/v
biases, and (glm4 only) norms after the attention and MLP sublayers. The
checkpoint fuses gate and up into one `gate_up_proj`; we keep them apart so
the MLP is the same module as LLaMA's and each shards on its own `mlp` axis.
"""

from __future__ import annotations

from typing import Any

from spar_jax.models import llama
from spar_jax.models import weight_map as wm
from spar_jax.models.config import ModelConfig

_ARCH = {"glm": "GlmForCausalLM", "glm4": "Glm4ForCausalLM"}


def config_from_hf(d: dict[str, Any], source: str) -> ModelConfig:
    model_type = d["model_type"]
    theta, rope = llama.rope_from_hf(d, source, default_theta=10000.0)
    if rope["rope_type"] != "default":
        raise wm.CheckpointError(
            f"{source}: GLM with rope type {rope['rope_type']!r} is not supported"
        )
    partial = rope.get("partial_rotary_factor", d.get("partial_rotary_factor", 0.5))
    return ModelConfig(
        family=model_type,
        rms_norm_eps=float(d.get("rms_norm_eps", 1.5625e-07)),
        rope_theta=theta,
        partial_rotary_factor=float(partial),
        rope_interleaved=True,
        qkv_bias=bool(d.get("attention_bias", True)),
        post_norms=model_type == "glm4",
        **llama.common_from_hf(d, source),
    )


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    return dict(
        architectures=[_ARCH[cfg.family]],
        model_type=cfg.family,
        attention_bias=cfg.qkv_bias,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "partial_rotary_factor": cfg.partial_rotary_factor,
        },
        **llama.common_to_hf(cfg),
    )


def weight_maps(cfg: ModelConfig) -> list[wm.WeightMap]:
    F = cfg.intermediate_size
    p = "model.layers.{i}."
    mlp = ("layers", "mlp")
    maps = [
        *llama.outer_maps(cfg),
        *llama.attention_maps(cfg, p),
        wm.WeightMap(
            ((*mlp, "gate"), (*mlp, "up")),
            (p + "mlp.gate_up_proj.weight",),
            lambda w: (w[:F].T, w[F:].T),
            lambda gate, up: (wm.concat([gate.T, up.T]),),
            per_layer=True,
        ),
        wm.transposed(p + "mlp.down_proj.weight", (*mlp, "down"), per_layer=True),
        wm.identity(p + "input_layernorm.weight", ("layers", "pre_attn_norm", "scale"), True),
        wm.identity(
            p + "post_attention_layernorm.weight", ("layers", "pre_mlp_norm", "scale"), True
        ),
    ]
    if cfg.post_norms:
        maps += [
            wm.identity(
                p + "post_self_attn_layernorm.weight", ("layers", "post_attn_norm", "scale"), True
            ),
            wm.identity(
                p + "post_mlp_layernorm.weight", ("layers", "post_mlp_norm", "scale"), True
            ),
        ]
    return maps

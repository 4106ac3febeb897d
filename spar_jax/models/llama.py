"""LLaMA-3 family (`LlamaForCausalLM`): config translation, checkpoint layout, presets."""

from __future__ import annotations

from typing import Any

from spar_jax.models import weight_map as wm
from spar_jax.models.config import ModelConfig, RopeScaling


def rope_from_hf(d: dict[str, Any], source: str, default_theta: float) -> tuple[float, dict]:
    """(rope_theta, merged rope dict) from any transformers version's config.

    Hub files written before transformers 5 keep `rope_theta`,
    `rope_scaling` and `partial_rotary_factor` at top level; transformers 5
    writes them inside `rope_parameters`.
    """
    rope = {**(d.get("rope_scaling") or {}), **(d.get("rope_parameters") or {})}
    theta = float(rope.get("rope_theta", d.get("rope_theta", default_theta)))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3"):
        raise wm.CheckpointError(
            f"{source}: rope type {rope_type!r} is not supported; supported: default, llama3"
        )
    rope["rope_type"] = rope_type
    return theta, rope


def rope_scaling_from_hf(rope: dict, source: str) -> RopeScaling | None:
    if rope["rope_type"] != "llama3":
        return None
    try:
        return RopeScaling(
            factor=float(rope["factor"]),
            low_freq_factor=float(rope["low_freq_factor"]),
            high_freq_factor=float(rope["high_freq_factor"]),
            original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
        )
    except KeyError as e:
        raise wm.CheckpointError(f"{source}: llama3 rope scaling lacks {e}") from None


def token_ids_from_hf(d: dict[str, Any]) -> dict[str, Any]:
    eos = d.get("eos_token_id")
    eos = () if eos is None else (tuple(eos) if isinstance(eos, list) else (eos,))
    return dict(
        bos_token_id=d.get("bos_token_id"), eos_token_ids=eos, pad_token_id=d.get("pad_token_id")
    )


def _require(d: dict[str, Any], key: str, source: str):
    if key not in d:
        raise wm.CheckpointError(f"{source}: missing required field {key!r}")
    return d[key]


def common_from_hf(d: dict[str, Any], source: str) -> dict[str, Any]:
    """Fields every family shares, with their transformers names."""
    hidden = int(_require(d, "hidden_size", source))
    heads = int(_require(d, "num_attention_heads", source))
    return dict(
        vocab_size=int(_require(d, "vocab_size", source)),
        hidden_size=hidden,
        intermediate_size=int(_require(d, "intermediate_size", source)),
        num_layers=int(_require(d, "num_hidden_layers", source)),
        num_heads=heads,
        num_kv_heads=int(d.get("num_key_value_heads") or heads),
        head_dim=int(d.get("head_dim") or hidden // heads),
        tie_embeddings=bool(d.get("tie_word_embeddings", False)),
        max_position_embeddings=int(d.get("max_position_embeddings", 8192)),
        **token_ids_from_hf(d),
    )


def common_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    eos = list(cfg.eos_token_ids)
    return dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        rms_norm_eps=cfg.rms_norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        max_position_embeddings=cfg.max_position_embeddings,
        hidden_act="silu",
        bos_token_id=cfg.bos_token_id,
        eos_token_id=eos[0] if len(eos) == 1 else (eos or None),
        pad_token_id=cfg.pad_token_id,
    )


def config_from_hf(d: dict[str, Any], source: str) -> ModelConfig:
    if d.get("hidden_act", "silu") != "silu":
        raise wm.CheckpointError(
            f"{source}: hidden_act {d['hidden_act']!r} is not supported (silu)"
        )
    if d.get("attention_bias") or d.get("mlp_bias"):
        raise wm.CheckpointError(f"{source}: LLaMA with attention_bias/mlp_bias is not supported")
    theta, rope = rope_from_hf(d, source, default_theta=10000.0)
    return ModelConfig(
        family="llama",
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=rope_scaling_from_hf(rope, source),
        **common_from_hf(d, source),
    )


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        rope.update(
            rope_type="llama3",
            factor=s.factor,
            low_freq_factor=s.low_freq_factor,
            high_freq_factor=s.high_freq_factor,
            original_max_position_embeddings=s.original_max_position_embeddings,
        )
    return dict(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        attention_bias=False,
        mlp_bias=False,
        rope_parameters=rope,
        **common_to_hf(cfg),
    )


def attention_maps(cfg: ModelConfig, prefix: str) -> list[wm.WeightMap]:
    D, N, K, H = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    a = ("layers", "attn")
    maps = [
        wm.projection_in(prefix + "self_attn.q_proj.weight", (*a, "q"), D, N, H),
        wm.projection_in(prefix + "self_attn.k_proj.weight", (*a, "k"), D, K, H),
        wm.projection_in(prefix + "self_attn.v_proj.weight", (*a, "v"), D, K, H),
        wm.projection_out(prefix + "self_attn.o_proj.weight", (*a, "o"), D, N, H),
    ]
    if cfg.qkv_bias:
        maps += [
            wm.head_bias(prefix + "self_attn.q_proj.bias", (*a, "q_bias"), N, H),
            wm.head_bias(prefix + "self_attn.k_proj.bias", (*a, "k_bias"), K, H),
            wm.head_bias(prefix + "self_attn.v_proj.bias", (*a, "v_bias"), K, H),
        ]
    return maps


def outer_maps(cfg: ModelConfig) -> list[wm.WeightMap]:
    maps = [
        wm.identity("model.embed_tokens.weight", ("embedding",)),
        wm.identity("model.norm.weight", ("final_norm", "scale")),
    ]
    if not cfg.tie_embeddings:
        maps.append(wm.transposed("lm_head.weight", ("lm_head",)))
    return maps


def weight_maps(cfg: ModelConfig) -> list[wm.WeightMap]:
    p = "model.layers.{i}."
    return [
        *outer_maps(cfg),
        *attention_maps(cfg, p),
        wm.transposed(p + "mlp.gate_proj.weight", ("layers", "mlp", "gate"), per_layer=True),
        wm.transposed(p + "mlp.up_proj.weight", ("layers", "mlp", "up"), per_layer=True),
        wm.transposed(p + "mlp.down_proj.weight", ("layers", "mlp", "down"), per_layer=True),
        wm.identity(p + "input_layernorm.weight", ("layers", "pre_attn_norm", "scale"), True),
        wm.identity(
            p + "post_attention_layernorm.weight", ("layers", "pre_mlp_norm", "scale"), True
        ),
    ]

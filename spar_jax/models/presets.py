"""Named model configs, with the published sizes they must reproduce.

`PUBLISHED_PARAMS` are the parameter counts of the released checkpoints
(sum of safetensors tensor sizes); tests check the presets against them by
shape alone (`jax.eval_shape`), so nothing is allocated.
"""

from __future__ import annotations

from collections.abc import Callable

from spar_jax.models.config import ModelConfig, RopeScaling

_LLAMA3_EOS = (128001, 128009)  # <|end_of_text|>, <|eot_id|>
_GLM4_EOS = (151329, 151336, 151338)  # <|endoftext|>, <|user|>, <|observation|>


def _llama3(**kw) -> ModelConfig:
    base = dict(
        family="llama",
        vocab_size=128256,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        bos_token_id=128000,
        eos_token_ids=_LLAMA3_EOS,
        head_dim=128,
    )
    return ModelConfig(**{**base, **kw})


_LLAMA31_ROPE = RopeScaling(
    factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)
_LLAMA32_ROPE = RopeScaling(
    factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)


def llama3_8b(**kw) -> ModelConfig:
    return _llama3(
        hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32, num_kv_heads=8, **kw
    )


def llama3_70b(**kw) -> ModelConfig:
    return _llama3(
        hidden_size=8192, intermediate_size=28672, num_layers=80, num_heads=64, num_kv_heads=8, **kw
    )


def llama3_1_8b(**kw) -> ModelConfig:
    return llama3_8b(rope_scaling=_LLAMA31_ROPE, max_position_embeddings=131072, **kw)


def llama3_2_1b(**kw) -> ModelConfig:
    return _llama3(
        hidden_size=2048,
        intermediate_size=8192,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        tie_embeddings=True,
        rope_scaling=_LLAMA32_ROPE,
        max_position_embeddings=131072,
        **kw,
    )


def llama3_2_3b(**kw) -> ModelConfig:
    return _llama3(
        hidden_size=3072,
        intermediate_size=8192,
        num_layers=28,
        num_heads=24,
        num_kv_heads=8,
        tie_embeddings=True,
        rope_scaling=_LLAMA32_ROPE,
        max_position_embeddings=131072,
        **kw,
    )


def _glm4(**kw) -> ModelConfig:
    base = dict(
        family="glm",
        vocab_size=151552,
        hidden_size=4096,
        intermediate_size=13696,
        num_layers=40,
        num_heads=32,
        num_kv_heads=2,
        head_dim=128,
        rms_norm_eps=1.5625e-07,
        rope_theta=10000.0,
        partial_rotary_factor=0.5,
        rope_interleaved=True,
        qkv_bias=True,
        max_position_embeddings=131072,
        eos_token_ids=_GLM4_EOS,
        pad_token_id=151329,
    )
    return ModelConfig(**{**base, **kw})


def glm4_9b(**kw) -> ModelConfig:
    """glm-4-9b-chat-hf (`GlmForCausalLM`)."""
    return _glm4(**kw)


def glm4_9b_0414(**kw) -> ModelConfig:
    """GLM-4-9B-0414 (`Glm4ForCausalLM`): post-sublayer norms, 32k context."""
    return _glm4(family="glm4", post_norms=True, max_position_embeddings=32768, **kw)


def tiny(**kw) -> ModelConfig:
    """A 2-layer LLaMA-shaped model for tests and the CPU demo."""
    base = dict(
        family="llama",
        vocab_size=512,
        hidden_size=64,
        intermediate_size=176,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        rope_theta=10000.0,
        max_position_embeddings=2048,
    )
    return ModelConfig(**{**base, **kw})


PRESETS: dict[str, Callable[..., ModelConfig]] = {
    "llama3_8b": llama3_8b,
    "llama3_70b": llama3_70b,
    "llama3_1_8b": llama3_1_8b,
    "llama3_2_1b": llama3_2_1b,
    "llama3_2_3b": llama3_2_3b,
    "glm4_9b": glm4_9b,
    "glm4_9b_0414": glm4_9b_0414,
    "tiny": tiny,
}

# LLaMA sizes and glm-4-9b-chat-hf are the published totals; GLM-4-9B-0414's is
# computed from its published config.json (glm-4-9b-chat-hf plus 2 x 40 x 4096 norm weights).
PUBLISHED_PARAMS = {
    "llama3_8b": 8_030_261_248,
    "llama3_70b": 70_553_706_496,
    "llama3_1_8b": 8_030_261_248,
    "llama3_2_1b": 1_235_814_400,
    "llama3_2_3b": 3_212_749_824,
    "glm4_9b": 9_399_951_360,
    "glm4_9b_0414": 9_400_279_040,
}


def get(name: str, **overrides) -> ModelConfig:
    """The preset `name`, with any field overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name](**overrides)

"""Tiny random transformers models, saved locally, for parity tests.

Weights are perturbed away from the default init (unit norms, zero biases)
so a mistake in norms or biases cannot hide behind ones and zeros.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import transformers

_CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "glm": (transformers.GlmConfig, transformers.GlmForCausalLM),
    "glm4": (transformers.Glm4Config, transformers.Glm4ForCausalLM),
}

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
    "rope_theta": 500000.0,
}


def tiny_hf_config(kind: str = "llama", **overrides):
    config_cls, _ = _CLASSES[kind]
    kw = dict(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=96,
        vocab_size=101,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        max_position_embeddings=256,
    )
    if kind != "llama":
        kw["head_dim"] = 16
    kw.update(overrides)
    config = config_cls(**kw)
    config._attn_implementation = "eager"
    return config


def tiny_hf_model(kind: str = "llama", seed: int = 0, **overrides):
    """A random `*ForCausalLM` in float32 eval mode."""
    _, model_cls = _CLASSES[kind]
    torch.manual_seed(seed)
    model = model_cls(tiny_hf_config(kind, **overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def save_tiny(path: str, kind: str = "llama", seed: int = 0, **overrides):
    """Saves a tiny model to `path`; returns (model, path)."""
    model = tiny_hf_model(kind, seed, **overrides)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    return model, str(path)


def hf_logits(model, tokens: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Reference logits with positions counted over the mask, as `generate` does."""
    mask = np.ones_like(tokens, bool) if mask is None else mask.astype(bool)
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(mask.astype(np.int64)),
            position_ids=torch.tensor(positions, dtype=torch.long),
        )
    return out.logits.float().numpy()

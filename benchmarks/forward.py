"""Forward-pass throughput: spar_jax vs transformers (PyTorch) on the same weights.

    python -m benchmarks.forward            # batch 8 x 512 tokens, ~50M-parameter LLaMA, float32

Both run the same random checkpoint (written by transformers, read by
`models.load_hf`) on the CPU with the same number of threads; the result is
a tokens/s table and the spar_jax / PyTorch ratio from this one run.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from benchmarks.common import machine, table, timeit
from spar_jax import models


def hf_config(layers: int) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        rope_theta=500000.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)

    torch.manual_seed(0)
    hf_model = transformers.LlamaForCausalLM(hf_config(args.layers)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        cfg, params = models.load_hf(tmp)
    n_params = models.count_params(cfg)

    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (args.batch, args.length))
    n_tokens = tokens.size

    forward = jax.jit(lambda p, t: models.apply(cfg, p, t)[0])
    jax_tokens = jnp.asarray(tokens, jnp.int32)
    jax_s = timeit(lambda: forward(params, jax_tokens).block_until_ready(), args.repeats)

    torch_tokens = torch.tensor(tokens)
    with torch.inference_mode():
        torch_s = timeit(lambda: hf_model(input_ids=torch_tokens).logits, args.repeats)

    rows = [
        ["implementation", "seconds / batch", "tokens/s"],
        ["spar_jax (jit, float32)", f"{jax_s:.3f}", f"{n_tokens / jax_s:,.0f}"],
        [
            f"transformers {transformers.__version__} (torch {torch.__version__}, sdpa)",
            f"{torch_s:.3f}",
            f"{n_tokens / torch_s:,.0f}",
        ],
    ]
    print(f"machine: {machine()}; torch threads {threads}")
    print(
        f"model: LLaMA, {n_params / 1e6:.1f}M parameters; batch {args.batch} x {args.length} tokens"
    )
    print(table(rows))
    print(f"ratio spar_jax / transformers: {torch_s / jax_s:.2f}x")


if __name__ == "__main__":
    main()

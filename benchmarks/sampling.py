"""Sampling speed: spar_jax `sampling.generate` vs transformers `generate` (PyTorch), same CPU.

    python -m benchmarks.sampling                 # both models, about 10 minutes on 2 cores
    python -m benchmarks.sampling --models small --repeats 1

For each random-weight LLaMA-style model (~5M and ~50M parameters), both sides
sample `--batch` prompts of `--prompt` tokens for exactly `--new` new tokens
(temperature 0.9, top_p 0.9; no stop tokens on our side, min_new_tokens on
theirs), float32, from the same weights (saved by transformers, read by
`models.load_hf`). Compilation and PyTorch warm-up are excluded from the
timings (compile time is reported), and each figure is the fastest of
`--repeats` interleaved runs, as the machine is shared. Then n=8 samples of
one 512-token prompt (one shared prefill) against 8 copies of the prompt
with n=1, both for `--new` tokens, and the prefill program alone on 1 and on
8 rows (the part that sharing saves).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from benchmarks.common import machine, table
from spar_jax import models, sampling

MODELS = {
    # name: LlamaConfig fields
    "small": dict(  # ~5M parameters
        vocab_size=4096,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "medium": dict(  # ~50M parameters, as benchmarks/forward.py
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
    ),
}
TEMPERATURE, TOP_P = 0.9, 0.9


def build(name: str, root: str):
    config = transformers.LlamaConfig(
        **MODELS[name],
        max_position_embeddings=4096,
        rope_theta=500000.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    path = os.path.join(root, name)
    hf.save_pretrained(path)
    cfg, params = models.load_hf(path)
    return hf, cfg, params


def jax_runner(cfg, params, prompts, new, n=1):
    """A call of `sampling.generate`, and its first (compiling) run's seconds and programs."""
    sp = sampling.SamplingParams(temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=new)

    def run():
        out = sampling.generate(cfg, params, prompts, sp, rng=jax.random.key(0), n=n)
        assert all(len(t) == new for t in out.tokens), "every row must make exactly `new` tokens"
        return out

    start = time.perf_counter()
    first = run()
    return run, time.perf_counter() - start, first.stats.compiles


def torch_runner(hf, prompts, new):
    """A call of transformers `generate` with the same settings (after a short warm-up)."""
    ids = torch.tensor(prompts)
    kw = dict(
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        temperature=TEMPERATURE,
        top_p=TOP_P,
        top_k=0,
        pad_token_id=0,
    )

    def run(new=new):
        with torch.no_grad():
            out = hf.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
        assert out.shape[1] == ids.shape[1] + new
        return out

    run(4)  # warm-up
    return run


def prefill_runner(cfg, params, rows: int, length: int):
    """The prefill program alone on [rows, length] tokens (compiled before it returns)."""
    tokens = jnp.ones((rows, length), jnp.int32)
    mask = jnp.ones((rows, length), bool)

    def run():
        cache = models.init_cache(cfg, rows, length)
        return jax.block_until_ready(sampling.decode.prefill(cfg, params, tokens, mask, cache))

    run()
    return run


def best_of(repeats: int, *runs) -> list[float]:
    """Fastest of `repeats` wall times for each run, the runs interleaved so they share load."""
    times = [[] for _ in runs]
    for _ in range(repeats):
        for t, run in zip(times, runs, strict=True):
            start = time.perf_counter()
            run()
            t.append(time.perf_counter() - start)
    return [min(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="small,medium")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--shared_prompt", type=int, default=512)
    parser.add_argument("--shared_n", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {machine()}; torch {torch.__version__} with {torch.get_num_threads()} "
        f"threads, transformers {transformers.__version__}"
    )
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name in args.models.split(","):
            hf, cfg, params = build(name, root)
            size = models.count_params(cfg)
            prompts = rng.integers(3, cfg.vocab_size, (args.batch, args.prompt)).tolist()
            tokens = args.batch * args.new
            ours_run, first_s, compiles = jax_runner(cfg, params, prompts, args.new)
            theirs_run = torch_runner(hf, prompts, args.new)
            ours, theirs = best_of(args.repeats, ours_run, theirs_run)
            compile_s = max(first_s - ours, 0.0)
            prompt = rng.integers(3, cfg.vocab_size, (1, args.shared_prompt)).tolist()
            k = args.shared_n
            shared_run, shared_first, _ = jax_runner(cfg, params, prompt, args.new, n=k)
            copies_run, copies_first, _ = jax_runner(cfg, params, prompt * k, args.new)
            shared, copies = best_of(args.repeats, shared_run, copies_run)
            one, many = best_of(
                args.repeats,
                prefill_runner(cfg, params, 1, args.shared_prompt),
                prefill_runner(cfg, params, k, args.shared_prompt),
            )
            shared_compile = max(shared_first - shared, 0.0)
            copies_compile = max(copies_first - copies, 0.0)
            speeds = (tokens / ours, tokens / theirs, compile_s, compiles)
            rows.append((name, size, *speeds, shared, copies, one, many))
            print(
                f"{name}: {size / 1e6:.1f}M params | spar_jax {tokens / ours:.0f} tok/s "
                f"(compile {compile_s:.1f}s, {compiles} programs) | transformers "
                f"{tokens / theirs:.0f} tok/s | ratio {theirs / ours:.2f}x | n={k} shared "
                f"{shared:.2f}s vs {k} copies {copies:.2f}s ({shared / copies:.2f}x; compile "
                f"{shared_compile:.1f}s + {copies_compile:.1f}s); prefill alone: 1 row "
                f"{one:.2f}s, {k} rows {many:.2f}s",
                flush=True,
            )

    print(
        f"\nbatch {args.batch}, {args.prompt}-token prompts, {args.new} new tokens, "
        f"temperature {TEMPERATURE}, top_p {TOP_P}, float32, best of {args.repeats}"
    )
    k = args.shared_n
    header = ["model", "params", "spar_jax tok/s", "transformers tok/s", "speed-up"]
    header += ["compile s", f"n={k} shared prefill s", f"{k} copies s", "shared / copies"]
    header += ["prefill 1 row s", f"prefill {k} rows s"]
    body = [
        [
            name,
            f"{size / 1e6:.1f}M",
            f"{ours:.0f}",
            f"{theirs:.0f}",
            f"{ours / theirs:.2f}x",
            f"{compile_s:.1f} ({compiles} programs)",
            f"{shared:.2f}",
            f"{copies:.2f}",
            f"{shared / copies:.2f}x",
            f"{one:.2f}",
            f"{many:.2f}",
        ]
        for name, size, ours, theirs, compile_s, compiles, shared, copies, one, many in rows
    ]
    print(table([header, *body]))


if __name__ == "__main__":
    main()

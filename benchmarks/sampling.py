"""Sampling speed: spar_jax `sampling.generate` vs transformers `generate` (PyTorch), same CPU.

    python benchmarks/sampling.py                 # both models, about 10 minutes on 2 cores
    python benchmarks/sampling.py --models small --repeats 1

For each random-weight LLaMA-style model (~5M and ~50M parameters), both sides
sample `--batch` prompts of `--prompt` tokens for exactly `--new` new tokens
(temperature 0.9, top_p 0.9; no stop tokens on our side, min_new_tokens on
theirs), float32, from the same weights (saved by transformers, read by
`models.load_hf`). Compilation and PyTorch warm-up are excluded from the
timings; compile time is reported. Then n=8 samples of one 512-token prompt
(one shared prefill) against 8 copies of the prompt with n=1.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

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
    "medium": dict(  # ~50M parameters
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
    ),
}
TEMPERATURE, TOP_P = 0.9, 0.9


def build(name: str, root: str):
    config = transformers.LlamaConfig(
        **MODELS[name], max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    path = os.path.join(root, name)
    hf.save_pretrained(path)
    cfg, params = models.load_hf(path)
    return hf, cfg, params


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def bench_jax(cfg, params, prompts, new, repeats, n=1):
    sp = sampling.SamplingParams(temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=new)
    run = lambda: sampling.generate(cfg, params, prompts, sp, rng=jax.random.key(0), n=n)  # noqa: E731
    start = time.perf_counter()
    first = run()
    first_s = time.perf_counter() - start
    seconds, out = timed(run, repeats)
    assert all(len(t) == new for t in out.tokens), "every row must generate exactly `new` tokens"
    return seconds, max(first_s - seconds, 0.0), first.stats.compiles


def bench_torch(hf, prompts, new, repeats):
    ids = torch.tensor(prompts)
    kw = dict(
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        temperature=TEMPERATURE,
        top_p=TOP_P,
        top_k=0,
        pad_token_id=0,
    )

    def run():
        with torch.no_grad():
            return hf.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)

    with torch.no_grad():
        hf.generate(ids, max_new_tokens=4, min_new_tokens=4, **kw)  # warm-up
    seconds, out = timed(run, repeats)
    assert out.shape[1] == ids.shape[1] + new
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="small,medium")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--shared_prompt", type=int, default=512)
    parser.add_argument("--shared_n", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"torch threads {torch.get_num_threads()}; jax {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name in args.models.split(","):
            hf, cfg, params = build(name, root)
            size = models.count_params(cfg)
            prompts = rng.integers(3, cfg.vocab_size, (args.batch, args.prompt)).tolist()
            tokens = args.batch * args.new
            ours, compile_s, compiles = bench_jax(cfg, params, prompts, args.new, args.repeats)
            theirs = bench_torch(hf, prompts, args.new, args.repeats)
            prompt = rng.integers(3, cfg.vocab_size, (1, args.shared_prompt)).tolist()
            k = args.shared_n
            shared, shared_compile, _ = bench_jax(cfg, params, prompt, args.new, args.repeats, n=k)
            copies, copies_compile, _ = bench_jax(cfg, params, prompt * k, args.new, args.repeats)
            rows.append(
                (name, size, tokens / ours, tokens / theirs, compile_s, compiles, shared, copies)
            )
            print(
                f"{name}: {size / 1e6:.1f}M params | spar_jax {tokens / ours:.0f} tok/s "
                f"(compile {compile_s:.1f}s, {compiles} programs) | transformers "
                f"{tokens / theirs:.0f} tok/s | ratio {theirs / ours:.2f}x | n={k} shared "
                f"{shared:.2f}s vs {k} copies {copies:.2f}s ({shared / copies:.2f}x; compile "
                f"{shared_compile:.1f}s + {copies_compile:.1f}s)",
                flush=True,
            )

    print(
        f"\nbatch {args.batch}, {args.prompt}-token prompts, {args.new} new tokens, "
        f"temperature {TEMPERATURE}, top_p {TOP_P}, float32, median of {args.repeats}"
    )
    print(
        "| model | params | spar_jax tok/s | transformers tok/s | speed-up | compile s "
        f"| n={args.shared_n} shared prefill s | {args.shared_n} copies s | shared / copies |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, size, ours, theirs, compile_s, compiles, shared, copies in rows:
        print(
            f"| {name} | {size / 1e6:.1f}M | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x "
            f"| {compile_s:.1f} ({compiles} programs) | {shared:.2f} | {copies:.2f} "
            f"| {shared / copies:.2f}x |"
        )


if __name__ == "__main__":
    main()

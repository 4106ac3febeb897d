"""Sampling speed: spar_jax `sampling.generate` vs transformers `generate` (PyTorch), same CPU.

    python -m benchmarks.sampling                 # both models, about 10 minutes on 2 cores
    python -m benchmarks.sampling --models small --repeats 1
    python -m benchmarks.sampling --parts ragged,tree   # the ragged and tree workloads only

For each random-weight LLaMA-style model (~5M and ~50M parameters), both sides
sample `--batch` prompts of `--prompt` tokens for exactly `--new` new tokens
(temperature 0.9, top_p 0.9; no stop tokens on our side, min_new_tokens on
theirs), float32, from the same weights (saved by transformers, read by
`models.load_hf`). Compilation and PyTorch warm-up are excluded from the
timings (compile time is reported), and each figure is the fastest of
`--repeats` interleaved runs, as the machine is shared. Then n=8 samples of
one 512-token prompt (one shared prefill) against 8 copies of the prompt
with n=1, both for `--new` tokens.

`ragged`: 256 prompts of 8-64 tokens, up to 128 new tokens, temperature 1.0 and 20 stop
ids (about 2% of a near-uniform vocabulary of 1024, so lengths are roughly geometric), on a
4-layer width-128 LLaMA: useful (returned) tokens/s of `sampling.generate` against
transformers `generate` in batches of 32 with the same stop ids.
`tree`: a tree-search-like workload for the engine alone: 16 roots, each with a 192-token
judge-prompt head shared by 15 nodes that add 16-48 tokens each, 32 new tokens; prompt
tokens computed with prefix reuse against without, and the time of each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
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
RAGGED = dict(  # 4 layers, width 128
    vocab_size=1024,
    hidden_size=128,
    intermediate_size=344,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def build(name: str, root: str):
    config = transformers.LlamaConfig(
        **(RAGGED if name == "ragged" else MODELS[name]),
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


def best_of(repeats: int, *runs) -> list[float]:
    """Fastest of `repeats` wall times for each run, the runs interleaved so they share load."""
    times = [[] for _ in runs]
    for _ in range(repeats):
        for t, run in zip(times, runs, strict=True):
            start = time.perf_counter()
            run()
            t.append(time.perf_counter() - start)
    return [min(t) for t in times]


def fixed(args, root, rng) -> list:
    rows = []
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
        shared_run, _, _ = jax_runner(cfg, params, prompt, args.new, n=k)
        copies_run, _, _ = jax_runner(cfg, params, prompt * k, args.new)
        shared, copies = best_of(args.repeats, shared_run, copies_run)
        row = [name, f"{size / 1e6:.1f}M", f"{tokens / ours:.0f}", f"{tokens / theirs:.0f}"]
        row += [f"{theirs / ours:.2f}x", f"{compile_s:.1f} ({compiles} programs)"]
        row += [f"{shared:.2f}", f"{copies:.2f}", f"{shared / copies:.2f}x"]
        print(" | ".join(row), flush=True)
        rows.append(row)
    header = ["model", "params", "spar_jax tok/s", "transformers tok/s", "speed-up"]
    header += ["compile s", f"n={args.shared_n} shared s", f"{args.shared_n} copies s"]
    header += ["shared / copies"]
    print(
        f"\nfixed batch: {args.batch} x {args.prompt}-token prompts, {args.new} new tokens, "
        f"temperature {TEMPERATURE}, top_p {TOP_P}, float32, best of {args.repeats}"
    )
    print(table([header, *rows]))


def ragged(args, root, rng) -> None:
    hf, cfg, params = build("ragged", root)
    lengths = rng.integers(8, 65, args.ragged_prompts)
    prompts = [rng.integers(3, cfg.vocab_size, n).tolist() for n in lengths]
    stops = tuple(int(t) for t in rng.choice(np.arange(3, cfg.vocab_size), 20, replace=False))
    sp = sampling.SamplingParams(temperature=1.0, max_new_tokens=128, stop_token_ids=stops)
    made = {}

    def ours():
        out = sampling.generate(
            cfg, params, prompts, sp, rng=jax.random.key(0), max_batch=args.slots
        )
        made["ours"], made["stats"] = out.stats.generated_tokens, out.stats
        return out

    def theirs():
        useful = 0
        for i in range(0, len(prompts), 32):
            batch = prompts[i : i + 32]
            T = max(map(len, batch))
            ids = torch.zeros((len(batch), T), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, p in enumerate(batch):
                ids[r, T - len(p) :], mask[r, T - len(p) :] = torch.tensor(p), 1
            with torch.no_grad():
                out = hf.generate(
                    ids, attention_mask=mask, max_new_tokens=128, do_sample=True,
                    temperature=1.0, top_k=0, top_p=1.0, eos_token_id=list(stops), pad_token_id=0,
                )  # fmt: skip
            for row in out[:, T:].tolist():
                ends = [row.index(s) for s in stops if s in row]
                useful += min(ends) if ends else len(row)
        made["theirs"] = useful
        return useful

    start = time.perf_counter()
    ours()
    first = time.perf_counter() - start
    compiles = made["stats"].compiles
    ours_s, theirs_s = best_of(args.repeats, ours, theirs)
    st = made["stats"]
    print(
        f"\nragged: {len(prompts)} prompts of 8-64 tokens, up to 128 new, temperature 1.0, "
        f"20 stop ids, {models.count_params(cfg) / 1e6:.2f}M-parameter LLaMA, "
        f"{args.slots} slots, best of {args.repeats}"
    )
    header = ["side", "useful tokens", "seconds", "useful tok/s"]
    rows = [
        ["spar_jax engine", str(made["ours"]), f"{ours_s:.2f}", f"{made['ours'] / ours_s:.0f}"],
        [
            "transformers (batches of 32)",
            str(made["theirs"]),
            f"{theirs_s:.2f}",
            f"{made['theirs'] / theirs_s:.0f}",
        ],
    ]
    print(table([header, *rows]))
    ratio = (made["ours"] / ours_s) / (made["theirs"] / theirs_s)
    busy = st.generated_tokens / max(st.decode_steps * st.decode_rows, 1)
    print(
        f"speed-up {ratio:.2f}x; first call {first:.1f}s ({compiles} programs); "
        f"{st.decode_steps} decode steps in {st.chunks} calls, slots busy {busy:.0%} of "
        f"slot-steps; {st.prefill_tokens} prompt tokens prefilled"
    )


def tree(args, root, rng) -> None:
    _, cfg, params = build("small", root)
    prompts = []
    for _ in range(16):
        head = rng.integers(3, cfg.vocab_size, 192).tolist()
        for _ in range(15):
            prompts.append(head + rng.integers(3, cfg.vocab_size, rng.integers(16, 49)).tolist())
    sp = sampling.SamplingParams(temperature=1.0, max_new_tokens=32)
    engines = {}

    def runner(min_prefix):
        def run():
            engine = sampling.Engine(
                cfg, params, slots=args.slots, max_length=288, min_prefix=min_prefix
            )
            for i, p in enumerate(prompts):
                engine.submit(p, sp, rng=jax.random.key(i))
            engine.run()
            engines[min_prefix] = engine.stats

        run()
        return run

    reuse, plain = best_of(args.repeats, runner(16), runner(10**9))
    a, b = engines[16], engines[10**9]
    total = sum(map(len, prompts))
    print(
        f"\ntree: 16 roots x 15 nodes, 192-token shared head + 16-48 tokens, 32 new tokens, "
        f"small model, {args.slots} slots, best of {args.repeats}"
    )
    header = ["prefix reuse", "prompt tokens computed", "copied from a slot", "seconds"]
    rows = [
        ["on", str(a.prefill_tokens), str(a.prefix_tokens_reused), f"{reuse:.2f}"],
        ["off", str(b.prefill_tokens), str(b.prefix_tokens_reused), f"{plain:.2f}"],
    ]
    print(table([header, *rows]))
    print(
        f"prefill saved: {1 - a.prefill_tokens / total:.0%} of {total} prompt tokens; "
        f"time {reuse / plain:.2f}x of no reuse"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", default="fixed,ragged,tree")
    parser.add_argument("--models", default="small,medium")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--shared_prompt", type=int, default=512)
    parser.add_argument("--shared_n", type=int, default=8)
    parser.add_argument("--ragged_prompts", type=int, default=256)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {machine()}; torch {torch.__version__} with {torch.get_num_threads()} "
        f"threads, transformers {transformers.__version__}"
    )
    rng = np.random.default_rng(0)
    parts = {"fixed": fixed, "ragged": ragged, "tree": tree}
    with tempfile.TemporaryDirectory() as root:
        for part in args.parts.split(","):
            parts[part](args, root, rng)


if __name__ == "__main__":
    main()

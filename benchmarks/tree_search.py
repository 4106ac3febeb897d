"""Tree search: the batched BFS over many roots vs one tree and one call at a time.

    python -m benchmarks.tree_search                        # 64 roots batched, 8 one at a time
    python -m benchmarks.tree_search --roots 16 --sequential-roots 4 --judge-new 8 --refine-new 8

Both sides run the same 3-level BFS (branch 3, select 2, 5 judge votes) with
the same tiny random LLaMA-style model through `ChatModel` + `ModelJudge`:

* batched: `spar.tree.run_search` over all roots: per level one refine call
  (3 samples per frontier node, one prefill each) and one judge call over
  every new child (5 votes each, one prefill each).
* sequential: the structure of the official code (thu-coai/SPaR src/ToT/bfs.py):
  each tree on its own, each child made by one refine call (n=1) and judged by
  one judge call (n=5).

A random model writes neither verdicts nor [[start]] markers, so its texts are
wrapped into the requested formats (`Formatted`): every judgment says "No",
so every tree runs all 3 levels (3 + 6 + 6 refinements and judgments per
root). The figure is (refinements + judgments) per second in steady state, as a
long self-play round sees it: both sides in the same run, each timed on fresh roots
after warm-up searches on other fresh roots, until one compiles no new program (at
most --warmups). Text lengths differ between searches, so a search can still meet a
new length bucket; the programs compiled inside the timed search are reported. The
batched side's cold search reports the compilations a full search takes from nothing
(`sampling.compile_count`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from benchmarks.common import machine, table
from spar_jax import models, sampling
from spar_jax.spar import prompts
from spar_jax.spar.generator import ChatModel, derive_seed
from spar_jax.spar.judge import ModelJudge, judge_until_decided
from spar_jax.spar.tree import SearchConfig, run_search, search_summary
from spar_jax.tokenizer import Tokenizer
from tests.tokenizer_fixtures import LLAMA3_SPECIALS, build_hf_tokenizer


class Formatted:
    """A ChatModel whose texts are wrapped as a refinement or a "No" judgment."""

    def __init__(self, model: ChatModel):
        self.model = model

    def generate(self, conversations, sampling_params, n=1, seed=0):
        out = self.model.generate(conversations, sampling_params, n, seed)
        return [
            [
                prompts.format_refinement("r", t.strip() or "empty")
                if len(conv) == 3
                else prompts.format_judgement(t, False)
                for t in texts
            ]
            for conv, texts in zip(conversations, out, strict=True)
        ]


def build(root: str, vocab: int):
    path = os.path.join(root, "model")
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    build_hf_tokenizer(Path(path), LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>")
    cfg, params = models.load_hf(path)
    return cfg, params, Tokenizer.load(path)


def sequential_bfs(root: dict, cfg: SearchConfig, refiner, judge, seed: int) -> int:
    """The official BFS for one root: one refine call and one judge call per child.

    Returns the number of refinements + judgments made.
    """
    calls, cache = 0, {}
    frontier = [(root["response"], root["critique"])]
    for level in range(cfg.max_depth):
        children = []
        for p, (response, critique) in enumerate(frontier):
            msgs = prompts.refine_messages(root["prompt"], response, critique)
            for b in range(cfg.branch):
                for k in range(cfg.refine_attempts):
                    s = derive_seed(seed, level, p, b, k)
                    text = refiner.generate([msgs], cfg.sampling(), 1, s)[0][0]
                    calls += 1
                    if (refined := prompts.parse_refinement(text)) is not None:
                        break
                if refined is None:
                    continue
                item = (root["prompt"], refined)
                calls += item not in cache
                j = judge_until_decided(judge, [item], derive_seed(seed, level, p, b), cache=cache)[
                    0
                ]
                if j.label is not None:
                    children.append((j.value, refined, j.critique))
        children.sort(key=lambda c: -c[0])
        if not children or children[0][0] > cfg.end_gate:
            break
        frontier = [(r, c) for _, r, c in children[: cfg.select_branch]]
    return calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--roots", type=int, default=64)
    ap.add_argument("--sequential-roots", type=int, default=8)
    # Short texts by default: prompt tokens dominate, where sharing saves the most. The
    # demo's lengths (configs/demo.py) are --judge-new 80 --refine-new 112.
    ap.add_argument("--judge-new", type=int, default=16, help="max new tokens of a judgment")
    ap.add_argument("--refine-new", type=int, default=16, help="max new tokens of a refinement")
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument(
        "--warmups", type=int, default=4, help="most warm-up searches per side before timing"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as root:
        run(args, *build(root, 1100))


def run(args, mcfg, params, tok):
    chat = ChatModel(mcfg, params, tok, max_batch=args.max_batch)
    model = Formatted(chat)
    judge = ModelJudge(model, n_votes=5, max_new_tokens=args.judge_new)
    cfg = SearchConfig(max_new_tokens=args.refine_new)
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta river stone light cloud paper green".split()

    def roots(n, tag):
        return [
            {
                "prompt": f"Write {i % 5 + 2} sentences about the {words[i % 10]} ({tag}{i}).",
                "prompt_id": f"{tag}{i}",
                "response": " ".join(rng.choice(words, size=8 + i % 7)),
                "critique": prompts.format_judgement("too short", False),
            }
            for i in range(n)
        ]

    def batched(n, tag, seed):
        chat.stats.clear()
        c0, start = sampling.compile_count(), time.perf_counter()
        state = run_search(roots(n, tag), cfg, model, judge, seed=seed)
        seconds = time.perf_counter() - start
        summary = search_summary(state)
        ops = summary["refinements"] + summary["refine_retries"] + summary["judged"]
        return seconds, ops, sampling.compile_count() - c0, dict(chat.stats, **summary)

    def sequential(n, tag, seed):
        chat.stats.clear()
        c0, start = sampling.compile_count(), time.perf_counter()
        ops = sum(sequential_bfs(r, cfg, model, judge, seed) for r in roots(n, tag))
        seconds = time.perf_counter() - start
        return seconds, ops, sampling.compile_count() - c0, dict(chat.stats)

    def warm_up(side, n, tag):
        """Runs searches on fresh roots until one compiles nothing new (at most
        args.warmups); returns how many programs each compiled."""
        compiles = []
        for i in range(args.warmups):
            compiles.append(side(n, f"{tag}{i}-", 10 + i)[2])
            if compiles[-1] == 0:
                break
        return compiles

    cold_s, cold_ops, cold_compiles, summary = batched(args.roots, "cold", 1)
    print(f"cold batched search: {cold_s:.1f}s, {cold_compiles} compilations, {summary}")
    print("batched warm-up compilations per search:", warm_up(batched, args.roots, "bw"))
    warm_s, warm_ops, warm_compiles, warm_stats = batched(args.roots, "warm", 2)
    print("one-at-a-time warm-up compilations:", warm_up(sequential, args.sequential_roots, "sw"))
    seq_s, seq_ops, seq_compiles, seq_stats = sequential(args.sequential_roots, "seq", 4)

    rate_b, rate_s = warm_ops / warm_s, seq_ops / seq_s
    print(machine())
    rows = [["search", "roots", "refinements + judgments", "seconds", "per second", "compiles"]]
    rows[0] += ["sampler calls", "prompt tokens computed / op", "copied / op"]
    for name, n, ops, secs, compiles, stats in (
        ("batched (cold)", args.roots, cold_ops, cold_s, cold_compiles, summary),
        ("batched", args.roots, warm_ops, warm_s, warm_compiles, warm_stats),
        ("one call at a time", args.sequential_roots, seq_ops, seq_s, seq_compiles, seq_stats),
    ):
        rows.append([name, str(n), str(ops), f"{secs:.1f}", f"{ops / secs:.1f}", str(compiles)])
        rows[-1] += [str(stats["calls"]), f"{stats['prefill_tokens'] / ops:.0f}"]
        rows[-1] += [f"{stats['prefix_tokens_reused'] / ops:.0f}"]
    print(table(rows))
    print(f"batched / one at a time: {rate_b / rate_s:.1f}x (target >= 5x)")
    # On a CPU every computed token costs about the same, batched or not: this ratio bounds
    # what batching can gain there.
    per_op = warm_stats["prefill_tokens"] / warm_ops, seq_stats["prefill_tokens"] / seq_ops
    print(f"prompt tokens computed per op, one at a time / batched: {per_op[1] / per_op[0]:.2f}x")


if __name__ == "__main__":
    main()

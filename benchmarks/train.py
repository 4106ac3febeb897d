"""DPO training throughput: spar_jax vs TRL's DPOTrainer (PyTorch) on the same weights and data.

    python -m benchmarks.train        # ~7M-parameter LLaMA, 8 pairs x 256 tokens, float32

Both train the same random checkpoint (written by transformers, read by `models.load_hf`) on
the same token ids with sigmoid DPO (beta 0.1), AdamW, reference log-probs precomputed
(TRL: `precompute_ref_log_probs=True`, so neither keeps a reference model in memory). TRL is
timed by a callback around each optimizer step (its reference pass happens before the first
step and is not timed); spar_jax by the median of its jitted step. Three more rows for scale: a
spar_jax run with the reference computed online, a hand-written PyTorch DPO step on the
same model (no attention mask, no metrics: the PyTorch floor under any trainer's overhead), and
spar_jax with the layer scan unrolled (``scan_unroll = layers``, a config option).

MFU = model FLOPs/s / peak, where the peak is a large jitted float32 matmul measured here and
model FLOPs = 6 x N x tokens per step (policy forward + backward; + 2 x N x tokens with an
online reference), N = parameters in matmuls (all but the input embedding, a gather).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from benchmarks.common import machine, table, timeit
from spar_jax import models
from spar_jax.training import optim, steps
from spar_jax.training.state import TrainState


def hf_config(args) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.width,
        intermediate_size=3 * args.width,
        num_hidden_layers=args.layers,
        num_attention_heads=args.width // 64,
        num_key_value_heads=max(args.width // 128, 1),
        max_position_embeddings=2048,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    )


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """float32 FLOP/s of one jitted n x n matmul: the machine's practical peak."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    seconds = timeit(lambda: mm(a, a).block_until_ready(), repeats)
    return 2 * n**3 / seconds


def make_pairs(args, rng: np.random.Generator) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt, chosen, rejected) ids; every sequence is exactly `args.length` tokens, the last
    response token is EOS (id 1) so TRL adds none."""
    pairs = []
    response = args.length - args.prompt
    for _ in range(args.batch * (args.steps + args.warmup)):
        prompt = rng.integers(3, args.vocab, args.prompt).tolist()
        chosen = [*rng.integers(3, args.vocab, response - 1).tolist(), 1]
        rejected = [*rng.integers(3, args.vocab, response - 1).tolist(), 1]
        pairs.append((prompt, chosen, rejected))
    return pairs


_SPECIAL = {0: "<pad>", 1: "<eos>", 2: "<unk>"}


def word_text(ids: list[int]) -> str:
    """The text the word-level tokenizer maps back to exactly ``ids``."""
    return " ".join(_SPECIAL.get(i, f"w{i}") for i in ids)


def word_tokenizer(vocab: int, path: str) -> transformers.PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer where "w17" is id 17 (0-2 are special): exact ids."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models

    words = {f"w{i}": i for i in range(3, vocab)} | {v: k for k, v in _SPECIAL.items()}
    tok = Tokenizer(tok_models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(path)
    return fast


def batch_of(pairs, args) -> dict[str, np.ndarray]:
    rows = {k: [] for k in ("chosen_tokens", "rejected_tokens", "chosen_loss_mask")}
    for prompt, chosen, rejected in pairs:
        rows["chosen_tokens"].append(prompt + chosen)
        rows["rejected_tokens"].append(prompt + rejected)
        rows["chosen_loss_mask"].append([False] * len(prompt) + [True] * len(chosen))
    b = {k: np.asarray(v, np.int32 if "tokens" in k else np.bool_) for k, v in rows.items()}
    b["rejected_loss_mask"] = b["chosen_loss_mask"].copy()
    b["chosen_mask"] = np.ones_like(b["chosen_loss_mask"])
    b["rejected_mask"] = np.ones_like(b["chosen_loss_mask"])
    b["weight"] = np.ones(len(pairs), np.float32)
    return b


def bench_spar_jax(cfg, params, pairs, args, reference: str) -> float:
    """Median seconds per optimizer step."""
    # AdamW with global-norm clipping at 1.0, constant lr: what the TRL run uses.
    opt = optim.OptimizerConfig(learning_rate=args.lr, schedule="constant", max_grad_norm=1.0)
    tx, _ = optim.make_optimizer(opt, args.steps + args.warmup)
    step = steps.compile_step(
        steps.make_dpo_step(cfg, tx, beta=0.1, ftx_weight=0.0, reference=reference)
    )
    ref_fn = jax.jit(steps.make_reference_fn(cfg))
    batches = [batch_of(pairs[i : i + args.batch], args) for i in range(0, len(pairs), args.batch)]
    for b in batches:
        if reference == "precompute":
            rc, rr = ref_fn(params, {k: v for k, v in b.items()})
            b["reference_chosen_logps"], b["reference_rejected_logps"] = (
                np.asarray(rc),
                np.asarray(rr),
            )
    ref_params = jax.tree.map(jnp.copy, params) if reference == "online" else None
    state = TrainState.create(jax.tree.map(jnp.copy, params), tx, ref_params=ref_params)
    times = []
    for i, b in enumerate(batches):
        start = time.perf_counter()
        state, metrics = step(state, b)
        jax.block_until_ready(metrics["loss"])
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_torch(model_dir, pairs, args, reference: str) -> float:
    """A hand-written PyTorch DPO step (one [2B, T] forward, no attention mask, AdamW): what a
    lean PyTorch trainer could reach, to separate TRL's own overhead from PyTorch's."""
    del reference  # precomputed: the reference log-probs are inputs
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    times = []
    for i in range(0, len(pairs), args.batch):
        b = batch_of(pairs[i : i + args.batch], args)
        tokens = torch.from_numpy(np.concatenate([b["chosen_tokens"], b["rejected_tokens"]])).long()
        targets = torch.from_numpy(
            np.concatenate([b["chosen_loss_mask"], b["rejected_loss_mask"]])[:, 1:]
        )
        ref = torch.zeros(args.batch)
        start = time.perf_counter()
        logits = model(input_ids=tokens).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None])[..., 0]
        seq = (logp * targets).sum(-1)
        h = (seq[: args.batch] - ref) - (seq[args.batch :] - ref)
        loss = -torch.nn.functional.logsigmoid(0.1 * h).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.median(times[args.warmup :])


class _StepTimer(transformers.TrainerCallback):
    def __init__(self):
        self.times, self._start = [], 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._start)


def bench_trl(model_dir, pairs, args, reference: str) -> float:
    import datasets
    import trl

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref_model = None
    if reference == "online":
        ref_model = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = word_tokenizer(args.vocab, os.path.join(model_dir, "tok"))

    data = datasets.Dataset.from_list(
        [
            {"prompt": word_text(p), "chosen": " " + word_text(c), "rejected": " " + word_text(r)}
            for p, c, r in pairs
        ]
    )
    config = trl.DPOConfig(
        output_dir=os.path.join(model_dir, "trl_out"),
        per_device_train_batch_size=args.batch,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        max_steps=args.steps + args.warmup,
        beta=0.1,
        loss_type=["sigmoid"],
        max_length=args.length + 8,
        precompute_ref_log_probs=reference == "precompute",
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=10_000,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    timer = _StepTimer()
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    # Exactly the token ids spar_jax trains on: no truncation, no padding, no extra EOS.
    first = trainer.train_dataset[0]
    assert first["prompt_ids"] + first["chosen_ids"] == pairs[0][0] + pairs[0][1]
    trainer.train()
    return statistics.median(timer.times[args.warmup :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--length", type=int, default=256, help="prompt + response tokens")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    parser.add_argument("--steps", type=int, default=6, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-5)
    args = parser.parse_args()
    threads = 2
    torch.set_num_threads(threads)

    torch.manual_seed(0)
    hf_model = transformers.LlamaForCausalLM(hf_config(args))
    pairs = make_pairs(args, np.random.default_rng(0))
    tokens_per_step = 2 * args.batch * args.length
    peak = matmul_peak()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        del hf_model
        cfg, params = models.load_hf(tmp)
        n_all = models.count_params(cfg)
        n_matmul = n_all - cfg.vocab_size * cfg.hidden_size  # the input embedding is a gather
        unrolled = cfg.replace(scan_unroll=cfg.num_layers)
        for name, fn, ref in (
            ("spar_jax (jit, float32), reference precomputed", bench_spar_jax, "precompute"),
            ("spar_jax, layers unrolled, reference precomputed", bench_spar_jax, "unrolled"),
            ("spar_jax (jit, float32), reference online", bench_spar_jax, "online"),
            ("PyTorch, hand-written DPO step (no mask), precomputed", bench_torch, "precompute"),
            (
                f"TRL {_version('trl')} DPOTrainer, precompute_ref_log_probs",
                bench_trl,
                "precompute",
            ),
        ):
            if ref == "unrolled":
                ref = "precompute"
                seconds = fn(unrolled, params, pairs, args, ref)
            elif fn is bench_spar_jax:
                seconds = fn(cfg, params, pairs, args, ref)
            else:
                seconds = fn(tmp, pairs, args, ref)
            flops = (6 + (2 if ref == "online" else 0)) * n_matmul * tokens_per_step
            results.append((name, ref, seconds, flops))

    trl_s = results[-1][2]
    rows = [["implementation", "s / step", "tokens/s", "MFU", "vs TRL"]]
    for name, _, seconds, flops in results:
        rows.append(
            [
                name,
                f"{seconds:.3f}",
                f"{tokens_per_step / seconds:,.0f}",
                f"{flops / seconds / peak:.1%}",
                f"{trl_s / seconds:.2f}x",
            ]
        )
    print(f"machine: {machine()}; torch {torch.__version__}, {threads} threads")
    print(
        f"model: LLaMA, {n_all / 1e6:.1f}M parameters ({n_matmul / 1e6:.1f}M in matmuls), vocab "
        f"{args.vocab}, width {args.width}, {args.layers} layers; {args.batch} pairs x "
        f"{args.length} tokens = {tokens_per_step} tokens/step; median of {args.steps} steps "
        f"after {args.warmup}"
    )
    print(f"float32 matmul peak (2048^3, jit): {peak / 1e9:.1f} GFLOP/s")
    print(table(rows))


def _version(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


if __name__ == "__main__":
    main()

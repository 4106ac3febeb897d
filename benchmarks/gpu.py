"""Every GPU figure in one run: matmul peak, cuDNN attention parity, DPO step MFU, sampling.

    python -m benchmarks.gpu --out gpu.json            # ~1B LLaMA-3.2 shape, about 6 minutes
    python -m benchmarks.gpu --smoke                   # tiny shapes, any backend: checks the script

Made for a short lease of one GPU: each part appends its result to ``--out`` as soon as it is
measured, in order of importance, so a run cut short still leaves the parts it finished.

1. Peak: a jitted 8192^3 bfloat16 matmul (the practical ceiling MFU is also quoted against).
2. Parity: attention="cudnn" vs "xla" on a small bfloat16 LLaMA (right-padded rows): logits at
   real tokens and the gradient of their log-likelihood, each as a max error relative to the
   float32 reference's scale, beside bfloat16-xla's own error against float32.
3. DPO: one optimizer step of ``steps.make_dpo_step`` (sigmoid DPO, AdamW, clipping, reference
   log-probs precomputed) on random LLaMA-3.2-1B weights, bfloat16 compute with float32 master
   weights, vocabulary-chunked log-softmax. MFU = model FLOPs / s / peak with model FLOPs =
   6 N tokens (N = parameters in matmuls; the tied embedding is the LM head) + causal attention
   6 T^2 N_heads H L per sequence (forward + backward, half the T x T square).
4. Sampling: ``sampling.generate`` on the same model in bfloat16, B prompts, fixed new tokens;
   decode tokens/s and the HBM roofline (parameters + KV cache read once per decode step).
5. Cache layout (``layout``): ms per step of the engine's decode loop at batch 64 with its
   cache view slot-major (the accelerator default) and heads-major (the CPU default).
6. Ragged sampling (``ragged``): 512 prompts of 8-64 tokens with geometric new-token limits
   (mean ~45, at most 128), temperature 1.0, through the continuous-batching engine with 64
   slots, against the same requests run as fixed batches of 64 (each batch drained before the
   next starts, as a fixed-batch sampler does): useful tokens/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import machine, timeit
from spar_jax import models, sampling
from spar_jax.models import presets
from spar_jax.training import optim, steps
from spar_jax.training.state import TrainState

DATASHEET_BF16 = 989e12  # H100/H200 SXM dense bfloat16 FLOP/s
DATASHEET_HBM = {"H100": 3.35e12, "H200": 4.8e12}  # bytes/s


def _record(path: str | None, results: dict, key: str, value) -> None:
    results[key] = value
    print(f"== {key}: {json.dumps(value, default=str)}", flush=True)
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2, default=str)


def matmul_peak(n: int, chain: int = 20) -> float:
    """bfloat16 FLOP/s of `chain` back-to-back n^3 matmuls (so launch gaps do not count)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    mm = jax.jit(lambda x, y: x @ y)
    seconds = timeit(lambda: jax.block_until_ready([mm(a, a) for _ in range(chain)]), 5, 2)
    return 2 * n**3 * chain / seconds


def attention_parity(attention: str, smoke: bool) -> dict:
    """Max |difference| / max |float32 value| for bf16 `attention` and bf16 xla vs float32."""
    cfg = presets.tiny(
        vocab_size=1000,
        hidden_size=512,
        intermediate_size=1024,
        num_layers=4,
        num_heads=8,
        num_kv_heads=2,
        head_dim=64,
        attention="xla",
    )
    params = models.init_params(cfg, jax.random.key(0))
    B, T = (2, 64) if smoke else (4, 512)
    tokens = jax.random.randint(jax.random.key(1), (B, T), 3, cfg.vocab_size)
    lengths = np.array([T, T - 7, T // 2, 1][:B])
    mask = jnp.asarray(np.arange(T)[None] < lengths[:, None])

    def loglik(p, c):
        logits, _ = models.apply(c, p, tokens, mask=mask)
        ll = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], -1)[..., 0]
        return jnp.sum(jnp.where(mask, ll, 0.0)), logits

    run = jax.jit(jax.value_and_grad(loglik, has_aux=True), static_argnums=1)
    (_, ref_logits), ref_grad = run(params, cfg)
    out = {}
    for name in ("xla", attention):
        (_, logits), grad = run(params, cfg.replace(dtype="bfloat16", attention=name))
        real = np.asarray(mask)
        err = np.abs(np.asarray(logits)[real] - np.asarray(ref_logits)[real]).max()
        grad_err = max(
            float(jnp.abs(g - r).max() / jnp.abs(r).max())
            for g, r in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad), strict=True)
        )
        out[f"bf16_{name}"] = {
            "logits_rel": float(err / np.abs(np.asarray(ref_logits)[real]).max()),
            "grad_rel_max_over_leaves": grad_err,
            "finite": bool(np.isfinite(np.asarray(logits)[real]).all()),
        }
    return out


def _dpo_batch(cfg, pairs: int, length: int, rng: np.random.Generator) -> dict:
    prompt = length // 4
    shape = (pairs, length)
    loss_mask = np.zeros(shape, bool)
    loss_mask[:, prompt:] = True
    batch = {"weight": np.ones(pairs, np.float32)}
    for side in ("chosen", "rejected"):
        batch[f"{side}_tokens"] = rng.integers(3, cfg.vocab_size, shape, dtype=np.int32)
        batch[f"{side}_mask"] = np.ones(shape, bool)
        batch[f"{side}_loss_mask"] = loss_mask
        # Near a random model's log-likelihood, so the sigmoid is not saturated.
        expected = -(length - prompt) * np.log(cfg.vocab_size)
        batch[f"reference_{side}_logps"] = rng.normal(expected, 1.0, pairs).astype(np.float32)
    return batch


def dpo_step(cfg, params, pairs, length, peak, repeats=5, chunk_size=4096) -> dict:
    tx, _ = optim.make_optimizer(
        optim.OptimizerConfig(learning_rate=1e-6, schedule="constant", max_grad_norm=1.0), 100
    )
    step = steps.compile_step(
        steps.make_dpo_step(cfg, tx, beta=0.1, reference="precompute", chunk_size=chunk_size)
    )
    state = TrainState.create(jax.tree.map(jnp.copy, params), tx)
    batch = _dpo_batch(cfg, pairs, length, np.random.default_rng(0))
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times[1:])
    tokens = 2 * pairs * length
    n_matmul = models.count_params(cfg) - (
        0 if cfg.tie_embeddings else cfg.vocab_size * cfg.hidden_size
    )
    dense = 6 * n_matmul * tokens
    attn = 6 * length**2 * cfg.num_heads * cfg.head_dim * cfg.num_layers * 2 * pairs
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "attention": models.attention_impl(cfg, cached=False),
        "remat": cfg.remat_policy,
        "scan_unroll": cfg.scan_unroll,
        "chunk_size": chunk_size,
        "pairs": pairs,
        "length": length,
        "tokens_per_step": tokens,
        "s_per_step": seconds,
        "tokens_per_s": tokens / seconds,
        "compile_s": compile_s,
        "loss": float(metrics["loss"]),
        "mfu_6N_vs_datasheet": dense / seconds / DATASHEET_BF16,
        "mfu_with_attention_vs_datasheet": (dense + attn) / seconds / DATASHEET_BF16,
        "mfu_with_attention_vs_measured_peak": (dense + attn) / seconds / peak,
        "peak_gib": stats.get("peak_bytes_in_use", 0) / 2**30,
    }


def sample_speed(cfg, params, batch, prompt, new, hbm, temperature=0.9) -> dict:
    cfg = cfg.replace(dtype="bfloat16", param_dtype="bfloat16")
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    rng = np.random.default_rng(1)
    prompts = rng.integers(3, cfg.vocab_size, (batch, prompt)).tolist()
    top_p = 0.9 if temperature else 1.0
    sp = sampling.SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=new)

    def run():
        return sampling.generate(cfg, params, prompts, sp, rng=jax.random.key(0), max_batch=batch)

    first = run()
    out = run()
    assert all(len(t) == new for t in out.tokens), "no stop tokens: every row makes `new`"
    generated = out.stats.generated_tokens
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    kv_bytes = models.cache_bytes(cfg, batch, prompt + new)
    step_floor = (param_bytes + kv_bytes / 2) / hbm  # the cache is half full on average
    step = out.stats.seconds / new
    return {
        "temperature": temperature,
        "batch": batch,
        "prompt": prompt,
        "new": new,
        "first_call_s": first.stats.seconds,
        "seconds": out.stats.seconds,
        "tokens_per_s": generated / out.stats.seconds,
        "ms_per_decode_step_incl_prefill": 1e3 * step,
        "roofline_ms_per_step": 1e3 * step_floor,
        "fraction_of_roofline": step_floor / step,
    }


def layout_speed(cfg, params, batch: int, prompt: int, steps: int) -> dict:
    """ms per decode step of the engine's loop with the cache view slot-major (the accelerator
    default) and heads-major (the CPU default, `slots.heads_major_default`): which to keep."""
    cfg = cfg.replace(dtype="bfloat16", param_dtype="bfloat16")
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    out = {"batch": batch, "prompt": prompt, "steps": steps}
    for heads_major in (False, True):
        ms = _decode_step_ms(cfg, params, batch, prompt, steps, heads_major)
        out["heads_major_ms" if heads_major else "slot_major_ms"] = ms
    out["heads_major_over_slot_major"] = out["heads_major_ms"] / out["slot_major_ms"]
    return out


def _decode_step_ms(cfg, params, batch, prompt, steps, heads_major: bool) -> float:
    from spar_jax.sampling import slots as device

    rng = np.random.default_rng(3)
    engine = sampling.Engine(
        cfg, params, slots=batch, max_length=prompt + steps, heads_major=heads_major
    )
    sp = sampling.SamplingParams(temperature=0.9, top_p=0.9, max_new_tokens=steps)
    for i in range(batch):
        engine.submit(rng.integers(3, cfg.vocab_size, prompt).tolist(), sp, rng=jax.random.key(i))
    engine._refill()  # the prefill only: every slot is ready to decode

    def loop(state):
        return device.decode(
            cfg, engine.top, engine.layers, state, jnp.int32(steps), jnp.int32(batch + 1),
            view=engine.S, heads_major=heads_major,
        )  # fmt: skip

    def fresh():
        return jax.tree.map(jnp.copy, engine.state)

    jax.block_until_ready(loop(fresh()))  # compile
    best = float("inf")
    for _ in range(3):
        state = fresh()
        jax.block_until_ready(state)
        start = time.perf_counter()
        _, n = jax.block_until_ready(loop(state))
        best = min(best, (time.perf_counter() - start) / max(int(n), 1))
    return 1e3 * best


def ragged_speed(cfg, params, prompts: int, slots: int) -> dict:
    cfg = cfg.replace(dtype="bfloat16", param_dtype="bfloat16")
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    rng = np.random.default_rng(2)
    ids = [rng.integers(3, cfg.vocab_size, rng.integers(8, 65)).tolist() for _ in range(prompts)]
    new = np.minimum(rng.geometric(1 / 45, prompts), 128).tolist()

    def engine_run(drain_every: int | None) -> tuple[float, int]:
        engine = sampling.Engine(cfg, params, slots=slots, max_length=192)
        start, made = time.perf_counter(), 0
        for i, (p, m) in enumerate(zip(ids, new, strict=True)):
            sp = sampling.SamplingParams(temperature=1.0, max_new_tokens=m)
            engine.submit(p, sp, rng=jax.random.key(i))
            if drain_every and (i + 1) % drain_every == 0:
                made += sum(len(c.tokens) for c in engine.run())
        made += sum(len(c.tokens) for c in engine.run())
        return time.perf_counter() - start, made

    engine_run(None), engine_run(slots)  # compile
    cont_s, cont_tokens = engine_run(None)
    fixed_s, fixed_tokens = engine_run(slots)
    assert cont_tokens == fixed_tokens == sum(new)
    return {
        "prompts": prompts,
        "slots": slots,
        "useful_tokens": cont_tokens,
        "continuous_tokens_per_s": cont_tokens / cont_s,
        "fixed_batches_tokens_per_s": fixed_tokens / fixed_s,
        "speedup": fixed_s / cont_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None, help="JSON file, rewritten after each part")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: check the script")
    parser.add_argument(
        "--parts", default="peak,parity,dpo,xla,sample,greedy,layout,ragged,dpo_big"
    )
    parser.add_argument("--length", type=int, default=2048, help="DPO tokens per sequence")
    parser.add_argument("--pairs", type=int, default=4, help="DPO pairs per step")
    parser.add_argument("--chunk-size", type=int, default=4096, help="vocabulary chunk")
    parser.add_argument("--scan-unroll", type=int, default=1, help="ModelConfig.scan_unroll")
    parser.add_argument("--xla-length", type=int, default=1024, help="DPO length, xla attention")
    args = parser.parse_args()
    parts = args.parts.split(",")
    on_gpu = jax.default_backend() == "gpu"
    kind = jax.devices()[0].device_kind
    results: dict = {}
    _record(args.out, results, "machine", f"{machine()}; {kind}")
    fused = "cudnn" if on_gpu else "xla_causal"
    peak = matmul_peak(1024 if args.smoke else 8192) if "peak" in parts else DATASHEET_BF16
    _record(args.out, results, "bf16_matmul_peak_tflops", peak / 1e12)
    if "parity" in parts:
        _record(args.out, results, "parity", attention_parity(fused, args.smoke))

    if args.smoke:
        base = presets.tiny(vocab_size=512)
        pairs, length, big, sample = 2, 64, 4, (4, 16, 8)
    else:
        base = presets.llama3_2_1b()
        pairs, length, big, sample = args.pairs, args.length, 8, (64, 128, 256)
    cfg = base.replace(
        dtype="bfloat16", param_dtype="float32", attention=fused, scan_unroll=args.scan_unroll
    )
    params = jax.jit(models.init_params, static_argnums=0)(cfg, jax.random.key(0))
    _record(args.out, results, "model_params", models.count_params(cfg))
    # The unfused path keeps every layer's f32 [B, N, T, T] scores for the backward pass: at
    # 4 x 2048 that is 64 GiB, so it is compared with the fused path at a shorter length.
    xla_length = length if args.smoke else args.xla_length
    runs = [
        ("dpo", "dpo_cudnn", cfg, pairs, length),
        ("xla", "dpo_xla_short", cfg.replace(attention="xla"), pairs, xla_length),
        ("xla", "dpo_cudnn_short", cfg, pairs, xla_length),
    ]
    for part, key, c, p, n in runs:
        if part in parts:
            _record(
                args.out, results, key, dpo_step(c, params, p, n, peak, chunk_size=args.chunk_size)
            )
    hbm = next((v for k, v in DATASHEET_HBM.items() if k in kind), 4.8e12)
    for part, temperature in (("sample", 0.9), ("greedy", 0.0)):
        if part in parts:
            speed = sample_speed(cfg, params, *sample, hbm, temperature=temperature)
            _record(args.out, results, part, speed)
    if "layout" in parts:
        shape = (4, 16, 8) if args.smoke else (64, 512, 64)
        _record(args.out, results, "layout", layout_speed(cfg, params, *shape))
    if "ragged" in parts:
        shape = (16, 4) if args.smoke else (512, 64)
        _record(args.out, results, "ragged", ragged_speed(cfg, params, *shape))
    if "dpo_big" in parts:
        _record(args.out, results, "dpo_cudnn_big", dpo_step(cfg, params, big, length, peak))


if __name__ == "__main__":
    main()

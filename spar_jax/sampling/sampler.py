"""`generate`: n completions per prompt, through the continuous-batching engine.

    out = sampling.generate(cfg, params, [[1, 5, 9], [1, 7]],
                            sampling.SamplingParams(temperature=0.9, top_p=0.9,
                                                    max_new_tokens=64, stop_token_ids=(2,)),
                            rng=jax.random.key(0), n=5)
    out.tokens[0:5]   # the 5 samples of prompt 0

The prompts become requests of one `Engine` with min(max_batch, rows) slots (a power of
two) and a cache as long as the longest prompt plus its new tokens (a length bucket), so
a long run compiles a bounded number of programs. Sample j of prompt i draws with
fold_in(rng, i * n + j), so its tokens do not depend on the other prompts or the slots.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from spar_jax import models
from spar_jax.errors import SparError
from spar_jax.models import ModelConfig
from spar_jax.sampling import slots as device
from spar_jax.sampling.engine import Engine, sample_keys
from spar_jax.sampling.params import (
    SampleResult,
    SampleStats,
    SamplingParams,
    batch_bucket,
    check_context,
    check_prompt,
    length_bucket,
)

log = logging.getLogger(__name__)


class CacheBudgetError(SparError, ValueError):
    """A request whose KV cache would exceed `max_cache_bytes`; nothing was allocated."""


def _gib(x: int) -> str:
    return f"{x / 2**30:.3g} GiB"


def engine_bytes(cfg: ModelConfig, slots: int, length: int) -> int:
    """The slots' KV cache plus their logits and token buffers."""
    per_slot = cfg.vocab_size * 4 + length * 8
    return models.cache_bytes(cfg, slots, length) - slots * length - 4 + slots * per_slot


def _check_budget(cfg, slots, length, n, max_batch, max_cache_bytes) -> int:
    need = engine_bytes(cfg, slots, length)
    if max_cache_bytes is not None and need > max_cache_bytes:
        smaller = [b for b in (slots >> i for i in range(1, slots.bit_length())) if b >= 1]
        fits = [b for b in smaller if engine_bytes(cfg, b, length) <= max_cache_bytes]
        hint = f"; max_batch={fits[0]} fits" if fits else ""
        raise CacheBudgetError(
            f"sampling needs a {_gib(need)} KV cache ({slots} slots x {length} positions, "
            f"{cfg.num_layers} layers x {cfg.num_kv_heads} kv heads x {cfg.head_dim} dims "
            f"in {cfg.dtype}) but max_cache_bytes={max_cache_bytes} ({_gib(max_cache_bytes)}); "
            f"lower max_batch (now {max_batch}{hint}), max_new_tokens or the prompt length, "
            "or raise max_cache_bytes"
        )
    return need


def generate(
    cfg: ModelConfig,
    params,
    prompts: Sequence[Sequence[int]],
    sampling_params: SamplingParams,
    rng: jax.Array | None = None,
    n: int = 1,
    *,
    max_batch: int = 64,
    max_cache_bytes: int | None = None,
    min_length_bucket: int = 16,
    fixed_slots: bool = False,
    min_prefix: int = 16,
    progress: Callable[[int], None] | None = None,
) -> SampleResult:
    """Samples n completions for each prompt.

    Args:
      cfg: model config.
      params: model parameters (`models.load_hf(...)[1]`).
      prompts: P token-id lists of any lengths (>= 1 token each).
      sampling_params: temperature / top_p / top_k / max_new_tokens, each a
        scalar or P values; stop token ids.
      rng: PRNG key, required when any temperature > 0. Sample j of prompt i
        depends only on (rng, i * n + j, the model), not on batching.
      n: samples per prompt; they share one prefill of the prompt.
      max_batch: decode slots (samples in flight at once).
      max_cache_bytes: budget for the slots' KV cache; a request over it raises
        CacheBudgetError before anything is allocated.
      min_length_bucket: the smallest length bucket.
      fixed_slots: always decode `max_batch` slots, however few requests there are. Every
        call then runs the same slot count, so a run of many small calls (tree-search levels)
        compiles fewer programs; the price is idle slots in small calls. Off by default: on
        an accelerator the idle slots cost more than a compile.
      min_prefix: the shortest shared prompt head copied from another slot's cache instead
        of recomputed (a huge value turns the reuse off, and with it the prefill programs
        that start mid-prompt).
      progress: called with 1 each time all n samples of a prompt have finished.
    Returns:
      SampleResult with P * n rows in prompt-major order; `logprobs` are
      log-probs of the sampled tokens under the model's own (untempered,
      unfiltered) distribution, as a policy's sequence log-prob needs.

    Raises:
      ContextLengthError: a prompt plus its max_new_tokens past max_position_embeddings.
      CacheBudgetError: the cache would exceed max_cache_bytes.
    """
    start, compiles0 = time.perf_counter(), device.compile_count()
    prompts = [check_prompt(cfg, i, p) for i, p in enumerate(prompts)]
    if n < 1 or n > max_batch:
        raise ValueError(f"n={n} must be in [1, max_batch={max_batch}]; raise max_batch")
    knobs = sampling_params.per_prompt(len(prompts))
    if rng is None:
        if np.any(knobs["temperature"] > 0):
            raise ValueError("temperature > 0 samples: pass rng=jax.random.key(seed)")
        rng = jax.random.key(0)
    stats = SampleStats()
    if not prompts:
        return SampleResult([], [], [], n, stats)
    lengths = [len(p) for p in prompts]
    check_context(cfg, lengths, knobs["max_new_tokens"].tolist())

    total = len(prompts) * n
    slots = max_batch if fixed_slots else batch_bucket(total, max_batch)
    need = max(
        length + int(new) for length, new in zip(lengths, knobs["max_new_tokens"], strict=True)
    )
    length = length_bucket(need, min_length_bucket)
    stats.peak_cache_bytes = _check_budget(cfg, slots, length, n, max_batch, max_cache_bytes)
    stop = sampling_params.stop_token_ids
    engine = Engine(
        cfg,
        params,
        slots=slots,
        max_length=length,
        num_stop_ids=max(4, batch_bucket(len(stop), 1 << 30)),
        min_bucket=min_length_bucket,
        min_prefix=min_prefix,
    )
    keys = sample_keys(rng, np.arange(total))  # [P * n, 2]
    # Longest prompts first: prefill batches of similar lengths, long requests start early.
    for i in sorted(range(len(prompts)), key=lambda i: -lengths[i]):
        sp = SamplingParams(
            temperature=float(knobs["temperature"][i]),
            top_p=float(knobs["top_p"][i]),
            top_k=int(knobs["top_k"][i]),
            max_new_tokens=int(knobs["max_new_tokens"][i]),
            stop_token_ids=stop,
        )
        engine.submit(prompts[i], sp, n=n, tag=i, sample_keys_=keys[i * n : (i + 1) * n])

    out_tokens: list = [None] * total
    out_logprobs: list = [None] * total
    out_reason: list = [None] * total
    left = [n] * len(prompts)
    while engine.queued or engine.running:
        for c in engine.step():
            g = c.tag * n + c.sample
            out_tokens[g], out_logprobs[g], out_reason[g] = c.tokens, c.logprobs, c.finish_reason
            left[c.tag] -= 1
            if progress is not None and left[c.tag] == 0:
                progress(1)

    e = engine.stats
    stats.compiles = device.compile_count() - compiles0
    stats.chunks = e.decode_calls
    stats.prefill_rows, stats.prefill_tokens = e.prefill_rows, e.prefill_tokens
    stats.prefix_tokens_reused = e.prefix_tokens_reused
    stats.decode_rows, stats.decode_steps = slots, e.decode_steps
    stats.generated_tokens = e.generated_tokens
    stats.seconds = time.perf_counter() - start
    log.info(
        "sampled %d rows (%d tokens) in %.2fs, %d decode calls, %d new programs",
        total,
        stats.generated_tokens,
        stats.seconds,
        stats.chunks,
        stats.compiles,
    )
    return SampleResult(out_tokens, out_logprobs, out_reason, n, stats)

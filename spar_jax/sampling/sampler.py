"""`generate`: batched sampling of n completions per prompt.

    out = sampling.generate(cfg, params, [[1, 5, 9], [1, 7]],
                            sampling.SamplingParams(temperature=0.9, top_p=0.9,
                                                    max_new_tokens=64, stop_token_ids=(2,)),
                            rng=jax.random.key(0), n=5)
    out.tokens[0:5]   # the 5 samples of prompt 0

Prompts are sorted by length, cut into chunks of at most `max_batch // n`
prompts, and each chunk is left-padded to a length bucket and a batch bucket
(see `length_bucket`, `batch_bucket`), so a long run compiles a bounded
number of programs. Each chunk is one prefill of its distinct prompts and one
on-device decode loop over n copies of their KV caches (decode.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spar_jax import models
from spar_jax.errors import SparError
from spar_jax.models import ModelConfig
from spar_jax.sampling import decode

log = logging.getLogger(__name__)

Floats = float | Sequence[float]
Ints = int | Sequence[int]


class CacheBudgetError(SparError, ValueError):
    """A request whose KV cache would exceed `max_cache_bytes`; nothing was allocated."""


class ContextLengthError(ValueError):
    """A prompt plus its `max_new_tokens` does not fit the model's positions; nothing ran."""


def check_context(cfg: ModelConfig, lengths: Sequence[int], max_new: Sequence[int]) -> None:
    """Raises ContextLengthError for the first prompt i with lengths[i] + max_new[i] past
    `cfg.max_position_embeddings` (nothing is ever generated past the model's positions)."""
    limit = cfg.max_position_embeddings
    for i, (length, new) in enumerate(zip(lengths, max_new, strict=True)):
        if length + new > limit:
            raise ContextLengthError(
                f"prompt {i} has {length} tokens and max_new_tokens={new}: {length + new} "
                f"positions, past the model's max_position_embeddings={limit}; skip or "
                f"left-truncate the prompt to at most {max(limit - new, 0)} tokens, or lower "
                f"max_new_tokens to at most {limit - length}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How to sample. Each knob is a scalar or one value per prompt.

    temperature: 0 is greedy (argmax); otherwise logits are divided by it.
    top_p: nucleus mass in (0, 1]; 1 disables.
    top_k: keep the k best tokens; 0 disables.
    max_new_tokens: tokens to generate at most (a stop token is not counted).
    stop_token_ids: generation of a row ends at the first of these (excluded
      from the output).
    """

    temperature: Floats = 0.0
    top_p: Floats = 1.0
    top_k: Ints = 0
    max_new_tokens: Ints = 256
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("temperature", "top_p", "top_k", "max_new_tokens", "stop_token_ids"):
            value = getattr(self, name)
            if not np.isscalar(value) or name == "stop_token_ids":
                # Tuples keep the dataclass hashable; a lone stop id becomes a 1-tuple.
                object.__setattr__(self, name, tuple(np.asarray(value).reshape(-1).tolist()))
        checks = {
            "temperature": (lambda a: np.all(a >= 0), ">= 0"),
            "top_p": (lambda a: np.all((a > 0) & (a <= 1)), "in (0, 1]"),
            "top_k": (lambda a: np.all(a >= 0), ">= 0 (0 = off)"),
            "max_new_tokens": (lambda a: np.all(a >= 1), ">= 1"),
        }
        for name, (ok, what) in checks.items():
            if not ok(np.asarray(getattr(self, name))):
                raise ValueError(f"SamplingParams.{name}={getattr(self, name)!r}: must be {what}")

    def per_prompt(self, num_prompts: int) -> dict[str, np.ndarray]:
        """Each knob as a [num_prompts] array (scalars broadcast)."""
        dtypes = {"temperature": np.float32, "top_p": np.float32}
        out = {}
        for name in ("temperature", "top_p", "top_k", "max_new_tokens"):
            value = np.asarray(getattr(self, name), dtypes.get(name, np.int32))
            if value.ndim and value.shape != (num_prompts,):
                raise ValueError(
                    f"SamplingParams.{name} has {value.shape[0]} values for "
                    f"{num_prompts} prompts; pass one value or one per prompt"
                )
            out[name] = np.broadcast_to(value, (num_prompts,))
        return out


@dataclasses.dataclass
class SampleStats:
    """What a `generate` call did, for tests, logs and benchmarks."""

    compiles: int = 0  # programs compiled during the call
    chunks: int = 0
    prefill_rows: int = 0  # prompt rows run through the model (incl. bucket padding)
    prefill_tokens: int = 0  # prefill rows x padded length
    decode_rows: int = 0  # rows decoded (incl. bucket padding)
    generated_tokens: int = 0  # tokens returned (stop tokens excluded)
    peak_cache_bytes: int = 0  # largest KV cache of one chunk (prefill + decode)
    seconds: float = 0.0


@dataclasses.dataclass
class SampleResult:
    """Completions in prompt-major order: prompt 0 samples 0..n-1, prompt 1, ..."""

    tokens: list[list[int]]  # [len(prompts) * n] generated ids, stop token excluded
    logprobs: list[list[float]]  # matching log-probs under the untempered model
    finish_reason: list[str]  # "stop" (hit a stop token) or "length"
    n: int
    stats: SampleStats

    def samples(self, i: int) -> list[list[int]]:
        """The n token lists of prompt i."""
        return self.tokens[i * self.n : (i + 1) * self.n]


def length_bucket(length: int, floor: int = 16) -> int:
    """Smallest of floor * {1, 1.5, 2, 3, 4, 6, ...} that holds `length` (<= 1.5x waste)."""
    b = floor
    while True:
        if length <= b:
            return b
        if length <= b * 3 // 2:
            return b * 3 // 2
        b *= 2


def batch_bucket(size: int, cap: int) -> int:
    """Smallest power of two >= size, capped at `cap`."""
    return min(cap, 1 << max(0, size - 1).bit_length())


def _gib(x: int) -> str:
    return f"{x / 2**30:.3g} GiB"


def _check_prompts(cfg: ModelConfig, prompts) -> list[list[int]]:
    out = []
    for i, p in enumerate(prompts):
        ids = np.asarray(p).reshape(-1)
        if ids.size == 0:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"prompt {i} holds {ids.dtype} values; pass token ids (ints)")
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise ValueError(f"prompt {i} has ids outside [0, {cfg.vocab_size}) (the vocabulary)")
        out.append(ids.astype(np.int32).tolist())
    return out


@dataclasses.dataclass(frozen=True)
class _Chunk:
    prompts: list[int]  # indices into the prompt list
    batch: int  # P: prompts rounded up to a batch bucket
    length: int  # T: longest prompt rounded up to a length bucket


def _plan(lengths, n, max_batch, min_length_bucket) -> list[_Chunk]:
    per_chunk = max_batch // n
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    chunks = []
    for start in range(0, len(order), per_chunk):
        idx = order[start : start + per_chunk]
        chunks.append(
            _Chunk(
                idx,
                batch_bucket(len(idx), per_chunk),
                length_bucket(max(lengths[i] for i in idx), min_length_bucket),
            )
        )
    return chunks


def _chunk_bytes(cfg, c: _Chunk, n: int, max_new_bucket: int) -> int:
    """The prefill cache plus the n-fold decode cache of one chunk."""
    decode_bytes = models.cache_bytes(cfg, c.batch * n, c.length + max_new_bucket)
    return decode_bytes + models.cache_bytes(cfg, c.batch, c.length)


def _peak(cfg, lengths, n, max_new_bucket, max_batch, floor) -> tuple[int, _Chunk]:
    chunks = _plan(lengths, n, max_batch, floor)
    worst = max(chunks, key=lambda c: _chunk_bytes(cfg, c, n, max_new_bucket))
    return _chunk_bytes(cfg, worst, n, max_new_bucket), worst


def _check_budget(cfg, lengths, n, max_new_bucket, max_cache_bytes, max_batch, floor) -> int:
    """Peak KV-cache bytes of any chunk; raises CacheBudgetError over budget."""
    peak, worst = _peak(cfg, lengths, n, max_new_bucket, max_batch, floor)
    if max_cache_bytes is not None and peak > max_cache_bytes:
        rows, slots = worst.batch * n, worst.length + max_new_bucket
        smaller = [max_batch >> i for i in range(1, max_batch.bit_length()) if max_batch >> i >= n]
        fits = [
            b
            for b in smaller
            if _peak(cfg, lengths, n, max_new_bucket, b, floor)[0] <= max_cache_bytes
        ]
        hint = f"; max_batch={fits[0]} fits" if fits else ""
        raise CacheBudgetError(
            f"sampling needs a {_gib(peak)} KV cache ({rows} rows = {worst.batch} prompts x "
            f"n={n}, {slots} slots = {worst.length} prompt + {max_new_bucket} new tokens, "
            f"{cfg.num_layers} layers x {cfg.num_kv_heads} kv heads x {cfg.head_dim} dims "
            f"in {cfg.dtype}) but max_cache_bytes={max_cache_bytes} ({_gib(max_cache_bytes)}); "
            f"lower max_batch (now {max_batch}{hint}), n, max_new_tokens or the prompt length, "
            "or raise max_cache_bytes"
        )
    return peak


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
      max_batch: most decode rows (prompts x n) run at once; more prompts are
        processed in chunks of max_batch // n prompts.
      max_cache_bytes: KV-cache budget per chunk; a request over it raises
        CacheBudgetError before anything is allocated.
      min_length_bucket: the smallest prompt / new-token length bucket.
      progress: called with the number of prompts finished after each chunk.
    Returns:
      SampleResult with P * n rows in prompt-major order; `logprobs` are
      log-probs of the sampled tokens under the model's own (untempered,
      unfiltered) distribution, as a policy's sequence log-prob needs.
    """
    start, compiles0 = time.perf_counter(), decode.compile_count()
    prompts = _check_prompts(cfg, prompts)
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
    max_new_bucket = length_bucket(int(knobs["max_new_tokens"].max()), min_length_bucket)
    check_context(cfg, lengths, knobs["max_new_tokens"].tolist())
    stats.peak_cache_bytes = _check_budget(
        cfg, lengths, n, max_new_bucket, max_cache_bytes, max_batch, min_length_bucket
    )
    chunks = _plan(lengths, n, max_batch, min_length_bucket)
    stop = sampling_params.stop_token_ids
    stop_ids = np.full(max(4, batch_bucket(len(stop), 1 << 30)), -1, np.int32)
    stop_ids[: len(stop)] = stop

    total = len(prompts) * n
    out_tokens: list = [None] * total
    out_logprobs: list = [None] * total
    out_reason: list = [None] * total
    for chunk in chunks:
        P, T = chunk.batch, chunk.length
        tokens = np.zeros((P, T), np.int32)
        mask = np.zeros((P, T), bool)
        for r, i in enumerate(chunk.prompts):
            tokens[r, T - lengths[i] :] = prompts[i]
            mask[r, T - lengths[i] :] = True
        empty = models.init_cache(cfg, P, T)
        logits, cache = decode.prefill(cfg, params, jnp.asarray(tokens), jnp.asarray(mask), empty)

        B, real = P * n, len(chunk.prompts) * n
        prompt_of_row = np.repeat(np.asarray(chunk.prompts + [0] * (P - len(chunk.prompts))), n)
        row_ids = prompt_of_row * n + np.tile(np.arange(n), P)
        valid = np.arange(B) < real
        rows = decode.RowSettings(
            temperature=np.where(valid, knobs["temperature"][prompt_of_row], 0).astype(np.float32),
            top_p=np.where(valid, knobs["top_p"][prompt_of_row], 1.0).astype(np.float32),
            top_k=np.where(valid, knobs["top_k"][prompt_of_row], 0).astype(np.int32),
            max_new=np.where(valid, knobs["max_new_tokens"][prompt_of_row], 1).astype(np.int32),
            row_ids=np.where(valid, row_ids, total + np.arange(B)).astype(np.int32),
            valid=valid,
        )
        result = decode.decode(
            cfg, params, logits, cache, rows, stop_ids, rng, n=n, max_new_bucket=max_new_bucket
        )
        gen, logp, gen_len, stopped = jax.device_get(result)
        for r in range(real):
            g = int(row_ids[r])
            out_tokens[g] = gen[r, : gen_len[r]].tolist()
            out_logprobs[g] = logp[r, : gen_len[r]].tolist()
            out_reason[g] = "stop" if stopped[r] else "length"
        stats.chunks += 1
        stats.prefill_rows += P
        stats.prefill_tokens += P * T
        stats.decode_rows += B
        stats.generated_tokens += int(gen_len[:real].sum())
        if progress is not None:
            progress(len(chunk.prompts))

    stats.compiles = decode.compile_count() - compiles0
    stats.seconds = time.perf_counter() - start
    log.info(
        "sampled %d rows (%d tokens) in %.2fs, %d chunks, %d new programs",
        total,
        stats.generated_tokens,
        stats.seconds,
        stats.chunks,
        stats.compiles,
    )
    return SampleResult(out_tokens, out_logprobs, out_reason, n, stats)

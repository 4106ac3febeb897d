"""Batched sampling: one prefill per prompt, n samples per prefill, decode on device.

out = sampling.generate(cfg, params, prompts, sampling.SamplingParams(...), rng=key, n=5)
"""

from spar_jax.sampling.decode import compile_count
from spar_jax.sampling.filters import filter_logits, inverse_cdf, sample_tokens, token_logprobs
from spar_jax.sampling.sampler import (
    CacheBudgetError,
    ContextLengthError,
    SampleResult,
    SampleStats,
    SamplingParams,
    batch_bucket,
    check_context,
    generate,
    length_bucket,
)

__all__ = [
    "CacheBudgetError",
    "ContextLengthError",
    "SampleResult",
    "SampleStats",
    "SamplingParams",
    "batch_bucket",
    "check_context",
    "compile_count",
    "filter_logits",
    "generate",
    "inverse_cdf",
    "length_bucket",
    "sample_tokens",
    "token_logprobs",
]

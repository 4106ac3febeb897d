"""Sampling: continuous batching over decode slots, one prefill per prompt, n samples each.

out = sampling.generate(cfg, params, prompts, sampling.SamplingParams(...), rng=key, n=5)
engine = sampling.Engine(cfg, params, slots=32); engine.submit(...); engine.step()
"""

from spar_jax.sampling.engine import Completion, Engine, EngineStats
from spar_jax.sampling.filters import filter_logits, inverse_cdf, sample_tokens, token_logprobs
from spar_jax.sampling.params import (
    ContextLengthError,
    SampleResult,
    SampleStats,
    SamplingParams,
    batch_bucket,
    check_context,
    length_bucket,
)
from spar_jax.sampling.sampler import CacheBudgetError, generate
from spar_jax.sampling.slots import compile_count

__all__ = [
    "CacheBudgetError",
    "Completion",
    "ContextLengthError",
    "Engine",
    "EngineStats",
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

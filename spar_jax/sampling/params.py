"""Sampling settings and results, length buckets, and the checks every request goes through."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from spar_jax.errors import SparError
from spar_jax.models import ModelConfig

Floats = float | Sequence[float]
Ints = int | Sequence[int]


class ContextLengthError(SparError, ValueError):
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
    chunks: int = 0  # decode-loop calls (returns to the host)
    prefill_rows: int = 0  # prompt rows computed (padding excluded)
    prefill_tokens: int = 0  # prompt tokens computed (padding excluded)
    prefix_tokens_reused: int = 0  # prompt tokens copied from another slot's cache instead
    decode_rows: int = 0  # decode slots
    decode_steps: int = 0  # steps of the decode loop
    generated_tokens: int = 0  # tokens returned (stop tokens excluded)
    peak_cache_bytes: int = 0  # the slots' KV cache
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


def check_prompt(cfg: ModelConfig, i, prompt) -> list[int]:
    """Prompt `i` as a list of ints; a one-line ValueError naming it when it is not usable."""
    ids = np.asarray(prompt).reshape(-1)
    if ids.size == 0:
        raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"prompt {i} holds {ids.dtype} values; pass token ids (ints)")
    if ids.min() < 0 or ids.max() >= cfg.vocab_size:
        raise ValueError(f"prompt {i} has ids outside [0, {cfg.vocab_size}) (the vocabulary)")
    return ids.astype(np.int32).tolist()

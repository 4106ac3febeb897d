"""Chat generation for self-play: conversations in, n sampled texts per conversation out.

    model = ChatModel(cfg, params, tokenizer, max_batch=64)
    texts = model.generate(conversations, SamplingParams(temperature=0.7, max_new_tokens=2048),
                           n=5, seed=derive_seed(base_seed, "judge", level))
    texts[i][j]   # sample j of conversation i ("" where the conversation was skipped)

Anything with this `generate` method is a `ChatGenerator`; `ScriptedChat` is the
model-free one the tests use. Randomness comes only from the integer seed: the
texts depend on (seed, the conversations in order, the model), never on how the
sampler splits them into chunks, so a resumed run that repeats a call repeats
its outputs.

A conversation whose prompt does not fit the context follows the project's
policy (`sampling.context`, setting `prompt_overflow`): "skip" (the default)
returns "" for each of its samples; "truncate_left" keeps the prompt's last
tokens that fit. Both are counted in `stats` ("skipped_too_long", "truncated").
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

import jax
import numpy as np

from spar_jax import sampling
from spar_jax.sampling import SamplingParams, context

Conversation = list[dict]


def derive_seed(*parts: object) -> int:
    """A seed in [0, 2**31) from any parts (ints, strings): stable across runs and machines."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class ChatGenerator(Protocol):
    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling_params: SamplingParams,
        n: int,
        seed: int,
    ) -> list[list[str]]:
        """[len(conversations)][n] sampled assistant replies."""
        ...


class ChatModel:
    """A chat model (config, params, tokenizer) sampled with `sampling.generate`.

    One `generate` call is one `sampling.generate` call over every conversation
    (which chunks them by `max_batch` rows); the n samples of a conversation share
    its prefill. The tokenizer's stop tokens are used when `sampling_params` names none.
    `stats` counts calls, conversations, samples, generated tokens, prompt tokens computed
    (`prefill_tokens`) and copied from a shared head (`prefix_tokens_reused`), and skips;
    `last_skipped` lists the conversations the last call skipped (indices).
    """

    def __init__(
        self,
        cfg,
        params,
        tokenizer,
        *,
        max_batch: int = 64,
        max_cache_bytes: int | None = None,
        prompt_overflow: str = "skip",
        fixed_slots: bool = False,
        min_prefix: int = 16,
    ):
        if prompt_overflow not in context.POLICIES:
            raise context.ContextError(
                f"prompt_overflow={prompt_overflow!r}; use one of {context.POLICIES}"
            )
        self.cfg, self.params, self.tokenizer = cfg, params, tokenizer
        self.max_batch, self.max_cache_bytes = max_batch, max_cache_bytes
        self.prompt_overflow = prompt_overflow
        # Sampler knobs that trade idle work for fewer compiled programs (sampling.generate).
        self.fixed_slots, self.min_prefix = fixed_slots, min_prefix
        self.stats: collections.Counter = collections.Counter()
        self.last_skipped: list[int] = []

    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling_params: SamplingParams,
        n: int = 1,
        seed: int = 0,
    ) -> list[list[str]]:
        """[len(conversations)][n] replies; "" for every sample of a skipped conversation."""
        out: list[list[str]] = [[""] * n for _ in conversations]
        self.last_skipped = []
        if not conversations:
            return out
        ids, keep, report = context.fit_prompts(
            [self.tokenizer.encode_prompt(c) for c in conversations],
            max_new_tokens=int(np.max(sampling_params.max_new_tokens)),
            max_positions=self.cfg.max_position_embeddings,
            policy=self.prompt_overflow,
        )
        self.last_skipped = list(report.skipped)
        self.stats["skipped_too_long"] += len(report.skipped)
        self.stats["truncated"] += len(report.truncated)
        self.stats["calls"] += 1
        self.stats["conversations"] += len(conversations)
        if not keep:
            return out
        params = _select_rows(sampling_params, keep, len(conversations))
        if not params.stop_token_ids:
            params = dataclasses.replace(params, stop_token_ids=self.tokenizer.stop_token_ids)
        result = sampling.generate(
            self.cfg,
            self.params,
            ids,
            params,
            rng=jax.random.key(seed),
            n=n,
            max_batch=max(self.max_batch, n),
            max_cache_bytes=self.max_cache_bytes,
            fixed_slots=self.fixed_slots,
            min_prefix=self.min_prefix,
        )
        for r, i in enumerate(keep):
            out[i] = [self.tokenizer.decode(t, skip_special_tokens=True) for t in result.samples(r)]
        self.stats["samples"] += len(keep) * n
        self.stats["generated_tokens"] += result.stats.generated_tokens
        self.stats["prefill_tokens"] += result.stats.prefill_tokens
        self.stats["prefix_tokens_reused"] += result.stats.prefix_tokens_reused
        return out


def load_chat_model(
    model: str,
    tokenizer: str = "",
    *,
    dtype: str = "bfloat16",
    mesh=None,
    max_batch: int = 64,
    max_cache_bytes: int | None = None,
    prompt_overflow: str = "skip",
    fixed_slots: bool = False,
    min_prefix: int = 16,
) -> ChatModel:
    """A `ChatModel` over a Hugging Face checkpoint dir or a native one (`model_config.json`,
    as the trainers export; name its `tokenizer` then), weights in `dtype`, placed by the
    "sample" sharding rules on `mesh` when one is given."""
    import os

    import jax.numpy as jnp

    from spar_jax import models, sharding
    from spar_jax.models import native
    from spar_jax.tokenizer import Tokenizer

    dtype = jnp.dtype(dtype)

    def shardings(cfg):
        return sharding.param_shardings(cfg, mesh, sharding.SAMPLE_RULES)

    if os.path.isfile(os.path.join(model, native.CONFIG_FILE)):
        cfg = native.load_config(model)
        cfg, params = native.load_native(model, shardings=shardings(cfg) if mesh else None)
        if cfg.dtype != dtype:
            params = jax.tree.map(lambda x: x.astype(dtype), params)
            cfg = cfg.replace(dtype=dtype.name, param_dtype=dtype.name)
    else:
        cfg, params = models.load_hf(model, dtype=dtype, shardings=shardings if mesh else None)
    return ChatModel(
        cfg,
        params,
        Tokenizer.load(tokenizer or model),
        max_batch=max_batch,
        max_cache_bytes=max_cache_bytes,
        prompt_overflow=prompt_overflow,
        fixed_slots=fixed_slots,
        min_prefix=min_prefix,
    )


def _select_rows(params: SamplingParams, keep: list[int], total: int) -> SamplingParams:
    """`params` with its per-conversation knobs restricted to the rows in `keep`."""
    changes = {}
    for name in ("temperature", "top_p", "top_k", "max_new_tokens"):
        value = getattr(params, name)
        if isinstance(value, tuple) and len(value) == total:
            changes[name] = tuple(value[i] for i in keep)
    return dataclasses.replace(params, **changes) if changes else params


class ScriptedChat:
    """A model-free `ChatGenerator`: `reply(conversation, rng)` writes each sample.

    `rng` is a numpy Generator seeded from (seed, conversation index, sample index),
    mirroring the real sampler's dependence on position and seed. `calls` records
    (number of conversations, n) per `generate` call.
    """

    def __init__(self, reply: Callable[[Conversation, np.random.Generator], str]):
        self.reply = reply
        self.calls: list[tuple[int, int]] = []

    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling_params: SamplingParams | None = None,
        n: int = 1,
        seed: int = 0,
    ) -> list[list[str]]:
        self.calls.append((len(conversations), n))
        return [
            [self.reply(conv, np.random.default_rng([seed, i, j])) for j in range(n)]
            for i, conv in enumerate(conversations)
        ]

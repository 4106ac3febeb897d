"""Loading a chat model for evaluation, and greedy answers to plain prompts.

    chat = load_chat("/ckpt/model")                       # spar.generator.ChatModel
    answers = greedy_answers(chat, ["Write a haiku."], max_new_tokens=1280)

Each prompt is one user turn (after an optional system turn) in the model's
chat format (`spar_jax.tokenizer`). All prompts go to the sampler in one call
(batched by `max_batch` rows). A prompt too long for the context is skipped and
answered with "" (a blank answer fails every IFEval instruction); the count is in
`chat.stats["skipped_too_long"]`.
"""

from __future__ import annotations

from collections.abc import Sequence

from spar_jax.sampling import SamplingParams


def load_chat(
    model: str,
    tokenizer: str = "",
    *,
    dtype: str = "bfloat16",
    max_batch: int = 64,
    max_cache_gib: float = 0.0,
    mesh=None,
    **sampler,
):
    """A `spar.generator.ChatModel` over `model`: a Hugging Face checkpoint directory or a
    native one (`model_config.json`, as the trainers export; name its `tokenizer` then),
    placed by the sampling rules on `mesh` when one is given.
    `sampler`: `fixed_slots` / `min_prefix` (see `sampling.generate`)."""
    from spar_jax.spar.generator import load_chat_model

    return load_chat_model(
        model,
        tokenizer,
        dtype=dtype,
        mesh=mesh,
        max_batch=max_batch,
        max_cache_bytes=int(max_cache_gib * 2**30) or None,
        **sampler,
    )


def conversation(prompt: str, system_prompt: str = "") -> list[dict]:
    """[system turn,] user turn."""
    turns = [{"role": "user", "content": prompt}]
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + turns


def greedy_answers(
    chat, prompts: Sequence[str], *, max_new_tokens: int = 1280, system_prompt: str = ""
) -> list[str]:
    """[len(prompts)] greedy replies of `chat` (any `spar.generator.ChatGenerator`)."""
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)
    convs = [conversation(p, system_prompt) for p in prompts]
    return [texts[0] for texts in chat.generate(convs, params, n=1, seed=0)]

"""The embedded synthetic instruction world: verifiable prompts, rule verifiers, a seed-data
teacher, and the tiny tokenizer and model the demo trains on it.

    rows = tasks.make_prompts(100, seed=0)              # [{"prompt", "prompt_id", "task"}]
    passed, critique = tasks.check(rows[0], response)   # rule verdict + a perfect judgment
    sft = tasks.seed_rows(rows, seed=0)                 # actor / judge / refine SFT rows

See ``world`` (kinds and prompts), ``constraints`` (the verifiers), ``teacher`` (seed data).
"""

from spar_jax.tasks.constraints import upper_ratio
from spar_jax.tasks.teacher import correct_answer, plant_error, respond, seed_rows
from spar_jax.tasks.world import HELD_OUT_SEED, KINDS, check, make_prompts, render_prompt, verify

__all__ = [
    "HELD_OUT_SEED",
    "KINDS",
    "check",
    "correct_answer",
    "make_prompts",
    "plant_error",
    "render_prompt",
    "respond",
    "seed_rows",
    "upper_ratio",
    "verify",
]

"""Prompts that do not fit the model's context: one policy for every command that samples.

A request fits when `len(prompt) + max_new_tokens <= max_position_embeddings`: the
longest possible completion then never runs past the model's positions. A prompt that
does not fit is handled by the `prompt_overflow` setting of the command's config:

* "skip" (the default): the prompt is left out, and counted in the summary.
* "truncate_left": its oldest tokens are cut so that exactly
  `max_position_embeddings - max_new_tokens` remain (the end of the prompt, where the
  chat template asks for the answer, is kept), and it is counted as truncated. The start
  of the chat template (BOS, a system turn) is lost with it.

    kept, index, report = context.fit_prompts(ids, max_new_tokens=512, max_positions=2048)
    out = sampling.generate(cfg, params, kept, ...)  # out row i answers ids[index[i]]
    print(report.summary())                          # "2 of 100 prompts ... skipped"

Nothing is ever sent to the sampler that could generate past the model's positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from spar_jax.errors import SparError

POLICIES = ("skip", "truncate_left")


class ContextError(SparError, ValueError):
    """A policy name or token budget that leaves no room for any prompt."""


@dataclasses.dataclass
class ContextReport:
    """What `fit_prompts` did to the prompts that did not fit.

    Attributes:
      total: prompts given.
      skipped: input indices of prompts left out (policy "skip").
      truncated: input indices of prompts cut from the left (policy "truncate_left").
      longest: the longest prompt seen, in tokens.
      budget: the most prompt tokens that fit: max_positions - max_new_tokens.
      policy: the policy applied.
    """

    total: int
    skipped: list[int]
    truncated: list[int]
    longest: int
    budget: int
    policy: str

    def summary(self) -> str:
        """One line: how many prompts did not fit and what was done with them."""
        over = len(self.skipped) + len(self.truncated)
        if not over:
            return f"all {self.total} prompts fit the context ({self.budget} prompt tokens)"
        done = (
            f"skipped {len(self.skipped)} (prompt_overflow='skip'; 'truncate_left' keeps "
            "their last tokens)"
            if self.policy == "skip"
            else f"truncated {len(self.truncated)} from the left (prompt_overflow='truncate_left')"
        )
        return (
            f"{over} of {self.total} prompts longer than the {self.budget} tokens that fit "
            f"the context (longest {self.longest}): {done}"
        )


def fit_prompts(
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    max_positions: int,
    policy: str = "skip",
) -> tuple[list[list[int]], list[int], ContextReport]:
    """Applies the context policy to token-id prompts.

    Args:
      prompts: token-id lists (ragged).
      max_new_tokens: the most tokens a completion may add.
      max_positions: the model's `max_position_embeddings`.
      policy: "skip" or "truncate_left" (see the module docstring).

    Returns:
      (kept, index, report): the prompts to sample, each fitting the context; `index[i]` is
      the position in `prompts` of `kept[i]`; the report counts what was skipped or cut.
    """
    if policy not in POLICIES:
        raise ContextError(f"prompt_overflow={policy!r}; use one of {POLICIES}")
    budget = max_positions - max_new_tokens
    if budget < 1:
        raise ContextError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
            f"{max_positions} positions; lower max_new_tokens below {max_positions}"
        )
    kept, index, skipped, truncated = [], [], [], []
    longest = 0
    for i, ids in enumerate(prompts):
        ids = list(ids)
        longest = max(longest, len(ids))
        if len(ids) > budget:
            if policy == "skip":
                skipped.append(i)
                continue
            ids = ids[len(ids) - budget :]
            truncated.append(i)
        kept.append(ids)
        index.append(i)
    report = ContextReport(len(prompts), skipped, truncated, longest, budget, policy)
    return kept, index, report

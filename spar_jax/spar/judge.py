"""Judging (instruction, response) pairs by majority vote, with a model or a rule verifier.

    judge = ModelJudge(chat_model, n_votes=5, temperature=0.7)
    out = judge.judge([(instruction, response), ...], seed=7)   # one sampler call
    out[0].label, out[0].value, out[0].critique

A vote is `prompts.parse_verdict` of one sampled judgment: 1 (Yes), 0 (No) or
-1 (no verdict, ignored). Label = majority of the valid votes, None on a tie
(no valid vote at all is a tie too). Value V = yes / (yes + no) (None without
valid votes). The kept critique is the first vote agreeing with the majority.
This is the official `get_value` / `process_score_res_voting`.

`judge_until_decided` re-judges tied items with fresh votes (the official tree
search makes 3 attempts in all, then drops the child) and consults a value
cache so an identical (instruction, response) is judged once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, MutableMapping, Sequence
from typing import Protocol

from spar_jax.sampling import SamplingParams
from spar_jax.spar import prompts
from spar_jax.spar.generator import ChatGenerator, derive_seed

Item = tuple[str, str]  # (instruction, response)


@dataclasses.dataclass
class Judgment:
    """The votes on one (instruction, response) and what they decide."""

    votes: list[int]  # [n_votes] 1 / 0 / -1 (invalid)
    texts: list[str]  # [n_votes] the judge outputs
    label: int | None  # majority of valid votes; None = tie or no valid vote
    value: float | None  # yes / (yes + no); None without valid votes
    critique: str | None  # first text whose vote equals the label
    attempts: int = 1  # judge calls made for this item (ties are re-judged)

    @classmethod
    def from_texts(cls, texts: Sequence[str], attempts: int = 1) -> Judgment:
        return cls.from_votes([prompts.parse_verdict(t) for t in texts], texts, attempts)

    @classmethod
    def from_votes(cls, votes: Sequence[int], texts: Sequence[str], attempts: int = 1):
        yes, no = list(votes).count(1), list(votes).count(0)
        value = yes / (yes + no) if yes + no else None
        label = None if yes == no else int(yes > no)
        critique = None
        if label is not None:
            critique = next(t for v, t in zip(votes, texts, strict=True) if v == label)
        return cls(list(votes), list(texts), label, value, critique, attempts)

    @property
    def unanimous(self) -> bool:
        """Every valid vote agrees (and there is one)."""
        return self.label is not None and (0 if self.label else 1) not in self.votes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Judgment:
        return cls(**d)


class Judge(Protocol):
    def judge(
        self, items: Sequence[Item], seed: int, rows: Sequence[dict] | None = None
    ) -> list[Judgment]:
        """One Judgment per item; `rows[i]` is item i's prompt row (rule judges need it)."""
        ...


class ModelJudge:
    """The refiner as judge: n sampled votes per item, all items in one generate call.

    Identical items within a call are judged once and share the Judgment.
    """

    def __init__(
        self,
        model: ChatGenerator,
        n_votes: int = 5,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_new_tokens: int = 2048,
    ):
        if n_votes < 1:
            raise ValueError(f"n_votes={n_votes}: a judgment needs at least one vote")
        self.model, self.n_votes = model, n_votes
        self.sampling = SamplingParams(
            temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens
        )

    def judge(
        self, items: Sequence[Item], seed: int, rows: Sequence[dict] | None = None
    ) -> list[Judgment]:
        unique = list(dict.fromkeys(items))
        convs = [prompts.judge_messages(ins, resp) for ins, resp in unique]
        texts = self.model.generate(convs, self.sampling, n=self.n_votes, seed=seed)
        by_item = {it: Judgment.from_texts(t) for it, t in zip(unique, texts, strict=True)}
        return [by_item[it] for it in items]


class RuleJudge:
    """A rule verifier as judge: one vote per item, the verifier's text as critique.

    check(row, response) -> (passed, critique text); the row is the item's prompt row.
    """

    def __init__(self, check: Callable[[dict, str], tuple[bool, str]]):
        self.check = check

    def judge(
        self, items: Sequence[Item], seed: int, rows: Sequence[dict] | None = None
    ) -> list[Judgment]:
        if rows is None or len(rows) != len(items):
            raise ValueError("RuleJudge.judge needs rows: the prompt row of every item")
        out = []
        for (_, response), row in zip(items, rows, strict=True):
            passed, text = self.check(row, response)
            out.append(Judgment.from_votes([int(passed)], [text]))
        return out


def judge_until_decided(
    judge: Judge,
    items: Sequence[Item],
    seed: int,
    rows: Sequence[dict] | None = None,
    *,
    attempts: int = 3,
    cache: MutableMapping[Item, Judgment] | None = None,
) -> list[Judgment]:
    """Judgments of `items`, re-judging ties with fresh votes up to `attempts` calls in all.

    Items found in `cache` are not judged again; decided judgments are added to it.
    Call k (k = 0, 1, ...) uses seed `derive_seed(seed, k)` and carries only the items
    still tied, so the result depends on (seed, items) alone. An item still tied after
    the last call keeps its last (tied) Judgment.
    """
    cache = {} if cache is None else cache
    out: list[Judgment | None] = [cache.get(it) for it in items]
    pending = [i for i, j in enumerate(out) if j is None]
    for k in range(attempts):
        if not pending:
            break
        got = judge.judge(
            [items[i] for i in pending],
            derive_seed(seed, k),
            None if rows is None else [rows[i] for i in pending],
        )
        for i, j in zip(pending, got, strict=True):
            out[i] = dataclasses.replace(j, attempts=k + 1)
            if j.label is not None:
                cache[items[i]] = out[i]
        pending = [i for i in pending if out[i].label is None]
    return out  # type: ignore[return-value]

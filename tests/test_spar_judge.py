"""Majority-vote judging: votes, ties, invalid votes, batching, retries, the value cache."""

import pytest

from spar_jax.spar import prompts
from spar_jax.spar.generator import ScriptedChat
from spar_jax.spar.judge import Judgment, ModelJudge, RuleJudge, judge_until_decided

YES = prompts.format_judgement("fine", True)
NO = prompts.format_judgement("missing title", False)
BAD = "I cannot decide."


@pytest.mark.parametrize(
    "texts, label, value, critique",
    [
        ([YES, NO, YES, NO, YES], 1, 0.6, 0),
        ([NO, YES, NO, NO, YES], 0, 0.4, 0),
        ([YES, NO, BAD, BAD, BAD], None, 0.5, None),  # tie of valid votes
        ([BAD, BAD, BAD, BAD, BAD], None, None, None),  # no valid vote
        ([BAD, NO, BAD, YES, NO], 0, 1 / 3, 1),  # invalid votes ignored
        ([BAD, YES + " (2)", BAD, YES], 1, 1.0, 1),  # critique: first agreeing vote
    ],
)
def test_majority(texts, label, value, critique):
    j = Judgment.from_texts(texts)
    assert j.label == label
    assert j.value == (None if value is None else pytest.approx(value))
    assert j.critique == (None if critique is None else texts[critique])


def test_unanimous():
    assert Judgment.from_texts([YES, YES, BAD]).unanimous
    assert not Judgment.from_texts([YES, NO, YES]).unanimous
    assert not Judgment.from_texts([YES, NO]).unanimous


def verdict_from_output(conv, rng):
    """Judges by the response text: 'good' passes, 'bad' fails, 'coin' is random."""
    text = conv[0]["content"].split("Output: \u201c")[1]
    if text.startswith("good"):
        return YES
    if text.startswith("bad"):
        return NO
    return YES if rng.random() < 0.5 else NO


def test_model_judge_one_call_n_votes_and_dedup():
    chat = ScriptedChat(verdict_from_output)
    judge = ModelJudge(chat, n_votes=5)
    items = [("p", "good 1"), ("p", "bad 2"), ("p", "good 1"), ("q", "good 1")]
    out = judge.judge(items, seed=0)
    assert chat.calls == [(3, 5)]  # one call, duplicate judged once, 5 votes each
    assert [j.label for j in out] == [1, 0, 1, 1]
    assert out[0] is out[2]
    assert out[1].votes == [0] * 5 and out[1].critique == NO


def test_rule_judge_uses_rows():
    judge = RuleJudge(lambda row, resp: (row["want"] in resp, f"looked for {row['want']}"))
    out = judge.judge([("p", "abc"), ("p", "xyz")], 0, rows=[{"want": "b"}, {"want": "b"}])
    assert [j.label for j in out] == [1, 0]
    assert out[1].critique == "looked for b" and out[1].value == 0.0
    with pytest.raises(ValueError, match="needs rows"):
        judge.judge([("p", "abc")], 0)


class FlakyJudge:
    """Ties on an item for its first `ties[response]` calls, then says Yes."""

    def __init__(self, ties):
        self.ties, self.calls = dict(ties), []

    def judge(self, items, seed, rows=None):
        self.calls.append((list(items), seed))
        out = []
        for _, resp in items:
            left = self.ties.get(resp, 0)
            self.ties[resp] = left - 1
            out.append(Judgment.from_texts([YES, NO] if left > 0 else [YES]))
        return out


def test_ties_are_rejudged_then_given_up():
    judge = FlakyJudge({"a": 1, "b": 5})
    out = judge_until_decided(judge, [("p", "a"), ("p", "b"), ("p", "c")], 3, attempts=3)
    assert [j.label for j in out] == [1, None, 1]
    assert [j.attempts for j in out] == [2, 3, 1]
    assert [len(items) for items, _ in judge.calls] == [3, 2, 1]  # only ties are re-judged
    assert len({seed for _, seed in judge.calls}) == 3  # fresh votes each time


def test_value_cache():
    judge = FlakyJudge({})
    cache = {}
    judge_until_decided(judge, [("p", "a"), ("p", "b")], 0, cache=cache)
    out = judge_until_decided(judge, [("p", "a"), ("p", "z")], 1, cache=cache)
    assert [items for items, _ in judge.calls] == [[("p", "a"), ("p", "b")], [("p", "z")]]
    assert out[0] is cache["p", "a"]

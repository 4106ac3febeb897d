"""Data building: negatives, DPO pairs, refiner data (caps, dedup, formats, counts)."""

import pytest

from spar_jax.spar import prompts
from spar_jax.spar.build import RFT_CAPS, dpo_pairs, pick_negatives, refiner_data
from spar_jax.spar.judge import Judgment

YES, NO = prompts.format_judgement("ok", True), prompts.format_judgement("bad", False)


def judged(*votes):
    return Judgment.from_votes(list(votes), [YES if v == 1 else NO for v in votes])


def test_pick_negatives():
    rows = [{"prompt": f"p{i}", "prompt_id": f"id{i}", "task": {"k": i}} for i in range(4)]
    responses = [["a", "b", "c"], ["d", "e", ""], ["f", "g", "h"], ["i", "j", "k"]]
    judgments = [
        [judged(1, 1, 0), judged(0, 0, 1), judged(0, 0, 0)],  # two failures
        [judged(1), judged(1, 0), judged(0)],  # all passed (a tie, an empty one)
        [judged(1, 0), judged(1, 0), judged()],  # nothing decided
        [judged(0, 1, 0), judged(1), judged(1)],
    ]
    roots, counts = pick_negatives(rows, responses, judgments, seed=0)
    assert [r["prompt_id"] for r in roots] == ["id0", "id3"]
    assert roots[0]["response"] in ("b", "c") and roots[0]["task"] == {"k": 0}
    assert roots[1] == {
        **rows[3],
        "response": "i",
        "critique": NO,
        "value": 1 / 3,
        "votes": [0, 1, 0],
    }
    assert counts == {
        "prompts": 4, "roots": 2, "all_passed": 1, "no_decided_judgment": 1,
        "tied_judgments": 4, "empty_responses": 1,
    }  # fmt: skip
    picks = {
        pick_negatives(rows, responses, judgments, seed=s)[0][0]["response"] for s in range(20)
    }
    assert picks == {"b", "c"}


def node(nid, parent, response, value, critique="crit", refine_text=None):
    return {
        "id": nid, "parent": parent, "response": response, "value": value,
        "critique": f"{critique} {response}", "refine_text": refine_text, "depth": 0, "votes": [],
    }  # fmt: skip


def tree(i, values, final):
    """A root with children c0, c1, ... of the given values; `final` is a node id."""
    nodes = [node(0, None, f"root{i}", 0.2)]
    for k, v in enumerate(values):
        text = prompts.format_refinement("why", f"c{i}.{k}")
        nodes.append(node(k + 1, 0, f"c{i}.{k}", v, refine_text=text))
    return {"prompt_id": f"id{i}", "row": {"prompt": f"p{i}"}, "nodes": nodes, "final": final}


def test_dpo_pairs_format_and_gate():
    trees = [tree(0, [0.4, 0.8], 2), tree(1, [0.4, 0.5], 1), tree(2, [], 0)]
    pairs, counts = dpo_pairs(trees)
    assert pairs == [
        {
            "messages": [{"role": "user", "content": "p0"}],
            "chosen": {"role": "assistant", "content": "c0.1"},
            "rejected": {"role": "assistant", "content": "root0"},
        }
    ]
    assert counts == {"trees": 3, "pairs": 1, "not_passed": 2}
    with pytest.raises(ValueError, match="not finished"):
        dpo_pairs([{**trees[0], "final": None}])


def test_refiner_data_sources_and_format():
    trees = [tree(0, [0.4, 0.8, 1.0, 0.0], 2)]
    actor = [
        ("p9", "x", judged(0, 0, 1)),  # majority No, not unanimous
        ("p9", "y", judged(1, 1, 0, -1)),  # majority Yes
        ("p9", "z", judged(1, 1)),  # unanimous: left out
        ("p9", "w", judged(1, 0)),  # tied: left out
    ]
    examples, counts = refiner_data(trees, actor, seed=0)
    by_first = {e["messages"][0]["content"]: e["messages"] for e in examples}
    refine = by_first[prompts.judge_prompt("p0", "root0")]
    assert [m["role"] for m in refine] == ["user", "assistant", "user", "assistant"]
    assert refine[1:] == [
        {"role": "assistant", "content": "crit root0"},
        {"role": "user", "content": prompts.REFINE_REQUEST},
        {"role": "assistant", "content": prompts.format_refinement("why", "c0.1")},
    ]
    # judge_pass: only c0.1 has 0.5 < V < 1; judge_fail: only c0.0 has 0 < V < 0.5.
    assert by_first[prompts.judge_prompt("p0", "c0.1")][1]["content"] == "crit c0.1"
    assert by_first[prompts.judge_prompt("p0", "c0.0")][1]["content"] == "crit c0.0"
    assert by_first[prompts.judge_prompt("p9", "x")][1]["content"] == NO
    assert by_first[prompts.judge_prompt("p9", "y")][1]["content"] == YES
    assert len(examples) == 5
    assert counts["actor_unanimous"] == 1 and counts["actor_tied"] == 1
    assert all(counts[s] == 1 for s in RFT_CAPS)


def test_refiner_data_caps_dedup_and_seeded_shuffle():
    trees = [tree(i, [0.3, 0.9], 2) for i in range(10)]
    # The actor judged c3.0 as the tree did: same first message, a duplicate.
    actor = [("p3", "c3.0", judged(0, 0, 1))] + [(f"q{i}", "r", judged(1, 1, 0)) for i in range(8)]
    caps = {"refine": 4, "judge_pass": 3, "judge_fail": None, "actor_no": 5, "actor_yes": 2}
    examples, counts = refiner_data(trees, actor, seed=1, caps=caps)
    assert counts["refine"] == 4 and counts["refine_over_cap"] == 6
    assert counts["judge_pass"] == 3 and counts["judge_pass_over_cap"] == 7
    assert counts["judge_fail"] == 10 and counts["judge_fail_over_cap"] == 0
    assert counts["actor_no"] == 0 and counts["duplicates"] == 1
    assert counts["actor_yes"] == 2 and counts["actor_yes_over_cap"] == 6
    assert len(examples) == counts["examples"] == 19
    firsts = [e["messages"][0]["content"] for e in examples]
    assert len(set(firsts)) == len(firsts)
    again, _ = refiner_data(trees, actor, seed=1, caps=caps)
    other, _ = refiner_data(trees, actor, seed=2, caps=caps)
    assert again == examples and other != examples
    with pytest.raises(ValueError, match="unknown source"):
        refiner_data(trees, seed=0, caps={"refines": 3})

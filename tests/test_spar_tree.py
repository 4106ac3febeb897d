"""Tree search with a scripted refiner and judge (no model).

`official_search` is a sequential port of the released code (thu-coai/SPaR
src/ToT/bfs.py, dfs.py, base.py): one refine call and one judge call per child.
The batched search must build the same trees.
"""

import hashlib
import json

import numpy as np
import pytest

from spar_jax.spar import prompts
from spar_jax.spar.generator import ScriptedChat
from spar_jax.spar.judge import Judgment, ModelJudge
from spar_jax.spar.tree import SearchConfig, init_search, run_search, search_results, search_step


def output_of(conv) -> str:
    return conv[0]["content"].split("Output: \u201c")[1].rsplit("\u201d", 1)[0]


def counting_refiner():
    """Child k of a response r is 'r/k' (k counts the refinements asked of r so far)."""
    asked: dict[str, int] = {}

    def reply(conv, rng):
        parent = output_of(conv)
        k = asked.get(parent, 0)
        asked[parent] = k + 1
        return prompts.format_refinement("fix it", f"{parent}/{k}")

    return ScriptedChat(reply)


class TableJudge:
    """V of a response from a table (default `default`), as 20 votes; records every call."""

    def __init__(self, table=None, default=0.2, hashed=False):
        self.table, self.default, self.hashed, self.calls = table or {}, default, hashed, []

    def value(self, response):
        if response in self.table:
            return self.table[response]
        if self.hashed:  # a fixed pseudo-random V in {0, 0.05, ..., 0.55} per response
            return hashlib.sha256(response.encode()).digest()[0] % 12 / 20
        return self.default

    def judge(self, items, seed, rows=None):
        self.calls.append(list(items))
        out = []
        for _, resp in items:
            yes = round(self.value(resp) * 20)
            votes = [1] * yes + [0] * (20 - yes)
            out.append(Judgment.from_votes(votes, [f"critique of {resp}: {v}" for v in votes]))
        return out


def roots(n, prefix="r"):
    return [
        {"prompt": f"task {i}", "prompt_id": f"id{i}", "response": f"{prefix}{i}", "critique": "No"}
        for i in range(n)
    ]


def names(tree):
    return [n["response"] for n in tree["nodes"]]


def test_bfs_stops_at_first_passing_level_and_keeps_best_select_branch():
    table = {"r0/0": 0.4, "r0/1": 0.45, "r0/2": 0.1, "r0/1/1": 0.5, "r0/0/2": 0.8, "r0/0/1": 0.7}
    state = run_search(roots(1), SearchConfig(), counting_refiner(), TableJudge(table))
    tree = state["trees"][0]
    assert state["step"] == 2 and tree["status"] == "passed"
    # Level 2 expands the best two of level 1 (r0/1 then r0/0), never r0/2; r0/1/1's votes
    # tie (V = 0.5 of 20 votes) on every attempt, so it is dropped.
    assert names(tree)[4:] == ["r0/1/0", "r0/1/2", "r0/0/0", "r0/0/1", "r0/0/2"]
    assert tree["counts"]["judge_tied"] == 1
    assert tree["nodes"][tree["final"]]["response"] == "r0/0/2"
    result = search_results(state)[0]
    assert result["passed"] and result["parent"]["response"] == "r0/0"
    assert prompts.parse_refinement(result["final"]["refine_text"]) == "r0/0/2"


def test_bfs_max_depth_and_fallback_to_best_node():
    table = {"r0/1/0": 0.4, "r0/0/1/2": 0.4, "r0/0": 0.3}
    state = run_search(roots(1), SearchConfig(), counting_refiner(), TableJudge(table))
    tree = state["trees"][0]
    assert state["step"] == 3 and tree["status"] == "failed" and tree["reason"] == "max_depth"
    assert len(tree["nodes"]) == 1 + 3 + 6 + 6 and max(n["depth"] for n in tree["nodes"]) == 3
    # Two nodes share the best V: the later one in preorder wins (official getBestV).
    assert tree["nodes"][tree["final"]]["response"] == "r0/1/0"


def test_budget_caps_children():
    state = run_search(roots(2), SearchConfig(budget=4), counting_refiner(), TableJudge())
    for tree in state["trees"]:
        assert len(tree["nodes"]) - 1 == 4 and tree["reason"] == "budget"


def test_one_refine_and_one_judge_call_per_level_for_all_trees():
    refiner, judge = counting_refiner(), TableJudge()
    state = run_search(roots(5), SearchConfig(), refiner, judge)
    assert refiner.calls == [(5, 3), (10, 3), (10, 3)]  # frontier nodes of all trees, 3 each
    assert [len(c) for c in judge.calls] == [15, 30, 30]
    assert all(len(t["nodes"]) == 16 for t in state["trees"])


def test_refine_retries_and_failures():
    asked = {}

    def reply(conv, rng):
        parent = output_of(conv)
        asked[parent] = asked.get(parent, 0) + 1
        if parent == "r0" and asked[parent] in (2, 4):  # slot 1: 2 bad outputs, then good
            return "Reflection: none, and no markers"
        if parent == "r1" and asked[parent] != 1:  # slots 1 and 2 never parse
            return "[[end]] broken"
        return prompts.format_refinement("x", f"{parent}/{asked[parent]}")

    refiner = ScriptedChat(reply)
    state = init_search(roots(2), SearchConfig(max_depth=1))
    state = search_step(state, refiner, TableJudge())
    t0, t1 = state["trees"]
    assert refiner.calls == [(2, 3), (3, 1), (3, 1)]  # 3 slots retried, then 3 again
    assert names(t0)[1:] == ["r0/1", "r0/5", "r0/3"]  # slot order kept
    assert t0["counts"]["refine_retries"] == 2 and t0["counts"]["refine_failed"] == 0
    assert names(t1)[1:] == ["r1/1"] and t1["counts"]["refine_failed"] == 2


def test_tied_children_are_dropped_and_identical_responses_judged_once():
    def reply(conv, rng):
        return prompts.format_refinement("x", "same")

    class TieOn(TableJudge):
        def judge(self, items, seed, rows=None):
            self.calls.append(list(items))
            return [Judgment.from_votes([1, 0], ["a", "b"]) for _ in items]

    judge = TableJudge()
    state = run_search(roots(1), SearchConfig(), ScriptedChat(reply), judge)
    tree = state["trees"][0]
    # Level 1: three identical children, one judgment; later levels hit the cache.
    assert len(judge.calls) == 1 and tree["counts"]["judged"] == 3
    assert tree["counts"]["cache_hits"] == 12 and len(tree["nodes"]) == 16
    tie = TieOn()
    state = run_search(roots(1), SearchConfig(judge_attempts=2), counting_refiner(), tie)
    tree = state["trees"][0]
    assert len(tie.calls) == 2 and tree["counts"]["judge_tied"] == 3
    assert len(tree["nodes"]) == 1 and tree["reason"] == "no_children" and tree["final"] == 0


def test_dfs_visits_in_preorder():
    table = {"r0/1": 0.4, "r0/0": 0.3, "r0/1/2": 0.35, "r0/1/0": 0.3}
    refiner = counting_refiner()
    state = run_search(roots(1), SearchConfig(algorithm="dfs"), refiner, TableJudge(table))
    tree = state["trees"][0]
    expanded = []
    for step in range(state["step"]):
        parents = {n["parent"] for n in tree["nodes"] if n["step"] == step}
        expanded += [tree["nodes"][p]["response"] for p in parents]
    # Root, its best child r0/1, then r0/1's best two (depth 2; their children are at
    # max_depth and not expanded), then r0/0 and its first two children.
    assert expanded == ["r0", "r0/1", "r0/1/2", "r0/1/0", "r0/0", "r0/0/0", "r0/0/1"]
    assert tree["reason"] == "exhausted"


def test_value_proportional_selection():
    table = {f"r{i}/{k}": v for i in range(400) for k, v in enumerate([0.45, 0.15, 0.0])}
    cfg = SearchConfig(select_method="sample", select_branch=1, max_depth=2)
    state = run_search(roots(400), cfg, counting_refiner(), TableJudge(table), seed=1)
    picked = [t["nodes"][4]["response"].split("/")[1] for t in state["trees"]]
    share = picked.count("0") / len(picked)
    assert picked.count("2") == 0 and 0.67 < share < 0.83  # 0.75 expected
    again = run_search(roots(400), cfg, counting_refiner(), TableJudge(table), seed=1)
    assert again == state
    other = run_search(roots(400), cfg, counting_refiner(), TableJudge(table), seed=2)
    assert other != state


def official_search(root, cfg, refiner, judge):
    """The released BFS / DFS for one root, one refine and one judge call per child."""
    nodes = [dict(response=root["response"], critique=root["critique"], value=0.0, parent=None)]
    nodes[0]["depth"], budget, cache = 0, [cfg.budget], {}

    def expand(i):
        kids = []
        for _ in range(cfg.branch):
            msgs = prompts.refine_messages(
                root["prompt"], nodes[i]["response"], nodes[i]["critique"]
            )
            resp = prompts.parse_refinement(refiner.generate([msgs], None, 1, 0)[0][0])
            if resp not in cache:
                cache[resp] = judge.judge([(root["prompt"], resp)], 0)[0]
            j = cache[resp]
            if j.critique is None:  # a tie: the child is dropped, the budget kept
                continue
            nodes.append(dict(response=resp, critique=j.critique, value=j.value, parent=i))
            nodes[-1]["depth"] = nodes[i]["depth"] + 1
            kids.append(len(nodes) - 1)
            budget[0] -= 1
            if budget[0] <= 0:
                break
        return sorted(kids, key=lambda k: -nodes[k]["value"])

    def dfs(i):
        if nodes[i]["depth"] >= cfg.max_depth:
            return None
        ranked = expand(i)
        if not ranked:
            return None
        if nodes[ranked[0]]["value"] > cfg.end_gate:
            return ranked[0]
        if budget[0] <= 0:
            return None
        for k in ranked[: cfg.select_branch]:
            if (found := dfs(k)) is not None:
                return found
        return None

    if cfg.algorithm == "dfs":
        found = dfs(0)
    else:
        found, frontier = None, [0]
        for _ in range(cfg.max_depth):
            ranked = sorted(
                [k for i in frontier for k in expand(i)], key=lambda k: -nodes[k]["value"]
            )
            if nodes[ranked[0]]["value"] > cfg.end_gate:
                found = ranked[0]
                break
            frontier = ranked[: cfg.select_branch]
    if found is None:  # getBestV: the later node in preorder wins ties
        order, todo = [], [0]
        while todo:
            order.append(todo.pop())
            todo += reversed([k for k, n in enumerate(nodes) if n["parent"] == order[-1]])
        found = max(reversed(order), key=lambda k: nodes[k]["value"])
    return nodes, found


@pytest.mark.parametrize("algorithm", ["bfs", "dfs"])
def test_batched_search_equals_the_official_sequential_search(algorithm):
    cfg = SearchConfig(algorithm=algorithm)
    rs = roots(30, prefix="x")
    state = run_search(rs, cfg, counting_refiner(), TableJudge(hashed=True))
    statuses, tied = set(), []
    for root, tree in zip(rs, state["trees"], strict=True):
        nodes, found = official_search(root, cfg, counting_refiner(), TableJudge(hashed=True))
        got = [(n["response"], n["parent"], n["depth"], n["value"]) for n in tree["nodes"][1:]]
        want = [(n["response"], n["parent"], n["depth"], n["value"]) for n in nodes[1:]]
        assert sorted(got) == sorted(want)
        assert tree["nodes"][tree["final"]]["response"] == nodes[found]["response"]
        statuses.add(tree["status"])
        tied.append(tree["counts"]["judge_tied"])
    assert statuses == {"passed", "failed"} and sum(tied) > 0


def random_model():
    """A seeded 'model' that both refines and judges at random."""

    def reply(conv, rng):
        if len(conv) == 3:  # refine
            if rng.random() < 0.2:
                return "no markers"
            return prompts.format_refinement("r", f"{output_of(conv)}.{rng.integers(4)}")
        draw = rng.random()
        return "?" if draw < 0.2 else prompts.format_judgement("v", draw < 0.4)

    return ScriptedChat(reply)


@pytest.mark.parametrize("algorithm", ["bfs", "dfs"])
def test_resumed_search_equals_uninterrupted(algorithm):
    cfg = SearchConfig(algorithm=algorithm, select_method="sample")
    model = random_model()
    full = run_search(roots(12), cfg, model, ModelJudge(model, n_votes=4), seed=5)
    state = init_search(roots(12), cfg, seed=5)
    while not state["done"]:  # a fresh process per step, state through JSON
        model = random_model()
        state = search_step(json.loads(json.dumps(state)), model, ModelJudge(model, n_votes=4))
    assert state == full
    assert full["step"] >= 2 and {t["status"] for t in full["trees"]} == {"passed", "failed"}
    assert sum(t["counts"]["refine_retries"] for t in full["trees"]) > 0
    values = np.array([n["value"] for t in full["trees"] for n in t["nodes"][1:]])
    assert len(set(values.tolist())) > 2

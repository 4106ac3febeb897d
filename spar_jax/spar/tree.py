"""Tree-search refinement (BFS / DFS) over many roots at once, one batched step at a time.

    state = init_search(roots, SearchConfig(algorithm="bfs"), seed=0)
    while not state["done"]:
        state = search_step(state, refiner, judge)   # json.dump(state) here to resume later
    results = search_results(state)                   # the final node of every tree

A root is a failed response: a dict with "prompt", "response" and "critique"
(optionally "prompt_id", "value", "votes" and any other fields, kept in
`tree["row"]` and handed to the judge). Each step expands nodes of every running
tree with ONE batched refine call (`branch` samples per node sharing a prefill;
unparsable slots are re-asked in one call per retry) and ONE batched judge call
over all new children (ties re-judged in one call per retry):

* BFS (the official default): a step expands a tree's whole frontier. If the
  best new child has V > end_gate the tree passes with it; otherwise the best
  `select_branch` children (greedy, or drawn in proportion to V) form the next
  frontier, until children reach `max_depth`.
* DFS: a step expands the node on top of each tree's stack; the selected
  children are pushed so that the best is expanded next, which visits nodes in
  the preorder of the official recursion. A child at `max_depth` is not expanded.

Semantics of the official code (thu-coai/SPaR src/ToT): a refinement that does
not parse is retried (`refine_attempts` in all) and then given up; a child whose
votes stay tied after `judge_attempts` judge calls is dropped; an identical
(instruction, response) is judged once (value cache); `budget` caps the children
of a tree; if nothing passes, the final node is the best node of the tree (the
highest V, root included; on equal V the later node in preorder). Departures: a
root's V is its own judgment's (the official code uses 0); a node that gets less
than `branch` slots of the remaining budget still samples `branch` refinements
(one call) and keeps the first ones; value-proportional selection among
children that all have V = 0 draws uniformly (the official code divides by 0).

The state is plain JSON (dicts, lists, strings, numbers). Every seed comes from
(the base seed, the step, the call), so resuming from a saved state repeats an
uninterrupted run exactly.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from spar_jax.sampling import SamplingParams
from spar_jax.spar import prompts
from spar_jax.spar.generator import ChatGenerator, derive_seed
from spar_jax.spar.judge import Judge, Judgment, judge_until_decided


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Tree-search settings; defaults are the official ones (BFS 3 / 2 / 3, gate 0.5)."""

    algorithm: str = "bfs"  # "bfs" | "dfs"
    branch: int = 3  # refinements per expanded node
    select_branch: int = 2  # children kept for the next level
    max_depth: int = 3  # children deeper than this are not made
    end_gate: float = 0.5  # a child with V > end_gate ends the search
    select_method: str = "greedy"  # "greedy" | "sample" (in proportion to V)
    budget: int = 1000  # most children per tree
    refine_attempts: int = 3  # calls per refinement slot until it parses
    judge_attempts: int = 3  # judge calls per child while its votes tie
    temperature: float = 0.7  # refinement sampling
    top_p: float = 1.0
    max_new_tokens: int = 3072

    def __post_init__(self):
        if self.algorithm not in ("bfs", "dfs"):
            raise ValueError(f"SearchConfig.algorithm={self.algorithm!r}: use 'bfs' or 'dfs'")
        if self.select_method not in ("greedy", "sample"):
            raise ValueError(
                f"SearchConfig.select_method={self.select_method!r}: use 'greedy' or 'sample'"
            )
        for name in ("branch", "select_branch", "max_depth", "budget"):
            if getattr(self, name) < 1:
                raise ValueError(f"SearchConfig.{name}={getattr(self, name)}: must be >= 1")
        for name in ("refine_attempts", "judge_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"SearchConfig.{name}={getattr(self, name)}: must be >= 1")

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens
        )


ROOT_KEYS = ("prompt", "response", "critique")
COUNTS = ("refinements", "refine_retries", "refine_failed", "judged", "cache_hits", "judge_tied")


def _node(nid, parent, depth, response, critique, votes, value, refine_text, step) -> dict:
    return {
        "id": nid,
        "parent": parent,
        "depth": depth,
        "response": response,
        "critique": critique,
        "votes": votes,
        "value": value,
        "refine_text": refine_text,  # the refiner's whole output (reflection + [[start]]...)
        "step": step,  # the search step that made it (-1: the root)
    }


def init_search(roots: list[dict], config: SearchConfig, seed: int = 0) -> dict:
    """The search state before the first step: one tree per root, each holding its root node."""
    trees = []
    for i, root in enumerate(roots):
        missing = [k for k in ROOT_KEYS if not isinstance(root.get(k), str)]
        if missing:
            raise ValueError(
                f"root {i} lacks string field(s) {missing}; a root is a failed response with "
                "its prompt and critique (build.pick_negatives writes them)"
            )
        value = float(root.get("value") or 0.0)
        node = _node(
            0, None, 0, root["response"], root["critique"], list(root.get("votes") or []),
            value, None, -1,
        )  # fmt: skip
        trees.append(
            {
                "prompt_id": root.get("prompt_id", str(i)),
                "row": root,
                "status": "running",  # -> "passed" | "failed"
                "reason": None,  # why a tree failed: max_depth | no_children (BFS) | exhausted
                # (DFS: nothing left to expand) | budget
                "final": None,  # node id of the result
                "nodes": [node],
                "open": [0],  # BFS: the frontier; DFS: the stack (top last)
                "budget": config.budget,
                "counts": dict.fromkeys(COUNTS, 0),
            }
        )
    state = {
        "config": dataclasses.asdict(config),
        "seed": int(seed),
        "step": 0,
        "trees": trees,
        "done": not trees,
    }
    return state


def search_step(state: dict, refiner: ChatGenerator, judge: Judge, seed: int | None = None) -> dict:
    """One batched expansion of every running tree; returns the new state (input untouched)."""
    if seed is not None and seed != state["seed"]:
        raise ValueError(f"seed={seed} but the state was started with seed={state['seed']}")
    state = copy.deepcopy(state)
    if state["done"]:
        return state
    cfg = SearchConfig(**state["config"])
    base, step = state["seed"], state["step"]

    # 1. The nodes to expand and how many children each may add (the budget).
    requests = []  # (tree index, node id, allowed children)
    for t, tree in enumerate(state["trees"]):
        if tree["status"] != "running":
            continue
        expand = tree["open"] if cfg.algorithm == "bfs" else [tree["open"].pop()]
        tree["open"] = [] if cfg.algorithm == "bfs" else tree["open"]
        left = tree["budget"]
        for nid in expand:
            allowed = min(cfg.branch, left)
            left -= allowed
            if allowed:
                requests.append((t, nid, allowed))

    # 2. Refinements: one call with `branch` samples per node, then one call per retry.
    refined = _refine(state, cfg, requests, refiner, base, step)

    # 3. Judgments of every new child in one call (plus tie retries), through the value cache.
    cache: dict[tuple[str, str], Judgment] = {}
    for tree in state["trees"]:
        for n in tree["nodes"]:
            if n["votes"] and n["critique"] is not None:
                j = Judgment.from_votes(n["votes"], [n["critique"]] * len(n["votes"]))
                if j.label is not None:
                    cache[tree["row"]["prompt"], n["response"]] = j
    items, rows, hits = [], [], []
    for t, _, _, response in refined:
        row = state["trees"][t]["row"]
        items.append((row["prompt"], response))
        rows.append(row)
        hits.append(items[-1] in cache)
    judgments = judge_until_decided(
        judge,
        items,
        derive_seed(base, step, "judge"),
        rows,
        attempts=cfg.judge_attempts,
        cache=cache,
    )

    # 4. Kept children join their trees.
    children: dict[int, list[dict]] = {}
    for (t, parent, text, response), j, hit in zip(refined, judgments, hits, strict=True):
        tree = state["trees"][t]
        tree["counts"]["cache_hits" if hit else "judged"] += 1
        if j.label is None:
            tree["counts"]["judge_tied"] += 1
            continue
        pnode = tree["nodes"][parent]
        child = _node(
            len(tree["nodes"]), parent, pnode["depth"] + 1, response, j.critique, j.votes,
            j.value, text, step,
        )  # fmt: skip
        tree["nodes"].append(child)
        tree["budget"] -= 1
        children.setdefault(t, []).append(child)

    # 5. Per tree: pass, stop, or choose what to expand next.
    for t, tree in enumerate(state["trees"]):
        if tree["status"] != "running":
            continue
        ranked = sorted(children.get(t, []), key=lambda n: -n["value"])
        if ranked and ranked[0]["value"] > cfg.end_gate:
            _finish(tree, "passed", None, ranked[0]["id"])
            continue
        if tree["budget"] <= 0:
            _finish(tree, "failed", "budget", best_node(tree)["id"])
            continue
        rng = np.random.default_rng(derive_seed(base, step, "select", t))
        chosen = _select(ranked, cfg, rng)
        deeper = [n["id"] for n in chosen if n["depth"] < cfg.max_depth]
        if cfg.algorithm == "bfs":
            tree["open"] = deeper
        else:
            tree["open"].extend(reversed(deeper))
        if not tree["open"]:
            reason = "max_depth" if chosen else "no_children"
            reason = reason if cfg.algorithm == "bfs" else "exhausted"
            _finish(tree, "failed", reason, best_node(tree)["id"])
    state["step"] = step + 1
    state["done"] = all(tree["status"] != "running" for tree in state["trees"])
    return state


def _refine(state, cfg: SearchConfig, requests, refiner, base: int, step: int) -> list:
    """[(tree, parent id, refine text, refined response)] in (request, slot) order."""
    sampling = cfg.sampling()
    slots: dict[tuple[int, int], tuple[str, str] | None] = {}
    convs = []
    for t, nid, allowed in requests:
        tree = state["trees"][t]
        node = tree["nodes"][nid]
        convs.append(
            prompts.refine_messages(tree["row"]["prompt"], node["response"], node["critique"])
        )
        tree["counts"]["refinements"] += allowed
    outs = refiner.generate(convs, sampling, cfg.branch, derive_seed(base, step, "refine", 0))
    for r, (_, _, allowed) in enumerate(requests):
        for s in range(allowed):
            slots[r, s] = _parsed(outs[r][s])
    for k in range(1, cfg.refine_attempts):
        failed = [key for key, v in slots.items() if v is None]
        if not failed:
            break
        for r, _ in failed:
            state["trees"][requests[r][0]]["counts"]["refine_retries"] += 1
        outs = refiner.generate(
            [convs[r] for r, _ in failed], sampling, 1, derive_seed(base, step, "refine", k)
        )
        for key, out in zip(failed, outs, strict=True):
            slots[key] = _parsed(out[0])
    result = []
    for (r, _), v in sorted(slots.items()):
        t, nid, _ = requests[r]
        if v is None:
            state["trees"][t]["counts"]["refine_failed"] += 1
        else:
            result.append((t, nid, v[0], v[1]))
    return result


def _parsed(text: str) -> tuple[str, str] | None:
    refined = prompts.parse_refinement(text)
    return None if refined is None else (text, refined)


def _select(ranked: list[dict], cfg: SearchConfig, rng: np.random.Generator) -> list[dict]:
    """The children to expand next, best first (official greedy / `rand_select`)."""
    k = min(cfg.select_branch, cfg.branch, len(ranked))
    if cfg.select_method == "greedy" or not ranked:
        return ranked[:k]
    values = np.array([n["value"] for n in ranked], float)
    p = values / values.sum() if values.sum() > 0 else np.full(len(ranked), 1 / len(ranked))
    # min(select_branch, branch) draws with replacement; repeats are dropped.
    draws = rng.choice(len(ranked), size=min(cfg.select_branch, cfg.branch), p=p)
    picked = list(dict.fromkeys(int(i) for i in draws))
    return sorted((ranked[i] for i in picked), key=lambda n: -n["value"])


def _finish(tree: dict, status: str, reason: str | None, final: int) -> None:
    tree.update(status=status, reason=reason, final=final, open=[])


def best_node(tree: dict) -> dict:
    """The highest-V node, root included; on equal V the later node in preorder (official)."""
    kids: dict[int | None, list[int]] = {}
    for n in tree["nodes"]:
        kids.setdefault(n["parent"], []).append(n["id"])
    best, todo = None, [0]
    while todo:
        node = tree["nodes"][todo.pop()]
        if best is None or node["value"] >= best["value"]:
            best = node
        todo.extend(reversed(kids.get(node["id"], [])))
    return best


def search_results(state: dict) -> list[dict]:
    """Per tree: prompt_id, prompt, the root, the final node and its parent (None for a root)."""
    out = []
    for tree in state["trees"]:
        if tree["final"] is None:
            raise ValueError("search_results: the search has not finished (state['done'] is False)")
        final = tree["nodes"][tree["final"]]
        parent = None if final["parent"] is None else tree["nodes"][final["parent"]]
        out.append(
            {
                "prompt_id": tree["prompt_id"],
                "prompt": tree["row"]["prompt"],
                "root": tree["nodes"][0],
                "final": final,
                "parent": parent,
                "passed": tree["status"] == "passed",
            }
        )
    return out


def search_summary(state: dict) -> dict:
    """Counts over all trees: statuses, stop reasons, refinements, judgments, drops."""
    summary = {"trees": len(state["trees"]), "steps": state["step"]}
    for tree in state["trees"]:
        key = tree["status"] if tree["reason"] is None else f"failed_{tree['reason']}"
        summary[key] = summary.get(key, 0) + 1
        for k, v in tree["counts"].items():
            summary[k] = summary.get(k, 0) + v
        summary["nodes"] = summary.get("nodes", 0) + len(tree["nodes"]) - 1
    return summary


def run_search(
    roots: list[dict], config: SearchConfig, refiner: ChatGenerator, judge: Judge, seed: int = 0
) -> dict:
    """init_search + search_step until done; the final state."""
    state = init_search(roots, config, seed)
    while not state["done"]:
        state = search_step(state, refiner, judge)
    return state

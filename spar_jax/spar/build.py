"""Data building around the tree search: negatives in, DPO pairs and refiner data out.

    roots, counts = pick_negatives(rows, responses, judgments, seed)   # tree roots
    pairs, counts = dpo_pairs(state["trees"])                          # actor DPO data
    examples, counts = refiner_data(state["trees"], actor_judgments, seed=seed)  # refiner SFT

The official `process_score_res_voting`, `process_dpo_data` and
`process_rft_data` (thu-coai/SPaR src/process_data.py), with every dropped
record counted by reason. Pairs are `{"messages": [user], "chosen": {assistant},
"rejected": {assistant}}`; refiner examples are `{"messages": [...]}` chats
trained on every assistant turn. Randomness comes from `seed` alone.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import numpy as np

from spar_jax.spar import prompts
from spar_jax.spar.generator import derive_seed
from spar_jax.spar.judge import Judgment

# Per-source caps of the official refiner data (process_rft_data).
RFT_CAPS = {
    "refine": 4000,
    "judge_pass": 1500,
    "judge_fail": 1000,
    "actor_no": 500,
    "actor_yes": 2500,
}


def pick_negatives(
    rows: Sequence[dict],
    responses: Sequence[Sequence[str]],
    judgments: Sequence[Sequence[Judgment]],
    seed: int,
) -> tuple[list[dict], collections.Counter]:
    """One failed response per prompt that has one: the roots of the tree search.

    Args:
      rows: P prompt rows ({"prompt", "prompt_id", ...}).
      responses: [P][K] the actor's responses ("" = not generated, skipped).
      judgments: [P][K] their judgments; undecided (tied) ones are ignored.
      seed: picks the failed response (uniformly) among a prompt's failures.
    Returns:
      roots: {**row, "response", "critique", "value", "votes"} per prompt with a failure.
      counts: prompts, roots, all_passed, no_decided_judgment, tied_judgments,
        empty_responses.
    """
    counts: collections.Counter = collections.Counter(prompts=len(rows))
    roots = []
    for p, (row, resps, judged) in enumerate(zip(rows, responses, judgments, strict=True)):
        failed, decided = [], 0
        for resp, j in zip(resps, judged, strict=True):
            if not resp:
                counts["empty_responses"] += 1
            elif j.label is None:
                counts["tied_judgments"] += 1
            else:
                decided += 1
                if j.label == 0:
                    failed.append((resp, j))
        if not failed:
            counts["all_passed" if decided else "no_decided_judgment"] += 1
            continue
        rng = np.random.default_rng(derive_seed(seed, "negatives", row.get("prompt_id", p)))
        resp, j = failed[int(rng.integers(len(failed)))]
        roots.append(
            {**row, "response": resp, "critique": j.critique, "value": j.value, "votes": j.votes}
        )
    counts["roots"] = len(roots)
    return roots, counts


def _chat(*turns: str) -> dict:
    roles = ("user", "assistant")
    return {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]}


def dpo_pairs(
    trees: Sequence[dict], end_gate: float = 0.5
) -> tuple[list[dict], collections.Counter]:
    """Actor pairs from finished trees: chosen = final node (V > end_gate), rejected = root."""
    counts: collections.Counter = collections.Counter(trees=len(trees))
    pairs = []
    for tree in trees:
        final = _final(tree)
        root = tree["nodes"][0]
        if final["value"] is None or final["value"] <= end_gate:
            counts["not_passed"] += 1
        elif final["response"] == root["response"]:
            counts["chosen_equals_rejected"] += 1
        else:
            pairs.append(
                {
                    "messages": [{"role": "user", "content": tree["row"]["prompt"]}],
                    "chosen": {"role": "assistant", "content": final["response"]},
                    "rejected": {"role": "assistant", "content": root["response"]},
                }
            )
    counts["pairs"] = len(pairs)
    return pairs, counts


def _final(tree: dict) -> dict:
    if tree.get("final") is None:
        raise ValueError(
            f"tree {tree.get('prompt_id')!r} has not finished; run the search to the end first"
        )
    return tree["nodes"][tree["final"]]


def refiner_data(
    trees: Sequence[dict],
    actor_judgments: Sequence[tuple[str, str, Judgment]] = (),
    *,
    seed: int,
    end_gate: float = 0.5,
    caps: Mapping[str, int | None] = RFT_CAPS,
) -> tuple[list[dict], collections.Counter]:
    """The refiner's training chats from trees and actor judgments (official RFT data).

    Sources, in dedup priority order (each shuffled, then cut to `caps[source]`;
    None = no cap):
      refine: a passing tree's last step, 4 turns: judge prompt of the parent,
        the parent's critique, REFINE_REQUEST -> the refiner's whole output.
      judge_pass / judge_fail: one random node per tree with end_gate < V < 1 /
        0 < V < end_gate: judge prompt -> its critique.
      actor_no / actor_yes: actor judgments (instruction, response, Judgment)
        whose votes were neither tied nor unanimous: judge prompt -> the critique
        (the first vote agreeing with the majority), by majority label.
    Then one example per first user message (first come wins), and a shuffle.
    Returns the examples and counts: per source kept / over_cap, duplicates,
    and why judgments were left out (tied, unanimous).
    """
    unknown = set(caps) - set(RFT_CAPS)
    if unknown:
        raise ValueError(
            f"refiner_data caps: unknown source(s) {sorted(unknown)}; use {list(RFT_CAPS)}"
        )
    counts: collections.Counter = collections.Counter()
    sources: dict[str, list[dict]] = {k: [] for k in RFT_CAPS}
    for t, tree in enumerate(trees):
        final, prompt = _final(tree), tree["row"]["prompt"]
        if final["value"] is not None and final["value"] > end_gate and final["parent"] is not None:
            parent = tree["nodes"][final["parent"]]
            sources["refine"].append(
                _chat(
                    prompts.judge_prompt(prompt, parent["response"]),
                    parent["critique"],
                    prompts.REFINE_REQUEST,
                    final["refine_text"],
                )
            )
        rng = np.random.default_rng(derive_seed(seed, "tree_judgments", t))
        for source, keep in (
            ("judge_pass", lambda v: end_gate < v < 1.0),
            ("judge_fail", lambda v: 0.0 < v < end_gate),
        ):
            nodes = [n for n in tree["nodes"][1:] if n["value"] is not None and keep(n["value"])]
            if nodes:
                n = nodes[int(rng.integers(len(nodes)))]
                sources[source].append(
                    _chat(prompts.judge_prompt(prompt, n["response"]), n["critique"])
                )
    for instruction, response, j in actor_judgments:
        if j.label is None:
            counts["actor_tied"] += 1
        elif j.unanimous:
            counts["actor_unanimous"] += 1
        else:
            source = "actor_yes" if j.label == 1 else "actor_no"
            sources[source].append(_chat(prompts.judge_prompt(instruction, response), j.critique))

    out, seen = [], set()
    for source, examples in sources.items():
        rng = np.random.default_rng(derive_seed(seed, "rft", source))
        order = rng.permutation(len(examples))
        cap = caps.get(source)
        kept = order if cap is None else order[:cap]
        counts[f"{source}_over_cap"] += len(order) - len(kept)
        for i in kept:
            first = examples[i]["messages"][0]["content"]
            if first in seen:
                counts["duplicates"] += 1
                continue
            seen.add(first)
            out.append(examples[i])
            counts[source] += 1
    order = np.random.default_rng(derive_seed(seed, "rft", "all")).permutation(len(out))
    counts["examples"] = len(out)
    return [out[i] for i in order], counts

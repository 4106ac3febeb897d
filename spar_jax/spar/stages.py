"""The stages of one self-play round, each a function of its inputs and the round's context.

    sample     the actor answers every prompt n times
    judge      the refiner (or a rule verifier) judges every answer by majority vote
    negatives  one failed answer per prompt with a No, with its critique: the roots
    search     tree-search refinement of every root (search.py), a level at a time
    build      actor DPO pairs and refiner RFT data (build.py)
    train      DPO of the actor, SFT of the refiner (the project's trainers)

Each stage writes under `<workdir>/round_<t>/<stage>/` as it goes (stages_io.py); what a
finished stage wrote is read back instead of computed again. Stages load only the
model they need, and a generation stage that the memory planner says cannot fit is refused.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from spar_jax import errors
from spar_jax.sampling import SamplingParams
from spar_jax.spar import build
from spar_jax.spar import stages_io as io
from spar_jax.spar.judge import Judgment, ModelJudge, RuleJudge
from spar_jax.spar.tree import SearchConfig, init_search, search_step


@dataclasses.dataclass
class Round:
    """Where round `t` reads and writes, and the models it starts from."""

    config: Any  # the run's ConfigDict
    workdir: str
    t: int
    actor: str  # checkpoint dir or preset of this round's actor
    refiner: str
    tokenizer: str
    mesh: Any = None  # jax Mesh for generation (the "sample" rules)
    log: Callable[[str], None] = print

    def dir(self, stage: str) -> str:
        return os.path.join(self.workdir, f"round_{self.t}", stage)

    def seed(self, *parts: Any) -> int:
        return io.chunk_seed(self.config.seed, self.t, *parts)


def progress_bar(total: int, desc: str, config: Any):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=None if config.progress else True)


# ---------------------------------------------------------------- models


def load_chat_model(spec: str, tokenizer_path: str, rnd: Round):
    """A `ChatModel` for generation: params in `config.dtype`, placed by the sample rules;
    refused first when the memory planner says generation cannot fit."""
    import jax.numpy as jnp

    from spar_jax import models
    from spar_jax.models import native
    from spar_jax.spar import generator

    c = rnd.config
    if os.path.exists(os.path.join(spec, native.CONFIG_FILE)):
        cfg = native.load_config(spec)
    elif os.path.exists(os.path.join(spec, "config.json")):
        with open(os.path.join(spec, "config.json")) as f:
            cfg = models.config_from_hf(json.load(f), os.path.join(spec, "config.json"))
    else:
        raise errors.SparError(
            f"model {spec!r} is neither a native checkpoint (model_config.json) nor a Hugging "
            "Face checkpoint dir (config.json); point --config.actor / --config.refiner at one"
        )
    _check_generation_fits(cfg.replace(dtype=jnp.dtype(c.dtype)), rnd)
    return generator.load_chat_model(
        spec,
        tokenizer_path,
        dtype=c.dtype,
        mesh=rnd.mesh,
        max_batch=c.max_batch,
        max_cache_bytes=int(c.max_cache_gib * 2**30) or None,
        prompt_overflow=c.prompt_overflow,
        fixed_slots=c.get("fixed_slots", False),
        min_prefix=c.get("min_prefix", 16),
    )


def _check_generation_fits(cfg, rnd: Round) -> None:
    """Refuses a generation stage whose weights + KV cache cannot fit one device."""
    from spar_jax import plan
    from spar_jax.training import placement

    device = placement.device_memory_bytes()
    if device is None or rnd.mesh is None:
        return
    c = rnd.config
    longest = max(c.actor_sampling.max_new_tokens, c.judge.max_new_tokens, c.refine.max_new_tokens)
    shape = tuple(rnd.mesh.devices.shape)
    result = plan.plan(
        cfg, shape, task="sample", batch_size=c.max_batch, cache_length=cfg.max_position_embeddings
    )
    if not result.fits(device):
        raise errors.SparError(
            f"generation with max_batch={c.max_batch} rows of up to "
            f"{cfg.max_position_embeddings} positions ({longest} new tokens) does not fit: "
            f"{result.format(device)}\nlower --config.max_batch or use more devices"
        )


def make_judge(rnd: Round, model) -> Any:
    """The configured judge: the refiner model (the method) or a rule verifier."""
    j = rnd.config.judge
    if j.kind == "rule":
        return RuleJudge(load_verifier(j.verifier))
    if j.kind != "model":
        raise errors.SparError(f"--config.judge.kind={j.kind!r}; use model or rule")
    return ModelJudge(
        model,
        n_votes=j.votes,
        temperature=j.temperature,
        top_p=j.top_p,
        max_new_tokens=j.max_new_tokens,
    )


def load_verifier(spec: str) -> Callable[[dict, str], tuple[bool, str]]:
    """`module:function` -> the function (e.g. `spar_jax.tasks:check`)."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise errors.SparError(
            f"--config.judge.verifier={spec!r} does not name a function; use 'module:function', "
            "e.g. spar_jax.tasks:check"
        ) from None


# ---------------------------------------------------------------- stages


def _messages(config: Any, text: str) -> list[dict]:
    messages = [{"role": "user", "content": text}]
    if config.system_prompt:
        messages.insert(0, {"role": "system", "content": config.system_prompt})
    return messages


def sample(rnd: Round, rows: Sequence[dict], model) -> list[dict]:
    """The actor's n answers to every prompt: rows {prompt_id, prompt, responses, skipped}."""
    c, s = rnd.config, rnd.config.actor_sampling
    params = SamplingParams(
        temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens
    )

    def compute(chunk: int, part: Sequence[dict]) -> list[dict]:
        convs = [_messages(c, r["prompt"]) for r in part]
        texts = model.generate(convs, params, n=s.n, seed=rnd.seed("sample", chunk))
        skipped = set(getattr(model, "last_skipped", ()))  # too long for the context
        return [
            {
                "prompt_id": r["prompt_id"],
                "prompt": r["prompt"],
                "responses": t,
                "skipped": i in skipped,
            }
            for i, (r, t) in enumerate(zip(part, texts, strict=True))
        ]

    return _run_stage(rnd, "sample", rows, compute, "responses.jsonl")


def judge(rnd: Round, samples: Sequence[dict], rows: Sequence[dict], judge_) -> list[dict]:
    """Every answer judged: rows {prompt_id, judgments: [Judgment as dict per response]}."""
    by_id = {r["prompt_id"]: r for r in rows}
    todo = [s for s in samples if not s["skipped"]]

    def compute(chunk: int, part: Sequence[dict]) -> list[dict]:
        items, item_rows = [], []
        for s in part:
            for resp in s["responses"]:
                items.append((s["prompt"], resp))
                item_rows.append(by_id[s["prompt_id"]])
        got = iter(judge_.judge(items, rnd.seed("judge", chunk), item_rows))
        return [
            {
                "prompt_id": s["prompt_id"],
                "judgments": [next(got).to_dict() for _ in s["responses"]],
            }
            for s in part
        ]

    return _run_stage(rnd, "judge", todo, compute, "judgments.jsonl")


def negatives(
    rnd: Round, rows: Sequence[dict], samples: Sequence[dict], judged: Sequence[dict]
) -> tuple[list, dict]:
    """One failed answer per prompt judged No at least once, with its critique (the roots).

    A root carries its whole prompt row, so a rule judge inside the search sees its task.
    """
    by_id = {j["prompt_id"]: j["judgments"] for j in judged}
    row_of = {r["prompt_id"]: r for r in rows}
    todo = [s for s in samples if s["prompt_id"] in by_id]
    roots, counts = build.pick_negatives(
        [row_of[s["prompt_id"]] for s in todo],
        [s["responses"] for s in todo],
        [[Judgment.from_dict(j) for j in by_id[s["prompt_id"]]] for s in todo],
        seed=rnd.seed("negatives"),
    )
    io.write_jsonl(os.path.join(rnd.dir("negatives"), "roots.jsonl"), roots)
    return roots, dict(counts)


def search_config(config: Any) -> SearchConfig:
    t, r, j = config.tree, config.refine, config.judge
    return SearchConfig(
        algorithm=t.strategy,
        branch=t.branch,
        select_branch=t.select_branch,
        max_depth=t.max_depth,
        end_gate=t.end_gate,
        select_method=t.selection,
        budget=t.max_nodes,
        refine_attempts=r.retries,
        judge_attempts=j.tie_retries,
        temperature=r.temperature,
        top_p=r.top_p,
        max_new_tokens=r.max_new_tokens,
    )


def search(rnd: Round, roots: Sequence[dict], refiner, judge_) -> list[dict]:
    """Tree search from every root, in groups of `chunk_prompts` trees advanced a level at a time.

    Each group's whole search state is written after every level, so a killed run resumes at
    the last finished level of the group it was in and repeats nothing before it.
    Returns every tree (nodes, critiques, votes, values, depth, parent, status).
    """
    cfg = search_config(rnd.config)
    size = rnd.config.chunk_prompts
    groups = [roots[i : i + size] for i in range(0, len(roots), size)]
    trees: list[dict] = []
    with progress_bar(len(roots), f"round {rnd.t} search", rnd.config) as bar:
        for g, group in enumerate(groups):
            path = os.path.join(rnd.dir("search"), f"group_{g:05d}.json")
            if os.path.exists(path):
                state = io.read_json(path)
            else:
                state = init_search(list(group), cfg, seed=rnd.seed("search", g))
                io.write_json(path, state)
            while not state["done"]:
                state = search_step(state, refiner, judge_)
                io.write_json(path, state)  # a killed run resumes after this level
                bar.set_postfix(group=g, level=state["step"])
            trees.extend(state["trees"])
            bar.update(len(group))
    io.write_jsonl(os.path.join(rnd.dir("search"), "trees.jsonl"), trees)
    io.barrier(f"search-{rnd.t}")
    return trees


def _run_stage(
    rnd: Round, stage: str, items: Sequence[Any], compute: Callable, filename: str
) -> list[dict]:
    """Runs a chunked stage with a progress bar; returns its rows (resumed or computed)."""
    path = os.path.join(rnd.dir(stage), filename)
    with progress_bar(len(items), f"round {rnd.t} {stage}", rnd.config) as bar:
        rows = io.run_chunked(path, items, rnd.config.chunk_prompts, compute, progress=bar.update)
    io.barrier(f"{stage}-{rnd.t}")
    return rows


def judged_counts(judged: Sequence[dict]) -> dict[str, int]:
    """Responses by label, and invalid votes, for the round summary."""
    counts = {"responses_judged": 0, "judged_yes": 0, "judged_no": 0, "judged_tie": 0}
    counts["invalid_votes"] = 0
    for row in judged:
        for j in row["judgments"]:
            counts["responses_judged"] += 1
            key = {1: "judged_yes", 0: "judged_no", None: "judged_tie"}[j["label"]]
            counts[key] += 1
            counts["invalid_votes"] += sum(v == -1 for v in j["votes"])
    return counts

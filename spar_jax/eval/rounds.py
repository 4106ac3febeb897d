"""The self-play run's optional evaluation stage: the round's trained models, measured.

    evaluate = rounds.evaluator(config)            # None when config.eval asks for nothing
    spar.rounds.run(config, workdir, evaluate=evaluate)

After each round (and once for the starting models, as round 0) the driver calls
`evaluate(actor, refiner, out_dir)`; its metrics join the round's summary, and the details
are written under `out_dir`. What runs is set in the run config's `eval` section: IFEval on
the actor's greedy answers, the refiner's judge accuracy on labelled rows (1 / 3 / 5 votes),
inference-time scaling (greedy vs best-of-N vs tree search), and on the synthetic world
(`spar_jax.tasks`) the actor's rule-verified success on held-out prompts. Synthetic-world
rows are drawn with `tasks.HELD_OUT_SEED + seed`, never the seed the training prompts use. The
driver lives below this
package (spar/ never imports eval/), so the command builds the evaluator and hands it down.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

Evaluator = Callable[[str, str, str], dict]


def evaluator(config: Any) -> Evaluator | None:
    """The evaluation `config.eval` asks for, or None when it asks for none."""
    e = config.get("eval")
    if e is None or not (e.ifeval or e.judge_data or e.scaling_prompts or e.get("actor_tasks")):
        return None
    tokenizer = config.tokenizer or config.actor

    def load(path: str, mesh):
        from spar_jax.eval import chat

        return chat.load_chat(
            path,
            tokenizer,
            dtype=config.dtype,
            max_batch=config.max_batch,
            mesh=mesh,
            fixed_slots=config.get("fixed_slots", False),
            min_prefix=config.get("min_prefix", 16),
        )

    def evaluate(actor: str, refiner: str, out_dir: str) -> dict:
        from spar_jax import sharding

        # Models placed like the generation stages' models: on the run's mesh, which spans
        # every process of a multi-host run (without it, process 0's device would hold them).
        mesh = sharding.make_mesh(tuple(config.mesh)) if "mesh" in config else None
        metrics: dict = {}
        os.makedirs(out_dir, exist_ok=True)
        needs_actor = e.ifeval or e.scaling_prompts or e.get("actor_tasks")
        actor_chat = load(actor, mesh) if needs_actor else None
        refiner_chat = actor_chat if refiner == actor else None
        if e.get("actor_tasks"):
            metrics["tasks"] = _actor_tasks(e, actor_chat, out_dir, config.seed)
        if e.ifeval:
            metrics["ifeval"] = _ifeval(e, actor_chat, out_dir)
        if e.judge_data or e.scaling_prompts:
            refiner_chat = refiner_chat or load(refiner, mesh)
        if e.judge_data:
            metrics["judge"] = _judge(e, refiner_chat, out_dir, config.seed)
        if e.scaling_prompts:
            metrics["scaling"] = _scaling(e, actor_chat, refiner_chat, out_dir, config.seed)
        return metrics

    return evaluate


def _write(path: str, data: Any) -> None:
    from spar_jax.spar import stages_io

    if stages_io.is_writer():  # every process computes the same metrics; process 0 writes
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)


def _actor_tasks(e: Any, model, out_dir: str, seed: int) -> dict:
    """The actor's greedy answers to `e.actor_tasks` held-out world prompts, rule-verified:
    success overall and per kind, and the upper-case share of the character answers."""
    from spar_jax import tasks
    from spar_jax.eval import chat

    rows = tasks.make_prompts(e.actor_tasks, tasks.HELD_OUT_SEED + seed)
    answers = chat.greedy_answers(
        model, [r["prompt"] for r in rows], max_new_tokens=e.max_new_tokens
    )
    passed = [tasks.check(r, a)[0] for r, a in zip(rows, answers, strict=True)]
    metrics = {"success": sum(passed) / len(rows)}
    for kind in tasks.KINDS:
        flags = [p for r, p in zip(rows, passed, strict=True) if r["task"]["kind"] == kind]
        if flags:
            metrics[f"success_{kind}"] = sum(flags) / len(flags)
    chars = [a for r, a in zip(rows, answers, strict=True) if r["task"]["kind"] == "chars"]
    if chars:
        metrics["upper_ratio_chars"] = sum(map(tasks.upper_ratio, chars)) / len(chars)
    details = [
        {"prompt_id": r["prompt_id"], "prompt": r["prompt"], "response": a, "passed": p}
        for r, a, p in zip(rows, answers, passed, strict=True)
    ]
    _write(os.path.join(out_dir, "actor_tasks.json"), {"metrics": metrics, "rows": details})
    return metrics


def _ifeval(e: Any, model, out_dir: str) -> dict:
    from spar_jax.eval import chat, ifeval

    examples = ifeval.load_inputs(e.ifeval_input or None)
    if e.limit:
        examples = examples[: e.limit]
    prompts = [x.prompt for x in examples]
    answers = chat.greedy_answers(model, prompts, max_new_tokens=e.max_new_tokens)
    report = ifeval.score(examples, dict(zip(prompts, answers, strict=True)))
    _write(os.path.join(out_dir, "ifeval.json"), ifeval.to_json(report))
    return dict(report.metrics)


def _judge(e: Any, model, out_dir: str, seed: int) -> dict:
    from spar_jax.eval import judge_accuracy

    if e.judge_data == "tasks":  # the synthetic world, labelled by its verifiers
        from spar_jax import tasks

        rows = judge_accuracy.labelled_from_tasks(e.limit or 100, tasks.HELD_OUT_SEED + seed)
    else:
        rows = judge_accuracy.read_labelled(e.judge_data)[: e.limit or None]
    report = judge_accuracy.judge_accuracy(
        model, rows, votes=tuple(e.judge_votes), seed=seed, max_new_tokens=e.judge_max_new_tokens
    )
    _write(os.path.join(out_dir, "judge_accuracy.json"), report)
    return {k: v for k, v in report.items() if k.startswith("votes_")}


def _scaling(e: Any, actor, refiner, out_dir: str, seed: int) -> dict:
    from spar_jax.eval import scaling
    from spar_jax.training import records

    if e.scaling_prompts == "tasks":
        from spar_jax import tasks

        rows = tasks.make_prompts(e.limit or 20, tasks.HELD_OUT_SEED + seed + 1)
        scorer = scaling.tasks_scorer
    else:
        rows, _ = records.load_records(e.scaling_prompts)
        rows = rows[: e.limit or None]
        scorer = scaling.tasks_scorer if rows and "task" in rows[0] else scaling.ifeval_scorer
        if scorer is scaling.ifeval_scorer:
            from spar_jax.eval import ifeval

            examples = ifeval.parse_inputs(rows, e.scaling_prompts)
            rows = [
                {**r, "prompt_id": str(r.get("key", i)), "example": x}
                for i, (r, x) in enumerate(zip(rows, examples, strict=True))
            ]
    config = scaling.ScalingConfig(
        budgets=tuple(e.scaling_budgets),
        max_new_tokens=e.max_new_tokens,
        judge_max_new_tokens=e.judge_max_new_tokens,
        refine_max_new_tokens=e.max_new_tokens,
        seed=seed,
    )
    result = scaling.compare(rows, scorer, actor, refiner, config)
    _write(os.path.join(out_dir, "scaling.json"), result["results"])
    return {f"{r['method']}@{r['budget']}": r["score"] for r in result["results"]}

"""The interfering-factor experiment (SPaR, Figure 4, task 1) on the synthetic world.

    python -m spar_jax interference --config configs/demo_interference.py --workdir runs/interf

The character task ("Write the letter "a" 3 times. ...") leaves letter case free: case is an
interfering factor, irrelevant to success. From one start (the demo's seed model) two actors
are trained by DPO with the same settings on the same number of pairs:

* sampled: two independently sampled answers to a prompt, one passing the rule verifier
  (chosen) and one failing it (rejected). They differ in the counts and in anything else that
  varied between the samples, case included;
* refined: a failed sample (rejected) and its tree-search refinement by the same model, judged
  by the rule verifier (chosen): a minimal edit, so the pair differs where the answer failed.

Training prompts are free-case character prompts (no "Use only lowercase letters"). The start
and every `eval_every` steps of both arms answer held-out free-case prompts greedily; the
experiment reports task success and the upper-case share of the answers' letters against
training steps (results.json, report.md, interference.png in the workdir). A rerun of the
same command reuses the finished stages (samples, search, pairs, training, evaluation).
"""

from __future__ import annotations

import os
import random
from typing import Any

from spar_jax.spar import stages_io as io
from spar_jax.tasks import constraints, world

ARMS = ("sampled", "refined")


def free_case_prompts(n: int, seed: int) -> list[dict]:
    """`n` character prompts without a case constraint, deterministic in (n, seed)."""
    rows: list[dict] = []
    batch = 0
    while len(rows) < n:
        for row in world.make_prompts(2 * n, seed * 1000 + batch, kinds=["chars"]):
            if not any(c["type"] == "lowercase" for c in row["task"]["constraints"]):
                rows.append(row)
        batch += 1
    return rows[:n]


def _chat(config: Any, params=None):
    from spar_jax.spar.generator import ChatModel, load_chat_model

    knobs = {"fixed_slots": config.fixed_slots, "min_prefix": config.min_prefix}
    chat = load_chat_model(
        config.model, config.tokenizer, dtype=config.dtype, max_batch=config.max_batch, **knobs
    )
    if params is None:
        return chat
    import jax
    import jax.numpy as jnp

    params = jax.tree.map(lambda x: jnp.asarray(x, dtype=chat.cfg.dtype), params)
    return ChatModel(chat.cfg, params, chat.tokenizer, max_batch=config.max_batch, **knobs)


def _sample(config: Any, chat, rows: list[dict]) -> dict:
    from spar_jax.sampling import SamplingParams

    params = SamplingParams(
        temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens
    )
    convs = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    answers = chat.generate(convs, params, n=config.samples, seed=config.seed)
    out = []
    for row, texts in zip(rows, answers, strict=True):
        checks = [world.check(row, t) for t in texts]
        out.append(
            {
                "prompt_id": row["prompt_id"],
                "responses": list(texts),
                "passed": [ok for ok, _ in checks],
                "critiques": [c for _, c in checks],
            }
        )
    return {"rows": out}


def _search(config: Any, chat, rows: list[dict], samples: list[dict]) -> dict:
    """Tree-search refinement of each prompt's first failed sample, the rule verifier judging."""
    from spar_jax.spar import stages, tree
    from spar_jax.spar.judge import RuleJudge

    roots = []
    for row, s in zip(rows, samples, strict=True):
        failed = [i for i, ok in enumerate(s["passed"]) if not ok]
        if failed:
            i = failed[0]
            roots.append({**row, "response": s["responses"][i], "critique": s["critiques"][i]})
    state = tree.run_search(
        roots, stages.search_config(config), chat, RuleJudge(world.check), seed=config.seed
    )
    return {"results": tree.search_results(state), "summary": tree.search_summary(state)}


def build_pairs(rows: list[dict], samples: list[dict], refined: list[dict], seed: int) -> dict:
    """Both arms' DPO pairs, cut to the same count (the smaller arm's), in a seeded order."""
    rng = random.Random(seed)
    prompts = {r["prompt_id"]: r["prompt"] for r in rows}
    sampled = []
    for s in samples:
        good = [t for t, ok in zip(s["responses"], s["passed"], strict=True) if ok]
        bad = [t for t, ok in zip(s["responses"], s["passed"], strict=True) if not ok]
        if good and bad:
            chosen, rejected = rng.choice(good), rng.choice(bad)
            sampled.append(
                {"prompt": prompts[s["prompt_id"]], "chosen": chosen, "rejected": rejected}
            )
    refined_pairs = [
        {"prompt": r["prompt"], "chosen": r["final"]["response"], "rejected": r["root"]["response"]}
        for r in refined
        if r["passed"] and r["final"]["id"] != 0
    ]
    n = min(len(sampled), len(refined_pairs))
    rng.shuffle(sampled)
    rng.shuffle(refined_pairs)
    return {
        "available": {"sampled": len(sampled), "refined": len(refined_pairs)},
        "sampled": sampled[:n],
        "refined": refined_pairs[:n],
    }


def evaluate(chat, held: list[dict], max_new_tokens: int) -> dict:
    """Greedy answers to `held`: success rate and mean upper-case share of the letters."""
    from spar_jax.eval.chat import greedy_answers

    answers = greedy_answers(chat, [r["prompt"] for r in held], max_new_tokens=max_new_tokens)
    passed = [world.check(r, a)[0] for r, a in zip(held, answers, strict=True)]
    upper = [constraints.upper_ratio(a) for a in answers]
    return {
        "success": sum(passed) / len(held),
        "upper_ratio": sum(upper) / len(held),
        "examples": answers[:5],
    }


def _train(config: Any, arm: str, data: str, out_dir: str, log) -> dict:
    from spar_jax.training.dpo import train_dpo

    cfg = config.train.copy_and_resolve_references()
    cfg.model, cfg.tokenizer = config.model, config.tokenizer or config.model
    cfg.data, cfg.out_dir = data, out_dir
    cfg.toy_data, cfg.eval_data = False, ""
    cfg.checkpoint_every, cfg.keep_checkpoints = config.eval_every, 1000
    cfg.seed = config.seed
    result = train_dpo(cfg, log=log)
    return {"steps": int(result.loop.state.step), "loss": result.loop.last.get("loss")}


def _evaluate_arm(config: Any, held: list[dict], out_dir: str, start: dict) -> list[dict]:
    from spar_jax.training.checkpoint import Checkpointer

    curve = [{"step": 0, **start}]
    ckpt = Checkpointer(os.path.join(out_dir, "checkpoints"), max_to_keep=1000, async_save=False)
    try:
        for step in ckpt.all_steps():
            chat = _chat(config, ckpt.restore_params(step))
            curve.append({"step": int(step), **evaluate(chat, held, config.max_new_tokens)})
    finally:
        ckpt.close()
    return curve


def run(config: Any, workdir: str, log=print) -> dict:
    """The experiment in `workdir` (resumable); returns results.json's content."""
    os.makedirs(workdir, exist_ok=True)
    rows = free_case_prompts(config.prompts, config.seed)
    held = free_case_prompts(config.eval_prompts, world.HELD_OUT_SEED + config.seed)
    chat = None

    def model():
        nonlocal chat
        chat = chat or _chat(config)
        return chat

    d = lambda name: os.path.join(workdir, name)  # noqa: E731
    log(f"sampling {config.samples} answers to {len(rows)} free-case character prompts")
    samples = io.once(d("sample"), lambda: _sample(config, model(), rows))["rows"]
    log("refining the failed answers by tree search (rule judge)")
    search = io.once(d("search"), lambda: _search(config, model(), rows, samples))
    pairs = io.once(d("pairs"), lambda: build_pairs(rows, samples, search["results"], config.seed))
    n = len(pairs["sampled"])
    log(f"pairs per arm: {n} (available: {pairs['available']})")
    if n == 0:
        from spar_jax import errors

        raise errors.SparError(
            f"no pairs for one of the arms ({pairs['available']}): raise --config.prompts or "
            "--config.samples, or start from a model that sometimes passes and sometimes fails"
        )
    start = io.once(d("eval_start"), lambda: evaluate(model(), held, config.max_new_tokens))
    chat = None  # frees the start model
    results: dict[str, Any] = {"pairs": n, "available": pairs["available"], "arms": {}}
    results["search"] = search["summary"]
    for arm in ARMS:
        data = os.path.join(d("pairs"), f"{arm}.jsonl")
        if not os.path.exists(data):
            io.write_jsonl(data, pairs[arm])
        log(f"training the {arm} arm on {n} pairs")
        trained = io.once(
            d(f"train_{arm}"), lambda a=arm, p=data: _train(config, a, p, d(f"train_{a}"), log)
        )
        curve = io.once(
            d(f"eval_{arm}"),
            lambda a=arm: {"curve": _evaluate_arm(config, held, d(f"train_{a}"), start)},
        )["curve"]
        results["arms"][arm] = {**trained, "curve": curve}
    io.write_json(d("results.json"), results)
    if io.is_writer():
        write_report(results, d("report.md"))
        plot(results, d("interference.png"))
    return results


def write_report(results: dict, path: str) -> None:
    lines = [
        "# Interfering factor: DPO on sampled pairs vs refined pairs",
        "",
        f"{results['pairs']} pairs per arm (available: {results['available']}).",
        "",
        "| arm | step | task success | upper-case share |",
        "|---|---|---|---|",
    ]
    for arm, r in results["arms"].items():
        for point in r["curve"]:
            lines.append(
                f"| {arm} | {point['step']} | {point['success']:.3f} | {point['upper_ratio']:.3f} |"
            )
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for arm, r in results["arms"].items():
        steps = [p["step"] for p in r["curve"]]
        axes[0].plot(steps, [p["success"] for p in r["curve"]], marker="o", label=arm)
        axes[1].plot(steps, [p["upper_ratio"] for p in r["curve"]], marker="o", label=arm)
    for ax, title in zip(axes, ("task success (held-out)", "upper-case share"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("DPO step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

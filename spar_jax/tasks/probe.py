"""How well a model plays actor, judge and refiner on held-out prompts of the world.

    python -m spar_jax.tasks probe MODEL_DIR --tokenizer runs/demo_seed/init \
        --prompts runs/demo_seed/eval_prompts.jsonl

* actor: greedy and sampled (T 0.9, top-p 0.9) answers, rule-verified (``world.check``);
  also the upper-case ratio of the character answers (the interfering factor);
* judge: greedy verdicts (``prompts.parse_verdict``) on one correct and one failed teacher
  answer per prompt, and on the actor's own answers, against the rule verdict;
* refiner: greedy refinements (``prompts.parse_refinement``) of failed teacher answers and of
  the actor's own failed answers, each with the rule verifier's critique, rule-verified.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from spar_jax.tasks import constraints, teacher, world


def load_model(path: str) -> tuple[Any, Any]:
    """``(cfg, params)`` from a native export or a Hugging Face directory."""
    import os

    import jax.numpy as jnp

    from spar_jax import models
    from spar_jax.models import native

    if os.path.isfile(os.path.join(path, native.CONFIG_FILE)):
        return native.load_native(path)
    return models.load_hf(path, dtype=jnp.float32)


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def probe(chat: Any, rows: list[dict], *, seed: int = 0, log=print) -> dict[str, Any]:
    """Actor / judge / refiner measurements of ``chat`` (a ``spar.generator`` ChatGenerator)
    on prompt ``rows``; a flat dict of rates and counts."""
    from spar_jax.sampling import SamplingParams
    from spar_jax.spar import prompts

    out: dict[str, Any] = {"prompts": len(rows)}
    greedy = SamplingParams(temperature=0.0, max_new_tokens=64)
    sampled = SamplingParams(temperature=0.9, top_p=0.9, max_new_tokens=64)
    t = time.perf_counter()
    users = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    answers = [x[0] for x in chat.generate(users, greedy, 1, seed)]
    samples = chat.generate(users, sampled, 4, seed + 1)
    ok_greedy = [world.check(r, a)[0] for r, a in zip(rows, answers, strict=True)]
    out["actor_greedy"] = _rate(ok_greedy)
    out["actor_sampled"] = _rate(
        [world.check(r, a)[0] for r, s in zip(rows, samples, strict=True) for a in s]
    )
    for kind in world.KINDS:
        idx = [i for i, r in enumerate(rows) if r["task"]["kind"] == kind]
        out[f"actor_greedy_{kind}"] = _rate([ok_greedy[i] for i in idx])
    chars = [
        a for r, s in zip(rows, samples, strict=True) for a in s if r["task"]["kind"] == "chars"
    ]
    out["chars_upper_ratio"] = _rate([constraints.upper_ratio(a) > 0.5 for a in chars])
    out["actor_s"] = time.perf_counter() - t

    # Judge: a correct and a failed teacher answer per prompt, then the actor's own answers.
    t = time.perf_counter()
    rng = random.Random(f"probe-{seed}")
    pairs = []
    for r in rows:
        failed, good = teacher.respond(r, rng, error_rate=1.0)
        pairs += [(r, good, True), (r, failed, False)]
    pairs += [(r, a, ok) for r, a, ok in zip(rows, answers, ok_greedy, strict=True)]
    judge_convs = [
        [{"role": "user", "content": prompts.judge_prompt(r["prompt"], a)}] for r, a, _ in pairs
    ]
    judge_params = SamplingParams(temperature=0.0, max_new_tokens=160)
    verdicts = [
        prompts.parse_verdict(x[0]) for x in chat.generate(judge_convs, judge_params, 1, seed)
    ]
    n_teacher = 2 * len(rows)
    right = [v == int(ok) for v, (_, _, ok) in zip(verdicts, pairs, strict=True)]
    out["judge_acc_teacher"] = _rate(right[:n_teacher])
    out["judge_acc_actor"] = _rate(right[n_teacher:])
    out["judge_invalid"] = _rate([v < 0 for v in verdicts])
    out["judge_yes_rate"] = _rate([v == 1 for v in verdicts])
    out["judge_s"] = time.perf_counter() - t

    # Refiner: failed teacher answers, then the actor's own failed answers; rule critiques.
    t = time.perf_counter()
    todo = [(r, a) for r, a, ok in pairs[:n_teacher] if not ok]
    own = [(r, a) for r, a, ok in zip(rows, answers, ok_greedy, strict=True) if not ok]
    convs = [prompts.refine_messages(r["prompt"], a, world.check(r, a)[1]) for r, a in todo + own]
    refine_params = SamplingParams(temperature=0.0, max_new_tokens=192)
    texts = [x[0] for x in chat.generate(convs, refine_params, 1, seed)] if convs else []
    refined = [prompts.parse_refinement(x) for x in texts]
    fixed = [
        y is not None and world.check(r, y)[0]
        for (r, _), y in zip(todo + own, refined, strict=True)
    ]
    out["refine_success_teacher"] = _rate(fixed[: len(todo)])
    out["refine_success_actor"] = _rate(fixed[len(todo) :])
    out["refine_actor_failed"] = len(own)
    out["refine_unparsed"] = _rate([y is None for y in refined])
    out["refine_s"] = time.perf_counter() - t
    log(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))
    return out


def main(argv: list[str]) -> int:
    import argparse

    from spar_jax.spar.generator import ChatModel
    from spar_jax.tokenizer import Tokenizer

    p = argparse.ArgumentParser(prog="python -m spar_jax.tasks probe", description=__doc__)
    p.add_argument("model")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--prompts", required=True, help="JSONL rows of tasks.make_prompts")
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with open(args.prompts, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f][: args.limit]
    cfg, params = load_model(args.model)
    chat = ChatModel(cfg, params, Tokenizer.load(args.tokenizer), max_batch=64)
    probe(chat, rows, seed=args.seed)
    return 0

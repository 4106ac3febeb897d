r"""`python -m spar_jax eval <ifeval | judge | scaling> ...`: evaluation commands.

IFEval, scoring a responses file in the official format (JSONL rows with
"prompt" and "response"; no model is loaded):

    python -m spar_jax eval ifeval --responses responses.jsonl [--output metrics.json]
        [--input input_data.jsonl | --input google/IFEval] [--partial]

IFEval, generating greedy answers with a checkpoint first (configs/eval_ifeval.py):

    python -m spar_jax eval ifeval --config configs/eval_ifeval.py --config.model=DIR

Both print the four metrics (prompt- and instruction-level, strict and loose)
and the per-instruction-type table; `--output` / the config's output_dir get
them as JSON under lm-eval's names with the per-prompt verdicts. `--input`
defaults to the 541 prompts bundled with spar_jax; `--partial` scores only the
prompts the file answers (otherwise a missing answer is an error).

Judge accuracy of a refiner on labelled (prompt, response, label) rows, with
majority voting over 1, 3 and 5 votes (configs/eval_judge.py):

    python -m spar_jax eval judge --config configs/eval_judge.py --config.model=DIR \
        --config.data=labelled.jsonl

Inference-time scaling, greedy vs best-of-N vs tree-search refinement at
matched numbers of generated responses (configs/eval_scaling.py):

    python -m spar_jax eval scaling --config configs/eval_scaling.py --config.model=DIR

The instruction checks need NLTK's punkt_tab data: set NLTK_DATA to a folder
holding tokenizers/punkt_tab/english/ (python -c "import nltk;
nltk.download('punkt_tab')" fetches it once).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

EVALUATIONS = ("ifeval", "judge", "scaling")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in EVALUATIONS:
        print(f"eval: unknown evaluation {name!r}; use one of {', '.join(EVALUATIONS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    if name == "ifeval":
        return ifeval_main(rest)
    if any(a in ("-h", "--help") for a in rest):
        print(__doc__)
        return 0
    from spar_jax import configs

    example = f"configs/eval_{name}.py"
    config = configs.from_argv(rest, example)
    if not config.model:
        raise configs.ConfigError(f"--config.model is required (see {example})")
    return judge_main(config) if name == "judge" else scaling_main(config)


def _write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")


def ifeval_main(argv: list[str]) -> int:
    from spar_jax import configs

    rest, overrides = configs.split_argv(argv)
    parser = argparse.ArgumentParser(
        prog="python -m spar_jax eval ifeval",
        description="Score IFEval responses, or generate them with a checkpoint and score them.",
    )
    parser.add_argument("--responses", help="JSONL of {prompt, response} rows to score")
    parser.add_argument("--input", default="", help="IFEval input JSONL or google/IFEval")
    parser.add_argument("--output", default="", help="write the metrics JSON here")
    parser.add_argument("--partial", action="store_true", help="score only answered prompts")
    parser.add_argument("--config", help="configs/eval_ifeval.py: generate with a model")
    args = parser.parse_args(rest)
    if bool(args.responses) == bool(args.config):
        parser.error("pass --responses FILE (score a file) or --config FILE (generate and score)")

    from spar_jax.eval import ifeval, ifeval_text

    ifeval_text.check_nltk_data()
    if args.responses:
        examples = ifeval.load_inputs(args.input or None)
        report = ifeval.score(examples, ifeval.read_responses(args.responses), partial=args.partial)
        print(ifeval.format_report(report))
        if args.output:
            _write_json(args.output, ifeval.to_json(report))
            print(f"wrote {args.output}")
        return 0

    config = configs.load(args.config, overrides)
    return generate_and_score(config)


def generate_and_score(config) -> int:
    """Greedy answers of `config.model` to the IFEval prompts, written and scored."""
    from spar_jax import configs
    from spar_jax.eval import chat, ifeval

    if not config.model:
        raise configs.ConfigError(
            "--config.model is required (a Hugging Face or native checkpoint dir)"
        )
    examples = ifeval.load_inputs(config.input or None)
    if config.limit:
        examples = examples[: config.limit]
    model = _load_chat(config, config.model)
    start = time.perf_counter()
    answers = chat.greedy_answers(
        model,
        [e.prompt for e in examples],
        max_new_tokens=config.max_new_tokens,
        system_prompt=config.system_prompt,
    )
    seconds = time.perf_counter() - start
    report = ifeval.score(examples, {e.prompt: a for e, a in zip(examples, answers, strict=True)})
    print(ifeval.format_report(report))
    skipped = model.stats["skipped_too_long"]
    tokens = model.stats["generated_tokens"]
    print(
        f"generated {tokens} tokens in {seconds:.1f}s; "
        f"{skipped} prompts too long for the context were answered with ''"
    )

    import jax

    if jax.process_index() == 0:
        os.makedirs(config.output_dir, exist_ok=True)
        responses = os.path.join(config.output_dir, "responses.jsonl")
        with open(responses, "w", encoding="utf-8") as f:
            for e, a in zip(examples, answers, strict=True):
                f.write(json.dumps({"prompt": e.prompt, "response": a}, ensure_ascii=False) + "\n")
        metrics = ifeval.to_json(report)
        metrics["generation"] = {
            "model": config.model,
            "max_new_tokens": config.max_new_tokens,
            "generated_tokens": tokens,
            "skipped_too_long": skipped,
            "seconds": seconds,
        }
        _write_json(os.path.join(config.output_dir, "metrics.json"), metrics)
        print(f"wrote {responses} and metrics.json")
    return 0


def _load_chat(config, model: str):
    from spar_jax.eval import chat

    return chat.load_chat(
        model, config.tokenizer, dtype=config.dtype, max_batch=config.max_batch,
        max_cache_gib=config.max_cache_gib, fixed_slots=config.fixed_slots,
        min_prefix=config.min_prefix,
    )  # fmt: skip


def judge_main(config) -> int:
    """The refiner's verdict accuracy and F1 on labelled rows (configs/eval_judge.py)."""
    from spar_jax import configs
    from spar_jax.eval import judge_accuracy

    if not config.data:
        raise configs.ConfigError("--config.data is required (see configs/eval_judge.py)")
    if config.data == "tasks":  # held-out synthetic-world rows, labelled by the verifiers
        from spar_jax import tasks

        rows = judge_accuracy.labelled_from_tasks(
            config.num_rows, tasks.HELD_OUT_SEED + config.seed
        )
    elif config.data.endswith(".json"):  # an `eval ifeval` metrics file
        with open(config.data, encoding="utf-8") as f:
            rows = judge_accuracy.labelled_from_ifeval(json.load(f))
    else:
        rows = judge_accuracy.read_labelled(config.data)
    report = judge_accuracy.judge_accuracy(
        _load_chat(config, config.model), rows, votes=tuple(config.votes), seed=config.seed,
        temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
    )  # fmt: skip
    print(judge_accuracy.format_report(report))
    import jax

    if config.output and jax.process_index() == 0:  # every process judges; one writes
        _write_json(config.output, report)
        print(f"wrote {config.output}")
    return 0


def scaling_rows(source: str, limit: int, seed: int) -> tuple[list[dict], object]:
    """(prompt rows, scorer) for `source`: "ifeval", "tasks" or a JSONL of either kind."""
    from spar_jax.eval import ifeval, scaling

    if source == "tasks":
        from spar_jax import tasks

        return tasks.make_prompts(limit, tasks.HELD_OUT_SEED + seed), scaling.tasks_scorer
    if source == "ifeval":
        examples = ifeval.load_inputs()
    else:
        rows = ifeval.read_jsonl(source, "prompts")
        if rows and "task" in rows[0]:
            return rows[: limit or None], scaling.tasks_scorer
        examples = ifeval.parse_inputs(rows, source)
    examples = examples[: limit or None]
    rows = [{"prompt": e.prompt, "prompt_id": str(e.key), "example": e} for e in examples]
    return rows, scaling.ifeval_scorer


def scaling_main(config) -> int:
    """Greedy vs best-of-N vs BFS / DFS refinement per budget (configs/eval_scaling.py)."""
    from spar_jax.eval import ifeval_text, scaling

    rows, scorer = scaling_rows(config.prompts, config.limit, config.seed)
    if scorer is scaling.ifeval_scorer:
        ifeval_text.check_nltk_data()
    fields = {f.name for f in dataclasses.fields(scaling.ScalingConfig)}
    settings = scaling.ScalingConfig(**{k: config[k] for k in fields})
    actor = _load_chat(config, config.model)
    refiner = actor if config.refiner in ("", config.model) else _load_chat(config, config.refiner)
    start = time.perf_counter()
    result = scaling.compare(rows, scorer, actor, refiner, settings)
    result["seconds"] = time.perf_counter() - start
    table = scaling.format_table(result)
    print(table)
    print(f"{result['seconds']:.1f}s")

    import jax

    if jax.process_index() == 0:
        os.makedirs(config.output_dir, exist_ok=True)
        answers = result.pop("answers")
        with open(os.path.join(config.output_dir, "answers.jsonl"), "w", encoding="utf-8") as f:
            for i, row in enumerate(rows):
                texts = {k: v[i] for k, v in answers.items()}
                f.write(json.dumps({"prompt": row["prompt"], **texts}, ensure_ascii=False) + "\n")
        _write_json(os.path.join(config.output_dir, "scaling.json"), result)
        with open(os.path.join(config.output_dir, "scaling.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        scaling.plot(result, os.path.join(config.output_dir, "scaling.png"))
        print(
            f"wrote scaling.json, scaling.md, scaling.png and answers.jsonl to {config.output_dir}"
        )
    return 0

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
    if name == "judge":
        from spar_jax.eval import judge_accuracy

        return judge_accuracy.main(rest)
    from spar_jax.eval import scaling

    return scaling.main(rest)


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
        raise configs.ConfigError("--config.model is required (a Hugging Face checkpoint dir)")
    examples = ifeval.load_inputs(config.input or None)
    if config.limit:
        examples = examples[: config.limit]
    model = chat.load_chat(
        config.model,
        config.tokenizer,
        dtype=config.dtype,
        max_batch=config.max_batch,
        max_cache_gib=config.max_cache_gib,
    )
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

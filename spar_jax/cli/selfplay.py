"""`python -m spar_jax selfplay --config configs/X.py --workdir DIR [--config.k=v ...]`.

    python -m spar_jax selfplay --config configs/spar_llama3_8b.py --workdir runs/spar \
        --config.actor=/ckpt/llama3_8b_sft --config.prompts=/data/spar/prompts.jsonl

Runs the configured number of SPaR rounds (sample, judge, negatives, tree search, data
building, DPO of the actor, SFT of the refiner) in DIR. Rerunning the same command continues
where a killed run stopped: finished stages are skipped, a stage in progress resumes from its
last written chunk. Each round prints a summary table; DIR/summary.json and DIR/summary.png
hold them all. With the config's `eval` section on, each round's trained models are also
evaluated (IFEval, judge accuracy, inference-time scaling) and the metrics join the summary.
"""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    from spar_jax import configs

    rest, overrides = configs.split_argv(argv)
    parser = argparse.ArgumentParser(prog="python -m spar_jax selfplay", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", required=True, help="configs/<name>.py")
    parser.add_argument("--workdir", required=True, help="where the rounds write (resumable)")
    args = parser.parse_args(rest)
    config = configs.load(args.config, overrides)

    from spar_jax.eval import rounds as eval_rounds
    from spar_jax.spar import rounds

    summaries = rounds.run(config, args.workdir, evaluate=eval_rounds.evaluator(config))
    last = summaries[-1] if summaries else {}
    print(
        f"selfplay: {len(summaries)} rounds in {args.workdir}; final actor "
        f"{last.get('next_actor')}, refiner {last.get('next_refiner')}; summary "
        f"{args.workdir}/summary.json, plot {args.workdir}/summary.png"
    )
    return 0

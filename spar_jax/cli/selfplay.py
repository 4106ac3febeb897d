"""`python -m spar_jax selfplay --config configs/X.py --workdir DIR [--config.k=v ...]`.

    python -m spar_jax selfplay --config configs/spar_llama3_8b.py --workdir runs/spar \
        --config.actor=/ckpt/llama3_8b_sft --config.prompts=/data/spar/prompts.jsonl

Runs the configured number of SPaR rounds (sample, judge, negatives, tree search, data
building, DPO of the actor, SFT of the refiner) in DIR. Rerunning the same command continues
where a killed run stopped: finished stages are skipped, a stage in progress resumes from its
last written chunk. Each round prints a summary table; DIR/report.md (one row per round),
DIR/summary.png (the plot) and DIR/summary.json hold them all. With the config's `eval` section on, each round's trained models are also
evaluated (IFEval, judge accuracy, inference-time scaling) and the metrics join the summary.
"""

from __future__ import annotations

import os


def main(argv: list[str]) -> int:
    from spar_jax import configs

    config, workdir = configs.with_workdir(
        argv, "python -m spar_jax selfplay", __doc__, "configs/<name>.py",
        "where the rounds write (resumable)",
    )  # fmt: skip

    from spar_jax.eval import rounds as eval_rounds
    from spar_jax.spar import rounds

    if config.get("compilation_cache"):
        use_compilation_cache(os.path.join(workdir, config.compilation_cache))

    summaries = rounds.run(config, workdir, evaluate=eval_rounds.evaluator(config))
    last = summaries[-1] if summaries else {}
    print(
        f"selfplay: {len(summaries)} rounds in {workdir}; final actor "
        f"{last.get('next_actor')}, refiner {last.get('next_refiner')}"
    )
    print(f"report: {os.path.join(workdir, 'report.md')}")
    print(f"plot:   {os.path.join(workdir, 'summary.png')}")
    return 0


def use_compilation_cache(path: str) -> None:
    """Keeps XLA's compiled programs in `path` (JAX's persistent compilation cache).

    The trainers compile their steps afresh in every round, and a rerun of a killed run would
    compile everything again; with the cache, a program with the same shapes and settings is
    read back instead (each costs about as much to read as a few decode steps). Every entry is
    kept, whatever its compile time; the folder grows by a few MB per program.
    """
    import jax

    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
